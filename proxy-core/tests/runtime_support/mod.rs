//! Shared helpers of the runtime tests: a recording backend and factory, a
//! recording observer, and object builders.
#![allow(dead_code, clippy::unwrap_used)] // shared by several test crates; panics are failures

pub mod fake_api;
pub mod loop_harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::{BackendContext, BackendFactory};
use proxy_core::runtime::{NodeHealth, RefusalReport, SyncObserver, SyncReport, SyncTiming};
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, IpFamily, NodeView, ProxyMode, SyncStats,
};

/// One call of [`RecordingBackend::sync`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyncCall {
    pub family: IpFamily,
    pub full: bool,
    pub changed_ports: Vec<String>,
    /// `name → endpoint IPs (cluster)` of every port in the view.
    pub view: Vec<(String, Vec<String>)>,
    /// Whether the call succeeded.
    pub ok: bool,
}

/// What every backend built by one factory shares.
#[derive(Debug, Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<SyncCall>>,
    pub built: Mutex<Vec<IpFamily>>,
    /// Number of upcoming syncs that fail.
    pub fail_next: Mutex<usize>,
    /// Answer of the next `dataplane_lost`.
    pub lost: Mutex<bool>,
    pub lost_checks: Mutex<usize>,
    /// Markers the "dataplane" refuses: a sync fails with a `Dataplane`
    /// error when a port of its view, described as `name [endpoint IPs]`,
    /// contains one (a port name refuses every version of it, an IP the
    /// versions with that endpoint).
    pub refuse: Mutex<Vec<String>>,
    /// Number of upcoming syncs refused with a `Dataplane` error whatever
    /// their view (a refusal caused by the dataplane's state).
    pub refuse_next: Mutex<usize>,
    /// Answer of `next_resync` (the backend asking to be synced again).
    pub resync: Mutex<Option<Duration>>,
}

impl Recorder {
    pub fn calls(&self) -> Vec<SyncCall> {
        self.calls.lock().unwrap().clone()
    }
    pub fn calls_of(&self, family: IpFamily) -> Vec<SyncCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.family == family)
            .collect()
    }
}

pub fn describe(view: &NodeView) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = view
        .iter()
        .map(|(name, port)| {
            (
                name.to_string(),
                port.cluster.iter().map(|e| e.ip.to_string()).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

pub struct RecordingBackend {
    family: IpFamily,
    recorder: Arc<Recorder>,
}

#[async_trait::async_trait]
impl Backend for RecordingBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }
    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let refused = {
            let markers = self.recorder.refuse.lock().unwrap();
            let mut next = self.recorder.refuse_next.lock().unwrap();
            if *next > 0 {
                *next -= 1;
                Some("(whatever the view)".to_string())
            } else {
                describe(view)
                    .iter()
                    .map(|(name, eps)| format!("{name} {eps:?}"))
                    .find(|port| markers.iter().any(|m| port.contains(m.as_str())))
            }
        };
        let ok = refused.is_none() && {
            let mut fail = self.recorder.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                false
            } else {
                true
            }
        };
        self.recorder.calls.lock().unwrap().push(SyncCall {
            family: self.family,
            full: changes.is_full(),
            changed_ports: changes.ports().map(ToString::to_string).collect(),
            view: describe(view),
            ok,
        });
        if ok {
            Ok(SyncStats {
                full: changes.is_full(),
                ports_written: changes.len(),
                objects_written: 1,
                totals: Vec::new(),
            })
        } else if let Some(port) = refused {
            Err(BackendError::dataplane(format!("refused {port}")))
        } else {
            Err(BackendError::transient("injected failure"))
        }
    }
    async fn cleanup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    async fn dataplane_lost(&mut self) -> bool {
        *self.recorder.lost_checks.lock().unwrap() += 1;
        std::mem::take(&mut *self.recorder.lost.lock().unwrap())
    }
    fn next_resync(&self) -> Option<Duration> {
        *self.recorder.resync.lock().unwrap()
    }
    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        Ok(format!("{:?}\n", describe(view)))
    }
}

pub struct RecordingFactory {
    pub recorder: Arc<Recorder>,
    pub unsupported: Vec<IpFamily>,
}

impl RecordingFactory {
    pub fn new(unsupported: Vec<IpFamily>) -> (Arc<Self>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (
            Arc::new(RecordingFactory {
                recorder: recorder.clone(),
                unsupported,
            }),
            recorder,
        )
    }
}

#[async_trait::async_trait]
impl BackendFactory for RecordingFactory {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace
    }
    async fn check(&self, ctx: &BackendContext) -> Result<(), BackendError> {
        if self.unsupported.contains(&ctx.family) {
            return Err(BackendError::unsupported(format!(
                "{} not available here",
                ctx.family
            )));
        }
        Ok(())
    }
    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        self.recorder.built.lock().unwrap().push(ctx.family);
        Ok(Box::new(RecordingBackend {
            family: ctx.family,
            recorder: self.recorder.clone(),
        }))
    }
    async fn cleanup_leftovers(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Everything observers were told, as text.
#[derive(Debug, Default)]
pub struct RecordingObserver {
    pub events: Mutex<Vec<String>>,
}

impl RecordingObserver {
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
    fn push(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }
}

impl SyncObserver for RecordingObserver {
    fn queued(&self, family: IpFamily, _at: std::time::SystemTime) {
        self.push(format!("queued {family}"));
    }
    fn synced(&self, report: &SyncReport<'_>) {
        self.push(format!(
            "synced {} full={} ports={} triggers={}",
            report.family,
            report.full,
            report.view.len(),
            report.trigger_times.len()
        ));
    }
    fn failed(&self, family: IpFamily, _mode: ProxyMode, _full: bool, error: &BackendError) {
        self.push(format!("failed {family}: {}", error.message()));
    }
    fn pending(&self, services: usize, slices: usize) {
        self.push(format!("pending {services} {slices}"));
    }
    fn node(&self, node: &NodeHealth) {
        self.push(format!("node known={}", node.known));
    }
    fn refused(&self, report: &RefusalReport<'_>) {
        let names: Vec<String> = report.refused.iter().map(|p| p.name.to_string()).collect();
        self.push(format!(
            "refused {} {names:?} new={}",
            report.family, report.newly_refused
        ));
    }
}

pub fn timing() -> SyncTiming {
    SyncTiming {
        min_interval: Duration::from_secs(1),
        sync_period: Duration::from_secs(30),
        full_sync_period: Duration::from_secs(3600),
        retry_interval: Duration::from_secs(2),
    }
}

pub fn service(name: &str, ips: &[&str]) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"},
        "spec": {"clusterIP": ips[0], "clusterIPs": ips,
                 "ipFamilies": ips.iter().map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" }).collect::<Vec<_>>(),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))
    .unwrap()
}

pub fn slice(name: &str, service: &str, ips: &[&str]) -> EndpointSlice {
    let family = if ips.first().is_some_and(|ip| ip.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}
