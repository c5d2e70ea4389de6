//! Generic webhook links: events POSTed to an HTTP endpoint ([`outbound`]), signed per Standard
//! Webhooks ([`signing`], which also verifies what `POST /hooks/{link}` receives).

pub mod config;
pub mod outbound;
pub mod signing;

pub use outbound::Webhook;
