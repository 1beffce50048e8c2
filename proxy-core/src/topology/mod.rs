//! [`ServiceTopology`]: the cluster-wide, validated model of Services and
//! EndpointSlices.
//!
//! Objects come in as `k8s-openapi` values and are validated one by one
//! (`service.rs` and `slice.rs`). A bad field drops that object, port, endpoint
//! or value with an [`InvalidObject`](crate::InvalidObject) error naming the
//! object and the field; when a whole object is rejected, the version accepted
//! before stays in effect, so a bad update never removes rules that work.
//!
//! Names are checked as the API server checks them
//! ([`model::api_names`](crate::model::api_names)): namespaces, Service and
//! port names are DNS-1123 labels, EndpointSlice and node names DNS-1123
//! subdomains, the `kubernetes.io/service-name` label a label value naming
//! a Service. Names end up in rule text (comments, chain names), so nothing
//! else may reach a backend, whatever the source: API server, manifests, a
//! channel or a library caller.

mod interner;
mod service;
mod slice;
mod store;

pub use service::{LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME, Service};
pub use slice::{LABEL_SERVICE_NAME, Slice, SliceEndpoint, SlicePort, cmp_endpoint_strings};
pub(crate) use store::ServiceEntry;
pub use store::{Applied, ServiceTopology};
