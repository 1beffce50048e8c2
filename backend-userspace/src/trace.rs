//! The tracer: where a new connection would go, given the listener table
//! ([`ListenerTable`]: the listeners, the redirect rules' VIPs and the
//! balancers' current targets), step by step.
//!
//! [`UserspaceBackend::trace`] walks the backend's own table; `kube-proxy
//! trace` walks a table read from the metrics server (or a saved copy),
//! with the redirect rules as the kernel holds them
//! ([`KernelRedirects`]) when it can read them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

pub use proxy_core::trace::{Choice, Hop};
use proxy_core::{IpFamily, Protocol};

use crate::backend::UserspaceBackend;
use crate::plan::unspecified;
use crate::redirect::Vip;
use crate::redirect::table::{REDIRECTS, REJECTS, TABLE};
use crate::table::{Class, ListenerTable, TableBalancer, TableTarget};

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

/// The conformance suite's outcome of a verdict: a forwarded connection is
/// always masqueraded (the proxy opens its own connection, from a node
/// address).
#[cfg(feature = "trace")]
impl From<Verdict> for proxy_core::conformance::Outcome {
    fn from(verdict: Verdict) -> Self {
        use proxy_core::conformance::Outcome;
        match verdict {
            Verdict::NotMatched => Outcome::NotMatched,
            Verdict::Rejected => Outcome::Rejected,
            Verdict::Dropped => Outcome::Dropped,
            Verdict::Forwarded(endpoints) => Outcome::Forwarded {
                endpoints,
                masqueraded: true,
            },
        }
    }
}

/// The redirect table's elements as the kernel holds them (`nft -j list
/// table ip kube-proxy-userspace`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelRedirects {
    /// `redirects`: VIP → listener port.
    pub redirects: BTreeMap<Vip, u16>,
    /// `rejects`: VIPs rejected.
    pub rejects: BTreeSet<Vip>,
}

/// A traced connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// The steps, in order.
    pub hops: Vec<Hop>,
    /// Where the balancer may send it.
    pub choices: Vec<Choice>,
    /// The verdict.
    pub verdict: Verdict,
}

/// A step in `table`: the nft table `kube-proxy-userspace`, `listeners`
/// or `balancer` (one deeper: a listener hands the connection to it).
fn hop(table: &str, chain: impl Into<String>, rule: Option<String>, notes: Vec<String>) -> Hop {
    Hop {
        depth: usize::from(table == "balancer"),
        table: table.to_string(),
        chain: chain.into(),
        rule,
        notes,
    }
}

fn key_text(vip: &Vip) -> String {
    format!("{} . {} . {}", vip.ip, vip.protocol.lower(), vip.port)
}

impl ListenerTable {
    fn family_of(&self) -> IpFamily {
        if self.family == IpFamily::V6.as_str() {
            IpFamily::V6
        } else {
            IpFamily::V4
        }
    }

    /// The redirect elements the table says it wrote: each VIP redirected
    /// to its listener's port, or rejected; none for a VIP whose listener
    /// is not open.
    pub fn recorded_redirects(&self) -> KernelRedirects {
        let mut out = KernelRedirects::default();
        for r in &self.redirects {
            let vip = Vip {
                ip: r.ip,
                protocol: r.protocol,
                port: r.port,
            };
            if r.reject {
                out.rejects.insert(vip);
            } else if let Some(listener) = self
                .redirect_listeners
                .iter()
                .find(|l| l.service_port == r.service_port && l.class == r.class)
            {
                // A dry run binds nothing: port 0 stands for "its listener".
                out.redirects.insert(vip, listener.port.unwrap_or(0));
            }
        }
        out
    }

    /// Traces a connection to `destination` over `protocol`; `from_host`
    /// says whether the client is the node itself; `host` are the node's
    /// addresses (empty: the table's own). `kernel` gives the redirect
    /// rules' elements as the kernel holds them; `None` takes the table's
    /// record of them.
    ///
    /// With redirect rules on, a connection to a VIP is decided by the rules
    /// first (they run at prerouting and output, before any local socket
    /// is looked up): rejected, or sent to the redirect listener of its
    /// service port and traffic class.
    pub fn trace(
        &self,
        protocol: Protocol,
        destination: SocketAddr,
        from_host: bool,
        host: &[IpAddr],
        kernel: Option<&KernelRedirects>,
    ) -> Path {
        let mut hops = Vec::new();
        let path = |hops: Vec<Hop>, choices: Vec<Choice>, verdict: Verdict| Path {
            hops,
            choices,
            verdict,
        };
        if self.redirecting {
            let recorded;
            let elements = match kernel {
                Some(k) => k,
                None => {
                    recorded = self.recorded_redirects();
                    &recorded
                }
            };
            let vip = Vip {
                ip: destination.ip(),
                protocol,
                port: destination.port(),
            };
            let word = match self.family_of() {
                IpFamily::V4 => "ip",
                IpFamily::V6 => "ip6",
            };
            let nat = if from_host {
                "nat-output"
            } else {
                "nat-prerouting"
            };
            hops.push(hop(TABLE, nat, None, Vec::new()));
            if let Some(&port) = elements.redirects.get(&vip) {
                let rule = format!(
                    "meta l4proto {{ tcp, udp }} redirect to :{word} daddr . meta l4proto . th dport map @{REDIRECTS} ({} : {port})",
                    key_text(&vip)
                );
                let listener = match kernel {
                    // The kernel's port names the listener.
                    Some(_) => self
                        .redirect_listeners
                        .iter()
                        .find(|l| l.protocol == protocol && l.port == Some(port)),
                    // The table's own record (a dry run binds nothing).
                    None => self
                        .redirects
                        .iter()
                        .find(|r| r.ip == vip.ip && r.protocol == protocol && r.port == vip.port)
                        .and_then(|r| {
                            self.redirect_listeners
                                .iter()
                                .find(|l| l.service_port == r.service_port && l.class == r.class)
                        }),
                };
                let Some(listener) = listener else {
                    hops.push(hop(
                        TABLE,
                        nat,
                        Some(rule),
                        vec![format!(
                            "redirected to port {port}, where no listener of the proxy is open: refused"
                        )],
                    ));
                    return path(hops, Vec::new(), Verdict::Rejected);
                };
                hops.push(hop(
                    TABLE,
                    nat,
                    Some(rule),
                    vec![format!(
                        "redirected to the listener of {} ({})",
                        listener.service_port,
                        listener.class.as_str()
                    )],
                ));
                let name = format!(
                    "{} {}",
                    protocol.lower(),
                    SocketAddr::new(unspecified(self.family_of()), port)
                );
                let rule = format!(
                    "redirect listener {} {} {}",
                    listener.service_port,
                    listener.class.as_str(),
                    listener.state
                );
                return self.through_listener(
                    hops,
                    name,
                    rule,
                    &listener.service_port,
                    listener.class,
                    from_host,
                );
            }
            if elements.rejects.contains(&vip) {
                let filter = if from_host {
                    "filter-output"
                } else {
                    "filter-input"
                };
                hops.push(hop(TABLE, filter, None, Vec::new()));
                hops.push(hop(
                    TABLE,
                    filter,
                    Some(format!(
                        "{word} daddr . meta l4proto . th dport @{REJECTS} reject ({})",
                        key_text(&vip)
                    )),
                    vec!["rejected: the service has no endpoints".to_string()],
                ));
                return path(hops, Vec::new(), Verdict::Rejected);
            }
        }
        let local_ips: Vec<IpAddr> = if host.is_empty() {
            self.host_addresses.clone()
        } else {
            host.to_vec()
        };
        let local = destination.ip().is_loopback() || local_ips.contains(&destination.ip());
        let wildcard = SocketAddr::new(unspecified(self.family_of()), destination.port());
        let listening_on = |address: SocketAddr| {
            self.listeners
                .iter()
                .find(|l| l.protocol == protocol && l.address == address)
        };
        let listener =
            listening_on(destination).or_else(|| local.then(|| listening_on(wildcard)).flatten());
        let Some(listener) = listener else {
            return path(hops, Vec::new(), Verdict::NotMatched);
        };
        let name = format!("{} {}", protocol.lower(), listener.address);
        if listener.state == "refusing" {
            hops.push(hop(
                "listeners",
                name,
                Some(format!(
                    "listener {} {} refusing",
                    listener.service_port,
                    listener.class.as_str()
                )),
                vec![
                    "nothing bound (the service has no endpoints): the kernel answers port unreachable"
                        .to_string(),
                ],
            ));
            return path(hops, Vec::new(), Verdict::Rejected);
        }
        let rule = format!(
            "listener {} {} {}",
            listener.service_port,
            listener.class.as_str(),
            listener.state
        );
        self.through_listener(
            hops,
            name,
            rule,
            &listener.service_port,
            listener.class,
            from_host,
        )
    }

    /// A connection accepted by listener `name` (`rule`: its line) of
    /// `service_port`'s `class`: that hop, then what the balancer does.
    fn through_listener(
        &self,
        mut hops: Vec<Hop>,
        name: String,
        rule: String,
        service_port: &str,
        class: Class,
        from_host: bool,
    ) -> Path {
        hops.push(hop("listeners", name, Some(rule), Vec::new()));
        let (more, choices, verdict) = self.decide(service_port, class, from_host);
        hops.extend(more);
        Path {
            hops,
            choices,
            verdict,
        }
    }

    /// What the balancer of `service_port` does with a new connection of
    /// `class`: its hops, choices and verdict.
    fn decide(
        &self,
        service_port: &str,
        class: Class,
        from_host: bool,
    ) -> (Vec<Hop>, Vec<Choice>, Verdict) {
        let Some(balancer) = self.balancer(service_port) else {
            return (
                vec![hop(
                    "balancer",
                    service_port,
                    None,
                    vec!["no balancer: the service port is gone".to_string()],
                )],
                Vec::new(),
                Verdict::NotMatched,
            );
        };
        let target = target_for(balancer, class, from_host);
        let mut notes = vec![format!(
            "{} traffic goes to the {} target",
            class.as_str(),
            match target {
                TableTarget::Cluster => "cluster endpoints",
                TableTarget::Local => "node-local endpoints",
                TableTarget::Drop => "drop (policy Local, no local endpoint)",
                TableTarget::Reject => "reject (no endpoint)",
            }
        )];
        if from_host && class == Class::External && target != balancer.target(class) {
            notes.push(
                "the node itself is the client: cluster endpoints even under externalTrafficPolicy Local"
                    .to_string(),
            );
        }
        let endpoints = balancer.endpoints(target);
        let verdict = match target {
            TableTarget::Reject => Verdict::Rejected,
            TableTarget::Drop => Verdict::Dropped,
            _ if endpoints.is_empty() => Verdict::Rejected,
            _ => Verdict::Forwarded(endpoints.iter().copied().collect()),
        };
        match verdict {
            Verdict::Rejected => notes.push("the connection is reset".to_string()),
            Verdict::Dropped => notes.push("the connection is held unanswered".to_string()),
            Verdict::Forwarded(_) => {
                notes.push("round robin; the proxy connects from a node address".to_string());
            }
            Verdict::NotMatched => {}
        }
        let mut choices = Vec::new();
        if matches!(verdict, Verdict::Forwarded(_)) {
            if let Some(seconds) = balancer.affinity_seconds {
                notes.push(format!(
                    "ClientIP affinity ({seconds}s): a returning client goes back to its endpoint"
                ));
                choices.extend(endpoints.iter().map(|e| Choice {
                    endpoint: *e,
                    probability: 1.0,
                    affinity: true,
                }));
            }
            let share = 1.0 / endpoints.len() as f64;
            choices.extend(endpoints.iter().map(|e| Choice {
                endpoint: *e,
                probability: share,
                affinity: false,
            }));
        }
        let h = hop(
            "balancer",
            service_port,
            Some(format!(
                "internal={} external={} cluster={} local={}",
                target_word(balancer.internal),
                target_word(balancer.external),
                balancer.cluster.len(),
                balancer.local.len()
            )),
            notes,
        );
        (vec![h], choices, verdict)
    }
}

fn target_word(target: TableTarget) -> &'static str {
    match target {
        TableTarget::Cluster => "cluster",
        TableTarget::Local => "local",
        TableTarget::Drop => "drop",
        TableTarget::Reject => "reject",
    }
}

/// The target of `class` for a client; `from_host`: the node itself, which
/// upstream sends to the cluster endpoints even under
/// `externalTrafficPolicy: Local` (as the balancer decides).
fn target_for(balancer: &TableBalancer, class: Class, from_host: bool) -> TableTarget {
    match balancer.target(class) {
        TableTarget::Local | TableTarget::Drop if class == Class::External && from_host => {
            TableTarget::Cluster
        }
        target => target,
    }
}

impl UserspaceBackend {
    /// Traces a connection to `destination` over `protocol`; `from_host`
    /// says whether the client is the node itself. Walks
    /// [`UserspaceBackend::table`].
    pub fn trace(&self, protocol: Protocol, destination: SocketAddr, from_host: bool) -> Verdict {
        self.table()
            .trace(protocol, destination, from_host, &[], None)
            .verdict
    }
}
