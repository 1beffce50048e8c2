//! Embedding the whole proxy in a program of your own: the runtime of the
//! `kube-proxy` binary (sources, sync loop, health tracking, metrics), on
//! your Tokio runtime, with your backend registry (here holding a backend
//! of your own) and your prometheus-client registry, without the binary's
//! flags.
//!
//! ```text
//! cargo run -p examples --bin embed                 # no cluster: objects pushed by this program
//! cargo run -p examples --bin embed -- --cluster    # your cluster, with your kube::Client (Ctrl-C stops)
//! ```
//!
//! Without `--cluster` it serves a NodePort on 127.0.0.1:30082 in front of
//! two HTTP servers on loopback (no root: the userspace proxy, without
//! redirect rules), adds the second endpoint while running, and prints the
//! answers and its own `/metrics` text, which holds upstream's
//! `kubeproxy_*` metrics next to the program's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backend_userspace::{Options, RedirectMode, UserspaceBackend};
use examples::{http, objects};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus_client::metrics::counter::Counter;
use proxy_core::backend::{BackendContext, BackendFactory, Registry};
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::{ChannelSource, SourceEvent, Update};
use proxy_core::runtime::{ProxyBuilder, SyncObserver, SyncReport};
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, IpFamily, NodeView, ObjectKind, ProxyMode,
    SyncStats,
};
use tokio::sync::watch;

const NODE: &str = "embed-node";
const NODE_PORT: u16 = 30082;
const ENDPOINTS: [&str; 2] = ["127.0.0.16", "127.0.0.17"];

/// A backend of our own: the userspace proxy serving node ports only (no
/// nftables redirect rules, even as root), which also counts its syncs in
/// one of our metrics.
struct CountedUserspace {
    inner: UserspaceBackend,
    syncs: Counter,
}

#[async_trait::async_trait]
impl Backend for CountedUserspace {
    fn mode(&self) -> ProxyMode {
        self.inner.mode()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let stats = self.inner.sync(view, changes).await?;
        self.syncs.inc();
        Ok(stats)
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.inner.cleanup().await
    }

    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        self.inner.render(view)
    }
}

/// Its factory, registered for the `userspace` mode in our registry.
struct CountedUserspaceFactory {
    syncs: Counter,
}

#[async_trait::async_trait]
impl BackendFactory for CountedUserspaceFactory {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace
    }

    async fn check(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }

    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        let options = Options::from_context(ctx).with_redirect(RedirectMode::Off);
        Ok(Box::new(CountedUserspace {
            inner: UserspaceBackend::with_options(ctx, options),
            syncs: self.syncs.clone(),
        }))
    }

    async fn cleanup_leftovers(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Ok(()) // nothing outlives the process
    }
}

/// Our observer of the proxy's syncs: publishes how many service ports the
/// last successful sync programmed, and the count of syncs.
struct Synced(watch::Sender<(usize, usize)>);

impl SyncObserver for Synced {
    fn synced(&self, report: &SyncReport<'_>) {
        self.0
            .send_modify(|(syncs, ports)| (*syncs, *ports) = (*syncs + 1, report.view.len()));
    }
}

fn service() -> anyhow::Result<Service> {
    Ok(objects::node_port_service("cart", "10.96.0.82", NODE_PORT)?)
}

fn slice(ips: &[&str]) -> anyhow::Result<EndpointSlice> {
    Ok(objects::ready_slice("cart", NODE, ips, 8082)?)
}

/// Waits until the proxy reports `syncs` successful syncs.
async fn wait_for_sync(
    synced: &mut watch::Receiver<(usize, usize)>,
    syncs: usize,
) -> anyhow::Result<()> {
    tokio::time::timeout(
        Duration::from_secs(20),
        synced.wait_for(|(done, _)| *done >= syncs),
    )
    .await
    .context("no sync within 20 s")?
    .context("the proxy stopped")?;
    Ok(())
}

/// Our program's own runtime: the proxy runs on it, as any other task.
fn main() -> anyhow::Result<()> {
    let cluster = std::env::args().any(|arg| arg == "--cluster");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(cluster))
}

async fn run(cluster: bool) -> anyhow::Result<()> {
    // Our metrics registry, with a metric of our own.
    let mut metrics = prometheus_client::registry::Registry::default();
    let syncs = Counter::<u64>::default();
    metrics.register(
        "embed_backend_syncs",
        "Syncs of our own backend",
        syncs.clone(),
    );

    // Our registry of backends: kube-proxy's userspace mode, replaced by ours.
    let registry = Registry::new()
        .with(backend_userspace::UserspaceFactory)
        .with(CountedUserspaceFactory { syncs });

    let mut config = KubeProxyConfiguration::default();
    config.apply_defaults();
    config.mode = Some(ProxyMode::Userspace);
    let (synced_tx, mut synced) = watch::channel((0, 0));
    let builder = ProxyBuilder::new(config, registry, NODE)
        // The kubeproxy_* metrics go into our registry; we serve it
        // ourselves, so neither server of the binary is started.
        .metrics_registry(&mut metrics)
        .metrics_server(false)
        .health_server(false)
        // Neither sysctls nor other modes' cleanup: this is our host.
        .host_setup(false)
        .families(vec![IpFamily::V4])
        .observer(Arc::new(Synced(synced_tx)));

    if cluster {
        // Our own client: kubeconfig or in-cluster, as kube-rs finds it.
        let client = kube::Client::try_default()
            .await
            .context("creating the kube client")?;
        let proxy = builder.kube_client(client).build()?;
        println!(
            "watching the cluster in {} mode; Ctrl-C stops",
            proxy.mode()
        );
        proxy
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        return Ok(());
    }

    // No cluster: our program pushes the objects.
    let mut servers = Vec::new();
    for ip in ENDPOINTS {
        let addr: SocketAddr = format!("{ip}:8082").parse()?;
        servers.push(http::serve(addr, format!("cart at {addr}\n")).await?);
    }
    let (source, objects) =
        ChannelSource::new(vec![ObjectKind::Service, ObjectKind::EndpointSlice]);
    for event in [
        SourceEvent::Service(Update::Init),
        SourceEvent::Service(Update::InitApply(service()?)),
        SourceEvent::Service(Update::InitDone),
        SourceEvent::EndpointSlice(Update::Init),
        SourceEvent::EndpointSlice(Update::InitApply(slice(&ENDPOINTS[..1])?)),
        SourceEvent::EndpointSlice(Update::InitDone),
    ] {
        objects.send(event)?;
    }
    let proxy = builder.source(Box::new(source)).build()?;
    let health = proxy.health().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(proxy.run(async {
        let _ = stopped.await;
    }));

    wait_for_sync(&mut synced, 1).await?;
    println!(
        "first sync: {} service port(s), healthy: {}",
        synced.borrow().1,
        health.is_healthy()
    );
    let through_proxy = SocketAddr::from(([127, 0, 0, 1], NODE_PORT));
    println!(
        "GET {through_proxy} -> {}",
        http::get(through_proxy).await?.trim()
    );

    // A change while running: the second endpoint.
    let done = synced.borrow().0;
    objects.send(SourceEvent::EndpointSlice(Update::Apply(slice(
        &ENDPOINTS,
    )?)))?;
    wait_for_sync(&mut synced, done + 1).await?;
    for _ in 0..4 {
        println!(
            "GET {through_proxy} -> {}",
            http::get(through_proxy).await?.trim()
        );
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics)?;
    println!("our /metrics:");
    for line in text.lines().filter(|line| {
        line.starts_with("embed_backend_syncs_total")
            || line.starts_with("kubeproxy_sync_proxy_rules_service_changes_total")
            || line.starts_with("kubeproxy_sync_proxy_rules_endpoint_changes_total")
    }) {
        println!("  {line}");
    }

    let _ = stop.send(());
    running.await??;
    println!("stopped");
    servers.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(())
}
