//! The conformance suite's kernel tier with every probe also traced by
//! `kube-proxy trace` through the live rules of the node namespace (shared
//! by `trace_kernel.rs` and `trace_userspace_kernel.rs`, included with
//! `#[path]`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use kube_proxy::trace::{Request, trace_live_at};
use proxy_core::ProxyMode;
use proxy_core::backend::BackendError;
use proxy_core::conformance::netns::{KernelHarness, PredictingHarness, Prediction, Predictor};
use proxy_core::conformance::{Origin, Packet};

/// Traces each probe with `trace_live_at` in `mode`, reading the userspace
/// listener table from the metrics server whose address is in `metrics`
/// (known once the backend is built; `None`: the default address).
pub struct Tracing {
    /// The mode whose rules are walked.
    pub mode: ProxyMode,
    /// The metrics server of the userspace backend.
    pub metrics: Arc<Mutex<Option<SocketAddr>>>,
}

impl Tracing {
    /// Traces in `mode`, with the metrics server's address not known yet
    /// (nor needed outside userspace mode).
    pub fn new(mode: ProxyMode) -> Self {
        Tracing {
            mode,
            metrics: Arc::default(),
        }
    }
}

impl Predictor for Tracing {
    fn predict(
        &mut self,
        harness: &KernelHarness,
        packet: &Packet,
    ) -> Result<Result<Prediction, String>, BackendError> {
        let request = Request {
            protocol: packet.protocol,
            from: packet.source,
            to: SocketAddr::new(packet.destination, packet.port),
            in_interface: match packet.origin {
                Origin::Host => None,
                o => o.in_interface().map(str::to_string),
            },
        };
        let metrics = *self.metrics.lock().unwrap();
        let traced = PredictingHarness::<Self>::in_node(
            harness,
            trace_live_at(Some(self.mode), &request, metrics),
        )?;
        Ok(traced
            .map(|report| Prediction {
                affinity: report.choices.iter().any(|c| c.affinity),
                explanation: report.text(),
                outcome: report.outcome,
            })
            .map_err(|e| e.to_string()))
    }
}
