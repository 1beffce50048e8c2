//! A cold start in several transactions reports the service ports of each
//! one as it commits (`BackendContext::progress`), for the runtime's
//! progress log; a cold start in one transaction reports all of them once
//! it commits.

#![allow(clippy::unwrap_used)] // test code: a failure should panic

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use backend_nftables::fake::{FakeExecutor, FakeNft};
use backend_nftables::ir::Transaction;
use backend_nftables::{Executor, NftError, NftablesBackend};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::BackendContext;
use proxy_core::{Backend, ChangeSet, IpFamily, NodeInfo, NodeView, ServiceTopology};
use serde_json::json;

/// Applies to a fake and records the progress count at each transaction.
struct Recording {
    inner: FakeExecutor,
    ctx: BackendContext,
    seen: Arc<Mutex<Vec<usize>>>,
}

#[async_trait::async_trait]
impl Executor for Recording {
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        self.seen
            .lock()
            .unwrap()
            .push(self.ctx.progress.programmed());
        self.inner.apply(tx).await
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        self.inner.table_exists(family).await
    }
}

fn topology(services: u8) -> ServiceTopology {
    let mut topo = ServiceTopology::new();
    for i in 0..services {
        let name = format!("s{i}");
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "t"},
            "spec": {"clusterIP": format!("10.96.0.{}", i + 1),
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-1"), "namespace": "t",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [format!("10.244.1.{}", i + 1)], "conditions": {"ready": true}}],
        }))
        .unwrap();
        assert!(topo.apply_service(&service).errors.is_empty());
        assert!(topo.apply_endpoint_slice(&slice).errors.is_empty());
    }
    topo
}

async fn cold_start(chunk_objects: usize) -> (Vec<usize>, usize) {
    let mut node = NodeInfo::named("node-a");
    node.addresses = vec![IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))];
    let node = node.shared();
    let ctx = BackendContext::for_tests(IpFamily::V4, node.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let exec = Recording {
        inner: FakeExecutor::new(FakeNft::shared()),
        ctx: ctx.clone(),
        seen: seen.clone(),
    };
    let mut backend =
        NftablesBackend::with_executor(&ctx, Box::new(exec)).with_chunk_objects(chunk_objects);
    let view = NodeView::build(&topology(6), node, IpFamily::V4);
    backend.sync(&view, &ChangeSet::full()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (seen, ctx.progress.programmed())
}

#[tokio::test]
async fn a_chunked_cold_start_reports_the_ports_of_each_committed_transaction() {
    let (seen, done) = cold_start(1).await;
    // The skeleton, then one transaction per port, each counted once committed.
    assert_eq!(seen, [0, 0, 1, 2, 3, 4, 5]);
    assert_eq!(done, 6);
}

#[tokio::test]
async fn a_cold_start_in_one_transaction_reports_it_at_the_end() {
    let (seen, done) = cold_start(usize::MAX).await;
    assert_eq!(seen, [0, 0]);
    assert_eq!(done, 6);
}
