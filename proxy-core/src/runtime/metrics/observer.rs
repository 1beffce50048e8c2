//! How the sync loop's events become metrics.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::{BackendError, BackendErrorKind};
use crate::config::ProxyMode;
use crate::model::IpFamily;
use crate::runtime::observer::{DetectedBy, RefusalReport, SyncObserver, SyncReport};
use crate::view::{NodeView, Target};

use super::proxy_metrics::{
    ExternalChangeLabels, FamilyLabels, PolicyLabels, ProxyMetrics, TableLabels,
};

/// Seconds since the Unix epoch (0 before it).
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Upstream's `no_local_endpoints_total` counts of one view: service ports
/// whose ClusterIP traffic (`internal`) or external traffic (`external`)
/// is dropped because the policy is `Local` and no local endpoint exists.
pub fn no_local_endpoints(view: &NodeView) -> (i64, i64) {
    let (mut internal, mut external) = (0, 0);
    for (_, port) in view.iter() {
        if port.internal == Target::Drop {
            internal += 1;
        }
        if port.external == Target::Drop && port.port.externally_accessible() {
            external += 1;
        }
    }
    (internal, external)
}

impl SyncObserver for ProxyMetrics {
    fn queued(&self, family: IpFamily, at: SystemTime) {
        self.last_queued_timestamp
            .get_or_create(&FamilyLabels::of(family))
            .set(unix_seconds(at));
    }

    fn synced(&self, report: &SyncReport<'_>) {
        let labels = FamilyLabels::of(report.family);
        let seconds = report.duration.as_secs_f64();
        self.sync_duration.get_or_create(&labels).observe(seconds);
        let by_kind = if report.full {
            &self.sync_full_duration
        } else {
            &self.sync_partial_duration
        };
        by_kind.get_or_create(&labels).observe(seconds);

        let now = self.now();
        self.last_sync_timestamp
            .get_or_create(&labels)
            .set(unix_seconds(now));
        for trigger in report.trigger_times {
            // A trigger time in the future (clock skew with the control
            // plane) is not a latency; upstream skips it too.
            if let Ok(latency) = now.duration_since(*trigger) {
                self.network_programming_duration
                    .get_or_create(&labels)
                    .observe(latency.as_secs_f64());
            }
        }

        // Shown as 0 from the first sync on; `refused` sets it.
        let _ = self.refused_service_ports.get_or_create(&labels);

        let (internal, external) = no_local_endpoints(report.view);
        for (policy, count) in [("internal", internal), ("external", external)] {
            self.no_local_endpoints
                .get_or_create(&PolicyLabels {
                    ip_family: labels.ip_family,
                    traffic_policy: policy,
                })
                .set(count);
        }

        if report.mode == ProxyMode::Iptables {
            for (table, rules) in &report.stats.totals {
                self.iptables_rules_total
                    .get_or_create(&TableLabels {
                        ip_family: labels.ip_family,
                        table: table.clone(),
                    })
                    .set(i64::try_from(*rules).unwrap_or(i64::MAX));
            }
        }
    }

    fn failed(&self, family: IpFamily, mode: ProxyMode, full: bool, error: &BackendError) {
        // Upstream counts failed writes to the kernel; a host that cannot run
        // the mode or a configuration it cannot express is not one.
        if matches!(
            error.kind(),
            BackendErrorKind::Config | BackendErrorKind::Unsupported
        ) {
            return;
        }
        let labels = FamilyLabels::of(family);
        match mode {
            ProxyMode::Iptables => {
                self.iptables_restore_failures.get_or_create(&labels).inc();
                if !full {
                    self.iptables_partial_restore_failures
                        .get_or_create(&labels)
                        .inc();
                }
            }
            ProxyMode::Nftables => {
                self.nftables_sync_failures.get_or_create(&labels).inc();
            }
            ProxyMode::Ipvs | ProxyMode::Userspace | ProxyMode::Kernelspace => {}
        }
    }

    fn pending(&self, service_changes: usize, endpoint_changes: usize) {
        self.record_pending(service_changes, endpoint_changes);
    }

    fn refused(&self, report: &RefusalReport<'_>) {
        let labels = FamilyLabels::of(report.family);
        self.refused_service_ports
            .get_or_create(&labels)
            .set(i64::try_from(report.refused.len()).unwrap_or(i64::MAX));
        self.service_port_refusals
            .get_or_create(&labels)
            .inc_by(report.newly_refused as u64);
    }

    fn external_change(&self, family: IpFamily, _mode: ProxyMode, detected_by: DetectedBy) {
        self.external_changes
            .get_or_create(&ExternalChangeLabels {
                ip_family: family.as_str(),
                detected_by: detected_by.as_str(),
            })
            .inc();
    }

    fn listing(&self, family: IpFamily, mode: ProxyMode, listing: &str) {
        self.listings.publish(family, mode, listing);
    }
}
