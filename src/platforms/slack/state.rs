//! What Slack's inbound paths (the Events API route, Socket Mode) read from the configuration
//! in force: the app, where each channel's events go, and the user-name cache, which is kept
//! across reloads.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::channels::slack_channels;
use super::config::{SlackAppConfig, SlackInbound, SlackMode};
use super::names::{Directory, Names};
use crate::config::Config;

/// Slack's part of the inbound settings.
pub(crate) struct SlackState {
    /// `[slack]` and the channel → room mapping; `None` without `[slack]`.
    pub(crate) app: Option<SlackApp>,
    /// Slack user names, kept across reloads.
    pub(crate) names: Arc<Names>,
}

/// The Slack app and where each channel's events go.
pub(crate) struct SlackApp {
    /// `[slack]`: the signing secret and our own app and bot ids.
    pub(crate) config: SlackAppConfig,
    /// Slack channel id → the room (and link) its events go to.
    pub(crate) channels: BTreeMap<String, SlackInbound>,
    /// Per Slack link (Web API mode): its token and API base, for `users.info`.
    pub(crate) directories: BTreeMap<String, Directory>,
}

impl SlackState {
    /// Slack's inbound settings of `config`; `previous` (those a reload replaces) hands on its
    /// name cache.
    pub(crate) fn from_config(config: &Config, previous: Option<&Self>) -> Self {
        let app = config.sections.slack.clone().map(|app| SlackApp {
            config: app,
            channels: slack_channels(&config.links, &config.rooms, None),
            directories: directories(config),
        });
        Self {
            app,
            names: previous.map_or_else(|| Arc::new(Names::new()), |p| p.names.clone()),
        }
    }
}

/// The token and API base of every Slack link in Web API mode, by link name.
fn directories(config: &Config) -> BTreeMap<String, Directory> {
    config
        .links
        .iter()
        .filter_map(|(name, link)| match &link.kind.slack()?.mode {
            SlackMode::Api { token, api_url, .. } => Some((
                name.clone(),
                Directory {
                    token: token.clone(),
                    api_url: api_url.clone(),
                },
            )),
            SlackMode::Webhook { .. } => None,
        })
        .collect()
}
