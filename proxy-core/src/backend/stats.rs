/// What one [`Backend::sync`](super::Backend::sync) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Whether everything was rewritten.
    pub full: bool,
    /// Service ports whose dataplane objects were written.
    pub ports_written: usize,
    /// Dataplane objects written (rules, chains, map elements, listeners).
    /// Zero when the sync changed nothing in the dataplane.
    pub objects_written: usize,
    /// Backend-specific totals for metrics, e.g. `("nat", 43000)` rules per
    /// iptables table (`kubeproxy_sync_proxy_rules_iptables_total{table}`).
    pub totals: Vec<(String, u64)>,
}
