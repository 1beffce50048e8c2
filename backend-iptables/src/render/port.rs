//! The rules of one service port (upstream's per-service loop body).

use proxy_core::model::rule_comment;
use proxy_core::{Endpoint, ServicePortName, ServicePortView, Target};

use super::{Lines, PortRules, RenderConfig, line};
use crate::names::{
    KUBE_EXTERNAL_SERVICES, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
    NAME_IN_COMMENT_MAX, PortChains,
};

/// Upstream's cached `%0.10f` probabilities `1/n`.
#[derive(Debug, Default)]
struct Probabilities(Vec<String>);

impl Probabilities {
    fn get(&mut self, n: usize) -> &str {
        while self.0.len() <= n {
            let k = self.0.len();
            self.0.push(format!("{:.10}", 1.0 / k as f64));
        }
        &self.0[n]
    }
}

struct PortCtx<'a> {
    cfg: &'a RenderConfig,
    large_cluster: bool,
    name: &'a ServicePortName,
    view: &'a ServicePortView,
}

/// Renders ports one after the other, sharing the probability cache.
pub(super) struct PortRenderer<'a> {
    cfg: &'a RenderConfig,
    large_cluster: bool,
    probabilities: Probabilities,
}

impl<'a> PortRenderer<'a> {
    pub(super) fn new(cfg: &'a RenderConfig, large_cluster: bool) -> Self {
        PortRenderer {
            cfg,
            large_cluster,
            probabilities: Probabilities::default(),
        }
    }

    /// [`render_port`] of the port `name`.
    pub(super) fn render(
        &mut self,
        name: &ServicePortName,
        view: &ServicePortView,
        filter: &mut Lines,
        nat: &mut Lines,
        own: Option<&mut PortRules>,
    ) {
        let ctx = PortCtx {
            cfg: self.cfg,
            large_cluster: self.large_cluster,
            name,
            view,
        };
        render_port(&ctx, &mut self.probabilities, filter, nat, own);
    }
}

/// What upstream calls the filter verdict of a class of traffic that has
/// no endpoint to go to, with its comment.
fn filter_verdict(target: Target, name: &str) -> Option<(&'static str, String)> {
    match target {
        Target::Reject => Some(("REJECT", format!("\"{name} has no endpoints\""))),
        Target::Drop => Some(("DROP", format!("\"{name} has no local endpoints\""))),
        Target::Cluster | Target::Local => None,
    }
}

/// Renders one port: its top-level rules into `filter` and `nat`, and, when
/// `own` is given, its own chains and their rules into it.
fn render_port(
    p: &PortCtx<'_>,
    probabilities: &mut Probabilities,
    filter: &mut Lines,
    nat: &mut Lines,
    own: Option<&mut PortRules>,
) {
    let view = p.view;
    let port = &*view.port;
    let chains = PortChains::new(p.name);
    // In comments only; the chain hashes use the name as it is.
    let comment_name = rule_comment(&chains.name, NAME_IN_COMMENT_MAX);
    let name = comment_name.as_ref();
    let proto = port.protocol.lower();
    let svc_port = port.port;

    let has_endpoints = view.internal != Target::Reject;
    let internal_verdict = filter_verdict(view.internal, name);
    let external_verdict = filter_verdict(view.external, name);
    let internal_chain = if port.internal_policy_local() {
        &chains.svl
    } else {
        &chains.svc
    };
    let external_policy_chain = if port.external_policy_local() {
        &chains.svl
    } else {
        &chains.svc
    };
    let uses_cluster_chain = !view.cluster.is_empty();
    let uses_local_chain = !view.local.is_empty();
    let uses_ext_chain = has_endpoints && port.externally_accessible();
    let uses_fw_chain = has_endpoints
        && !port.load_balancer_ips.is_empty()
        && !port.load_balancer_source_ranges.is_empty();
    let lb_chain = if uses_fw_chain {
        &chains.fw
    } else {
        &chains.ext
    };

    // ClusterIP.
    let cluster_ip = port.cluster_ip;
    match &internal_verdict {
        None => line!(
            nat,
            "-A {KUBE_SERVICES} -m comment --comment \"{name} cluster IP\" -m {proto} -p {proto} -d {cluster_ip} --dport {svc_port} -j {internal_chain}"
        ),
        Some((verdict, comment)) => line!(
            filter,
            "-A {KUBE_SERVICES} -m comment --comment {comment} -m {proto} -p {proto} -d {cluster_ip} --dport {svc_port} -j {verdict}"
        ),
    }

    // External IPs.
    for ip in &port.external_ips {
        if has_endpoints {
            line!(
                nat,
                "-A {KUBE_SERVICES} -m comment --comment \"{name} external IP\" -m {proto} -p {proto} -d {ip} --dport {svc_port} -j {}",
                chains.ext
            );
        }
        if let Some((verdict, comment)) = &external_verdict {
            line!(
                filter,
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {comment} -m {proto} -p {proto} -d {ip} --dport {svc_port} -j {verdict}"
            );
        }
    }

    // Load-balancer IPs.
    for ip in &port.load_balancer_ips {
        if has_endpoints {
            line!(
                nat,
                "-A {KUBE_SERVICES} -m comment --comment \"{name} loadbalancer IP\" -m {proto} -p {proto} -d {ip} --dport {svc_port} -j {lb_chain}"
            );
        }
        if uses_fw_chain {
            line!(
                filter,
                "-A {KUBE_PROXY_FIREWALL} -m comment --comment \"{name} traffic not accepted by {}\" -m {proto} -p {proto} -d {ip} --dport {svc_port} -j DROP",
                chains.fw
            );
        }
    }
    if let Some((verdict, comment)) = &external_verdict {
        for ip in &port.load_balancer_ips {
            line!(
                filter,
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {comment} -m {proto} -p {proto} -d {ip} --dport {svc_port} -j {verdict}"
            );
        }
    }

    // Node port. (Node ports are not subject to loadBalancerSourceRanges.)
    if let Some(node_port) = port.node_port {
        if has_endpoints {
            line!(
                nat,
                "-A {KUBE_NODEPORTS} -m comment --comment {name} -m {proto} -p {proto} --dport {node_port} -j {}",
                chains.ext
            );
        }
        if let Some((verdict, comment)) = &external_verdict {
            line!(
                filter,
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {comment} -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {node_port} -j {verdict}"
            );
        }
    }

    // Health-check node port: accepted whether or not there are local endpoints.
    if let Some(hc) = port.health_check_node_port {
        line!(
            filter,
            "-A {KUBE_NODEPORTS} -m comment --comment \"{name} health check node port\" -m tcp -p tcp --dport {hc} -j ACCEPT"
        );
    }

    let Some(own) = own else { return };
    let cfg = p.cfg;
    let rules = &mut own.rules;

    // Masquerade rule at the head of the internal chain.
    if internal_verdict.is_none() {
        let head = format!(
            "-A {internal_chain} -m comment --comment \"{name} cluster IP\" -m {proto} -p {proto} -d {cluster_ip} --dport {svc_port}"
        );
        if cfg.masquerade_all {
            line!(rules, "{head} -j {KUBE_MARK_MASQ}");
        } else if let Some(not_local) = cfg.if_not_local() {
            // Off-cluster traffic to a ClusterIP may bounce off-node: masquerade it.
            line!(rules, "{head} {not_local} -j {KUBE_MARK_MASQ}");
        }
    }

    if uses_ext_chain {
        let ext = &chains.ext;
        own.chains.push(ext.clone());
        if !port.external_policy_local() {
            line!(
                rules,
                "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j {KUBE_MARK_MASQ}"
            );
        } else if uses_cluster_chain {
            let svc = &chains.svc;
            if let Some(local) = cfg.if_local() {
                // Pod traffic to an external destination acts as if it went
                // out to the load balancer and came back: no policy applies.
                line!(
                    rules,
                    "-A {ext} -m comment --comment \"pod traffic for {name} external destinations\" {local} -j {svc}"
                );
            }
            // Host traffic: the source is a local address, masquerade it and
            // send it to any endpoint.
            line!(
                rules,
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"
            );
            line!(
                rules,
                "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
            );
        }
        if external_verdict.is_none() {
            line!(rules, "-A {ext} -j {external_policy_chain}");
        }
    }

    if uses_fw_chain {
        let fw = &chains.fw;
        own.chains.push(fw.clone());
        let head = format!("-A {fw} -m comment --comment \"{name} loadbalancer IP\"");
        let mut allow_from_node = false;
        for cidr in &port.load_balancer_source_ranges {
            line!(rules, "{head} -s {cidr} -j {}", chains.ext);
            allow_from_node |= cfg.node_ip.is_some_and(|ip| cidr.contains(&ip));
        }
        // A VIP-like LB IP is often a local address: a request from the node
        // to it loops back with the LB IP as source.
        if allow_from_node {
            for ip in &port.load_balancer_ips {
                line!(rules, "{head} -s {ip} -j {}", chains.ext);
            }
        }
        // What falls through is not DNATed and meets KUBE-PROXY-FIREWALL.
        line!(
            rules,
            "-A {fw} -m comment --comment \"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL\""
        );
    }

    // Every endpoint's `ip:port` text and chain, hashed once.
    let all: Vec<(&Endpoint, String, String)> = view
        .all_endpoints()
        .map(|ep| {
            let text = super::text::socket_addr(ep.socket_addr());
            let sep = chains.endpoint_chain_of(p.name, &text);
            (ep, text, sep)
        })
        .collect();
    if uses_cluster_chain {
        // `all_endpoints` starts with the cluster endpoints, in order.
        let cluster: Vec<_> = all.iter().take(view.cluster.len()).collect();
        own.chains.push(chains.svc.clone());
        service_to_endpoint_rules(p, probabilities, name, &chains.svc, &pairs(&cluster), rules);
    }
    if uses_local_chain {
        let index: std::collections::HashMap<std::net::SocketAddr, usize> = all
            .iter()
            .enumerate()
            .map(|(i, (ep, _, _))| (ep.socket_addr(), i))
            .collect();
        let local: Vec<_> = view
            .local
            .iter()
            .filter_map(|ep| index.get(&ep.socket_addr()).map(|&i| &all[i]))
            .collect();
        own.chains.push(chains.svl.clone());
        service_to_endpoint_rules(p, probabilities, name, &chains.svl, &pairs(&local), rules);
    }

    // One chain per endpoint: the hottest rules, written without formatting.
    let comment: [&str; 2] = if p.large_cluster {
        ["", ""]
    } else {
        [" -m comment --comment ", name]
    };
    for (_, text, sep) in &all {
        let ip = endpoint_ip(text);
        // Hairpin: an endpoint reaching itself through the service is masqueraded.
        rules.push_parts(&[
            "-A ",
            sep,
            comment[0],
            comment[1],
            " -s ",
            ip,
            " -j ",
            KUBE_MARK_MASQ,
        ]);
        let affinity: [&str; 3] = if port.session_affinity.is_some() {
            [" -m recent --name ", sep, " --set"]
        } else {
            ["", "", ""]
        };
        rules.push_parts(&[
            "-A ",
            sep,
            comment[0],
            comment[1],
            affinity[0],
            affinity[1],
            affinity[2],
            " -m ",
            proto,
            " -p ",
            proto,
            " -j DNAT --to-destination ",
            text,
        ]);
    }
    own.chains.extend(all.into_iter().map(|(_, _, sep)| sep));
}

/// The IP of an `ip:port` / `[ip]:port` text.
fn endpoint_ip(text: &str) -> &str {
    let host = text.rsplit_once(':').map_or(text, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `(ip:port, KUBE-SEP-…)` of endpoints.
fn pairs<'a>(list: &[&'a (&Endpoint, String, String)]) -> Vec<(&'a str, &'a str)> {
    list.iter()
        .map(|(_, text, sep)| (text.as_str(), sep.as_str()))
        .collect()
}

/// ` -m comment --comment "name -> ip:port"` without allocating; nothing
/// in large-cluster mode.
struct EndpointComment<'a> {
    on: bool,
    name: &'a str,
    endpoint: &'a str,
}

impl std::fmt::Display for EndpointComment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.on {
            write!(
                f,
                " -m comment --comment \"{} -> {}\"",
                self.name, self.endpoint
            )?;
        }
        Ok(())
    }
}

/// The load-balancing rules of a `KUBE-SVC`/`KUBE-SVL` chain over
/// `endpoints` (`(ip:port, KUBE-SEP-…)`, in order).
fn service_to_endpoint_rules(
    p: &PortCtx<'_>,
    probabilities: &mut Probabilities,
    name: &str,
    chain: &str,
    endpoints: &[(&str, &str)],
    rules: &mut Lines,
) {
    let comment = |endpoint| EndpointComment {
        on: !p.large_cluster,
        name,
        endpoint,
    };
    if let Some(affinity) = p.view.port.session_affinity {
        let seconds = affinity.timeout_seconds;
        for (ep, sep) in endpoints {
            line!(
                rules,
                "-A {chain}{} -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}",
                comment(ep)
            );
        }
    }
    let n = endpoints.len();
    for (i, (ep, sep)) in endpoints.iter().enumerate() {
        let quoted: [&str; 5] = if p.large_cluster {
            ["", "", "", "", ""]
        } else {
            [" -m comment --comment \"", name, " -> ", ep, "\""]
        };
        let [q0, q1, q2, q3, q4] = quoted;
        if i + 1 < n {
            rules.push_parts(&[
                "-A ",
                chain,
                q0,
                q1,
                q2,
                q3,
                q4,
                " -m statistic --mode random --probability ",
                probabilities.get(n - i),
                " -j ",
                sep,
            ]);
        } else {
            rules.push_parts(&["-A ", chain, q0, q1, q2, q3, q4, " -j ", sep]);
        }
    }
}
