//! Validation of a `v1` Service into per-family [`ServicePort`]s.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as corev1;

use crate::error::{Dropped, InvalidObject, ObjectKind};
use crate::model::api_names;
use crate::model::{
    IpFamily, Protocol, ServiceKey, ServicePort, ServicePortName, SessionAffinity, TrafficPolicy,
};

/// Any value of this label means another proxy handles the object.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Set by the EndpointSlice controller on slices of headless services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// The API default for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;
/// The API maximum for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86400;

/// A validated Service: its ports, per IP family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `namespace/name`.
    pub key: ServiceKey,
    ports_v4: Vec<Arc<ServicePort>>,
    ports_v6: Vec<Arc<ServicePort>>,
}

impl Service {
    /// The ports of `family` (empty when the service has no ClusterIP of it).
    pub fn ports(&self, family: IpFamily) -> &[Arc<ServicePort>] {
        match family {
            IpFamily::V4 => &self.ports_v4,
            IpFamily::V6 => &self.ports_v6,
        }
    }
}

/// The outcome of validating one Service object.
pub(crate) enum Validated {
    /// Not proxied by us: ExternalName, headless, or labelled for another proxy.
    Skipped,
    /// Accepted; `errors` lists the ports or values that were left out.
    Accepted(Service, Vec<InvalidObject>),
    /// Rejected as a whole.
    Rejected(InvalidObject),
}

struct Ctx<'a> {
    object: &'a str,
    errors: Vec<InvalidObject>,
}

impl Ctx<'_> {
    fn error(&self, field: String, reason: impl Into<String>, dropped: Dropped) -> InvalidObject {
        InvalidObject {
            kind: ObjectKind::Service,
            object: self.object.to_string(),
            field,
            reason: reason.into(),
            dropped,
        }
    }

    fn push(&mut self, field: String, reason: impl Into<String>, dropped: Dropped) {
        let e = self.error(field, reason, dropped);
        self.errors.push(e);
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

fn policy(value: Option<&str>, field: &str, ctx: &Ctx<'_>) -> Result<TrafficPolicy, InvalidObject> {
    match value {
        None | Some("") | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(ctx.error(
            format!("spec.{field}"),
            format!("{other:?} is not a traffic policy (valid: Cluster, Local)"),
            Dropped::Object,
        )),
    }
}

fn port_number(value: i32, field: String, ctx: &mut Ctx<'_>) -> Option<u16> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            ctx.push(
                field,
                format!("{value} is not a port number (1-65535)"),
                Dropped::Port,
            );
            None
        }
    }
}

/// Validates `svc`. Never panics, whatever the input.
pub(crate) fn validate(svc: &corev1::Service) -> Validated {
    let meta = &svc.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let Some(name) = meta.name.as_deref() else {
        return Validated::Rejected(InvalidObject {
            kind: ObjectKind::Service,
            object: format!("{}/<unnamed>", namespace.escape_debug()),
            field: "metadata.name".into(),
            reason: "missing".into(),
            dropped: Dropped::Object,
        });
    };
    // Escaped, so that an invalid name cannot forge log lines.
    let object = format!("{}/{}", namespace.escape_debug(), name.escape_debug());
    let mut ctx = Ctx {
        object: &object,
        errors: Vec::new(),
    };
    // Names reach rule text (comments, chain names): only what the API
    // server accepts goes further.
    if let Err(reason) = api_names::dns1123_label(namespace) {
        return Validated::Rejected(ctx.error(
            "metadata.namespace".into(),
            reason,
            Dropped::Object,
        ));
    }
    if let Err(reason) = api_names::service_name(name) {
        return Validated::Rejected(ctx.error("metadata.name".into(), reason, Dropped::Object));
    }
    if let Some(labels) = &meta.labels
        && (labels.contains_key(LABEL_SERVICE_PROXY_NAME) || labels.contains_key(LABEL_HEADLESS))
    {
        return Validated::Skipped;
    }
    let Some(spec) = &svc.spec else {
        return Validated::Skipped;
    };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return Validated::Skipped;
    }
    let primary = spec.cluster_ip.as_deref().unwrap_or("");
    if primary.is_empty() || primary == "None" {
        return Validated::Skipped;
    }

    // ClusterIPs: one per family at most. A bad one rejects the object.
    let mut cluster_ips: Vec<IpAddr> = Vec::new();
    let listed: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => vec![primary],
    };
    for (i, raw) in listed.iter().enumerate() {
        let field = if spec.cluster_ips.as_ref().is_some_and(|v| !v.is_empty()) {
            format!("spec.clusterIPs[{i}]")
        } else {
            "spec.clusterIP".to_string()
        };
        match parse_ip(raw) {
            Ok(ip) => {
                if cluster_ips
                    .iter()
                    .any(|c| IpFamily::of(c) == IpFamily::of(&ip))
                {
                    return Validated::Rejected(ctx.error(
                        field,
                        format!("{raw} is a second {} ClusterIP", IpFamily::of(&ip)),
                        Dropped::Object,
                    ));
                }
                cluster_ips.push(ip);
            }
            Err(reason) => return Validated::Rejected(ctx.error(field, reason, Dropped::Object)),
        }
    }

    let internal = match policy(
        spec.internal_traffic_policy.as_deref(),
        "internalTrafficPolicy",
        &ctx,
    ) {
        Ok(p) => p,
        Err(e) => return Validated::Rejected(e),
    };
    let external_raw = match policy(
        spec.external_traffic_policy.as_deref(),
        "externalTrafficPolicy",
        &ctx,
    ) {
        Ok(p) => p,
        Err(e) => return Validated::Rejected(e),
    };
    // Upstream's `ExternalPolicyLocal`: the policy applies only to externally
    // accessible services: NodePort, LoadBalancer, or ClusterIP with externalIPs.
    let externally_accessible = matches!(svc_type, "NodePort" | "LoadBalancer")
        || (svc_type == "ClusterIP"
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()));
    let external = if externally_accessible {
        external_raw
    } else {
        TrafficPolicy::Cluster
    };

    let session_affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match timeout {
                None => Some(SessionAffinity {
                    timeout_seconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                }),
                Some(t) if t > 0 && t as u32 <= MAX_AFFINITY_TIMEOUT_SECONDS => {
                    Some(SessionAffinity {
                        timeout_seconds: t as u32,
                    })
                }
                Some(t) => {
                    return Validated::Rejected(ctx.error(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                        format!("{t} is not in 1..={MAX_AFFINITY_TIMEOUT_SECONDS}"),
                        Dropped::Object,
                    ));
                }
            }
        }
        None | Some("") | Some("None") => None,
        Some(other) => {
            return Validated::Rejected(ctx.error(
                "spec.sessionAffinity".into(),
                format!("{other:?} is not a session affinity (valid: None, ClientIP)"),
                Dropped::Object,
            ));
        }
    };

    // Source ranges: a bad range rejects the object, since leaving it out
    // could turn a restricted list into "allow all".
    let mut source_ranges: Vec<IpNet> = Vec::new();
    for (i, raw) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        match raw.trim().parse::<IpNet>() {
            // As Go's `net.ParseCIDR`, keep the network, not the host bits.
            Ok(net) => source_ranges.push(net.trunc()),
            Err(_) => {
                return Validated::Rejected(ctx.error(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    format!("{raw:?} is not a CIDR"),
                    Dropped::Object,
                ));
            }
        }
    }

    let mut external_ips: Vec<IpAddr> = Vec::new();
    for (i, raw) in spec.external_ips.iter().flatten().enumerate() {
        match parse_ip(raw) {
            Ok(ip) => external_ips.push(ip),
            Err(reason) => ctx.push(format!("spec.externalIPs[{i}]"), reason, Dropped::Value),
        }
    }

    // As upstream, whatever the type: the service controller clears the
    // status of services that stop being load balancers.
    let mut lb_ips: Vec<IpAddr> = Vec::new();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for (i, ing) in ingress.into_iter().flatten().enumerate() {
        let Some(raw) = ing.ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        // Only `ipMode: VIP` (or unset) is a VIP this node handles;
        // `Proxy` means the load balancer delivers to the node itself.
        if ing.ip_mode.as_deref().is_some_and(|m| m != "VIP") {
            continue;
        }
        match parse_ip(raw) {
            Ok(ip) => lb_ips.push(ip),
            Err(reason) => ctx.push(
                format!("status.loadBalancer.ingress[{i}].ip"),
                reason,
                Dropped::Value,
            ),
        }
    }

    let health_check_node_port = if svc_type == "LoadBalancer" && external == TrafficPolicy::Local {
        match spec.health_check_node_port {
            None | Some(0) => None,
            Some(p) => match u16::try_from(p) {
                Ok(p) => Some(p),
                Err(_) => {
                    ctx.push(
                        "spec.healthCheckNodePort".into(),
                        format!("{p} is not a port number (1-65535)"),
                        Dropped::Value,
                    );
                    None
                }
            },
        }
    } else {
        None
    };

    let key = ServiceKey::new(namespace, name);
    let mut ports_v4 = Vec::new();
    let mut ports_v6 = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP").parse::<Protocol>() {
            Ok(proto) => proto,
            Err(e) => {
                ctx.push(
                    format!("spec.ports[{i}].protocol"),
                    e.to_string(),
                    Dropped::Port,
                );
                continue;
            }
        };
        let Some(port) = port_number(p.port, format!("spec.ports[{i}].port"), &mut ctx) else {
            continue;
        };
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(np) => match port_number(np, format!("spec.ports[{i}].nodePort"), &mut ctx) {
                Some(np) => Some(np),
                None => continue,
            },
        };
        let port_name = p.name.clone().unwrap_or_default();
        if !port_name.is_empty()
            && let Err(reason) = api_names::dns1123_label(&port_name)
        {
            ctx.push(format!("spec.ports[{i}].name"), reason, Dropped::Port);
            continue;
        }
        let name = ServicePortName {
            service: key.clone(),
            port: port_name,
            protocol,
        };
        if !seen.insert(name.clone()) {
            ctx.push(
                format!("spec.ports[{i}].name"),
                format!("duplicate port {name} ({})", protocol.lower()),
                Dropped::Port,
            );
            continue;
        }
        for ip in &cluster_ips {
            let family = IpFamily::of(ip);
            let mut ranges: Vec<IpNet> = source_ranges
                .iter()
                .copied()
                .filter(|n| IpFamily::of_net(n) == family)
                .collect();
            if ranges.iter().any(|n| n.prefix_len() == 0) {
                ranges.clear();
            }
            let sp = Arc::new(ServicePort {
                name: name.clone(),
                family,
                cluster_ip: *ip,
                port,
                protocol,
                node_port,
                external_ips: external_ips
                    .iter()
                    .copied()
                    .filter(|x| family.contains(x))
                    .collect(),
                load_balancer_ips: lb_ips
                    .iter()
                    .copied()
                    .filter(|x| family.contains(x))
                    .collect(),
                load_balancer_source_ranges: ranges,
                session_affinity,
                internal_traffic_policy: internal,
                external_traffic_policy: external,
                health_check_node_port,
            });
            match family {
                IpFamily::V4 => ports_v4.push(sp),
                IpFamily::V6 => ports_v6.push(sp),
            }
        }
    }
    Validated::Accepted(
        Service {
            key,
            ports_v4,
            ports_v6,
        },
        ctx.errors,
    )
}
