//! Splitting long text into posts, never clipping: each part fits the limit, the parts joined
//! give the text back exactly, and no cut falls inside a UTF-8 sequence or a grapheme cluster
//! (an emoji ZWJ sequence, a flag, a letter with its combining marks). Cuts go after a line
//! break when one falls in the second half of the room a part has, else after a space, else
//! between two grapheme clusters.
//!
//! [`split_fenced`] also keeps ``` code blocks whole in each part: a part that ends inside a
//! code block closes it (`\n```` added), and the next part reopens it with the opening fence's
//! language tag (```` ```rust\n ```` added), so every part renders its code as code. Apart
//! from those markers the parts still give the text back exactly; no cut falls inside a fence.

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

/// What a code block's fence is.
const FENCE: &str = "```";
/// What closes a code block at the end of a part.
pub const CLOSE_FENCE: &str = "\n```";
/// The longest language tag carried over to the next part (a longer one is left out there).
const TAG_MAX: usize = 32;

/// Splits `text` like [`split`], keeping code blocks whole in each part (module docs).
/// `room(index)` is how much part `index` may measure, markers included; `measure` must add
/// up over grapheme clusters, as every [`Measure`] does.
pub fn split_fenced<M>(text: &str, room: impl Fn(usize) -> usize, measure: M) -> Vec<String>
where
    M: Fn(&str) -> usize + Copy,
{
    let mut parts = Vec::new();
    let mut rest = text;
    // The opening fence (with its tag) of the code block the next part starts inside.
    let mut inside: Option<String> = None;
    loop {
        let reopen = inside
            .as_ref()
            .map(|open| format!("{open}\n"))
            .unwrap_or_default();
        let room = room(parts.len()).saturating_sub(measure(&reopen)).max(1);
        if measure(rest) <= room {
            parts.push(reopen + rest);
            return parts;
        }
        let mut cut = safe_cut(rest, room, measure);
        let mut open = fence_after(&rest[..cut], inside.clone());
        if open.is_some() {
            let room = room.saturating_sub(measure(CLOSE_FENCE)).max(1);
            cut = safe_cut(rest, room, measure);
            open = fence_after(&rest[..cut], inside.clone());
        }
        let mut part = reopen + &rest[..cut];
        if open.is_some() {
            part.push_str(CLOSE_FENCE);
        }
        parts.push(part);
        rest = &rest[cut..];
        inside = open;
    }
}

/// Where the first part of `text` ends: never inside a fence or an escaped entity.
fn safe_cut<M: Fn(&str) -> usize + Copy>(text: &str, limit: usize, measure: M) -> usize {
    let cut = cut_point(text, limit, measure);
    outside_entity(text, outside_fence(text, cut))
}

/// Whether `text` ends inside a code block, given whether it starts in one (`inside`, the
/// opening fence): the opening fence of the block it ends in.
fn fence_after(text: &str, mut inside: Option<String>) -> Option<String> {
    for (at, _) in text.match_indices(FENCE) {
        inside = match inside {
            Some(_) => None,
            None => Some(format!("{FENCE}{}", tag(&text[at + FENCE.len()..]))),
        };
    }
    inside
}

/// The language tag after an opening fence (`rust` in ```` ```rust\n ````): letters, digits
/// and `_+-.#`, up to the line break; empty when there is none or it is longer than
/// [`TAG_MAX`].
fn tag(after_fence: &str) -> &str {
    let len = after_fence
        .find(|c: char| !(c.is_ascii_alphanumeric() || "_+-.#".contains(c)))
        .unwrap_or(after_fence.len());
    let ends_line = after_fence[len..].starts_with('\n');
    if ends_line && len <= TAG_MAX {
        &after_fence[..len]
    } else {
        ""
    }
}

/// Moves a cut that would fall inside a fence or its tag line (```` ```rust\n ````) to before
/// it (or after it, for a fence at the very start).
fn outside_fence(text: &str, cut: usize) -> usize {
    for (at, _) in text.match_indices(FENCE) {
        if at >= cut {
            break;
        }
        let after = &text[at + FENCE.len()..];
        let tag_len = tag(after).len();
        let newline = usize::from(after[tag_len..].starts_with('\n'));
        let end = at + FENCE.len() + tag_len + newline;
        if cut < end {
            return if at > 0 { at } else { end.min(text.len()) };
        }
    }
    cut
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
fn cut_point<M: Fn(&str) -> usize + Copy>(text: &str, limit: usize, measure: M) -> usize {
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
fn cut_inside_cluster<M: Fn(&str) -> usize>(text: &str, limit: usize, measure: M) -> usize {
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

    /// The parts of [`split_fenced`] with the markers it added taken off, joined.
    fn unfenced(parts: &[String]) -> String {
        let mut text = String::new();
        let mut inside: Option<String> = None;
        for part in parts {
            let mut part = part.as_str();
            if let Some(open) = &inside {
                part = part
                    .strip_prefix(&format!("{open}\n"))
                    .expect("reopened with its tag");
            }
            inside = match part.strip_suffix(CLOSE_FENCE) {
                Some(head) if fence_after(head, inside.clone()).is_some() => {
                    part = head;
                    fence_after(head, inside)
                }
                _ => None,
            };
            text.push_str(part);
        }
        text
    }

    #[test]
    fn code_blocks_are_closed_and_reopened_with_their_tag() {
        let text = format!(
            "intro\n```python\n{}```\nafter",
            "print(1)  # x\n".repeat(20)
        );
        for limit in [40, 57, 100, 150] {
            let parts = split_fenced(&text, |_| limit, utf16_units);
            assert!(parts.len() > 1);
            for (index, part) in parts.iter().enumerate() {
                assert!(utf16_units(part) <= limit, "{limit}: {part:?}");
                assert_eq!(part.matches(FENCE).count() % 2, 0, "{limit}: {part:?}");
                if index > 0 && index + 1 < parts.len() {
                    assert!(part.starts_with("```python\n"), "{limit}: {part:?}");
                }
            }
            assert_eq!(unfenced(&parts), text, "limit {limit}");
        }
    }

    #[test]
    fn no_cut_falls_inside_a_fence_and_odd_tags_are_not_carried() {
        let text = format!("{}```rust\n{}```", "a".repeat(37), "b ".repeat(40));
        for limit in 30..60 {
            let parts = split_fenced(&text, |_| limit, utf16_units);
            for part in &parts {
                assert!(utf16_units(part) <= limit);
                assert!(!part.ends_with("`") || part.ends_with(FENCE), "{part:?}");
                assert!(
                    !part.ends_with("```r") && !part.ends_with("```rus"),
                    "{part:?}"
                );
            }
            assert_eq!(unfenced(&parts), text, "limit {limit}");
        }
        let long_tag = format!("```{}\n{}```", "x".repeat(40), "c ".repeat(60));
        let parts = split_fenced(&long_tag, |_| 50, utf16_units);
        assert!(parts[1].starts_with("```\n"), "{:?}", parts[1]);
        assert_eq!(unfenced(&parts), long_tag);
    }

    #[test]
    fn text_without_fences_splits_as_before() {
        let text = "alpha beta gamma delta ".repeat(10);
        let fenced = split_fenced(&text, |_| 30, utf16_units);
        assert_eq!(fenced, split(&text, 30, utf16_units));
    }
}
