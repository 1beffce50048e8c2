//! Embedding the library: a platform team's own program that keeps a
//! backend in sync with objects it gets from anywhere (its own API, a
//! database, files), without the kube-proxy binary and without a cluster.
//!
//! ```text
//! cargo run -p examples --bin embed_backend
//! ```
//!
//! 1. feed Services and EndpointSlices (`k8s-openapi` types) into a
//!    [`ServiceTopology`], which validates them;
//! 2. project it onto this node with [`NodeView::build`];
//! 3. sync a backend (here the userspace one, which needs no privileges);
//! 4. on changes, let [`PendingChanges`] compute the partial change set, so
//!    the backend only touches what changed.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use backend_userspace::{Options, RedirectMode, UserspaceBackend};
use examples::{http, objects};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::BackendContext;
use proxy_core::changes::PendingChanges;
use proxy_core::{Backend, ChangeSet, IpFamily, NodeInfo, NodeView, ServiceTopology};

const NODE: &str = "embed-node";
const NODE_PORT: u16 = 30081;

fn service() -> anyhow::Result<Service> {
    Ok(objects::node_port_service("api", "10.96.0.81", NODE_PORT)?)
}

fn slice(ips: &[&str]) -> anyhow::Result<EndpointSlice> {
    Ok(objects::ready_slice("api", NODE, ips, 8081)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Two endpoints of our own.
    let mut servers = Vec::new();
    for ip in ["127.0.0.14", "127.0.0.15"] {
        let addr: SocketAddr = format!("{ip}:8081").parse()?;
        servers.push(http::serve(addr, format!("api at {addr}\n")).await?);
    }

    // 1. The model, fed object by object; each call says what changed.
    let mut topology = ServiceTopology::new();
    let mut pending = PendingChanges::new();
    for applied in [
        topology.apply_service(&service()?),
        topology.apply_endpoint_slice(&slice(&["127.0.0.14"])?),
    ] {
        anyhow::ensure!(
            applied.errors.is_empty(),
            "invalid object: {:?}",
            applied.errors
        );
        pending.touch_all(applied.changed);
    }

    // 2. + 3. This node's view, and a first full sync.
    let node = Arc::new(NodeInfo::named(NODE));
    let ctx = BackendContext::for_tests(IpFamily::V4, node.clone());
    // Serve the node port only: no nftables redirect rules, even as root.
    let options = Options::from_context(&ctx).with_redirect(RedirectMode::Off);
    let mut backend = UserspaceBackend::with_options(&ctx, options);
    let mut synced = NodeView::build(&topology, node.clone(), IpFamily::V4);
    let stats = backend.sync(&synced, &ChangeSet::full()).await?;
    pending.clear();
    println!("full sync: {stats:?}");
    print!("{}", backend.render(&synced)?);

    let through_proxy = SocketAddr::from(([127, 0, 0, 1], NODE_PORT));
    println!(
        "GET {through_proxy} -> {}",
        http::get(through_proxy)
            .await
            .context("first request")?
            .trim()
    );

    // 4. A change: a second endpoint. Only the touched service is recomputed
    // and only its port is in the change set.
    let applied = topology.apply_endpoint_slice(&slice(&["127.0.0.14", "127.0.0.15"])?);
    pending.touch_all(applied.changed);
    let (view, changes) = pending.prepare(&topology, &synced, &node);
    let stats = backend.sync(&view, &changes).await?;
    pending.clear();
    synced = view;
    println!("partial sync of {} port(s): {stats:?}", changes.len());

    for _ in 0..4 {
        println!(
            "GET {through_proxy} -> {}",
            http::get(through_proxy).await?.trim()
        );
    }

    backend.cleanup().await?;
    println!("cleaned up; {} service ports were served", synced.len());
    servers.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(())
}
