//! The documentation cannot drift from the repository: every relative link in `README.md`,
//! `docs/*.md` and `systemd/README.md` reaches an existing file (and its `#anchor` a heading of
//! that file, by GitHub's slug rules), every key `config.toml` sets or shows commented out is in
//! `docs/configuration.md` under its section (with the same default, where the page gives one
//! value), every test function `docs/guarantees.md` names exists in the file it names, and
//! `README.md` stays a short introduction (at most [`README_MAX_LINES`] lines).
//!
//! The checks are small functions over strings, so the tests at the bottom can feed each one a
//! deliberately broken input and see it fail; the three tests at the top run them over the
//! repository's files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The README is the introduction; the reference lives in `docs/` (issue 18).
const README_MAX_LINES: usize = 250;

/// The repository's root (where `Cargo.toml` is).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads a file of the repository, by its path from the root.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every Markdown file the links check covers: `README.md`, `docs/*.md`, `systemd/README.md`.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("systemd/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_relative_link_reaches_a_file_and_its_anchor_a_heading() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        problems.extend(broken_links(&file, &text, |target| {
            std::fs::read_to_string(target).ok().or_else(|| {
                // A directory or a non-text file exists but has no headings.
                target.exists().then(String::new)
            })
        }));
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_config_toml_key_is_documented_with_its_default() {
    let config = read(&root().join("config.toml"));
    let docs = read(&root().join("docs/configuration.md"));
    let keys = config_keys(&config);
    assert!(
        keys.len() > 60,
        "found only {} keys in config.toml",
        keys.len()
    );
    let problems = undocumented_keys(&keys, &documented_keys(&docs));
    assert!(
        problems.is_empty(),
        "docs/configuration.md is out of date:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_test_the_guarantees_name_exists() {
    let guarantees = read(&root().join("docs/guarantees.md"));
    let named = named_tests(&guarantees);
    assert!(named.len() > 50, "found only {} test names", named.len());
    let problems = missing_tests(&named, |file| {
        std::fs::read_to_string(root().join(file)).ok()
    });
    assert!(
        problems.is_empty(),
        "docs/guarantees.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_is_short() {
    let readme = read(&root().join("README.md"));
    if let Err(problem) = at_most_lines(&readme, README_MAX_LINES) {
        panic!("README.md: {problem}; move reference text into docs/");
    }
}

// ---- links ----

/// The Markdown text outside fenced code blocks, line by line, with each line's number
/// (inline code spans are left in; [`without_code_spans`] removes them where it matters).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => lines.push((index + 1, line)),
            _ => {}
        }
    }
    lines
}

/// `line` with its inline code spans (`` `…` ``) blanked out.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

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

/// The text of an ATX heading (`## Text`), or `None` when the line is not one.
fn heading_text(line: &str) -> Option<&str> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &line[hashes..];
    (rest.is_empty() || rest.starts_with(' ')).then(|| rest.trim().trim_end_matches('#').trim())
}

/// The broken relative links of the Markdown file `file` (its text `text`): a target file
/// that `load` cannot find, or an `#anchor` that is no heading of its target. `load` returns
/// a file's text, or `None` when it does not exist.
fn broken_links(file: &Path, text: &str, load: impl Fn(&Path) -> Option<String>) -> Vec<String> {
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

// ---- configuration keys ----

/// One key of `config.toml`: its section (`redis`, `[[rooms]]` as `rooms`, a link as
/// `links.audit`), its name, the kind of the link it belongs to, and the value shown.
#[derive(Debug, Clone, PartialEq)]
struct ConfigKey {
    section: String,
    key: String,
    /// For keys of `[links.<name>]`: that link's `kind`.
    kind: Option<String>,
    value: String,
}

/// A line of `config.toml` with up to two leading comment markers removed (`# # key = …` is
/// an optional key of a commented-out example section).
fn uncommented(line: &str) -> &str {
    let mut line = line.trim();
    for _ in 0..2 {
        if let Some(rest) = line.strip_prefix('#') {
            line = rest.trim_start();
        }
    }
    line
}

/// The section a (possibly commented-out) table header names: `[redis]` → `redis`,
/// `[[rooms]]` → `rooms`; `None` when the line is no header (prose such as `[history], …`).
fn section_header(line: &str) -> Option<&str> {
    let name = line
        .strip_prefix("[[")
        .and_then(|l| l.strip_suffix("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    valid.then_some(name)
}

/// A (possibly commented-out) `key = value` line: the key and the value as written.
fn key_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(" = ")?;
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    valid.then(|| (key, value.trim()))
}

/// Every key `config.toml` sets, or shows commented out (`# key = …`, `# # key = …`), with
/// its section; a link's keys carry the link's `kind`.
fn config_keys(toml: &str) -> Vec<ConfigKey> {
    let mut keys: Vec<ConfigKey> = Vec::new();
    let mut section = String::new();
    let mut start = 0;
    for line in toml.lines().map(uncommented) {
        if let Some(name) = section_header(line) {
            section = name.to_string();
            start = keys.len();
        } else if let Some((key, value)) = key_line(line) {
            keys.push(ConfigKey {
                section: section.clone(),
                key: key.to_string(),
                kind: None,
                value: value.to_string(),
            });
        }
        // A link's kind may come after its other keys: give them all the kind once known.
        let kind = keys[start..]
            .iter()
            .find(|k| k.key == "kind" && k.section.starts_with("links."))
            .map(|k| k.value.trim_matches('"').to_string());
        if kind.is_some() {
            for key in &mut keys[start..] {
                key.kind.clone_from(&kind);
            }
        }
    }
    keys
}

/// The keys `docs/configuration.md` documents: for each section heading, the keys of its
/// table (the code spans of a row's first cell) and the default each row gives when its second
/// cell is one code span (`None` for "required", "unset", several values, …).
///
/// A heading names its section by its code spans: `` ## `[redis]` ``, `` ## `[[rooms]]` ``;
/// a link kind's heading as `` `[links.<name>]` with `kind = "webhook"` ``. A row whose key is
/// `` `<…>` `` stands for any key of its section (room names in `[history.room_limits]`).
fn documented_keys(markdown: &str) -> HashMap<String, HashMap<String, Option<String>>> {
    let mut sections: HashMap<String, HashMap<String, Option<String>>> = HashMap::new();
    let mut current: Option<String> = None;
    for (_, line) in prose_lines(markdown) {
        if let Some(heading) = heading_text(line) {
            current = heading_section(heading);
            continue;
        }
        let (Some(section), Some(row)) = (&current, line.trim().strip_prefix('|')) else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(first) = cells.first() else {
            continue;
        };
        let default = cells.get(1).and_then(|cell| single_code_span(cell));
        for key in code_spans(first) {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.to_string(), default.map(str::to_string));
        }
    }
    sections
}

/// The code spans of a piece of Markdown, in order.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The content of `cell` when the cell is exactly one code span.
fn single_code_span(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

/// The section id a heading of `docs/configuration.md` names (see [`documented_keys`]), or
/// `None` for a heading that names none.
fn heading_section(heading: &str) -> Option<String> {
    let spans = code_spans(heading);
    let table = section_header(spans.first()?.trim()).or_else(|| {
        // `[links.<name>]`: the placeholder is not a valid section name.
        (spans[0] == "[links.<name>]").then_some("links.<name>")
    })?;
    match spans.get(1).and_then(|s| s.strip_prefix("kind = ")) {
        Some(kind) => Some(format!("{table} kind={}", kind.trim_matches('"'))),
        None => Some(table.to_string()),
    }
}

/// Where a key of `config.toml` may be documented, most specific first: a link's keys in its
/// kind's table, then in the table every link shares.
fn doc_sections(key: &ConfigKey) -> Vec<String> {
    if key.section.starts_with("links.") {
        let mut sections = Vec::new();
        if let Some(kind) = &key.kind {
            sections.push(format!("links.<name> kind={kind}"));
        }
        sections.push("links.<name>".to_string());
        sections
    } else {
        vec![key.section.clone()]
    }
}

/// What is wrong between `config.toml`'s keys and the documented ones: a key in no table of
/// its section, or a documented default that is not the value `config.toml` shows.
fn undocumented_keys(
    keys: &[ConfigKey],
    documented: &HashMap<String, HashMap<String, Option<String>>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for key in keys {
        let sections = doc_sections(key);
        let found = sections.iter().find_map(|section| {
            let table = documented.get(section)?;
            table.get(&key.key).or_else(|| {
                table
                    .iter()
                    .find(|(k, _)| k.starts_with('<'))
                    .map(|(_, d)| d)
            })
        });
        match found {
            None => problems.push(format!(
                "[{}] {} is in config.toml but not documented (looked in: {})",
                key.section,
                key.key,
                sections.join(", ")
            )),
            Some(Some(default)) if *default != key.value => problems.push(format!(
                "[{}] {}: config.toml shows {}, docs/configuration.md says the default is {}",
                key.section, key.key, key.value, default
            )),
            Some(_) => {}
        }
    }
    problems
}

// ---- test names ----

/// The test functions a page names: on each line, every code span that is a Rust identifier
/// with an `_` after a code span naming a test file (`` `tests/faults.rs` ``), as
/// (file, function) pairs.
fn named_tests(markdown: &str) -> Vec<(String, String)> {
    let mut named = Vec::new();
    for (_, line) in prose_lines(markdown) {
        let mut file: Option<&str> = None;
        for span in code_spans(line) {
            if span.starts_with("tests/") && span.ends_with(".rs") {
                file = Some(span);
            } else if let Some(file) = file {
                let identifier = span.contains('_')
                    && span
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if identifier {
                    named.push((file.to_string(), span.to_string()));
                }
            }
        }
    }
    named
}

/// The named tests that `load` (a test file's text by its path, `None` if missing) does not
/// define as a function.
fn missing_tests(named: &[(String, String)], load: impl Fn(&str) -> Option<String>) -> Vec<String> {
    named
        .iter()
        .filter_map(|(file, function)| {
            let found = load(file).is_some_and(|text| {
                text.lines().any(|line| {
                    let line = line.trim_start().trim_start_matches("async ");
                    line.strip_prefix("fn ")
                        .and_then(|rest| rest.strip_prefix(function.as_str()))
                        .is_some_and(|rest| rest.starts_with('(') || rest.starts_with('<'))
                })
            });
            (!found).then(|| format!("{file} has no test `{function}`"))
        })
        .collect()
}

// ---- README length ----

/// `Ok` when `text` has at most `max` lines.
fn at_most_lines(text: &str, max: usize) -> Result<(), String> {
    let lines = text.lines().count();
    if lines <= max {
        Ok(())
    } else {
        Err(format!("{lines} lines, more than {max}"))
    }
}

// ---- the checkers on deliberately broken input ----

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

const TOML: &str = "\
# Prose: [history], … and the [delivery] keys.
[redis]
url = \"redis://127.0.0.1:6379\"
# ca_file = \"/etc/ca.pem\"

# [http]
# # A comment: not = a key.
# listen = \"127.0.0.1:8700\"

[links.console]
kind = \"console\"
events = [\"message\"]

# [links.audit]
# # Required.
# url = \"${AUDIT}\"
# kind = \"webhook\"

# [history.room_limits]
# general = 5000
";

const DOCS: &str = "\
## `[redis]`
| key | default | what |
| --- | --- | --- |
| `url` | `\"redis://127.0.0.1:6379\"` | where |
| `ca_file` | unset | a CA |
## `[http]`
| `listen` | `\"127.0.0.1:8700\"` | address |
## `[links.<name>]`: every link
| `kind` | required | the kind |
| `events` | per kind | which |
### Webhook links: `[links.<name>]` with `kind = \"webhook\"`
| `url` | required | the endpoint |
## `[history.room_limits]`
| `<room name>` | none | a limit |
";

#[test]
fn config_keys_include_commented_out_ones_and_know_their_links_kind() {
    let keys = config_keys(TOML);
    let names: Vec<String> = keys
        .iter()
        .map(|k| format!("{}.{}", k.section, k.key))
        .collect();
    assert_eq!(
        names,
        [
            "redis.url",
            "redis.ca_file",
            "http.listen",
            "links.console.kind",
            "links.console.events",
            "links.audit.url",
            "links.audit.kind",
            "history.room_limits.general",
        ]
    );
    assert_eq!(
        keys[5].kind.as_deref(),
        Some("webhook"),
        "kind set after the key"
    );
    assert_eq!(keys[4].kind.as_deref(), Some("console"));
    assert_eq!(
        undocumented_keys(&keys, &documented_keys(DOCS)),
        Vec::<String>::new()
    );
}

#[test]
fn an_undocumented_key_is_reported() {
    let toml = format!(
        "{TOML}[redis]\n# client_key_file = \"/k.pem\"\n[links.hook]\nkind = \"webhook\"\nsecret = \"x\"\n"
    );
    let problems = undocumented_keys(&config_keys(&toml), &documented_keys(DOCS));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("[redis] client_key_file"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("[links.hook] secret"),
        "{problems:?}"
    );
}

#[test]
fn a_key_documented_for_another_kind_is_reported() {
    // `url` is documented for webhook links only, not for console links.
    let toml = "[links.console]\nkind = \"console\"\nurl = \"http://x\"\n";
    let problems = undocumented_keys(&config_keys(toml), &documented_keys(DOCS));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("[links.console] url"), "{problems:?}");
}

#[test]
fn a_default_that_drifted_is_reported() {
    let toml = TOML.replace("127.0.0.1:6379", "127.0.0.1:6380");
    let problems = undocumented_keys(&config_keys(&toml), &documented_keys(DOCS));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("config.toml shows \"redis://127.0.0.1:6380\""),
        "{problems:?}"
    );
}

#[test]
fn a_test_name_that_is_gone_is_reported() {
    let page = "| 1 | `tests/a.rs` | `kept_test`, `renamed_test` |\n\
                | 2 | `tests/b.rs` | `other_test` (not `tests/a.rs`'s) |\n\
                Prose: `chatbridge_total` before any file is no test name.\n";
    let named = named_tests(page);
    assert_eq!(named.len(), 3, "{named:?}");
    let load = |file: &str| match file {
        "tests/a.rs" => Some("#[test]\nfn kept_test() {}\nfn renamed_test_2() {}\n".to_string()),
        _ => None,
    };
    assert_eq!(
        missing_tests(&named, load),
        [
            "tests/a.rs has no test `renamed_test`",
            "tests/b.rs has no test `other_test`"
        ]
    );
}

#[test]
fn a_long_readme_is_refused() {
    let readme = "line\n".repeat(251);
    assert!(at_most_lines(&readme, 250).is_err());
    assert!(at_most_lines(&readme[5..], 250).is_ok());
}
