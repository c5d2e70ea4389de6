//! Reload: read the file again, refuse it whole when invalid, otherwise apply only what it
//! changes (see the module above for what changes how).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Bridge, DaemonError};
use crate::bridge::route::{Reroute, Routes};
use crate::config::{Changes, Config, ConfigErrors};
use crate::ops::notify;
use crate::ops::supervise::PartId;

impl Bridge {
    /// Reads the configuration again and applies what changed; an invalid one is refused and
    /// the running one kept. Tells the service manager (`RELOADING=1`, then `READY=1`) once it
    /// was told the daemon is ready.
    pub(super) async fn reload(
        &mut self,
        load: &mut impl FnMut() -> Result<Config, ConfigErrors>,
    ) -> Result<(), DaemonError> {
        let announce = self.health.is_caught_up();
        if announce {
            notify::reloading();
        }
        let note = match load() {
            Ok(loaded) => {
                let refused = crate::platforms::link::not_runnable(&loaded.links);
                if refused.is_empty() {
                    self.apply(Changes::between(&self.config, loaded)).await?;
                    None
                } else {
                    for why in &refused {
                        tracing::error!(problem = %why, "reload: a link this version cannot run");
                    }
                    tracing::error!("reload refused; keeping the running configuration");
                    Some(format!(
                        "reload refused ({}): running the previous configuration",
                        refused.join("; ")
                    ))
                }
            }
            Err(errors) => {
                for error in &errors.0 {
                    tracing::error!(%error, "reload: invalid configuration");
                }
                tracing::error!(
                    problems = errors.0.len(),
                    "reload refused: the configuration file is invalid; keeping the running configuration"
                );
                Some(format!(
                    "reload refused, invalid configuration ({} problems, see the log): running the previous one",
                    errors.0.len()
                ))
            }
        };
        self.status.set_note(note);
        if announce {
            notify::reloaded(&mut self.status, &self.health).await;
        }
        Ok(())
    }

    /// Applies a valid configuration: routes first (so nothing new goes to a link being
    /// removed), then stops removed and changed links' workers, then starts added and changed
    /// ones.
    async fn apply(&mut self, changes: Changes) -> Result<(), DaemonError> {
        for setting in &changes.need_restart {
            tracing::warn!(
                setting,
                "reload: changing {setting} needs a restart; keeping the running value"
            );
        }
        // The inbound routes take the new settings at once (signing secrets, rooms, mapping).
        let previous = self.ops.inbound().load_full();
        let inbound = crate::inbound::Inbound::from_config(
            &changes.config,
            self.outbox.con.clone(),
            previous.as_deref(),
        );
        self.ops.inbound().store(Some(Arc::new(inbound)));
        if changes.is_empty() {
            tracing::info!("reload: nothing to change");
            return Ok(());
        }
        let Changes {
            config,
            added,
            removed,
            changed,
            routes,
            ..
        } = changes;
        self.config = config;
        if routes {
            self.switch_routes().await;
        }
        let stopping: Vec<PartId> = removed
            .iter()
            .chain(&changed)
            .filter_map(|name| self.links.remove(name))
            .collect();
        self.parts.stop(&stopping, self.grace()).await?;
        for name in added.iter().chain(&changed) {
            self.start_link(name).await?;
        }
        self.status
            .set_links(self.config.links.keys().cloned().collect());
        tracing::info!(
            started = ?added,
            stopped = ?removed,
            restarted = ?changed,
            routes_changed = routes,
            "configuration reloaded"
        );
        Ok(())
    }

    /// Hands the routes of the configuration in force down the data path and waits until the
    /// intake routes by them. Returns early if the subscription or the intake is gone (the
    /// supervisor then reports which failed).
    pub(super) async fn switch_routes(&mut self) {
        let routes = Arc::new(Routes::new(&self.config));
        let (done, switched) = oneshot::channel();
        if self.reroutes.send(Reroute { routes, done }).await.is_ok() {
            let _ = switched.await;
        }
    }
}
