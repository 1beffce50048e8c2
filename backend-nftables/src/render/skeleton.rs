//! The table's fixed objects: sets, verdict maps, base chains and the
//! top-level regular chains, as in upstream's golden `baseRules`.

use proxy_core::Protocol;
use proxy_core::backend::BackendContext;

use super::nodeport_ips::NodePortMatch;
use crate::ir::{
    BaseChain, ChainDef, ChainType, Element, Hook, KeyType, Rule, SetDef, Stmt, Verdict, VmapKey,
};

/// Names of the fixed objects.
pub mod names {
    /// Set of active ClusterIPs.
    pub const CLUSTER_IPS: &str = "cluster-ips";
    /// Interval set of the `nodePortAddresses` networks: a local address
    /// inside one accepts node ports (absent when all addresses do).
    pub const NODEPORT_IPS: &str = "nodeport-ips";
    /// `ip . ip` pairs of endpoint IPs: a DNATed packet whose source and
    /// destination form a pair reached itself through a service (hairpin).
    pub const HAIRPIN: &str = "hairpin-endpoints";
    /// Verdict map: ClusterIPs, external IPs and LB IPs.
    pub const SERVICE_IPS: &str = "service-ips";
    /// Verdict map: node ports.
    pub const SERVICE_NODEPORTS: &str = "service-nodeports";
    /// Verdict map: destinations without endpoints (drop / reject).
    pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
    /// Verdict map: node ports without endpoints.
    pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
    /// Verdict map: destinations subject to `loadBalancerSourceRanges`.
    pub const FIREWALL_IPS: &str = "firewall-ips";
    /// Chain rejecting a packet.
    pub const REJECT_CHAIN: &str = "reject-chain";
    /// Chain setting the masquerade mark.
    pub const MARK_MASQ: &str = "mark-for-masquerade";
    /// Chain masquerading marked packets.
    pub const MASQUERADING: &str = "masquerading";
    /// Service dispatch chain.
    pub const SERVICES: &str = "services";
    /// Prefix of the load-balancing maps (`load-balance-tcp-endpoints`:
    /// `ClusterIP . port . index : endpoint IP . port`) and of the shared
    /// chains reading them (`load-balance-tcp-N`, N endpoints).
    pub const LOAD_BALANCE_PREFIX: &str = "load-balance-";

    use proxy_core::Protocol;

    /// The load-balancing map of `proto`.
    pub fn load_balance_map(proto: Protocol) -> String {
        format!("{LOAD_BALANCE_PREFIX}{}-endpoints", proto.lower())
    }

    /// The shared chain load-balancing `proto` over `n` endpoints.
    pub fn load_balance_chain(proto: Protocol, n: u32) -> String {
        format!("{LOAD_BALANCE_PREFIX}{}-{n}", proto.lower())
    }
}

use names::*;

/// The fixed part of the table for one family and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// Sets and maps.
    pub sets: Vec<SetDef>,
    /// Chains, base chains first.
    pub chains: Vec<(ChainDef, Vec<Rule>)>,
    /// Elements of fixed sets (the networks of `nodeport-ips`).
    pub elements: Vec<Element>,
}

fn set(name: &str, key: KeyType, verdict_map: bool, comment: &str) -> SetDef {
    SetDef {
        name: name.into(),
        key,
        verdict_map,
        timeout: None,
        comment: Some(comment.into()),
    }
}

fn base(name: &str, kind: ChainType, hook: Hook, priority: i32) -> ChainDef {
    ChainDef {
        name: name.into(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
        }),
    }
}

fn jump(c: &str) -> Stmt {
    Stmt::Verdict(Verdict::Jump(c.into()))
}

fn new_jump(c: &str) -> Rule {
    Rule::new(vec![Stmt::CtStateNew, jump(c)])
}

impl Skeleton {
    /// The skeleton for `ctx`.
    pub fn new(ctx: &BackendContext) -> Self {
        let mark = ctx.masquerade_mark;
        let mut sets = vec![
            set(CLUSTER_IPS, KeyType::Addr, false, "Active ClusterIPs"),
            set(
                HAIRPIN,
                KeyType::AddrPair,
                false,
                "Endpoint IPs that masquerade when they reach themselves",
            ),
            set(
                FIREWALL_IPS,
                KeyType::AddrProtoPort,
                true,
                "destinations that are subject to LoadBalancerSourceRanges",
            ),
            set(
                NO_ENDPOINT_NODEPORTS,
                KeyType::ProtoPort,
                true,
                "vmap to drop or reject packets to service nodeports with no endpoints",
            ),
            set(
                NO_ENDPOINT_SERVICES,
                KeyType::AddrProtoPort,
                true,
                "vmap to drop or reject packets to services with no endpoints",
            ),
            set(
                SERVICE_IPS,
                KeyType::AddrProtoPort,
                true,
                "ClusterIP, ExternalIP and LoadBalancer IP traffic",
            ),
            set(
                SERVICE_NODEPORTS,
                KeyType::ProtoPort,
                true,
                "NodePort traffic",
            ),
        ];
        for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            sets.push(set(
                &load_balance_map(proto),
                KeyType::LoadBalance(proto),
                false,
                "ClusterIP . port . index : endpoint, read by the load-balance chains",
            ));
        }
        // Where node ports are accepted: local addresses, all of them or
        // those inside `nodePortAddresses` (`primary` by default).
        let NodePortMatch {
            set: nodeport_set,
            stmts: nodeport_match,
        } = NodePortMatch::new(ctx);
        let elements = match nodeport_set {
            Some((def, elements)) => {
                sets.push(def);
                elements
            }
            None => Vec::new(),
        };
        let vmap = |key, map: &str| Stmt::Vmap {
            key,
            map: map.into(),
        };
        let with = |mut pre: Vec<Stmt>, last: Stmt| {
            pre.push(last);
            Rule::new(pre)
        };
        let chains = vec![
            (
                base(
                    "filter-prerouting-pre-dnat",
                    ChainType::Filter,
                    Hook::Prerouting,
                    -110,
                ),
                vec![new_jump("firewall-check")],
            ),
            (
                base(
                    "filter-output-pre-dnat",
                    ChainType::Filter,
                    Hook::Output,
                    -110,
                ),
                vec![new_jump("firewall-check")],
            ),
            (
                base("filter-forward", ChainType::Filter, Hook::Forward, 0),
                vec![
                    new_jump("service-endpoints-check"),
                    new_jump("cluster-ips-check"),
                ],
            ),
            (
                base("filter-input", ChainType::Filter, Hook::Input, 0),
                vec![
                    new_jump("nodeport-endpoints-check"),
                    new_jump("service-endpoints-check"),
                ],
            ),
            (
                base("filter-output", ChainType::Filter, Hook::Output, 0),
                vec![
                    new_jump("service-endpoints-check"),
                    new_jump("cluster-ips-check"),
                ],
            ),
            (
                base("nat-output", ChainType::Nat, Hook::Output, -100),
                vec![Rule::new(vec![jump(SERVICES)])],
            ),
            (
                base("nat-postrouting", ChainType::Nat, Hook::Postrouting, 100),
                vec![Rule::new(vec![jump(MASQUERADING)])],
            ),
            (
                base("nat-prerouting", ChainType::Nat, Hook::Prerouting, -100),
                vec![Rule::new(vec![jump(SERVICES)])],
            ),
            (
                ChainDef::regular("cluster-ips-check"),
                vec![
                    Rule::new(vec![Stmt::DaddrInSet(CLUSTER_IPS.into()), Stmt::Reject])
                        .comment("Reject traffic to invalid ports of ClusterIPs"),
                ],
            ),
            (
                ChainDef::regular("firewall-check"),
                vec![Rule::new(vec![vmap(VmapKey::DaddrProtoPort, FIREWALL_IPS)])],
            ),
            (
                ChainDef::regular(MARK_MASQ),
                vec![Rule::new(vec![Stmt::MarkOr(mark)])],
            ),
            (
                ChainDef::regular(MASQUERADING),
                vec![
                    Rule::new(vec![
                        Stmt::CtStatusDnat,
                        Stmt::SaddrDaddrInSet(HAIRPIN.into()),
                        jump(MARK_MASQ),
                    ])
                    .comment("hairpin: an endpoint reached itself"),
                    Rule::new(vec![Stmt::MarkUnset(mark), Stmt::Verdict(Verdict::Return)]),
                    Rule::new(vec![Stmt::MarkXor(mark)]),
                    Rule::new(vec![Stmt::Masquerade]),
                ],
            ),
            (
                ChainDef::regular("nodeport-endpoints-check"),
                vec![with(
                    nodeport_match.clone(),
                    vmap(VmapKey::ProtoPort, NO_ENDPOINT_NODEPORTS),
                )],
            ),
            (
                ChainDef::regular(REJECT_CHAIN),
                vec![Rule::new(vec![Stmt::Reject])],
            ),
            (
                ChainDef::regular(SERVICES),
                vec![
                    Rule::new(vec![vmap(VmapKey::DaddrProtoPort, SERVICE_IPS)]),
                    with(nodeport_match, vmap(VmapKey::ProtoPort, SERVICE_NODEPORTS)),
                ],
            ),
            (
                ChainDef::regular("service-endpoints-check"),
                vec![Rule::new(vec![vmap(
                    VmapKey::DaddrProtoPort,
                    NO_ENDPOINT_SERVICES,
                )])],
            ),
        ];
        Skeleton {
            sets,
            chains,
            elements,
        }
    }
}
