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

    /// The settings `ctx.config` asks for; an unset (zero) or negative
    /// `userspace.udpIdleTimeout` means the 250 ms default.
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
        Options {
            udp_idle_timeout,
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
            forwarding: Forwarding::best(),
            redirect: RedirectMode::Off,
        }
    }
}
