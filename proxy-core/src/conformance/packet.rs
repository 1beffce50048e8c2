use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::model::Protocol;

/// Where a packet enters the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Sent by a process on the node itself (OUTPUT path).
    Host,
    /// Sent by a pod on this node: arrives on the pod network interface
    /// (bridge `cbr0`, pod veths named `veth*`), source IP in the pod CIDR.
    LocalPod,
    /// Arrives from outside the node on its uplink (another node, a client
    /// outside the cluster, a load balancer).
    External,
}

/// The bridge local pods are attached to; local-pod traffic enters the
/// node's IP layer on it (what `BridgeInterface` and `InterfaceNamePrefix`
/// local-traffic detection match).
pub const POD_BRIDGE: &str = "cbr0";

/// The node's uplink: traffic from other nodes and external clients enters
/// on it.
pub const UPLINK: &str = "eth0";

impl Origin {
    /// The interface the packet enters the node's IP layer on: [`POD_BRIDGE`]
    /// for local pods, [`UPLINK`] for external traffic, none for traffic the
    /// host sends itself (it starts in the OUTPUT path).
    ///
    /// A harness must deliver packets this way for the interface-based
    /// local-traffic detectors to see what the scenarios expect.
    pub fn in_interface(self) -> Option<&'static str> {
        match self {
            Origin::Host => None,
            Origin::LocalPod => Some(POD_BRIDGE),
            Origin::External => Some(UPLINK),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Host => "host",
            Origin::LocalPod => "local_pod",
            Origin::External => "external",
        })
    }
}

/// A connection attempt: the first packet of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Packet {
    /// Where it enters the node.
    pub origin: Origin,
    /// Source IP.
    pub source: IpAddr,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination IP.
    pub destination: IpAddr,
    /// Destination port.
    pub port: u16,
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} from {} {} -> {}",
            self.protocol.lower(),
            self.origin,
            self.source,
            SocketAddr::new(self.destination, self.port)
        )
    }
}

/// What happens to a [`Packet`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to one of `endpoints` (any may answer); `masqueraded` says
    /// whether the endpoint sees a node address instead of the client's.
    Forwarded {
        /// The endpoints that may answer.
        endpoints: BTreeSet<SocketAddr>,
        /// Whether the source is rewritten to the node.
        masqueraded: bool,
    },
    /// Silently dropped.
    Dropped,
    /// Actively rejected (ICMP unreachable, or TCP reset).
    Rejected,
    /// Not service traffic: passes the proxy's rules untouched.
    NotMatched,
}

impl Outcome {
    /// Whether `actual` satisfies this expected outcome. With
    /// `compare_masquerade` false (a harness whose backend cannot preserve
    /// client IPs, see [`Capabilities::preserves_client_ip`](crate::Capabilities::preserves_client_ip)),
    /// two forwarded outcomes match on their endpoints alone.
    pub fn accepts(&self, actual: &Outcome, compare_masquerade: bool) -> bool {
        self.accepts_forwarded(actual, compare_masquerade, |want, got| want == got)
    }

    /// Whether `actual` satisfies this expected outcome for real
    /// connections from one client to a port with ClientIP affinity: they
    /// all reach one endpoint, so exactly one of the expected endpoints
    /// must answer (masquerade compared as by [`Outcome::accepts`]). Any
    /// other outcome as [`Outcome::accepts`].
    pub fn accepts_sticky(&self, actual: &Outcome, compare_masquerade: bool) -> bool {
        self.accepts_forwarded(actual, compare_masquerade, |want, got| {
            got.len() == 1 && got.is_subset(want)
        })
    }

    /// Two forwarded outcomes match when `endpoints_match(want, got)` and
    /// (if compared) their masquerading agrees; any other pair when equal.
    fn accepts_forwarded(
        &self,
        actual: &Outcome,
        compare_masquerade: bool,
        endpoints_match: impl Fn(&BTreeSet<SocketAddr>, &BTreeSet<SocketAddr>) -> bool,
    ) -> bool {
        match (self, actual) {
            (
                Outcome::Forwarded {
                    endpoints: want,
                    masqueraded: want_masq,
                },
                Outcome::Forwarded {
                    endpoints: got,
                    masqueraded: got_masq,
                },
            ) => endpoints_match(want, got) && (!compare_masquerade || want_masq == got_masq),
            (want, got) => want == got,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Forwarded {
                endpoints,
                masqueraded,
            } => {
                f.write_str("forwarded to {")?;
                for (i, ep) in endpoints.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{ep}")?;
                }
                f.write_str(if *masqueraded {
                    "} masqueraded"
                } else {
                    "} not masqueraded"
                })
            }
            Outcome::Dropped => f.write_str("dropped"),
            Outcome::Rejected => f.write_str("rejected"),
            Outcome::NotMatched => f.write_str("not matched"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    fn forwarded(endpoints: &[&str], masqueraded: bool) -> Outcome {
        Outcome::Forwarded {
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            masqueraded,
        }
    }

    #[test]
    fn a_sticky_outcome_is_exactly_one_expected_endpoint() {
        let want = forwarded(&["10.0.0.1:80", "10.0.0.2:80"], false);
        assert!(want.accepts_sticky(&forwarded(&["10.0.0.2:80"], false), true));
        assert!(!want.accepts(&forwarded(&["10.0.0.2:80"], false), true));
        assert!(!want.accepts_sticky(&want, true), "two endpoints answered");
        assert!(!want.accepts_sticky(&forwarded(&["10.0.0.3:80"], false), true));
        assert!(!want.accepts_sticky(&forwarded(&["10.0.0.1:80"], true), true));
        assert!(want.accepts_sticky(&forwarded(&["10.0.0.1:80"], true), false));
        assert!(Outcome::Rejected.accepts_sticky(&Outcome::Rejected, true));
        assert!(!want.accepts_sticky(&Outcome::Dropped, true));
    }
}
