//! Splitting long text into posts, never clipping: each part fits the limit, the parts joined
//! give the text back exactly, and no cut falls inside a UTF-8 sequence or a grapheme cluster
//! (an emoji ZWJ sequence, a flag, a letter with its combining marks). Cuts go after a line
//! break when one falls in the second half of the room a part has, else after a space, else
//! between two grapheme clusters.

use unicode_segmentation::UnicodeSegmentation;

/// How much of a limit `text` uses. Vendors count differently; the links count UTF-16 units of
/// the text as sent (after escaping), which is never less than what Slack or Discord count.
pub type Measure = fn(&str) -> usize;

/// UTF-16 code units: what Discord's 2000-character limit is safely counted in.
pub fn utf16_units(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Splits `text` into parts of at most `limit` as `measure` counts, in order. Empty text gives
/// one empty part. A single grapheme cluster longer than the limit (thousands of combining
/// marks) is the one case cut inside a cluster, between characters.
pub fn split(text: &str, limit: usize, measure: Measure) -> Vec<&str> {
    let limit = limit.max(1);
    let mut parts = Vec::new();
    let mut rest = text;
    while measure(rest) > limit {
        let cut = outside_entity(rest, cut_point(rest, limit, measure));
        let (head, tail) = rest.split_at(cut);
        parts.push(head);
        rest = tail;
    }
    parts.push(rest);
    parts
}

/// Moves a cut that would fall inside an HTML entity Slack escaping made (`&amp;`, `&lt;`,
/// `&gt;`) to before it, so each part stays valid escaped text.
fn outside_entity(text: &str, cut: usize) -> usize {
    for entity in ["&amp;", "&lt;", "&gt;"] {
        let start = cut.saturating_sub(entity.len() - 1);
        for at in start..cut {
            let inside = at + entity.len() > cut;
            if inside && text.is_char_boundary(at) && text[at..].starts_with(entity) {
                return if at == 0 { cut } else { at };
            }
        }
    }
    cut
}

/// Where the first part of `text` ends (a byte index, > 0, on a char boundary).
fn cut_point(text: &str, limit: usize, measure: Measure) -> usize {
    let mut used = 0;
    let mut fits = 0;
    let mut after_line = 0;
    let mut after_space = 0;
    for (start, grapheme) in text.grapheme_indices(true) {
        used += measure(grapheme);
        if used > limit {
            break;
        }
        fits = start + grapheme.len();
        if grapheme.ends_with('\n') {
            after_line = fits;
        } else if grapheme.chars().all(char::is_whitespace) {
            after_space = fits;
        }
    }
    if fits == 0 {
        return cut_inside_cluster(text, limit, measure);
    }
    let half = fits / 2;
    if after_line > half {
        after_line
    } else if after_space > half {
        after_space
    } else {
        fits
    }
}

/// The last char boundary that fits, for a first grapheme cluster larger than the limit.
fn cut_inside_cluster(text: &str, limit: usize, measure: Measure) -> usize {
    let mut used = 0;
    let mut end = 0;
    for (start, c) in text.char_indices() {
        let mut buf = [0u8; 4];
        used += measure(c.encode_utf8(&mut buf));
        if used > limit && end > 0 {
            break;
        }
        end = start + c.len_utf8();
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, limit: usize) -> Vec<&str> {
        let parts = split(text, limit, utf16_units);
        assert_eq!(parts.concat(), text, "parts give the text back");
        for part in &parts {
            assert!(
                utf16_units(part) <= limit,
                "{} > {limit}",
                utf16_units(part)
            );
        }
        parts
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(check("hello", 2000), ["hello"]);
        assert_eq!(check("", 2000), [""]);
    }

    #[test]
    fn prefers_line_then_word_boundaries() {
        let text = format!("{}\n{}", "a".repeat(15), "b ".repeat(10));
        let parts = check(&text, 20);
        assert_eq!(parts[0], format!("{}\n", "a".repeat(15)));
        let words = check("alpha beta gamma delta", 12);
        assert_eq!(words, ["alpha beta ", "gamma delta"]);
    }

    #[test]
    fn never_cuts_a_grapheme_cluster() {
        let family = "👨‍👩‍👧‍👦"; // 11 UTF-16 units, one cluster
        let flag = "🇯🇵";
        let text = format!("{family}{flag}日本語{family}").repeat(50);
        let parts = check(&text, 30);
        let clusters: Vec<&str> = text.graphemes(true).collect();
        let rejoined: Vec<&str> = parts.iter().flat_map(|p| p.graphemes(true)).collect();
        assert_eq!(clusters, rejoined, "no cluster split across parts");
    }

    #[test]
    fn a_cluster_larger_than_the_limit_is_cut_between_chars() {
        let zalgo = format!("e{}", "\u{301}".repeat(50));
        let parts = check(&zalgo, 20);
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn never_cuts_inside_an_escaped_entity() {
        let text = "a&amp;b&lt;c&gt;".repeat(20);
        for limit in 5..40 {
            for part in split(&text, limit, utf16_units) {
                let fine = part.split('&').skip(1).all(|rest| {
                    rest.starts_with("amp;") || rest.starts_with("lt;") || rest.starts_with("gt;")
                });
                assert!(fine, "limit {limit}: {part:?}");
            }
        }
    }

    #[test]
    fn measures_count_escapes() {
        fn escaped(s: &str) -> usize {
            s.chars()
                .map(|c| match c {
                    '&' => 5,
                    '<' | '>' => 4,
                    _ => 1,
                })
                .sum()
        }
        let text = "<".repeat(10);
        let parts = split(&text, 9, escaped);
        assert_eq!(parts, ["<<", "<<", "<<", "<<", "<<"]);
    }
}
