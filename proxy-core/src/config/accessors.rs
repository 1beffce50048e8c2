//! Typed views of the configuration for the rest of the code: the active
//! mode and the settings of its section.

use std::net::SocketAddr;

use super::defaults::DEFAULT_MASQUERADE_BIT;
use super::duration::Duration;
use super::mode::ProxyMode;
use super::net::{parse_ip, split_host_port};
use super::types::KubeProxyConfiguration;
use crate::error::Error;

/// The IPVS scheduler used when `ipvs.scheduler` is empty.
pub const DEFAULT_IPVS_SCHEDULER: &str = "rr";

/// A masquerade bit as a `u8`, if it is in [0, 31].
fn bit(value: Option<i32>) -> Option<u8> {
    value
        .and_then(|b| u8::try_from(b).ok())
        .filter(|b| *b <= 31)
}

/// `ip:port` of a bind-address field, `None` when empty.
fn socket_addr(field: &str, value: &str) -> Result<Option<SocketAddr>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    let (host, port) =
        split_host_port(value).map_err(|e| Error::config(field, format!("\"{value}\": {e}")))?;
    let ip = parse_ip(host)
        .ok_or_else(|| Error::config(field, format!("\"{host}\" must be a valid IP")))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Error::config(field, format!("\"{port}\" must be a valid port")))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

impl KubeProxyConfiguration {
    /// The effective proxy mode: `mode`, or iptables when it is empty
    /// (upstream's Linux default).
    pub fn effective_mode(&self) -> ProxyMode {
        self.mode.unwrap_or(ProxyMode::Iptables)
    }

    /// The `(syncPeriod, minSyncPeriod)` of the active mode's section:
    /// iptables (also for kernelspace), ipvs, nftables or userspace.
    pub(super) fn periods(&self) -> (Duration, Duration) {
        match self.effective_mode() {
            ProxyMode::Iptables | ProxyMode::Kernelspace => {
                (self.iptables.sync_period, self.iptables.min_sync_period)
            }
            ProxyMode::Ipvs => (self.ipvs.sync_period, self.ipvs.min_sync_period),
            ProxyMode::Nftables => (self.nftables.sync_period, self.nftables.min_sync_period),
            ProxyMode::Userspace => (self.userspace.sync_period, self.userspace.min_sync_period),
        }
    }

    /// The name of the active mode's section (`iptables`, `ipvs`,
    /// `nftables`, `userspace`), the prefix of its field paths.
    pub(super) fn active_section(&self) -> &'static str {
        match self.effective_mode() {
            ProxyMode::Iptables | ProxyMode::Kernelspace => "iptables",
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Nftables => "nftables",
            ProxyMode::Userspace => "userspace",
        }
    }

    /// `syncPeriod` of the active mode's section (negative values read as 0).
    pub fn sync_period(&self) -> std::time::Duration {
        self.periods().0.to_std()
    }

    /// `minSyncPeriod` of the active mode's section (negative values read as 0).
    pub fn min_sync_period(&self) -> std::time::Duration {
        self.periods().1.to_std()
    }

    /// How long a queued update may stay pending before `/healthz` reports
    /// unhealthy: 2 × [`sync_period`](Self::sync_period), as upstream.
    pub fn health_timeout(&self) -> std::time::Duration {
        self.sync_period().saturating_mul(2)
    }

    /// The masquerade bit of the active mode: `nftables.masqueradeBit` in
    /// nftables mode, `iptables.masqueradeBit` otherwise (ipvs and userspace
    /// use the iptables section, as upstream). An unset or out-of-range value
    /// (which [`validate`](Self::validate) rejects) reads as the default, 14.
    pub fn masquerade_bit(&self) -> u8 {
        let configured = match self.effective_mode() {
            ProxyMode::Nftables => self.nftables.masquerade_bit,
            _ => self.iptables.masquerade_bit,
        };
        bit(configured).unwrap_or(DEFAULT_MASQUERADE_BIT)
    }

    /// The masquerade mark, `1 << masquerade_bit()` (`0x4000` by default).
    pub fn masquerade_mark(&self) -> u32 {
        1 << self.masquerade_bit()
    }

    /// `masqueradeAll` of the active mode: the nftables section in nftables
    /// mode, the iptables section otherwise (as upstream's conversion does).
    pub fn masquerade_all(&self) -> bool {
        match self.effective_mode() {
            ProxyMode::Nftables => self.nftables.masquerade_all,
            _ => self.iptables.masquerade_all,
        }
    }

    /// `iptables.localhostNodePorts` (default true). Only iptables mode, and
    /// only IPv4, serves NodePorts on localhost.
    pub fn localhost_node_ports(&self) -> bool {
        self.iptables.localhost_node_ports.unwrap_or(true)
    }

    /// The IPVS scheduler: `ipvs.scheduler`, or `rr` when empty.
    pub fn effective_scheduler(&self) -> &str {
        if self.ipvs.scheduler.is_empty() {
            DEFAULT_IPVS_SCHEDULER
        } else {
            &self.ipvs.scheduler
        }
    }

    /// The health server's address, `None` when `healthzBindAddress` is empty.
    pub fn healthz_socket_addr(&self) -> Result<Option<SocketAddr>, Error> {
        socket_addr("healthzBindAddress", &self.healthz_bind_address)
    }

    /// The metrics server's address, `None` when `metricsBindAddress` is empty.
    pub fn metrics_socket_addr(&self) -> Result<Option<SocketAddr>, Error> {
        socket_addr("metricsBindAddress", &self.metrics_bind_address)
    }
}
