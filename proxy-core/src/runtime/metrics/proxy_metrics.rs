//! [`ProxyMetrics`]: upstream's kube-proxy metrics in a registry of their own.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

use crate::model::IpFamily;
use crate::runtime::health::{Clock, system_clock};

/// The prefix of every metric name, upstream's subsystem.
pub const PREFIX: &str = "kubeproxy";

/// `{ip_family}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FamilyLabels {
    /// `IPv4` or `IPv6`.
    pub ip_family: &'static str,
}

impl FamilyLabels {
    /// The labels of `family`.
    pub fn of(family: IpFamily) -> Self {
        FamilyLabels {
            ip_family: family.as_str(),
        }
    }
}

/// `{ip_family, traffic_policy}` of `sync_proxy_rules_no_local_endpoints_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `IPv4` or `IPv6`.
    pub ip_family: &'static str,
    /// `internal` or `external`.
    pub traffic_policy: &'static str,
}

/// `{ip_family, table}` of `sync_proxy_rules_iptables_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TableLabels {
    /// `IPv4` or `IPv6`.
    pub ip_family: &'static str,
    /// The iptables table (`filter`, `nat`).
    pub table: String,
}

/// `{code}` of the healthz and livez request counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CodeLabels {
    /// The HTTP status code, `200` or `503`.
    pub code: String,
}

/// `{program}` of `kubeproxy_command_timeouts_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProgramLabels {
    /// The program's file name (`nft`, `iptables-nft-restore`, `conntrack`).
    pub program: String,
}

/// `{ip_family, detected_by}` of `sync_proxy_rules_external_changes_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ExternalChangeLabels {
    /// `IPv4` or `IPv6`.
    pub ip_family: &'static str,
    /// `poll` (the drift check every `syncPeriod`) or `netlink` (an
    /// nf_tables notification).
    pub detected_by: &'static str,
}

type HistogramFamily = Family<FamilyLabels, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// `metrics.ExponentialBuckets(0.001, 2, 15)`: 1ms to ~16s.
fn sync_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Upstream's `network_programming_duration_seconds` buckets:
/// `Merge(Linear(0.25, 0.25, 2), Linear(1, 1, 59), Linear(60, 5, 12), Linear(120, 30, 7))`.
fn network_programming_histogram() -> Histogram {
    let buckets = linear_buckets(0.25, 0.25, 2)
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7));
    Histogram::new(buckets)
}

fn histogram_family(constructor: fn() -> Histogram) -> HistogramFamily {
    Family::new_with_constructor(constructor)
}

/// Upstream's kube-proxy metrics (`pkg/proxy/metrics`), same names, types,
/// labels and buckets, in a [`Registry`] owned by this value (no global
/// state: two can live in one process).
///
/// Names are registered without the `kubeproxy_` prefix and counters without
/// `_total` (the prometheus-client encoder adds both), so the exposition
/// shows upstream's names, e.g. `kubeproxy_sync_proxy_rules_endpoint_changes_total`.
/// The [`SyncObserver`](crate::runtime::SyncObserver) implementation
/// (see [`SyncObserver`](crate::runtime::SyncObserver)) feeds most of them; [`ProxyHealth`](crate::runtime::health::ProxyHealth)
/// and the conntrack cleaner feed the rest.
pub struct ProxyMetrics {
    registry: Registry,
    clock: Arc<dyn Clock>,
    /// `kubeproxy_sync_proxy_rules_duration_seconds{ip_family}`.
    pub sync_duration: HistogramFamily,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds{ip_family}`.
    pub sync_full_duration: HistogramFamily,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds{ip_family}`.
    pub sync_partial_duration: HistogramFamily,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family}`.
    pub last_sync_timestamp: Family<FamilyLabels, FloatGauge>,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family}`.
    pub last_queued_timestamp: Family<FamilyLabels, FloatGauge>,
    /// `kubeproxy_network_programming_duration_seconds{ip_family}`.
    pub network_programming_duration: HistogramFamily,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_pending`.
    pub endpoint_changes_pending: Gauge,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_total`.
    pub endpoint_changes_total: Counter,
    /// `kubeproxy_sync_proxy_rules_service_changes_pending`.
    pub service_changes_pending: Gauge,
    /// `kubeproxy_sync_proxy_rules_service_changes_total`.
    pub service_changes_total: Counter,
    /// `kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family, traffic_policy}` (a gauge).
    pub no_local_endpoints: Family<PolicyLabels, Gauge>,
    /// `kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family}`.
    pub iptables_restore_failures: Family<FamilyLabels, Counter>,
    /// `kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family}`.
    pub iptables_partial_restore_failures: Family<FamilyLabels, Counter>,
    /// `kubeproxy_sync_proxy_rules_iptables_total{ip_family, table}` (a gauge).
    pub iptables_rules_total: Family<TableLabels, Gauge>,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family}`.
    pub nftables_sync_failures: Family<FamilyLabels, Counter>,
    /// `kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family}`.
    pub conntrack_deleted_entries: Family<FamilyLabels, Counter>,
    /// `kubeproxy_conntrack_reconciler_sync_duration_seconds{ip_family}`.
    pub conntrack_sync_duration: HistogramFamily,
    /// `kubeproxy_proxy_healthz_total{code}`.
    pub healthz_total: Family<CodeLabels, Counter>,
    /// `kubeproxy_proxy_livez_total{code}`.
    pub livez_total: Family<CodeLabels, Counter>,
    /// **Ours**: `kubeproxy_command_timeouts_total{program}`, external
    /// commands killed for outliving their time limit
    /// ([`CommandLimits`](crate::backend::CommandLimits)).
    pub command_timeouts: Family<ProgramLabels, Counter>,
    /// `kubeproxy_sync_proxy_rules_refused_service_ports{ip_family}` (ours,
    /// not upstream's): service ports the dataplane refuses, held back at
    /// their last programmed version (or absent) while every other one is
    /// programmed. Non-zero means some Service is not (fully) served; the
    /// log names each port and the tool's error.
    pub refused_service_ports: Family<FamilyLabels, Gauge>,
    /// `kubeproxy_sync_proxy_rules_service_port_refusals_total{ip_family}`
    /// (ours, not upstream's): service ports found refused by the dataplane
    /// (a port refused, programmed and refused again counts twice).
    pub service_port_refusals: Family<FamilyLabels, Counter>,
    /// `kubeproxy_sync_proxy_rules_external_changes_total{ip_family, detected_by}`
    /// (not upstream's): external changes to our dataplane state that
    /// forced a repairing full sync.
    pub external_changes: Family<ExternalChangeLabels, Counter>,
    /// Last values reported by `pending`, to turn them into `_total` increases.
    last_pending: [AtomicU64; 2],
    /// The backends' published dataplane state (`/proxyListeners`).
    pub listings: super::listings::Listings,
}

impl fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    /// Every metric, registered and at zero, reading the system clock.
    pub fn new() -> Self {
        Self::with_clock(system_clock())
    }

    /// Every metric, registered and at zero; `clock` gives the time of
    /// syncs (`..._last_timestamp_seconds`, network programming durations).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = ProxyMetrics {
            sync_duration: histogram_family(sync_duration_histogram),
            sync_full_duration: histogram_family(sync_duration_histogram),
            sync_partial_duration: histogram_family(sync_duration_histogram),
            last_sync_timestamp: Family::default(),
            last_queued_timestamp: Family::default(),
            network_programming_duration: histogram_family(network_programming_histogram),
            endpoint_changes_pending: Gauge::default(),
            endpoint_changes_total: Counter::default(),
            service_changes_pending: Gauge::default(),
            service_changes_total: Counter::default(),
            no_local_endpoints: Family::default(),
            iptables_restore_failures: Family::default(),
            iptables_partial_restore_failures: Family::default(),
            iptables_rules_total: Family::default(),
            nftables_sync_failures: Family::default(),
            conntrack_deleted_entries: Family::default(),
            conntrack_sync_duration: histogram_family(sync_duration_histogram),
            healthz_total: Family::default(),
            livez_total: Family::default(),
            command_timeouts: Family::default(),
            refused_service_ports: Family::default(),
            service_port_refusals: Family::default(),
            external_changes: Family::default(),
            last_pending: [AtomicU64::new(0), AtomicU64::new(0)],
            listings: super::listings::Listings::default(),
            registry: Registry::default(),
            clock,
        };
        m.register_metrics(&mut registry);
        ProxyMetrics { registry, ..m }
    }

    /// Also registers every metric in `registry` (an application's own),
    /// under the `kubeproxy_` prefix, sharing the values with this one.
    pub fn register_in(&self, registry: &mut Registry) {
        self.register_metrics(registry.sub_registry_with_prefix(PREFIX));
    }

    /// Registers every metric, without prefix, in `r`.
    fn register_metrics(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.sync_full_duration.clone(),
        );
        r.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.sync_partial_duration.clone(),
        );
        r.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync_timestamp.clone(),
        );
        r.register(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued_timestamp.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming_duration.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes_total.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes_total.clone(),
        );
        r.register(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.iptables_restore_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables partial restore failures",
            m.iptables_partial_restore_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            m.iptables_rules_total.clone(),
        );
        r.register(
            "sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            m.nftables_sync_failures.clone(),
        );
        r.register(
            "conntrack_reconciler_deleted_entries",
            "Cumulative conntrack flows deleted by conntrack reconciler",
            m.conntrack_deleted_entries.clone(),
        );
        r.register(
            "conntrack_reconciler_sync_duration_seconds",
            "ReconcileConntrackFlowsLatency latency in seconds",
            m.conntrack_sync_duration.clone(),
        );
        r.register(
            "proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz_total.clone(),
        );
        r.register(
            "proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.livez_total.clone(),
        );
        r.register(
            "command_timeouts",
            "External commands (nft, iptables-restore, ipset, conntrack, ...) killed for running longer than their timeout",
            m.command_timeouts.clone(),
        );
        r.register(
            "sync_proxy_rules_refused_service_ports",
            "Service ports the dataplane refuses, held back while every other one is programmed (not in upstream kube-proxy)",
            m.refused_service_ports.clone(),
        );
        r.register(
            "sync_proxy_rules_service_port_refusals",
            "Cumulative service ports found refused by the dataplane (not in upstream kube-proxy)",
            m.service_port_refusals.clone(),
        );
        r.register(
            "sync_proxy_rules_external_changes",
            "Cumulative changes made from outside to the proxy rules that forced a repairing full sync",
            m.external_changes.clone(),
        );
    }

    /// The registry holding every metric, for encoding.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one `/healthz` answer with `code`.
    pub fn record_healthz(&self, code: u16) {
        self.healthz_total
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts one `/livez` answer with `code`.
    pub fn record_livez(&self, code: u16) {
        self.livez_total
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Records one conntrack reconciliation of `family`.
    pub fn record_conntrack_cleanup(&self, family: IpFamily, deleted: u64, took: Duration) {
        let labels = FamilyLabels::of(family);
        self.conntrack_deleted_entries
            .get_or_create(&labels)
            .inc_by(deleted);
        self.conntrack_sync_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts one external command killed after its timeout.
    pub fn record_command_timeout(&self, program: &str) {
        self.command_timeouts
            .get_or_create(&ProgramLabels {
                program: program.to_string(),
            })
            .inc();
    }

    /// The current time of this value's clock.
    pub(super) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Sets the pending gauges and adds the increases to the `_total`
    /// counters (upstream counts every change as it is queued; the runtime
    /// reports the pending counts, which only grow between syncs).
    pub(super) fn record_pending(&self, services: usize, endpoints: usize) {
        let (services, endpoints) = (services as u64, endpoints as u64);
        self.service_changes_pending
            .set(i64::try_from(services).unwrap_or(i64::MAX));
        self.endpoint_changes_pending
            .set(i64::try_from(endpoints).unwrap_or(i64::MAX));
        let previous_services = self.last_pending[0].swap(services, Ordering::Relaxed);
        let previous_endpoints = self.last_pending[1].swap(endpoints, Ordering::Relaxed);
        self.service_changes_total
            .inc_by(services.saturating_sub(previous_services));
        self.endpoint_changes_total
            .inc_by(endpoints.saturating_sub(previous_endpoints));
    }
}

/// Counts the external commands killed after their timeout: hand the
/// metrics to [`CommandLimits::with_recorder`](crate::backend::CommandLimits::with_recorder).
impl crate::backend::TimeoutRecorder for ProxyMetrics {
    fn command_timed_out(&self, program: &str) {
        self.record_command_timeout(program);
    }
}
