//! The chat-post rendering Slack and Discord share: [`render`] lays events out as posts (with
//! [`split`], [`names`] and [`template`]), and [`posting`] holds what both do around their calls
//! (pacing, progress through a batch, read-receipt lines); [`ChatLink`] is the link both are.

mod link;
pub mod names;
pub(crate) mod posting;
pub(crate) use link::ChatLink;
pub(crate) use posting::{NotBefore, seconds};
pub mod render;
pub(crate) mod rules;
pub mod split;
pub mod template;
