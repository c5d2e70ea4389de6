//! Senders' names as Slack and Discord show them, cleaned the same way on every platform so that
//! a name cannot pass for someone else's: a chat user picks their own name, and a line break, a
//! bidi override or an invisible character in it would let it forge a second header line, read
//! backwards, or look like another user's name.
//!
//! - Line breaks and tabs become spaces; every other control character is removed.
//! - Unicode format characters (category Cf: bidi embeddings, overrides, isolates and marks,
//!   zero-width space and non-joiner, word joiner, invisible operators, soft hyphen, BOM, …)
//!   are removed, except a zero-width joiner inside an emoji sequence (👩‍💻) and the tags of a
//!   subdivision flag (🏴󠁧󠁢󠁳󠁣󠁴󠁿), which are part of one visible picture.
//! - Blank lookalikes (Hangul fillers, the braille blank, the combining grapheme joiner) are
//!   removed, and the name is trimmed.
//! - A name with nothing left is [`fallback`]: `user {user_id}`, never the app's or the
//!   webhook's own name.
//! - A name is at most [`NAME_MAX`] UTF-16 units ([`cut`] between grapheme clusters): Discord's
//!   limit for a username, and short enough that a header never crowds a post's text out.

use unicode_segmentation::UnicodeSegmentation;

use super::split::utf16_units;
use crate::printable::is_format;

/// The longest name, in UTF-16 units (Discord's longest webhook username).
pub const NAME_MAX: usize = 80;

/// The waving black flag: the base of the subdivision flags that tags spell out.
const TAG_FLAG_BASE: char = '\u{1f3f4}';
/// Tag characters: inside a flag sequence they name the subdivision.
const TAGS: std::ops::RangeInclusive<char> = '\u{e0020}'..='\u{e007f}';

/// `name` cleaned as the module docs say; may be empty (then use [`fallback`]).
pub fn clean(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for cluster in name.graphemes(true) {
        let flag = cluster.starts_with(TAG_FLAG_BASE);
        let last = cluster.char_indices().last().map_or(0, |(at, _)| at);
        for (at, c) in cluster.char_indices() {
            if is_line_break(c) || c == '\t' {
                out.push(' ');
            } else if keeps(c, at < last, flag) {
                out.push(c);
            }
        }
    }
    out.trim().to_owned()
}

/// `name` cut to at most [`NAME_MAX`] UTF-16 units between grapheme clusters, trimmed.
pub fn cut(name: &str) -> String {
    let mut out = String::new();
    for grapheme in name.graphemes(true) {
        if utf16_units(&out) + utf16_units(grapheme) > NAME_MAX {
            break;
        }
        out.push_str(grapheme);
    }
    out.trim().to_owned()
}

/// The name of a sender whose own name is blank once cleaned.
pub fn fallback(user_id: &str) -> String {
    format!("user {}", clean(user_id))
}

/// Whether `c` breaks a line where some viewer shows it: LF, CR, VT, FF, NEL, and the line
/// and paragraph separators.
pub fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Whether `c` stays in a name; `joins` says that more of its grapheme cluster follows it, and
/// `flag` that the cluster is a subdivision flag.
fn keeps(c: char, joins: bool, flag: bool) -> bool {
    if c.is_control() || is_blank_lookalike(c) {
        return false;
    }
    if !is_format(c) {
        return true;
    }
    // Grapheme rule GB11 keeps a ZWJ inside a cluster only between two pictographs.
    (c == '\u{200d}' && joins) || (flag && TAGS.contains(&c))
}

/// Letters and marks that show as nothing: a name made of them looks blank.
fn is_blank_lookalike(c: char) -> bool {
    matches!(
        c,
        '\u{034f}' | '\u{115f}' | '\u{1160}' | '\u{2800}' | '\u{3164}' | '\u{ffa0}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_controls_never_stay_in_a_name() {
        assert_eq!(clean("alice\n*bob*"), "alice *bob*");
        assert_eq!(clean("a\r\nb\u{2028}c\u{85}d\te"), "a  b c d e");
        assert_eq!(clean("a\u{1b}[31m\u{7}"), "a[31m");
    }

    #[test]
    fn invisible_and_reordering_characters_are_removed() {
        let hidden = [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{061c}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{2061}',
            '\u{2062}',
            '\u{2063}',
            '\u{2064}',
            '\u{feff}',
            '\u{00ad}',
            '\u{180e}',
            '\u{e0001}',
        ];
        for c in hidden {
            assert_eq!(
                clean(&format!("al{c}ice")),
                "alice",
                "U+{:04X}",
                u32::from(c)
            );
        }
        assert_eq!(clean("\u{202e}ecila"), "ecila");
    }

    #[test]
    fn emoji_sequences_keep_their_joiners_and_flags_their_tags() {
        assert_eq!(clean("👩‍💻 dev"), "👩‍💻 dev");
        let scotland = "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}";
        assert_eq!(clean(scotland), scotland);
        assert_eq!(clean("a\u{200d}b"), "ab", "a joiner between letters goes");
        assert_eq!(clean("x\u{e0067}"), "x", "tags outside a flag go");
    }

    #[test]
    fn blank_names_come_out_empty_and_fall_back_to_the_user_id() {
        for blank in [
            "",
            "   ",
            "\u{3164}",
            "\u{200b}\u{200b}",
            "\n\t",
            "\u{2800} \u{115f}",
        ] {
            assert_eq!(clean(blank), "", "{blank:?}");
        }
        assert_eq!(fallback("1001"), "user 1001");
    }

    #[test]
    fn long_names_are_cut_between_clusters() {
        assert_eq!(cut(&"a".repeat(200)), "a".repeat(80));
        assert_eq!(
            cut(&"👩‍💻".repeat(30)),
            "👩‍💻".repeat(16),
            "5 units each, never split"
        );
        assert_eq!(cut("short "), "short");
    }
}
