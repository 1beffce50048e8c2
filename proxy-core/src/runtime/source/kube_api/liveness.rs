//! Noticing a silently dead connection to the API server, and coming back
//! quickly once it answers again.
//!
//! # The failure
//!
//! A watch is one long HTTP response. When the network between the node
//! and the API server starts dropping packets silently (a partition, a
//! rebooted load balancer that forgot the flow), nothing tells the client:
//! no reset, no FIN, just silence, which on a quiet cluster looks exactly
//! like a healthy watch with nothing to report. Once the network heals,
//! the old connection may come back to life only when the server's TCP
//! retransmission timer next fires (its back-off reaches tens of seconds
//! after a minute and a half of loss), and a client sleeping in a 30 s
//! back-off or a 30 s connect attempt adds its own wait. Measured on the
//! previous version: a Service created during a 90 s partition was
//! programmed ~30 s after the heal.
//!
//! # What client-go does, and what we do
//!
//! client-go's HTTP/2 transport pings a connection after 30 s without a
//! frame and closes it when the ping is not answered within 15 s: a dead
//! connection is noticed within 45 s. kube-rs speaks HTTP/1.1 to the API
//! server, where there is no ping, so the same timings are set one layer
//! down, on every socket the client opens ([`super::client_with_liveness`]):
//!
//! - **TCP keepalive**: a probe after [`KEEPALIVE_IDLE`] (30 s) without a
//!   packet from the server, then every [`KEEPALIVE_INTERVAL`] (5 s). A
//!   healthy server's kernel answers probes even when the watch is quiet,
//!   so this costs one small packet per 30 s and never ends a live watch.
//! - **`TCP_USER_TIMEOUT`** of [`DEAD_AFTER`] (45 s): the kernel aborts the
//!   connection when data it sent stays unacknowledged that long (a request
//!   sent into the black hole), and, combined with keepalive, when the
//!   probes have gone unanswered for that long since the last packet
//!   received. Either way a dead connection ends with `ETIMEDOUT` ≤ 45 s
//!   after the server was last heard from, like client-go's 30 s + 15 s.
//! - **connect timeout** of [`CONNECT_TIMEOUT`] (5 s): while the server is
//!   unreachable, SYNs are dropped and retransmitted with a growing delay
//!   (1, 3, 7, 15, 31 s; Linux ≥ 6.7 first retransmits 4 times 1 s apart,
//!   `net.ipv4.tcp_syn_linear_timeouts`); a long attempt could leave the
//!   client waiting up to 16 s for the next SYN after the heal. A short
//!   attempt followed by a new one keeps that wait ≤ 2 s (≤ 1 s on newer
//!   kernels).
//!
//! The watchers then retry with [`WatchBackoff`]: 1 s doubling to at most
//! [`RETRY_MAX`] (5 s), with jitter, instead of kube-rs's default cap of
//! 30 s. A retry while the server is unreachable costs the server nothing
//! (the packets never arrive); a node retries a struggling server at most
//! every 2.5–5 s per watch, and kube's request retry layer already backs
//! off on 429/503 answers.
//!
//! Worst case after a heal: the current connect attempt times out (≤ 2 s
//! after its last SYN), one back-off (≤ 5 s), then a list or a watch from
//! the last resourceVersion, which replays what was missed. Rules stay
//! programmed throughout: a failed watch deletes nothing. Measured
//! (`tests/api_partition.rs`, 90 s black hole, 4 runs): synced 0.0–2.6 s
//! after the heal, against 24 s with kube-rs's defaults.
//!
//! A partition shorter than the detection window (45 s) does not end the
//! connection: what the server sent meanwhile arrives with its next TCP
//! retransmission, whose back-off is the server kernel's (measured: 12 s
//! after a 20 s partition). client-go's ping has the same window.
//!
//! Application-level timeouts were the alternative: a short server-side
//! watch timeout (`watcher::Config::timeout`) with kube-rs's idle guard
//! (timeout + 5 s) would find a dead watch too, but at the price of
//! restarting every watch every ~40 s on every node, and it does not cover
//! a list or a watch request that hangs before its response starts; a
//! read timeout on the connection would cut quiet healthy watches. The
//! watcher's default idle guard (295 s) stays as a backstop.
//!
//! # Logs
//!
//! The client built by [`super::client_with_liveness`] watches its own
//! requests and response bodies: the first failure of an outage is logged
//! once at `warn`, the first answer after it at `info` with the outage's
//! length. The watchers log their own failures at
//! `debug` when they only mean "unreachable" (see [`is_unreachable`]).

use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;
use kube::runtime::watcher;

/// Idle time before the first TCP keepalive probe (client-go: HTTP/2 read
/// idle timeout, 30 s).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the kernel gives up (`TCP_USER_TIMEOUT`
/// decides first when it is set, as here).
pub const KEEPALIVE_PROBES: u32 = 3;
/// `TCP_USER_TIMEOUT`: a connection whose peer has been silent this long
/// while we wait for an acknowledgement is aborted (client-go: 30 s idle +
/// 15 s ping timeout).
pub const DEAD_AFTER: Duration = Duration::from_secs(45);
/// TCP connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First watch retry delay after a failure.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest watch retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// The watchers' retry delays: [`RETRY_MIN`] doubling up to [`RETRY_MAX`],
/// each scaled by a random factor in [½, 1] so that the nodes of a
/// cluster do not come back in lockstep. Reset by the first event after a
/// failure.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    /// Random per instance; hashed with `draws` for each jitter.
    seed: std::collections::hash_map::RandomState,
    draws: u64,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: RETRY_MIN,
            seed: std::collections::hash_map::RandomState::new(),
            draws: 0,
        }
    }
}

impl WatchBackoff {
    /// A random number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.draws += 1;
        let mut hasher = self.seed.build_hasher();
        hasher.write_u64(self.draws);
        // The top 53 bits as a fraction.
        (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(RETRY_MAX);
        Some(base.mul_f64(0.5 + self.unit() / 2.0))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = RETRY_MIN;
    }
}

/// Whether a watcher error only says that the API server could not be
/// reached or did not answer (connection refused, reset or timed out, a
/// `5xx` or `429`): the client's outage log reports those once per outage,
/// so the watcher logs them at `debug`.
pub fn is_unreachable(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
                true
            }
            kube::Error::Api(status) => status.code >= 500 || status.code == 429,
            _ => false,
        },
        watcher::Error::WatchError(status) => status.code >= 500 || status.code == 429,
        watcher::Error::NoResourceVersion => false,
    }
}

/// Whether the API server answers, as seen by every request and response
/// body of one client. Logs the first failure of an outage at `warn`, and
/// the first answer after it at `info`.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    down_since: Mutex<Option<Instant>>,
}

impl Reachability {
    fn down_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // Poisoning cannot leave an Option<Instant> inconsistent.
        self.down_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request failed, a response body broke off, or the server answered
    /// `5xx`.
    pub(crate) fn failed(&self, error: &dyn std::fmt::Display) {
        let mut down = self.down_since();
        if down.is_none() {
            *down = Some(Instant::now());
            tracing::warn!(
                %error,
                retry_max_s = RETRY_MAX.as_secs(),
                "lost the API server; watches retry with back-off, rules stay in place"
            );
        }
    }

    /// The server answered.
    pub(crate) fn answered(&self) {
        if let Some(since) = self.down_since().take() {
            tracing::info!(
                outage_s = format!("{:.1}", since.elapsed().as_secs_f64()),
                "the API server answers again"
            );
        }
    }

    /// Whether an outage is in progress.
    #[cfg(test)]
    pub(crate) fn is_down(&self) -> bool {
        self.down_since().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(8).collect();
        let bases = [1, 2, 4, 5, 5, 5, 5, 5].map(Duration::from_secs);
        for (delay, base) in delays.iter().zip(bases) {
            assert!(
                *delay >= base / 2 && *delay <= base,
                "{delay:?} not in [{:?}, {base:?}]",
                base / 2
            );
        }
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "jitter varies the delays: {delays:?}"
        );
        backoff.reset();
        let first = backoff.next().unwrap_or_default();
        assert!(first >= RETRY_MIN / 2 && first <= RETRY_MIN, "{first:?}");
    }

    #[test]
    fn detection_matches_client_go() {
        // client-go: 30 s read idle + 15 s ping timeout.
        assert_eq!(KEEPALIVE_IDLE, Duration::from_secs(30));
        assert_eq!(DEAD_AFTER, KEEPALIVE_IDLE + Duration::from_secs(15));
        assert!(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES >= DEAD_AFTER);
    }

    #[test]
    fn an_outage_starts_once_and_ends_on_an_answer() {
        let reach = Reachability::default();
        assert!(!reach.is_down());
        reach.answered();
        assert!(!reach.is_down());
        reach.failed(&"connection timed out");
        reach.failed(&"connection refused");
        assert!(reach.is_down());
        reach.answered();
        assert!(!reach.is_down());
    }

    #[test]
    fn unreachable_errors_are_told_apart() {
        let status = |code: u16| {
            Box::new(kube::core::Status {
                code,
                ..Default::default()
            })
        };
        let io = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(is_unreachable(&watcher::Error::WatchFailed(
            kube::Error::ReadEvents(io())
        )));
        assert!(is_unreachable(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(503))
        )));
        assert!(is_unreachable(&watcher::Error::WatchStartFailed(
            kube::Error::Service(Box::new(io()))
        )));
        assert!(!is_unreachable(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(403))
        )));
        assert!(!is_unreachable(&watcher::Error::WatchError(status(410))));
        assert!(!is_unreachable(&watcher::Error::NoResourceVersion));
    }
}
