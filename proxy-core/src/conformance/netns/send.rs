//! Sending a [`Packet`] through a [`NodeTopology`] as real connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::backend::BackendError;
use crate::conformance::{Origin, Outcome, Packet};
use crate::model::Protocol;

use super::echo::Transport;
use super::outcome::{AttemptPlan, outcome};
use super::probe::{Attempt, Probe};
use super::topology::{ClientPlace, NodeTopology};

/// How packets are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// Connections (TCP) or exchanges (UDP) made when the first one is
    /// answered, to see every endpoint that may answer. With `n` attempts
    /// and `k` equally likely endpoints, one is missed with probability at
    /// most `k·(1−1/k)^n`: for 64, about 1e-11 (k = 3), 4e-8 (k = 4),
    /// 3e-6 (k = 5).
    pub forwarded_attempts: usize,
    /// Attempts when the first one is refused (checks that every one is).
    pub refused_attempts: usize,
    /// How long one attempt waits for a connection and its reply; no
    /// answer in this time is [`Outcome::Dropped`]. Keep it above 1 s: an
    /// ICMP error that comes back while `connect` still holds the socket
    /// lock (the whole namespace round trip runs in the sender's softirq)
    /// is only a soft error, and the hard one arrives with the SYN
    /// retransmission after 1 s (seen for IPv6 unreachables).
    pub timeout: Duration,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            forwarded_attempts: 64,
            refused_attempts: 3,
            timeout: Duration::from_millis(1500),
        }
    }
}

/// How long the kernel's per-source budget of ICMP unreachables from
/// routes (`net.ipv4.route.error_cost` = 1 s, burst 5; global, cannot be
/// changed from a namespace) may still be exhausted after one was seen.
const ROUTE_ERROR_MEMORY: Duration = Duration::from_secs(6);
/// Time for that budget to regain a token.
const ROUTE_ERROR_REFILL: Duration = Duration::from_millis(1100);

impl NodeTopology {
    /// Sends `packet` as real connections from the client its origin
    /// implies (see [`KernelHarness`](super::KernelHarness) for how
    /// attempts become an [`Outcome`]). Blocks for up to one timeout.
    pub fn send(&mut self, packet: &Packet, options: SendOptions) -> Result<Outcome, BackendError> {
        PacketSender::new(options).send(self, packet)
    }
}

/// Sends packets, remembering which sources recently got an unreachable.
#[derive(Debug, Default)]
pub(crate) struct PacketSender {
    pub(crate) options: SendOptions,
    recent_unreachable: HashMap<IpAddr, Instant>,
}

impl PacketSender {
    /// A sender with `options`.
    pub(crate) fn new(options: SendOptions) -> Self {
        PacketSender {
            options,
            recent_unreachable: HashMap::new(),
        }
    }

    /// Sends `packet` from the client its origin implies and tells what
    /// happened to it. Blocks for up to one timeout (twice when an IPv4
    /// unreachable may have been rate-limited).
    pub(crate) fn send(
        &mut self,
        topology: &mut NodeTopology,
        packet: &Packet,
    ) -> Result<Outcome, BackendError> {
        let transport = match packet.protocol {
            Protocol::Tcp => Transport::Tcp,
            Protocol::Udp => Transport::Udp,
            Protocol::Sctp if topology.has_sctp() => Transport::Sctp,
            Protocol::Sctp => return Err(BackendError::unsupported(super::sctp::NO_SCTP_REASON)),
        };
        let place = match packet.origin {
            Origin::Host => ClientPlace::Node,
            Origin::LocalPod => ClientPlace::Pod(packet.source),
            Origin::External => ClientPlace::Lan,
        };
        let destination = SocketAddr::new(packet.destination, packet.port);
        topology.prepare_send(place, packet.source, packet.protocol, destination)?;
        let ns = topology.place(place).ok_or_else(|| {
            BackendError::dataplane(format!("{packet}: no namespace for the client"))
        })?;
        let probe = Probe {
            transport,
            source: packet.source,
            destination,
            timeout: self.options.timeout,
        };
        let plan = AttemptPlan {
            forwarded: self.options.forwarded_attempts.max(1),
            refused: self.options.refused_attempts.max(1),
        };
        // Taken out for the runs (`ns` borrows the topology), put back after.
        let mut ports = topology.source_ports;
        let mut run = || {
            probe
                .run(ns, &mut ports, |a| plan.keep_going(a))
                .map_err(|e| {
                    BackendError::dataplane(format!("{packet}: cannot probe")).with_source(e)
                })
        };
        let mut attempts = run();
        if matches!(attempts.as_deref(), Ok([Attempt::TimedOut]))
            && self.maybe_rate_limited(packet.source)
        {
            // The timeout may be a rate-limited ICMP unreachable: wait for
            // the budget to refill and ask once more.
            std::thread::sleep(ROUTE_ERROR_REFILL);
            attempts = run();
        }
        topology.source_ports = ports;
        let attempts = attempts?;
        if attempts.contains(&Attempt::Unreachable) {
            self.recent_unreachable
                .insert(packet.source, Instant::now());
        }
        let result = outcome(packet, &attempts);
        tracing::debug!(%packet, attempts = attempts.len(), ?result, "sent");
        result
    }

    fn maybe_rate_limited(&self, source: IpAddr) -> bool {
        source.is_ipv4()
            && self
                .recent_unreachable
                .get(&source)
                .is_some_and(|at| at.elapsed() < ROUTE_ERROR_MEMORY)
    }
}
