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

use std::sync::{Arc, Mutex};

use kube_proxy::trace::{Request, TraceReport, trace_live};
use proxy_core::backend::{Backend, BackendContext, BackendError, Capabilities};
use proxy_core::conformance::netns::{
    KernelHarness, MakeBackend, check_tool, privileged_or_skip_with,
};
use proxy_core::conformance::{Harness, Outcome, Packet, Tier, run};
use proxy_core::{ProxyMode, conformance::Origin};

/// What the probes found.
#[derive(Default)]
struct Tally {
    checked: usize,
    mismatches: Vec<String>,
}

/// The kernel harness, with each probe traced as well.
struct Predicting {
    inner: KernelHarness,
    mode: ProxyMode,
    tally: Arc<Mutex<Tally>>,
}

/// Whether the trace `predicted` agrees with the `real` outcome of `packet`.
fn agrees(packet: &Packet, predicted: &TraceReport, real: &Outcome) -> bool {
    match (&predicted.outcome, real) {
        (
            Outcome::Forwarded {
                endpoints: p,
                masqueraded: pm,
            },
            Outcome::Forwarded {
                endpoints: r,
                masqueraded: rm,
            },
        ) => {
            let affinity = predicted.choices.iter().any(|c| c.affinity);
            let endpoints_ok = if affinity { r.is_subset(p) } else { r == p };
            // The harness leaves a hairpin answer (client == endpoint, always
            // masqueraded) out of the masquerade check when others answered;
            // the trace's flag covers every branch, so it cannot be compared
            // then.
            let hairpin = p.iter().any(|e| e.ip() == packet.source) && p.len() > 1;
            endpoints_ok && (hairpin || pm == rm)
        }
        (p, r) => p == r,
    }
}

#[async_trait::async_trait]
impl Harness for Predicting {
    fn backend(&mut self) -> &mut dyn Backend {
        self.inner.backend()
    }

    fn capabilities(&mut self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        let real = self.inner.send(packet).await?;
        let request = Request {
            protocol: packet.protocol,
            from: packet.source,
            to: std::net::SocketAddr::new(packet.destination, packet.port),
            in_interface: match packet.origin {
                Origin::Host => None,
                o => o.in_interface().map(str::to_string),
            },
        };
        let mode = self.mode;
        let predicted = self
            .inner
            .topology()
            .node()
            .run(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(trace_live(Some(mode), &request))
            })
            .map_err(|e| BackendError::dataplane(format!("cannot enter the node: {e}")))?;
        let mut tally = self.tally.lock().unwrap();
        tally.checked += 1;
        match predicted {
            Ok(report) if agrees(packet, &report, &real) => {}
            Ok(report) => tally.mismatches.push(format!(
                "{mode} {packet}: real {real}, trace predicted {}\n{}",
                report.outcome,
                report.text()
            )),
            Err(e) => tally
                .mismatches
                .push(format!("{mode} {packet}: real {real}, trace failed: {e}")),
        }
        Ok(real)
    }

    async fn dump(&mut self) -> Option<String> {
        None
    }
}

fn tools_present() -> Result<(), String> {
    check_tool("nft", &["--version"], "nftables")?;
    check_tool("iptables-save", &["--version"], "iptables")
}

async fn predicts_every_probe(mode: ProxyMode, make: Arc<MakeBackend>) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let t = tally.clone();
    let factory = move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        Ok(Box::new(Predicting {
            inner: KernelHarness::new(ctx, make.clone())?,
            mode,
            tally: t.clone(),
        }))
    };
    let report = run(&factory, Tier::Kernel).await;
    report.assert_passed();
    let tally = tally.lock().unwrap();
    assert!(
        tally.mismatches.is_empty(),
        "{} of {} probes mispredicted:\n{}",
        tally.mismatches.len(),
        tally.checked,
        tally.mismatches.join("\n")
    );
    assert!(tally.checked > 50, "only {} probes traced", tally.checked);
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
