//! The tracer: where a new connection would go, given the listeners the
//! backend holds and their balancers' current targets.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use proxy_core::{IpFamily, Protocol, ServicePortName, Target};

use crate::backend::UserspaceBackend;
use crate::balancer::Balancer;
use crate::plan::{ListenerKey, TrafficClass, unspecified};
use crate::redirect::Vip;

/// What the backend does with a new connection or first datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No listener: the proxy does not see it.
    NotMatched,
    /// Refused (nothing listens on a service address of a service without
    /// endpoints).
    Rejected,
    /// Accepted and closed without forwarding.
    Dropped,
    /// Forwarded to one of these endpoints, always from a node address (the
    /// proxy opens its own connection).
    Forwarded(BTreeSet<SocketAddr>),
}

impl UserspaceBackend {
    /// Traces a connection to `destination` over `protocol`; `from_host`
    /// says whether the client is the node itself.
    ///
    /// With redirect rules on, a connection to a VIP is decided by the rules
    /// first (they run at prerouting and output, before any local socket
    /// is looked up): rejected, or sent to the redirect listener of its
    /// service port and traffic class.
    pub fn trace(&self, protocol: Protocol, destination: SocketAddr, from_host: bool) -> Verdict {
        if let Some(redirect) = self.redirect_state() {
            let vip = Vip {
                ip: destination.ip(),
                protocol,
                port: destination.port(),
            };
            if let Some(spec) = redirect.owners().get(&vip) {
                if spec.reject {
                    return Verdict::Rejected;
                }
                if redirect
                    .listener_port(&(spec.port.clone(), spec.class))
                    .is_none()
                {
                    // No listener: the rules have no element for it.
                    return Verdict::NotMatched;
                }
                return self.decide(&spec.port, spec.class, from_host);
            }
        }
        let exact = ListenerKey {
            protocol,
            addr: destination,
        };
        let wildcard = ListenerKey {
            protocol,
            addr: SocketAddr::new(
                unspecified(IpFamily::of(&destination.ip())),
                destination.port(),
            ),
        };
        let listener = self.listener(&exact).or_else(|| {
            self.host_addresses()
                .contains(&destination.ip())
                .then(|| self.listener(&wildcard))
                .flatten()
        });
        let Some(spec) = listener else {
            return Verdict::NotMatched;
        };
        if spec.refuse {
            return Verdict::Rejected;
        }
        self.decide(&spec.port, spec.class, from_host)
    }

    /// What the balancer of `port` does with a new connection of `class`.
    fn decide(&self, port: &ServicePortName, class: TrafficClass, from_host: bool) -> Verdict {
        let Some(view) = self.balancer(port).map(|b| b.view()) else {
            return Verdict::NotMatched;
        };
        match Balancer::target(&view, class, from_host) {
            Target::Reject => Verdict::Rejected,
            Target::Drop => Verdict::Dropped,
            target => Verdict::Forwarded(
                view.endpoints_for(target)
                    .iter()
                    .map(|e| e.socket_addr())
                    .collect(),
            ),
        }
    }
}
