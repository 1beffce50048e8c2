//! The objects of one service port.
//!
//! Upstream's layout with two changes that keep programming linear and a
//! one-service change cheap at 30k services (measurements in the crate
//! README):
//!
//! - A port reached only through its ClusterIP, without session affinity,
//!   has no chain of its own: `service-ips` sends it to the shared chain
//!   `load-balance-PROTO-N`, which DNATs to entry `numgen random mod N` of
//!   the port's endpoints in the protocol's load-balancing map. Adding the
//!   port or changing its endpoints writes map elements only.
//! - Other ports keep upstream's chains but no anonymous sets and no
//!   per-endpoint chains where they are not needed: load balancing is a
//!   cascade of `numgen random mod (N-i) 0 … dnat to EP_i` rules (the last
//!   one unconditional), which picks every endpoint with probability 1/N.
//!   Services with session affinity keep upstream's per-endpoint chains
//!   (the `update @affinity-…` must follow the choice).
//!
//! In both, hairpin traffic is caught in `masquerading` through the
//! `hairpin-endpoints` set.

use std::net::SocketAddr;

use proxy_core::backend::{BackendContext, LocalTrafficDetector};
use proxy_core::model::rule_comment;
use proxy_core::{Endpoint, Protocol, ServicePortView, Target};

use crate::ir::{ElemKey, ElemValue, Element, KeyType, Rule, SetDef, Stmt, Verdict};
use crate::names::{COMMENT_MAX, PortNames};
use crate::render::skeleton::names::*;

/// Everything one service port puts in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortObjects {
    /// Per-service chains (names contain `/`) and their rules.
    pub chains: Vec<(String, Vec<Rule>)>,
    /// Shared chains this port uses (`load-balance-N`), and their rules.
    pub shared_chains: Vec<(String, Vec<Rule>)>,
    /// Per-endpoint affinity sets.
    pub affinity_sets: Vec<SetDef>,
    /// Elements of the shared sets and maps, sorted and without duplicates.
    pub elements: Vec<Element>,
}

impl PortObjects {
    /// Number of objects (chains, rules, sets, elements; shared chains
    /// are written once for all their users and not counted).
    pub fn object_count(&self) -> usize {
        self.chains.iter().map(|(_, r)| 1 + r.len()).sum::<usize>()
            + self.affinity_sets.len()
            + self.elements.len()
    }

    /// The element `key` of `set` these objects want (of two for one key,
    /// the last in order).
    pub fn element(&self, set: &str, key: &ElemKey) -> Option<&Element> {
        let end = self
            .elements
            .partition_point(|e| (e.set.as_str(), &e.key) <= (set, key));
        self.elements[..end]
            .last()
            .filter(|e| e.set == set && e.key == *key)
    }
}

fn goto(c: &str) -> Stmt {
    Stmt::Verdict(Verdict::Goto(c.to_string()))
}

fn jump(c: &str) -> Stmt {
    Stmt::Verdict(Verdict::Jump(c.to_string()))
}

/// The match for "from a local pod" (`negate`: not from one), or `None`
/// when no detector is configured.
fn detect_local(detector: &LocalTrafficDetector, negate: bool) -> Option<Stmt> {
    match detector {
        LocalTrafficDetector::None => None,
        LocalTrafficDetector::Cidr(net) => Some(Stmt::SaddrInNet { net: *net, negate }),
        LocalTrafficDetector::BridgeInterface(name) => Some(Stmt::Iifname {
            name: name.clone(),
            negate,
        }),
        LocalTrafficDetector::InterfaceNamePrefix(prefix) => Some(Stmt::Iifname {
            name: format!("{prefix}*"),
            negate,
        }),
    }
}

struct Builder<'a> {
    ctx: &'a BackendContext,
    view: &'a ServicePortView,
    names: PortNames,
    comment: String,
    out: PortObjects,
}

/// Renders the objects of `view`.
pub fn render_port(ctx: &BackendContext, view: &ServicePortView) -> PortObjects {
    let mut b = Builder {
        ctx,
        view,
        names: PortNames::new(&view.port.name),
        comment: rule_comment(&view.port.name.to_string(), COMMENT_MAX).into_owned(),
        out: PortObjects::default(),
    };
    b.build();
    let mut out = b.out;
    out.elements.sort_unstable();
    out.elements.dedup();
    out
}

impl Builder<'_> {
    fn element(&mut self, set: &str, key: ElemKey, value: Option<Verdict>, comment: bool) {
        let comment = comment.then(|| self.comment.clone());
        self.out.elements.push(Element {
            set: set.to_string(),
            key,
            value: value.map(ElemValue::Verdict),
            comment,
        });
    }

    /// The verdict of the no-endpoint maps for `target`, if it needs one.
    fn filter_verdict(target: Target) -> Option<Verdict> {
        match target {
            Target::Reject => Some(Verdict::Goto(REJECT_CHAIN.to_string())),
            Target::Drop => Some(Verdict::Drop),
            Target::Cluster | Target::Local => None,
        }
    }

    fn build(&mut self) {
        let port = self.view.port.clone();
        let proto = port.protocol;
        let has_any = self.view.internal != Target::Reject;
        let uses_cluster = !self.view.cluster.is_empty() && port.uses_cluster_endpoints();
        let uses_local = !self.view.local.is_empty() && port.uses_local_endpoints();
        let internal_chain = match self.view.internal {
            Target::Local => Some(self.names.local.clone()),
            Target::Cluster => Some(self.names.cluster.clone()),
            Target::Drop | Target::Reject => None,
        };
        let uses_external = has_any && port.externally_accessible();
        let external_chain = self.names.external.clone();
        // Only ClusterIP traffic enters the internal policy chain and no
        // affinity is kept: the shared `load-balance-N` chain and the
        // load-balancing map replace the per-service chain.
        let shared_eps = match self.view.internal {
            Target::Cluster => self.view.cluster.clone(),
            Target::Local => self.view.local.clone(),
            Target::Drop | Target::Reject => Vec::new(),
        };
        let shared_lb = !uses_external && port.session_affinity.is_none() && !shared_eps.is_empty();
        let internal_chain = if shared_lb {
            Some(self.load_balance(&shared_eps))
        } else {
            internal_chain
        };

        // ClusterIP.
        self.element(CLUSTER_IPS, ElemKey::Addr(port.cluster_ip), None, false);
        let cip_key = ElemKey::AddrProtoPort(port.cluster_ip, proto, port.port);
        match (&internal_chain, Self::filter_verdict(self.view.internal)) {
            (Some(chain), _) => self.element(
                SERVICE_IPS,
                cip_key,
                Some(Verdict::Goto(chain.clone())),
                false,
            ),
            (None, Some(v)) => self.element(NO_ENDPOINT_SERVICES, cip_key, Some(v), true),
            (None, None) => {}
        }

        // External IPs, then load-balancer IPs.
        let ext_filter = Self::filter_verdict(self.view.external);
        for ip in port
            .external_ips
            .iter()
            .chain(port.load_balancer_ips.iter())
        {
            let key = ElemKey::AddrProtoPort(*ip, proto, port.port);
            if has_any {
                self.element(
                    SERVICE_IPS,
                    key.clone(),
                    Some(Verdict::Goto(external_chain.clone())),
                    false,
                );
            }
            if let Some(v) = &ext_filter {
                self.element(NO_ENDPOINT_SERVICES, key, Some(v.clone()), true);
            }
        }

        // loadBalancerSourceRanges.
        if !port.load_balancer_ips.is_empty() && !port.load_balancer_source_ranges.is_empty() {
            let fw = self.names.firewall.clone();
            let node_ip = self.ctx.node.primary_ip(self.ctx.family);
            let allow_node = node_ip.is_some_and(|ip| {
                port.load_balancer_source_ranges
                    .iter()
                    .any(|r| r.contains(&ip))
            });
            let mut rules: Vec<Rule> = port
                .load_balancer_source_ranges
                .iter()
                .map(|net| {
                    Rule::new(vec![
                        Stmt::SaddrInNet {
                            net: *net,
                            negate: false,
                        },
                        Stmt::Verdict(Verdict::Return),
                    ])
                })
                .collect();
            if allow_node {
                for lb in &port.load_balancer_ips {
                    rules.push(Rule::new(vec![
                        Stmt::SaddrIs(*lb),
                        Stmt::Verdict(Verdict::Return),
                    ]));
                }
            }
            rules.push(Rule::new(vec![Stmt::Verdict(Verdict::Drop)]));
            self.out.chains.push((fw.clone(), rules));
            for lb in port.load_balancer_ips.clone() {
                self.element(
                    FIREWALL_IPS,
                    ElemKey::AddrProtoPort(lb, proto, port.port),
                    Some(Verdict::Goto(fw.clone())),
                    true,
                );
            }
        }

        // Node port.
        if let Some(np) = port.node_port {
            let key = ElemKey::ProtoPort(proto, np);
            if has_any {
                self.element(
                    SERVICE_NODEPORTS,
                    key.clone(),
                    Some(Verdict::Goto(external_chain.clone())),
                    false,
                );
            }
            if let Some(v) = &ext_filter {
                self.element(NO_ENDPOINT_NODEPORTS, key, Some(v.clone()), true);
            }
        }

        // Policy chains.
        let cluster_shared = shared_lb && self.view.internal == Target::Cluster;
        let local_shared = shared_lb && self.view.internal == Target::Local;
        if uses_cluster && !cluster_shared {
            let chain = self.names.cluster.clone();
            let eps = self.view.cluster.clone();
            self.policy_chain(
                &chain,
                &eps,
                internal_chain.as_deref() == Some(chain.as_str()),
            );
        }
        if uses_local && !local_shared {
            let chain = self.names.local.clone();
            let eps = self.view.local.clone();
            self.policy_chain(
                &chain,
                &eps,
                internal_chain.as_deref() == Some(chain.as_str()),
            );
        }

        // External chain.
        if uses_external {
            let mut rules = Vec::new();
            if !port.external_policy_local() {
                rules.push(Rule::new(vec![jump(MARK_MASQ)]));
            } else if uses_cluster {
                let cluster = self.names.cluster.clone();
                if let Some(m) = detect_local(&self.ctx.local_detector, false) {
                    rules.push(
                        Rule::new(vec![m, goto(&cluster)]).comment("short-circuit pod traffic"),
                    );
                }
                rules.push(
                    Rule::new(vec![Stmt::FibSaddrLocal, jump(MARK_MASQ)])
                        .comment("masquerade local traffic"),
                );
                rules.push(
                    Rule::new(vec![Stmt::FibSaddrLocal, goto(&cluster)])
                        .comment("short-circuit local traffic"),
                );
            }
            let policy_chain = match self.view.external {
                Target::Cluster if uses_cluster => Some(self.names.cluster.clone()),
                Target::Local if uses_local => Some(self.names.local.clone()),
                _ => None,
            };
            if let Some(c) = policy_chain {
                rules.push(Rule::new(vec![goto(&c)]));
            }
            self.out.chains.push((external_chain, rules));
        }
    }

    /// ClusterIP-only load balancing over `eps`: the endpoints go into the
    /// load-balancing map at indices `0..N`, and the shared chain
    /// `load-balance-PROTO-N` (masquerade check, then `dnat` to map entry
    /// `numgen random mod N`) is used; returns its name. Every endpoint is
    /// chosen with probability 1/N, as by upstream's `numgen … vmap`.
    fn load_balance(&mut self, eps: &[Endpoint]) -> String {
        let port = self.view.port.clone();
        let n = u32::try_from(eps.len()).unwrap_or(u32::MAX);
        let chain = load_balance_chain(port.protocol, n);
        let map = load_balance_map(port.protocol);
        let mut rules = Vec::new();
        if self.ctx.masquerade_all {
            rules.push(Rule::new(vec![jump(MARK_MASQ)]));
        } else if let Some(m) = detect_local(&self.ctx.local_detector, true) {
            rules.push(Rule::new(vec![m, jump(MARK_MASQ)]));
        }
        rules.push(Rule::new(vec![Stmt::DnatLoadBalance {
            proto: port.protocol,
            map: map.clone(),
            modulus: n,
        }]));
        self.out.shared_chains.push((chain.clone(), rules));
        for (i, ep) in eps.iter().enumerate() {
            let addr = ep.socket_addr();
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            self.out.elements.push(Element {
                set: map.clone(),
                key: ElemKey::LoadBalance(port.cluster_ip, port.port, index),
                value: Some(ElemValue::Endpoint(addr)),
                comment: None,
            });
            self.element(
                HAIRPIN,
                ElemKey::AddrPair(addr.ip(), addr.ip()),
                None,
                false,
            );
        }
        chain
    }

    /// A `service-`/`local-` chain load-balancing over `eps`; `internal`
    /// says whether ClusterIP traffic enters it (it then carries the
    /// ClusterIP masquerade rule).
    fn policy_chain(&mut self, chain: &str, eps: &[Endpoint], internal: bool) {
        let port = self.view.port.clone();
        let proto = port.protocol;
        let mut rules = Vec::new();
        if internal {
            let head = vec![
                Stmt::DaddrIs(port.cluster_ip),
                Stmt::Dport(proto, port.port),
            ];
            if self.ctx.masquerade_all {
                rules.push(Rule::new([head, vec![jump(MARK_MASQ)]].concat()));
            } else if let Some(m) = detect_local(&self.ctx.local_detector, true) {
                rules.push(Rule::new([head, vec![m, jump(MARK_MASQ)]].concat()));
            }
        }
        let affinity = port.session_affinity;
        let n = u32::try_from(eps.len()).unwrap_or(u32::MAX);
        if let Some(aff) = affinity {
            for ep in eps {
                let addr = ep.socket_addr();
                rules.push(Rule::new(vec![
                    Stmt::SaddrInSet(self.names.affinity(addr)),
                    goto(&self.names.endpoint(addr)),
                ]));
                self.endpoint_chain(addr, proto, aff.timeout_seconds);
            }
        }
        for (i, ep) in eps.iter().enumerate() {
            let addr = ep.socket_addr();
            let remaining = n - u32::try_from(i).unwrap_or(0);
            let mut stmts = Vec::new();
            if remaining > 1 {
                stmts.push(Stmt::Numgen {
                    modulus: remaining,
                    value: 0,
                });
            }
            if affinity.is_some() {
                stmts.push(goto(&self.names.endpoint(addr)));
            } else {
                stmts.push(Stmt::L4proto(proto));
                stmts.push(Stmt::Dnat(addr));
                self.element(
                    HAIRPIN,
                    ElemKey::AddrPair(addr.ip(), addr.ip()),
                    None,
                    false,
                );
            }
            rules.push(Rule::new(stmts));
        }
        self.out.chains.push((chain.to_string(), rules));
    }

    /// Upstream's per-endpoint chain, for session affinity (once per endpoint).
    fn endpoint_chain(&mut self, addr: SocketAddr, proto: Protocol, timeout: u32) {
        let name = self.names.endpoint(addr);
        if self.out.chains.iter().any(|(c, _)| *c == name) {
            return;
        }
        let set = self.names.affinity(addr);
        self.out.affinity_sets.push(SetDef {
            name: set.clone(),
            key: KeyType::Addr,
            verdict_map: false,
            timeout: Some(timeout),
            comment: None,
        });
        let rules = vec![
            Rule::new(vec![Stmt::SaddrIs(addr.ip()), jump(MARK_MASQ)]),
            Rule::new(vec![Stmt::UpdateSaddr(set)]),
            Rule::new(vec![Stmt::L4proto(proto), Stmt::Dnat(addr)]),
        ];
        self.out.chains.push((name, rules));
    }
}
