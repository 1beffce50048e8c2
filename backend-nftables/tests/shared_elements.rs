//! Elements several service ports want (a multi-port Service's ClusterIP,
//! endpoint IPs behind several Services, two Services claiming one
//! ClusterIP and port) stay right through partial syncs: after every
//! change the table is the one a full sync of the same view writes, also
//! when the element store's fingerprints collide (all of them, or many).

#![allow(clippy::unwrap_used)] // test code: a failure should panic

use std::net::{IpAddr, Ipv4Addr};

use backend_nftables::NftablesBackend;
use backend_nftables::fake::{FakeExecutor, FakeNft, lock};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::BackendContext;
use proxy_core::{Backend, ChangeSet, IpFamily, NodeInfo, NodeView, ServiceKey, ServiceTopology};
use serde_json::json;

fn context() -> BackendContext {
    let mut node = NodeInfo::named("node-a");
    node.addresses = vec![IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))];
    BackendContext::for_tests(IpFamily::V4, node.shared())
}

/// Service `name` with ClusterIP 10.96.0.`ip` and the given ports
/// (`nodePort` on the first one when `node_port`).
fn service(name: &str, ip: u8, ports: &[&str], node_port: bool) -> Service {
    let ports: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut port = json!({"name": p, "port": 80 + i, "protocol": "TCP"});
            if node_port && i == 0 {
                port["nodePort"] = json!(30080);
            }
            port
        })
        .collect();
    let kind = if node_port { "NodePort" } else { "ClusterIP" };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "t"},
        "spec": {"type": kind, "clusterIP": format!("10.96.0.{ip}"), "ports": ports},
    }))
    .unwrap()
}

/// The slice of `name`: endpoints 10.244.1.`e` for `e` in `eps`, every
/// port of `ports` on 8080 + its index.
fn slice(name: &str, ports: &[&str], eps: &[u8]) -> EndpointSlice {
    let ports: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"name": p, "port": 8080 + i, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<_> = eps
        .iter()
        .map(|e| json!({"addresses": [format!("10.244.1.{e}")], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "t",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// One step: a Service (with its slice) set, or deleted.
enum Step {
    Set(
        &'static str,
        u8,
        &'static [&'static str],
        bool,
        &'static [u8],
    ),
    Delete(&'static str),
}

const STEPS: &[Step] = &[
    Step::Set("a", 1, &["http", "dns"], false, &[1, 2, 3]),
    Step::Set("b", 2, &["http"], false, &[2, 3, 4]),
    // c claims a's ClusterIP and first port: a, first by name, wins.
    Step::Set("c", 1, &["http"], true, &[5]),
    Step::Set("d", 4, &["http"], true, &[1, 5]),
    Step::Set("a", 1, &["http"], false, &[3, 6]),
    Step::Set("b", 2, &["http"], false, &[]),
    Step::Delete("a"),
    Step::Set("c", 1, &["http", "dns"], false, &[1, 2]),
    Step::Set("a", 1, &["http", "dns"], true, &[1, 2, 7]),
    Step::Delete("c"),
    Step::Set("b", 2, &["http"], false, &[1, 2, 3, 4, 5, 6, 7]),
    Step::Delete("d"),
    Step::Delete("b"),
    Step::Delete("a"),
];

/// After these steps, the verdict of 10.96.0.1:80, claimed by `a` and `c`:
/// the first by name, whatever came first.
const WINNER: &[(usize, &str)] = &[
    (2, "goto load-balance-tcp-3"),
    (6, "goto service-T6GFQ3HQ-t/c/tcp/http"),
    (8, "goto service-MUAICNXD-t/a/tcp/http"),
];

fn apply(topo: &mut ServiceTopology, step: &Step) -> ServiceKey {
    match step {
        Step::Set(name, ip, ports, node_port, eps) => {
            assert!(
                topo.apply_service(&service(name, *ip, ports, *node_port))
                    .errors
                    .is_empty()
            );
            assert!(
                topo.apply_endpoint_slice(&slice(name, ports, eps))
                    .errors
                    .is_empty()
            );
            ServiceKey::new("t", name.to_string())
        }
        Step::Delete(name) => {
            topo.delete_service("t", name);
            topo.delete_endpoint_slice("t", &format!("{name}-1"));
            ServiceKey::new("t", name.to_string())
        }
    }
}

async fn full_dump(view: &NodeView) -> String {
    let fake = FakeNft::shared();
    let ctx = context();
    let mut backend =
        NftablesBackend::with_executor(&ctx, Box::new(FakeExecutor::new(fake.clone())));
    backend.sync(view, &ChangeSet::full()).await.unwrap();
    lock(&fake).dump(IpFamily::V4)
}

async fn partial_syncs_match_full_ones(mask: Option<u64>) {
    let ctx = context();
    let fake = FakeNft::shared();
    let mut backend =
        NftablesBackend::with_executor(&ctx, Box::new(FakeExecutor::new(fake.clone())));
    if let Some(m) = mask {
        backend = backend.with_fingerprint_mask(m);
    }
    let mut topo = ServiceTopology::new();
    let mut view = NodeView::build(&topo, ctx.node.clone(), IpFamily::V4);
    backend.sync(&view, &ChangeSet::full()).await.unwrap();
    for (i, step) in STEPS.iter().enumerate() {
        let key = apply(&mut topo, step);
        let before = view.clone();
        view.update_service(&topo, &key);
        let changes = ChangeSet::between(&before, &view, [&key]);
        let stats = backend.sync(&view, &changes).await.unwrap();
        assert!(!stats.full, "step {i}: a partial sync");
        // (The dump leaves out flushed chains waiting for deletion.)
        let got = lock(&fake).dump(IpFamily::V4);
        let want = full_dump(&view).await;
        assert_eq!(got, want, "step {i} (mask {mask:?})");
        if let Some((_, verdict)) = WINNER.iter().find(|(step, _)| *step == i) {
            let line = format!("  element 10.96.0.1 . tcp . 80 : {verdict}\n");
            assert!(got.contains(&line), "step {i}: want {line}in\n{got}");
        }
    }
}

#[tokio::test]
async fn partial_syncs_of_shared_elements_write_what_a_full_sync_does() {
    partial_syncs_match_full_ones(None).await;
}

#[tokio::test]
async fn colliding_fingerprints_change_nothing() {
    partial_syncs_match_full_ones(Some(0)).await;
    partial_syncs_match_full_ones(Some(0b11)).await;
}
