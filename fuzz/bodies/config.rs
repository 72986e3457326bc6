//! The body of the fuzz target `config` (`cargo +nightly fuzz run config`), which the daemon's
//! stable tests (`aggregator/tests/fuzz_seeds.rs`) include and run over seed inputs: the very
//! same code on both toolchains. It takes any bytes, must not panic, and checks that what it
//! got back makes sense; a failed check panics, which the fuzzer reports as a crash.

use std::path::PathBuf;

use aggregator::config::{parse_duration, Config, ConfigError, Source};

/// `config.yaml` from any bytes (read as UTF-8, invalid sequences replaced, as no file read
/// with invalid UTF-8 ever reaches the parser). Also parses every line as a duration.
///
/// Checks: every error names a key or says what is wrong, and a line it names exists.
pub fn config(bytes: &[u8]) -> Result<Config, Vec<ConfigError>> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    for line in text.lines() {
        if let Ok(duration) = parse_duration(line) {
            // A duration that parsed is a whole number of nanoseconds: it must print.
            let _ = format!("{duration:?}");
        }
    }
    // YAML breaks lines at `\r` too, and at NEL, LS and PS, and may place the end of the text
    // on the line after the last: an upper bound of the lines an error may name.
    let lines = 2 + text
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    let source = Source {
        file: PathBuf::from("config.yaml"),
        text,
    };
    let result = source.parse();
    if let Err(errors) = &result {
        assert!(!errors.is_empty(), "an error without any message");
        for error in errors {
            assert!(
                !error.message.is_empty(),
                "an error without a message: {error:?}"
            );
            if let Some(line) = error.line {
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of a {lines}-line file: {error}"
                );
            }
            let _ = error.to_string();
        }
    }
    result
}
