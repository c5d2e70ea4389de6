//! The links check: every relative link reaches a file, and its `#anchor` a heading of that
//! file by GitHub's slug rules.

use std::collections::HashMap;
use std::path::Path;

use super::markdown::{heading_text, prose_lines, without_code_spans};

/// The targets of the inline links (`[text](target)`, images too) in one line of prose.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                // `[text](target "title")`: the target is up to the first space.
                let target = after[..end].split_whitespace().next().unwrap_or("");
                targets.push(target.trim_matches(['<', '>']).to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    targets
}

/// Whether a link target leaves the repository (a URL, a mail address).
fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// GitHub's anchor for a heading: lowercase; letters, digits, `-` and `_` kept; spaces become
/// `-`; everything else (punctuation, backticks, emoji) dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a Markdown file's headings give, as GitHub numbers repeats (`x`, `x-1`, `x-2`).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = heading_text(line) else {
            continue;
        };
        let base = slug(heading);
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.push(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// The broken relative links of the Markdown file `file` (its text `text`): a target file
/// that `load` cannot find, or an `#anchor` that is no heading of its target. `load` returns
/// a file's text, or `None` when it does not exist.
pub fn broken_links(
    file: &Path,
    text: &str,
    load: impl Fn(&Path) -> Option<String>,
) -> Vec<String> {
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for (number, line) in prose_lines(text) {
        for target in link_targets(line) {
            if target.is_empty() || is_external(&target) {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                Some(text.to_string())
            } else {
                load(&dir.join(path))
            };
            let at = format!("{}:{number}: ({target})", file.display());
            match (linked, anchor) {
                (None, _) => problems.push(format!("{at}: no such file")),
                (Some(linked), Some(anchor)) if !anchors(&linked).iter().any(|a| a == anchor) => {
                    problems.push(format!("{at}: no heading with the anchor #{anchor}"))
                }
                _ => {}
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loader over a fixed set of files, for the link checks.
    fn files<'a>(files: &'a [(&'a str, &'a str)]) -> impl Fn(&Path) -> Option<String> + 'a {
        move |path: &Path| {
            files
                .iter()
                .find(|(name, _)| Path::new(name) == path)
                .map(|(_, text)| text.to_string())
        }
    }

    #[test]
    fn slugs_follow_githubs_rules() {
        assert_eq!(
            slug("Redis over TLS (`rediss://`)"),
            "redis-over-tls-rediss"
        );
        assert_eq!(
            slug("Slack: `POST /slack/events`"),
            "slack-post-slackevents"
        );
        assert_eq!(
            slug("Running two processes (hot standby)"),
            "running-two-processes-hot-standby"
        );
        assert_eq!(slug("Health, metrics and logs"), "health-metrics-and-logs");
        assert_eq!(slug("snake_case and-dash"), "snake_case-and-dash");
        assert_eq!(
            anchors("# A\n## Failures\n## Failures\n```\n# not a heading\n```\n"),
            ["a", "failures", "failures-1"]
        );
    }

    #[test]
    fn a_link_to_a_missing_file_is_reported() {
        let load = files(&[("docs/a.md", "# A\n")]);
        let page = "See [a](a.md) and [b](b.md).\n";
        let problems = broken_links(Path::new("docs/index.md"), page, &load);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("(b.md): no such file"), "{problems:?}");
    }

    #[test]
    fn a_link_to_a_missing_anchor_is_reported() {
        let load = files(&[("docs/a.md", "# A\n## Set up Slack\n")]);
        let page = "# Top\n[ok](a.md#set-up-slack), [bad](a.md#set-up-discord), [here](#top), \
                    [gone](#bottom)\n";
        let problems = broken_links(Path::new("docs/index.md"), page, &load);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("#set-up-discord"), "{problems:?}");
        assert!(problems[1].contains("#bottom"), "{problems:?}");
    }

    #[test]
    fn links_resolve_from_the_linking_files_folder_and_code_is_not_checked() {
        let load = files(&[
            ("README.md", "# chatbridge\n"),
            ("docs/../README.md", "# chatbridge\n"),
        ]);
        let page = "[up](../README.md#chatbridge) [web](https://example.com/x.md) `[no](x.md)`\n\
                    ```\n[no](y.md)\n```\n";
        assert_eq!(
            broken_links(Path::new("docs/a.md"), page, &load),
            Vec::<String>::new()
        );
        let problems = broken_links(Path::new("README.md"), "[x](../README.md)\n", &load);
        assert_eq!(
            problems.len(),
            1,
            "resolved from the wrong folder: {problems:?}"
        );
    }
}
