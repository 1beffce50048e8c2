//! Runs the shared conformance suite (fake tier) against the route-table
//! backend of `examples::route_table`, and prints the report.
//!
//! `cargo run -p examples --bin custom_backend`

use examples::route_table_harness::RouteTableHarness;
use proxy_core::conformance::{self, Tier};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let report = conformance::run(&RouteTableHarness::factory, Tier::Fake).await;
    println!("{report}");
    anyhow::ensure!(
        report.is_success(),
        "the route-table backend failed conformance scenarios"
    );
    Ok(())
}
