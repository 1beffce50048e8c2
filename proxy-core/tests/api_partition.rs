//! A silent network partition between the node and the API server, with a
//! real black hole: the fake API server listens in its own network
//! namespace, the proxy's runtime runs in another, a veth joins them, and
//! the partition is an nftables table in the server's namespace that
//! drops every packet in and out (no reset, no ICMP: the client sees only
//! silence). A Service created during the partition must be synced
//! ≤ 10 s after the heal, and nothing is removed meanwhile.
//!
//! Needs root; run with `cargo test -p proxy-core --features netns --test
//! api_partition -- --nocapture` to see the measured latency. Without
//! privileges the test prints `SKIP: …` and passes, unless
//! `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI). The partition lasts 90 s
//! (the scenario); `API_PARTITION_SECS` changes it for
//! experiments.
#![cfg(feature = "netns")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod runtime_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::IpFamily;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};
use proxy_core::runtime::source::{KubeSource, KubeSourceOptions, client_from_config};
use proxy_core::runtime::{Runtime, RuntimeOptions, SyncObserver};
use runtime_support::fake_api::FakeApi;
use runtime_support::{RecordingFactory, RecordingObserver, service, slice, timing};

const CLIENT_IP: &str = "10.255.77.1";
const SERVER_IP: &str = "10.255.77.2";
/// The target: programmed ≤ 10 s after the heal.
const HEAL_BUDGET: Duration = Duration::from_secs(10);

fn partition_length() -> Duration {
    let secs = std::env::var("API_PARTITION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    Duration::from_secs(secs)
}

fn ip(ns: &Netns, args: &[&str]) {
    let output = ns.command("ip").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn nft(ns: &Netns, script: &str) {
    let output = ns
        .command("nft")
        .args(["-f", "-"])
        .output_with_input(script.as_bytes())
        .unwrap();
    assert!(
        output.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Drops every IPv4/IPv6 packet entering or leaving the server's namespace.
const PARTITION: &str = "table inet partition {
    chain input { type filter hook input priority -400; policy drop; }
    chain output { type filter hook output priority -400; policy drop; }
}
";

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn has(view: &[(String, Vec<String>)], port: &str) -> bool {
    view.iter().any(|(name, _)| name == port)
}

#[test]
fn a_service_created_during_a_silent_partition_is_synced_soon_after_the_heal() {
    let name = "a_service_created_during_a_silent_partition_is_synced_soon_after_the_heal";
    if !privileged_or_skip_with(name, || check_tool("nft", &["--version"], "nftables")) {
        return;
    }
    let node_ns = Netns::new().unwrap();
    let server_ns = Netns::new().unwrap();
    let server_path = server_ns.path();
    ip(
        &node_ns,
        &[
            "link",
            "add",
            "api0",
            "type",
            "veth",
            "peer",
            "name",
            "api1",
            "netns",
            server_path.to_str().unwrap(),
        ],
    );
    ip(
        &node_ns,
        &["addr", "add", &format!("{CLIENT_IP}/30"), "dev", "api0"],
    );
    ip(&node_ns, &["link", "set", "api0", "up"]);
    ip(&node_ns, &["link", "set", "lo", "up"]);
    ip(
        &server_ns,
        &["addr", "add", &format!("{SERVER_IP}/30"), "dev", "api1"],
    );
    ip(&server_ns, &["link", "set", "api1", "up"]);
    ip(&server_ns, &["link", "set", "lo", "up"]);

    // The server: its listening socket lives in the server namespace, so
    // every connection it accepts does; it is served from this thread's
    // runtime.
    let listener = server_ns
        .run(|| std::net::TcpListener::bind((SERVER_IP, 0)))
        .unwrap()
        .unwrap();
    let server_runtime = tokio::runtime::Runtime::new().unwrap();
    let api = {
        let _entered = server_runtime.enter();
        FakeApi::start_on(listener, false)
    };
    api.apply("services", service("web", &["172.30.0.10"]));
    api.apply("endpointslices", slice("web-1", "web", &["10.0.0.1"]));
    api.apply(
        "nodes",
        serde_json::json!({"metadata": {"name": "node-a"},
                           "status": {"addresses": [{"type": "InternalIP", "address": CLIENT_IP}]}}),
    );

    // The proxy's runtime, with the client built as the binary builds it
    // (`--master`), on a thread inside the node namespace: every socket
    // the client opens is there.
    let (factory, recorder) = RecordingFactory::new(vec![]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let master = api.url();
    let client = node_ns
        .spawn("proxy-runtime", move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let config = Arc::new(KubeProxyConfiguration::default());
                let client = client_from_config(&config, Some(&master)).await.unwrap();
                let mut options = RuntimeOptions::new(&config, "node-a");
                options.families = Some(vec![IpFamily::V4]);
                options.timing = timing();
                options.timing.min_interval = Duration::from_millis(50);
                let observers: Vec<Arc<dyn SyncObserver>> =
                    vec![Arc::new(RecordingObserver::default())];
                let source = KubeSource::new(
                    client,
                    KubeSourceOptions {
                        node_name: "node-a".into(),
                    },
                );
                Runtime::new(config, factory, observers, options)
                    .run(Box::new(source), async move {
                        let _ = stopped.await;
                    })
                    .await
            })
        })
        .unwrap();

    wait_for("the first sync", Duration::from_secs(30), || {
        !recorder.calls().is_empty()
    });
    wait_for("three watches", Duration::from_secs(30), || {
        api.requests_matching("watch=true") >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    let synced = recorder.calls().len();

    let partition = partition_length();
    nft(&server_ns, PARTITION);
    let cut = Instant::now();
    let requests_at_cut = api.requests.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(5).min(partition / 2));
    api.apply("services", service("db", &["172.30.0.12"]));
    api.apply("endpointslices", slice("db-1", "db", &["10.0.2.1"]));
    std::thread::sleep(partition.saturating_sub(cut.elapsed()));
    let calls = recorder.calls();
    assert_eq!(
        api.requests.lock().unwrap().len(),
        requests_at_cut,
        "the black hole let a request through"
    );
    assert!(
        calls.iter().all(|c| has(&c.view, "ns/web:http")),
        "rules stay in place during the partition: {calls:?}"
    );
    assert!(
        calls.iter().all(|c| !has(&c.view, "ns/db:http")),
        "the new Service cannot be seen during the partition: {calls:?}"
    );
    assert_eq!(calls.len(), synced, "nothing to sync during the partition");

    nft(&server_ns, "delete table inet partition\n");
    let healed = Instant::now();
    let latency = wait_for(
        "the Service created during the partition",
        Duration::from_secs(120),
        || {
            recorder
                .calls()
                .last()
                .is_some_and(|c| has(&c.view, "ns/db:http"))
        },
    );
    let after: Vec<String> = api.requests.lock().unwrap()[requests_at_cut..].to_vec();
    println!(
        "partition {:.0} s: the Service created during it was synced {:.1} s after the heal; \
         requests after the heal: {after:?}",
        (healed - cut).as_secs_f64(),
        latency.as_secs_f64()
    );
    assert!(
        latency <= HEAL_BUDGET,
        "synced {latency:?} after the heal, budget {HEAL_BUDGET:?}"
    );
    let last = recorder.calls().last().cloned().unwrap();
    assert!(has(&last.view, "ns/web:http"), "{last:?}");

    let _ = stop.send(());
    client.join().unwrap().unwrap().unwrap();
    drop(server_runtime);
}
