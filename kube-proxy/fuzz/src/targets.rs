//! One function per fuzz target. Each takes arbitrary bytes, drives the
//! code under test as the daemon would, and panics only when that code
//! panics or an invariant named in the function's doc is broken.

use std::net::IpAddr;
use std::sync::Arc;

use backend_iptables::tables::{Tables, tokenize};
use backend_iptables::trace::{Node, parse as parse_rule, trace};
use k8s_openapi::api::core::v1::{Node as NodeObject, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::changes::PendingChanges;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::conformance::{Origin, Packet};
use proxy_core::runtime::NodeState;
use proxy_core::runtime::source::{ManifestObject, parse_manifests};
use proxy_core::{IpFamily, NodeInfo, NodeView, Protocol, ServiceTopology};
use serde_json::Value;

/// A fuzz target: its name, its function, whether its inputs are JSON
/// (value-level mutations apply), and the tokens its mutator splices in.
pub struct Target {
    /// The name `fuzz <name>` and the corpus directory use.
    pub name: &'static str,
    /// The function under test.
    pub run: fn(&[u8]),
    /// Whether seeds are JSON documents (value-level edits apply).
    pub json: bool,
    /// Tokens of the input language.
    pub dict: &'static [&'static str],
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "manifest",
        run: manifest,
        json: true,
        dict: &[
            "---\n",
            "kind: ",
            "items:\n- ",
            "apiVersion: v1\n",
            "metadata:\n  name: ",
            "  namespace: ",
            "&a ",
            "*a",
            "!!str ",
            "<<: *a",
            "{",
            "}",
            "[",
            "]",
            ": ",
            "- ",
            "null",
            "~",
            "'",
            "|\n",
            ">\n",
            "...\n",
            "%YAML 1.2\n",
        ],
    },
    Target {
        name: "topology",
        run: topology,
        json: true,
        dict: &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "null",
            "\"kind\":",
            "\"Service\"",
            "true",
        ],
    },
    Target {
        name: "config",
        run: config,
        json: true,
        dict: &[
            "mode: ",
            "ipvs",
            "nftables",
            "iptables",
            "syncPeriod: ",
            "1ns",
            "clusterCIDR: ",
            "nodePortAddresses: [",
            "detectLocalMode: ",
            "conntrack:\n  maxPerCore: ",
            "bindAddress: ",
            "---\n",
            "&a ",
            "*a",
            ": ",
            "- ",
        ],
    },
    Target {
        name: "iptables_save",
        run: iptables_save,
        json: false,
        dict: &[
            "*nat\n",
            "*filter\n",
            "*mangle\n",
            "*raw\n",
            "COMMIT\n",
            ":KUBE-SERVICES - [0:0]\n",
            ":INPUT ACCEPT [0:0]\n",
            "-A ",
            "-I ",
            "-D ",
            "-N ",
            "-X ",
            "-F ",
            " -j ",
            " -g ",
            " -m comment --comment ",
            " -d ",
            " -s ",
            " ! ",
            " -p tcp ",
            " --dport ",
            " -m statistic --mode random --probability ",
            " --to-destination ",
            " -m mark --mark ",
            " --set-xmark ",
            " -m addrtype --dst-type LOCAL ",
            " -m recent --name ",
            " --rcheck --seconds ",
            " -m conntrack --ctstate ",
            "KUBE-SVC-",
            "KUBE-SEP-",
            "KUBE-MARK-MASQ",
            "0x4000/0x4000",
            "/32",
            "/0",
            "\"",
            "\\\"",
        ],
    },
    Target {
        name: "nft_output",
        run: nft_output,
        json: true,
        dict: &[
            "{\"table\": {\"family\": \"ip\", \"name\": \"kube-proxy\", \"handle\": 1}}",
            "\"nftables\"",
            "[",
            "]",
            "{",
            "}",
            ",",
            ".",
            "-",
        ],
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A node for views: name `node-a` unless the input names one.
fn default_node() -> Arc<NodeInfo> {
    let mut node = NodeInfo::named("node-a");
    node.addresses = vec![IpAddr::from([192, 168, 1, 1])];
    Arc::new(node)
}

/// Feeds objects to a topology as a watch would, keeping one view per
/// family up to date incrementally; checks after every object that the
/// incremental view (what a partial sync programs) equals a view rebuilt
/// from scratch (what a full sync programs).
struct Cluster {
    topology: ServiceTopology,
    node: Arc<NodeInfo>,
    views: Vec<NodeView>,
}

impl Cluster {
    fn new() -> Self {
        let node = default_node();
        Cluster {
            topology: ServiceTopology::new(),
            views: [IpFamily::V4, IpFamily::V6]
                .into_iter()
                .map(|f| NodeView::empty(f, node.clone()))
                .collect(),
            node,
        }
    }

    fn apply(&mut self, object: &ManifestObject) {
        let changed = match object {
            ManifestObject::Service(s) => self.topology.apply_service(s).changed,
            ManifestObject::EndpointSlice(s) => self.topology.apply_endpoint_slice(s).changed,
            ManifestObject::Node(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                self.node = NodeState::new(&name, None, Some(n)).info;
                Vec::new()
            }
        };
        self.sync(changed);
    }

    fn delete(&mut self, object: &ManifestObject) {
        let id = object.id();
        let changed = match object {
            ManifestObject::Service(_) => self.topology.delete_service(&id.namespace, &id.name),
            ManifestObject::EndpointSlice(_) => {
                self.topology.delete_endpoint_slice(&id.namespace, &id.name)
            }
            ManifestObject::Node(_) => None,
        };
        self.sync(changed.into_iter().collect());
    }

    fn sync(&mut self, changed: Vec<proxy_core::ServiceKey>) {
        let mut pending = PendingChanges::new();
        pending.touch_all(changed);
        for synced in &mut self.views {
            let (view, _changes) = pending.prepare(&self.topology, synced, &self.node);
            let rebuilt = NodeView::build(&self.topology, self.node.clone(), synced.family());
            assert_eq!(
                view,
                rebuilt,
                "the incrementally updated {} view differs from a rebuilt one",
                synced.family()
            );
            *synced = view;
        }
    }
}

/// `kind`-dispatched decoding of one JSON object, as the manifest source
/// does for each document.
fn decode(value: Value) -> Option<ManifestObject> {
    match value.get("kind").and_then(Value::as_str) {
        Some("Service") => serde_json::from_value::<Service>(value)
            .ok()
            .map(ManifestObject::Service),
        Some("EndpointSlice") => serde_json::from_value::<EndpointSlice>(value)
            .ok()
            .map(ManifestObject::EndpointSlice),
        Some("Node") => serde_json::from_value::<NodeObject>(value)
            .ok()
            .map(ManifestObject::Node),
        _ => None,
    }
}

/// Manifest parsing: [`parse_manifests`] on the text, then every good
/// object applied to a topology and the node's views built (the
/// incremental checks are the [`topology`] target's).
pub fn manifest(data: &[u8]) {
    let Ok(parsed) = parse_manifests(&text(data)) else {
        return;
    };
    for error in &parsed.errors {
        let _ = error.object.len() + error.reason.len();
    }
    let mut topology = ServiceTopology::new();
    let mut node = default_node();
    for object in &parsed.objects {
        let _ = object.id().to_string();
        match object {
            ManifestObject::Service(s) => drop(topology.apply_service(s)),
            ManifestObject::EndpointSlice(s) => drop(topology.apply_endpoint_slice(s)),
            ManifestObject::Node(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                node = NodeState::new(&name, None, Some(n)).info;
            }
        }
    }
    for family in [IpFamily::V4, IpFamily::V6] {
        let _ = NodeView::build(&topology, node.clone(), family);
    }
}

/// Topology updates: the input is a JSON array of Service, EndpointSlice
/// and Node objects (or one of them). Each is applied in order, then each
/// deleted in reverse order; after every step the incremental views equal
/// rebuilt ones, and after the deletions the topology holds no Service.
pub fn topology(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let objects: Vec<ManifestObject> = items.into_iter().filter_map(decode).collect();
    let mut cluster = Cluster::new();
    for object in &objects {
        cluster.apply(object);
        // Applying the same object again changes nothing.
        let again = match object {
            ManifestObject::Service(s) => cluster.topology.apply_service(s).changed,
            ManifestObject::EndpointSlice(s) => cluster.topology.apply_endpoint_slice(s).changed,
            ManifestObject::Node(_) => Vec::new(),
        };
        assert!(again.is_empty(), "re-applying an object changed {again:?}");
    }
    for object in objects.iter().rev() {
        cluster.delete(object);
    }
    assert_eq!(
        cluster.topology.service_count(),
        0,
        "services left after deleting every object"
    );
}

/// Configuration loading: `from_yaml`; a parsed configuration is written
/// back (`to_yaml`) and must read back equal; then defaults and validation
/// run on it.
pub fn config(data: &[u8]) {
    let Ok(mut config) = KubeProxyConfiguration::from_yaml(&text(data)) else {
        return;
    };
    if let Ok(yaml) = config.to_yaml() {
        match KubeProxyConfiguration::from_yaml(&yaml) {
            Ok(again) => assert_eq!(again, config, "to_yaml then from_yaml changed it:\n{yaml}"),
            Err(e) => panic!("from_yaml refused what to_yaml wrote ({e}):\n{yaml}"),
        }
    }
    config.apply_defaults();
    let _ = config.validate();
    let _ = config.effective_detect_local_mode();
}

/// Packets traced through parsed `iptables-save` text.
fn packets() -> Vec<Packet> {
    let ip = |s: &str| s.parse::<IpAddr>().ok();
    let mut out = Vec::new();
    for (origin, source, destination, port) in [
        (Origin::Host, "127.0.0.1", "10.96.0.10", 80),
        (Origin::External, "203.0.113.7", "192.168.1.1", 30080),
        (Origin::LocalPod, "10.244.1.5", "10.96.0.10", 53),
    ] {
        if let (Some(source), Some(destination)) = (ip(source), ip(destination)) {
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                out.push(Packet {
                    origin,
                    source,
                    protocol,
                    destination,
                    port,
                });
            }
        }
    }
    out
}

/// `iptables-save` output: the fake host's parser ([`Tables::parse`], the
/// same one `iptables-restore` input goes through), its printer, the rule
/// parser and the packet tracer on the result, the line tokenizer, and the
/// chain listing the backend reads from `iptables-save -t <table>`.
pub fn iptables_save(data: &[u8]) {
    let text = text(data);
    for line in text.lines() {
        let _ = tokenize(line);
        // What `Iptables::chains` reads.
        let _ = line
            .strip_prefix(':')
            .and_then(|l| l.split_whitespace().next());
    }
    let Ok(tables) = Tables::parse(&text) else {
        return;
    };
    let _ = tables.rule_count();
    let _ = tables.dump();
    let saved = tables.save(None);
    let _ = Tables::parse(&saved);
    for name in ["nat", "filter", "mangle", "raw"] {
        if let Some(table) = tables.table(name) {
            for chain in table.chains.values() {
                for rule in &chain.rules {
                    let _ = parse_rule(&rule.args);
                    let _ = rule.target();
                    let _ = rule.text();
                }
            }
        }
    }
    let node = Node {
        local_ips: default_node().addresses.clone(),
    };
    for packet in packets() {
        let _ = trace(&tables, &node, &packet);
    }
}

/// `nft` output: the table listing the backend reads (`nft -j list tables
/// <family>`, [`backend_nftables::lists_table`]) and the kernel release
/// the factory checks ([`backend_nftables::parse_kernel_version`]).
pub fn nft_output(data: &[u8]) {
    let text = text(data);
    let _ = backend_nftables::lists_table(&text);
    let _ = backend_nftables::parse_kernel_version(&text);
}
