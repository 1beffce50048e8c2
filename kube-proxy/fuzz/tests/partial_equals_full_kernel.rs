//! Property, real kernel: random sequences of Service, EndpointSlice and
//! Node changes (`kube_proxy_fuzz::churn`) synced in batches by the
//! iptables and nftables backends inside a network namespace; after every
//! sync the kernel's state (`iptables-save` of nat/filter/mangle, or
//! `nft -j list table`), normalised, equals that of a full sync of the same
//! state in a fresh namespace. A bounded number of sequences keeps it to
//! seconds.
//!
//! Needs root, iptables and nftables; skips with the reason otherwise,
//! fails instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;

use backend_iptables::IptablesBackend;
use backend_nftables::NftablesBackend;
use kube_proxy_fuzz::churn::{World, batches, context, line_diff};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use proxy_core::backend::BackendContext;
use proxy_core::changes::PendingChanges;
use proxy_core::conformance::netns::{Netns, check_tool, privileged_or_skip_with};
use proxy_core::{Backend, BackendError, ChangeSet, IpFamily, NodeView};
use serde_json::Value;

/// Sequences per backend (IPv4), and syncs per sequence at most.
const SEQUENCES: usize = 8;
const SYNCS: usize = 8;

type Make = fn(&BackendContext) -> Result<Box<dyn Backend>, BackendError>;

fn iptables(ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(IptablesBackend::new(ctx)?))
}

fn nftables(ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(NftablesBackend::new(ctx)?))
}

fn tools_present() -> Result<(), String> {
    check_tool("iptables-restore", &["--version"], "iptables")?;
    check_tool("nft", &["--version"], "nftables")
}

fn run(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out = ns.command(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `iptables-save` of the tables kube-proxy writes, without comments and
/// counters; chains sorted, each with its rules in order.
fn iptables_state(ns: &Netns) -> String {
    let mut out = String::new();
    for table in ["nat", "filter", "mangle"] {
        let text = run(ns, "iptables-save", &["-t", table]);
        let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                chains.entry(name.to_string()).or_default();
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let chain = rule.split_whitespace().next().unwrap_or_default();
                chains
                    .entry(chain.to_string())
                    .or_default()
                    .push(rule.to_string());
            }
        }
        for (chain, rules) in chains {
            out.push_str(&format!("{table} :{chain}\n"));
            for rule in rules {
                out.push_str(&format!("{table} -A {rule}\n"));
            }
        }
    }
    out
}

/// `nft -j list table ip kube-proxy`, without handles; set elements
/// sorted; empty chains nothing refers to left out (a partial sync deletes
/// stale chains after a delay, as upstream); chains and sets sorted, rules
/// in order within their chain.
fn nft_state(ns: &Netns) -> String {
    let text = run(ns, "nft", &["-j", "list", "table", "ip", "kube-proxy"]);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut objects: Vec<Value> = doc["nftables"].as_array().cloned().unwrap_or_default();
    for o in &mut objects {
        strip_handles(o);
        for kind in ["set", "map"] {
            if let Some(elems) = o.get_mut(kind).and_then(|s| s.get_mut("elem"))
                && let Some(items) = elems.as_array_mut()
            {
                items.sort_by_key(|v| v.to_string());
            }
        }
    }
    let all = Value::Array(objects.clone()).to_string();
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut others = Vec::new();
    for o in &objects {
        if let Some(chain) = o.get("chain") {
            let name = chain["name"].as_str().unwrap_or_default().to_string();
            chains.entry(name).or_default();
        } else if let Some(rule) = o.get("rule") {
            let name = rule["chain"].as_str().unwrap_or_default().to_string();
            chains.entry(name).or_default().push(rule.to_string());
        } else if o.get("metainfo").is_none() {
            others.push(o.to_string());
        }
    }
    others.sort();
    let mut out = others.join("\n");
    out.push('\n');
    for (name, rules) in chains {
        let base = objects.iter().any(|o| {
            o.get("chain")
                .is_some_and(|c| c["name"] == name.as_str() && c.get("hook").is_some())
        });
        let referenced = all.contains(&format!("\"target\":\"{name}\""));
        if rules.is_empty() && !base && !referenced {
            continue;
        }
        out.push_str(&format!("chain {name}\n"));
        for rule in rules {
            out.push_str(&format!("  {rule}\n"));
        }
    }
    out
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            map.values_mut().for_each(strip_handles);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// The state of a fresh namespace after a full sync of `view`.
fn full_sync_state(
    make: Make,
    ctx: &BackendContext,
    view: &NodeView,
    dump: fn(&Netns) -> String,
) -> String {
    let ns = Netns::new().unwrap();
    ns.block_on(|| async {
        let mut backend = make(ctx).unwrap();
        backend.sync(view, &ChangeSet::full()).await.unwrap();
    })
    .unwrap();
    dump(&ns)
}

fn check(name: &str, make: Make, dump: fn(&Netns) -> String) {
    let ctx = context(IpFamily::V4);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = batches(SYNCS);
    let (mut partial_syncs, mut full_syncs, mut largest) = (0, 0, 0);
    for sequence in 0..SEQUENCES {
        let batches = strategy.new_tree(&mut runner).unwrap().current();
        let ns = Netns::new().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut backend = ns
            .run(|| rt.block_on(async { make(&ctx) }))
            .unwrap()
            .unwrap();
        let mut world = World::default();
        let mut synced = NodeView::empty(ctx.family, world.node.clone());
        ns.run(|| rt.block_on(backend.sync(&synced, &ChangeSet::full())))
            .unwrap()
            .unwrap();
        for (step, batch) in batches.iter().enumerate() {
            let mut pending = PendingChanges::new();
            for op in batch {
                world.apply(op, &mut pending).unwrap();
            }
            let (view, changes) = pending.prepare(&world.topology, &synced, &world.node);
            if changes.is_full() {
                full_syncs += 1;
            } else {
                partial_syncs += 1;
            }
            if !changes.is_empty() {
                ns.run(|| rt.block_on(backend.sync(&view, &changes)))
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{name} sequence {sequence} step {step}: {e}"));
            }
            let got = dump(&ns);
            largest = largest.max(got.lines().count());
            let want = full_sync_state(make, &ctx, &view, dump);
            assert!(
                got == want,
                "{name} sequence {sequence} step {step} ({} sync): the kernel differs from a full sync in a fresh namespace:\n{}\nbatches: {batches:#?}",
                if changes.is_full() { "full" } else { "partial" },
                line_diff(&want, &got)
            );
            synced = view;
        }
    }
    println!(
        "{name}: {partial_syncs} partial and {full_syncs} full syncs in the kernel, each equal to a full sync in a fresh namespace (largest state: {largest} lines)"
    );
    assert!(partial_syncs > 0);
    assert!(
        largest > 40,
        "{name}: the sequences programmed little ({largest} lines)"
    );
}

#[test]
fn iptables_partial_sync_equals_full_sync_in_the_kernel() {
    if !privileged_or_skip_with(
        "iptables_partial_sync_equals_full_sync_in_the_kernel",
        tools_present,
    ) {
        return;
    }
    check("iptables", iptables, iptables_state);
}

#[test]
fn nftables_partial_sync_equals_full_sync_in_the_kernel() {
    if !privileged_or_skip_with(
        "nftables_partial_sync_equals_full_sync_in_the_kernel",
        tools_present,
    ) {
        return;
    }
    check("nftables", nftables, nft_state);
}
