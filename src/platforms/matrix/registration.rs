//! The application-service registration the homeserver loads (Synapse:
//! `app_service_config_files`), printed by `chatbridge matrix registration`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::config::MatrixLinkConfig;
use super::ghost::regex_escape;

/// The registration YAML of link `name`. `url` is where the homeserver reaches chatbridge: the
/// link's `registration_url`, else `http://` + the HTTP server's listen address (an unspecified
/// address, `0.0.0.0` or `[::]`, is written as loopback: set `registration_url` when the
/// homeserver is elsewhere).
pub fn yaml(name: &str, link: &MatrixLinkConfig, listen: SocketAddr) -> String {
    let url = link.registration_url.clone().unwrap_or_else(|| {
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}")
    });
    let server = regex_escape(&link.server_name);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# chatbridge link {name:?}: load this file in the homeserver"
    );
    let _ = writeln!(
        out,
        "# (Synapse: app_service_config_files). It holds both tokens."
    );
    let _ = writeln!(out, "id: {}", quoted(&format!("chatbridge-{name}")));
    let _ = writeln!(out, "url: {}", quoted(&url));
    let _ = writeln!(out, "as_token: {}", quoted(link.as_token.expose()));
    let _ = writeln!(out, "hs_token: {}", quoted(link.hs_token.expose()));
    let _ = writeln!(out, "sender_localpart: {}", quoted(&link.sender_localpart));
    out.push_str("rate_limited: false\n");
    out.push_str("receive_ephemeral: true\n");
    out.push_str("de.sorunome.msc2409.push_ephemeral: true\n");
    out.push_str("namespaces:\n  users:\n");
    for regex in [
        format!("@{}.*:{server}", regex_escape(&link.ghost_prefix)),
        format!("@{}:{server}", regex_escape(&link.sender_localpart)),
    ] {
        let _ = writeln!(
            out,
            "    - exclusive: true\n      regex: {}",
            quoted(&regex)
        );
    }
    out.push_str("  aliases: []\n  rooms: []\n");
    out
}

/// A YAML single-quoted scalar: `'` doubled, nothing else special.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use crate::config::{Env, LinkKind, load_str};

    #[test]
    fn the_registration_names_both_tokens_and_exclusive_namespaces() {
        let toml = "[links.m]\nkind = \"matrix\"\nhomeserver_url = \"http://127.0.0.1:8008\"\n\
            server_name = \"example.org\"\nas_token = \"as-1\"\nhs_token = \"hs-2\"\n\
            [links.m.rooms]\ngeneral = \"!abc:example.org\"\n\
            [[rooms]]\nname = \"general\"\nlinks = [\"m\"]\n";
        let config = load_str(toml, &Env::new()).expect("valid");
        let LinkKind::Matrix(m) = &config.links["m"].kind else {
            panic!("a matrix link");
        };
        let yaml = super::yaml("m", m, "0.0.0.0:8700".parse().unwrap());
        for line in [
            "id: 'chatbridge-m'",
            "url: 'http://127.0.0.1:8700'",
            "as_token: 'as-1'",
            "hs_token: 'hs-2'",
            "sender_localpart: 'chatbridge'",
            "rate_limited: false",
            "receive_ephemeral: true",
            "de.sorunome.msc2409.push_ephemeral: true",
            "      regex: '@_chat_.*:example\\.org'",
            "      regex: '@chatbridge:example\\.org'",
        ] {
            assert!(yaml.lines().any(|l| l == line), "{line:?} not in\n{yaml}");
        }
        assert_eq!(yaml.matches("exclusive: true").count(), 2);
    }
}
