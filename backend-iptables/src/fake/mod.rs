//! A fake dataplane for tests: an [`FakeExecutor`] holding iptables state in
//! memory, and [`FakeHarness`], the conformance-suite harness that traces
//! packets through it.

mod executor;
mod harness;

pub use executor::{FakeExecutor, FakeState};
pub use harness::FakeHarness;
