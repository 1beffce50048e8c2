//! What a running listener needs: its service port's balancer, its traffic
//! class, the host's addresses and the settings.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use proxy_core::ServicePortName;

use crate::balancer::Balancer;
use crate::host::HostAddresses;
use crate::options::Options;
use crate::plan::TrafficClass;

/// The host's addresses, replaced on every full sync and read by listeners
/// to tell the node's own clients apart.
pub(crate) type SharedHost = Arc<RwLock<Arc<HostAddresses>>>;

/// Everything a listener task reads.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub port: ServicePortName,
    pub class: TrafficClass,
    pub balancer: Arc<Balancer>,
    pub host: SharedHost,
    pub options: Options,
}

impl Route {
    /// Whether `client` is the node itself.
    pub fn is_host(&self, client: &IpAddr) -> bool {
        self.host
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(client)
    }
}
