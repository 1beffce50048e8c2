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
use proxy_core::backend::{BackendContext, BackendError, BackendFactory};
use proxy_core::conformance::netns::{
    KernelHarness, MakeBackend, PredictingHarness, Prediction, PredictionTally, Predictor,
};
use proxy_core::conformance::{Harness, Origin, Packet, Tier, load_scenarios, run_scenarios};

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

/// Traces each probe through the live state, read at the first probe: the
/// kernel tier syncs once per scenario, before its probes.
#[derive(Default)]
struct Tracing {
    rules: Option<IpvsRules>,
}

impl Predictor for Tracing {
    fn predict(
        &mut self,
        harness: &KernelHarness,
        packet: &Packet,
    ) -> Result<Result<Prediction, String>, BackendError> {
        let node_ips = harness.topology().node_addresses().to_vec();
        let in_interface = match packet.origin {
            Origin::Host => None,
            o => o.in_interface(),
        };
        let rules = match &mut self.rules {
            Some(rules) => rules,
            empty => {
                let family = proxy_core::IpFamily::of(&packet.destination);
                let read = PredictingHarness::<Self>::in_node(harness, read_live(family))?
                    .map_err(|e| {
                        BackendError::dataplane(format!("cannot read the IPVS state: {e}"))
                    })?;
                empty.insert(read)
            }
        };
        Ok(rules
            .trace_path(&node_ips, packet, in_interface)
            .map(|path| {
                let hops: Vec<String> = path
                    .hops
                    .iter()
                    .filter_map(|h| {
                        h.rule
                            .as_ref()
                            .map(|r| format!("  {}/{}: {r} {:?}", h.table, h.chain, h.notes))
                    })
                    .collect();
                Prediction {
                    affinity: path.choices.iter().any(|c| c.affinity),
                    explanation: hops.join("\n"),
                    outcome: path.outcome,
                }
            })
            .map_err(|e| e.to_string()))
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
    let tally = Arc::new(Mutex::new(PredictionTally::default()));
    let t = tally.clone();
    let factory = move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        let make: Arc<MakeBackend> = Arc::new(|ctx: &BackendContext| IpvsFactory::new().build(ctx));
        Ok(Box::new(PredictingHarness::new(
            KernelHarness::new(ctx, make)?,
            Tracing::default(),
            "",
            t.clone(),
        )))
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
    tally.assert_all_agree("ipvs trace", 15);
}
