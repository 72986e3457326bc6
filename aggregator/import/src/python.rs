//! The 3.x `settings.py`: a Python module of constants, read without Python.
//!
//! Each top-level `NAME = expression` is evaluated in file order, over the settings above it:
//! numbers, strings, `True`/`False`/`None`, lists and tuples, `+ - * / // % **`, comparisons,
//! `and`/`or`/`not`, `x if c else y`, indexing, `list * n`, and `min`, `max`, `abs`, `round`,
//! `int`, `float`, `len`. Comments, blank lines, docstrings and `import` lines are skipped, and
//! lines continue inside brackets or after a backslash, as in Python. Anything else is an error
//! naming the file, the line and the setting.

use std::path::Path;

use super::{ImportError, OldSettings, Value};

/// Reads `text` (the contents of `file`) into its settings.
pub fn read(file: &Path, text: &str) -> Result<OldSettings, ImportError> {
    let tokens = tokenize(text).map_err(|(line, message)| ImportError::at(file, line, message))?;
    let mut parser = Parser {
        tokens: &tokens,
        at: 0,
        settings: OldSettings::new(file),
    };
    while !parser.done() {
        let line = parser.line();
        match parser.statement() {
            // Each setting may use the ones above it.
            Ok(Some((name, value))) => parser.settings.insert(&name, value, line, false),
            Ok(None) => {}
            Err(Failure {
                line,
                setting,
                message,
            }) => {
                return Err(ImportError {
                    file: file.to_path_buf(),
                    line: Some(line),
                    setting,
                    message,
                    source: None,
                })
            }
        }
    }
    Ok(parser.settings)
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
    Op(&'static str),
    Newline,
}

/// Operators, longest first so that `**` is not read as two `*`.
const OPERATORS: [&str; 22] = [
    "**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "<", ">", "(", ")", "[", "]", ",",
    "=", ":", ".", ";",
];

/// The tokens with their lines. A newline token ends a logical line: none inside brackets or
/// after a backslash.
fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, (usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut depth) = (0, 1, 0usize);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                if depth == 0 && tokens.last().is_some_and(|(t, _)| *t != Token::Newline) {
                    tokens.push((Token::Newline, line));
                }
                line += 1;
                i += 1;
            }
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                line += 1;
                i += 2;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            c if c.is_whitespace() => i += 1,
            '\'' | '"' => {
                let start = line;
                let (text, next, lines) = string(&chars, i).map_err(|Invalid(m)| (start, m))?;
                tokens.push((Token::Str(text), start));
                line += lines;
                i = next;
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || chars[i] == '_'
                        || ((chars[i] == '+' || chars[i] == '-')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let literal: String = chars[start..i].iter().filter(|&&c| c != '_').collect();
                tokens.push((number(&literal).map_err(|Invalid(m)| (line, m))?, line));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                // A prefixed string (r'', b'', f'') is not a constant we can read faithfully.
                if matches!(chars.get(i), Some('\'' | '"')) {
                    return Err((line, format!("`{name}'...'` strings are not supported")));
                }
                tokens.push((Token::Name(name), line));
            }
            _ => {
                let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let Some(op) = OPERATORS.iter().find(|op| rest.starts_with(**op)) else {
                    return Err((line, format!("unexpected character `{c}`")));
                };
                match *op {
                    "(" | "[" => depth += 1,
                    ")" | "]" => depth = depth.saturating_sub(1),
                    _ => {}
                }
                tokens.push((Token::Op(op), line));
                i += op.len();
            }
        }
    }
    if depth > 0 {
        return Err((line, "a bracket is not closed".into()));
    }
    if tokens.last().is_some_and(|(t, _)| *t != Token::Newline) {
        tokens.push((Token::Newline, line));
    }
    Ok(tokens)
}

/// A string literal at `chars[i]`: its text, the index after it, and the newlines it spans.
fn string(chars: &[char], i: usize) -> Result<(String, usize, usize), Invalid> {
    let quote = chars[i];
    let triple = chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote);
    let mut j = if triple { i + 3 } else { i + 1 };
    let (mut text, mut lines) = (String::new(), 0);
    loop {
        let Some(&c) = chars.get(j) else {
            return Err("a string is not closed".into());
        };
        if c == quote
            && (!triple || (chars.get(j + 1) == Some(&quote) && chars.get(j + 2) == Some(&quote)))
        {
            return Ok((text, if triple { j + 3 } else { j + 1 }, lines));
        }
        if c == '\n' {
            if !triple {
                return Err("a string is not closed on its line".into());
            }
            lines += 1;
        }
        if c == '\\' {
            let escaped = chars.get(j + 1).copied().unwrap_or('\\');
            match escaped {
                'n' => text.push('\n'),
                't' => text.push('\t'),
                '\n' => lines += 1,
                '\\' | '\'' | '"' => text.push(escaped),
                other => {
                    text.push('\\');
                    text.push(other);
                }
            }
            j += 2;
            continue;
        }
        text.push(c);
        j += 1;
    }
}

fn number(literal: &str) -> Result<Token, Invalid> {
    let lower = literal.to_ascii_lowercase();
    let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
        .into_iter()
        .find(|(prefix, _)| lower.starts_with(prefix));
    if let Some((prefix, radix)) = radix {
        return i64::from_str_radix(&lower[prefix.len()..], radix)
            .map(Token::Int)
            .map_err(|_| Invalid(format!("`{literal}` is not a number")));
    }
    if lower.contains(['.', 'e']) {
        return lower
            .parse()
            .map(Token::Float)
            .map_err(|_| Invalid(format!("`{literal}` is not a number")));
    }
    lower
        .parse()
        .map(Token::Int)
        .map_err(|_| Invalid(format!("`{literal}` is not a number (or too large)")))
}

/// What the evaluator cannot read or compute, in words; the parser places it at its line.
struct Invalid(String);

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        Invalid(message.to_string())
    }
}

struct Failure {
    line: usize,
    setting: Option<String>,
    message: String,
}

struct Parser<'a> {
    tokens: &'a [(Token, usize)],
    at: usize,
    settings: OldSettings,
}

type Parsed<T> = Result<T, (usize, String)>;

impl Parser<'_> {
    fn done(&self) -> bool {
        self.at >= self.tokens.len()
    }

    fn line(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(1, |t| t.1)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|t| &t.0)
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Token::Op(o)) if *o == op)
    }

    fn peek_name(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Token::Name(n)) if n == name)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).map(|t| t.0.clone());
        self.at += 1;
        token
    }

    fn expect_op(&mut self, op: &str) -> Parsed<()> {
        if self.peek_op(op) {
            self.at += 1;
            Ok(())
        } else {
            Err((
                self.line(),
                format!("expected `{op}`, found {}", self.found()),
            ))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None | Some(Token::Newline) => "the end of the line".into(),
            Some(Token::Name(n)) => format!("`{n}`"),
            Some(Token::Op(o)) => format!("`{o}`"),
            Some(Token::Str(s)) => format!("the string {s:?}"),
            Some(Token::Int(i)) => format!("`{i}`"),
            Some(Token::Float(f)) => format!("`{f}`"),
        }
    }

    fn skip_line(&mut self) {
        while let Some(token) = self.next() {
            if token == Token::Newline {
                break;
            }
        }
    }

    /// One logical line: `Some` for an assignment, `None` for what is skipped.
    fn statement(&mut self) -> Result<Option<(String, Value)>, Failure> {
        let line = self.line();
        let fail = |setting: Option<&str>, (line, message): (usize, String)| Failure {
            line,
            setting: setting.map(str::to_string),
            message,
        };
        match self.peek().cloned() {
            Some(Token::Newline) => {
                self.at += 1;
                Ok(None)
            }
            Some(Token::Name(keyword)) if keyword == "import" || keyword == "from" => {
                self.skip_line();
                Ok(None)
            }
            Some(Token::Str(_)) => {
                // A docstring.
                self.at += 1;
                self.end_of_line().map_err(|e| fail(None, e))?;
                Ok(None)
            }
            Some(Token::Name(name))
                if matches!(self.tokens.get(self.at + 1), Some((Token::Op("="), _))) =>
            {
                self.at += 2;
                let value = self.expression().map_err(|e| fail(Some(&name), e))?;
                self.end_of_line().map_err(|e| fail(Some(&name), e))?;
                Ok(Some((name, value)))
            }
            _ => Err(fail(
                None,
                (
                    line,
                    format!(
                        "expected `NAME = value`, found {} (only constants can be imported)",
                        self.found()
                    ),
                ),
            )),
        }
    }

    fn end_of_line(&mut self) -> Parsed<()> {
        match self.peek() {
            None | Some(Token::Newline) => {
                self.at += 1;
                Ok(())
            }
            Some(Token::Op(";")) => Err((
                self.line(),
                "several statements on one line are not supported".into(),
            )),
            _ => Err((
                self.line(),
                format!("unexpected {} after the value", self.found()),
            )),
        }
    }

    fn expression(&mut self) -> Parsed<Value> {
        let value = self.or()?;
        if self.peek_name("if") {
            self.at += 1;
            let condition = self.or()?;
            if !self.peek_name("else") {
                return Err((
                    self.line(),
                    format!("expected `else`, found {}", self.found()),
                ));
            }
            self.at += 1;
            let other = self.expression()?;
            return Ok(if condition.truthy() { value } else { other });
        }
        Ok(value)
    }

    fn or(&mut self) -> Parsed<Value> {
        let mut value = self.and()?;
        while self.peek_name("or") {
            self.at += 1;
            let right = self.and()?;
            if !value.truthy() {
                value = right;
            }
        }
        Ok(value)
    }

    fn and(&mut self) -> Parsed<Value> {
        let mut value = self.not()?;
        while self.peek_name("and") {
            self.at += 1;
            let right = self.not()?;
            if value.truthy() {
                value = right;
            }
        }
        Ok(value)
    }

    fn not(&mut self) -> Parsed<Value> {
        if self.peek_name("not") {
            self.at += 1;
            return Ok(Value::Bool(!self.not()?.truthy()));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Parsed<Value> {
        let mut left = self.sum()?;
        let mut result = None;
        while let Some(Token::Op(op @ ("==" | "!=" | "<" | "<=" | ">" | ">="))) = self.peek() {
            let (op, line) = (*op, self.line());
            self.at += 1;
            let right = self.sum()?;
            let holds = compare(op, &left, &right).map_err(|Invalid(m)| (line, m))?;
            result = Some(result.unwrap_or(true) && holds);
            left = right;
        }
        Ok(result.map_or(left, Value::Bool))
    }

    fn sum(&mut self) -> Parsed<Value> {
        let mut value = self.product()?;
        while let Some(Token::Op(op @ ("+" | "-"))) = self.peek() {
            let (op, line) = (*op, self.line());
            self.at += 1;
            let right = self.product()?;
            value = arithmetic(op, value, right).map_err(|Invalid(m)| (line, m))?;
        }
        Ok(value)
    }

    fn product(&mut self) -> Parsed<Value> {
        let mut value = self.unary()?;
        while let Some(Token::Op(op @ ("*" | "/" | "//" | "%"))) = self.peek() {
            let (op, line) = (*op, self.line());
            self.at += 1;
            let right = self.unary()?;
            value = arithmetic(op, value, right).map_err(|Invalid(m)| (line, m))?;
        }
        Ok(value)
    }

    fn unary(&mut self) -> Parsed<Value> {
        if let Some(Token::Op(op @ ("-" | "+"))) = self.peek() {
            let (op, line) = (*op, self.line());
            self.at += 1;
            let value = self.unary()?;
            return arithmetic(op, Value::Int(0), value).map_err(|Invalid(m)| (line, m));
        }
        self.power()
    }

    fn power(&mut self) -> Parsed<Value> {
        let base = self.postfix()?;
        if self.peek_op("**") {
            let line = self.line();
            self.at += 1;
            // Right-associative, and binds tighter than a unary minus on its left only.
            let exponent = self.unary()?;
            return arithmetic("**", base, exponent).map_err(|Invalid(m)| (line, m));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Parsed<Value> {
        let mut value = self.atom()?;
        loop {
            if self.peek_op("[") {
                let line = self.line();
                self.at += 1;
                let index = self.expression()?;
                self.expect_op("]")?;
                value = subscript(&value, &index).map_err(|Invalid(m)| (line, m))?;
            } else if self.peek_op(".") {
                return Err((
                    self.line(),
                    "attributes and methods are not supported".into(),
                ));
            } else {
                return Ok(value);
            }
        }
    }

    fn atom(&mut self) -> Parsed<Value> {
        let line = self.line();
        match self.next() {
            Some(Token::Int(i)) => Ok(Value::Int(i)),
            Some(Token::Float(f)) => Ok(Value::Float(f)),
            Some(Token::Str(mut s)) => {
                // Adjacent literals are one string, as in Python.
                while let Some(Token::Str(more)) = self.peek() {
                    s.push_str(more);
                    self.at += 1;
                }
                Ok(Value::Str(s))
            }
            Some(Token::Op("(")) => {
                let items = self.items(")")?;
                Ok(match items {
                    Items::One(value) => value,
                    Items::Many(values) => Value::List(values),
                })
            }
            Some(Token::Op("[")) => Ok(Value::List(self.items("]")?.into_vec())),
            Some(Token::Name(name)) => match name.as_str() {
                "True" => Ok(Value::Bool(true)),
                "False" => Ok(Value::Bool(false)),
                "None" => Ok(Value::None),
                _ if self.peek_op("(") => {
                    self.at += 1;
                    let args = self.items(")")?.into_vec();
                    call(&name, args).map_err(|Invalid(m)| (line, m))
                }
                _ => match self.settings.get(&name) {
                    Some(entry) => Ok(entry.value.clone()),
                    None => Err((
                        line,
                        format!("`{name}` is not defined above (only settings defined earlier in the file can be used)"),
                    )),
                },
            },
            _ => {
                self.at -= 1;
                Err((line, format!("expected a value, found {}", self.found())))
            }
        }
    }

    /// Comma-separated expressions up to `close`; a trailing comma is allowed.
    fn items(&mut self, close: &str) -> Parsed<Items> {
        // Looked for before evaluating: the loop variable would be reported as undefined.
        let mut depth = 0usize;
        for (token, line) in &self.tokens[self.at..] {
            match token {
                Token::Op("(" | "[") => depth += 1,
                Token::Op(")" | "]") if depth == 0 => break,
                Token::Op(")" | "]") => depth -= 1,
                Token::Name(n) if n == "for" && depth == 0 => {
                    return Err((*line, "comprehensions are not supported".into()));
                }
                _ => {}
            }
        }
        let mut values = Vec::new();
        let mut comma = false;
        while !self.peek_op(close) {
            values.push(self.expression()?);
            if self.peek_op(",") {
                self.at += 1;
                comma = true;
            } else if !self.peek_op(close) {
                return Err((
                    self.line(),
                    format!("expected `,` or `{close}`, found {}", self.found()),
                ));
            }
        }
        self.at += 1;
        Ok(if values.len() == 1 && !comma {
            Items::One(values.remove(0))
        } else {
            Items::Many(values)
        })
    }
}

enum Items {
    One(Value),
    Many(Vec<Value>),
}

impl Items {
    fn into_vec(self) -> Vec<Value> {
        match self {
            Items::One(value) => vec![value],
            Items::Many(values) => values,
        }
    }
}

/// Python's numbers: bools count as ints, ints stay ints where Python keeps them.
enum Number {
    Int(i64),
    Float(f64),
}

fn number_of(value: &Value) -> Option<Number> {
    match value {
        Value::Bool(b) => Some(Number::Int(i64::from(*b))),
        Value::Int(i) => Some(Number::Int(*i)),
        Value::Float(f) => Some(Number::Float(*f)),
        _ => None,
    }
}

fn as_float(n: &Number) -> f64 {
    match n {
        Number::Int(i) => *i as f64,
        Number::Float(f) => *f,
    }
}

fn arithmetic(op: &str, left: Value, right: Value) -> Result<Value, Invalid> {
    match (op, &left, &right) {
        ("+", Value::Str(a), Value::Str(b)) => return Ok(Value::Str(format!("{a}{b}"))),
        ("+", Value::List(a), Value::List(b)) => {
            return Ok(Value::List(a.iter().chain(b).cloned().collect()))
        }
        ("*", Value::List(items), n) | ("*", n, Value::List(items)) => {
            if let Some(Number::Int(times)) = number_of(n) {
                let times = usize::try_from(times.max(0)).unwrap_or(0);
                if items.len().saturating_mul(times) > 10_000 {
                    return Err("the list would be too long".into());
                }
                return Ok(Value::List(
                    items
                        .iter()
                        .cycle()
                        .take(items.len() * times)
                        .cloned()
                        .collect(),
                ));
            }
        }
        _ => {}
    }
    let (Some(a), Some(b)) = (number_of(&left), number_of(&right)) else {
        return Err(Invalid(format!(
            "cannot compute {} {op} {}",
            left.type_name(),
            right.type_name()
        )));
    };
    let overflow = || {
        Invalid(format!(
            "{} {op} {} is too large",
            left.repr(),
            right.repr()
        ))
    };
    let zero = || {
        Invalid(format!(
            "{} {op} {}: division by zero",
            left.repr(),
            right.repr()
        ))
    };
    if let (Number::Int(x), Number::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        let int = match op {
            "+" => x.checked_add(y),
            "-" => x.checked_sub(y),
            "*" => x.checked_mul(y),
            "//" | "%" if y == 0 => return Err(zero()),
            "//" => Some(x.div_euclid(y) - i64::from(y < 0 && x.rem_euclid(y) != 0)),
            "%" => Some(x - y * (x.div_euclid(y) - i64::from(y < 0 && x.rem_euclid(y) != 0))),
            "**" if y >= 0 => u32::try_from(y).ok().and_then(|e| x.checked_pow(e)),
            _ => None,
        };
        match (int, op) {
            (Some(v), _) => return Ok(Value::Int(v)),
            (None, "+" | "-" | "*" | "**") if !(op == "**" && y < 0) => return Err(overflow()),
            _ => {}
        }
    }
    let (x, y) = (as_float(&a), as_float(&b));
    let v = match op {
        "+" => x + y,
        "-" => x - y,
        "*" => x * y,
        "/" | "//" | "%" if y == 0.0 => return Err(zero()),
        "/" => x / y,
        "//" => (x / y).floor(),
        "%" => x - y * (x / y).floor(),
        "**" => x.powf(y),
        _ => return Err(Invalid(format!("unknown operator `{op}`"))),
    };
    if v.is_finite() {
        Ok(Value::Float(v))
    } else {
        Err(overflow())
    }
}

fn compare(op: &str, left: &Value, right: &Value) -> Result<bool, Invalid> {
    use std::cmp::Ordering;
    let order = match (number_of(left), number_of(right)) {
        (Some(a), Some(b)) => as_float(&a).partial_cmp(&as_float(&b)),
        _ => match (left, right) {
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            _ if op == "==" => return Ok(left == right),
            _ if op == "!=" => return Ok(left != right),
            _ => None,
        },
    };
    let Some(order) = order else {
        return Err(Invalid(format!(
            "cannot compare {} {op} {}",
            left.type_name(),
            right.type_name()
        )));
    };
    Ok(match op {
        "==" => order == Ordering::Equal,
        "!=" => order != Ordering::Equal,
        "<" => order == Ordering::Less,
        "<=" => order != Ordering::Greater,
        ">" => order == Ordering::Greater,
        _ => order != Ordering::Less,
    })
}

fn subscript(value: &Value, index: &Value) -> Result<Value, Invalid> {
    let (Value::List(items), Some(Number::Int(i))) = (value, number_of(index)) else {
        return Err(Invalid(format!(
            "cannot index {} with {}",
            value.type_name(),
            index.type_name()
        )));
    };
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let at = if i < 0 { i + len } else { i };
    usize::try_from(at)
        .ok()
        .and_then(|at| items.get(at))
        .cloned()
        .ok_or_else(|| Invalid(format!("index {i} is outside the list of {len}")))
}

fn call(name: &str, args: Vec<Value>) -> Result<Value, Invalid> {
    let numbers: Option<Vec<Number>> = args.iter().map(number_of).collect();
    let one_list = match args.as_slice() {
        [Value::List(items)] => Some(items.clone()),
        _ => None,
    };
    match (name, args.len()) {
        ("min" | "max", _) => {
            let items = one_list.unwrap_or_else(|| args.clone());
            let mut best: Option<Value> = None;
            for item in items {
                best = Some(match best {
                    None => item,
                    Some(b) => {
                        let wanted = if name == "min" { "<" } else { ">" };
                        if compare(wanted, &item, &b)? {
                            item
                        } else {
                            b
                        }
                    }
                });
            }
            best.ok_or_else(|| Invalid(format!("{name}() of nothing")))
        }
        ("len", 1) => match &args[0] {
            Value::List(items) => Ok(Value::Int(items.len() as i64)),
            Value::Str(s) => Ok(Value::Int(s.chars().count() as i64)),
            other => Err(Invalid(format!("len() of {}", other.type_name()))),
        },
        ("abs", 1) => match numbers.as_deref() {
            Some([Number::Int(i)]) => Ok(Value::Int(i.abs())),
            Some([Number::Float(f)]) => Ok(Value::Float(f.abs())),
            _ => Err("abs() needs a number".into()),
        },
        ("float", 1) => match (&args[0], numbers.as_deref()) {
            (_, Some([n])) => Ok(Value::Float(as_float(n))),
            (Value::Str(s), _) => s
                .trim()
                .parse()
                .map(Value::Float)
                .map_err(|_| Invalid(format!("float({s:?}) is not a number"))),
            _ => Err("float() needs a number".into()),
        },
        ("int", 1) => match numbers.as_deref() {
            Some([Number::Int(i)]) => Ok(Value::Int(*i)),
            Some([Number::Float(f)]) if f.is_finite() && f.abs() < 9e18 => {
                Ok(Value::Int(f.trunc() as i64))
            }
            _ => Err("int() needs a number".into()),
        },
        ("round", 1 | 2) => {
            let Some(numbers) = numbers else {
                return Err("round() needs numbers".into());
            };
            let digits = match numbers.get(1) {
                Some(Number::Int(d)) => Some(*d),
                None => None,
                Some(Number::Float(_)) => return Err("round() needs whole digits".into()),
            };
            // Python rounds half to even on the decimal text of the exact binary value;
            // formatting does the same.
            let x = as_float(&numbers[0]);
            match digits {
                None => Ok(Value::Int(
                    format!("{x:.0}")
                        .parse()
                        .map_err(|_| Invalid("round() of that".into()))?,
                )),
                Some(d) => {
                    let d = usize::try_from(d.clamp(0, 17)).unwrap_or(0);
                    Ok(Value::Float(format!("{x:.d$}").parse().unwrap_or(x)))
                }
            }
        }
        _ => Err(Invalid(format!(
            "`{name}(...)` is not supported (min, max, abs, round, int, float and len are)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> OldSettings {
        read(Path::new("settings.py"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn value(text: &str, name: &str) -> Value {
        settings(text).get(name).expect(name).value.clone()
    }

    fn error(text: &str) -> String {
        read(Path::new("settings.py"), text)
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn lists_over_other_settings_have_the_originals_floats() {
        let text = "MIN_CELL_VOLTAGE = 1.9\nBALANCING_VOLTAGE = 2.5\nMAX_CELL_VOLTAGE = 2.55\n\
                    CELL_CHARGE_LIMITING_VOLTAGE = [MIN_CELL_VOLTAGE, MIN_CELL_VOLTAGE + 0.05, \
                    BALANCING_VOLTAGE - 0.1, BALANCING_VOLTAGE, MAX_CELL_VOLTAGE]\n";
        assert_eq!(
            value(text, "CELL_CHARGE_LIMITING_VOLTAGE"),
            Value::List(vec![
                Value::Float(1.9),
                Value::Float(1.95),
                Value::Float(2.4),
                Value::Float(2.5),
                Value::Float(2.55)
            ])
        );
        // The LFP sum is not 2.95 in binary, as in Python.
        assert_eq!(
            value("M = 2.9\nX = M + 0.05\n", "X"),
            Value::Float(2.9499999999999997)
        );
    }

    #[test]
    fn python_arithmetic_keeps_ints_and_divides_true() {
        assert_eq!(value("A = 200\nB = A * 2\n", "B"), Value::Int(400));
        assert_eq!(value("A = 7 / 2\n", "A"), Value::Float(3.5));
        assert_eq!(value("A = 7 // 2\n", "A"), Value::Int(3));
        assert_eq!(value("A = -7 // 2\n", "A"), Value::Int(-4));
        assert_eq!(value("A = -7 % 3\n", "A"), Value::Int(2));
        assert_eq!(value("A = 2 ** 10\n", "A"), Value::Int(1024));
        assert_eq!(value("A = -2 ** 2\n", "A"), Value::Int(-4));
        assert_eq!(value("A = 10 * 0.1 + 0.2\n", "A"), Value::Float(1.2));
        assert_eq!(value("A = True + 1\n", "A"), Value::Int(2));
        assert_eq!(value("A = 1e-3\n", "A"), Value::Float(0.001));
        assert_eq!(value("A = 1_000\n", "A"), Value::Int(1000));
    }

    #[test]
    fn lists_strings_booleans_and_builtins() {
        assert_eq!(
            value("V = [2.4] * 3\n", "V"),
            Value::List(vec![Value::Float(2.4); 3])
        );
        assert_eq!(value("V = [1, 2] + [3]\nW = V[-1]\n", "W"), Value::Int(3));
        assert_eq!(
            value("S = 'com.victronenergy' \".battery\"\n", "S"),
            Value::Str("com.victronenergy.battery".into())
        );
        assert_eq!(
            value("A = 2\nB = A > 1 and not False\n", "B"),
            Value::Bool(true)
        );
        assert_eq!(value("A = 1 if 2 < 1 else 5\n", "A"), Value::Int(5));
        assert_eq!(
            value("L = [3.45, 3.5]\nM = max(L)\n", "M"),
            Value::Float(3.5)
        );
        assert_eq!(value("M = round(2.675, 2)\n", "M"), Value::Float(2.67));
        assert_eq!(value("M = min(3, 2.5)\n", "M"), Value::Float(2.5));
        assert_eq!(
            value("T = (1, 2,)\n", "T"),
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
    }

    #[test]
    fn comments_docstrings_imports_and_continuations() {
        let text = "\"\"\"Settings.\n\nMore.\"\"\"\nimport os  # not used\n\n\
                    # a comment\nA = 1  # trailing\nL = [\n    A,  # first\n    A + 1,\n]\n\
                    B = A + \\\n    2\nC = 'x'\n";
        let s = settings(text);
        assert_eq!(
            s.get("L").unwrap().value,
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(s.get("B").unwrap().value, Value::Int(3));
        assert_eq!(s.get("B").unwrap().line, 12);
        assert_eq!(s.get("C").unwrap().line, 14);
        assert_eq!(s.get("A").unwrap().line, 7);
    }

    #[test]
    fn a_later_assignment_replaces_an_earlier_one() {
        let s = settings("A = 1\nB = A\nA = 2\n");
        assert_eq!(s.get("A").unwrap().value, Value::Int(2));
        assert_eq!(s.get("A").unwrap().line, 3);
        assert_eq!(s.get("B").unwrap().value, Value::Int(1));
    }

    #[test]
    fn errors_name_file_line_and_setting() {
        assert_eq!(
            error("A = 1\n\nB = [A,\n     C + 1]\n"),
            "settings.py:4: B: `C` is not defined above (only settings defined earlier in the \
             file can be used)"
        );
        assert_eq!(
            error("A = 1\nB = A / 0\n"),
            "settings.py:2: B: 1 / 0: division by zero"
        );
        assert_eq!(
            error("A = os.getenv('X')\n"),
            "settings.py:1: A: `os` is not defined above (only settings defined earlier in the \
             file can be used)"
        );
        assert_eq!(
            error("A = 1\nB = 'x' - 1\n"),
            "settings.py:2: B: cannot compute a string - an integer"
        );
        assert_eq!(
            error("A = [1, 2\nB = 3\n"),
            "settings.py:3: a bracket is not closed"
        );
        assert_eq!(
            error("A = 1\nprint(A)\n"),
            "settings.py:2: expected `NAME = value`, found `print` (only constants can be \
             imported)"
        );
        assert_eq!(
            error("A = [x for x in B]\n"),
            "settings.py:1: A: comprehensions are not supported"
        );
        assert_eq!(
            error("A = 1\nB = A A\n"),
            "settings.py:2: B: unexpected `A` after the value"
        );
        assert_eq!(
            error("A = sorted([2, 1])\n"),
            "settings.py:1: A: `sorted(...)` is not supported (min, max, abs, round, int, float \
             and len are)"
        );
        assert_eq!(
            error("A = 'open\n"),
            "settings.py:1: a string is not closed on its line"
        );
    }
}
