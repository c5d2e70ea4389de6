//! A chat-platform link (Slack, Discord) as a [`Sink`]: what both do with a batch around their
//! own posts (render with the link's style and naming, post in order skipping what an earlier
//! attempt already made, hand read receipts to the coalescer). Each platform brings its
//! [`MakesPosts`] poster; nothing else differs.

use std::sync::Arc;
use std::time::Duration;

use super::posting::{MakesPosts, Progress, Receipts, post_all};
use super::render::{self, Naming, Style};
use crate::bridge::retry::Verdict;
use crate::chat::model::Outbound;
use crate::platforms::{SendOutcome, Sending, Sink};

/// One chat-platform link: its settings and state, and the platform's poster `P`.
pub(crate) struct ChatLink<P> {
    /// The link's configured name.
    pub(crate) name: String,
    /// How many queued events one send may merge.
    pub(crate) batch_max: usize,
    /// One request's deadline.
    pub(crate) timeout: Duration,
    /// `name_format` and the picture.
    pub(crate) naming: Naming,
    /// How text is laid out.
    pub(crate) style: Style,
    /// Posts already made by attempts not yet acknowledged.
    pub(crate) progress: Progress,
    /// Makes the posts; shared with the receipt coalescer's task.
    pub(crate) poster: Arc<P>,
    /// Read receipts waiting to become "seen by …" lines.
    pub(crate) receipts: Arc<Receipts>,
}

impl<P: MakesPosts> ChatLink<P> {
    /// Posts the batch (merged and split as [`render`] lays it out), in order, at the
    /// platform's pace; hands its read receipts to the coalescer.
    pub(crate) async fn send(&self, batch: &[Outbound]) -> SendOutcome {
        let pending = self.progress.pending(batch).await;
        let posts = render::posts(&pending, &self.style, &self.naming);
        let outcome = post_all(batch, &posts, &self.progress, |post| async move {
            self.poster.make(&post).await
        })
        .await;
        if outcome.verdict == Verdict::Disable {
            self.receipts.clear();
        }
        if outcome.verdict == Verdict::Delivered {
            self.receipts
                .add(render::readers(&pending, &self.style), &self.poster);
        }
        outcome
    }
}

impl<P: MakesPosts> Sink for ChatLink<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_max(&self) -> usize {
        self.batch_max
    }

    fn request_timeout(&self) -> Duration {
        self.timeout
    }

    fn send<'a>(&'a self, batch: &'a [Outbound]) -> Sending<'a> {
        Box::pin(ChatLink::send(self, batch))
    }
}
