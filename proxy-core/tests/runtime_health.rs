//! The proxy health server (`/healthz`, `/livez`) and the health-check node
//! ports, over real HTTP on loopback, with an injected clock.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use proxy_core::runtime::health::{
    Clock, HealthCheckAddresses, HealthServer, ProxyHealth, ServiceHealthServer, health_check_body,
};
use proxy_core::runtime::metrics::ProxyMetrics;
use proxy_core::runtime::{NodeHealth, SyncObserver, SyncReport};
use proxy_core::{
    ChangeSet, IpFamily, NodeInfo, NodeView, ProxyMode, ServiceKey, ServiceTopology, SyncStats,
};

const NODE: &str = "node-a";
const T0: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z
const SYNC_PERIOD: Duration = Duration::from_secs(30);

/// A clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(T0))))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    fn shared(&self) -> Arc<dyn Clock> {
        let me = self.clone();
        Arc::new(move || *me.0.lock().unwrap())
    }
}

/// Status, headers (lowercase names) and body of one `GET`.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A minimal HTTP/1.1 `GET` with `Connection: close`.
async fn get(addr: SocketAddr, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn serve_health(health: Arc<ProxyHealth>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HealthServer::new(health);
    tokio::spawn(async move { server.serve_listener(listener).await });
    addr
}

fn eligible() -> NodeHealth {
    NodeHealth {
        known: true,
        ..NodeHealth::default()
    }
}

fn report<'a>(
    family: IpFamily,
    view: &'a NodeView,
    previous: &'a NodeView,
    changes: &'a ChangeSet,
    stats: &'a SyncStats,
) -> SyncReport<'a> {
    SyncReport {
        family,
        mode: ProxyMode::Iptables,
        full: true,
        duration: Duration::from_millis(5),
        stats,
        view,
        previous,
        changes,
        trigger_times: &[],
    }
}

/// Reports a successful sync of an empty view of `family`.
fn synced(observer: &dyn SyncObserver, family: IpFamily) {
    let view = NodeView::empty(family, NodeInfo::named(NODE).shared());
    let (changes, stats) = (ChangeSet::full(), SyncStats::default());
    observer.synced(&report(family, &view, &view, &changes, &stats));
}

#[tokio::test]
async fn healthz_turns_unhealthy_after_two_sync_periods_pending() {
    let clock = ManualClock::new();
    let metrics = Arc::new(ProxyMetrics::new());
    let health =
        Arc::new(ProxyHealth::new(2 * SYNC_PERIOD, clock.shared()).with_metrics(metrics.clone()));
    health.node(&eligible());
    let addr = serve_health(health.clone()).await;

    // Start-up: nothing queued yet; healthy, no status.
    let a = get(addr, "/healthz").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        a.body,
        r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:20Z","nodeEligible":true,"healthy":true}"#
    );

    // Queued at T0, synced at T0+1s: healthy, the family reported.
    health.queued(IpFamily::V4, SystemTime::now());
    clock.advance(Duration::from_secs(1));
    synced(health.as_ref(), IpFamily::V4);
    let body = get(addr, "/healthz").await.json();
    assert_eq!(
        body["status"]["IPv4"],
        json!({"lastUpdated": "2023-11-14T22:13:21Z", "healthy": true})
    );

    // Queued at T0+1s; 59s later still healthy, at 60s unhealthy.
    health.queued(IpFamily::V4, SystemTime::now());
    clock.advance(Duration::from_secs(59));
    assert_eq!(get(addr, "/healthz").await.status, 200);
    // A later queued change does not reset the oldest pending one.
    health.queued(IpFamily::V4, SystemTime::now());
    clock.advance(Duration::from_secs(1));
    let a = get(addr, "/healthz").await;
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body,
        concat!(
            r#"{"lastUpdated":"2023-11-14T22:13:21Z","currentTime":"2023-11-14T22:14:21Z","nodeEligible":true,"healthy":false,"#,
            r#""status":{"IPv4":{"lastUpdated":"2023-11-14T22:13:21Z","healthy":false}}}"#
        )
    );
    assert_eq!(get(addr, "/livez").await.status, 503);

    // A successful sync heals it.
    synced(health.as_ref(), IpFamily::V4);
    assert_eq!(get(addr, "/healthz").await.status, 200);

    let text = metrics.encode();
    assert!(
        text.contains(r#"kubeproxy_proxy_healthz_total{code="200"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kubeproxy_proxy_healthz_total{code="503"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kubeproxy_proxy_livez_total{code="503"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn one_late_family_makes_the_proxy_unhealthy() {
    let clock = ManualClock::new();
    let health = Arc::new(ProxyHealth::new(2 * SYNC_PERIOD, clock.shared()));
    health.node(&eligible());
    for family in IpFamily::ALL {
        health.queued(family, SystemTime::now());
    }
    synced(health.as_ref(), IpFamily::V4);
    clock.advance(2 * SYNC_PERIOD);
    let addr = serve_health(health.clone()).await;
    let a = get(addr, "/livez").await;
    assert_eq!(a.status, 503);
    let body = a.json();
    assert_eq!(body["status"]["IPv4"]["healthy"], json!(true));
    assert_eq!(
        body["status"]["IPv6"],
        json!({"lastUpdated": "0001-01-01T00:00:00Z", "healthy": false})
    );
    assert!(
        body.get("nodeEligible").is_none(),
        "livez has no nodeEligible: {body}"
    );
    assert!(!health.is_healthy());
}

#[tokio::test]
async fn healthz_needs_an_eligible_node_and_livez_does_not() {
    let clock = ManualClock::new();
    let health = Arc::new(ProxyHealth::new(2 * SYNC_PERIOD, clock.shared()));
    let addr = serve_health(health.clone()).await;

    let cases = [
        ("unknown node", NodeHealth::default()),
        (
            "node being deleted",
            NodeHealth {
                deleting: true,
                ..eligible()
            },
        ),
        (
            "node tainted ToBeDeletedByClusterAutoscaler",
            NodeHealth {
                tainted_for_deletion: true,
                ..eligible()
            },
        ),
    ];
    for (case, node) in cases {
        health.node(&node);
        let a = get(addr, "/healthz").await;
        assert_eq!(a.status, 503, "{case}");
        assert_eq!(a.json()["nodeEligible"], json!(false), "{case}");
        assert_eq!(
            a.json()["healthy"],
            json!(true),
            "{case}: the proxy itself is healthy"
        );
        assert_eq!(get(addr, "/livez").await.status, 200, "{case}");
    }
    health.node(&eligible());
    assert_eq!(get(addr, "/healthz").await.status, 200);
}

// ---- health-check node ports ----

/// An eTP=Local LoadBalancer service `ns/<name>` with health-check node
/// port `hcnp` and UDP+TCP ports.
fn lb_service(name: &str, ip: &str, hcnp: u16) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": hcnp,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
            ],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}},
    }))
    .unwrap()
}

/// Endpoints `(ip, node, ready, terminating)` of `ns/<svc>` on both ports.
fn slice(svc: &str, endpoints: &[(&str, &str, bool, bool)]) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node, ready, terminating)| {
            json!({"addresses": [ip], "nodeName": node,
                   "conditions": {"ready": ready, "serving": true, "terminating": terminating}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{svc}-1"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// Asserts a fixture was accepted whole.
fn ok(applied: proxy_core::topology::Applied) {
    assert!(
        applied.errors.is_empty(),
        "fixture rejected: {:?}",
        applied.errors
    );
}

fn view(topology: &ServiceTopology) -> NodeView {
    NodeView::build(topology, NodeInfo::named(NODE).shared(), IpFamily::V4)
}

/// A free loopback TCP port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)
}

#[tokio::test]
async fn health_check_node_ports_answer_per_local_endpoints_and_proxy_health() {
    let clock = ManualClock::new();
    let health = Arc::new(ProxyHealth::new(2 * SYNC_PERIOD, clock.shared()));
    let server = ServiceHealthServer::new(
        health.clone(),
        HealthCheckAddresses::Ips(vec![IpAddr::from([127, 0, 0, 1])]),
    );
    let (port_a, port_b) = (free_port(), free_port());

    let mut topology = ServiceTopology::new();
    ok(topology.apply_service(&lb_service("a", "172.30.0.1", port_a)));
    ok(topology.apply_service(&lb_service("b", "172.30.0.2", port_b)));
    // a: two local ready endpoints on one IP twice (counted once), one remote, one local terminating.
    ok(topology.apply_endpoint_slice(&slice(
        "a",
        &[
            ("10.0.0.1", NODE, true, false),
            ("10.0.0.2", NODE, true, false),
            ("10.0.1.1", "node-b", true, false),
            ("10.0.0.3", NODE, false, true),
        ],
    )));
    // b: only a local terminating endpoint.
    ok(topology.apply_endpoint_slice(&slice(
        "b",
        &[
            ("10.0.0.9", NODE, false, true),
            ("10.0.1.9", "node-b", true, false),
        ],
    )));
    let v = view(&topology);
    let empty = NodeView::empty(IpFamily::V4, NodeInfo::named(NODE).shared());
    let (changes, stats) = (ChangeSet::full(), SyncStats::default());
    server.synced(&report(IpFamily::V4, &v, &empty, &changes, &stats));
    assert_eq!(
        server.services(),
        vec![
            (ServiceKey::new("ns", "a"), port_a),
            (ServiceKey::new("ns", "b"), port_b)
        ]
    );

    let a = get(loopback(port_a), "/any/path").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(a.header("x-load-balancing-endpoint-weight"), Some("2"));
    assert_eq!(
        a.body,
        "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"a\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
    );

    let b = get(loopback(port_b), "/").await;
    assert_eq!(b.status, 503, "only terminating local endpoints");
    assert_eq!(b.header("x-load-balancing-endpoint-weight"), Some("0"));
    assert_eq!(
        b.body,
        health_check_body(&ServiceKey::new("ns", "b"), 0, true)
    );

    // The proxy turns unhealthy: even a service with endpoints answers 503.
    health.queued(IpFamily::V4, SystemTime::now());
    clock.advance(2 * SYNC_PERIOD);
    let a = get(loopback(port_a), "/").await;
    assert_eq!(a.status, 503);
    assert!(
        a.body.contains("\"serviceProxyHealthy\": false"),
        "{}",
        a.body
    );

    // Service b goes away: its listener closes, a's stays.
    topology.delete_service("ns", "b");
    let v2 = view(&topology);
    server.synced(&report(IpFamily::V4, &v2, &v, &changes, &stats));
    assert_eq!(
        server.services(),
        vec![(ServiceKey::new("ns", "a"), port_a)]
    );
    let mut closed = false;
    for _ in 0..50 {
        if TcpStream::connect(loopback(port_b)).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the listener of the removed service is closed");
}

#[tokio::test]
async fn a_failed_bind_is_counted_and_not_fatal() {
    let health = Arc::new(ProxyHealth::new(2 * SYNC_PERIOD, Arc::new(SystemTime::now)));
    let server = ServiceHealthServer::new(
        health,
        HealthCheckAddresses::Ips(vec![IpAddr::from([127, 0, 0, 1])]),
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let free = free_port();

    let mut topology = ServiceTopology::new();
    ok(topology.apply_service(&lb_service("busy", "172.30.0.1", taken_port)));
    ok(topology.apply_service(&lb_service("ok", "172.30.0.2", free)));
    let v = view(&topology);
    let (changes, stats) = (ChangeSet::full(), SyncStats::default());
    server.synced(&report(IpFamily::V4, &v, &v, &changes, &stats));
    server.synced(&report(IpFamily::V4, &v, &v, &changes, &stats));

    assert_eq!(
        server.bind_failures(&ServiceKey::new("ns", "busy")),
        2,
        "retried at every sync"
    );
    assert_eq!(server.services(), vec![(ServiceKey::new("ns", "ok"), free)]);
    assert_eq!(get(loopback(free), "/").await.status, 503, "no endpoints");
}

/// Whether `addr` comes to accept connections (`accepting`) or to refuse
/// them within a second (a closed listener's abort takes effect on the
/// runtime's next turn).
async fn settles(addr: SocketAddr, accepting: bool) -> bool {
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_ok() == accepting {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn health_check_node_ports_follow_the_host_addresses_node_port_addresses_selects() {
    use proxy_core::config::NodePortAddresses;

    let health = Arc::new(ProxyHealth::new(2 * SYNC_PERIOD, Arc::new(SystemTime::now)));
    // The host's addresses as the lister reports them: loopback ones, so
    // that the test binds them without a namespace (Linux routes all of
    // 127/8 to lo).
    let host: Arc<Mutex<Vec<IpAddr>>> = Arc::new(Mutex::new(vec![
        IpAddr::from([127, 0, 0, 2]),
        IpAddr::from([127, 0, 1, 2]),
    ]));
    let lister = host.clone();
    let server = Arc::new(ServiceHealthServer::for_node_port_addresses(
        health.clone(),
        NodePortAddresses::parse(&["127.0.0.0/24"]).unwrap(),
        Arc::new(move || Ok(lister.lock().unwrap().clone())),
    ));
    let port = free_port();
    let at = |last: u8| SocketAddr::new(IpAddr::from([127, 0, 0, last]), port);

    let mut topology = ServiceTopology::new();
    ok(topology.apply_service(&lb_service("a", "172.30.0.1", port)));
    ok(topology.apply_endpoint_slice(&slice("a", &[("10.0.0.1", NODE, true, false)])));
    let v = view(&topology);
    let (changes, stats) = (ChangeSet::full(), SyncStats::default());
    server.synced(&report(IpFamily::V4, &v, &v, &changes, &stats));
    // IPv4 only the host's addresses inside the CIDR; IPv6 (no CIDR of
    // its own) each of the host's IPv6 addresses: none here.
    assert_eq!(
        server.addresses(),
        Some(HealthCheckAddresses::Ips(vec![IpAddr::from([
            127, 0, 0, 2
        ])]))
    );
    assert_eq!(get(at(2), "/").await.status, 200);
    assert!(
        settles(at(3), false).await,
        "an address the host does not have"
    );
    let outside = SocketAddr::new(IpAddr::from([127, 0, 1, 2]), port);
    assert!(settles(outside, false).await, "an address outside the CIDR");

    // The host's addresses change: a refresh (what the rtnetlink watch
    // calls) rebinds without a sync; the kept address is not disturbed.
    host.lock().unwrap().push(IpAddr::from([127, 0, 0, 3]));
    server.refresh_host_addresses();
    assert!(settles(at(3), true).await, "the added address serves");
    assert_eq!(get(at(3), "/").await.status, 200);
    assert_eq!(get(at(2), "/").await.status, 200);

    host.lock()
        .unwrap()
        .retain(|ip| *ip != IpAddr::from([127, 0, 0, 2]));
    server.refresh_host_addresses();
    assert!(settles(at(2), false).await, "the removed address is closed");
    assert_eq!(get(at(3), "/").await.status, 200);
    assert_eq!(server.services(), vec![(ServiceKey::new("ns", "a"), port)]);
    assert_eq!(server.bind_failures(&ServiceKey::new("ns", "a")), 0);

    // Every address when the list matches all: no host listing, no watch.
    let all = Arc::new(ServiceHealthServer::for_node_port_addresses(
        health,
        NodePortAddresses::parse::<&str>(&[]).unwrap(),
        Arc::new(|| Err(std::io::Error::other("not called"))),
    ));
    assert!(all.watch_host_addresses().is_none());
    all.synced(&report(IpFamily::V4, &v, &v, &changes, &stats));
    assert_eq!(all.addresses(), Some(HealthCheckAddresses::All));
}
