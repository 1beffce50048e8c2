//! [`ChannelSource`]: events pushed through a channel, for embedders and tests.

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::error::ObjectKind;

use super::{Source, SourceEvent};

/// A [`Source`] fed by hand through an unbounded channel.
///
/// The sender must deliver `Init`/`InitDone` for every kind in `kinds`
/// before the runtime syncs for the first time.
#[derive(Debug)]
pub struct ChannelSource {
    kinds: Vec<ObjectKind>,
    receiver: mpsc::UnboundedReceiver<SourceEvent>,
}

impl ChannelSource {
    /// A source of `kinds` and the sender that feeds it.
    pub fn new(kinds: impl Into<Vec<ObjectKind>>) -> (Self, mpsc::UnboundedSender<SourceEvent>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            ChannelSource {
                kinds: kinds.into(),
                receiver,
            },
            sender,
        )
    }
}

impl Source for ChannelSource {
    fn kinds(&self) -> Vec<ObjectKind> {
        self.kinds.clone()
    }

    fn events(self: Box<Self>) -> BoxStream<'static, SourceEvent> {
        let mut receiver = self.receiver;
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
    }
}
