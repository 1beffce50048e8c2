//! The shared conformance suite (feature `conformance`).
//!
//! Scenarios are data files (`proxy-core/conformance/scenarios/*.yaml`,
//! embedded in the crate): Services, EndpointSlices, the node, configuration
//! overrides, and packets with the outcome upstream iptables-mode
//! kube-proxy gives them. Three tiers run them:
//!
//! 1. the reference interpreter ([`oracle`]) over the [`NodeView`](crate::NodeView),
//!    which checks that the scenario files and the core agree
//!    (`tests/conformance_oracle.rs`);
//! 2. every backend against its rendered state with a packet tracer
//!    ([`Tier::Fake`]), plus state checks: a partial sync ends where a full
//!    sync does, a no-op sync writes nothing, `cleanup()` leaves nothing;
//! 3. every backend in the real kernel, with real connections in network
//!    namespaces ([`Tier::Kernel`], feature `netns`).
//!
//! # Running the suite against your backend
//!
//! Implement [`Harness`] for your backend plus a dataplane you can send
//! packets through, and call [`run`] from a test of your crate (in outline
//! below; a complete, compiled one is `examples/src/route_table_harness.rs`
//! with `examples/tests/custom_backend.rs`):
//!
//! ```text
//! use proxy_core::conformance::{self, Harness, Outcome, Packet, Tier};
//! use proxy_core::{Backend, BackendContext, BackendError};
//!
//! struct FakeHarness { backend: MyBackend }          // MyBackend writes into a fake dataplane
//!
//! #[async_trait::async_trait]
//! impl Harness for FakeHarness {
//!     fn backend(&mut self) -> &mut dyn Backend { &mut self.backend }
//!     async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
//!         Ok(self.backend.dataplane().trace(packet))  // walk the packet through your rules
//!     }
//!     async fn dump(&mut self) -> Option<String> {
//!         Some(self.backend.dataplane().dump())       // sorted, canonical
//!     }
//! }
//!
//! #[tokio::test]
//! async fn conformance() {
//!     let factory = |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
//!         Ok(Box::new(FakeHarness { backend: MyBackend::new(ctx)? }))
//!     };
//!     conformance::run(&factory, Tier::Fake).await.assert_passed();
//! }
//! ```
//!
//! What the suite expects of a harness:
//!
//! - **A fresh harness per call** of the factory, built for the scenario's
//!   [`BackendContext`](crate::backend::BackendContext) (family, node,
//!   configuration, local-traffic detector, node-port addresses). Use the
//!   context as given: scenario configurations leave `mode` empty.
//! - **`send`** gives the outcome of the first packet of a connection under
//!   the state the backend last wrote: the set of endpoints that may answer
//!   (every endpoint a random choice could pick) and whether the endpoint
//!   sees a node address instead of the client's, or
//!   dropped / rejected / not matched. Packets enter as [`Origin`] says:
//!   local pods on [`POD_BRIDGE`] (`cbr0`), external traffic on [`UPLINK`]
//!   (`eth0`), host traffic in the OUTPUT path; see [`Origin::in_interface`].
//! - **`dump`** returns a canonical, sorted text of everything the backend
//!   wrote, equal for equal dataplane states, or `None` (real kernel: the
//!   state checks are skipped).
//! - **`capabilities`** (the backend's by default) decides which scenarios
//!   run; [`Scenario::requirements`] says what each needs. Without
//!   `preserves_client_ip`, the `masqueraded` flag is not compared.
//! - Session affinity is not visible in one packet: a harness that sends
//!   several connections per packet must see them all land on one endpoint
//!   of the expected set when the port has affinity.
//!
//! Adding a case is adding a file to `proxy-core/conformance/scenarios/`
//! and a line to the list in `catalog.rs`; the file format is described at
//! [`Scenario`] and the address plan in [`address_plan`].

pub mod address_plan;
mod catalog;
mod harness;
#[cfg(feature = "netns")]
pub mod netns;
pub mod oracle;
mod packet;
mod report;
mod scenario;
mod suite;
mod tier;

pub use catalog::{SCENARIO_FILES, load_scenarios, try_load_scenarios};
pub use harness::{Harness, HarnessFactory};
pub use packet::{Origin, Outcome, POD_BRIDGE, Packet, UPLINK};
pub use report::{CheckResult, PacketResult, Report, ScenarioReport, ScenarioStatus};
pub use scenario::{Scenario, ScenarioPacket};
pub use suite::{run, run_scenarios};
pub use tier::Tier;
