//! What `load` returns when the configuration is wrong: every problem at once, each tied to the
//! key that causes it.

use std::fmt;

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, as a key path (`links.audit.url`, `rooms[2].name`), so the operator
    /// can find the line. Empty when the problem concerns the whole file (a TOML syntax error).
    pub path: String,
    /// What is wrong and, where it helps, what would be accepted. Never contains a secret or a
    /// full URL.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one pass over the configuration, in the order they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The key paths of all problems, for tests and summaries.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

impl fmt::Display for ConfigErrors {
    /// One line per problem: `key.path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while the configuration is read, so reading never stops at the first one.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ConfigError>);

impl Problems {
    pub(crate) fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Whether a problem was already recorded at `path` (to avoid reporting a key twice).
    pub(crate) fn any_at(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }

    /// Every problem recorded so far, in the order of the sections in the file, then by key
    /// path (`rooms[2]` before `rooms[10]`).
    pub(super) fn into_errors(mut self) -> ConfigErrors {
        self.0
            .sort_by_cached_key(|e| (section_rank(&e.path), natural_key(&e.path)));
        ConfigErrors(self.0)
    }

    /// `value` when nothing was wrong, otherwise every problem.
    pub(super) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.into_errors())
        }
    }
}

/// Where a key's section comes in the shipped `config.toml`; keys we do not know come last.
fn section_rank(path: &str) -> usize {
    const SECTIONS: [&str; 7] = ["", "redis", "history", "delivery", "links", "rooms", "dms"];
    let section = path.split(['.', '[']).next().unwrap_or("");
    SECTIONS
        .iter()
        .position(|s| *s == section)
        .unwrap_or(SECTIONS.len())
}

/// One run of a key path: text, or a number compared as a number.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Run {
    Number(u64),
    Text(String),
}

fn natural_key(path: &str) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut rest = path;
    while let Some(first) = rest.chars().next() {
        let digit = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        runs.push(match run.parse() {
            Ok(n) if digit => Run::Number(n),
            _ => Run::Text(run.to_owned()),
        });
        rest = tail;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_come_in_file_order() {
        let mut problems = Problems::default();
        for path in [
            "colour",
            "rooms[10].name",
            "links.a.url",
            "rooms[2].name",
            "redis.url",
            "",
        ] {
            problems.add(path, "x");
        }
        let errors = problems.into_errors();
        assert_eq!(
            errors.paths(),
            [
                "",
                "redis.url",
                "links.a.url",
                "rooms[2].name",
                "rooms[10].name",
                "colour"
            ]
        );
    }
}
