//! Validation of a `discovery.k8s.io/v1` EndpointSlice.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1 as discoveryv1;

use crate::error::{Dropped, InvalidObject, ObjectKind};
use crate::model::api_names;
use crate::model::{EndpointHints, IpFamily, Protocol, ServiceKey};

use super::interner::Interner;
use super::service::{LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME};

/// The label that joins an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    /// The port name; it matches the service port of the same name.
    pub name: String,
    /// The protocol (API default TCP).
    pub protocol: Protocol,
    /// The target port number.
    pub port: u16,
}

/// One endpoint of an EndpointSlice, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The first address.
    pub ip: IpAddr,
    /// `ip` as text: upstream orders endpoints by their string form
    /// (see [`cmp_endpoint_strings`]).
    pub ip_text: Box<str>,
    /// `conditions.ready` (nil means true).
    pub ready: bool,
    /// `conditions.serving` (nil means true).
    pub serving: bool,
    /// `conditions.terminating` (nil means false).
    pub terminating: bool,
    /// `nodeName`.
    pub node_name: Option<Arc<str>>,
    /// `zone`.
    pub zone: Option<Arc<str>>,
    /// `hints`, when any are set.
    pub hints: Option<Arc<EndpointHints>>,
}

/// A validated EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// The service it belongs to (`kubernetes.io/service-name` label).
    pub service: ServiceKey,
    /// The family of `addressType`.
    pub family: IpFamily,
    /// Its ports.
    pub ports: Vec<SlicePort>,
    /// Its endpoints, valid ones only, in upstream's order: by the string
    /// form `ip:port` of the endpoints they give (the order does not depend
    /// on the port number, since every endpoint of a slice has the same).
    pub endpoints: Vec<SliceEndpoint>,
}

pub(crate) enum ValidatedSlice {
    /// Not for us: FQDN address type, or labelled for another proxy / headless.
    Skipped,
    Accepted(Slice, Vec<InvalidObject>),
    Rejected(InvalidObject),
}

fn error(
    object: &str,
    field: String,
    reason: impl Into<String>,
    dropped: Dropped,
) -> InvalidObject {
    InvalidObject {
        kind: ObjectKind::EndpointSlice,
        object: object.to_string(),
        field,
        reason: reason.into(),
        dropped,
    }
}

/// Compares two endpoints by their string forms, `ip:port` or `[ip]:port`,
/// as upstream sorts the endpoints of a service port (`byEndpoint`), without
/// formatting them: `10.0.0.10:80` sorts before `10.0.0.1:80`.
pub fn cmp_endpoint_strings(
    a_ip: &str,
    a_port: u16,
    b_ip: &str,
    b_port: u16,
) -> std::cmp::Ordering {
    fn form(ip: &str) -> (&[u8], &'static [u8]) {
        if ip.contains(':') {
            (ip.as_bytes(), b"]:")
        } else {
            (ip.as_bytes(), b":")
        }
    }
    let (a, a_end) = form(a_ip);
    let (b, b_end) = form(b_ip);
    // A leading `[` is common to both IPv6 forms; families never mix in a port.
    a.iter()
        .chain(a_end)
        .cmp(b.iter().chain(b_end))
        .then_with(|| {
            let mut a_buf = [0u8; 5];
            let mut b_buf = [0u8; 5];
            decimal(a_port, &mut a_buf).cmp(decimal(b_port, &mut b_buf))
        })
}

/// `n` in decimal, written into `buf`.
fn decimal(mut n: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The first invalid name of an endpoint, as `(field, reason)`: its
/// `nodeName` and `hints.forNodes` must be node names (DNS-1123
/// subdomains), its `hints.forZones` label values, as the API server checks.
fn endpoint_names_error(ep: &discoveryv1::Endpoint) -> Option<(String, String)> {
    if let Some(node) = ep.node_name.as_deref()
        && let Err(reason) = api_names::dns1123_subdomain(node)
    {
        return Some(("nodeName".into(), reason));
    }
    let hints = ep.hints.as_ref()?;
    for (j, zone) in hints.for_zones.iter().flatten().enumerate() {
        if let Err(reason) = api_names::label_value(&zone.name) {
            return Some((format!("hints.forZones[{j}].name"), reason));
        }
    }
    for (j, node) in hints.for_nodes.iter().flatten().enumerate() {
        if let Err(reason) = api_names::dns1123_subdomain(&node.name) {
            return Some((format!("hints.forNodes[{j}].name"), reason));
        }
    }
    None
}

/// Validates `slice`. Never panics, whatever the input.
pub(crate) fn validate(slice: &discoveryv1::EndpointSlice, names: &mut Interner) -> ValidatedSlice {
    let meta = &slice.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or("<unnamed>");
    // Escaped, so that an invalid name cannot forge log lines.
    let object = format!("{}/{}", namespace.escape_debug(), name.escape_debug());
    let reject = |field: &str, reason: String| {
        ValidatedSlice::Rejected(error(&object, field.into(), reason, Dropped::Object))
    };
    if let Err(reason) = api_names::dns1123_label(namespace) {
        return reject("metadata.namespace", reason);
    }
    let Some(name) = meta.name.as_deref() else {
        return reject("metadata.name", "missing".into());
    };
    if let Err(reason) = api_names::dns1123_subdomain(name) {
        return reject("metadata.name", reason);
    }
    let labels = meta.labels.as_ref();
    if labels
        .is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME) || l.contains_key(LABEL_HEADLESS))
    {
        return ValidatedSlice::Skipped;
    }
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => return ValidatedSlice::Skipped,
        other => {
            return ValidatedSlice::Rejected(error(
                &object,
                "addressType".into(),
                format!("{other:?} is not an address type (valid: IPv4, IPv6, FQDN)"),
                Dropped::Object,
            ));
        }
    };
    let Some(service_name) = labels
        .and_then(|l| l.get(LABEL_SERVICE_NAME))
        .filter(|s| !s.is_empty())
    else {
        return ValidatedSlice::Rejected(error(
            &object,
            format!("metadata.labels[{LABEL_SERVICE_NAME}]"),
            "missing: the slice names no service",
            Dropped::Object,
        ));
    };
    // The label's value names the Service: it must be a valid label value
    // (as the API server checks) and a valid Service name (or it names none).
    if let Err(reason) =
        api_names::label_value(service_name).and_then(|()| api_names::service_name(service_name))
    {
        return reject(&format!("metadata.labels[{LABEL_SERVICE_NAME}]"), reason);
    }
    let mut errors = Vec::new();

    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP").parse::<Protocol>() {
            Ok(proto) => proto,
            Err(e) => {
                errors.push(error(
                    &object,
                    format!("ports[{i}].protocol"),
                    e.to_string(),
                    Dropped::Port,
                ));
                continue;
            }
        };
        let port = match p.port.map(u16::try_from) {
            Some(Ok(n)) if n != 0 => n,
            Some(_) => {
                errors.push(error(
                    &object,
                    format!("ports[{i}].port"),
                    format!("{} is not a port number (1-65535)", p.port.unwrap_or(0)),
                    Dropped::Port,
                ));
                continue;
            }
            None => {
                errors.push(error(
                    &object,
                    format!("ports[{i}].port"),
                    "missing",
                    Dropped::Port,
                ));
                continue;
            }
        };
        let port_name = p.name.clone().unwrap_or_default();
        if !port_name.is_empty()
            && let Err(reason) = api_names::dns1123_label(&port_name)
        {
            errors.push(error(
                &object,
                format!("ports[{i}].name"),
                reason,
                Dropped::Port,
            ));
            continue;
        }
        ports.push(SlicePort {
            name: port_name,
            protocol,
            port,
        });
    }

    let mut endpoints = Vec::new();
    for (i, ep) in slice.endpoints.as_endpoints().iter().enumerate() {
        let Some(raw) = ep.addresses.first() else {
            errors.push(error(
                &object,
                format!("endpoints[{i}].addresses"),
                "empty",
                Dropped::Endpoint,
            ));
            continue;
        };
        let ip = match raw.trim().parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                errors.push(error(
                    &object,
                    format!("endpoints[{i}].addresses[0]"),
                    format!("{raw:?} is not an IP address"),
                    Dropped::Endpoint,
                ));
                continue;
            }
        };
        if !family.contains(&ip) {
            errors.push(error(
                &object,
                format!("endpoints[{i}].addresses[0]"),
                format!("{ip} is not an {family} address (addressType {family})"),
                Dropped::Endpoint,
            ));
            continue;
        }
        if let Some(reason) = endpoint_names_error(ep) {
            errors.push(error(
                &object,
                format!("endpoints[{i}].{}", reason.0),
                reason.1,
                Dropped::Endpoint,
            ));
            continue;
        }
        let cond = ep.conditions.as_ref();
        let hints = ep.hints.as_ref().map(|h| EndpointHints {
            for_zones: h
                .for_zones
                .iter()
                .flatten()
                .map(|z| names.intern(&z.name))
                .collect(),
            for_nodes: h
                .for_nodes
                .iter()
                .flatten()
                .map(|n| names.intern(&n.name))
                .collect(),
        });
        endpoints.push(SliceEndpoint {
            ip,
            ip_text: ip.to_string().into_boxed_str(),
            ready: cond.and_then(|c| c.ready).unwrap_or(true),
            serving: cond.and_then(|c| c.serving).unwrap_or(true),
            terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
            node_name: ep.node_name.as_deref().map(|n| names.intern(n)),
            zone: ep.zone.as_deref().map(|z| names.intern(z)),
            hints: hints
                .filter(|h| !h.for_zones.is_empty() || !h.for_nodes.is_empty())
                .map(Arc::new),
        });
    }
    endpoints.sort_by(|a, b| cmp_endpoint_strings(&a.ip_text, 0, &b.ip_text, 0));
    // Kept until the slice changes: no growth slack (10 endpoints would
    // keep room for 16).
    endpoints.shrink_to_fit();
    ports.shrink_to_fit();

    ValidatedSlice::Accepted(
        Slice {
            service: ServiceKey::new(namespace, service_name.as_str()),
            family,
            ports,
            endpoints,
        },
        errors,
    )
}

/// `EndpointSlice.endpoints` as a slice, whatever the Kubernetes version the
/// application chose for k8s-openapi: the field is required (`Vec`) up to
/// 1.35 and optional (`Option<Vec>`) since 1.36.
trait AsEndpoints {
    fn as_endpoints(&self) -> &[k8s_openapi::api::discovery::v1::Endpoint];
}

impl AsEndpoints for Vec<k8s_openapi::api::discovery::v1::Endpoint> {
    fn as_endpoints(&self) -> &[k8s_openapi::api::discovery::v1::Endpoint] {
        self
    }
}

impl AsEndpoints for Option<Vec<k8s_openapi::api::discovery::v1::Endpoint>> {
    fn as_endpoints(&self) -> &[k8s_openapi::api::discovery::v1::Endpoint] {
        self.as_deref().unwrap_or_default()
    }
}
