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
//! Two drivers run the targets: the `fuzz` binary, a mutation-based fuzzer
//! with a seeded RNG that builds on stable (every run is reproducible from
//! its seed), and coverage-guided `cargo fuzz` (libFuzzer) through the
//! entry points in `libfuzzer/` (`RUSTC_BOOTSTRAP=1` on stable). See
//! `README.md`.

pub mod churn;
pub mod mutate;
pub mod rng;
pub mod seeds;
pub mod targets;
