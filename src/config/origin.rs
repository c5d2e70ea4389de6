//! Where a configuration value came from and what its key path is: shared by
//! [`super::source`] (which builds the tree) and [`super::reader`] (which checks it), so
//! neither needs the other.

use config::Value;

/// The prefix of override variables: `CHATBRIDGE__REDIS__URL` sets `redis.url`.
pub(super) const ENV_PREFIX: &str = "CHATBRIDGE";
/// Separates the prefix and each key level in override variable names.
pub(super) const ENV_SEPARATOR: &str = "__";

/// The origin the `config` crate gives values read from environment overrides.
pub(super) const FROM_ENVIRONMENT: &str = "the environment";
/// The origin we give strings that had a `${NAME}` replaced.
pub(super) const SUBSTITUTED: &str = "${NAME}";

/// `parent.key`, or `key` at the top level.
pub(super) fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(super) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// The override variable that sets `path` (`links.audit.url` → `CHATBRIDGE__LINKS__AUDIT__URL`),
/// to tell the operator which variable holds an unknown key.
pub(super) fn override_variable(path: &str) -> String {
    let keys = path.replace('.', ENV_SEPARATOR).to_uppercase();
    format!("{ENV_PREFIX}{ENV_SEPARATOR}{keys}")
}

/// Whether `value` came from outside the file (an override or a `${NAME}`): such values are
/// not echoed in messages, as they may be secrets.
pub(super) fn from_environment(value: &Value) -> bool {
    matches!(value.origin(), Some(FROM_ENVIRONMENT | SUBSTITUTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_variables_are_named_like_the_environment() {
        assert_eq!(override_variable("redis.uri"), "CHATBRIDGE__REDIS__URI");
    }

    #[test]
    fn key_paths_nest_tables_and_arrays() {
        assert_eq!(child_path("", "redis"), "redis");
        assert_eq!(child_path("links.audit", "url"), "links.audit.url");
        assert_eq!(index_path("rooms", 2), "rooms[2]");
    }
}
