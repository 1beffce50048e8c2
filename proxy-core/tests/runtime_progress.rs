//! Long start-ups report progress at info every 5 s: the initial lists
//! while they arrive (objects received so far), then a long first sync
//! (service ports programmed so far, of the total), as the log shows it.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod runtime_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_core::backend::{BackendContext, BackendFactory, SyncProgress};
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::{ChannelSource, SourceEvent, Update};
use proxy_core::runtime::{Runtime, RuntimeOptions};
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, IpFamily, NodeView, ObjectKind, ProxyMode,
    SyncStats,
};
use runtime_support::{service, slice, timing};
use tokio::sync::oneshot;

/// A backend whose syncs take 12 s, in three steps of 4 s, reporting each
/// step's port through its context (as a chunked cold start does).
struct Slow {
    progress: Arc<SyncProgress>,
}

#[async_trait::async_trait]
impl Backend for Slow {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }
    async fn sync(&mut self, view: &NodeView, _: &ChangeSet) -> Result<SyncStats, BackendError> {
        for _ in 0..view.len() {
            tokio::time::sleep(Duration::from_secs(4)).await;
            self.progress.add(1);
        }
        Ok(SyncStats::default())
    }
    async fn cleanup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn render(&self, _: &NodeView) -> Result<String, BackendError> {
        Ok(String::new())
    }
}

struct SlowFactory;

#[async_trait::async_trait]
impl BackendFactory for SlowFactory {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace
    }
    async fn check(&self, _: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }
    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(Slow {
            progress: ctx.progress.clone(),
        }))
    }
    async fn cleanup_leftovers(&self, _: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_start_up_logs_the_lists_received_and_the_ports_programmed_so_far() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.families = Some(vec![IpFamily::V4]);
    options.timing = timing();
    let runtime = Runtime::new(config, Arc::new(SlowFactory), vec![], options);
    let (source, events) = ChannelSource::new(vec![ObjectKind::Service, ObjectKind::EndpointSlice]);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(Box::new(source), async move {
        let _ = stopped.await;
    }));

    let names = ["a", "b", "c"];
    events.send(SourceEvent::Service(Update::Init)).unwrap();
    for (i, name) in names.iter().enumerate() {
        let ip = format!("172.30.0.{}", i + 1);
        events
            .send(SourceEvent::Service(Update::InitApply(service(
                name,
                &[&ip],
            ))))
            .unwrap();
    }
    events.send(SourceEvent::Service(Update::InitDone)).unwrap();
    events
        .send(SourceEvent::EndpointSlice(Update::Init))
        .unwrap();
    events
        .send(SourceEvent::EndpointSlice(Update::InitApply(slice(
            "a-1",
            "a",
            &["10.0.0.1"],
        ))))
        .unwrap();
    // The EndpointSlice list is slow to complete.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for name in &names[1..] {
        events
            .send(SourceEvent::EndpointSlice(Update::InitApply(slice(
                &format!("{name}-1"),
                name,
                &["10.0.0.2"],
            ))))
            .unwrap();
    }
    events
        .send(SourceEvent::EndpointSlice(Update::InitDone))
        .unwrap();
    // The first sync takes 12 s.
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let lines = captured.lines();
    let matching =
        |needle: &str| -> Vec<&String> { lines.iter().filter(|l| l.contains(needle)).collect() };
    let listing = matching("still waiting for the initial lists");
    assert_eq!(listing.len(), 1, "{lines:#?}");
    assert!(
        listing[0].contains("received=EndpointSlice: 1"),
        "{lines:#?}"
    );
    let running = matching("sync in progress");
    assert_eq!(running.len(), 2, "at 5 s and 10 s: {lines:#?}");
    assert!(
        running[0].contains("programmed=1 total=3") && running[1].contains("programmed=2 total=3"),
        "{lines:#?}"
    );
    let finished = matching("sync finished");
    assert_eq!(finished.len(), 1, "{lines:#?}");
    assert!(finished[0].contains("programmed=3 total=3"), "{lines:#?}");
}
