//! `kube-proxy trace` predicts what real packets do: the kernel tier of the
//! conformance suite, for iptables and nftables modes, with every probe
//! also traced through the live rules of the node namespace (read the way
//! `kube-proxy trace` reads them: `iptables-save`, `nft -j list`, the
//! interfaces' addresses). The prediction must give the same verdict as the
//! real connections: the same endpoint set (a subset when session affinity
//! pins the client), the same drop / reject / not-matched, and the same
//! masquerade decision.
//!
//! The suite itself must pass too, so this is also a conformance run.
//!
//! Needs root, iptables and nftables; skips with the reason otherwise
//! (fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[path = "support/trace_predictor.rs"]
mod trace_predictor;

use std::sync::{Arc, Mutex};

use proxy_core::ProxyMode;
use proxy_core::backend::{Backend, BackendContext, BackendError};
use proxy_core::conformance::netns::{
    KernelHarness, MakeBackend, PredictingHarness, PredictionTally, check_tool,
    privileged_or_skip_with,
};
use proxy_core::conformance::{Harness, Tier, run};
use trace_predictor::Tracing;

fn tools_present() -> Result<(), String> {
    check_tool("nft", &["--version"], "nftables")?;
    check_tool("iptables-save", &["--version"], "iptables")
}

async fn predicts_every_probe(mode: ProxyMode, make: Arc<MakeBackend>) {
    let tally = Arc::new(Mutex::new(PredictionTally::default()));
    let t = tally.clone();
    let factory = move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        let inner = KernelHarness::new(ctx, make.clone())?;
        Ok(Box::new(PredictingHarness::new(
            inner,
            Tracing::new(mode),
            mode.to_string(),
            t.clone(),
        )))
    };
    let report = run(&factory, Tier::Kernel).await;
    report.assert_passed();
    let tally = tally.lock().unwrap();
    tally.assert_all_agree(&mode.to_string(), 50);
    eprintln!("{mode}: trace predicted all {} probes", tally.checked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_predicts_every_probe_in_iptables_mode() {
    if !privileged_or_skip_with("trace_predicts_every_probe_in_iptables_mode", tools_present) {
        return;
    }
    let make: Arc<MakeBackend> = Arc::new(|ctx: &BackendContext| {
        Ok(Box::new(backend_iptables::IptablesBackend::new(ctx)?) as Box<dyn Backend>)
    });
    predicts_every_probe(ProxyMode::Iptables, make).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_predicts_every_probe_in_nftables_mode() {
    if !privileged_or_skip_with("trace_predicts_every_probe_in_nftables_mode", tools_present) {
        return;
    }
    let make: Arc<MakeBackend> = Arc::new(|ctx: &BackendContext| {
        Ok(Box::new(backend_nftables::NftablesBackend::new(ctx)?) as Box<dyn Backend>)
    });
    predicts_every_probe(ProxyMode::Nftables, make).await;
}
