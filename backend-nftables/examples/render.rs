//! Prints the nft script of a full sync of one conformance scenario, as the
//! backend would send it to `nft -f -`
//! (`cargo run -p backend-nftables --example render -- clusterip-basic`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use backend_nftables::NftablesBackend;
use backend_nftables::fake::{FakeExecutor, FakeNft};
use proxy_core::Backend;
use proxy_core::conformance::load_scenarios;

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "clusterip-basic".to_string());
    let Some(scenario) = load_scenarios().into_iter().find(|s| s.name() == name) else {
        eprintln!("no scenario {name}");
        std::process::exit(2);
    };
    let backend = NftablesBackend::with_executor(
        scenario.context(),
        Box::new(FakeExecutor::new(FakeNft::shared())),
    );
    match backend.render(scenario.view()) {
        Ok(script) => print!("{script}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
