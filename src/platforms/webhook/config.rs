//! `[links.<name>]` with `kind = "webhook"`: the endpoint, its signing secret, and whether
//! the link also accepts signed events at `POST /hooks/{link}`.

use crate::chat::model::EventKind;
use crate::config::error::Problems;
use crate::config::links::Rules;
use crate::config::reader::Table;
use crate::secret::{SecretUrl, WebhookSecret};

/// What a webhook link accepts of the common keys: every event, batches and parallel sends.
pub(crate) const RULES: Rules = Rules {
    default_events: &EventKind::ALL,
    allowed_events: &EventKind::ALL,
    why_not: "",
    names: false,
    batch_max: (Some(1..=1000), 1),
    max_in_flight: (Some(1..=256), 1),
    timeout: true,
};
/// POSTs events as JSON to an HTTP endpoint, signed the Standard Webhooks way when a secret is
/// set. Failed deliveries are retried with backoff (`[delivery]`).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookLinkConfig {
    /// The endpoint (`http` or `https`). Required. Its path often holds a token, so it is
    /// only ever shown as `scheme://host/…`; put it in an environment variable with
    /// `url = "${MY_HOOK_URL}"`.
    pub url: SecretUrl,
    /// The Standard Webhooks signing secret (`whsec_` + base64 of 24 to 64 bytes). When set,
    /// every request carries `webhook-signature`. Default: unsigned. With `inbound`, the same
    /// secret verifies what the link's sender posts to `/hooks/{link}`.
    pub secret: Option<WebhookSecret>,
    /// Whether the link also accepts signed events at `POST /hooks/{link}` (`inbound`), written
    /// into its rooms (and DMs, when `[dms]` routes them to it) with `origin` = the link.
    /// Needs `secret`. Default: false.
    pub inbound: bool,
    /// The longest inbound `content` accepted, in characters; longer gets 413
    /// (`max_content_chars`, 1 to 1000000). Default: 4000.
    pub max_content_chars: usize,
}

impl WebhookLinkConfig {
    pub(crate) fn parse(link: &mut Table, problems: &mut Problems) -> Option<Self> {
        let url = secret_url(link, "url", problems);
        let secret = link
            .string("secret", problems)
            .map(|raw| WebhookSecret::parse(&raw.value).map_err(|e| problems.add(&raw.path, e)));
        let inbound_path = link.path_of("inbound");
        let inbound = link.boolean("inbound", false, problems);
        if inbound && secret.is_none() {
            problems.add(
                &inbound_path,
                "inbound webhooks must be signed: set `secret` (`whsec_…`)",
            );
        }
        let max_content = link.integer("max_content_chars", 1..=1_000_000, 4000, problems);
        Some(Self {
            url: url?,
            secret: secret.transpose().ok()?,
            inbound,
            max_content_chars: usize::try_from(max_content).unwrap_or(4000),
        })
    }

    /// Where the link sends, safe to print.
    pub(crate) fn describe(&self) -> String {
        let signed = if self.secret.is_some() {
            "signed"
        } else {
            "unsigned"
        };
        let inbound = if self.inbound { ", inbound" } else { "" };
        format!("{}  {signed}{inbound}", self.url.redacted())
    }
}

/// A required URL whose value is a secret.
fn secret_url(link: &mut Table, key: &'static str, problems: &mut Problems) -> Option<SecretUrl> {
    link.required_string(key, problems).and_then(|raw| {
        SecretUrl::parse(&raw.value)
            .map_err(|e| problems.add(&raw.path, e))
            .ok()
    })
}
