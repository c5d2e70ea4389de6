//! JSON written byte for byte like Python's `json.dumps(obj)` with default arguments, so what
//! chatbridge writes to Redis is indistinguishable from what the seed's clients write.
//!
//! Python's defaults: `", "` between items, `": "` between key and value, `ensure_ascii=True`
//! (everything outside printable ASCII becomes `\uXXXX` in lowercase hex, astral characters as
//! surrogate pairs), `/` left alone, floats in `repr` form (`1.0`, `1e+16`, `1.5e-05`).
//!
//! Known limits (serde_json's, not the formatter's): non-finite floats become `null` (Python
//! writes `NaN`), and integers beyond 64 bits arrive here already as floats.
//!
//! Reading goes the other way: [`tolerant`] rewrites what Python's `json` writes and reads but
//! serde_json refuses (lone surrogate escapes, `NaN`, `Infinity`) into JSON serde_json reads,
//! so anything a Python client can write is understood.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};

/// Serialises `value` exactly as Python's `json.dumps(value)` would.
///
/// Serialising plain data (maps with string keys, numbers, strings) cannot fail; a `Serialize`
/// impl that reports its own error yields what was written up to that point, so callers that
/// only pass the chat model never see a difference.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(128);
    let mut serializer = Serializer::with_formatter(&mut out, PythonFormatter);
    // The only possible errors come from a custom `Serialize` impl refusing itself; the bytes
    // written so far are still valid UTF-8 because every write below is ASCII.
    let _ = value.serialize(&mut serializer);
    String::from_utf8_lossy(&out).into_owned()
}

/// What Python's `json.loads` accepts but serde_json refuses, rewritten into an equivalent that
/// serde_json reads: a lone UTF-16 surrogate escape (`"\ud83d"`, which `json.dumps` writes for
/// a lone surrogate in a `str`) becomes `\ufffd`, and the bare constants `NaN`, `Infinity` and
/// `-Infinity` become `null`. `None` when there was nothing to rewrite. Only ever used to
/// *understand* a payload; the payload itself is relayed as it was.
pub fn tolerant(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    // `text[copied..]` has not been copied to `out` yet.
    let mut copied = 0;
    let mut replace = |out: &mut String, start: usize, end: usize, with: &str| {
        out.push_str(&text[copied..start]);
        out.push_str(with);
        copied = end;
    };
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (true, b'"') => {
                in_string = false;
                i += 1;
            }
            (true, b'\\') if bytes.get(i + 1) == Some(&b'u') => {
                let skip = match hex_unit(bytes, i + 2) {
                    Some(0xD800..=0xDBFF) if low_surrogate_follows(bytes, i + 6) => 12,
                    Some(0xD800..=0xDFFF) => {
                        replace(&mut out, i, i + 6, "\\ufffd");
                        6
                    }
                    _ => 2,
                };
                i += skip;
            }
            (true, b'\\') => i += 2,
            (false, b'"') => {
                in_string = true;
                i += 1;
            }
            (false, _) => {
                let constant = ["NaN", "Infinity", "-Infinity"]
                    .into_iter()
                    .find(|c| bytes[i..].starts_with(c.as_bytes()));
                match constant {
                    Some(c) => {
                        replace(&mut out, i, i + c.len(), "null");
                        i += c.len();
                    }
                    None => i += 1,
                }
            }
            (true, _) => i += 1,
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// The UTF-16 unit of the four hex digits at `at`, if they are four hex digits.
fn hex_unit(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

fn low_surrogate_follows(bytes: &[u8], at: usize) -> bool {
    bytes.get(at..at + 2) == Some(b"\\u".as_slice())
        && matches!(hex_unit(bytes, at + 2), Some(0xDC00..=0xDFFF))
}

/// A `serde_json` formatter with Python's `json.dumps` defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        // Python has only doubles: an f32 is written as the double it widens to.
        self.write_f64(w, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if is_printable_ascii(c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        match escape {
            CharEscape::Quote => w.write_all(b"\\\""),
            CharEscape::ReverseSolidus => w.write_all(b"\\\\"),
            CharEscape::Solidus => w.write_all(b"/"),
            CharEscape::Backspace => w.write_all(b"\\b"),
            CharEscape::FormFeed => w.write_all(b"\\f"),
            CharEscape::LineFeed => w.write_all(b"\\n"),
            CharEscape::CarriageReturn => w.write_all(b"\\r"),
            CharEscape::Tab => w.write_all(b"\\t"),
            CharEscape::AsciiControl(byte) => write!(w, "\\u{byte:04x}"),
        }
    }
}

/// Python's `ensure_ascii` leaves exactly `' '..='~'` unescaped (so DEL, 0x7f, is escaped too).
fn is_printable_ascii(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// Python's `float.__repr__`: the shortest digits that round-trip, positional when the decimal
/// exponent is in `-4..16` (always with a fraction, `1.0`), otherwise scientific with a signed,
/// at least two-digit exponent (`1e+16`, `1.5e-05`).
fn python_float_repr(value: f64) -> String {
    // Rust's `{:e}` gives the same shortest round-trip digits: `-1.2345e-7`, `1e16`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        format!("{sign}{}", positional(&digits, exponent))
    } else {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{first}{fraction}e{exp_sign}{:02}", exponent.abs())
    }
}

/// Places the decimal point in `digits` (d.ddd × 10^exponent) without an exponent.
fn positional(digits: &str, exponent: i32) -> String {
    let point = exponent + 1;
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        return format!("0.{zeros}{digits}");
    }
    let point = point as usize;
    if digits.len() <= point {
        let zeros = "0".repeat(point - digits.len());
        format!("{digits}{zeros}.0")
    } else {
        format!("{}.{}", &digits[..point], &digits[point..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tolerant_reads_what_python_writes_and_serde_refuses() {
        // json.dumps("a\ud83d") == '"a\\ud83d"'; json.dumps(float("nan")) == 'NaN'
        let cases = [
            (r#"{"c": "a\ud83d"}"#, r#"{"c": "a\ufffd"}"#),
            (r#"{"c": "\udc00x\ud800"}"#, r#"{"c": "\ufffdx\ufffd"}"#),
            (
                r#"{"n": NaN, "i": -Infinity, "j": [Infinity]}"#,
                r#"{"n": null, "i": null, "j": [null]}"#,
            ),
            (
                r#"{"c": "NaN \\ud83d \" Infinity"}"#,
                r#"{"c": "NaN \\ud83d \" Infinity"}"#,
            ),
        ];
        for (python, serde) in cases {
            let fixed = tolerant(python);
            assert_eq!(
                fixed.as_deref(),
                Some(serde).filter(|s| *s != python),
                "{python}"
            );
            let text = fixed.unwrap_or_else(|| python.to_owned());
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "{text}"
            );
        }
        assert_eq!(tolerant(r#"{"e": "\ud83d\ude00 ok"}"#), None);
    }

    #[test]
    fn separators_match_python() {
        let v = json!({"a": [1, 2, {"b": null}], "c": {}, "d": [], "e": true});
        assert_eq!(
            to_string(&v),
            r#"{"a": [1, 2, {"b": null}], "c": {}, "d": [], "e": true}"#
        );
    }

    #[test]
    fn non_ascii_is_escaped_like_ensure_ascii() {
        // json.dumps("é 😀 中") == '"\\u00e9 \\ud83d\\ude00 \\u4e2d"'
        assert_eq!(to_string("é 😀 中"), r#""\u00e9 \ud83d\ude00 \u4e2d""#);
        assert_eq!(to_string("caf\u{e9}!"), r#""caf\u00e9!""#);
        assert_eq!(to_string("\u{7f}\u{80}\u{ffff}"), r#""\u007f\u0080\uffff""#);
    }

    #[test]
    fn control_characters_quotes_and_slashes_match_python() {
        // json.dumps('a"b\\c/d\n\r\t\b\f\x00\x1f') in Python 3.
        let s = "a\"b\\c/d\n\r\t\u{8}\u{c}\u{0}\u{1f}";
        assert_eq!(to_string(s), r#""a\"b\\c/d\n\r\t\b\f\u0000\u001f""#);
    }

    #[test]
    fn keys_are_escaped_too() {
        let v = json!({"ключ": "v"});
        assert_eq!(to_string(&v), r#"{"\u043a\u043b\u044e\u0447": "v"}"#);
    }

    #[test]
    fn numbers_match_python_repr() {
        let cases: [(f64, &str); 12] = [
            (1.0, "1.0"),
            (-0.5, "-0.5"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.5e-7, "-1.5e-07"),
            (1e300, "1e+300"),
            (0.0, "0.0"),
        ];
        for (value, expected) in cases {
            assert_eq!(to_string(&value), expected, "{value}");
        }
        assert_eq!(
            to_string(&json!([-3, 18446744073709551615u64])),
            "[-3, 18446744073709551615]"
        );
    }

    #[test]
    fn a_seed_message_serialises_like_the_seed() {
        let v = json!({
            "id": "3f1c", "user_id": 1001, "username": "alice", "content": "hi 👋",
            "room": null, "timestamp": "2026-11-27T20:12:21", "type": "message"
        });
        assert_eq!(
            to_string(&v),
            r#"{"id": "3f1c", "user_id": 1001, "username": "alice", "content": "hi \ud83d\udc4b", "room": null, "timestamp": "2026-11-27T20:12:21", "type": "message"}"#
        );
    }
}
