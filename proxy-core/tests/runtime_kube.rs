//! The Kubernetes source against a fake API server over real HTTP:
//! initial gating, add/update/delete, dropped watches, `410 Gone`, outages,
//! and objects pruned of managed fields on every (re)list.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod runtime_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use proxy_core::IpFamily;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::{KubeSource, KubeSourceOptions, Source, SourceEvent, Update};
use proxy_core::runtime::{Runtime, RuntimeOptions, SyncObserver};
use runtime_support::fake_api::FakeApi;
use runtime_support::{
    Recorder, RecordingFactory, RecordingObserver, SyncCall, service, slice, timing,
};
use tokio::sync::oneshot;

async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Running {
    recorder: Arc<Recorder>,
    observer: Arc<RecordingObserver>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), proxy_core::Error>>,
}

fn start(api: &FakeApi) -> Running {
    let (factory, recorder) = RecordingFactory::new(vec![]);
    let observer = Arc::new(RecordingObserver::default());
    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.families = Some(vec![IpFamily::V4]);
    options.timing = timing();
    options.timing.min_interval = Duration::from_millis(50);
    let observers: Vec<Arc<dyn SyncObserver>> = vec![observer.clone()];
    let runtime = Runtime::new(config, factory, observers, options);
    let source = KubeSource::new(
        api.client(),
        KubeSourceOptions {
            node_name: "node-a".into(),
        },
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(Box::new(source), async move {
        let _ = stopped.await;
    }));
    Running {
        recorder,
        observer,
        stop,
        task,
    }
}

fn service_lists(api: &FakeApi) -> usize {
    let requests = api.requests.lock().unwrap();
    requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/services?") && !r.contains("watch=true"))
        .count()
}

fn last(calls: &[SyncCall]) -> &SyncCall {
    calls.last().unwrap()
}

fn node(zone: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": zone}},
                       "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]}})
}

#[tokio::test]
async fn watches_with_upstreams_selectors_and_gates_the_first_sync() {
    let api = FakeApi::start(true).await;
    api.apply("services", service("web", &["172.30.0.10"]));
    api.apply("endpointslices", slice("web-1", "web", &["10.0.0.1"]));
    api.apply("nodes", node("z1"));
    let run = start(&api);

    eventually("the service list", Duration::from_secs(10), || {
        api.requests_matching("/api/v1/services?") > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        run.recorder.calls().is_empty(),
        "no sync before the EndpointSlice list"
    );
    api.release_slices();
    eventually("the first sync", Duration::from_secs(10), || {
        run.recorder.calls().len() == 1
    })
    .await;
    let first = run.recorder.calls()[0].clone();
    assert!(first.full);
    assert_eq!(
        first.view,
        vec![("ns/web:http".to_string(), vec!["10.0.0.1".to_string()])]
    );

    let requests = api.requests.lock().unwrap().clone();
    let selector = "labelSelector=%21service.kubernetes.io%2Fservice-proxy-name%2C%21service.kubernetes.io%2Fheadless";
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("/api/v1/services?") && r.contains(selector)),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(
            |r| r.starts_with("/apis/discovery.k8s.io/v1/endpointslices?") && r.contains(selector)
        ),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with("/api/v1/nodes?")
            && r.contains("fieldSelector=metadata.name%3Dnode-a")),
        "{requests:?}"
    );
    // Lists come in pages of 100: a relist holds one decoded page at a time.
    for kind in [
        "/api/v1/services?",
        "/apis/discovery.k8s.io/v1/endpointslices?",
    ] {
        let lists: Vec<&String> = requests
            .iter()
            .filter(|r| r.starts_with(kind) && !r.contains("watch="))
            .collect();
        assert!(
            !lists.is_empty() && lists.iter().all(|r| r.contains("limit=100")),
            "{requests:?}"
        );
    }
    assert!(
        run.observer
            .events()
            .contains(&"node known=true".to_string())
    );
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn follows_changes_and_survives_dropped_watches_gone_and_outages() {
    let api = FakeApi::start(false).await;
    api.apply("services", service("web", &["172.30.0.10"]));
    api.apply("endpointslices", slice("web-1", "web", &["10.0.0.1"]));
    api.apply("services", service("api", &["172.30.0.11"]));
    api.apply("endpointslices", slice("api-1", "api", &["10.0.1.1"]));
    let run = start(&api);
    let wait = Duration::from_secs(20);
    eventually("the first sync", wait, || run.recorder.calls().len() == 1).await;
    // Let every watch open before changing things.
    eventually("three watches", wait, || {
        api.requests_matching("watch=true") >= 3
    })
    .await;

    // add, update, delete
    api.apply("services", service("db", &["172.30.0.12"]));
    api.apply("endpointslices", slice("db-1", "db", &["10.0.2.1"]));
    eventually("the add", wait, || {
        last(&run.recorder.calls()).view.len() == 3
    })
    .await;
    api.apply(
        "endpointslices",
        slice("web-1", "web", &["10.0.0.1", "10.0.0.2"]),
    );
    eventually("the update", wait, || {
        last(&run.recorder.calls())
            .view
            .iter()
            .any(|(n, eps)| n == "ns/web:http" && eps.len() == 2)
    })
    .await;
    api.delete("services", "ns", "db");
    eventually("the delete", wait, || {
        last(&run.recorder.calls()).view.len() == 2
    })
    .await;
    let synced = run.recorder.calls().len();
    assert!(
        run.recorder.calls().iter().skip(1).all(|c| !c.full),
        "changes are partial syncs"
    );

    // A dropped watch re-watches; nothing is written.
    let watches = api.requests_matching("watch=true");
    api.drop_watches();
    eventually("the re-watch", wait, || {
        api.requests_matching("watch=true") >= watches + 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        run.recorder.calls().len(),
        synced,
        "a dropped watch changes nothing"
    );

    // 410 Gone: a relist that finds nothing new writes nothing.
    let lists = service_lists(&api);
    api.expire_watches();
    api.drop_watches();
    eventually("the relist", wait, || service_lists(&api) > lists).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        run.recorder.calls().len(),
        synced,
        "an unchanged relist writes nothing"
    );

    // An outage: rules stay; a deletion missed meanwhile is found by the relist.
    api.set_down(true);
    api.delete_silently("services", "ns", "api");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        run.recorder.calls().len(),
        synced,
        "nothing is removed while the API server is away"
    );
    api.expire_watches();
    api.set_down(false);
    eventually(
        "the relist after the outage",
        Duration::from_secs(60),
        || {
            last(&run.recorder.calls())
                .view
                .iter()
                .all(|(n, _)| n != "ns/api:http")
        },
    )
    .await;
    let calls = run.recorder.calls();
    assert_eq!(calls.len(), synced + 1, "{calls:?}");
    assert_eq!(last(&calls).changed_ports, ["ns/api:http"]);
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
}

/// `obj` with managed fields and a `last-applied-configuration`, as
/// `kubectl apply` leaves them.
fn as_applied(obj: impl serde::Serialize) -> serde_json::Value {
    let mut obj = serde_json::to_value(obj).unwrap();
    obj["metadata"]["managedFields"] = serde_json::json!([{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {}}}]);
    obj["metadata"]["labels"]["app"] = serde_json::json!("demo");
    obj["metadata"]["annotations"] = serde_json::json!({
        "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\"}"});
    obj
}

/// The `metadata` of the object an event carries (`None` for list markers).
fn event_meta(
    event: &SourceEvent,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> {
    fn of<K: kube::Resource>(update: &Update<K>) -> Option<&kube::core::ObjectMeta> {
        match update {
            Update::InitApply(k) | Update::Apply(k) | Update::Delete(k) => Some(k.meta()),
            Update::Init | Update::InitDone => None,
        }
    }
    match event {
        SourceEvent::Service(u) => of(u),
        SourceEvent::EndpointSlice(u) => of(u),
        SourceEvent::Node(u) => of(u),
    }
}

#[tokio::test]
async fn a_relist_keeps_no_managed_fields() {
    let api = FakeApi::start(false).await;
    api.apply("services", as_applied(service("web", &["172.30.0.10"])));
    api.apply(
        "endpointslices",
        as_applied(slice("web-1", "web", &["10.0.0.1"])),
    );
    api.apply("nodes", as_applied(node("z1")));
    let source = KubeSource::new(
        api.client(),
        KubeSourceOptions {
            node_name: "node-a".into(),
        },
    );
    let mut events = Box::new(source).events();
    // Reads until every kind finished a list; returns the listed objects' metadata.
    async fn one_list_each(
        events: &mut futures::stream::BoxStream<'static, SourceEvent>,
    ) -> Vec<kube::core::ObjectMeta> {
        let mut done = std::collections::BTreeSet::new();
        let mut listed = Vec::new();
        while done.len() < 3 {
            let event = tokio::time::timeout(Duration::from_secs(20), events.next())
                .await
                .expect("a list within 20 s")
                .expect("the source goes on");
            let kind = event.kind();
            let init_done = matches!(
                &event,
                SourceEvent::Service(Update::InitDone)
                    | SourceEvent::EndpointSlice(Update::InitDone)
                    | SourceEvent::Node(Update::InitDone)
            );
            if init_done {
                done.insert(format!("{kind:?}"));
            }
            listed.extend(event_meta(&event).cloned());
        }
        listed
    }
    let check = |listed: &[kube::core::ObjectMeta], when: &str| {
        assert_eq!(listed.len(), 3, "{when}: {listed:?}");
        for meta in listed {
            assert_eq!(meta.managed_fields, None, "{when}: {meta:?}");
            assert_eq!(meta.annotations, None, "{when}: {meta:?}");
            assert!(meta.resource_version.is_some(), "{when}: {meta:?}");
            assert!(meta.labels.is_some(), "{when}: labels stay: {meta:?}");
        }
    };
    check(&one_list_each(&mut events).await, "first list");

    // The server still has the fields: only the source dropped them.
    let stored = api.state_object("services", "ns/web");
    assert!(stored["metadata"]["managedFields"].is_array());

    // 410 Gone on every watch: each kind relists.
    let lists = service_lists(&api);
    api.expire_watches();
    api.drop_watches();
    check(&one_list_each(&mut events).await, "relist");
    assert!(service_lists(&api) > lists, "it was a relist");
}

/// Records `(level, target, message)` of every event on the thread it is
/// the default for (a current-thread test runtime runs every task there).
#[derive(Default, Clone)]
struct LogRecorder(Arc<std::sync::Mutex<Vec<(tracing::Level, String, String)>>>);

impl LogRecorder {
    fn count(&self, level: tracing::Level, message_starts: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _, m)| *l == level && m.starts_with(message_starts))
            .count()
    }
    fn proxy_logs_at(&self, level: tracing::Level) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, t, _)| *l == level && t.starts_with("proxy_core"))
            .map(|(_, t, m)| format!("{t}: {m}"))
            .collect()
    }
}

impl tracing::Subscriber for LogRecorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((*meta.level(), meta.target().to_string(), message.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn an_outage_is_logged_once_and_its_end_once() {
    let logs = LogRecorder::default();
    let _default = tracing::dispatcher::set_default(&tracing::Dispatch::new(logs.clone()));
    let api = FakeApi::start(false).await;
    api.apply("services", service("web", &["172.30.0.10"]));
    api.apply("nodes", node("z1"));
    let run = start(&api);
    let wait = Duration::from_secs(20);
    eventually("the first sync", wait, || run.recorder.calls().len() == 1).await;
    eventually("three watches", wait, || {
        api.requests_matching("watch=true") >= 3
    })
    .await;
    assert_eq!(
        logs.proxy_logs_at(tracing::Level::WARN),
        Vec::<String>::new(),
        "a healthy start warns of nothing"
    );

    // Down long enough for several failed retries of every watch.
    api.set_down(true);
    let requests = api.requests.lock().unwrap().len();
    eventually("several failed retries", wait, || {
        api.requests.lock().unwrap().len() >= requests + 9
    })
    .await;
    assert_eq!(logs.count(tracing::Level::WARN, "lost the API server"), 1);
    assert_eq!(
        logs.count(tracing::Level::INFO, "the API server answers again"),
        0
    );

    api.set_down(false);
    eventually("the end of the outage in the log", wait, || {
        logs.count(tracing::Level::INFO, "the API server answers again") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        logs.proxy_logs_at(tracing::Level::WARN).len(),
        1,
        "one warning per outage: {:?}",
        logs.proxy_logs_at(tracing::Level::WARN)
    );
    assert_eq!(
        logs.count(tracing::Level::INFO, "the API server answers again"),
        1
    );
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
}
