//! What the platforms' inbound routes and sources read from the configuration in force.

use super::discord::state::DiscordState;
use super::slack::state::SlackState;
use crate::config::Config;

/// One part per platform; swapped whole with the rest of the inbound settings on reload.
pub struct InboundState {
    pub(crate) slack: SlackState,
    pub(crate) discord: DiscordState,
}

impl InboundState {
    /// The platforms' inbound settings of `config`; `previous` (those a reload replaces)
    /// hands on what is kept across reloads (caches).
    pub fn from_config(config: &Config, previous: Option<&Self>) -> Self {
        Self {
            slack: SlackState::from_config(config, previous.map(|p| &p.slack)),
            discord: DiscordState::from_config(config),
        }
    }
}
