//! `KubeProxyConfiguration`: loading, defaults, round trips, validation and
//! the typed accessors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration as StdDuration;

use ipnet::IpNet;
use proxy_core::Error;
use proxy_core::config::{
    DetectLocal, Duration, KubeProxyConfiguration, LocalMode, NodePortAddresses, ProxyMode,
    VModuleItem,
};
use proxy_core::model::IpFamily;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/config")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(testdata(name)).unwrap()
}

/// A document of the right type with `body` appended.
fn doc(body: &str) -> String {
    format!("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}")
}

fn load(body: &str) -> KubeProxyConfiguration {
    KubeProxyConfiguration::from_yaml(&doc(body)).unwrap()
}

fn parse_err(body: &str) -> String {
    match KubeProxyConfiguration::from_yaml(&doc(body)) {
        Err(Error::Parse { reason, .. }) => reason,
        other => panic!("expected a parse error for {body:?}, got {other:?}"),
    }
}

fn config_field(err: &Error) -> &str {
    match err {
        Error::Config { field, .. } => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn yaml_value(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap()
}

/// The top-level and nested keys of a YAML text, in order, with their indentation.
fn keys(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('-'))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// Upstream's default configuration, defaults, round trips
// ---------------------------------------------------------------------------

#[test]
fn upstream_default_config_loads_as_our_defaults() {
    let golden = KubeProxyConfiguration::load(testdata("upstream-v1alpha1-default.yaml")).unwrap();
    assert_eq!(golden, KubeProxyConfiguration::default());
    golden.validate().unwrap();
}

#[test]
fn defaults_equal_upstream() {
    let c = KubeProxyConfiguration::default();
    assert_eq!(c.api_version, "kubeproxy.config.k8s.io/v1alpha1");
    assert_eq!(c.kind, "KubeProxyConfiguration");
    assert!(c.feature_gates.is_empty());
    assert_eq!(c.client_connection.kubeconfig, "");
    assert_eq!(c.client_connection.accept_content_types, "");
    assert_eq!(
        c.client_connection.content_type,
        "application/vnd.kubernetes.protobuf"
    );
    assert_eq!(c.client_connection.qps, 5.0);
    assert_eq!(c.client_connection.burst, 10);
    assert_eq!(c.logging.format, "text");
    assert_eq!(c.logging.flush_frequency, Duration::from_secs(5));
    assert_eq!(c.logging.verbosity, 0);
    assert_eq!(c.logging.options.text.info_buffer_size, "0");
    assert_eq!(c.logging.options.json.info_buffer_size, "0");
    assert_eq!(c.hostname_override, "");
    assert_eq!(c.bind_address, "0.0.0.0");
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
    assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
    assert!(!c.bind_address_hard_fail && !c.enable_profiling);
    assert_eq!(c.show_hidden_metrics_for_version, "");
    assert_eq!(c.mode, None);
    assert_eq!(c.iptables.masquerade_bit, Some(14));
    assert!(!c.iptables.masquerade_all);
    assert_eq!(c.iptables.localhost_node_ports, Some(true));
    assert_eq!(c.iptables.sync_period.to_string(), "30s");
    assert_eq!(c.iptables.min_sync_period.to_string(), "1s");
    assert_eq!(c.ipvs.sync_period.to_string(), "30s");
    assert_eq!(c.ipvs.min_sync_period.to_string(), "0s");
    assert_eq!(c.ipvs.scheduler, "");
    assert_eq!(c.ipvs.exclude_cidrs, None);
    assert!(!c.ipvs.strict_arp);
    assert!(
        c.ipvs.tcp_timeout.is_zero()
            && c.ipvs.tcp_fin_timeout.is_zero()
            && c.ipvs.udp_timeout.is_zero()
    );
    assert_eq!(c.nftables.masquerade_bit, Some(14));
    assert!(!c.nftables.masquerade_all);
    assert_eq!(c.nftables.sync_period.to_string(), "30s");
    assert_eq!(c.nftables.min_sync_period.to_string(), "1s");
    assert_eq!(c.userspace.sync_period.to_string(), "30s");
    assert_eq!(c.userspace.min_sync_period.to_string(), "1s");
    assert_eq!(c.userspace.udp_idle_timeout.to_string(), "250ms");
    assert_eq!(c.detect_local_mode, None);
    assert_eq!(c.detect_local.bridge_interface, "");
    assert_eq!(c.detect_local.interface_name_prefix, "");
    assert_eq!(c.cluster_cidr, "");
    assert_eq!(c.node_port_addresses, None);
    assert_eq!(c.oom_score_adj, Some(-999));
    assert_eq!(c.conntrack.max_per_core, Some(32768));
    assert_eq!(c.conntrack.min, Some(131072));
    assert_eq!(
        c.conntrack
            .tcp_established_timeout
            .map(|d| d.to_string())
            .as_deref(),
        Some("24h0m0s")
    );
    assert_eq!(
        c.conntrack
            .tcp_close_wait_timeout
            .map(|d| d.to_string())
            .as_deref(),
        Some("1h0m0s")
    );
    assert!(!c.conntrack.tcp_be_liberal);
    assert!(c.conntrack.udp_timeout.is_zero() && c.conntrack.udp_stream_timeout.is_zero());
    assert_eq!(c.config_sync_period.to_string(), "15m0s");
    assert_eq!(c.port_range, "");
    assert!(!c.windows_run_as_service);
    assert_eq!(c.winkernel.network_name, "");
}

#[test]
fn default_to_yaml_is_upstreams_write_config_to_plus_userspace() {
    let ours = KubeProxyConfiguration::default().to_yaml().unwrap();
    let golden = read("upstream-v1alpha1-default.yaml");

    // Same document, apart from our userspace section ...
    let mut ours_value = yaml_value(&ours);
    let userspace = ours_value
        .as_object_mut()
        .unwrap()
        .remove("userspace")
        .unwrap();
    assert_eq!(ours_value, yaml_value(&golden));
    assert_eq!(
        userspace,
        serde_json::json!({"maxUDPSessions": 4096, "minSyncPeriod": "1s", "redirectServiceIPs": true, "syncPeriod": "30s", "udpIdleTimeout": "250ms"})
    );

    // ... with the keys in upstream's order.
    let ours_keys: Vec<String> = keys(&ours)
        .into_iter()
        .filter(|k| k.trim() != "userspace")
        .collect();
    let ours_keys: Vec<String> = ours_keys
        .into_iter()
        .filter(|k| {
            !matches!(
                k.trim(),
                "minSyncPeriod"
                    | "syncPeriod"
                    | "udpIdleTimeout"
                    | "redirectServiceIPs"
                    | "maxUDPSessions"
            ) || !k.starts_with("  ")
        })
        .collect();
    let golden_keys: Vec<String> = keys(&golden)
        .into_iter()
        .filter(|k| {
            !matches!(
                k.trim(),
                "minSyncPeriod"
                    | "syncPeriod"
                    | "udpIdleTimeout"
                    | "redirectServiceIPs"
                    | "maxUDPSessions"
            ) || !k.starts_with("  ")
        })
        .collect();
    assert_eq!(ours_keys, golden_keys);
    // Durations are written as Go writes them.
    for line in [
        "configSyncPeriod: 15m0s",
        "tcpEstablishedTimeout: 24h0m0s",
        "qps: 5",
        "udpIdleTimeout: 250ms",
    ] {
        assert!(ours.contains(line), "{line} missing from\n{ours}");
    }
}

#[test]
fn to_yaml_from_yaml_round_trips() {
    let mut applied = KubeProxyConfiguration::default();
    applied.apply_defaults();
    for config in [
        KubeProxyConfiguration::default(),
        applied,
        KubeProxyConfiguration::load(testdata("full.yaml")).unwrap(),
        KubeProxyConfiguration::load(testdata("minimal.json")).unwrap(),
    ] {
        let yaml = config.to_yaml().unwrap();
        let back = KubeProxyConfiguration::from_yaml(&yaml).unwrap();
        assert_eq!(back, config, "{yaml}");
        assert_eq!(back.to_yaml().unwrap(), yaml);
    }
}

#[test]
fn every_field_loads() {
    let c = KubeProxyConfiguration::load(testdata("full.yaml")).unwrap();
    c.validate().unwrap();
    assert_eq!(c.feature_gates.get("SomeAlphaFeature"), Some(&true));
    assert_eq!(c.feature_gates.get("SomeBetaFeature"), Some(&false));
    assert_eq!(
        c.client_connection.kubeconfig,
        "/var/lib/kube-proxy/kubeconfig.conf"
    );
    assert_eq!(c.client_connection.accept_content_types, "application/json");
    assert_eq!(c.client_connection.content_type, "application/json");
    assert_eq!(c.client_connection.qps, 7.5);
    assert_eq!(c.client_connection.burst, 20);
    assert_eq!(c.logging.flush_frequency, Duration::from_secs(10));
    assert_eq!(c.logging.verbosity, 4);
    assert_eq!(
        c.logging.vmodule,
        vec![VModuleItem {
            file_pattern: "proxier*".into(),
            verbosity: 6
        }]
    );
    assert_eq!(c.logging.options.text.info_buffer_size, "64Ki");
    assert!(c.logging.options.text.split_stream);
    assert_eq!(c.hostname_override, "node-a");
    assert_eq!(c.bind_address, "192.168.0.2");
    assert_eq!(c.healthz_bind_address, "192.168.0.2:10266");
    assert_eq!(c.metrics_bind_address, "0.0.0.0:10259");
    assert!(c.bind_address_hard_fail && c.enable_profiling);
    assert_eq!(c.show_hidden_metrics_for_version, "1.36");
    assert_eq!(c.mode, Some(ProxyMode::Ipvs));
    assert_eq!(c.iptables.masquerade_bit, Some(13));
    assert!(c.iptables.masquerade_all);
    assert_eq!(c.iptables.localhost_node_ports, Some(false));
    assert_eq!(c.iptables.sync_period, Duration::from_mins(1));
    assert_eq!(c.iptables.min_sync_period, Duration::from_secs(2));
    assert_eq!(c.ipvs.sync_period, Duration::from_secs(45));
    assert_eq!(c.ipvs.min_sync_period, Duration::from_secs(5));
    assert_eq!(c.ipvs.scheduler, "wlc");
    assert_eq!(
        c.ipvs.exclude_cidrs,
        Some(vec!["10.1.0.0/16".into(), "fd00:1::/64".into()])
    );
    assert!(c.ipvs.strict_arp);
    assert_eq!(c.ipvs.tcp_timeout, Duration::from_mins(15));
    assert_eq!(c.ipvs.tcp_fin_timeout, Duration::from_mins(2));
    assert_eq!(c.ipvs.udp_timeout, Duration::from_mins(5));
    assert_eq!(c.nftables.masquerade_bit, Some(12));
    assert!(c.nftables.masquerade_all);
    assert_eq!(c.nftables.sync_period, Duration::from_secs(40));
    assert_eq!(c.nftables.min_sync_period, Duration::from_secs(3));
    assert_eq!(c.userspace.sync_period, Duration::from_secs(20));
    assert_eq!(c.userspace.min_sync_period, Duration::from_millis(500));
    assert_eq!(c.userspace.udp_idle_timeout, Duration::from_secs(1));
    assert_eq!(c.userspace.max_udp_sessions, Some(100));
    assert_eq!(c.winkernel.network_name, "l2bridge");
    assert_eq!(c.winkernel.source_vip, "10.0.0.100");
    assert!(c.winkernel.enable_dsr && c.winkernel.forward_health_check_vip);
    assert_eq!(c.winkernel.root_hns_endpoint_name, "cbr0");
    assert_eq!(c.detect_local_mode, Some(LocalMode::BridgeInterface));
    assert_eq!(c.detect_local.bridge_interface, "cbr0");
    assert_eq!(c.detect_local.interface_name_prefix, "veth");
    assert_eq!(c.cluster_cidr, "10.244.0.0/16,fd00:10:244::/56");
    assert_eq!(
        c.node_port_addresses,
        Some(vec!["192.168.0.0/24".into(), "fd00::/64".into()])
    );
    assert_eq!(c.oom_score_adj, Some(-500));
    assert_eq!(c.conntrack.max_per_core, Some(0));
    assert_eq!(c.conntrack.min, Some(65536));
    assert_eq!(
        c.conntrack.tcp_established_timeout,
        Some(Duration::from_hours(12))
    );
    assert_eq!(
        c.conntrack.tcp_close_wait_timeout,
        Some(Duration::from_mins(30))
    );
    assert!(c.conntrack.tcp_be_liberal);
    assert_eq!(c.conntrack.udp_timeout, Duration::from_secs(30));
    assert_eq!(c.conntrack.udp_stream_timeout, Duration::from_mins(2));
    assert_eq!(c.config_sync_period, Duration::from_mins(10));
    assert_eq!(c.port_range, "30000-32767");
    assert!(c.windows_run_as_service);
    assert!(c.to_yaml().unwrap().contains("windowsRunAsService: true"));
}

#[test]
fn json_loads() {
    let c = KubeProxyConfiguration::load(testdata("minimal.json")).unwrap();
    assert_eq!(c.mode, Some(ProxyMode::Nftables));
    assert!(c.nftables.masquerade_all && c.masquerade_all());
    // `null` for a pointer field means unset: defaulted.
    assert_eq!(c.conntrack.max_per_core, Some(32768));
    c.validate().unwrap();
}

#[test]
fn blank_documents_give_the_defaults() {
    for text in [
        "",
        "\n",
        "   \n\n",
        "# only a comment\n",
        "---\n",
        "---\n# c\n...\n",
    ] {
        assert_eq!(
            KubeProxyConfiguration::from_yaml(text).unwrap(),
            KubeProxyConfiguration::default(),
            "{text:?}"
        );
    }
}

#[test]
fn fields_left_out_get_defaults() {
    let c = load("mode: nftables\niptables:\n  masqueradeAll: true\nconntrack:\n  min: 5\n");
    assert_eq!(c.iptables.masquerade_bit, Some(14));
    assert_eq!(c.iptables.sync_period, Duration::from_secs(30));
    assert_eq!(c.conntrack.min, Some(5));
    assert_eq!(c.conntrack.max_per_core, Some(32768));
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
    let mut expected = KubeProxyConfiguration {
        mode: Some(ProxyMode::Nftables),
        ..Default::default()
    };
    expected.iptables.masquerade_all = true;
    expected.conntrack.min = Some(5);
    assert_eq!(c, expected);
}

#[test]
fn zero_values_are_defaulted_like_upstream() {
    // Upstream cannot tell `0s` from unset for non-pointer durations.
    let c = load(
        "iptables:\n  minSyncPeriod: 0s\n  syncPeriod: 0s\nclientConnection:\n  qps: 0\n  burst: 0\n",
    );
    assert_eq!(c.iptables.min_sync_period, Duration::from_secs(1));
    assert_eq!(c.iptables.sync_period, Duration::from_secs(30));
    assert_eq!(c.client_connection.qps, 5.0);
    assert_eq!(c.client_connection.burst, 10);
    // Pointer fields keep an explicit zero.
    let c = load(
        "conntrack:\n  maxPerCore: 0\n  tcpEstablishedTimeout: 0s\niptables:\n  masqueradeBit: 0\n",
    );
    assert_eq!(c.conntrack.max_per_core, Some(0));
    assert_eq!(c.conntrack.tcp_established_timeout, Some(Duration::ZERO));
    assert_eq!(c.masquerade_bit(), 0);
}

#[test]
fn null_sections_and_lists_are_accepted() {
    let c = load(
        "iptables: null\nfeatureGates: null\nlogging:\n  vmodule: null\n  options: null\nnodePortAddresses: null\n",
    );
    assert_eq!(c, KubeProxyConfiguration::default());
}

#[test]
fn ipv6_bind_address_picks_ipv6_server_defaults() {
    let c = load("bindAddress: \"fd00::2\"\n");
    assert_eq!(c.healthz_bind_address, "[::]:10256");
    assert_eq!(c.metrics_bind_address, "[::1]:10249");
    assert_eq!(
        c.healthz_socket_addr().unwrap(),
        Some("[::]:10256".parse().unwrap())
    );
    c.validate().unwrap();
}

#[test]
fn bare_bind_ips_get_the_default_port() {
    let c = load("healthzBindAddress: 10.0.0.1\nmetricsBindAddress: \"::\"\n");
    assert_eq!(c.healthz_bind_address, "10.0.0.1:10256");
    assert_eq!(c.metrics_bind_address, "[::]:10249");
    assert_eq!(
        c.metrics_socket_addr().unwrap(),
        Some("[::]:10249".parse().unwrap())
    );
}

#[test]
fn logging_accepts_nanosecond_flush_frequency() {
    let c = load("logging:\n  flushFrequency: 2000000000\n  format: json\n");
    assert_eq!(c.logging.flush_frequency, Duration::from_secs(2));
    assert_eq!(c.logging.format, "json");
    c.validate().unwrap();
}

// ---------------------------------------------------------------------------
// Parse errors
// ---------------------------------------------------------------------------

#[test]
fn unknown_fields_are_errors_naming_the_field() {
    assert!(parse_err("bogusField: 1\n").contains("bogusField"));
    let nested = parse_err("iptables:\n  masqueradeBits: 14\n");
    assert!(
        nested.contains("masqueradeBits") && nested.contains("line 4"),
        "{nested}"
    );
    // Upstream's old fields are unknown too, e.g. the removed `udpIdleTimeout`.
    assert!(parse_err("udpIdleTimeout: 250ms\n").contains("udpIdleTimeout"));
    assert!(
        parse_err("logging:\n  options:\n    text:\n      bufferSize: 1\n").contains("bufferSize")
    );
}

#[test]
fn bad_durations_name_the_field() {
    for (body, field) in [
        ("iptables:\n  syncPeriod: 30\n", "iptables.syncPeriod"),
        ("iptables:\n  minSyncPeriod: 1x\n", "iptables.minSyncPeriod"),
        ("ipvs:\n  tcpFinTimeout: soon\n", "ipvs.tcpFinTimeout"),
        ("nftables:\n  syncPeriod: \"\"\n", "nftables.syncPeriod"),
        (
            "userspace:\n  udpIdleTimeout: 1 s\n",
            "userspace.udpIdleTimeout",
        ),
        (
            "conntrack:\n  tcpCloseWaitTimeout: 1d\n",
            "conntrack.tcpCloseWaitTimeout",
        ),
        (
            "conntrack:\n  udpStreamTimeout: h\n",
            "conntrack.udpStreamTimeout",
        ),
        ("configSyncPeriod: 15 minutes\n", "configSyncPeriod"),
        (
            "logging:\n  flushFrequency: often\n",
            "logging.flushFrequency",
        ),
    ] {
        let reason = parse_err(body);
        assert!(reason.contains(field), "{body:?}: {reason}");
        assert!(reason.contains("line"), "{body:?}: {reason}");
    }
}

#[test]
fn bad_mode_names_the_field_and_the_valid_values() {
    let reason = parse_err("mode: ebpf\n");
    assert!(
        reason.contains("mode") && reason.contains("iptables, ipvs, nftables, userspace"),
        "{reason}"
    );
    let reason = parse_err("detectLocalMode: PodCIDR\n");
    assert!(
        reason.contains("detectLocalMode") && reason.contains("ClusterCIDR"),
        "{reason}"
    );
}

#[test]
fn syntax_and_type_errors_have_a_location() {
    let reason = parse_err("iptables:\n  masqueradeBit: [1\n");
    assert!(reason.contains("line"), "{reason}");
    let reason = parse_err("oomScoreAdj: lots\n");
    assert!(reason.contains("line 3"), "{reason}");
    let err = KubeProxyConfiguration::load(
        testdata("upstream-v1alpha1-default.yaml").with_file_name("missing.yaml"),
    );
    assert!(matches!(err, Err(Error::Io { .. })), "{err:?}");
}

#[test]
fn parse_errors_of_files_name_the_file() {
    let dir = std::env::temp_dir().join(format!("kp-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, doc("mode: [\n")).unwrap();
    let err = KubeProxyConfiguration::load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        matches!(&err, Error::Parse { what, .. } if what.ends_with("bad.yaml")),
        "{err:?}"
    );
}

#[test]
fn api_version_and_kind_are_checked() {
    for (text, field) in [
        ("kind: KubeProxyConfiguration\nmode: ipvs\n", "apiVersion"),
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
            "apiVersion",
        ),
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nmode: ipvs\n",
            "kind",
        ),
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
            "kind",
        ),
    ] {
        let err = KubeProxyConfiguration::from_yaml(text).unwrap_err();
        assert_eq!(config_field(&err), field, "{text:?}");
    }
}

// ---------------------------------------------------------------------------
// Platform defaults and accessors
// ---------------------------------------------------------------------------

#[test]
fn apply_defaults_is_platform_apply_defaults() {
    let mut c = KubeProxyConfiguration::default();
    c.apply_defaults();
    assert_eq!(c.mode, Some(ProxyMode::Iptables));
    assert_eq!(c.detect_local_mode, Some(LocalMode::ClusterCidr));
    assert_eq!(c.node_port_addresses, None);

    let mut c = load("mode: nftables\nnodePortAddresses: []\n");
    c.apply_defaults();
    assert_eq!(c.node_port_addresses, Some(vec!["primary".to_owned()]));

    let mut c =
        load("mode: nftables\nnodePortAddresses: [10.0.0.0/8]\ndetectLocalMode: NodeCIDR\n");
    c.apply_defaults();
    assert_eq!(c.node_port_addresses, Some(vec!["10.0.0.0/8".to_owned()]));
    assert_eq!(c.detect_local_mode, Some(LocalMode::NodeCidr));
}

#[test]
fn accessors_follow_the_active_mode() {
    let c = KubeProxyConfiguration::load(testdata("full.yaml")).unwrap();
    let with_mode = |mode| {
        let mut c = c.clone();
        c.mode = mode;
        c
    };
    let cases = [
        (None, ProxyMode::Iptables, 60, 2, 13, true),
        (
            Some(ProxyMode::Iptables),
            ProxyMode::Iptables,
            60,
            2,
            13,
            true,
        ),
        (Some(ProxyMode::Ipvs), ProxyMode::Ipvs, 45, 5, 13, true),
        (
            Some(ProxyMode::Nftables),
            ProxyMode::Nftables,
            40,
            3,
            12,
            true,
        ),
        (
            Some(ProxyMode::Userspace),
            ProxyMode::Userspace,
            20,
            0,
            13,
            true,
        ),
    ];
    for (mode, effective, sync, min, bit, all) in cases {
        let c = with_mode(mode);
        assert_eq!(c.effective_mode(), effective);
        assert_eq!(c.sync_period(), StdDuration::from_secs(sync), "{mode:?}");
        if effective == ProxyMode::Userspace {
            assert_eq!(c.min_sync_period(), StdDuration::from_millis(500));
        } else {
            assert_eq!(c.min_sync_period(), StdDuration::from_secs(min), "{mode:?}");
        }
        assert_eq!(c.health_timeout(), StdDuration::from_secs(2 * sync));
        assert_eq!(c.masquerade_bit(), bit, "{mode:?}");
        assert_eq!(c.masquerade_mark(), 1 << bit);
        assert_eq!(c.masquerade_all(), all);
    }

    let d = KubeProxyConfiguration::default();
    assert_eq!(d.effective_mode(), ProxyMode::Iptables);
    assert_eq!(d.sync_period(), StdDuration::from_secs(30));
    assert_eq!(d.min_sync_period(), StdDuration::from_secs(1));
    assert_eq!(d.health_timeout(), StdDuration::from_secs(60));
    assert_eq!(d.masquerade_bit(), 14);
    assert_eq!(d.masquerade_mark(), 0x4000);
    assert!(!d.masquerade_all());
    assert!(d.localhost_node_ports());
    assert_eq!(d.effective_scheduler(), "rr");
    assert_eq!(c.effective_scheduler(), "wlc");
    assert!(!c.localhost_node_ports());

    let mut nft = d.clone();
    nft.mode = Some(ProxyMode::Nftables);
    nft.iptables.masquerade_all = true;
    assert!(
        !nft.masquerade_all(),
        "nftables mode reads the nftables section"
    );
}

#[test]
fn cluster_cidrs_parse_comma_separated_pairs() {
    let mut c = KubeProxyConfiguration::default();
    assert_eq!(c.cluster_cidrs().unwrap(), Vec::<IpNet>::new());
    c.cluster_cidr = "10.244.0.0/16".into();
    assert_eq!(c.cluster_cidrs().unwrap(), vec![net("10.244.0.0/16")]);
    c.cluster_cidr = "fd00:10:244::/56, 10.244.0.1/16".into();
    assert_eq!(
        c.cluster_cidrs().unwrap(),
        vec![net("fd00:10:244::/56"), net("10.244.0.0/16")]
    );
    for bad in [
        "10.0.0.0/8,10.1.0.0/16",
        "10.0.0.0/8,fd00::/8,10.1.0.0/16",
        "10.0.0.0/33",
        "nope",
    ] {
        c.cluster_cidr = bad.into();
        assert_eq!(
            config_field(&c.cluster_cidrs().unwrap_err()),
            "clusterCIDR",
            "{bad}"
        );
    }
}

#[test]
fn detect_local_variants() {
    let mut c = KubeProxyConfiguration::default();
    assert_eq!(c.detect_local().unwrap(), DetectLocal::None);
    c.cluster_cidr = "10.244.0.0/16,fd00::/48".into();
    assert_eq!(
        c.detect_local().unwrap(),
        DetectLocal::ClusterCidr(vec![net("10.244.0.0/16"), net("fd00::/48")])
    );
    c.detect_local_mode = Some(LocalMode::NodeCidr);
    assert_eq!(c.detect_local().unwrap(), DetectLocal::NodeCidr);
    c.detect_local_mode = Some(LocalMode::BridgeInterface);
    assert_eq!(
        config_field(&c.detect_local().unwrap_err()),
        "detectLocal.bridgeInterface"
    );
    c.detect_local.bridge_interface = "cbr0".into();
    assert_eq!(
        c.detect_local().unwrap(),
        DetectLocal::BridgeInterface("cbr0".into())
    );
    c.detect_local_mode = Some(LocalMode::InterfaceNamePrefix);
    assert_eq!(
        config_field(&c.detect_local().unwrap_err()),
        "detectLocal.interfaceNamePrefix"
    );
    c.detect_local.interface_name_prefix = "veth".into();
    assert_eq!(
        c.detect_local().unwrap(),
        DetectLocal::InterfaceNamePrefix("veth".into())
    );
    c.detect_local_mode = None;
    c.cluster_cidr = "bad".into();
    assert_eq!(config_field(&c.detect_local().unwrap_err()), "clusterCIDR");
}

#[test]
fn node_port_addresses_semantics() {
    let mut c = KubeProxyConfiguration::default();
    let npa = c.node_port_addresses().unwrap();
    assert_eq!(npa, NodePortAddresses::default());
    assert!(npa.matches_all() && npa.is_empty());

    // nftables defaults to the primary IPs, with or without apply_defaults.
    c.mode = Some(ProxyMode::Nftables);
    let npa = c.node_port_addresses().unwrap();
    assert!(npa.primary && npa.cidrs.is_empty() && !npa.matches_all());
    c.apply_defaults();
    assert_eq!(c.node_port_addresses().unwrap(), npa);

    c.node_port_addresses = Some(vec![
        "192.168.0.0/24".into(),
        "localhost".into(),
        "2001:db8::1/128".into(),
    ]);
    let npa = c.node_port_addresses().unwrap();
    assert!(!npa.primary && npa.localhost && !npa.all);
    assert_eq!(
        npa.cidrs,
        vec![
            net("192.168.0.0/24"),
            net("127.0.0.0/8"),
            net("::1/128"),
            net("2001:db8::1/128")
        ]
    );
    assert!(
        !npa.matches_all()
            && !npa.matches_all_for(IpFamily::V4)
            && !npa.matches_all_for(IpFamily::V6)
    );
    assert!(npa.contains_loopback(IpFamily::V4));

    c.node_port_addresses = Some(vec!["all".into()]);
    assert!(c.node_port_addresses().unwrap().matches_all());

    c.node_port_addresses = Some(vec!["10.0.0.0/8".into(), "nope".into()]);
    assert_eq!(
        config_field(&c.node_port_addresses().unwrap_err()),
        "nodePortAddresses[1]"
    );
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

type Mutation = fn(&mut KubeProxyConfiguration);

/// One failing case per rule: the mutation applied to the defaults, and the
/// field the error must name.
const RULES: &[(&str, Mutation)] = &[
    ("apiVersion", |c| c.api_version = "v1".into()),
    ("kind", |c| c.kind = "Config".into()),
    ("mode", |c| c.mode = Some(ProxyMode::Kernelspace)),
    ("iptables.masqueradeBit", |c| {
        c.iptables.masquerade_bit = Some(32)
    }),
    ("iptables.masqueradeBit", |c| {
        c.iptables.masquerade_bit = Some(-1)
    }),
    ("iptables.syncPeriod", |c| {
        c.iptables.sync_period = Duration::ZERO
    }),
    ("iptables.minSyncPeriod", |c| {
        c.iptables.min_sync_period = Duration::from_secs(-1)
    }),
    ("iptables.syncPeriod", |c| {
        c.iptables.min_sync_period = Duration::from_mins(1)
    }),
    ("ipvs.syncPeriod", |c| {
        c.mode = Some(ProxyMode::Ipvs);
        c.ipvs.sync_period = Duration::from_secs(-5);
    }),
    ("ipvs.minSyncPeriod", |c| {
        c.mode = Some(ProxyMode::Ipvs);
        c.ipvs.min_sync_period = Duration::from_secs(-5);
    }),
    ("ipvs.scheduler", |c| {
        c.mode = Some(ProxyMode::Ipvs);
        c.ipvs.scheduler = "random".into();
    }),
    ("ipvs.tcpTimeout", |c| {
        c.mode = Some(ProxyMode::Ipvs);
        c.ipvs.tcp_timeout = Duration::from_secs(-1);
    }),
    ("ipvs.tcpFinTimeout", |c| {
        c.mode = Some(ProxyMode::Ipvs);
        c.ipvs.tcp_fin_timeout = Duration::from_secs(-1);
    }),
    ("ipvs.udpTimeout", |c| {
        c.mode = Some(ProxyMode::Ipvs);
        c.ipvs.udp_timeout = Duration::from_secs(-1);
    }),
    ("ipvs.excludeCIDRs[1]", |c| {
        c.mode = Some(ProxyMode::Ipvs);
        c.ipvs.exclude_cidrs = Some(vec!["10.0.0.0/8".into(), "10.0.0.0".into()]);
    }),
    ("nftables.masqueradeBit", |c| {
        c.mode = Some(ProxyMode::Nftables);
        c.nftables.masquerade_bit = Some(40);
    }),
    ("nftables.syncPeriod", |c| {
        c.mode = Some(ProxyMode::Nftables);
        c.nftables.min_sync_period = Duration::from_mins(1);
    }),
    ("userspace.syncPeriod", |c| {
        c.mode = Some(ProxyMode::Userspace);
        c.userspace.sync_period = Duration::ZERO;
    }),
    ("userspace.udpIdleTimeout", |c| {
        c.mode = Some(ProxyMode::Userspace);
        c.userspace.udp_idle_timeout = Duration::ZERO;
    }),
    ("userspace.maxUDPSessions", |c| {
        c.mode = Some(ProxyMode::Userspace);
        c.userspace.max_udp_sessions = Some(0);
    }),
    ("conntrack.maxPerCore", |c| {
        c.conntrack.max_per_core = Some(-1)
    }),
    ("conntrack.min", |c| c.conntrack.min = Some(-1)),
    ("conntrack.tcpEstablishedTimeout", |c| {
        c.conntrack.tcp_established_timeout = Some(Duration::from_secs(-1))
    }),
    ("conntrack.tcpCloseWaitTimeout", |c| {
        c.conntrack.tcp_close_wait_timeout = Some(Duration::from_secs(-1))
    }),
    ("conntrack.udpTimeout", |c| {
        c.conntrack.udp_timeout = Duration::from_secs(-1)
    }),
    ("conntrack.udpStreamTimeout", |c| {
        c.conntrack.udp_stream_timeout = Duration::from_secs(-1)
    }),
    ("oomScoreAdj", |c| c.oom_score_adj = Some(1001)),
    ("oomScoreAdj", |c| c.oom_score_adj = Some(-1001)),
    ("clientConnection.burst", |c| c.client_connection.burst = -1),
    ("clientConnection.qps", |c| {
        c.client_connection.qps = f32::NAN
    }),
    ("configSyncPeriod", |c| {
        c.config_sync_period = Duration::ZERO
    }),
    ("bindAddress", |c| c.bind_address = "localhost".into()),
    ("healthzBindAddress", |c| {
        c.healthz_bind_address = "0.0.0.0".into()
    }),
    ("healthzBindAddress", |c| {
        c.healthz_bind_address = "0.0.0.0:0".into()
    }),
    ("metricsBindAddress", |c| {
        c.metrics_bind_address = "localhost:10249".into()
    }),
    ("metricsBindAddress", |c| {
        c.metrics_bind_address = "127.0.0.1:65536".into()
    }),
    ("portRange", |c| c.port_range = "2000-300".into()),
    ("nodePortAddresses[1]", |c| {
        c.node_port_addresses = Some(vec!["primary".into(), "1.2.3".into()])
    }),
    ("nodePortAddresses[0]", |c| {
        c.node_port_addresses = Some(vec!["10.20.30.40".into()])
    }),
    ("showHiddenMetricsForVersion", |c| {
        c.show_hidden_metrics_for_version = "v1.36".into()
    }),
    ("clusterCIDR", |c| {
        c.cluster_cidr = "10.0.0.0/8,10.1.0.0/16".into()
    }),
    ("clusterCIDR", |c| {
        c.cluster_cidr = "10.0.0.0/8,fd00::/48,fd01::/48".into()
    }),
    ("clusterCIDR", |c| c.cluster_cidr = "10.0.0.0/40".into()),
    ("detectLocal.bridgeInterface", |c| {
        c.detect_local_mode = Some(LocalMode::BridgeInterface)
    }),
    ("detectLocal.interfaceNamePrefix", |c| {
        c.detect_local_mode = Some(LocalMode::InterfaceNamePrefix)
    }),
    ("detectLocal.bridgeInterface", |c| {
        c.detect_local_mode = Some(LocalMode::BridgeInterface);
        c.detect_local.bridge_interface = "cbr0\" accept".into();
    }),
    ("detectLocal.interfaceNamePrefix", |c| {
        c.detect_local.interface_name_prefix = "a-prefix-over-15-bytes".into()
    }),
    ("logging.format", |c| c.logging.format = "xml".into()),
    ("logging.verbosity", |c| c.logging.verbosity = u32::MAX),
    ("logging.vmodule", |c| {
        c.logging.format = "json".into();
        c.logging.vmodule = vec![VModuleItem {
            file_pattern: "x".into(),
            verbosity: 1,
        }];
    }),
    ("logging.vmodule[0]", |c| {
        c.logging.vmodule = vec![VModuleItem {
            file_pattern: "a=b".into(),
            verbosity: 1,
        }];
    }),
];

#[test]
fn each_validation_rule_names_its_field() {
    for (field, mutate) in RULES {
        let mut c = KubeProxyConfiguration::default();
        mutate(&mut c);
        let errors = c.validation_errors();
        assert_eq!(errors.len(), 1, "{field}: {errors:?}");
        assert_eq!(config_field(&errors[0]), *field, "{errors:?}");
        let err = c.validate().unwrap_err();
        assert_eq!(config_field(&err), *field);
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn valid_configurations_pass() {
    let mut c = KubeProxyConfiguration::default();
    c.validate().unwrap();
    c.apply_defaults();
    c.validate().unwrap();
    for mode in [
        ProxyMode::Iptables,
        ProxyMode::Ipvs,
        ProxyMode::Nftables,
        ProxyMode::Userspace,
    ] {
        let mut c = KubeProxyConfiguration {
            mode: Some(mode),
            ..Default::default()
        };
        c.apply_defaults();
        c.validate().unwrap();
    }
    let c = load(
        "mode: nftables\nnodePortAddresses: [primary, localhost, all, 10.0.0.0/8, \"::/0\"]\n\
         clusterCIDR: 10.0.0.0/8\ndetectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: veth\n\
         portRange: 300+100\nhealthzBindAddress: \"\"\nmetricsBindAddress: \"[::1]:9000\"\n",
    );
    c.validate().unwrap();
    // Sections of inactive modes are not validated, as upstream.
    let mut c = KubeProxyConfiguration::default();
    c.ipvs.scheduler = "random".into();
    c.nftables.masquerade_bit = Some(99);
    c.validate().unwrap();
}

#[test]
fn validate_reports_every_error_at_once() {
    let c = KubeProxyConfiguration::load(testdata("invalid.yaml")).unwrap();
    let fields: Vec<String> = c
        .validation_errors()
        .iter()
        .map(|e| config_field(e).to_owned())
        .collect();
    assert_eq!(
        fields,
        [
            "iptables.masqueradeBit",
            "iptables.syncPeriod",
            "oomScoreAdj",
            "nodePortAddresses[1]"
        ]
    );
    let err = c.validate().unwrap_err();
    assert_eq!(config_field(&err), "iptables.masqueradeBit");
    let text = err.to_string();
    for field in &fields {
        assert!(text.contains(field.as_str()), "{text}");
    }
    assert!(text.contains("and 3 more"), "{text}");
}

#[test]
fn proxy_mode_names() {
    assert_eq!(ProxyMode::ALL.len(), 5);
    let names: Vec<String> = ProxyMode::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        ["iptables", "ipvs", "nftables", "userspace", "kernelspace"]
    );
    for mode in ProxyMode::ALL {
        let c = load(&format!("mode: {mode}\n"));
        assert_eq!(c.mode, Some(mode));
        assert_eq!(
            c.to_yaml()
                .unwrap()
                .lines()
                .find(|l| l.starts_with("mode:")),
            Some(format!("mode: {mode}").as_str())
        );
    }
    assert_eq!(load("mode: \"\"\n").mode, None);
    assert_eq!(
        "nftables".parse::<ProxyMode>().unwrap(),
        ProxyMode::Nftables
    );
    let err = "ebpf".parse::<ProxyMode>().unwrap_err();
    assert_eq!(config_field(&err), "mode");
}
