//! The routing table: which links get an event, from the config's room → links and
//! link → event kinds. Echo prevention (never sending an event back to the link it came from)
//! is decided at enqueue time, where chatbridge's own writes are known: an `origin` field
//! alone is only a claim ([`origin_among`]).

use std::collections::HashMap;

use crate::config::Config;
use crate::model::{EventKind, OutboundKind, Scope};

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
        if let Some(room) = channel.strip_prefix("chat:room:") {
            return self
                .rooms
                .get(room)
                .is_some_and(|routes| !routes.is_empty());
        }
        channel.starts_with("chat:dm:") && self.mirrors_dms()
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
}

/// The link an event's `origin` field names, when it is one of the event's `links`: only then
/// can the claim matter. Whether it is honoured depends on who wrote the event (see
/// [`crate::outbox::bridged_key`]).
pub fn origin_among(links: &[String], origin: Option<&str>) -> Option<String> {
    let origin = origin?;
    links.iter().find(|link| *link == origin).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventKind::*;

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
    fn an_origin_claim_names_one_of_the_event_links_or_nothing() {
        let r = routes();
        let links = r.links_for(&Scope::Room("general".into()), OutboundKind::Event(Message));
        assert_eq!(origin_among(&links, Some("hook")).as_deref(), Some("hook"));
        assert_eq!(origin_among(&links, Some("elsewhere")), None);
        assert_eq!(origin_among(&links, None), None);
    }
}
