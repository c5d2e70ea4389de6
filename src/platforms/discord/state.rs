//! What the Discord Gateway connections read from the configuration in force: which channel's
//! messages go where, and which webhooks are ours (their posts coming back are not news).

use std::collections::{BTreeMap, BTreeSet};

use super::channels::discord_channels;
use super::config::DiscordTarget;
use crate::config::Config;

/// Discord's part of the inbound settings.
pub(crate) struct DiscordState {
    /// Discord channel id → where its messages go (Discord links with `bot_token`).
    pub(crate) channels: BTreeMap<String, DiscordTarget>,
    /// The ids of our Discord links' webhooks.
    pub(crate) webhooks: BTreeSet<String>,
}

impl DiscordState {
    /// Discord's inbound settings of `config`.
    pub(crate) fn from_config(config: &Config) -> Self {
        Self {
            channels: discord_channels(&config.links, &config.rooms, None),
            webhooks: config
                .links
                .values()
                .filter_map(|link| Some(link.kind.discord()?.webhook_id.clone()))
                .collect(),
        }
    }
}
