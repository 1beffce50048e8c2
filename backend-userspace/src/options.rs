//! Settings of the userspace backend.

use std::time::Duration;

use proxy_core::backend::BackendContext;

use crate::forward::Forwarding;
use crate::redirect::RedirectMode;

/// Settings of a [`UserspaceBackend`](crate::UserspaceBackend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// How long a UDP session without traffic in either direction is kept
    /// (`userspace.udpIdleTimeout`).
    pub udp_idle_timeout: Duration,
    /// The most UDP sessions one UDP listener keeps; a new client beyond
    /// it closes the least recently active ones (`userspace.maxUDPSessions`).
    pub max_udp_sessions: usize,
    /// How TCP payload is moved.
    pub forwarding: Forwarding,
    /// Whether nftables redirect rules capture ClusterIP, external IP and
    /// load-balancer IP traffic ([`RedirectMode::Auto`]: when the process
    /// can program nftables).
    pub redirect: RedirectMode,
}

impl Options {
    /// Upstream's old userspace proxier default for `udpIdleTimeout`.
    pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_millis(250);

    /// The default `userspace.maxUDPSessions`: at the default 250 ms idle
    /// timeout, room for 16,000 new client ports a second on one listener
    /// (DNS clients use a new port per query), while a flood of distinct
    /// source ports holds at most 4096 sockets and tasks per listener.
    pub const DEFAULT_MAX_UDP_SESSIONS: usize = 4096;

    /// The settings `ctx.config` asks for; an unset (zero) or negative
    /// `userspace.udpIdleTimeout` means the 250 ms default, an unset or
    /// non-positive `userspace.maxUDPSessions` the 4096 default.
    pub fn from_context(ctx: &BackendContext) -> Self {
        let configured = ctx.config.userspace.udp_idle_timeout;
        let udp_idle_timeout = if configured.is_zero() || configured.is_negative() {
            Self::DEFAULT_UDP_IDLE_TIMEOUT
        } else {
            configured.to_std()
        };
        // `userspace.redirectServiceIPs: false` keeps the kernel's rules untouched.
        let redirect = if ctx.config.userspace.redirect_service_ips == Some(false) {
            RedirectMode::Off
        } else {
            RedirectMode::Auto
        };
        let max_udp_sessions = ctx
            .config
            .userspace
            .max_udp_sessions
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(Self::DEFAULT_MAX_UDP_SESSIONS);
        Options {
            udp_idle_timeout,
            max_udp_sessions,
            forwarding: Forwarding::best(),
            redirect,
        }
    }

    /// With `forwarding` instead.
    pub fn with_forwarding(mut self, forwarding: Forwarding) -> Self {
        self.forwarding = forwarding;
        self
    }

    /// With redirect rules `mode` (tests force [`RedirectMode::On`] or
    /// [`RedirectMode::Off`]).
    pub fn with_redirect(mut self, mode: RedirectMode) -> Self {
        self.redirect = mode;
        self
    }

    /// With at most `max` UDP sessions per listener (at least 1).
    pub fn with_max_udp_sessions(mut self, max: usize) -> Self {
        self.max_udp_sessions = max.max(1);
        self
    }

    /// With `timeout` as the UDP idle timeout.
    pub fn with_udp_idle_timeout(mut self, timeout: Duration) -> Self {
        self.udp_idle_timeout = timeout;
        self
    }
}

/// The library default touches no kernel rules ([`RedirectMode::Off`]);
/// [`Options::from_context`], which the daemon uses, follows the
/// configuration (redirect when privileged, unless
/// `userspace.redirectServiceIPs: false`).
impl Default for Options {
    fn default() -> Self {
        Options {
            udp_idle_timeout: Self::DEFAULT_UDP_IDLE_TIMEOUT,
            max_udp_sessions: Self::DEFAULT_MAX_UDP_SESSIONS,
            forwarding: Forwarding::best(),
            redirect: RedirectMode::Off,
        }
    }
}
