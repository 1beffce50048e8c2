//! Periodic work keeps its own clock in the sync loop: with a Service
//! changing every 0.5 s, the drift check (`Backend::dataplane_lost`, the only
//! repair of the legacy iptables mode) still runs every `syncPeriod`, a lost
//! dataplane is rebuilt within `syncPeriod` + `minSyncPeriod`, and the full
//! resync still happens every `full_sync_period`. Recording backend, paused
//! tokio clock.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod runtime_support;

use std::sync::Arc;
use std::time::Duration;

use proxy_core::IpFamily;
use proxy_core::ObjectKind;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::{ChannelSource, SourceEvent, Update};
use proxy_core::runtime::{Runtime, RuntimeOptions, SyncObserver, SyncTiming};
use runtime_support::{Recorder, RecordingFactory, RecordingObserver, service, slice};
use tokio::sync::{mpsc, oneshot};

const SYNC_PERIOD: u64 = 5;
const FULL_SYNC_PERIOD: u64 = 60;

struct Loop {
    events: mpsc::UnboundedSender<SourceEvent>,
    recorder: Arc<Recorder>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), proxy_core::Error>>,
}

/// The loop with `syncPeriod` 5 s, `minSyncPeriod` 1 s, full sync every
/// 60 s, synced once with Service `web`.
async fn start() -> Loop {
    let (factory, recorder) = RecordingFactory::new(vec![]);
    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.families = Some(vec![IpFamily::V4]);
    options.timing = SyncTiming {
        min_interval: Duration::from_secs(1),
        sync_period: Duration::from_secs(SYNC_PERIOD),
        full_sync_period: Duration::from_secs(FULL_SYNC_PERIOD),
        retry_interval: Duration::from_secs(1),
    };
    let observers: Vec<Arc<dyn SyncObserver>> = vec![Arc::new(RecordingObserver::default())];
    let runtime = Runtime::new(config, factory, observers, options);
    let (source, events) = ChannelSource::new(vec![ObjectKind::Service, ObjectKind::EndpointSlice]);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(Box::new(source), async move {
        let _ = stopped.await;
    }));
    for event in [
        SourceEvent::Service(Update::Init),
        SourceEvent::Service(Update::InitApply(service("web", &["172.30.0.10"]))),
        SourceEvent::Service(Update::InitDone),
        SourceEvent::EndpointSlice(Update::Init),
        SourceEvent::EndpointSlice(Update::InitApply(slice("web-1", "web", &["10.0.0.1"]))),
        SourceEvent::EndpointSlice(Update::InitDone),
    ] {
        events.send(event).unwrap();
    }
    advance_ms(100).await;
    assert_eq!(recorder.calls().len(), 1, "the first sync");
    Loop {
        events,
        recorder,
        stop,
        task,
    }
}

async fn advance_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl Loop {
    /// Changes the endpoints of `web` every 0.5 s for `seconds`.
    async fn churn(&self, seconds: u64, counter: &mut u32) {
        for _ in 0..seconds * 2 {
            *counter += 1;
            let ip = format!("10.0.{}.{}", *counter / 250, *counter % 250 + 1);
            self.events
                .send(SourceEvent::EndpointSlice(Update::Apply(slice(
                    "web-1",
                    "web",
                    &[&ip],
                ))))
                .unwrap();
            advance_ms(500).await;
        }
    }

    fn lost_checks(&self) -> usize {
        *self.recorder.lost_checks.lock().unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_drift_check_runs_every_sync_period_under_churn() {
    let l = start().await;
    let mut n = 0;
    // 30.1 s in: checks due at 5, 10, …, 30 s (each at most the minimum
    // interval late).
    l.churn(30, &mut n).await;
    let checks = l.lost_checks();
    assert!(
        (5..=6).contains(&checks),
        "{checks} drift checks in 30 s of churn, every {SYNC_PERIOD} s expected"
    );
    let syncs = l.recorder.calls().len();
    assert!(syncs >= 25, "the churn was programmed: {syncs} syncs");
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_dataplane_is_rebuilt_within_a_sync_period_under_churn() {
    let l = start().await;
    let mut n = 0;
    l.churn(7, &mut n).await;
    let before = l.recorder.calls().len();
    *l.recorder.lost.lock().unwrap() = true;
    // The next check is due at 10 s; allow the minimum interval.
    l.churn(SYNC_PERIOD + 1, &mut n).await;
    let calls = l.recorder.calls();
    assert!(
        calls[before..].iter().any(|c| c.full && c.view.len() == 1),
        "no full sync within {SYNC_PERIOD} s + 1 s of churn after the loss: {:?}",
        &calls[before..]
    );
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_full_resync_happens_every_full_sync_period_under_churn() {
    let l = start().await;
    let mut n = 0;
    // The first sync (t = 0) was full; the next is due at 60 s, checked by
    // the periodic run at 60 s (at most the minimum interval late).
    l.churn(FULL_SYNC_PERIOD - 1, &mut n).await;
    let fulls = l.recorder.calls().iter().filter(|c| c.full).count();
    assert_eq!(fulls, 1, "only the first sync was full so far");
    l.churn(2, &mut n).await;
    let fulls = l.recorder.calls().iter().filter(|c| c.full).count();
    assert_eq!(
        fulls, 2,
        "the hourly-style full sync was not postponed by the churn"
    );
    l.stop().await;
}
