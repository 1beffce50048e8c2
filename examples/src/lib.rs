//! Examples of embedding `proxy-core`; the binaries in `src/bin/` are the
//! entry points:
//!
//! - `quickstart`: three HTTP servers on loopback behind a NodePort served
//!   by kube-proxy in userspace mode, from manifests, without root or a
//!   cluster (`cargo run -p examples --bin quickstart`);
//! - `embed`: the whole proxy (`ProxyBuilder`) in a program of its own, with
//!   its own runtime, backend registry and metrics registry;
//! - `embed_backend`: a platform team's program that builds the model from
//!   objects and drives a backend itself;
//! - `custom_backend`: a backend of under 100 lines ([`route_table`]) run
//!   through the shared conformance suite ([`route_table_harness`]).
//!
//! [`http`] (echo servers and a client) and [`objects`] (a Service and its
//! EndpointSlice) are what the examples share.

pub mod http;
pub mod objects;
pub mod route_table;
pub mod route_table_harness;
