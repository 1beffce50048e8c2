//! The sync loop run on a [`RecordingFactory`] and fed through a
//! [`ChannelSource`], for tests with tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::{ChannelSource, SourceEvent, Update};
use proxy_core::runtime::{Runtime, RuntimeOptions, SyncObserver};
use proxy_core::{IpFamily, ObjectKind};
use tokio::sync::{mpsc, oneshot};

use super::{Recorder, RecordingFactory, RecordingObserver, timing};

/// A running loop serving IPv4 with a recording backend.
pub struct LoopHarness {
    events: mpsc::UnboundedSender<SourceEvent>,
    pub recorder: Arc<Recorder>,
    pub observer: Arc<RecordingObserver>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), proxy_core::Error>>,
}

impl LoopHarness {
    /// Starts the loop with [`timing`] and a [`RecordingObserver`] followed
    /// by `observers`.
    pub fn start(observers: Vec<Arc<dyn SyncObserver>>) -> LoopHarness {
        Self::start_with(Some(vec![IpFamily::V4]), vec![], observers)
    }

    /// Starts the loop serving `families` (`None`: the runtime's own
    /// choice), with a backend factory that refuses `unsupported`.
    pub fn start_families(
        families: Option<Vec<IpFamily>>,
        unsupported: Vec<IpFamily>,
    ) -> LoopHarness {
        Self::start_with(families, unsupported, vec![])
    }

    fn start_with(
        families: Option<Vec<IpFamily>>,
        unsupported: Vec<IpFamily>,
        observers: Vec<Arc<dyn SyncObserver>>,
    ) -> LoopHarness {
        let (factory, recorder) = RecordingFactory::new(unsupported);
        let observer = Arc::new(RecordingObserver::default());
        let config = Arc::new(KubeProxyConfiguration::default());
        let mut options = RuntimeOptions::new(&config, "node-a");
        options.families = families;
        options.timing = timing();
        let mut all: Vec<Arc<dyn SyncObserver>> = vec![observer.clone()];
        all.extend(observers);
        let runtime = Runtime::new(config, factory, all, options);
        let (source, events) =
            ChannelSource::new(vec![ObjectKind::Service, ObjectKind::EndpointSlice]);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runtime.run(Box::new(source), async move {
            let _ = stopped.await;
        }));
        LoopHarness {
            events,
            recorder,
            observer,
            stop: Some(stop),
            task,
        }
    }

    pub fn send(&self, event: SourceEvent) {
        self.events.send(event).unwrap();
    }

    /// Delivers the initial lists.
    pub fn list(&self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        self.send(SourceEvent::Service(Update::Init));
        for s in services {
            self.send(SourceEvent::Service(Update::InitApply(s)));
        }
        self.send(SourceEvent::Service(Update::InitDone));
        self.send(SourceEvent::EndpointSlice(Update::Init));
        for s in slices {
            self.send(SourceEvent::EndpointSlice(Update::InitApply(s)));
        }
        self.send(SourceEvent::EndpointSlice(Update::InitDone));
    }

    pub fn apply_service(&self, service: Service) {
        self.send(SourceEvent::Service(Update::Apply(service)));
    }

    pub fn apply_slice(&self, slice: EndpointSlice) {
        self.send(SourceEvent::EndpointSlice(Update::Apply(slice)));
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Lets the loop run for `secs` of (paused) tokio time.
pub async fn advance(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}
