//! The manifest source through the whole loop: files added, changed,
//! replaced by rename, broken and deleted; and a `kind: Node` in them as
//! this node's Node object.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod runtime_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::ManifestSource;
use proxy_core::runtime::{
    NodeHealth, Runtime, RuntimeOptions, SyncObserver, SyncReport, initial_state,
};
use proxy_core::{IpFamily, NodeInfo};
use runtime_support::{Recorder, RecordingFactory, timing};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kube-proxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manifest(service: &str, ip: &str, endpoints: &[&str]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|e| format!("  - addresses: [{e}]"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: ns}}\n\
         spec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-1, namespace: ns, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{}\n",
        endpoints.join("\n")
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn view(recorder: &Recorder) -> Vec<(String, Vec<String>)> {
    recorder
        .calls()
        .last()
        .map(|c| c.view.clone())
        .unwrap_or_default()
}

fn port(name: &str, endpoints: &[&str]) -> (String, Vec<String>) {
    (
        name.to_string(),
        endpoints.iter().map(ToString::to_string).collect(),
    )
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn files_are_followed_and_broken_ones_keep_their_last_good_state() {
    let dir = TempDir::new("manifests");
    write(
        &dir.0,
        "a.yaml",
        &manifest("web", "172.30.0.10", &["10.0.0.1"]),
    );
    write(
        &dir.0,
        "b.yaml",
        &manifest("api", "172.30.0.11", &["10.0.1.1"]),
    );
    write(&dir.0, "notes.txt", "not a manifest");

    let (factory, recorder) = RecordingFactory::new(vec![]);
    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.families = Some(vec![IpFamily::V4]);
    options.timing = timing();
    options.timing.min_interval = Duration::from_millis(20);
    // A long rescan interval: changes must be seen through the watch.
    let source = ManifestSource::new(&dir.0)
        .unwrap()
        .with_rescan_interval(Duration::from_secs(3600));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Runtime::new(config, factory, vec![], options).run(
        Box::new(source),
        async move {
            let _ = stopped.await;
        },
    ));

    eventually("the first sync", || recorder.calls().len() == 1).await;
    assert_eq!(
        view(&recorder),
        [
            port("ns/api:http", &["10.0.1.1"]),
            port("ns/web:http", &["10.0.0.1"])
        ]
    );

    // A change.
    write(
        &dir.0,
        "b.yaml",
        &manifest("api", "172.30.0.11", &["10.0.1.1", "10.0.1.2"]),
    );
    eventually("the change", || {
        view(&recorder).contains(&port("ns/api:http", &["10.0.1.1", "10.0.1.2"]))
    })
    .await;
    let calls = recorder.calls();
    assert_eq!(calls.last().unwrap().changed_ports, ["ns/api:http"]);

    // A broken file keeps its last good objects; a new broken file adds nothing.
    let synced = recorder.calls().len();
    write(
        &dir.0,
        "b.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [\n",
    );
    write(&dir.0, "c.yaml", "kind: EndpointSlice\n\tbad: tab\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        recorder.calls().len(),
        synced,
        "broken files change nothing"
    );

    // A bad object keeps its last good version; the file's other objects update.
    let mut text = manifest("api", "172.30.0.99", &["10.0.1.1", "10.0.1.2"]);
    text = text.replace("addressType: IPv4", "addressType: IPv4\nendpoints: 7\nx:");
    write(&dir.0, "b.yaml", &text);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(view(&recorder).contains(&port("ns/api:http", &["10.0.1.1", "10.0.1.2"])));

    // Rename-on-save, as editors do.
    write(
        &dir.0,
        ".b.yaml.swp",
        &manifest("api", "172.30.0.11", &["10.0.1.3"]),
    );
    std::fs::rename(dir.0.join(".b.yaml.swp"), dir.0.join("b.yaml")).unwrap();
    eventually("the renamed file", || {
        view(&recorder).contains(&port("ns/api:http", &["10.0.1.3"]))
    })
    .await;

    // Deleting a file deletes its objects.
    std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
    eventually("the deletion", || {
        view(&recorder) == [port("ns/api:http", &["10.0.1.3"])]
    })
    .await;

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_single_file_is_watched_and_rescanned() {
    let dir = TempDir::new("single");
    let file = dir.0.join("world.yaml");
    write(
        &dir.0,
        "world.yaml",
        &manifest("web", "172.30.0.10", &["10.0.0.1"]),
    );
    let (factory, recorder) = RecordingFactory::new(vec![]);
    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.families = Some(vec![IpFamily::V4]);
    options.timing = timing();
    options.timing.min_interval = Duration::from_millis(20);
    let source = ManifestSource::new(&file)
        .unwrap()
        .with_rescan_interval(Duration::from_millis(200));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Runtime::new(config, factory, vec![], options).run(
        Box::new(source),
        async move {
            let _ = stopped.await;
        },
    ));
    eventually("the first sync", || recorder.calls().len() == 1).await;
    write(
        &dir.0,
        "other.yaml",
        &manifest("api", "172.30.0.11", &["10.0.1.1"]),
    );
    write(
        &dir.0,
        "world.yaml",
        &manifest("web", "172.30.0.10", &["10.0.0.2"]),
    );
    eventually("the change", || {
        view(&recorder) == [port("ns/web:http", &["10.0.0.2"])]
    })
    .await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(ManifestSource::new(dir.0.join("missing.yaml")).is_err());
}

/// A Node manifest: `name` in `zone`, with `addresses` (InternalIP) and
/// `pod_cidrs`, and `extra` YAML lines appended to its `spec`.
fn node_manifest(
    name: &str,
    zone: &str,
    addresses: &[&str],
    pod_cidrs: &[&str],
    extra: &str,
) -> String {
    let addresses: Vec<String> = addresses
        .iter()
        .map(|a| format!("{{type: InternalIP, address: \"{a}\"}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Node\n\
         metadata: {{name: {name}, labels: {{topology.kubernetes.io/zone: {zone}}}}}\n\
         spec:\n  podCIDRs: [{}]\n{extra}\
         status:\n  addresses: [{}]\n",
        pod_cidrs.join(", "),
        addresses.join(", ")
    )
}

/// A Service `web` whose two endpoints are hinted for zones `zone-a` and
/// `zone-b`: a node in `zone-a` uses the first only, a node without a
/// zone both.
const ZONED_SERVICE: &str = "apiVersion: v1\nkind: Service\n\
    metadata: {name: web, namespace: ns}\n\
    spec: {clusterIP: 172.30.0.10, trafficDistribution: PreferSameZone, ports: [{name: http, port: 80}]}\n\
    ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
    metadata: {name: web-1, namespace: ns, labels: {kubernetes.io/service-name: web}}\n\
    addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n\
    - {addresses: [10.244.1.10], zone: zone-a, hints: {forZones: [{name: zone-a}]}}\n\
    - {addresses: [10.244.2.10], zone: zone-b, hints: {forZones: [{name: zone-b}]}}\n";

/// What the loop told about the node: the node of every synced view and
/// every health report.
#[derive(Default)]
struct NodeRecorder {
    synced: Mutex<Vec<NodeInfo>>,
    health: Mutex<Vec<NodeHealth>>,
}

impl NodeRecorder {
    fn last_synced(&self) -> Option<NodeInfo> {
        self.synced.lock().unwrap().last().cloned()
    }
    fn last_health(&self) -> Option<NodeHealth> {
        self.health.lock().unwrap().last().copied()
    }
}

impl SyncObserver for NodeRecorder {
    fn synced(&self, report: &SyncReport<'_>) {
        self.synced
            .lock()
            .unwrap()
            .push(NodeInfo::clone(report.view.node()));
    }
    fn node(&self, node: &NodeHealth) {
        self.health.lock().unwrap().push(*node);
    }
}

/// Warnings and errors logged anywhere in this test binary, as
/// `message key=value…` lines. The manifest source reads files on
/// blocking threads, so only a global subscriber sees its reports.
fn logged() -> &'static Mutex<Vec<String>> {
    static LOGGED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOGGED.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(CaptureWarnings);
        Mutex::new(Vec::new())
    })
}

/// A subscriber that keeps warning and error events in [`logged`].
struct CaptureWarnings;

struct EventText(String);

impl tracing::field::Visit for EventText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl tracing::Subscriber for CaptureWarnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = EventText(String::new());
        event.record(&mut text);
        logged().lock().unwrap().push(text.0);
    }
    fn enter(&self, _span: &tracing::span::Id) {}
    fn exit(&self, _span: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_node_in_the_manifests_is_this_nodes_object() {
    let logged = logged();
    let dir = TempDir::new("manifest-node");
    let addresses = ["10.0.0.1", "fd00::1"];
    let pod_cidrs = ["10.244.1.0/24", "fd00:244:1::/64"];
    write(
        &dir.0,
        "node-a.yaml",
        &node_manifest("node-a", "zone-a", &addresses, &pod_cidrs, ""),
    );
    // Another node's object, sorted after this node's: ignored.
    write(
        &dir.0,
        "node-b.yaml",
        &node_manifest("node-b", "zone-b", &["10.0.0.2"], &["10.244.2.0/24"], ""),
    );
    write(&dir.0, "web.yaml", ZONED_SERVICE);

    let (factory, recorder) = RecordingFactory::new(vec![]);
    let observer = Arc::new(NodeRecorder::default());
    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.families = Some(vec![IpFamily::V4]);
    options.timing = timing();
    options.timing.min_interval = Duration::from_millis(20);
    let source = ManifestSource::new(&dir.0)
        .unwrap()
        .with_rescan_interval(Duration::from_secs(3600));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let observers: Vec<Arc<dyn SyncObserver>> = vec![observer.clone()];
    let task = tokio::spawn(Runtime::new(config, factory, observers, options).run(
        Box::new(source),
        async move {
            let _ = stopped.await;
        },
    ));

    // The first sync already knows the node: zone, IPs, pod CIDRs.
    eventually("the first sync", || recorder.calls().len() == 1).await;
    let node = observer.last_synced().unwrap();
    assert_eq!(node.name, "node-a");
    assert_eq!(node.zone(), "zone-a");
    let ips: Vec<String> = node.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(ips, addresses);
    let cidrs: Vec<String> = node.pod_cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(cidrs, pod_cidrs);
    assert_eq!(
        view(&recorder),
        [port("ns/web:http", &["10.244.1.10"])],
        "the zone's endpoints only"
    );
    assert_eq!(
        observer.last_health(),
        Some(NodeHealth {
            known: true,
            ..NodeHealth::default()
        })
    );

    // The autoscaler's taint: the node is about to go.
    let tainted = node_manifest(
        "node-a",
        "zone-a",
        &addresses,
        &pod_cidrs,
        "  taints: [{key: ToBeDeletedByClusterAutoscaler, effect: NoSchedule}]\n",
    );
    write(&dir.0, "node-a.yaml", &tainted);
    eventually("the taint", || {
        observer
            .last_health()
            .is_some_and(|h| h.tainted_for_deletion)
    })
    .await;

    // A bad Node is reported with its file, object and field, and its last
    // good version stays.
    let synced = recorder.calls().len();
    write(
        &dir.0,
        "node-a.yaml",
        &tainted.replace("10.244.1.0/24", "10.244.1.0/33"),
    );
    eventually("the report of the bad Node", || {
        logged.lock().unwrap().iter().any(|line| {
            line.contains("node-a.yaml")
                && line.contains("Node node-a")
                && line.contains("spec.podCIDRs[0]")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.calls().len(), synced, "a bad Node changes nothing");
    assert!(observer.last_health().unwrap().tainted_for_deletion);

    // Deleting the file deletes the Node, and with it the node IPs the
    // backends were built with: like upstream's NodeManager, kube-proxy
    // exits so that its restart programs the new ones.
    std::fs::remove_file(dir.0.join("node-a.yaml")).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the runtime ends when the node's IPs change")
        .unwrap();
    match ended {
        Err(proxy_core::Error::Restart(why)) => assert!(why.contains("node-a"), "{why}"),
        other => panic!("expected a restart, got {other:?}"),
    }
    drop(stop);
}

#[tokio::test]
async fn the_initial_state_holds_this_nodes_object_only() {
    let dir = TempDir::new("manifest-initial-node");
    write(
        &dir.0,
        "nodes.yaml",
        &[
            node_manifest("node-a", "zone-a", &["10.0.0.1"], &["10.244.1.0/24"], ""),
            node_manifest("node-z", "zone-z", &["10.0.0.9"], &["10.244.9.0/24"], ""),
        ]
        .join("---\n"),
    );
    let source = ManifestSource::new(&dir.0).unwrap();
    let (_, node) = initial_state(Box::new(source), "node-a").await.unwrap();
    assert_eq!(node.unwrap().metadata.name.as_deref(), Some("node-a"));

    let source = ManifestSource::new(&dir.0).unwrap();
    let (_, node) = initial_state(Box::new(source), "node-q").await.unwrap();
    assert!(node.is_none(), "no Node of that name");
}
