//! The real-kernel tier of the conformance suite (feature `netns`): a
//! backend programs the real kernel inside network namespaces, and packets
//! are real connections to echo servers.
//!
//! - [`Netns`]: an anonymous network namespace held by a file descriptor;
//!   code and commands run inside it on helper threads, never on the
//!   caller's thread. Dropping it destroys the namespace.
//! - [`NodeTopology`]: a node namespace (uplink `eth0`, bridge `cbr0`, the
//!   sysctls kube-proxy needs), one pod namespace per local endpoint IP, and
//!   a `lan` namespace for remote endpoints, external clients and the
//!   router; grown from each [`NodeView`](crate::NodeView).
//! - [`NetnsBackend`]: the backend under test, on a worker thread inside
//!   the node namespace.
//! - [`KernelHarness`] / [`kernel_harness_factory`]: the
//!   [`Harness`](crate::conformance::Harness) that ties them together.
//! - [`PredictingHarness`]: the same, with every probe also predicted by a
//!   [`Predictor`] (a packet tracer) and checked against the real packet.
//! - [`check_privileges`] and [`privileged_or_skip`]: tests skip with a
//!   reason, or fail when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` (CI).
//! - `run_tool` (with feature `exec`): `nft`, `iptables-restore` and the
//!   like, run by a test from a thread inside a namespace.
//!
//! # Running the suite against a backend in the real kernel
//!
//! ```text
//! use proxy_core::conformance::{self, Tier, netns};
//! use proxy_core::{Backend, BackendContext, BackendError};
//!
//! #[tokio::test]
//! async fn conformance_in_the_kernel() {
//!     if !netns::privileged_or_skip_with("conformance_in_the_kernel", || {
//!         netns::check_tool("nft", &["--version"], "nftables")
//!     }) {
//!         return;
//!     }
//!     let factory = netns::kernel_harness_factory(|ctx: &BackendContext| {
//!         Ok(Box::new(MyBackend::new(ctx)?) as Box<dyn Backend>)
//!     });
//!     conformance::run(&factory, Tier::Kernel).await.assert_passed();
//! }
//! ```
//!
//! # Comparing outcomes
//!
//! [`Outcome::Forwarded`](crate::conformance::Outcome::Forwarded) carries
//! the set of endpoints that *answered* over
//! [`SendOptions::forwarded_attempts`] connections (64 by default), not the
//! set that may answer. The suite asserts equality with the expected set
//! (a uniformly balanced endpoint is missed with probability at most
//! `k·(1−1/k)^64` ≈ 4e-8 for k = 4 endpoints), and, for a port with session
//! affinity, that exactly one expected endpoint answers. `masqueraded` is the same over every answer, except
//! that a hairpin answer (the client is the endpoint) is masqueraded by
//! upstream's rules while the others are not; such answers are left out of
//! the check when other endpoints answered too.
//!
//! Errors map as follows: refused or reset → `Rejected`; `EHOSTUNREACH` /
//! `ENETUNREACH`, or an answer from the destination itself (an echo server
//! on a node port no backend owns, a pod addressed directly) → `NotMatched`;
//! no answer within [`SendOptions::timeout`] → `Dropped`.
//!
//! See `README.md` next to this file for the kernel pitfalls the topology
//! works around.

mod addressing;
mod echo;
mod harness;
mod ip;
mod namespace;
mod outcome;
mod predict;
mod privileges;
mod probe;
mod sctp;
mod send;
mod source_ports;
#[cfg(feature = "exec")]
mod tool;
mod topology;
mod worker;

pub use addressing::{SERVICE_CIDR_V4, SERVICE_CIDR_V6, pod_gateway, service_cidrs};
pub use echo::{echo_reply, parse_echo_reply};
pub use harness::{KernelHarness, kernel_harness_factory, kernel_harness_factory_with};
pub use namespace::{Netns, NetnsCommand};
pub use predict::{PredictingHarness, Prediction, PredictionTally, Predictor};
pub use privileges::{
    PrivilegeGate, REQUIRE_PRIVILEGED_ENV, check_privileges, check_tool, privileged_or_skip,
    privileged_or_skip_with,
};
pub use sctp::{NO_SCTP_REASON, assert_only_missing_sctp_skipped, kernel_has_sctp};
pub use send::SendOptions;
#[cfg(feature = "exec")]
pub use tool::run_tool;
pub use topology::{ClientPlace, NodeTopology};
pub use worker::{MakeBackend, NetnsBackend};
