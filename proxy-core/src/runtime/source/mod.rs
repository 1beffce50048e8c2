//! Sources of Services, EndpointSlices and the Node: the API server
//! ([`KubeSource`]), manifest files ([`ManifestSource`]) or a channel
//! ([`ChannelSource`]).
//!
//! Every source speaks the same language, modelled on kube-rs's
//! `watcher::Event`: a (re)list is `Init`, `InitApply` per object and
//! `InitDone`; after it, `Apply` and `Delete` per change. The runtime applies
//! each listed object as it arrives, keeping only its name, and at `InitDone`
//! deletes only what the relist no longer holds, so a relist that finds
//! nothing new changes nothing and no list is ever held whole.

mod channel;
mod kube_api;
mod manifest;

use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::error::ObjectKind;

pub use channel::ChannelSource;
pub use kube_api::{
    KubeSource, KubeSourceOptions, client_from_config, client_with_liveness, liveness,
    proxy_label_selector,
};
pub use manifest::{
    ManifestObject, ManifestSource, ObjectError, ObjectId, ParsedManifests, parse_manifests,
};

/// One change of one kind of object, as a watch delivers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Update<K> {
    /// A (re)list starts: objects follow as [`Update::InitApply`].
    Init,
    /// One object of the (re)list.
    InitApply(K),
    /// The (re)list is complete: objects not in it are gone.
    InitDone,
    /// An object was added or modified.
    Apply(K),
    /// An object was deleted.
    Delete(K),
}

/// What a source delivers.
// Variants differ in size (a Node is larger than a Service); events are
// moved once from the source to the loop, never stored in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// A Service changed.
    Service(Update<Service>),
    /// An EndpointSlice changed.
    EndpointSlice(Update<EndpointSlice>),
    /// This node's Node object changed.
    Node(Update<Node>),
}

impl SourceEvent {
    /// The kind of object the event is about.
    pub fn kind(&self) -> ObjectKind {
        match self {
            SourceEvent::Service(_) => ObjectKind::Service,
            SourceEvent::EndpointSlice(_) => ObjectKind::EndpointSlice,
            SourceEvent::Node(_) => ObjectKind::Node,
        }
    }
}

/// Something that delivers [`SourceEvent`]s.
pub trait Source: Send + 'static {
    /// The kinds this source delivers. The runtime's first sync waits until
    /// each of them delivered its initial list (`InitDone`).
    fn kinds(&self) -> Vec<ObjectKind>;

    /// Starts the source. The stream ends only when the source is done for
    /// good; a source recovers from its own errors (and logs them).
    fn events(self: Box<Self>) -> BoxStream<'static, SourceEvent>;
}
