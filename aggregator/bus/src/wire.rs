//! The D-Bus wire format (the "Message Protocol" of the D-Bus specification), as far as the
//! monitor's value connection needs it: framing and parsing of any incoming message with the
//! header fields borrowed from the buffer, decoding of the BusItem bodies we read
//! (`a{sv}` of `PropertiesChanged`, `a{sa{sv}}` of `ItemsChanged` and `GetItems`) straight into
//! [`Field`]s, and encoding of the few method calls we send (`Hello`, `AddMatch`, `GetItems`)
//! and of our `ItemsChanged` signal.
//!
//! Which D-Bus type a value is sent as, and what a received variant means, is decided in
//! [`variant`](crate::variant) ([`Encoded`], [`Field::read`]); this module only puts
//! those on the wire and takes them off it.
//!
//! Everything read is bounds-checked: a malformed message is an error naming what is wrong,
//! never a panic, and nesting is limited as the specification limits it. What is not read is
//! not checked: the entries of a dict after the one wanted. Lengths from the wire are `u32` and
//! summed in `u64`, so the checks hold where `usize` is 32 bits (the ARM devices).

use crate::variant::{dbus_string, Encoded, Field, Held};
use aggregator_core::value::Value;

/// Longest message accepted (the specification's limit).
pub const MAX_MESSAGE: usize = 128 << 20;

const STRING_WITHOUT_NUL: &str = "a string without its nul";

/// Deepest nesting of containers (32 arrays and 32 structures in the specification).
const MAX_DEPTH: u32 = 64;

/// What is wrong with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed D-Bus message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// The message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A method call.
    Call,
    /// A method's answer.
    Return,
    /// An error answer.
    Error,
    /// A signal.
    Signal,
    /// A type this version of the protocol does not define (to be ignored).
    Unknown(u8),
}

/// One message, borrowed from the receive buffer.
#[derive(Debug)]
pub struct Message<'a> {
    /// Its type.
    pub kind: Kind,
    /// The sender's serial number.
    pub serial: u32,
    /// For answers: the serial of the call.
    pub reply_serial: Option<u32>,
    /// Object path.
    pub path: Option<&'a str>,
    /// Interface.
    pub interface: Option<&'a str>,
    /// Method or signal name.
    pub member: Option<&'a str>,
    /// For errors: the error name.
    pub error_name: Option<&'a str>,
    /// The sender's unique name (set by the bus).
    pub sender: Option<&'a str>,
    /// The body's signature.
    pub signature: &'a str,
    /// The body.
    pub body: Body<'a>,
}

/// A message body with its byte order.
#[derive(Clone, Copy, Debug)]
pub struct Body<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

/// Length of the whole message at the start of `buf`, once its fixed header (16 bytes) is in.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let big_endian = match buf[0] {
        b'l' => false,
        b'B' => true,
        _ => return Err(WireError("unknown byte order")),
    };
    if buf[3] != 1 {
        return Err(WireError("protocol version is not 1"));
    }
    let u32_at = |at: usize| {
        let bytes = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    };
    message_len(u32_at(4), u32_at(12)).map(Some)
}

/// The length of a message whose fixed header gives `body` bytes of body and `fields` bytes of
/// header fields: the fields padded to 8 after the 16-byte fixed header, then the body.
fn message_len(body: u32, fields: u32) -> Result<usize, WireError> {
    let fields_end = 16 + u64::from(fields);
    let total = fields_end.next_multiple_of(8) + u64::from(body);
    if total > MAX_MESSAGE as u64 {
        return Err(WireError("longer than the 128 MiB limit"));
    }
    // At most MAX_MESSAGE, which fits every usize.
    Ok(total as usize)
}

/// Parses one whole message (exactly [`frame_len`] bytes).
pub fn parse(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let total = frame_len(buf)?.ok_or(WireError("shorter than its fixed header"))?;
    if buf.len() != total {
        return Err(WireError("length differs from its header"));
    }
    let big_endian = buf[0] == b'B';
    let kind = match buf[1] {
        1 => Kind::Call,
        2 => Kind::Return,
        3 => Kind::Error,
        4 => Kind::Signal,
        0 => return Err(WireError("message type 0")),
        other => Kind::Unknown(other),
    };
    let mut c = Cursor::new(buf, big_endian);
    c.pos = 8;
    let serial = c.u32()?;
    let fields_len = c.u32()? as usize;
    let fields_end = 16 + fields_len;
    let mut message = Message {
        kind,
        serial,
        reply_serial: None,
        path: None,
        interface: None,
        member: None,
        error_name: None,
        sender: None,
        signature: "",
        body: Body {
            bytes: &[],
            big_endian,
        },
    };
    while c.pos < fields_end {
        c.align(8)?;
        let code = c.u8()?;
        let signature = c.signature()?;
        match (code, signature) {
            (1, "o") => message.path = Some(c.string()?),
            (2, "s") => message.interface = Some(c.string()?),
            (3, "s") => message.member = Some(c.string()?),
            (4, "s") => message.error_name = Some(c.string()?),
            (5, "u") => message.reply_serial = Some(c.u32()?),
            (7, "s") => message.sender = Some(c.string()?),
            (6, "s") => c.skip_string()?,
            (8, "g") => message.signature = c.signature()?,
            (9, "u") => c.u32().map(|_| ())?,
            (1..=9, _) => return Err(WireError("a header field of the wrong type")),
            // A field we do not know is skipped by its signature, which must first be one
            // whole type: `skip_one` reads a structure's members between its brackets.
            _ if complete_type(signature.as_bytes(), 0)? != signature.len() => {
                return Err(WireError("a header field of more than one type"));
            }
            _ => c.skip_one(signature.as_bytes(), 0)?,
        }
    }
    if c.pos != fields_end {
        return Err(WireError("header fields overrun their array"));
    }
    let body_start = align(fields_end, 8);
    if body_start > buf.len() {
        return Err(WireError("body outside the message"));
    }
    message.body.bytes = &buf[body_start..];
    Ok(message)
}

impl<'a> Body<'a> {
    /// A body of raw bytes, for tests and fuzzing.
    pub fn new(bytes: &'a [u8], big_endian: bool) -> Body<'a> {
        Body { bytes, big_endian }
    }

    /// The first argument, when it is a string (the answer of `Hello`).
    pub fn string(&self) -> Result<&'a str, WireError> {
        Cursor::new(self.bytes, self.big_endian).string()
    }

    /// The first argument, when it is a variant, decoded as [`Field::from_wire`] decodes it.
    pub fn variant(&self) -> Result<Field, WireError> {
        Cursor::new(self.bytes, self.big_endian).variant(0)
    }

    /// The entry `key` of an `a{sv}` body (`Value` of `PropertiesChanged`), if there is one;
    /// the entries after it are not read.
    pub fn dict_value(&self, key: &str) -> Result<Option<Field>, WireError> {
        Cursor::new(self.bytes, self.big_endian).entry(key, 0)
    }

    /// Every path of an `a{sa{sv}}` body (`ItemsChanged`, the answer of `GetItems`) that
    /// `wanted` accepts, with its `Value` entry; entries without `Value` are left out.
    pub fn items(
        &self,
        mut wanted: impl FnMut(&str) -> bool,
        mut each: impl FnMut(&'a str, Field),
    ) -> Result<(), WireError> {
        let mut c = Cursor::new(self.bytes, self.big_endian);
        c.dict(0, |c, path| {
            if !wanted(path) {
                return c.skip_one(b"a{sv}", 1);
            }
            if let Some(value) = c.entry("Value", 1)? {
                each(path, value);
            }
            Ok(())
        })
    }
}

/// Bytes as text. Names, paths and nearly every value on the bus are ASCII: one quick look
/// serves them, the general UTF-8 check the rest.
#[inline]
fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

fn align(pos: usize, n: usize) -> usize {
    (pos + n - 1) & !(n - 1)
}

/// Alignment of a type by its first signature character.
fn alignment(code: u8) -> usize {
    match code {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 4,
    }
}

fn is_basic(code: u8) -> bool {
    matches!(
        code,
        b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b'h' | b's' | b'o' | b'g'
    )
}

/// Length of the first complete type of a signature.
fn complete_type(sig: &[u8], depth: u32) -> Result<usize, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError("nested too deeply"));
    }
    let Some(&first) = sig.first() else {
        return Err(WireError("a signature ends early"));
    };
    match first {
        code if is_basic(code) || code == b'v' => Ok(1),
        b'a' => Ok(1 + complete_type(&sig[1..], depth + 1)?),
        b'(' => {
            let mut at = 1;
            while sig.get(at) != Some(&b')') {
                if at >= sig.len() {
                    return Err(WireError("a structure is not closed"));
                }
                at += complete_type(&sig[at..], depth + 1)?;
            }
            if at == 1 {
                return Err(WireError("an empty structure"));
            }
            Ok(at + 1)
        }
        b'{' => {
            if !sig.get(1).copied().is_some_and(is_basic) {
                return Err(WireError("a dict key that is not a basic type"));
            }
            let at = 2 + complete_type(&sig[2..], depth + 1)?;
            if sig.get(at) != Some(&b'}') {
                return Err(WireError("a dict entry not of two types"));
            }
            Ok(at + 1)
        }
        _ => Err(WireError("an unknown type in a signature")),
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], big_endian: bool) -> Cursor<'a> {
        Cursor {
            buf,
            pos: 0,
            big_endian,
        }
    }

    #[inline]
    fn align(&mut self, n: usize) -> Result<(), WireError> {
        let at = align(self.pos, n);
        if at > self.buf.len() {
            return Err(WireError("ends inside padding"));
        }
        self.pos = at;
        Ok(())
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(WireError("ends inside a value"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    #[inline]
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.align(N)?;
        let mut bytes: [u8; N] = self.take(N)?.try_into().map_err(|_| WireError("short"))?;
        if self.big_endian {
            bytes.reverse();
        }
        Ok(bytes)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.fixed()?))
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    /// `len` bytes and the nul after them (`missing`: the error without it).
    #[inline]
    fn terminated(&mut self, len: usize, missing: &'static str) -> Result<&'a [u8], WireError> {
        let bytes = self.take(len)?;
        if self.u8()? != 0 {
            return Err(WireError(missing));
        }
        Ok(bytes)
    }

    /// A string or object path: length, bytes, a nul.
    #[inline]
    fn string(&mut self) -> Result<&'a str, WireError> {
        let len = self.u32()? as usize;
        text(self.terminated(len, STRING_WITHOUT_NUL)?)
            .ok_or(WireError("a string that is not UTF-8"))
    }

    /// Passes over a string whose text is not needed.
    fn skip_string(&mut self) -> Result<(), WireError> {
        let len = self.u32()? as usize;
        self.terminated(len, STRING_WITHOUT_NUL).map(drop)
    }

    #[inline]
    fn signature(&mut self) -> Result<&'a str, WireError> {
        let len = usize::from(self.u8()?);
        text(self.terminated(len, "a signature without its nul")?)
            .ok_or(WireError("a signature that is not UTF-8"))
    }

    /// An array's length and end, aligned to its elements.
    fn array(&mut self, element: u8) -> Result<usize, WireError> {
        let len = self.u32()? as usize;
        if len > 1 << 26 {
            return Err(WireError("an array longer than 64 MiB"));
        }
        self.align(alignment(element))?;
        self.pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or(WireError("an array longer than its message"))
    }

    /// An `a{s…}` dict: calls `entry` with each key, the cursor at the entry's value.
    fn dict(
        &mut self,
        depth: u32,
        mut entry: impl FnMut(&mut Cursor<'a>, &'a str) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError("nested too deeply"));
        }
        let end = self.array(b'{')?;
        while self.pos < end {
            self.align(8)?;
            let key = self.string()?;
            entry(self, key)?;
        }
        if self.pos != end {
            return Err(WireError("an array's elements overrun it"));
        }
        Ok(())
    }

    /// The entry `key` of an `a{sv}` dict at `depth`, if there is one; the cursor is left after
    /// the dict. The entries after it are not read: a BusItem sends `Text` beside `Value`, and
    /// passing over it cost half of what reading the value did.
    fn entry(&mut self, key: &str, depth: u32) -> Result<Option<Field>, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError("nested too deeply"));
        }
        let end = self.array(b'{')?;
        while self.pos < end {
            self.align(8)?;
            if self.string()? == key {
                let value = self.variant(depth + 1)?;
                if self.pos > end {
                    return Err(WireError("an array's elements overrun it"));
                }
                self.pos = end;
                return Ok(Some(value));
            }
            self.skip_variant(depth + 1)?;
        }
        if self.pos != end {
            return Err(WireError("an array's elements overrun it"));
        }
        Ok(None)
    }

    fn skip_variant(&mut self, depth: u32) -> Result<(), WireError> {
        let signature = self.signature()?.as_bytes();
        if complete_type(signature, depth)? != signature.len() {
            return Err(WireError("a variant of more than one type"));
        }
        self.skip_one(signature, depth)
    }

    /// Skips one value of the single complete type `t`.
    fn skip_one(&mut self, t: &[u8], depth: u32) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError("nested too deeply"));
        }
        match t.first() {
            Some(b'y') => self.take(1).map(|_| ()),
            Some(b'n' | b'q') => self.u16().map(|_| ()),
            Some(b'b' | b'i' | b'u' | b'h') => self.u32().map(|_| ()),
            Some(b'x' | b't' | b'd') => self.u64().map(|_| ()),
            Some(b's' | b'o') => self.string().map(|_| ()),
            Some(b'g') => self.signature().map(|_| ()),
            Some(b'v') => self.skip_variant(depth + 1),
            Some(b'a') => {
                let element = &t[1..];
                let first = *element
                    .first()
                    .ok_or(WireError("an array without a type"))?;
                let end = self.array(first)?;
                while self.pos < end {
                    self.skip_one(element, depth + 1)?;
                }
                if self.pos != end {
                    return Err(WireError("an array's elements overrun it"));
                }
                Ok(())
            }
            Some(b'(' | b'{') => {
                self.align(8)?;
                let mut inner = &t[1..t.len().saturating_sub(1)];
                while !inner.is_empty() {
                    let len = complete_type(inner, depth + 1)?;
                    self.skip_one(&inner[..len], depth + 1)?;
                    inner = &inner[len..];
                }
                Ok(())
            }
            _ => Err(WireError("an unknown type in a signature")),
        }
    }

    /// A variant, decoded as [`Field::from_wire`] decodes it.
    fn variant(&mut self, depth: u32) -> Result<Field, WireError> {
        let signature = self.signature()?.as_bytes();
        if complete_type(signature, depth)? != signature.len() {
            return Err(WireError("a variant of more than one type"));
        }
        let held = match signature[0] {
            b'y' => Held::U8(self.u8()?),
            b'b' => Held::Bool(self.u32()? != 0),
            b'n' => Held::I16(self.u16()? as i16),
            b'q' => Held::U16(self.u16()?),
            b'i' => Held::I32(self.u32()? as i32),
            b'u' => Held::U32(self.u32()?),
            b'x' => Held::I64(self.u64()? as i64),
            b't' => Held::U64(self.u64()?),
            b'd' => Held::F64(f64::from_bits(self.u64()?)),
            b's' => Held::Str(self.string()?),
            b'v' => {
                if depth > MAX_DEPTH {
                    return Err(WireError("nested too deeply"));
                }
                return self.variant(depth + 1);
            }
            b'a' if signature[1] == b'{' => {
                self.skip_one(signature, depth)?;
                Held::Dict
            }
            b'a' => {
                let start = self.pos;
                let len = self.u32()?;
                self.pos = start;
                self.skip_one(signature, depth)?;
                Held::Array { empty: len == 0 }
            }
            b'(' => {
                self.skip_one(signature, depth)?;
                Held::Structure
            }
            _ => {
                self.skip_one(signature, depth)?;
                Held::Other
            }
        };
        Ok(Field::read(held))
    }
}

/// Encodes a method call with string arguments (all this connection ever sends).
pub fn method_call(
    serial: u32,
    destination: &str,
    path: &str,
    interface: &str,
    member: &str,
    args: &[&str],
) -> Vec<u8> {
    let signature = "s".repeat(args.len());
    let mut body = Writer(Vec::new());
    for arg in args {
        body.string(arg);
    }
    message(
        1,
        serial,
        &[
            (1, b'o', path),
            (2, b's', interface),
            (3, b's', member),
            (6, b's', destination),
        ],
        &signature,
        &body.0,
    )
}

/// Encodes a signal whose `body` (of `signature`) is already encoded little-endian from an
/// 8-aligned start, as [`items_body`] encodes it.
pub fn signal_message(
    serial: u32,
    path: &str,
    interface: &str,
    member: &str,
    signature: &str,
    body: &[u8],
) -> Vec<u8> {
    message(
        4,
        serial,
        &[(1, b'o', path), (2, b's', interface), (3, b's', member)],
        signature,
        body,
    )
}

/// A little-endian message of `kind` with these header fields (code, type, text), the
/// signature field when `signature` is not empty, and `body`.
fn message(
    kind: u8,
    serial: u32,
    fields: &[(u8, u8, &str)],
    signature: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(128 + body.len()));
    w.0.extend_from_slice(&[b'l', kind, 0, 1]);
    w.0.extend_from_slice(&(body.len() as u32).to_le_bytes());
    w.0.extend_from_slice(&serial.to_le_bytes());
    w.0.extend_from_slice(&[0; 4]);
    let signature_field = (!signature.is_empty()).then_some((8, b'g', signature));
    for &(code, kind, value) in fields.iter().chain(signature_field.iter()) {
        w.pad(8);
        w.0.extend_from_slice(&[code, 1, kind, 0]);
        if kind == b'g' {
            w.signature(value);
        } else {
            w.string(value);
        }
    }
    let fields_len = (w.0.len() - 16) as u32;
    w.0[12..16].copy_from_slice(&fields_len.to_le_bytes());
    w.pad(8);
    w.0.extend_from_slice(body);
    w.0
}

/// Encodes the body of `ItemsChanged` (`a{sa{sv}}`, little-endian, as the header must say):
/// per path its `Value` as [`Encoded::of`] sends it, and its `Text`.
pub fn items_body<'a>(items: impl IntoIterator<Item = (&'a str, &'a Value, &'a str)>) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(1024));
    let outer = w.array_start();
    for (path, value, text) in items {
        w.pad(8);
        w.string(path);
        let inner = w.array_start();
        w.pad(8);
        w.string("Value");
        w.variant(&Encoded::of(value));
        w.pad(8);
        w.string("Text");
        w.signature("s");
        w.string(text);
        w.array_end(inner);
    }
    w.array_end(outer);
    w.0
}

struct Writer(Vec<u8>);

impl Writer {
    fn pad(&mut self, n: usize) {
        let len = align(self.0.len(), n);
        self.0.resize(len, 0);
    }

    /// A string as [`dbus_string`] makes it.
    fn string(&mut self, s: &str) {
        let s = dbus_string(s);
        self.pad(4);
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }

    /// A variant: its signature, then its value.
    fn variant(&mut self, value: &Encoded<'_>) {
        self.signature(value.signature());
        match value {
            Encoded::Invalid => {
                self.pad(4);
                self.0.extend_from_slice(&0u32.to_le_bytes());
            }
            Encoded::Double(v) => {
                self.pad(8);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            Encoded::Int32(v) => {
                self.pad(4);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            Encoded::Int64(v) => {
                self.pad(8);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            Encoded::Str(t) => self.string(t),
        }
    }

    /// The length of an array whose elements are 8-aligned (dict entries), to be filled in
    /// by [`Writer::array_end`] with the position its elements start at.
    fn array_start(&mut self) -> (usize, usize) {
        self.pad(4);
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        self.pad(8);
        (at, self.0.len())
    }

    fn array_end(&mut self, (at, start): (usize, usize)) {
        let len = (self.0.len() - start) as u32;
        self.0[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    fn signature(&mut self, s: &str) {
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    use zbus::message::Message as ZMessage;
    use zbus::zvariant::Value as Wire;

    const BUS_ITEM: &str = "com.victronenergy.BusItem";

    fn signal<B>(path: &str, member: &str, body: &B) -> Vec<u8>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let msg = ZMessage::signal(path, BUS_ITEM, member)
            .unwrap()
            .sender(":1.42")
            .unwrap()
            .build(body)
            .unwrap();
        msg.data().to_vec()
    }

    #[test]
    fn an_items_changed_body_reads_back_through_zbus_with_the_types_we_publish() {
        use crate::variant::to_wire;
        use zbus::zvariant::OwnedValue;
        let items = [
            ("/Dc/0/Voltage", Value::Float(53.21), "53.21V"),
            ("/Info/MaxChargeCurrent", Value::Int(150), "150A"),
            ("/History/Big", Value::Int(1 << 40), "1099511627776"),
            ("/TimeToGo", Value::Invalid, "---"),
            ("/CustomName", Value::Text("Bank\0 A".into()), "Bank\0 A"),
            ("/Mode", Value::Text(String::new()), ""),
        ];
        let body = items_body(items.iter().map(|(p, v, t)| (*p, v, *t)));
        let builder = ZMessage::signal("/", BUS_ITEM, "ItemsChanged")
            .unwrap()
            .endian(zbus::zvariant::Endian::Little);
        // SAFETY: the bytes under test; zbus checks them as it deserializes below.
        let msg = unsafe { builder.build_raw_body(&body, "a{sa{sv}}", vec![]) }.unwrap();
        let read: HashMap<String, HashMap<String, OwnedValue>> = msg.body().deserialize().unwrap();
        assert_eq!(read.len(), items.len());
        for (path, value, text) in &items {
            let entry = &read[*path];
            let expected_text = text.replace('\0', "");
            assert_eq!(
                *entry["Value"],
                to_wire(&match value {
                    Value::Text(t) => Value::Text(t.replace('\0', "")),
                    other => other.clone(),
                }),
                "{path}"
            );
            assert_eq!(*entry["Text"], Wire::from(expected_text.as_str()), "{path}");
        }
        // And through our own reader, as the monitor reads others' signals.
        let mut fields = Vec::new();
        Body::new(&body, false)
            .items(|_| true, |p, f| fields.push((p.to_string(), f)))
            .unwrap();
        assert_eq!(fields[0], ("/Dc/0/Voltage".into(), Field::Number(53.21)));
        assert_eq!(
            fields[2],
            ("/History/Big".into(), Field::Number((1u64 << 40) as f64))
        );
        assert_eq!(fields[3], ("/TimeToGo".into(), Field::Invalid));
        assert_eq!(
            fields[4],
            ("/CustomName".into(), Field::Text("Bank A".into()))
        );
    }

    #[test]
    fn an_unknown_header_field_of_no_whole_type_is_an_error_not_a_panic() {
        // A signal whose only header field, code 20, says it holds `sig` (then `value`).
        let field = |sig: &[u8], value: &[u8]| {
            let mut fields = vec![20, sig.len() as u8];
            fields.extend_from_slice(sig);
            fields.push(0);
            fields.extend_from_slice(value);
            // The array's length leaves out the padding to the body.
            let len = fields.len() as u32;
            fields.resize(fields.len().next_multiple_of(8), 0);
            let mut bytes = vec![b'l', 4, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0];
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&fields);
            bytes
        };
        for sig in [&b"("[..], b"{", b"(i", b"{s", b"a", b"(i)i", b"{sv}"] {
            let bytes = field(sig, &[]);
            assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
            assert!(parse(&bytes).is_err(), "{:?}", String::from_utf8_lossy(sig));
        }
        // A whole type is skipped: the message reads.
        let bytes = field(b"y", &[7]);
        assert_eq!(parse(&bytes).map(|m| m.kind), Ok(Kind::Signal));
    }

    #[test]
    fn an_empty_items_changed_body_is_an_empty_array() {
        let body = items_body(std::iter::empty());
        // The length, then the padding to the entries' alignment, present even when empty.
        assert_eq!(body, vec![0; 8]);
        let builder = ZMessage::signal("/", BUS_ITEM, "ItemsChanged").unwrap();
        // SAFETY: the bytes under test; zbus checks them as it deserializes below.
        let msg = unsafe { builder.build_raw_body(&body, "a{sa{sv}}", vec![]) }.unwrap();
        let read: HashMap<String, HashMap<String, zbus::zvariant::OwnedValue>> =
            msg.body().deserialize().unwrap();
        assert!(read.is_empty());
    }

    #[test]
    fn a_properties_changed_signal_is_framed_parsed_and_its_value_decoded() {
        let mut body: HashMap<&str, Wire<'_>> = HashMap::new();
        body.insert("Text", Wire::from("3.312V"));
        body.insert("Value", Wire::from(3.312f64));
        let bytes = signal("/Voltages/Cell7", "PropertiesChanged", &body);
        assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
        assert_eq!(frame_len(&bytes[..15]), Ok(None));
        let msg = parse(&bytes).unwrap();
        assert_eq!(msg.kind, Kind::Signal);
        assert_eq!(msg.path, Some("/Voltages/Cell7"));
        assert_eq!(msg.interface, Some(BUS_ITEM));
        assert_eq!(msg.member, Some("PropertiesChanged"));
        assert_eq!(msg.sender, Some(":1.42"));
        assert_eq!(msg.signature, "a{sv}");
        assert_eq!(
            msg.body.dict_value("Value").unwrap(),
            Some(Field::Number(3.312))
        );
        assert_eq!(
            msg.body.dict_value("Text").unwrap(),
            Some(Field::Text("3.312V".into()))
        );
        assert_eq!(msg.body.dict_value("Min").unwrap(), None);
    }

    /// Little-endian body bytes written by hand, for bodies no serializer would make.
    #[derive(Default)]
    struct HandBody(Vec<u8>);

    impl HandBody {
        fn pad(&mut self, n: usize) {
            self.0.resize(self.0.len().next_multiple_of(n), 0);
        }

        fn string(&mut self, s: &str) {
            self.pad(4);
            self.0.extend((s.len() as u32).to_le_bytes());
            self.0.extend(s.as_bytes());
            self.0.push(0);
        }

        /// An array of 8-aligned elements, each written by `element`.
        fn array(&mut self, elements: usize, mut element: impl FnMut(&mut Self, usize)) {
            self.pad(4);
            let len_at = self.0.len();
            self.0.extend([0; 4]);
            self.pad(8);
            let start = self.0.len();
            for k in 0..elements {
                self.pad(8);
                element(self, k);
            }
            let len = (self.0.len() - start) as u32;
            self.0[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        }

        /// An `a{sv}` of (key, variant signature, value bytes aligned to `align`).
        fn sv(&mut self, entries: &[(&str, &[u8], usize, &[u8])]) {
            self.array(entries.len(), |b, k| {
                let (key, signature, align, value) = entries[k];
                b.string(key);
                b.0.push(signature.len() as u8);
                b.0.extend(signature);
                b.0.push(0);
                b.pad(align);
                b.0.extend(value);
            });
        }
    }

    /// `{"Text": "x", "Value": value, then an entry whose variant has an unknown type}`.
    fn value_then_garbage(value: f64) -> [(&'static str, &'static [u8], usize, Vec<u8>); 3] {
        [
            ("Text", b"s", 4, vec![1, 0, 0, 0, b'x', 0]),
            ("Value", b"d", 8, value.to_le_bytes().to_vec()),
            ("Min", b"z", 1, vec![0; 8]),
        ]
    }

    #[test]
    fn a_dict_entry_is_read_whatever_comes_after_it_and_only_read_entries_must_be_well_formed() {
        let entries = value_then_garbage(2.5);
        let entries: Vec<_> = entries
            .iter()
            .map(|(k, s, a, v)| (*k, *s, *a, v.as_slice()))
            .collect();
        let mut body = HandBody::default();
        body.sv(&entries);
        let body = Body::new(&body.0, false);
        assert_eq!(body.dict_value("Value"), Ok(Some(Field::Number(2.5))));
        assert_eq!(body.dict_value("Text"), Ok(Some(Field::Text("x".into()))));
        assert!(body.dict_value("Max").is_err());
    }

    #[test]
    fn an_items_value_is_read_whatever_comes_after_it_in_its_dict() {
        let paths = [("/Dc/0/Voltage", 52.5), ("/Soc", 81.0)];
        let mut body = HandBody::default();
        body.array(paths.len(), |b, k| {
            let (path, value) = paths[k];
            b.string(path);
            let entries = value_then_garbage(value);
            let entries: Vec<_> = entries
                .iter()
                .map(|(k, s, a, v)| (*k, *s, *a, v.as_slice()))
                .collect();
            b.sv(&entries);
        });
        let mut read = Vec::new();
        let body = Body::new(&body.0, false);
        let result = body.items(|_| true, |p, v| read.push((p.to_string(), v)));
        assert_eq!(result, Ok(()));
        assert_eq!(
            read,
            [
                ("/Dc/0/Voltage".to_string(), Field::Number(52.5)),
                ("/Soc".to_string(), Field::Number(81.0))
            ]
        );
    }

    #[test]
    fn items_changed_yields_the_wanted_paths_with_their_values() {
        let entry = |v: Wire<'static>| {
            let mut e: HashMap<&str, Wire<'_>> = HashMap::new();
            e.insert("Value", v);
            e.insert("Text", Wire::from("x"));
            e
        };
        let mut body: HashMap<&str, HashMap<&str, Wire<'_>>> = HashMap::new();
        body.insert("/Soc", entry(Wire::from(55i32)));
        body.insert("/Dc/0/Voltage", entry(Wire::from(53.2f64)));
        body.insert("/Alarms/LowSoc", entry(Wire::from(Vec::<i32>::new())));
        body.insert("/Balances/Cell1", entry(Wire::from(1u8)));
        let mut no_value: HashMap<&str, Wire<'_>> = HashMap::new();
        no_value.insert("Text", Wire::from("t"));
        body.insert("/Info/ChargeMode", no_value);
        let bytes = signal("/", "ItemsChanged", &body);
        let msg = parse(&bytes).unwrap();
        let mut seen = HashMap::new();
        msg.body
            .items(
                |p| !p.starts_with("/Balances"),
                |p, f| {
                    seen.insert(p.to_string(), f);
                },
            )
            .unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen["/Soc"], Field::Number(55.0));
        assert_eq!(seen["/Dc/0/Voltage"], Field::Number(53.2));
        assert_eq!(seen["/Alarms/LowSoc"], Field::Invalid);
    }

    #[test]
    fn every_variant_decodes_as_the_zvariant_decoder_does() {
        let values: Vec<Wire<'static>> = vec![
            Wire::from(7u8),
            Wire::from(true),
            Wire::from(-3i16),
            Wire::from(65535u16),
            Wire::from(-70000i32),
            Wire::from(4_000_000_000u32),
            Wire::from(-5_000_000_000i64),
            Wire::from(u64::MAX),
            Wire::from(f64::NAN),
            Wire::from(f64::NEG_INFINITY),
            Wire::from("text"),
            Wire::from("Batterie Süd ⚡"),
            Wire::from(Vec::<i32>::new()),
            Wire::from(vec![1i32, 2]),
            Wire::from(vec!["a", "b"]),
            Wire::from((1u8, "s", 2.5f64)),
            Wire::Value(Box::new(Wire::from(12i32))),
            Wire::from(HashMap::<&str, i32>::new()),
            Wire::from(zbus::zvariant::ObjectPath::try_from("/a/b").unwrap()),
        ];
        for value in values {
            let mut body: HashMap<&str, Wire<'_>> = HashMap::new();
            body.insert("Value", value.try_clone().unwrap());
            let bytes = signal("/X", "PropertiesChanged", &body);
            let msg = parse(&bytes).unwrap();
            let ours = msg.body.dict_value("Value").unwrap().unwrap();
            let theirs = Field::from_wire(&value);
            match (&ours, &theirs) {
                (Field::Number(a), Field::Number(b)) if a.is_nan() && b.is_nan() => {}
                _ => assert_eq!(ours, theirs, "{value:?}"),
            }
        }
    }

    #[test]
    fn text_is_checked_as_utf8_past_the_ascii_look() {
        assert_eq!(text(b"/Voltages/Cell7"), Some("/Voltages/Cell7"));
        assert_eq!(text("Süd".as_bytes()), Some("Süd"));
        assert_eq!(text(b"S\xfcd"), None, "Latin-1 is not UTF-8");
        assert_eq!(text(b"\xe2\x9a"), None, "a cut sequence");
    }

    #[test]
    fn big_endian_messages_are_read() {
        let mut body: HashMap<&str, Wire<'_>> = HashMap::new();
        body.insert("Value", Wire::from(-1234i32));
        let msg = ZMessage::signal("/Dc/0/Current", BUS_ITEM, "PropertiesChanged")
            .unwrap()
            .endian(zbus::zvariant::Endian::Big)
            .build(&body)
            .unwrap();
        let bytes = msg.data().to_vec();
        assert_eq!(bytes[0], b'B');
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.path, Some("/Dc/0/Current"));
        assert_eq!(
            parsed.body.dict_value("Value").unwrap(),
            Some(Field::Number(-1234.0))
        );
    }

    fn zbus_reads(bytes: Vec<u8>) -> ZMessage {
        let context = zbus::zvariant::serialized::Context::new_dbus(zbus::zvariant::LE, 0);
        let data = zbus::zvariant::serialized::Data::new(bytes, context);
        // SAFETY: zbus checks the encoding as it parses; `unsafe` only marks that the bytes
        // did not come from its own encoder.
        unsafe { ZMessage::from_bytes(data) }.unwrap()
    }

    #[test]
    fn our_method_calls_are_read_back_by_zbus() {
        let bytes = method_call(
            7,
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "AddMatch",
            &["type='signal',member='ItemsChanged'"],
        );
        let msg = zbus_reads(bytes.clone());
        let header = msg.header();
        assert_eq!(header.primary().serial_num().get(), 7);
        assert_eq!(header.member().unwrap().as_str(), "AddMatch");
        assert_eq!(header.path().unwrap().as_str(), "/org/freedesktop/DBus");
        assert_eq!(
            header.destination().unwrap().as_str(),
            "org.freedesktop.DBus"
        );
        let arg: String = msg.body().deserialize().unwrap();
        assert_eq!(arg, "type='signal',member='ItemsChanged'");
        let ours = parse(&bytes).unwrap();
        assert_eq!(ours.kind, Kind::Call);
        assert_eq!(ours.signature, "s");

        let hello = method_call(
            1,
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "Hello",
            &[],
        );
        let msg = zbus_reads(hello);
        assert_eq!(msg.header().member().unwrap().as_str(), "Hello");
        assert!(msg.body().signature().to_string().is_empty());
    }

    #[test]
    fn truncated_and_garbled_messages_are_errors_not_panics() {
        let mut body: HashMap<&str, Wire<'_>> = HashMap::new();
        body.insert("Value", Wire::from(vec![(1u8, "x")]));
        let bytes = signal("/Soc", "PropertiesChanged", &body);
        let msg = parse(&bytes).unwrap();
        let full = msg.body.bytes.to_vec();
        for cut in 0..full.len() {
            let body = Body::new(&full[..cut], false);
            let _ = body.dict_value("Value");
            let _ = body.items(|_| true, |_, _| {});
        }
        for cut in 0..bytes.len() {
            let _ = parse(&bytes[..cut]);
        }
        // Every byte flipped in turn.
        for at in 0..bytes.len() {
            let mut garbled = bytes.clone();
            garbled[at] ^= 0xff;
            if let Ok(Some(len)) = frame_len(&garbled) {
                if len == garbled.len() {
                    if let Ok(msg) = parse(&garbled) {
                        let _ = msg.body.dict_value("Value");
                    }
                }
            }
        }
        assert_eq!(
            Body::new(&[0xff, 0xff, 0xff, 0x7f], false).dict_value("Value"),
            Err(WireError("an array longer than 64 MiB"))
        );
    }

    #[test]
    fn message_lengths_are_checked_at_the_u32_limits() {
        let limit = "longer than the 128 MiB limit";
        assert_eq!(message_len(0, 0), Ok(16));
        assert_eq!(
            message_len(1, 1),
            Ok(25),
            "fields padded to 8, then the body"
        );
        let max = MAX_MESSAGE as u32;
        assert_eq!(message_len(max - 16, 0), Ok(MAX_MESSAGE));
        assert_eq!(message_len(max - 15, 0), Err(WireError(limit)));
        assert_eq!(message_len(0, max - 16), Ok(MAX_MESSAGE));
        assert_eq!(
            message_len(0, max - 17),
            Ok(MAX_MESSAGE),
            "padded up to the limit"
        );
        assert_eq!(message_len(0, max - 15), Err(WireError(limit)));
        // Sums that overflow 32 bits (a 32-bit usize) are refused, not wrapped.
        assert_eq!(message_len(u32::MAX, 0), Err(WireError(limit)));
        assert_eq!(message_len(0, u32::MAX), Err(WireError(limit)));
        assert_eq!(message_len(u32::MAX, u32::MAX), Err(WireError(limit)));
        assert_eq!(message_len(u32::MAX - 23, 8), Err(WireError(limit)));
        let mut header = vec![b'l', 4, 0, 1];
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(frame_len(&header), Err(WireError(limit)));
    }

    #[test]
    fn array_lengths_are_checked_against_the_message() {
        // 64 MiB exactly passes the length limit, then fails against the 8 bytes there are
        // (the length and the padding to the entries).
        let body = [(1u32 << 26).to_le_bytes(), [0; 4]].concat();
        assert_eq!(
            Body::new(&body, false).dict_value("Value"),
            Err(WireError("an array longer than its message"))
        );
        let body = ((1u32 << 26) + 1).to_le_bytes();
        assert_eq!(
            Body::new(&body, false).dict_value("Value"),
            Err(WireError("an array longer than 64 MiB"))
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = "a".repeat(70) + "i";
        assert!(complete_type(deep.as_bytes(), 0).is_err());
        assert_eq!(complete_type(b"a{sv}i", 0), Ok(5));
        assert_eq!(complete_type(b"(ii)", 0), Ok(4));
        assert!(complete_type(b"()", 0).is_err());
        assert!(complete_type(b"{vs}", 0).is_err());
        assert!(complete_type(b"(i", 0).is_err());
    }
}
