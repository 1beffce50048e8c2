//! Metrics: upstream's kube-proxy metrics ([`ProxyMetrics`], a
//! [`SyncObserver`](crate::runtime::SyncObserver)) and the metrics server
//! ([`MetricsServer`]: `/metrics`, `/healthz`, `/proxyMode`, `/configz`,
//! `/proxyListeners`).
//!
//! `/metrics` is encoded by prometheus-client in the OpenMetrics text format
//! (`application/openmetrics-text; version=1.0.0`), which Prometheus
//! scrapes natively; upstream serves the older Prometheus text format
//! 0.0.4. Names, types, labels and buckets are upstream's.
//!
//! Wiring, in the binary:
//!
//! ```no_run
//! # fn wire(config: proxy_core::config::KubeProxyConfiguration) -> Result<(), proxy_core::Error> {
//! use std::sync::Arc;
//! use proxy_core::runtime::metrics::{MetricsServer, ProxyMetrics};
//!
//! let metrics = Arc::new(ProxyMetrics::new());
//! if let Some(addr) = config.metrics_socket_addr()? {
//!     let server = MetricsServer::new(metrics.clone(), &config);
//!     tokio::spawn(server.serve_retrying(addr, config.bind_address_hard_fail));
//! }
//! // `metrics` is a SyncObserver: pass it to the runtime; hand it to
//! // `ProxyHealth::with_metrics` and `ConntrackCleaner::with_metrics` too.
//! # Ok(()) }
//! ```

mod listings;
mod observer;
mod proxy_metrics;
mod server;

pub use listings::Listings;
pub use observer::no_local_endpoints;
pub use proxy_metrics::{
    CodeLabels, FamilyLabels, PREFIX, PolicyLabels, ProgramLabels, ProxyMetrics, TableLabels,
};
pub use server::{CONFIGZ_KEY, MetricsServer, OPENMETRICS_CONTENT_TYPE};
