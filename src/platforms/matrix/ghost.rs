//! Matrix user ids for chat users ("ghosts") and for the bridge's bot.
//!
//! A ghost's localpart is `ghost_prefix` + the chat `user_id` mapped the way the Matrix spec
//! maps other character sets onto the localpart grammar (appendix "Mapping from other
//! character sets"): the UTF-8 bytes `a-z`, `0-9`, `.`, `-` and `/` are kept, an uppercase
//! `A-Z` becomes `_` + its lowercase, `_` becomes `__`, and every other byte `=xx` (two
//! lowercase hex digits). So the mapping is reversible and two chat users never share a ghost.

/// The mapped form of `user_id` (without the prefix).
pub fn escape(user_id: &str) -> String {
    let mut out = String::with_capacity(user_id.len());
    for byte in user_id.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/' => out.push(char::from(byte)),
            b'A'..=b'Z' => {
                out.push('_');
                out.push(char::from(byte.to_ascii_lowercase()));
            }
            b'_' => out.push_str("__"),
            other => out.push_str(&format!("={other:02x}")),
        }
    }
    out
}

/// The chat `user_id` a mapped localpart part came from; `None` when it is not one
/// [`escape`] writes.
pub fn unescape(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let next = *bytes.get(i + 1)?;
                match next {
                    b'_' => out.push(b'_'),
                    b'a'..=b'z' => out.push(next.to_ascii_uppercase()),
                    _ => return None,
                }
                i += 2;
            }
            b'=' => {
                let hex = escaped.get(i + 1..i + 3)?;
                if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b @ (b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/') => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// `@{localpart}:{server_name}`.
pub fn user_id(localpart: &str, server_name: &str) -> String {
    format!("@{localpart}:{server_name}")
}

/// Whether `localpart` is one the Matrix grammar allows for a new user: 1 or more of
/// `a-z 0-9 . _ = - /` (and `+`, which recent versions allow too).
pub fn is_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        )
}

/// `text` with every character a regular expression treats specially escaped.
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_valid_localparts_and_back() {
        for id in [
            "42",
            "-7",
            "alice",
            "Alice Smith",
            "émile 🎉",
            "a_b",
            "_a",
            "A",
            "x=y",
            "@bob:example.org",
            "",
        ] {
            let escaped = escape(id);
            assert!(
                escaped.is_empty() || is_localpart(&escaped),
                "{id:?} -> {escaped:?}"
            );
            assert_eq!(unescape(&escaped).as_deref(), Some(id), "{escaped}");
        }
        assert_eq!(escape("Alice Smith"), "_alice=20_smith");
        assert_eq!(escape("a_b"), "a__b");
        assert_eq!(escape("🎉"), "=f0=9f=8e=89");
        // "_a" and "A" would collide if `_` were kept.
        assert_ne!(escape("_a"), escape("A"));
    }

    #[test]
    fn what_escape_never_writes_is_not_unescaped() {
        for bad in ["_", "_1", "=4", "=4G", "=4A", "A", " ", "+"] {
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }

    #[test]
    fn regexes_escape_the_dots_of_a_server_name() {
        assert_eq!(regex_escape("example.org"), "example\\.org");
        assert_eq!(regex_escape("_chat_"), "_chat_");
        assert_eq!(regex_escape("a+b"), "a\\+b");
    }
}
