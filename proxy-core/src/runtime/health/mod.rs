//! Health: the proxy health server (`/healthz`, `/livez`) and the
//! health-check node ports of `externalTrafficPolicy: Local` services.
//!
//! - [`ProxyHealth`]: upstream's `ProxyHealthServer` state. A
//!   [`SyncObserver`](crate::runtime::SyncObserver): `queued` →
//!   `QueuedUpdate`, `synced` → `Updated`, `node` → eligibility.
//! - [`HealthServer`]: serves `/healthz` and `/livez` from it on
//!   `healthzBindAddress`.
//! - [`ServiceHealthServer`]: one listener per health-check node port, also
//!   a `SyncObserver` (listeners follow the synced views).
//! - [`Clock`]: injected time, so tests can move it.
//!
//! Wiring, in the binary (the metrics are optional):
//!
//! ```no_run
//! # async fn wire(config: proxy_core::config::KubeProxyConfiguration)
//! #     -> Result<Vec<std::sync::Arc<dyn proxy_core::runtime::SyncObserver>>, proxy_core::Error> {
//! use std::sync::Arc;
//! use proxy_core::runtime::health::{HealthServer, ProxyHealth, ServiceHealthServer};
//! use proxy_core::runtime::metrics::ProxyMetrics;
//!
//! let metrics = Arc::new(ProxyMetrics::new());
//! let health = Arc::new(ProxyHealth::from_config(&config).with_metrics(metrics.clone()));
//! if let Some(addr) = config.healthz_socket_addr()? {
//!     tokio::spawn(HealthServer::new(health.clone()).serve_retrying(addr, config.bind_address_hard_fail));
//! }
//! // Where nodePortAddresses selects: the synced node's primary IPs, the
//! // host's addresses (listed by the closure, e.g. with getifaddrs) in its CIDRs.
//! let service_health = Arc::new(ServiceHealthServer::for_node_port_addresses(
//!     health.clone(),
//!     config.node_port_addresses()?,
//!     Arc::new(|| Ok(Vec::new())),
//! ));
//! // Rebind when the host's addresses change, not only at the next sync.
//! service_health.watch_host_addresses();
//! // Pass these to the runtime as observers.
//! Ok(vec![health, service_health, metrics])
//! # }
//! ```

mod address_watch;
mod clock;
mod http;
mod proxy;
mod server;
mod service;
mod time_format;

pub use clock::{Clock, SystemClock, system_clock};
pub use http::{RETRY_INTERVAL, bind, serve_on, serve_retrying};
pub use proxy::{FamilyHealth, Health, ProxyHealth};
pub use server::{HealthAnswer, HealthServer};
pub use service::{
    ENDPOINT_WEIGHT_HEADER, HealthCheckAddresses, HostAddressLister, ServiceHealthServer,
    health_check_body,
};
pub use time_format::{GO_ZERO_TIME, rfc3339_nano};
