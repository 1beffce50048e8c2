//! Upstream's defaults: `SetDefaults_KubeProxyConfiguration` (applied to
//! every loaded document, as upstream's decoder does) and
//! `platformApplyDefaults` on Linux (applied by [`apply_defaults`]).
//!
//! [`apply_defaults`]: KubeProxyConfiguration::apply_defaults

use super::duration::Duration;
use super::mode::{LocalMode, ProxyMode};
use super::net::{is_ipv4_like, parse_ip, split_host_port};
use super::node_port_addresses::NodePortAddresses;
use super::types::{API_VERSION, KIND, KubeProxyConfiguration};

/// The health server's default port (`ports.ProxyHealthzPort`).
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;
/// The metrics server's default port (`ports.ProxyStatusPort`).
pub const DEFAULT_METRICS_PORT: u16 = 10249;
/// The default fwmark bit for masquerading (mark `0x4000`).
pub const DEFAULT_MASQUERADE_BIT: u8 = 14;
/// kube-proxy's default OOM score adjustment (`qos.KubeProxyOOMScoreAdj`).
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -999;

/// Upstream's `AppendPortIfNeeded`: a bare IP gets `port`; anything else
/// (already `host:port`, or invalid, left for validation) is kept.
fn append_port_if_needed(addr: &str, port: u16) -> String {
    if split_host_port(addr).is_ok() {
        return addr.to_owned();
    }
    match parse_ip(addr) {
        Some(ip) if ip.is_ipv4() => format!("{addr}:{port}"),
        Some(_) => format!("[{addr}]:{port}"),
        None => addr.to_owned(),
    }
}

/// Sets `d` to `default` if it is zero.
fn or_default(d: &mut Duration, default: Duration) {
    if d.is_zero() {
        *d = default;
    }
}

impl Default for KubeProxyConfiguration {
    /// Upstream's defaulted configuration: what `kube-proxy --write-config-to`
    /// writes (golden `after/v1alpha1.yaml`), plus our `userspace` defaults.
    /// `mode` and `detectLocalMode` stay empty, as upstream writes them.
    fn default() -> Self {
        let mut config = KubeProxyConfiguration::zero();
        config.set_defaults();
        config
    }
}

impl KubeProxyConfiguration {
    /// Upstream's `SetDefaults_KubeProxyConfiguration` (v1alpha1, plus the
    /// nftables defaults and component-base's recommended logging
    /// configuration): every zero or unset field gets its default. As
    /// upstream, an explicit zero duration (`minSyncPeriod: 0s` in the
    /// iptables section) is indistinguishable from unset and is defaulted.
    pub(super) fn set_defaults(&mut self) {
        if self.api_version.is_empty() {
            self.api_version = API_VERSION.to_owned();
        }
        if self.kind.is_empty() {
            self.kind = KIND.to_owned();
        }
        if self.bind_address.is_empty() {
            self.bind_address = "0.0.0.0".to_owned();
        }
        // Upstream: `ParseIPSloppy(bindAddress).To4() != nil` picks IPv4;
        // anything else, even an invalid address, picks IPv6.
        let ipv4 = parse_ip(&self.bind_address).is_some_and(|ip| is_ipv4_like(&ip));
        let (healthz_ip, metrics_ip) = if ipv4 {
            ("0.0.0.0", "127.0.0.1")
        } else {
            ("[::]", "[::1]")
        };
        self.healthz_bind_address = if self.healthz_bind_address.is_empty() {
            format!("{healthz_ip}:{DEFAULT_HEALTHZ_PORT}")
        } else {
            append_port_if_needed(&self.healthz_bind_address, DEFAULT_HEALTHZ_PORT)
        };
        self.metrics_bind_address = if self.metrics_bind_address.is_empty() {
            format!("{metrics_ip}:{DEFAULT_METRICS_PORT}")
        } else {
            append_port_if_needed(&self.metrics_bind_address, DEFAULT_METRICS_PORT)
        };
        self.oom_score_adj.get_or_insert(DEFAULT_OOM_SCORE_ADJ);

        let iptables = &mut self.iptables;
        or_default(&mut iptables.sync_period, Duration::from_secs(30));
        or_default(&mut iptables.min_sync_period, Duration::from_secs(1));
        iptables
            .masquerade_bit
            .get_or_insert(i32::from(DEFAULT_MASQUERADE_BIT));
        iptables.localhost_node_ports.get_or_insert(true);

        or_default(&mut self.ipvs.sync_period, Duration::from_secs(30));

        let nftables = &mut self.nftables;
        or_default(&mut nftables.sync_period, Duration::from_secs(30));
        or_default(&mut nftables.min_sync_period, Duration::from_secs(1));
        nftables
            .masquerade_bit
            .get_or_insert(i32::from(DEFAULT_MASQUERADE_BIT));

        let userspace = &mut self.userspace;
        or_default(&mut userspace.sync_period, Duration::from_secs(30));
        or_default(&mut userspace.min_sync_period, Duration::from_secs(1));
        or_default(&mut userspace.udp_idle_timeout, Duration::from_millis(250));
        userspace.redirect_service_ips.get_or_insert(true);
        userspace.max_udp_sessions.get_or_insert(4096);

        let conntrack = &mut self.conntrack;
        conntrack.max_per_core.get_or_insert(32 * 1024);
        conntrack.min.get_or_insert(128 * 1024);
        conntrack
            .tcp_established_timeout
            .get_or_insert(Duration::from_hours(24));
        conntrack
            .tcp_close_wait_timeout
            .get_or_insert(Duration::from_hours(1));

        or_default(&mut self.config_sync_period, Duration::from_mins(15));

        let client = &mut self.client_connection;
        if client.content_type.is_empty() {
            client.content_type = "application/vnd.kubernetes.protobuf".to_owned();
        }
        if client.qps == 0.0 {
            client.qps = 5.0;
        }
        if client.burst == 0 {
            client.burst = 10;
        }

        let logging = &mut self.logging;
        if logging.format.is_empty() {
            logging.format = "text".to_owned();
        }
        or_default(&mut logging.flush_frequency, Duration::from_secs(5));
        for routing in [&mut logging.options.json, &mut logging.options.text] {
            if routing.info_buffer_size.is_empty() {
                routing.info_buffer_size = "0".to_owned();
            }
        }
    }

    /// Upstream's `platformApplyDefaults` on Linux, which kube-proxy runs
    /// after merging flags into the configuration: an empty `mode` becomes
    /// `iptables`; in nftables mode an empty `nodePortAddresses` becomes
    /// `["primary"]`; an empty `detectLocalMode` becomes `ClusterCIDR`.
    ///
    /// The typed accessors give the same answers whether or not this has run.
    pub fn apply_defaults(&mut self) {
        let mode = *self.mode.get_or_insert(ProxyMode::Iptables);
        if mode == ProxyMode::Nftables
            && self.node_port_addresses.as_ref().is_none_or(Vec::is_empty)
        {
            self.node_port_addresses = Some(vec![NodePortAddresses::PRIMARY.to_owned()]);
        }
        self.detect_local_mode.get_or_insert(LocalMode::ClusterCidr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_port() {
        assert_eq!(append_port_if_needed("1.2.3.4", 80), "1.2.3.4:80");
        assert_eq!(append_port_if_needed("::1", 80), "[::1]:80");
        assert_eq!(append_port_if_needed("1.2.3.4:9", 80), "1.2.3.4:9");
        assert_eq!(append_port_if_needed("[::1]:9", 80), "[::1]:9");
        assert_eq!(append_port_if_needed("bogus", 80), "bogus");
    }
}
