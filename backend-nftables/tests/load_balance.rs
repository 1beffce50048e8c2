//! ClusterIP-only service ports share `load-balance-PROTO-N` chains and
//! keep their endpoints in the load-balancing maps, so adding a service or
//! changing an endpoint writes map elements only (no chain, no rule).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend_nftables::fake::{FakeExecutor, FakeNft, SharedFake, lock};
use backend_nftables::ir::{Command, Transaction};
use backend_nftables::{Executor, NftError, NftablesBackend};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::{BackendContext, LocalTrafficDetector};
use proxy_core::{
    Backend, ChangeSet, IpFamily, NodeInfo, NodeView, Protocol, ServiceKey, ServicePortName,
    ServiceTopology,
};
use serde_json::json;

/// Applies to a fake and keeps every transaction.
struct Recording {
    inner: FakeExecutor,
    log: Arc<Mutex<Vec<Transaction>>>,
}

#[async_trait::async_trait]
impl Executor for Recording {
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        self.log.lock().unwrap().push(tx.clone());
        self.inner.apply(tx).await
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        self.inner.table_exists(family).await
    }
}

fn service(name: &str, ip: Ipv4Addr, node_port: bool) -> Service {
    let mut port = json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080});
    let mut spec = json!({"clusterIP": ip.to_string(), "ports": []});
    if node_port {
        port["nodePort"] = json!(30080);
        spec["type"] = json!("NodePort");
    }
    spec["ports"] = json!([port]);
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "t"}, "spec": spec}))
        .unwrap()
}

fn slice(name: &str, ips: &[Ipv4Addr]) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "nodeName": "node-b", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "t", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn ep(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, i)
}

struct Setup {
    topo: ServiceTopology,
    view: NodeView,
    backend: NftablesBackend,
    fake: SharedFake,
    log: Arc<Mutex<Vec<Transaction>>>,
}

impl Setup {
    fn new() -> Setup {
        let mut n = NodeInfo::named("node-a");
        n.addresses = vec![IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))];
        let node = n.shared();
        let mut ctx = BackendContext::for_tests(IpFamily::V4, node.clone());
        ctx.local_detector = LocalTrafficDetector::Cidr("10.244.0.0/16".parse().unwrap());
        let fake = FakeNft::shared();
        let log = Arc::new(Mutex::new(Vec::new()));
        let exec = Recording {
            inner: FakeExecutor::new(fake.clone()),
            log: log.clone(),
        };
        let backend = NftablesBackend::with_executor(&ctx, Box::new(exec))
            .with_stale_chain_delay(Duration::ZERO);
        let topo = ServiceTopology::new();
        let view = NodeView::build(&topo, node.clone(), IpFamily::V4);
        Setup {
            topo,
            view,
            backend,
            fake,
            log,
        }
    }

    /// Creates or updates service `name`; returns its port.
    fn put(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        eps: &[Ipv4Addr],
        node_port: bool,
    ) -> ServicePortName {
        let _ = self.topo.apply_service(&service(name, ip, node_port));
        let _ = self.topo.apply_endpoint_slice(&slice(name, eps));
        self.view
            .update_service(&self.topo, &ServiceKey::new("t", name));
        ServicePortName::new("t", name, "http", Protocol::Tcp)
    }

    fn chains(&self) -> Vec<(String, usize)> {
        let fake = lock(&self.fake);
        fake.table(IpFamily::V4)
            .unwrap()
            .chains
            .iter()
            .filter(|(_, c)| c.def.base.is_none())
            .map(|(n, c)| (n.clone(), c.rules.len()))
            .collect()
    }

    fn last_tx(&self) -> Transaction {
        self.log.lock().unwrap().last().cloned().unwrap()
    }
}

fn writes_rules_or_chains(tx: &Transaction) -> bool {
    tx.commands.iter().any(|c| {
        matches!(
            c,
            Command::AddRule { .. }
                | Command::AddChain(_)
                | Command::FlushChain(_)
                | Command::DeleteChain(_)
        )
    })
}

#[tokio::test]
async fn cluster_ip_ports_share_one_chain_per_endpoint_count() {
    let mut s = Setup::new();
    s.put("a", Ipv4Addr::new(10, 96, 0, 1), &[ep(1), ep(2)], false);
    s.put("b", Ipv4Addr::new(10, 96, 0, 2), &[ep(3), ep(4)], false);
    s.put(
        "c",
        Ipv4Addr::new(10, 96, 0, 3),
        &[ep(5), ep(6), ep(7)],
        false,
    );
    s.put("np", Ipv4Addr::new(10, 96, 0, 4), &[ep(8)], true);
    s.backend.sync(&s.view, &ChangeSet::full()).await.unwrap();
    let chains: Vec<String> = s.chains().into_iter().map(|(n, _)| n).collect();
    assert!(
        chains.contains(&"load-balance-tcp-2".to_string()),
        "{chains:?}"
    );
    assert!(
        chains.contains(&"load-balance-tcp-3".to_string()),
        "{chains:?}"
    );
    // Only the node-port service has chains of its own (names with `/`).
    let own: Vec<&String> = chains.iter().filter(|c| c.contains('/')).collect();
    assert_eq!(own.len(), 2, "{own:?}");
    assert!(own.iter().all(|c| c.contains("t/np/")), "{own:?}");
    let fake = lock(&s.fake);
    let map = &fake.table(IpFamily::V4).unwrap().sets["load-balance-tcp-endpoints"];
    assert_eq!(map.elements.len(), 7);
}

#[tokio::test]
async fn adding_a_service_and_changing_an_endpoint_write_elements_only() {
    let mut s = Setup::new();
    s.put("a", Ipv4Addr::new(10, 96, 0, 1), &[ep(1), ep(2)], false);
    s.backend.sync(&s.view, &ChangeSet::full()).await.unwrap();

    let changes =
        ChangeSet::partial([s.put("b", Ipv4Addr::new(10, 96, 0, 2), &[ep(3), ep(4)], false)]);
    let stats = s.backend.sync(&s.view, &changes).await.unwrap();
    assert!(!stats.full);
    let tx = s.last_tx();
    assert!(!writes_rules_or_chains(&tx), "{}", tx.to_script());

    let changes =
        ChangeSet::partial([s.put("a", Ipv4Addr::new(10, 96, 0, 1), &[ep(1), ep(9)], false)]);
    s.backend.sync(&s.view, &changes).await.unwrap();
    let tx = s.last_tx();
    assert!(!writes_rules_or_chains(&tx), "{}", tx.to_script());
    let script = tx.to_script();
    assert!(
        script.contains("10.96.0.1 . 80 . 1 : 10.244.1.9 . 8080"),
        "{script}"
    );
}

#[tokio::test]
async fn a_shared_chain_is_written_once_and_flushed_then_deleted_after_its_last_user() {
    let mut s = Setup::new();
    s.put(
        "a",
        Ipv4Addr::new(10, 96, 0, 1),
        &[ep(1), ep(2), ep(3)],
        false,
    );
    s.backend.sync(&s.view, &ChangeSet::full()).await.unwrap();
    assert!(s.chains().contains(&("load-balance-tcp-3".to_string(), 2)));

    // A second user of the same chain does not rewrite it.
    let changes = ChangeSet::partial([s.put(
        "b",
        Ipv4Addr::new(10, 96, 0, 2),
        &[ep(4), ep(5), ep(6)],
        false,
    )]);
    s.backend.sync(&s.view, &changes).await.unwrap();
    assert!(!writes_rules_or_chains(&s.last_tx()));

    // Both move to two endpoints: the chain of three is flushed...
    let a = s.put("a", Ipv4Addr::new(10, 96, 0, 1), &[ep(1), ep(2)], false);
    let b = s.put("b", Ipv4Addr::new(10, 96, 0, 2), &[ep(4), ep(5)], false);
    let changes = ChangeSet::partial([a, b]);
    s.backend.sync(&s.view, &changes).await.unwrap();
    let chains = s.chains();
    assert!(
        chains.contains(&("load-balance-tcp-3".to_string(), 0)),
        "{chains:?}"
    );
    assert!(
        chains.contains(&("load-balance-tcp-2".to_string(), 2)),
        "{chains:?}"
    );

    // ...and deleted by the next transaction that writes something.
    let changes = ChangeSet::partial([s.put("c", Ipv4Addr::new(10, 96, 0, 3), &[ep(7)], false)]);
    s.backend.sync(&s.view, &changes).await.unwrap();
    let chains = s.chains();
    assert!(
        !chains.iter().any(|(n, _)| n == "load-balance-tcp-3"),
        "{chains:?}"
    );
    assert!(
        chains.contains(&("load-balance-tcp-1".to_string(), 2)),
        "{chains:?}"
    );
}
