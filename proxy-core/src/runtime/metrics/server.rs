//! [`MetricsServer`]: `/metrics`, `/healthz`, `/proxyMode`, `/configz` and
//! `/proxyListeners`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::KubeProxyConfiguration;
use crate::error::Error;
use crate::runtime::health::{bind, serve_on, serve_retrying};

use super::proxy_metrics::ProxyMetrics;

/// The content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The key `/configz` files the configuration under, upstream's
/// `kubeproxy.config.k8s.io`.
pub const CONFIGZ_KEY: &str = "kubeproxy.config.k8s.io";

const NOSNIFF: (&str, &str) = ("x-content-type-options", "nosniff");

/// The metrics server (`metricsBindAddress`, default `127.0.0.1:10249`).
#[derive(Debug, Clone)]
pub struct MetricsServer {
    metrics: Arc<ProxyMetrics>,
    mode: &'static str,
    configz: Arc<String>,
}

impl MetricsServer {
    /// A server exposing `metrics`, the mode and the configuration of `config`.
    pub fn new(metrics: Arc<ProxyMetrics>, config: &KubeProxyConfiguration) -> Self {
        let configz = serde_json::json!({ CONFIGZ_KEY: config });
        MetricsServer {
            metrics,
            mode: config.effective_mode().as_str(),
            configz: Arc::new(configz.to_string()),
        }
    }

    /// The routes, for embedding in another server.
    pub fn router(&self) -> Router {
        let metrics = self.metrics.clone();
        let mode = self.mode;
        let configz = self.configz.clone();
        let listings = self.metrics.clone();
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let body = metrics.encode();
                    async move { ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body) }
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/proxyMode",
                get(move || async move { text(mode.to_string()) }),
            )
            .route(
                "/configz",
                get(move || {
                    let body = configz.as_ref().clone();
                    async move {
                        (
                            [
                                (
                                    header::CONTENT_TYPE,
                                    HeaderValue::from_static("application/json"),
                                ),
                                (
                                    HeaderName::from_static(NOSNIFF.0),
                                    HeaderValue::from_static(NOSNIFF.1),
                                ),
                            ],
                            body,
                        )
                    }
                }),
            )
            .route(
                "/proxyListeners",
                get(move || {
                    let body = listings.listings.document();
                    async move { listing(body) }
                }),
            )
    }

    /// Serves on an already bound listener until it fails.
    pub async fn serve_listener(&self, listener: TcpListener) -> Result<(), Error> {
        serve_on(listener, self.router(), "metrics").await
    }

    /// Binds `addr` and serves; an error if binding fails.
    pub async fn serve(&self, addr: SocketAddr) -> Result<(), Error> {
        self.serve_listener(bind(addr, "metrics").await?).await
    }

    /// Upstream's loop: serve `addr`, retrying every 5s after a failure
    /// unless `hard_fail` (`bindAddressHardFail`).
    pub fn serve_retrying(
        &self,
        addr: SocketAddr,
        hard_fail: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        serve_retrying(addr, hard_fail, self.router(), "metrics")
    }
}

/// A `text/plain` answer with `nosniff`, as upstream's `/proxyMode`.
fn text(body: String) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                HeaderName::from_static(NOSNIFF.0),
                HeaderValue::from_static(NOSNIFF.1),
            ),
        ],
        body,
    )
}

/// `/proxyListeners` (beyond upstream): the backends' in-process dataplane
/// state as JSON (the userspace mode's listener table), read by `kube-proxy
/// trace` and `diff`; 404 when the mode keeps its state in the kernel.
/// Served on the metrics address only (loopback by default), read-only.
fn listing(body: Option<String>) -> axum::response::Response {
    match body {
        Some(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    HeaderName::from_static(NOSNIFF.0),
                    HeaderValue::from_static(NOSNIFF.1),
                ),
            ],
            body,
        )
            .into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            text(
                "this proxy mode publishes no listener table: its rules are in the kernel\n"
                    .to_string(),
            ),
        )
            .into_response(),
    }
}
