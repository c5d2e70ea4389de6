//! The documentation cannot drift from the repository: every relative link in `README.md`,
//! `docs/*.md` and `systemd/README.md` reaches an existing file (and its `#anchor` a heading of
//! that file, by GitHub's slug rules), every key `config.toml` sets or shows commented out is in
//! `docs/configuration.md` under its section (with the same default, where the page gives one
//! value), every test function `docs/guarantees.md` names exists in the file it names, and
//! `README.md` stays a short introduction (at most [`README_MAX_LINES`] lines).
//!
//! The checks are small functions over strings, one module each under `tests/docs/`, whose
//! unit tests feed them deliberately broken input and see them fail; the tests in this file run
//! them over the repository's files.

#[path = "docs/config_keys.rs"]
mod config_keys;
#[path = "docs/links.rs"]
mod links;
#[path = "docs/markdown.rs"]
mod markdown;
#[path = "docs/test_names.rs"]
mod test_names;

use std::path::{Path, PathBuf};

use config_keys::{config_keys, documented_keys, undocumented_keys};
use links::broken_links;
use test_names::{missing_tests, named_tests};

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

/// `Ok` when `text` has at most `max` lines.
fn at_most_lines(text: &str, max: usize) -> Result<(), String> {
    let lines = text.lines().count();
    if lines <= max {
        Ok(())
    } else {
        Err(format!("{lines} lines, more than {max}"))
    }
}

#[test]
fn a_long_readme_is_refused() {
    let readme = "line\n".repeat(251);
    assert!(at_most_lines(&readme, 250).is_err());
    assert!(at_most_lines(&readme[5..], 250).is_ok());
}
