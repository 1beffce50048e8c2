//! Endpoint choice for one service port: the current view, round robin and
//! ClientIP session affinity. Shared by every listener of the port and
//! updated in place by a sync, so open connections and listeners are never
//! disturbed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use proxy_core::{ServicePortView, Target};

use crate::plan::TrafficClass;

/// What to do with a new connection or UDP session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refuse it (no endpoint anywhere).
    Reject,
    /// Close it without forwarding (policy `Local`, no local endpoint).
    Drop,
    /// Try these endpoints in order; the first one that answers wins.
    Connect(Vec<SocketAddr>),
}

#[derive(Debug, Clone, Copy)]
struct Sticky {
    endpoint: SocketAddr,
    last_used: Instant,
}

/// The balancer of one service port.
#[derive(Debug)]
pub struct Balancer {
    view: RwLock<Arc<ServicePortView>>,
    next: AtomicUsize,
    sticky: Mutex<HashMap<IpAddr, Sticky>>,
}

impl Balancer {
    /// A balancer over `view`.
    pub fn new(view: Arc<ServicePortView>) -> Self {
        Balancer {
            view: RwLock::new(view),
            next: AtomicUsize::new(0),
            sticky: Mutex::new(HashMap::new()),
        }
    }

    /// The current view.
    pub fn view(&self) -> Arc<ServicePortView> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the view; returns whether it differed. Affinity entries for
    /// endpoints that are gone stop being used at once.
    pub fn update(&self, view: Arc<ServicePortView>) -> bool {
        let mut current = self.view.write().unwrap_or_else(PoisonError::into_inner);
        if **current == *view {
            return false;
        }
        *current = view;
        true
    }

    /// The target of `class` for a client; `from_host` is true when the
    /// client is the node itself, which upstream sends to the cluster
    /// endpoints even under `externalTrafficPolicy: Local`.
    pub fn target(view: &ServicePortView, class: TrafficClass, from_host: bool) -> Target {
        match class.target(view) {
            Target::Local | Target::Drop if class == TrafficClass::External && from_host => {
                Target::Cluster
            }
            target => target,
        }
    }

    /// Decides where a connection from `client` goes.
    pub fn decide(
        &self,
        class: TrafficClass,
        client: IpAddr,
        from_host: bool,
        now: Instant,
    ) -> Decision {
        let view = self.view();
        let target = Self::target(&view, class, from_host);
        let endpoints = match target {
            Target::Reject => return Decision::Reject,
            Target::Drop => return Decision::Drop,
            Target::Cluster | Target::Local => view.endpoints_for(target),
        };
        if endpoints.is_empty() {
            return Decision::Reject;
        }
        let mut order: Vec<SocketAddr> = Vec::with_capacity(endpoints.len());
        if let Some(timeout) = affinity_timeout(&view)
            && let Some(endpoint) = self.sticky_endpoint(client, timeout, now)
            && endpoints.iter().any(|e| e.socket_addr() == endpoint)
        {
            order.push(endpoint);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
        let rotated = endpoints[start..]
            .iter()
            .chain(&endpoints[..start])
            .map(|e| e.socket_addr());
        for endpoint in rotated {
            if !order.contains(&endpoint) {
                order.push(endpoint);
            }
        }
        Decision::Connect(order)
    }

    fn sticky_endpoint(
        &self,
        client: IpAddr,
        timeout: Duration,
        now: Instant,
    ) -> Option<SocketAddr> {
        let mut sticky = self.sticky.lock().unwrap_or_else(PoisonError::into_inner);
        match sticky.get(&client) {
            Some(s) if now.saturating_duration_since(s.last_used) < timeout => Some(s.endpoint),
            Some(_) => {
                sticky.remove(&client);
                None
            }
            None => None,
        }
    }

    /// Records that `client` was connected to `endpoint` (session affinity).
    pub fn remember(&self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        if affinity_timeout(&self.view()).is_none() {
            return;
        }
        let mut sticky = self.sticky.lock().unwrap_or_else(PoisonError::into_inner);
        sticky.insert(
            client,
            Sticky {
                endpoint,
                last_used: now,
            },
        );
    }

    /// Forgets `client`'s affinity (its endpoint failed).
    pub fn forget(&self, client: IpAddr) {
        self.sticky
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&client);
    }

    /// Drops expired affinity entries.
    pub fn expire(&self, now: Instant) {
        let Some(timeout) = affinity_timeout(&self.view()) else {
            self.sticky
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            return;
        };
        self.sticky
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, s| now.saturating_duration_since(s.last_used) < timeout);
    }
}

fn affinity_timeout(view: &ServicePortView) -> Option<Duration> {
    view.port
        .session_affinity
        .map(|a| Duration::from_secs(u64::from(a.timeout_seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{endpoint, port, view, with_affinity, with_external_local};

    fn client() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    fn connect(decision: Decision) -> Vec<SocketAddr> {
        match decision {
            Decision::Connect(c) => c,
            other => panic!("expected Connect, got {other:?}"),
        }
    }

    #[test]
    fn round_robin_rotates_over_every_endpoint() {
        let eps = [
            endpoint("10.1.0.1", false),
            endpoint("10.1.0.2", false),
            endpoint("10.1.0.3", false),
        ];
        let b = Balancer::new(view(port("10.96.0.1", None), &eps));
        let now = Instant::now();
        let firsts: Vec<SocketAddr> = (0..6)
            .map(|_| connect(b.decide(TrafficClass::Internal, client(), false, now))[0])
            .collect();
        let expected: Vec<SocketAddr> = eps.iter().chain(&eps).map(|e| e.socket_addr()).collect();
        assert_eq!(firsts, expected);
        // Every decision lists every endpoint once, so a failed connect can move on.
        let all = connect(b.decide(TrafficClass::Internal, client(), false, now));
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn affinity_sticks_until_timeout_and_drops_removed_endpoints() {
        let eps = [endpoint("10.1.0.1", false), endpoint("10.1.0.2", false)];
        let b = Balancer::new(view(with_affinity(port("10.96.0.1", None), 10), &eps));
        let t0 = Instant::now();
        let first = connect(b.decide(TrafficClass::Internal, client(), false, t0))[0];
        b.remember(client(), first, t0);
        for s in 1..5 {
            let at = t0 + Duration::from_secs(s);
            assert_eq!(
                connect(b.decide(TrafficClass::Internal, client(), false, at))[0],
                first
            );
        }
        // Expired: round robin again (the counter moved on, so another endpoint).
        let late = t0 + Duration::from_secs(11);
        let after = connect(b.decide(TrafficClass::Internal, client(), false, late));
        assert_eq!(after.len(), 2);
        // An endpoint removed by a sync is no longer used, even if sticky.
        b.remember(client(), first, late);
        let remaining: Vec<_> = eps
            .iter()
            .filter(|e| e.socket_addr() != first)
            .cloned()
            .collect();
        assert!(b.update(view(with_affinity(port("10.96.0.1", None), 10), &remaining)));
        let now = connect(b.decide(TrafficClass::Internal, client(), false, late));
        assert_eq!(now, vec![remaining[0].socket_addr()]);
    }

    #[test]
    fn external_local_policy_drops_without_local_endpoints_but_not_for_the_host() {
        let eps = [endpoint("10.1.0.1", false)];
        let b = Balancer::new(view(
            with_external_local(port("10.96.0.1", Some(30080))),
            &eps,
        ));
        let now = Instant::now();
        assert_eq!(
            b.decide(TrafficClass::External, client(), false, now),
            Decision::Drop
        );
        assert_eq!(
            connect(b.decide(TrafficClass::External, client(), true, now)),
            vec![eps[0].socket_addr()]
        );
        assert_eq!(
            connect(b.decide(TrafficClass::Internal, client(), false, now)),
            vec![eps[0].socket_addr()]
        );
    }

    #[test]
    fn no_endpoints_rejects() {
        let b = Balancer::new(view(port("10.96.0.1", Some(30080)), &[]));
        let now = Instant::now();
        assert_eq!(
            b.decide(TrafficClass::Internal, client(), false, now),
            Decision::Reject
        );
        assert_eq!(
            b.decide(TrafficClass::External, client(), true, now),
            Decision::Reject
        );
    }

    #[test]
    fn update_reports_only_real_changes() {
        let eps = [endpoint("10.1.0.1", false)];
        let b = Balancer::new(view(port("10.96.0.1", None), &eps));
        assert!(!b.update(view(port("10.96.0.1", None), &eps)));
        assert!(b.update(view(port("10.96.0.1", None), &[])));
    }
}
