//! [`PredictingHarness`]: the kernel tier with every probe also predicted
//! (by a backend's packet tracer, say) and the prediction checked against
//! the real packet.

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, BackendError, Capabilities};
use crate::conformance::{Harness, Outcome, Packet};

use super::harness::KernelHarness;

/// What a predictor says a probe does.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The predicted outcome (every endpoint a random choice may pick).
    pub outcome: Outcome,
    /// Whether session affinity may pin the client: then the endpoints
    /// that really answered need only be a subset of the predicted ones.
    pub affinity: bool,
    /// How the predictor got there (a trace), shown on a mismatch.
    pub explanation: String,
}

impl Prediction {
    /// Whether this agrees with the `real` outcome of `packet`: the same
    /// endpoint set (a subset under affinity), the same drop / reject /
    /// not matched, and the same masquerade decision, except that a
    /// hairpin answer (client == endpoint, always masqueraded) is left out
    /// of the masquerade check when others may answer, as
    /// [`KernelHarness`] leaves it out of its own.
    pub fn agrees(&self, packet: &Packet, real: &Outcome) -> bool {
        match (&self.outcome, real) {
            (
                Outcome::Forwarded {
                    endpoints: p,
                    masqueraded: pm,
                },
                Outcome::Forwarded {
                    endpoints: r,
                    masqueraded: rm,
                },
            ) => {
                let endpoints_ok = if self.affinity {
                    r.is_subset(p)
                } else {
                    r == p
                };
                let hairpin = p.iter().any(|e| e.ip() == packet.source) && p.len() > 1;
                endpoints_ok && (hairpin || pm == rm)
            }
            (p, r) => p == r,
        }
    }
}

/// Predicts what a probe does, from the state the backend wrote.
pub trait Predictor: Send {
    /// The prediction for `packet`, with `harness` at hand (its topology's
    /// node namespace holds the backend's state; see
    /// [`PredictingHarness::in_node`]). `Ok(Err(reason))`: the predictor
    /// failed, a mismatch; `Err`: the harness failed.
    fn predict(
        &mut self,
        harness: &KernelHarness,
        packet: &Packet,
    ) -> Result<Result<Prediction, String>, BackendError>;
}

/// What the probes of a [`PredictingHarness`] found, shared by every
/// harness of a run.
#[derive(Debug, Default)]
pub struct PredictionTally {
    /// Probes predicted.
    pub checked: usize,
    /// One line (and the explanation) per probe mispredicted.
    pub mismatches: Vec<String>,
}

impl PredictionTally {
    /// Panics unless every probe was predicted right and more than
    /// `at_least` were predicted; `what` names the run in the message.
    pub fn assert_all_agree(&self, what: &str, at_least: usize) {
        assert!(
            self.mismatches.is_empty(),
            "{what}: {} of {} probes mispredicted:\n{}",
            self.mismatches.len(),
            self.checked,
            self.mismatches.join("\n")
        );
        assert!(
            self.checked > at_least,
            "{what}: only {} probes predicted",
            self.checked
        );
    }
}

/// A [`KernelHarness`] whose every probe is also predicted by a
/// [`Predictor`]; disagreements go to the [`PredictionTally`] (the real
/// outcome is what [`Harness::send`] returns, so the suite checks it as
/// usual).
pub struct PredictingHarness<P> {
    inner: KernelHarness,
    predictor: P,
    label: String,
    tally: Arc<Mutex<PredictionTally>>,
}

impl<P: Predictor> PredictingHarness<P> {
    /// Wraps `inner`; mismatch lines start with `label` (when not empty).
    pub fn new(
        inner: KernelHarness,
        predictor: P,
        label: impl Into<String>,
        tally: Arc<Mutex<PredictionTally>>,
    ) -> Self {
        PredictingHarness {
            inner,
            predictor,
            label: label.into(),
            tally,
        }
    }

    /// Runs `f` to completion inside `harness`'s node namespace, on a
    /// throw-away current-thread runtime.
    pub fn in_node<F>(harness: &KernelHarness, f: F) -> Result<F::Output, BackendError>
    where
        F: Future + Send,
        F::Output: Send,
    {
        harness
            .topology()
            .node()
            .run(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(f))
            })
            .and_then(|built| built)
            .map_err(|e| BackendError::dataplane(format!("cannot enter the node: {e}")))
    }
}

#[async_trait::async_trait]
impl<P: Predictor> Harness for PredictingHarness<P> {
    fn backend(&mut self) -> &mut dyn Backend {
        self.inner.backend()
    }

    fn capabilities(&mut self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        let real = self.inner.send(packet).await?;
        let predicted = self.predictor.predict(&self.inner, packet)?;
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("{} ", self.label)
        };
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.checked += 1;
        match predicted {
            Ok(p) if p.agrees(packet, &real) => {}
            Ok(p) => tally.mismatches.push(format!(
                "{label}{packet}: real {real}, trace predicted {}\n{}",
                p.outcome, p.explanation
            )),
            Err(e) => tally
                .mismatches
                .push(format!("{label}{packet}: real {real}, trace failed: {e}")),
        }
        Ok(real)
    }

    async fn dump(&mut self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use super::*;
    use crate::Protocol;
    use crate::conformance::Origin;

    fn packet(source: &str) -> Packet {
        Packet {
            origin: Origin::External,
            source: source.parse().unwrap(),
            destination: "10.96.0.1".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
        }
    }

    fn forwarded(endpoints: &[&str], masqueraded: bool) -> Outcome {
        let endpoints: BTreeSet<SocketAddr> =
            endpoints.iter().map(|e| e.parse().unwrap()).collect();
        Outcome::Forwarded {
            endpoints,
            masqueraded,
        }
    }

    fn predict(outcome: Outcome, affinity: bool) -> Prediction {
        Prediction {
            outcome,
            affinity,
            explanation: String::new(),
        }
    }

    #[test]
    fn endpoints_must_match_exactly_unless_affinity_pins_the_client() {
        let both = ["10.0.0.1:80", "10.0.0.2:80"];
        let one = forwarded(&both[..1], false);
        let p = packet("192.0.2.1");
        assert!(predict(forwarded(&both, false), false).agrees(&p, &forwarded(&both, false)));
        assert!(!predict(forwarded(&both, false), false).agrees(&p, &one));
        assert!(predict(forwarded(&both, false), true).agrees(&p, &one));
        assert!(!predict(forwarded(&both[..1], false), true).agrees(&p, &forwarded(&both, false)));
    }

    #[test]
    fn masquerade_must_match_except_for_a_hairpin_among_others() {
        let both = ["10.0.0.1:80", "10.0.0.2:80"];
        let predicted = predict(forwarded(&both, false), false);
        assert!(!predicted.agrees(&packet("192.0.2.1"), &forwarded(&both, true)));
        assert!(predicted.agrees(&packet("10.0.0.1"), &forwarded(&both, true)));
        let alone = predict(forwarded(&both[..1], false), false);
        assert!(!alone.agrees(&packet("10.0.0.1"), &forwarded(&both[..1], true)));
    }

    #[test]
    fn other_outcomes_must_be_equal() {
        let p = packet("192.0.2.1");
        assert!(predict(Outcome::Rejected, false).agrees(&p, &Outcome::Rejected));
        assert!(!predict(Outcome::Rejected, false).agrees(&p, &Outcome::Dropped));
        assert!(
            !predict(Outcome::NotMatched, false).agrees(&p, &forwarded(&["10.0.0.1:80"], true))
        );
    }
}
