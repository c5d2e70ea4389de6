//! Untrusted text (chat data, Redis contents, what a receiver answered) made safe to print on
//! an operator's terminal or in a log line. The console link and every CLI command use it, so
//! a chat user cannot clear the screen, retitle the window, write the clipboard (OSC 52),
//! fake or hide lines, or reorder what the operator reads.
//!
//! Escaped, as Rust's `char::escape_default` writes them (`\n`, `\r`, `\u{1b}`, `\u{9b}`):
//! - every control character: C0 (including ESC, BEL, BS, CR, LF, TAB), DEL and C1
//!   (`U+0080`–`U+009F`, e.g. the one-byte CSI `U+009B`);
//! - the bidirectional overrides, embeddings and isolates (`U+202A`–`U+202E`,
//!   `U+2066`–`U+2069`) and marks (`U+200E`, `U+200F`, `U+061C`), which reorder what is shown;
//! - the line and paragraph separators `U+2028`, `U+2029`, which some viewers break lines on.
//!
//! Everything else prints as it is, including emoji and their zero-width joiners.

/// Whether `c` is printed as an escape.
fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The characters that reorder text around them: bidirectional embeddings and overrides
/// (`U+202A`–`U+202E`), isolates (`U+2066`–`U+2069`) and marks (`U+200E`, `U+200F`, `U+061C`).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
    )
}

/// Unicode's format characters (general category Cf, Unicode 15.1): invisible, they change how
/// the text around them reads (zero-width space and joiners, word joiner, soft hyphen, BOM,
/// bidi controls, tags, interlinear annotation, Arabic and Syriac number signs, …).
pub fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061c}'
            | '\u{06dd}'
            | '\u{070f}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

/// `text` with every character of the module docs' list escaped, cut to `max_chars`
/// characters (marked with `…`).
pub fn escape_controls(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(2)));
    for (count, c) in text.chars().enumerate() {
        if count == max_chars {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// `text` escaped whole, however long.
pub fn escape(text: &str) -> String {
    escape_controls(text, usize::MAX)
}

/// A message of several lines (an error listing problems) escaped except for its line breaks.
pub fn escape_lines(text: &str) -> String {
    text.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

/// A stored JSON text printed on one line with no raw control character: inside strings they
/// become JSON `\uXXXX` escapes (the same string to any JSON reader), between tokens the JSON
/// whitespace becomes a space. Text that is not JSON comes out without raw controls as well.
pub fn json_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if needs_escape(c) {
            if !in_string && matches!(c, '\t' | '\n' | '\r') {
                out.push(' ');
            } else {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            escaped = false;
            continue;
        }
        out.push(c);
        match (in_string, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, true, _) => escaped = false,
            (false, _, '"') => in_string = true,
            _ => {}
        }
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw bytes a terminal acts on: C0 controls, DEL, and C1 controls in UTF-8.
    fn has_raw_controls(text: &str) -> bool {
        text.chars().any(needs_escape)
    }

    #[test]
    fn escapes_terminal_controls_and_truncates() {
        assert_eq!(
            escape_controls("a\x1b[2Jb\nc\u{202e}d", 100),
            "a\\u{1b}[2Jb\\nc\\u{202e}d"
        );
        assert_eq!(escape_controls("héllo", 3), "hél…");
        assert_eq!(escape_controls("abc", 3), "abc");
    }

    #[test]
    fn escapes_osc_c1_backspace_bidi_and_separators() {
        let evil = "\u{1b}]52;c;cHduZWQ=\u{7}x\u{8}\r\u{9b}31m\u{7f}\u{200f}\u{2066}\u{2028}";
        let shown = escape(evil);
        assert!(!has_raw_controls(&shown), "{shown:?}");
        assert_eq!(
            shown,
            r"\u{1b}]52;c;cHduZWQ=\u{7}x\u{8}\r\u{9b}31m\u{7f}\u{200f}\u{2066}\u{2028}"
        );
        assert_eq!(escape("emoji 👩‍💻 ok"), "emoji 👩‍💻 ok");
    }

    #[test]
    fn multi_line_messages_keep_their_breaks_only() {
        assert_eq!(escape_lines("a\u{1b}[2J\n  b\r"), "a\\u{1b}[2J\n  b\\r");
    }

    #[test]
    fn json_lines_stay_the_same_json_without_raw_controls() {
        let raw = "{\"a\": \"x\u{1b}[2J\u{9b}\\\"\u{202e}\",\n\t\"b\": [1]}";
        let line = json_line(raw);
        assert!(!has_raw_controls(&line), "{line:?}");
        assert_eq!(line, r#"{"a": "x\u001b[2J\u009b\"\u202e",  "b": [1]}"#);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["a"], "x\u{1b}[2J\u{9b}\"\u{202e}");
        assert_eq!(json_line("not json \u{7}"), r"not json \u0007");
    }
}
