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
//! # async fn wire(config: proxy_core::config::KubeProxyConfiguration, node: proxy_core::NodeInfo)
//! #     -> Result<Vec<std::sync::Arc<dyn proxy_core::runtime::SyncObserver>>, proxy_core::Error> {
//! use std::sync::Arc;
//! use proxy_core::runtime::health::{HealthCheckAddresses, HealthServer, ProxyHealth, ServiceHealthServer};
//! use proxy_core::runtime::metrics::ProxyMetrics;
//!
//! let metrics = Arc::new(ProxyMetrics::new());
//! let health = Arc::new(ProxyHealth::from_config(&config).with_metrics(metrics.clone()));
//! if let Some(addr) = config.healthz_socket_addr()? {
//!     tokio::spawn(HealthServer::new(health.clone()).serve_retrying(addr, config.bind_address_hard_fail));
//! }
//! // Every address unless nodePortAddresses selects some; `local_ips` are the host's IPs.
//! let local_ips = Vec::new();
//! let addresses = HealthCheckAddresses::from_node_port_addresses(&config.node_port_addresses()?, &local_ips, &node);
//! let service_health = Arc::new(ServiceHealthServer::new(health.clone(), addresses));
//! // Pass these to the runtime as observers.
//! Ok(vec![health, service_health, metrics])
//! # }
//! ```

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
    ENDPOINT_WEIGHT_HEADER, HealthCheckAddresses, ServiceHealthServer, health_check_body,
};
pub use time_format::{GO_ZERO_TIME, rfc3339_nano};
