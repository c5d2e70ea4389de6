//! The configuration check: every key `config.toml` sets or shows commented out is in
//! `docs/configuration.md`, in its section's table, with the same default where the page gives
//! one value.

use std::collections::HashMap;

use super::markdown::{code_spans, heading_text, prose_lines};

/// One key of `config.toml`: its section (`redis`, `[[rooms]]` as `rooms`, a link as
/// `links.audit`), its name, the kind of the link it belongs to, and the value shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigKey {
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
pub fn config_keys(toml: &str) -> Vec<ConfigKey> {
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
pub fn documented_keys(markdown: &str) -> HashMap<String, HashMap<String, Option<String>>> {
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
pub fn undocumented_keys(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
