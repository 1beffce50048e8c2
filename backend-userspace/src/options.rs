//! Settings of the userspace backend.

use std::time::Duration;

use proxy_core::backend::BackendContext;

use crate::forward::Forwarding;

/// Settings of a [`UserspaceBackend`](crate::UserspaceBackend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// How long a UDP session without traffic in either direction is kept
    /// (`userspace.udpIdleTimeout`).
    pub udp_idle_timeout: Duration,
    /// How TCP payload is moved.
    pub forwarding: Forwarding,
}

impl Options {
    /// Upstream's old userspace proxier default for `udpIdleTimeout`.
    pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_millis(250);

    /// The settings `ctx.config` asks for; an unset (zero) or negative
    /// `userspace.udpIdleTimeout` means the 250 ms default.
    pub fn from_context(ctx: &BackendContext) -> Self {
        let configured = ctx.config.userspace.udp_idle_timeout;
        let udp_idle_timeout = if configured.is_zero() || configured.is_negative() {
            Self::DEFAULT_UDP_IDLE_TIMEOUT
        } else {
            configured.to_std()
        };
        Options {
            udp_idle_timeout,
            forwarding: Forwarding::best(),
        }
    }

    /// With `forwarding` instead.
    pub fn with_forwarding(mut self, forwarding: Forwarding) -> Self {
        self.forwarding = forwarding;
        self
    }

    /// With `timeout` as the UDP idle timeout.
    pub fn with_udp_idle_timeout(mut self, timeout: Duration) -> Self {
        self.udp_idle_timeout = timeout;
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            udp_idle_timeout: Self::DEFAULT_UDP_IDLE_TIMEOUT,
            forwarding: Forwarding::best(),
        }
    }
}
