//! The persistent netlink channel against `nft -f -` (run as root;
//! everything happens in throw-away network namespaces):
//!
//! `cargo bench -p backend-nftables --bench netlink [-- --quick]`
//!
//! At 0, 1k, 10k and 30k ClusterIP Services × 10 endpoints (10k at most
//! with `--quick`) and one NodePort Service, each as the table in the kernel:
//! - one element added or deleted (`cluster-ips`), through each executor;
//! - one service chain rewritten (flush + its rules), through each;
//! - one endpoint change through the whole backend (`sync`), with the
//!   netlink executor, with `nft`, and with an executor that writes nothing
//!   (the sync's own computation), up to 10k.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a failure should panic

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use backend_nftables::ir::{Command, ElemKey, Element, Transaction};
use backend_nftables::names::is_service_chain;
use backend_nftables::render::skeleton_names::CLUSTER_IPS;
use backend_nftables::{Executor, NetlinkExecutor, NftCli, NftError, NftablesBackend};
use proxy_core::backend::CommandLimits;
use proxy_core::conformance::netns::{Netns, check_privileges};
use proxy_core::{Backend, ChangeSet, IpFamily, NodeView, ServiceKey, ServicePortName};

mod fixtures;
use fixtures::*;

/// Repetitions of each measurement.
const REPEATS: usize = 50;

/// Writes nothing: what a sync costs without the kernel.
struct Null;

#[async_trait::async_trait]
impl Executor for Null {
    async fn apply(&mut self, _: &Transaction) -> Result<(), NftError> {
        Ok(())
    }
    async fn table_exists(&mut self, _: IpFamily) -> Result<bool, NftError> {
        Ok(true)
    }
}

fn port_name(i: usize) -> ServicePortName {
    ServicePortName::new(
        "bench",
        &format!("svc{i:05}"),
        "http",
        proxy_core::Protocol::Tcp,
    )
}

/// `p50/p90/p99 ms`.
fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    let at = |q: f64| {
        let i = ((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1;
        d[i].as_secs_f64() * 1e3
    };
    format!("{:.2}/{:.2}/{:.2} ms", at(0.5), at(0.9), at(0.99))
}

async fn time_tx(exec: &mut dyn Executor, tx: &Transaction) -> Duration {
    let start = Instant::now();
    exec.apply(tx).await.unwrap();
    start.elapsed()
}

/// One element added then deleted, `REPEATS` times each.
async fn one_element(exec: &mut dyn Executor) -> Vec<Duration> {
    let element = Element {
        set: CLUSTER_IPS.to_string(),
        key: ElemKey::Addr(IpAddr::V4(Ipv4Addr::new(10, 99, 9, 9))),
        value: None,
        comment: None,
    };
    let mut add = Transaction::new(IpFamily::V4);
    add.push(Command::AddElement(element.clone()));
    let mut delete = Transaction::new(IpFamily::V4);
    delete.push(Command::DeleteElement(element));
    let mut out = Vec::new();
    for _ in 0..REPEATS {
        out.push(time_tx(exec, &add).await);
        out.push(time_tx(exec, &delete).await);
    }
    out
}

async fn repeat(exec: &mut dyn Executor, tx: &Transaction) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..REPEATS {
        out.push(time_tx(exec, tx).await);
    }
    out
}

/// The first service chain of `full`, rewritten: flush, then its rules.
fn chain_rewrite(full: &Transaction) -> Option<Transaction> {
    let name = full.commands.iter().find_map(|c| match c {
        Command::AddChain(def) if is_service_chain(&def.name) => Some(def.name.clone()),
        _ => None,
    })?;
    let mut tx = Transaction::new(full.family);
    tx.push(Command::FlushChain(name.clone()));
    for c in &full.commands {
        if matches!(c, Command::AddRule { chain, .. } if *chain == name) {
            tx.push(c.clone());
        }
    }
    Some(tx)
}

/// Endpoint changes of service `i + k` through `backend`.
async fn endpoint_changes(
    backend: &mut NftablesBackend,
    topo: &mut proxy_core::ServiceTopology,
    view: &mut NodeView,
    round: u8,
) -> Vec<Duration> {
    let mut out = Vec::new();
    for k in 0..REPEATS {
        let i = 7 + k;
        let _ = topo.apply_endpoint_slice(&slice(
            i,
            &[endpoint_ip(10 * i), Ipv4Addr::new(10, 250, round, k as u8)],
        ));
        view.update_service(topo, &ServiceKey::new("bench", format!("svc{i:05}")));
        let start = Instant::now();
        backend
            .sync(view, &ChangeSet::partial([port_name(i)]))
            .await
            .unwrap();
        out.push(start.elapsed());
    }
    out
}

fn main() {
    if let Err(why) = check_privileges() {
        eprintln!("skipping the netlink benchmark: {why}");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[0, 1_000, 10_000]
    } else {
        &[0, 1_000, 10_000, 30_000]
    };
    let limits = CommandLimits::default();
    for &n in sizes {
        let mut topo = topology(n, 10);
        // One NodePort Service: its chain is the one rewritten.
        let np = n + 1;
        let _ = topo.apply_service(&node_port_service(np));
        let ips: Vec<Ipv4Addr> = (0..10).map(|k| endpoint_ip(10 * np + k)).collect();
        let _ = topo.apply_endpoint_slice(&slice(np, &ips));
        let mut view = NodeView::build(&topo, node(), IpFamily::V4);
        let ns = Netns::new().unwrap();
        let rows = in_ns(&ns, async || {
            let mut rows = Vec::new();
            let mut backend = NftablesBackend::with_executor(
                &context(),
                Box::new(NetlinkExecutor::new(limits.clone())),
            );
            let start = Instant::now();
            backend.sync(&view, &ChangeSet::full()).await.unwrap();
            rows.push((
                "cold start (netlink)",
                format!("{:.2} s", start.elapsed().as_secs_f64()),
            ));
            let full = backend.full_transaction(&view).unwrap();

            let mut netlink = NetlinkExecutor::new(limits.clone());
            let mut nft = NftCli::default().with_limits(limits.clone());
            rows.push((
                "one element, netlink",
                summary(one_element(&mut netlink).await),
            ));
            rows.push(("one element, nft -f", summary(one_element(&mut nft).await)));
            if let Some(tx) = chain_rewrite(&full) {
                let what = format!("({} commands)", tx.len());
                rows.push((
                    "service chain rewrite, netlink",
                    format!("{} {what}", summary(repeat(&mut netlink, &tx).await)),
                ));
                rows.push((
                    "service chain rewrite, nft -f",
                    format!("{} {what}", summary(repeat(&mut nft, &tx).await)),
                ));
            }
            assert_eq!(netlink.counts().nft, 0, "everything went over netlink");
            if n > 0 && n <= 10_000 {
                rows.push((
                    "endpoint change sync, netlink",
                    summary(endpoint_changes(&mut backend, &mut topo, &mut view, 1).await),
                ));
                let mut null = NftablesBackend::with_executor(&context(), Box::new(Null));
                null.sync(&view, &ChangeSet::full()).await.unwrap();
                rows.push((
                    "endpoint change sync, no kernel",
                    summary(endpoint_changes(&mut null, &mut topo, &mut view, 2).await),
                ));
                let mut cli = NftablesBackend::with_executor(&context(), Box::new(nft.clone()));
                cli.sync(&view, &ChangeSet::full()).await.unwrap();
                rows.push((
                    "endpoint change sync, nft -f",
                    summary(endpoint_changes(&mut cli, &mut topo, &mut view, 3).await),
                ));
            }
            rows
        });
        for (what, value) in rows {
            println!("{n:>6} × 10  {what:<34} {value}");
        }
    }
}
