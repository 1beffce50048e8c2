//! The ipvs mode's tracer predicts what real packets do: a choice of the
//! conformance suite's scenarios (ClusterIP with and without endpoints,
//! persistence, terminating endpoints, a node port and an external IP
//! under `Local` policy, load-balancer source ranges, `masqueradeAll`)
//! through the factory's backend in the guest, with
//! every probe also traced through the live state of the node namespace
//! (virtual servers over netlink, `ipset save`, `iptables-save`,
//! `kube-ipvs0`), as `kube-proxy trace` reads it. The prediction must give
//! the real packet's verdict: the same endpoint set (a subset under
//! persistence), drop / reject / not matched, and the same masquerade
//! decision. A choice, not every scenario, to keep the guest's time short
//! (the full suite runs in `guest_conformance`).

use std::sync::{Arc, Mutex};

use backend_ipvs::IpvsFactory;
use backend_ipvs::trace::IpvsRules;
use backend_ipvs::trace::live::read_live;
use proxy_core::backend::{Backend, BackendContext, BackendError, BackendFactory, Capabilities};
use proxy_core::conformance::netns::{KernelHarness, MakeBackend};
use proxy_core::conformance::{
    Harness, Origin, Outcome, Packet, Tier, load_scenarios, run_scenarios,
};

use crate::guest;

/// The scenarios traced.
const SCENARIOS: [&str; 8] = [
    "clusterip-basic",
    "clusterip-no-endpoints",
    "clusterip-session-affinity",
    "terminating-fallback-cluster",
    "nodeport-local",
    "external-ip-local",
    "loadbalancer-source-ranges",
    "masquerade-all",
];

#[derive(Default)]
struct Tally {
    checked: usize,
    mismatches: Vec<String>,
}

struct Predicting {
    inner: KernelHarness,
    /// The live state, read at the first probe: the kernel tier syncs once
    /// per scenario, before its probes.
    rules: Option<IpvsRules>,
    tally: Arc<Mutex<Tally>>,
}

/// Whether `predicted` agrees with `real` (see the module docs).
fn agrees(packet: &Packet, predicted: &backend_iptables::trace::Path, real: &Outcome) -> bool {
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
            // A hairpin answer (client == endpoint) is always masqueraded
            // and left out of the harness's masquerade check.
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
        let topology = self.inner.topology();
        let node_ips = topology.node_addresses().to_vec();
        let family = proxy_core::IpFamily::of(&packet.destination);
        let in_interface = match packet.origin {
            Origin::Host => None,
            o => o.in_interface(),
        };
        if self.rules.is_none() {
            let read = topology
                .node()
                .run(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(read_live(family))
                })
                .map_err(|e| BackendError::dataplane(format!("cannot enter the node: {e}")))?
                .map_err(|e| BackendError::dataplane(format!("cannot read the IPVS state: {e}")))?;
            self.rules = Some(read);
        }
        let predicted =
            self.rules
                .as_ref()
                .expect("read above")
                .trace_path(&node_ips, packet, in_interface);
        let mut tally = self.tally.lock().unwrap();
        tally.checked += 1;
        match predicted {
            Ok(path) if agrees(packet, &path, &real) => {}
            Ok(path) => {
                let hops: Vec<String> = path
                    .hops
                    .iter()
                    .filter_map(|h| {
                        h.rule
                            .as_ref()
                            .map(|r| format!("  {}/{}: {r} {:?}", h.table, h.chain, h.notes))
                    })
                    .collect();
                tally.mismatches.push(format!(
                    "{packet}: real {real}, trace predicted {}\n{}",
                    path.outcome,
                    hops.join("\n")
                ));
            }
            Err(e) => tally
                .mismatches
                .push(format!("{packet}: real {real}, trace failed: {e}")),
        }
        Ok(real)
    }

    async fn dump(&mut self) -> Option<String> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
async fn trace_predicts_real_packets_through_ipvs() {
    guest::require("trace_predicts_real_packets_through_ipvs");
    let scenarios: Vec<_> = load_scenarios()
        .into_iter()
        .filter(|s| SCENARIOS.contains(&s.name()))
        .collect();
    assert_eq!(
        scenarios.len(),
        SCENARIOS.len(),
        "a traced scenario was renamed"
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let t = tally.clone();
    let factory = move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        let make: Arc<MakeBackend> = Arc::new(|ctx: &BackendContext| IpvsFactory::new().build(ctx));
        Ok(Box::new(Predicting {
            inner: KernelHarness::new(ctx, make)?,
            rules: None,
            tally: t.clone(),
        }))
    };
    let started = std::time::Instant::now();
    let report = run_scenarios(&factory, Tier::Kernel, &scenarios).await;
    report.assert_passed();
    let tally = tally.lock().unwrap();
    println!(
        "ipvs trace: {} probes traced, {} mispredicted, in {:?}",
        tally.checked,
        tally.mismatches.len(),
        started.elapsed()
    );
    assert!(
        tally.mismatches.is_empty(),
        "{} of {} probes mispredicted:\n{}",
        tally.mismatches.len(),
        tally.checked,
        tally.mismatches.join("\n")
    );
    assert!(tally.checked > 15, "only {} probes traced", tally.checked);
}
