//! CI smoke of every fuzz target: the seeds plus a few thousand mutated
//! inputs, through the same functions the `fuzz` binary runs (a panic fails
//! the test). The long runs (10^6 inputs each) are in `README.md`.

use kube_proxy_fuzz::mutate::mutate;
use kube_proxy_fuzz::rng::Rng;
use kube_proxy_fuzz::seeds::seeds;
use kube_proxy_fuzz::targets::{TARGETS, target};

/// Mutated inputs per target in CI (seconds in a debug build).
const SMOKE_ITERATIONS: usize = 2_000;

fn smoke(name: &str) {
    let t = target(name).unwrap_or_else(|| panic!("no target {name}"));
    let corpus = seeds(name);
    assert!(!corpus.is_empty(), "{name}: no seeds");
    for seed in &corpus {
        (t.run)(seed);
    }
    let mut rng = Rng::new(0x5eed);
    for _ in 0..SMOKE_ITERATIONS {
        let Some(seed) = rng.pick(&corpus) else { break };
        let input = mutate(seed, t.json, t.dict, &mut rng);
        (t.run)(&input);
    }
}

#[test]
fn every_target_is_smoked() {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "manifest",
            "topology",
            "config",
            "iptables_save",
            "nft_output"
        ]
    );
}

#[test]
fn manifest() {
    smoke("manifest");
}

#[test]
fn topology() {
    smoke("topology");
}

#[test]
fn config() {
    smoke("config");
}

#[test]
fn iptables_save() {
    smoke("iptables_save");
}

#[test]
fn nft_output() {
    smoke("nft_output");
}

/// The seeds reach the code behind the parsers: most manifest and topology
/// seeds hold Services, and the iptables seeds parse.
#[test]
fn seeds_are_meaningful() {
    let parsed = seeds("manifest")
        .iter()
        .filter_map(|s| {
            proxy_core::runtime::source::parse_manifests(&String::from_utf8_lossy(s)).ok()
        })
        .filter(|p| !p.objects.is_empty())
        .count();
    assert!(parsed > 20, "only {parsed} manifest seeds hold objects");
    let tables = seeds("iptables_save")
        .iter()
        .filter(|s| backend_iptables::tables::Tables::parse(&String::from_utf8_lossy(s)).is_ok())
        .count();
    assert!(tables > 20, "only {tables} iptables seeds parse");
}
