//! The test-names check: every test function a page names exists in the file it names.

use super::markdown::{code_spans, prose_lines};

/// The test functions a page names: on each line, every code span that is a Rust identifier
/// with an `_` after a code span naming a test file (`` `tests/faults.rs` ``), as
/// (file, function) pairs.
pub fn named_tests(markdown: &str) -> Vec<(String, String)> {
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
pub fn missing_tests(
    named: &[(String, String)],
    load: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_name_that_is_gone_is_reported() {
        let page = "| 1 | `tests/a.rs` | `kept_test`, `renamed_test` |\n\
                    | 2 | `tests/b.rs` | `other_test` (not `tests/a.rs`'s) |\n\
                    Prose: `chatbridge_total` before any file is no test name.\n";
        let named = named_tests(page);
        assert_eq!(named.len(), 3, "{named:?}");
        let load = |file: &str| match file {
            "tests/a.rs" => {
                Some("#[test]\nfn kept_test() {}\nfn renamed_test_2() {}\n".to_string())
            }
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
}
