//! The routing table: which links get an event, from the config's room → links and
//! link → event kinds. Echo prevention (never sending an event back to the link it came from)
//! is decided at enqueue time, where chatbridge's own writes are known: an `origin` field
//! alone is only a claim ([`origin_among`]).
//!
//! On reload the routes change at one point of the event stream: a [`Reroute`] travels down
//! the data path (the subscription widens its [`Filter`] to what the old and the new routes
//! watch, the intake switches and narrows it again), so each event is routed by exactly one of
//! them.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use crate::chat::model::{EventKind, OutboundKind, Scope};
use crate::config::Config;

/// The routes the subscription filters by (which channels are worth copying), swapped
/// atomically on reload and read per message without a lock.
pub type Filter = Arc<ArcSwap<Routes>>;

/// New routes on their way down the data path, from the reload to the intake.
#[derive(Debug)]
pub struct Reroute {
    pub routes: Arc<Routes>,
    /// Answered once the intake routes by `routes`.
    pub done: oneshot::Sender<()>,
}

/// One link as a route target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    link: String,
    /// The event kinds the link wants (`events` in its config).
    events: Vec<EventKind>,
}

/// Room → links and DMs → links, resolved once from the config.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    rooms: HashMap<String, Vec<Route>>,
    /// Links that mirror direct messages; empty when `[dms]` is absent.
    dms: Vec<Route>,
}

impl Routes {
    pub fn new(config: &Config) -> Self {
        let resolve = |names: &[String]| -> Vec<Route> {
            names
                .iter()
                .filter_map(|name| {
                    config.links.get(name).map(|link| Route {
                        link: name.clone(),
                        events: link.events().to_vec(),
                    })
                })
                .collect()
        };
        Self {
            rooms: config
                .rooms
                .iter()
                .map(|room| (room.name.clone(), resolve(&room.links)))
                .collect(),
            dms: config
                .dms
                .as_ref()
                .map(|dms| resolve(&dms.links))
                .unwrap_or_default(),
        }
    }

    fn routes(&self, scope: &Scope) -> &[Route] {
        match scope {
            Scope::Room(room) => self.rooms.get(room).map(Vec::as_slice).unwrap_or(&[]),
            Scope::Dm(..) => &self.dms,
        }
    }

    /// The links that get an event of `kind` in `scope`. Notices go to every link of the scope.
    pub fn links_for(&self, scope: &Scope, kind: OutboundKind) -> Vec<String> {
        self.routes(scope)
            .iter()
            .filter(|route| match kind {
                OutboundKind::Event(kind) => route.events.contains(&kind),
                OutboundKind::Notice => true,
            })
            .map(|route| route.link.clone())
            .collect()
    }

    /// Whether anything published on `channel` may be mirrored: a configured room's channel,
    /// or any DM channel when DMs are mirrored. Cheap: no allocation, no validation.
    pub fn watches_channel(&self, channel: &str) -> bool {
        if let Some(room) = channel.strip_prefix(crate::redis::keys::ROOM_CHANNEL_PREFIX) {
            return self
                .rooms
                .get(room)
                .is_some_and(|routes| !routes.is_empty());
        }
        channel.starts_with(crate::redis::keys::DM_CHANNEL_PREFIX) && self.mirrors_dms()
    }

    /// Whether anything in this scope is mirrored at all.
    pub fn watches(&self, scope: &Scope) -> bool {
        !self.routes(scope).is_empty()
    }

    /// The configured rooms that have at least one link.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms
            .iter()
            .filter(|(_, routes)| !routes.is_empty())
            .map(|(room, _)| room.as_str())
    }

    /// Whether direct messages are mirrored.
    pub fn mirrors_dms(&self) -> bool {
        !self.dms.is_empty()
    }

    /// Routes that watch every scope `self` or `other` watches: the subscription's filter while
    /// a reload switches from one to the other (for filtering only; links are not merged).
    pub fn union(&self, other: &Routes) -> Routes {
        let mut rooms = self.rooms.clone();
        for (room, routes) in &other.rooms {
            if !routes.is_empty() {
                rooms.insert(room.clone(), routes.clone());
            }
        }
        Routes {
            rooms,
            dms: if self.dms.is_empty() {
                other.dms.clone()
            } else {
                self.dms.clone()
            },
        }
    }

    /// The rooms `self` mirrors that `before` did not.
    pub fn rooms_added_since(&self, before: &Routes) -> Vec<Scope> {
        let mut added: Vec<Scope> = self
            .rooms()
            .filter(|room| !before.watches(&Scope::Room((*room).to_owned())))
            .map(|room| Scope::Room(room.to_owned()))
            .collect();
        added.sort();
        added
    }
}

/// The link an event's `origin` field names, when it is one of the event's `links`: only then
/// can the claim matter. Whether it is honoured depends on who wrote the event (see
/// [`crate::redis::keys::bridged`]).
pub fn origin_among(links: &[String], origin: Option<&str>) -> Option<String> {
    let origin = origin?;
    links.iter().find(|link| *link == origin).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::model::EventKind::*;

    fn routes() -> Routes {
        let toml = r#"
            [links.console]
            kind = "console"
            [links.hook]
            kind = "webhook"
            url = "http://127.0.0.1:9/x"
            events = ["message", "typing"]
            [[rooms]]
            name = "general"
            links = ["console", "hook"]
            [[rooms]]
            name = "ops"
            links = ["hook"]
            [dms]
            links = ["console"]
        "#;
        Routes::new(&crate::config::load_str(toml, &Default::default()).unwrap())
    }

    #[test]
    fn rooms_route_to_their_links_filtered_by_event_kind() {
        let r = routes();
        let general = Scope::Room("general".into());
        let ev = OutboundKind::Event;
        assert_eq!(r.links_for(&general, ev(Message)), ["console", "hook"]);
        assert_eq!(r.links_for(&general, ev(Join)), ["console"]);
        assert_eq!(r.links_for(&general, ev(Typing)), ["hook"]);
        assert!(r.links_for(&general, ev(ReadReceipt)).is_empty());
        assert_eq!(
            r.links_for(&general, OutboundKind::Notice),
            ["console", "hook"]
        );
        assert!(
            r.links_for(&Scope::Room("random".into()), ev(Message))
                .is_empty()
        );
        assert!(!r.watches(&Scope::Room("random".into())));
        assert!(r.watches_channel("chat:room:general"));
        assert!(!r.watches_channel("chat:room:random"));
        assert!(r.watches_channel("chat:dm:1:2"));
        assert!(!Routes::default().watches_channel("chat:dm:1:2"));
        let dm = Scope::Dm("1".into(), "2".into());
        assert_eq!(r.links_for(&dm, ev(Message)), ["console"]);
        let mut rooms: Vec<&str> = r.rooms().collect();
        rooms.sort();
        assert_eq!(rooms, ["general", "ops"]);
    }

    #[test]
    fn a_union_watches_both_and_added_rooms_are_the_new_ones() {
        let before = routes();
        let toml = r#"
            [links.hook]
            kind = "webhook"
            url = "http://127.0.0.1:9/x"
            [[rooms]]
            name = "ops"
            links = ["hook"]
            [[rooms]]
            name = "extra"
            links = ["hook"]
        "#;
        let after = Routes::new(&crate::config::load_str(toml, &Default::default()).unwrap());
        let both = before.union(&after);
        for channel in [
            "chat:room:general",
            "chat:room:ops",
            "chat:room:extra",
            "chat:dm:1:2",
        ] {
            assert!(both.watches_channel(channel), "{channel}");
        }
        assert!(!after.mirrors_dms() && both.mirrors_dms());
        assert_eq!(
            after.rooms_added_since(&before),
            [Scope::Room("extra".into())]
        );
        assert!(before.rooms_added_since(&before).is_empty());
    }

    #[test]
    fn an_origin_claim_names_one_of_the_event_links_or_nothing() {
        let r = routes();
        let links = r.links_for(&Scope::Room("general".into()), OutboundKind::Event(Message));
        assert_eq!(origin_among(&links, Some("hook")).as_deref(), Some("hook"));
        assert_eq!(origin_among(&links, Some("elsewhere")), None);
        assert_eq!(origin_among(&links, None), None);
    }
}
