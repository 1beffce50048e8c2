//! The crate's error type.

use std::fmt;

/// Which Kubernetes object an [`InvalidObject`] error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// A `v1` Service.
    Service,
    /// A `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// A `v1` Node.
    Node,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Node => "Node",
        })
    }
}

/// One invalid field of one object: the object is named by kind and
/// namespace/name, the field by its path (`spec.ports[1].protocol`).
///
/// Depending on the field, the whole object or only the part that holds the
/// field (one port, one endpoint, one IP) is left out of the topology; the
/// error says which in [`InvalidObject::dropped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidObject {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// `namespace/name` of the object (`name` for cluster-scoped objects).
    pub object: String,
    /// Path of the offending field, e.g. `spec.clusterIPs[0]`.
    pub field: String,
    /// What is wrong with the value.
    pub reason: String,
    /// What was left out because of it.
    pub dropped: Dropped,
}

/// The part of an object that an invalid field caused to be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The whole object; a previously accepted version of it stays in effect.
    Object,
    /// One service port, or one EndpointSlice port.
    Port,
    /// One endpoint of an EndpointSlice.
    Endpoint,
    /// One value of a list (an external IP, a load-balancer ingress IP).
    Value,
}

impl fmt::Display for InvalidObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dropped = match self.dropped {
            Dropped::Object => "object ignored",
            Dropped::Port => "port ignored",
            Dropped::Endpoint => "endpoint ignored",
            Dropped::Value => "value ignored",
        };
        write!(
            f,
            "{} {}: invalid {}: {} ({dropped})",
            self.kind, self.object, self.field, self.reason
        )
    }
}

impl std::error::Error for InvalidObject {}

/// Errors of `proxy-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Service, EndpointSlice or Node field is invalid.
    #[error(transparent)]
    InvalidObject(#[from] InvalidObject),

    /// A `KubeProxyConfiguration` (file or flags) is invalid; `field` is the
    /// path of the offending field, e.g. `iptables.masqueradeBit`.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A configuration or manifest document could not be parsed.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was being parsed (a file name, "config").
        what: String,
        /// The parser's message, with line and column where known.
        reason: String,
    },

    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `reading /etc/kube-proxy/config.yaml`.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An error talking to the Kubernetes API server.
    #[error("kubernetes API: {0}")]
    Kube(String),

    /// Something kube-proxy read at start-up changed (the node's IPs, or its
    /// pod CIDRs with `detectLocalMode: NodeCIDR`): it exits so that it is
    /// restarted with the new value, as upstream does.
    #[error("restart required: {0}")]
    Restart(String),

    /// A backend reported an error.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
}

impl Error {
    /// A configuration error for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
