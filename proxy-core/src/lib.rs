//! # proxy-core
//!
//! The backend-independent heart of a pluggable kube-proxy:
//!
//! - [`topology::ServiceTopology`]: the cluster-wide, validated model of
//!   Services and EndpointSlices, built from `k8s-openapi` objects. Invalid
//!   fields are rejected per object ([`InvalidObject`]); everything else goes on.
//! - [`view::NodeView`]: the node-local projection for one IP family. It holds,
//!   for every service port, the endpoints usable under each traffic policy and
//!   the decision ([`view::Target`]) a backend must implement. It is computed
//!   once, here, and never again in a backend.
//! - [`backend::Backend`]: the one trait a dataplane implements, with
//!   [`backend::Capabilities`], [`backend::SyncStats`] and
//!   [`backend::BackendError`]; [`backend::BackendFactory`] and
//!   [`backend::Registry`] select a backend at start-up.
//! - [`changes`]: which service ports changed since the last successful sync.
//! - [`config::KubeProxyConfiguration`]: upstream's v1alpha1 configuration.
//!
//! With the `runtime` feature (default) it also holds the runner, the
//! Kubernetes and manifest sources, the health and metrics servers and the
//! conntrack cleanup, and `runtime::ProxyBuilder`, which runs all of it as
//! the `kube-proxy` binary does from a program of your own (your Tokio
//! runtime, `kube::Client`, backends and metrics registry). With
//! `conformance` it exports the shared conformance suite that every backend
//! runs; with `trace`, the hops and choices every backend's packet tracer
//! records (`trace::Hop`, `trace::Choice`) and what `kube-proxy diff`
//! reports (`diff::PortDiff`).
//!
//! ## Kubernetes versions
//!
//! This crate enables no `v1_*` feature of `k8s-openapi`: the application
//! chooses one (`v1_33` to `v1_37` are supported), in its own dependency on
//! `k8s-openapi`. See the README.
#![warn(missing_docs)]

pub mod backend;
pub mod changes;
pub mod config;
mod error;
pub mod model;
pub mod runner;
pub mod topology;
pub mod view;

pub use backend::{Backend, BackendError, BackendErrorKind, Capabilities, SyncStats};
pub use changes::ChangeSet;
pub use config::ProxyMode;
pub use error::{Dropped, Error, InvalidObject, ObjectKind};
pub use model::{Endpoint, IpFamily, NodeInfo, Protocol, ServiceKey, ServicePort, ServicePortName};
pub use topology::ServiceTopology;
pub use view::{NodeView, ServicePortView, Target};

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(feature = "exec")]
pub mod exec;

#[cfg(feature = "runtime")]
pub mod runtime;

#[cfg(feature = "trace")]
pub mod diff;
#[cfg(feature = "trace")]
pub mod trace;
