//! Reads the untyped configuration tree one key at a time, recording every problem with its
//! key path instead of stopping at the first, and reporting keys that nothing asked for.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use config::{Value, ValueKind};

use super::error::Problems;
use super::origin::{
    FROM_ENVIRONMENT, child_path, from_environment, index_path, override_variable,
};

/// A string from the configuration with its key path.
#[derive(Debug, Clone)]
pub(crate) struct Text {
    /// Where it was read, for problems found later (unknown link, duplicate name).
    pub path: String,
    /// The string itself, `${NAME}` references already replaced.
    pub value: String,
    /// Came from the environment, so it may be a secret and is never echoed.
    hidden: bool,
}

impl Text {
    /// The value quoted for a message, or a placeholder when it came from the environment.
    pub fn shown(&self) -> String {
        if self.hidden {
            "(value from the environment)".into()
        } else {
            let short: String = self.value.chars().take(64).collect();
            format!("`{short}`")
        }
    }
}

/// A table being read. Each key is taken at most once; whatever is left when the table is
/// finished was not expected and is reported as unknown.
#[derive(Debug)]
pub(crate) struct Table {
    /// Where the table is (`links.audit`), the prefix of every problem found in it.
    path: String,
    /// The keys not read yet.
    fields: BTreeMap<String, Value>,
    /// The keys asked for, to suggest one when an unknown key looks like a typo.
    known: Vec<&'static str>,
}

impl Table {
    /// The top level of the configuration.
    pub fn root(value: Value, problems: &mut Problems) -> Self {
        Self::new(String::new(), value, problems)
    }

    /// Reads `value` (found at `path`) as a table. Anything else is reported and read as an
    /// empty table, so reading can go on.
    pub fn new(path: String, value: Value, problems: &mut Problems) -> Self {
        let fields = match value.kind {
            ValueKind::Table(map) => map.into_iter().collect(),
            ValueKind::Nil => BTreeMap::new(),
            other => {
                problems.add(
                    &path,
                    format!("expected a table, found {}", describe(&other)),
                );
                BTreeMap::new()
            }
        };
        Self {
            path,
            fields,
            known: Vec::new(),
        }
    }

    /// Reads `value` as a table when it is one; anything else is reported (`None`), for
    /// entries whose contents are not worth reading when the entry itself is wrong.
    pub fn try_new(path: String, value: Value, problems: &mut Problems) -> Option<Self> {
        match value.kind {
            ValueKind::Table(_) => Some(Self::new(path, value, problems)),
            ValueKind::Nil => None,
            other => {
                problems.add(
                    &path,
                    format!("expected a table, found {}", describe(&other)),
                );
                None
            }
        }
    }

    /// The key path of one of this table's keys.
    pub fn path_of(&self, key: &str) -> String {
        child_path(&self.path, key)
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.fields.remove(key)
    }

    /// A sub-table; an absent one reads as empty.
    pub fn table(&mut self, key: &'static str, problems: &mut Problems) -> Table {
        let path = self.path_of(key);
        let value = self
            .take(key)
            .unwrap_or_else(|| Value::new(None, ValueKind::Nil));
        Table::new(path, value, problems)
    }

    /// A sub-table, or `None` when the key is absent or not a table (reported).
    pub fn optional_table(&mut self, key: &'static str, problems: &mut Problems) -> Option<Table> {
        let path = self.path_of(key);
        let value = self.take(key)?;
        Table::try_new(path, value, problems)
    }

    /// Every remaining key with its value, in key order: for tables whose keys are names the
    /// user chooses (`[links.<name>]`).
    pub fn drain(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.fields).into_iter().collect()
    }

    /// An optional string; `None` when absent or not a string (reported).
    pub fn string(&mut self, key: &'static str, problems: &mut Problems) -> Option<Text> {
        let path = self.path_of(key);
        string_at(path, self.take(key)?, problems)
    }

    /// A string that must be present.
    pub fn required_string(&mut self, key: &'static str, problems: &mut Problems) -> Option<Text> {
        let path = self.path_of(key);
        match self.take(key) {
            Some(value) => string_at(path, value, problems),
            None => {
                problems.add(&path, "missing (required)");
                None
            }
        }
    }

    /// An integer within `range`, or `default` when absent. An invalid one is reported and
    /// read as `default` (the configuration is refused anyway).
    pub fn integer(
        &mut self,
        key: &'static str,
        range: RangeInclusive<u64>,
        default: u64,
        problems: &mut Problems,
    ) -> u64 {
        let path = self.path_of(key);
        match self.take(key) {
            Some(value) => integer_at(&path, value, range, default, problems),
            None => default,
        }
    }

    /// A boolean, or `default` when absent. Overrides (always strings) may say `true`/`false`.
    pub fn boolean(&mut self, key: &'static str, default: bool, problems: &mut Problems) -> bool {
        let path = self.path_of(key);
        let Some(value) = self.take(key) else {
            return default;
        };
        let outside = from_environment(&value);
        match &value.kind {
            ValueKind::Nil => default,
            ValueKind::Boolean(b) => *b,
            ValueKind::String(s) if outside => match s.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    problems.add(&path, "must be true or false");
                    default
                }
            },
            other => {
                problems.add(
                    &path,
                    format!("expected true or false, found {}", describe(other)),
                );
                default
            }
        }
    }

    /// A list of strings, each with its own path (`rooms[0].links[1]`); `None` when absent
    /// or not a list (reported). Items that are not strings are reported and skipped. An
    /// empty list is reported with `when_empty` (every list we read needs at least one item).
    pub fn string_list(
        &mut self,
        key: &'static str,
        when_empty: &str,
        problems: &mut Problems,
    ) -> Option<Vec<Text>> {
        let items = self.list(key, problems)?;
        if items.is_empty() {
            problems.add(&self.path_of(key), format!("is empty: {when_empty}"));
        }
        Some(
            items
                .into_iter()
                .filter_map(|(path, value)| string_at(path, value, problems))
                .collect(),
        )
    }

    /// A list, each item with its path; `None` when absent or not a list (reported).
    pub fn list(
        &mut self,
        key: &'static str,
        problems: &mut Problems,
    ) -> Option<Vec<(String, Value)>> {
        let path = self.path_of(key);
        let value = self.take(key)?;
        match value.kind {
            ValueKind::Array(items) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| (index_path(&path, i), item))
                    .collect(),
            ),
            ValueKind::Nil => None,
            other => {
                problems.add(
                    &path,
                    format!("expected a list, found {}", describe(&other)),
                );
                None
            }
        }
    }

    /// Reports every key that was not read.
    pub fn finish(self, problems: &mut Problems) {
        for (key, value) in &self.fields {
            let path = self.path_of(key);
            let mut message = String::from("unknown key");
            if let Some(guess) = closest(key, &self.known) {
                message.push_str(&format!(" (did you mean `{guess}`?)"));
            }
            if value.origin() == Some(FROM_ENVIRONMENT) {
                message.push_str(&format!(", set by {}", override_variable(&path)));
            }
            problems.add(&path, message);
        }
    }
}

/// [`Table::integer`] for a value already taken (a key the user names, as in
/// `[history.room_limits]`).
pub(super) fn integer_at(
    path: &str,
    value: Value,
    range: RangeInclusive<u64>,
    default: u64,
    problems: &mut Problems,
) -> u64 {
    let outside = from_environment(&value);
    let number = match &value.kind {
        ValueKind::Nil => return default,
        ValueKind::I64(n) => u64::try_from(*n).ok(),
        ValueKind::U64(n) => Some(*n),
        // Overrides and `${NAME}` are always strings; only the file has real integers.
        ValueKind::String(s) if outside => s.trim().parse::<u64>().ok(),
        ValueKind::String(_) => {
            problems.add(
                path,
                "expected an integer, found a string (drop the quotes)",
            );
            return default;
        }
        other => {
            problems.add(
                path,
                format!("expected an integer, found {}", describe(other)),
            );
            return default;
        }
    };
    match number {
        Some(n) if range.contains(&n) => n,
        _ => {
            let (min, max) = (range.start(), range.end());
            problems.add(path, format!("must be an integer from {min} to {max}"));
            default
        }
    }
}

pub(crate) fn string_at(path: String, value: Value, problems: &mut Problems) -> Option<Text> {
    let hidden = from_environment(&value);
    match value.kind {
        ValueKind::String(value) => Some(Text {
            path,
            value,
            hidden,
        }),
        ValueKind::Nil => None,
        other => {
            problems.add(
                &path,
                format!("expected a string, found {}", describe(&other)),
            );
            None
        }
    }
}

/// What a value is, for "expected …, found …" (never the value itself).
fn describe(kind: &ValueKind) -> &'static str {
    match kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "an integer"
        }
        ValueKind::Float(_) => "a float",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "a list",
    }
}

/// The known key closest to `key` when it is within two edits: probably what was meant.
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("uri", &["url", "secret"]), Some("url"));
        assert_eq!(
            closest("room_limt", &["room_limit", "dm_limit"]),
            Some("room_limit")
        );
        assert_eq!(closest("colour", &["url", "kind"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
