//! The validated, backend-independent model: what kube-proxy knows about
//! services, endpoints and this node.

pub mod api_names;
mod endpoint;
mod family;
mod names;
mod node;
mod protocol;
pub mod rule_text;
mod service_port;

pub use endpoint::{Endpoint, EndpointHints};
pub use family::IpFamily;
pub use names::{ServiceKey, ServicePortName};
pub use node::NodeInfo;
pub use protocol::Protocol;
pub use rule_text::rule_comment;
pub use service_port::{ServicePort, SessionAffinity, TrafficPolicy};
