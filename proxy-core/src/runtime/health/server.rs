//! [`HealthServer`]: `/healthz` and `/livez` over HTTP.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::error::Error;

use super::http::{bind, serve_on, serve_retrying};
use super::proxy::{Health, ProxyHealth};
use super::time_format::rfc3339_nano;

/// `X-Content-Type-Options: nosniff`, set on every health answer.
pub(super) const NOSNIFF: (&str, &str) = ("x-content-type-options", "nosniff");

/// One family under `status`, upstream's `ProxierHealth`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FamilyBody {
    last_updated: String,
    healthy: bool,
}

/// Upstream's `ProxyHealth` JSON, field for field and in its order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthBody {
    last_updated: String,
    current_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_eligible: Option<bool>,
    healthy: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    status: BTreeMap<&'static str, FamilyBody>,
}

/// An answer of `/healthz` or `/livez`: the status code and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthAnswer {
    /// 200 or 503.
    pub code: u16,
    /// Upstream's JSON.
    pub body: String,
}

impl HealthAnswer {
    fn new(health: Health, node_eligible: Option<bool>, healthy: bool) -> Self {
        // Upstream reports "now" as lastUpdated while healthy, for
        // compatibility with releases where it was the last loop run.
        let last_updated = if healthy {
            Some(health.current_time)
        } else {
            health.last_updated
        };
        let body = HealthBody {
            last_updated: rfc3339_nano(last_updated),
            current_time: rfc3339_nano(Some(health.current_time)),
            node_eligible,
            healthy: health.healthy,
            status: health
                .families
                .iter()
                .map(|(family, f)| {
                    (
                        family.as_str(),
                        FamilyBody {
                            last_updated: rfc3339_nano(f.last_updated),
                            healthy: f.healthy,
                        },
                    )
                })
                .collect(),
        };
        HealthAnswer {
            code: if healthy { 200 } else { 503 },
            // Serializing strings and bools cannot fail.
            body: serde_json::to_string(&body).unwrap_or_default(),
        }
    }
}

impl ProxyHealth {
    /// The `/healthz` answer: 503 when a family is unhealthy or the node is
    /// ineligible. Counted in `kubeproxy_proxy_healthz_total{code}`.
    pub fn healthz(&self) -> HealthAnswer {
        let health = self.health();
        let eligible = self.node_eligible();
        let healthy = health.healthy && eligible;
        let answer = HealthAnswer::new(health, Some(eligible), healthy);
        self.count_healthz(answer.code);
        answer
    }

    /// The `/livez` answer: like `/healthz` without the node's eligibility
    /// (no `nodeEligible` field). Counted in `kubeproxy_proxy_livez_total{code}`.
    pub fn livez(&self) -> HealthAnswer {
        let health = self.health();
        let healthy = health.healthy;
        let answer = HealthAnswer::new(health, None, healthy);
        self.count_livez(answer.code);
        answer
    }
}

impl IntoResponse for HealthAnswer {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        (
            code,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    header::HeaderName::from_static(NOSNIFF.0),
                    HeaderValue::from_static(NOSNIFF.1),
                ),
            ],
            self.body,
        )
            .into_response()
    }
}

/// The proxy health server (`healthzBindAddress`, default `0.0.0.0:10256`):
/// `/healthz` and `/livez` answered from a shared [`ProxyHealth`].
#[derive(Debug, Clone)]
pub struct HealthServer {
    health: Arc<ProxyHealth>,
}

impl HealthServer {
    /// A server answering from `health`.
    pub fn new(health: Arc<ProxyHealth>) -> Self {
        HealthServer { health }
    }

    /// The routes, for embedding in another server.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/healthz",
                get(|State(h): State<Arc<ProxyHealth>>| async move { h.healthz() }),
            )
            .route(
                "/livez",
                get(|State(h): State<Arc<ProxyHealth>>| async move { h.livez() }),
            )
            .with_state(self.health.clone())
    }

    /// Serves on an already bound listener until it fails.
    pub async fn serve_listener(&self, listener: TcpListener) -> Result<(), Error> {
        serve_on(listener, self.router(), "healthz").await
    }

    /// Binds `addr` and serves; an error if binding fails.
    pub async fn serve(&self, addr: SocketAddr) -> Result<(), Error> {
        self.serve_listener(bind(addr, "healthz").await?).await
    }

    /// Upstream's loop: serve `addr`, retrying every 5s after a failure
    /// unless `hard_fail` (`bindAddressHardFail`).
    pub fn serve_retrying(
        &self,
        addr: SocketAddr,
        hard_fail: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        serve_retrying(addr, hard_fail, self.router(), "healthz")
    }
}
