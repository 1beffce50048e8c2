//! The fixed rules of the top-level chains.

use super::{Lines, NodePortDestinations, RenderConfig, line};
use crate::names::{
    KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_SERVICES,
};

/// `KUBE-POSTROUTING` and `KUBE-MARK-MASQ`.
pub(super) fn masquerade_rules(cfg: &RenderConfig, nat: &mut Lines) {
    let mark = &cfg.mark;
    line!(
        nat,
        "-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN"
    );
    // Clear the mark so a packet that re-traverses the stack is not masqueraded twice.
    line!(nat, "-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}");
    line!(
        nat,
        "-A {KUBE_POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}",
        if cfg.random_fully {
            " --random-fully"
        } else {
            ""
        }
    );
    line!(nat, "-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}");
}

/// The last rule(s) of nat `KUBE-SERVICES`: jump to `KUBE-NODEPORTS`.
pub(super) fn node_port_jump(cfg: &RenderConfig, nat: &mut Lines) {
    const COMMENT: &str =
        "\"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
    match &cfg.node_ports {
        NodePortDestinations::AllLocal { exclude } => match exclude {
            Some(net) => line!(
                nat,
                "-A {KUBE_SERVICES} -m comment --comment {COMMENT} -m addrtype --dst-type LOCAL ! -d {net} -j {KUBE_NODEPORTS}"
            ),
            None => line!(
                nat,
                "-A {KUBE_SERVICES} -m comment --comment {COMMENT} -m addrtype --dst-type LOCAL -j {KUBE_NODEPORTS}"
            ),
        },
        NodePortDestinations::Networks(nets) => {
            for net in nets {
                if net.prefix_len() == net.max_prefix_len() {
                    line!(
                        nat,
                        "-A {KUBE_SERVICES} -m comment --comment {COMMENT} -d {} -j {KUBE_NODEPORTS}",
                        net.addr()
                    );
                } else {
                    line!(
                        nat,
                        "-A {KUBE_SERVICES} -m comment --comment {COMMENT} -d {net} -m addrtype --dst-type LOCAL -j {KUBE_NODEPORTS}"
                    );
                }
            }
        }
    }
}

/// `KUBE-FIREWALL` (localhost node ports) and `KUBE-FORWARD`.
pub(super) fn filter_rules(cfg: &RenderConfig, filter: &mut Lines) {
    if cfg.localhost_node_ports {
        // CVE-2020-8558: route_localnet=1 would let other hosts reach
        // 127.0.0.0/8 services; kubelet keeps an identical rule.
        line!(
            filter,
            "-A {KUBE_FIREWALL} -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        );
    }
    if cfg.drop_invalid {
        line!(
            filter,
            "-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP"
        );
    }
    let mark = &cfg.mark;
    line!(
        filter,
        "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    );
    line!(
        filter,
        "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
}
