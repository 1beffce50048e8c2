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

/// Mutated inputs mostly still parse, so the fuzzer reaches the code
/// behind the parsers: the share of 1,000 mutated inputs that get past
/// each target's parser.
#[test]
fn mutated_inputs_reach_past_the_parsers() {
    // (target, whether an input gets past its parser, minimum percent)
    type Past = (&'static str, fn(&[u8]) -> bool, usize);
    let past: [Past; 4] = [
        (
            "manifest",
            |d| {
                proxy_core::runtime::source::parse_manifests(&String::from_utf8_lossy(d))
                    .is_ok_and(|p| !p.objects.is_empty())
            },
            30,
        ),
        (
            "topology",
            |d| serde_json::from_slice::<serde_json::Value>(d).is_ok(),
            50,
        ),
        (
            "config",
            |d| {
                proxy_core::config::KubeProxyConfiguration::from_yaml(&String::from_utf8_lossy(d))
                    .is_ok()
            },
            20,
        ),
        (
            "iptables_save",
            |d| backend_iptables::tables::Tables::parse(&String::from_utf8_lossy(d)).is_ok(),
            10,
        ),
    ];
    for (name, parses, min_percent) in past {
        let t = target(name).unwrap();
        let corpus = seeds(name);
        let mut rng = Rng::new(42);
        let n = 1_000;
        let ok = (0..n)
            .filter(|_| {
                let seed = rng.pick(&corpus).unwrap();
                parses(&mutate(seed, t.json, t.dict, &mut rng))
            })
            .count();
        println!("{name}: {ok} of {n} mutated inputs get past the parser");
        assert!(
            ok * 100 >= min_percent * n,
            "{name}: only {ok} of {n} mutated inputs get past the parser"
        );
    }
}
