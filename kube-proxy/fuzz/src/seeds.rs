//! The starting corpus of each target: the conformance scenarios (their
//! objects as manifests and topology updates, their configurations, the
//! `iptables-save` text the fake host holds after syncing them) plus the
//! hand-written files under `corpus/<target>/`.

use std::sync::Arc;

use backend_iptables::fake::FakeHarness;
use proxy_core::ChangeSet;
use proxy_core::conformance::{Harness, Scenario, load_scenarios};

/// The hand-written seeds of `corpus/`, by target.
const FILES: &[(&str, &str)] = &[
    ("manifest", include_str!("../corpus/manifest/list.yaml")),
    ("config", include_str!("../corpus/config/full.yaml")),
    ("config", include_str!("../corpus/config/invalid.yaml")),
    ("config", include_str!("../corpus/config/minimal.json")),
    (
        "config",
        include_str!("../corpus/config/upstream-v1alpha1-default.yaml"),
    ),
    (
        "nft_output",
        include_str!("../corpus/nft_output/tables.json"),
    ),
    (
        "nft_output",
        include_str!("../corpus/nft_output/empty.json"),
    ),
    ("nft_output", include_str!("../corpus/nft_output/uname.txt")),
    (
        "iptables_save",
        include_str!("../corpus/iptables_save/kernel.txt"),
    ),
];

fn objects(scenario: &Scenario) -> Vec<serde_json::Value> {
    std::iter::once(scenario.node_object())
        .chain(scenario.objects().iter().cloned())
        .collect()
}

/// `objects` as one multi-document YAML file.
fn yaml_documents(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .filter_map(|o| serde_saphyr::to_string(o).ok())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The `iptables-save` text of the fake host after a full sync of
/// `scenario` (`None` if the sync failed).
fn iptables_save(scenario: &Scenario) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let mut harness = FakeHarness::new(scenario.context());
    runtime
        .block_on(harness.backend().sync(scenario.view(), &ChangeSet::full()))
        .ok()?;
    let state = harness.executor().state();
    Some(state.tables(scenario.context().family).save(None))
}

/// The seeds of `target` (one of [`crate::targets::TARGETS`]' names).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let scenarios = load_scenarios();
    let mut out: Vec<Vec<u8>> = FILES
        .iter()
        .filter(|(t, _)| *t == target)
        .map(|(_, text)| text.as_bytes().to_vec())
        .collect();
    match target {
        "manifest" => {
            for s in &scenarios {
                let objects = objects(s);
                out.push(yaml_documents(&objects).into_bytes());
                let list =
                    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
                out.push(list.to_string().into_bytes());
            }
        }
        "topology" => {
            for s in &scenarios {
                out.push(
                    serde_json::Value::Array(objects(s))
                        .to_string()
                        .into_bytes(),
                );
            }
        }
        "config" => {
            let configs: Vec<Arc<_>> = scenarios.iter().map(|s| s.config().clone()).collect();
            for config in configs {
                if let Ok(json) = serde_json::to_string(&*config) {
                    out.push(json.into_bytes());
                }
                if let Ok(yaml) = config.to_yaml() {
                    out.push(yaml.into_bytes());
                }
            }
        }
        "iptables_save" => {
            out.extend(
                scenarios
                    .iter()
                    .filter_map(iptables_save)
                    .map(String::into_bytes),
            );
        }
        _ => {}
    }
    out.sort();
    out.dedup();
    out
}
