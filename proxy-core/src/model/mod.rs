//! The validated, backend-independent model: what kube-proxy knows about
//! services, endpoints and this node.

mod endpoint;
mod family;
mod names;
mod node;
mod protocol;
mod service_port;

pub use endpoint::{Endpoint, EndpointHints};
pub use family::IpFamily;
pub use names::{ServiceKey, ServicePortName};
pub use node::NodeInfo;
pub use protocol::Protocol;
pub use service_port::{ServicePort, SessionAffinity, TrafficPolicy};
