//! Where configuration values come from: the TOML file, then `CHATBRIDGE__…` environment
//! overrides, then `${NAME}` references replaced from the environment. The result is one
//! untyped tree that [`super::reader`] checks key by key.

use config::{Environment, File, FileFormat, Value, ValueKind};

use super::Env;
use super::error::Problems;
use super::origin::{ENV_PREFIX, ENV_SEPARATOR, SUBSTITUTED, child_path, index_path};

/// The merged tree of the TOML text and the overrides in `env`, with `${NAME}` replaced.
/// `None` when the TOML does not parse (that problem is recorded).
pub(super) fn merged_tree(toml: &str, env: &Env, problems: &mut Problems) -> Option<Value> {
    let overrides = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .source(Some(env.clone().into_iter().collect()));
    let built = config::Config::builder()
        .add_source(File::from_str(toml, FileFormat::Toml))
        .add_source(overrides)
        .build();
    match built {
        Ok(merged) => {
            let mut tree = merged.cache;
            substitute_tree(&mut tree, "", env, problems);
            Some(tree)
        }
        Err(e) => {
            problems.add("", syntax_error(&e.to_string()));
            None
        }
    }
}

/// The parser's message without the quoted source line: that line may hold a secret.
fn syntax_error(full: &str) -> String {
    let quotes_source = |line: &str| {
        let trimmed = line.trim_start();
        let after_number = trimmed.trim_start_matches(|c: char| c.is_ascii_digit());
        trimmed.starts_with('|')
            || (after_number.len() < trimmed.len() && after_number.starts_with(" |"))
    };
    let kept: Vec<&str> = full
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !quotes_source(line))
        .collect();
    format!("invalid TOML: {}", kept.join("; "))
}

/// Replaces `${NAME}` in every string of `value`. A reference that cannot be resolved is
/// reported at its key path and the value becomes `Nil`, which readers skip silently so the
/// same key is not reported twice.
fn substitute_tree(value: &mut Value, path: &str, env: &Env, problems: &mut Problems) {
    match &mut value.kind {
        ValueKind::String(raw) if raw.contains('$') => match substitute(raw, env) {
            Ok(None) => {}
            Ok(Some(replaced)) => {
                *value = Value::new(Some(&SUBSTITUTED.to_owned()), replaced);
            }
            Err(message) => {
                problems.add(path, message);
                value.kind = ValueKind::Nil;
            }
        },
        ValueKind::Table(table) => {
            let mut keys: Vec<String> = table.keys().cloned().collect();
            keys.sort();
            for key in keys {
                if let Some(child) = table.get_mut(&key) {
                    substitute_tree(child, &child_path(path, &key), env, problems);
                }
            }
        }
        ValueKind::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_tree(item, &index_path(path, i), env, problems);
            }
        }
        _ => {}
    }
}

/// `raw` with every `${NAME}` replaced by `env[NAME]`; `$${` stands for a literal `${`.
/// `Ok(None)` when there was nothing to replace. Errors name the variable, never a value.
fn substitute(raw: &str, env: &Env) -> Result<Option<String>, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut replaced = false;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let from_dollar = &rest[start..];
        if let Some(tail) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            replaced = true;
            continue;
        }
        let Some(body) = from_dollar.strip_prefix("${") else {
            out.push('$');
            rest = &from_dollar[1..];
            continue;
        };
        let end = body
            .find('}')
            .ok_or("`${` has no closing `}` (write `$${` for a literal `${`)")?;
        let name = &body[..end];
        if !is_variable_name(name) {
            return Err(
                "`${…}` must hold an environment variable name: letters, digits and `_`".into(),
            );
        }
        let value = env
            .get(name)
            .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
        out.push_str(value);
        rest = &body[end + 1..];
        replaced = true;
    }
    out.push_str(rest);
    Ok(replaced.then_some(out))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn references_are_replaced_whole_and_embedded() {
        let env = env(&[("TOKEN", "t0k"), ("HOST", "h")]);
        assert_eq!(substitute("${TOKEN}", &env), Ok(Some("t0k".into())));
        assert_eq!(
            substitute("https://${HOST}/x/${TOKEN}", &env),
            Ok(Some("https://h/x/t0k".into()))
        );
        assert_eq!(substitute("cost $5", &env), Ok(None));
        assert_eq!(
            substitute("a $${TOKEN}", &env),
            Ok(Some("a ${TOKEN}".into()))
        );
    }

    #[test]
    fn bad_references_name_the_variable_only() {
        let env = env(&[]);
        let missing = substitute("x${NOPE}", &env).unwrap_err();
        assert!(missing.contains("`NOPE`"), "{missing}");
        assert!(substitute("${OPEN", &env).is_err());
        assert!(substitute("${not a name}", &env).is_err());
        assert!(substitute("${}", &env).is_err());
    }

    #[test]
    fn syntax_errors_drop_the_quoted_line() {
        let mut problems = Problems::default();
        let toml = "[links.a]\nsecret = \"whsec_TOPSECRET\nkind = 1\n";
        assert!(merged_tree(toml, &Env::new(), &mut problems).is_none());
        let text = problems.into_result(()).unwrap_err().to_string();
        assert!(
            text.starts_with("invalid TOML: TOML parse error at line 2"),
            "{text}"
        );
        assert!(!text.contains("TOPSECRET"), "{text}");
    }
}
