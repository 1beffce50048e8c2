//! Fuzz targets and property-test drivers for kube-proxy.
//!
//! - [`targets`]: one function per fuzz target (manifest parsing, topology
//!   updates, configuration loading, `iptables-save` output, `nft` output),
//!   each taking raw bytes. The `fuzz` binary runs them for millions of
//!   mutated inputs; `tests/fuzz_smoke.rs` runs the same functions for a few
//!   seconds in CI.
//! - [`seeds`]: the starting corpus of each target, built from the
//!   conformance scenarios and the files under `corpus/`.
//! - [`mutate`]: a deterministic mutator (bytes, and JSON values for the
//!   object targets).
//! - [`churn`]: random sequences of Service, EndpointSlice and Node changes
//!   and the check that every partial sync ends where a full sync from
//!   scratch does (`tests/partial_equals_full*.rs`).
//!
//! The toolchain here is stable only, so coverage-guided `cargo fuzz`
//! (libFuzzer, nightly flags) is not used: the `fuzz` binary is a
//! mutation-based fuzzer with a seeded RNG, so every run is reproducible
//! from its seed. See `README.md`.

pub mod churn;
pub mod mutate;
pub mod rng;
pub mod seeds;
pub mod targets;
