//! Pieces of config text that several tests write the same way.

/// `[[rooms]]` table `general` on the link `link` and, when `audit_url` is given, a webhook
/// link `audit` to that URL ahead of it, on `general` too.
pub fn general_room(link: &str, audit_url: Option<&str>) -> String {
    let mut toml = String::new();
    let mut links = vec![format!("\"{link}\"")];
    if let Some(url) = audit_url {
        toml.push_str(&format!(
            "[links.audit]\nkind = \"webhook\"\nurl = \"{url}\"\n\n"
        ));
        links.push("\"audit\"".to_owned());
    }
    toml.push_str(&format!(
        "[[rooms]]\nname = \"general\"\nlinks = [{}]\n",
        links.join(", ")
    ));
    toml
}

/// `[redis]` at `redis_url` and one webhook link `audit` to `hook_url` (`timeout_secs = 5`, then
/// the `keys` given) for room `general` and the DMs.
pub fn audit_everywhere(redis_url: &str, hook_url: &str, keys: &str) -> String {
    format!(
        r#"
[redis]
url = "{redis_url}"

[links.audit]
kind = "webhook"
url = "{hook_url}"
timeout_secs = 5
{keys}
[[rooms]]
name = "general"
links = ["audit"]

[dms]
links = ["audit"]
"#
    )
}
