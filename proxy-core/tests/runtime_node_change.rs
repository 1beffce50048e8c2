//! The sync loop when this node's Node object changes: a secondary IP
//! added or removed is applied in place with a full sync whose views carry
//! the new node; a family's primary IP changing, or the pod CIDRs under
//! `detectLocalMode: NodeCIDR`, ends the run with `Error::Restart`, as
//! upstream's NodeManager exits.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod runtime_support;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::{ChannelSource, SourceEvent, Update};
use proxy_core::runtime::{Runtime, RuntimeOptions, SyncObserver, SyncReport};
use proxy_core::{IpFamily, ObjectKind};
use runtime_support::{Recorder, RecordingFactory, service, slice, timing};
use tokio::sync::{mpsc, oneshot};

/// The node IPs of every synced view, in order: `(family, full, IPs)`.
#[derive(Default)]
struct NodeIps(Mutex<Vec<(IpFamily, bool, Vec<IpAddr>)>>);

impl NodeIps {
    fn seen(&self) -> Vec<(IpFamily, bool, Vec<IpAddr>)> {
        self.0.lock().unwrap().clone()
    }
}

impl SyncObserver for NodeIps {
    fn synced(&self, report: &SyncReport<'_>) {
        self.0.lock().unwrap().push((
            report.family,
            report.full,
            report.view.node().addresses.clone(),
        ));
    }
}

struct Harness {
    events: mpsc::UnboundedSender<SourceEvent>,
    recorder: Arc<Recorder>,
    seen: Arc<NodeIps>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), proxy_core::Error>>,
}

fn node(ips: &[&str], pod_cidrs: &[&str]) -> Node {
    let addresses: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({"type": "InternalIP", "address": ip}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "resourceVersion": "1"},
        "spec": {"podCIDRs": pod_cidrs},
        "status": {"addresses": addresses}
    }))
    .unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

impl Harness {
    /// A dual-stack runtime whose initial lists hold one service and
    /// `first` as the Node.
    fn start(yaml: &str, first: Node) -> Harness {
        let (factory, recorder) = RecordingFactory::new(vec![]);
        let seen = Arc::new(NodeIps::default());
        let mut config: KubeProxyConfiguration = serde_saphyr::from_str(yaml).unwrap();
        config.apply_defaults();
        let config = Arc::new(config);
        let mut options = RuntimeOptions::new(&config, "node-a");
        options.families = Some(vec![IpFamily::V4, IpFamily::V6]);
        options.timing = timing();
        let observers: Vec<Arc<dyn SyncObserver>> = vec![seen.clone()];
        let runtime = Runtime::new(config, factory, observers, options);
        let (source, events) = ChannelSource::new(vec![
            ObjectKind::Service,
            ObjectKind::EndpointSlice,
            ObjectKind::Node,
        ]);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runtime.run(Box::new(source), async move {
            let _ = stopped.await;
        }));
        let h = Harness {
            events,
            recorder,
            seen,
            stop: Some(stop),
            task,
        };
        h.send(SourceEvent::Service(Update::Init));
        h.send(SourceEvent::Service(Update::InitApply(service(
            "web",
            &["172.30.0.10", "fd00::10"],
        ))));
        h.send(SourceEvent::Service(Update::InitDone));
        h.send(SourceEvent::EndpointSlice(Update::Init));
        h.send(SourceEvent::EndpointSlice(Update::InitApply(slice(
            "web-1",
            "web",
            &["10.0.0.1"],
        ))));
        h.send(SourceEvent::EndpointSlice(Update::InitDone));
        h.send(SourceEvent::Node(Update::Init));
        h.send(SourceEvent::Node(Update::InitApply(first)));
        h.send(SourceEvent::Node(Update::InitDone));
        h
    }

    fn send(&self, event: SourceEvent) {
        self.events.send(event).unwrap();
    }

    /// The run's end within `secs` of paused time, if it ended.
    async fn ended_within(&mut self, secs: f64) -> Option<Result<(), proxy_core::Error>> {
        tokio::time::timeout(Duration::from_secs_f64(secs), &mut self.task)
            .await
            .ok()
            .map(Result::unwrap)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn advance(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_secondary_ip_change_is_a_full_sync_with_the_new_node_and_no_restart() {
    let first = ["192.168.0.2", "2001:db8::2"];
    let mut h = Harness::start("mode: nftables\n", node(&first, &[]));
    advance(0.1).await;
    assert_eq!(h.seen.seen().len(), 2, "one first sync per family");
    assert_eq!(h.seen.seen()[0].2, ips(&first));

    // A second IPv4 address: upstream's GetNodeHostIPs (one per family)
    // does not change, so nothing restarts.
    let more = ["192.168.0.2", "2001:db8::2", "192.168.0.3"];
    h.send(SourceEvent::Node(Update::Apply(node(&more, &[]))));
    assert!(
        h.ended_within(5.0).await.is_none(),
        "a secondary IP does not restart"
    );
    let seen = h.seen.seen();
    assert_eq!(
        seen[2..].to_vec(),
        vec![
            (IpFamily::V4, true, ips(&more)),
            (IpFamily::V6, true, ips(&more)),
        ],
        "one full sync per family, whose views carry the new node"
    );
    assert_eq!(
        *h.recorder.built.lock().unwrap(),
        [IpFamily::V4, IpFamily::V6],
        "the backends are kept"
    );

    // And removed again.
    h.send(SourceEvent::Node(Update::Apply(node(&first, &[]))));
    assert!(h.ended_within(5.0).await.is_none());
    let seen = h.seen.seen();
    assert_eq!(seen.len(), 6);
    assert!(
        seen[4..]
            .iter()
            .all(|(_, full, node)| *full && *node == ips(&first))
    );

    // Pod CIDRs matter only under NodeCIDR: in place here.
    h.send(SourceEvent::Node(Update::Apply(node(
        &first,
        &["10.0.1.0/24"],
    ))));
    assert!(h.ended_within(5.0).await.is_none());
    assert_eq!(h.seen.seen().len(), 8);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_primary_ip_change_restarts() {
    let first = ["192.168.0.2", "2001:db8::2"];
    for (what, after) in [
        (
            "the IPv4 primary moved",
            &["192.168.0.9", "2001:db8::2"][..],
        ),
        (
            "the IPv6 primary moved",
            &["192.168.0.2", "2001:db8::9"][..],
        ),
        ("the IPv6 primary went", &["192.168.0.2"][..]),
        (
            "the primary family swapped",
            &["2001:db8::2", "192.168.0.2"][..],
        ),
    ] {
        let mut h = Harness::start("mode: nftables\n", node(&first, &[]));
        advance(0.1).await;
        let synced = h.seen.seen().len();
        h.send(SourceEvent::Node(Update::Apply(node(after, &[]))));
        match h.ended_within(5.0).await {
            Some(Err(proxy_core::Error::Restart(why))) => {
                assert!(
                    why.contains("node-a") && why.contains("primary"),
                    "{what}: {why}"
                )
            }
            other => panic!("{what}: expected a restart, got {other:?}"),
        }
        assert_eq!(
            h.seen.seen().len(),
            synced,
            "{what}: no sync with the new node"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_pod_cidr_change_restarts_under_node_cidr() {
    let first = ["192.168.0.2"];
    let mut h = Harness::start(
        "mode: iptables\ndetectLocalMode: NodeCIDR\n",
        node(&first, &["10.0.1.0/24"]),
    );
    advance(0.1).await;
    h.send(SourceEvent::Node(Update::Apply(node(
        &first,
        &["10.0.2.0/24"],
    ))));
    match h.ended_within(5.0).await {
        Some(Err(proxy_core::Error::Restart(why))) => assert!(why.contains("NodeCIDR"), "{why}"),
        other => panic!("expected a restart, got {other:?}"),
    }
}
