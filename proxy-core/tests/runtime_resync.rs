//! A backend-requested resync (`Backend::next_resync`): the loop syncs the
//! backend again within the interval it asks for, with nothing pending (a
//! partial sync naming no port, on the last synced view), for as long as
//! it asks, and stops when it no longer does. Recording backend, paused
//! tokio clock.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod runtime_support;

use std::time::Duration;

use runtime_support::loop_harness::{LoopHarness, advance};
use runtime_support::{SyncCall, service, slice};

fn calls(h: &LoopHarness) -> Vec<SyncCall> {
    h.recorder.calls()
}

#[tokio::test(start_paused = true)]
async fn the_loop_syncs_again_when_the_backend_asks_and_stops_when_it_no_longer_does() {
    let h = LoopHarness::start(vec![]);
    h.list(
        vec![service("web", &["172.30.0.10"])],
        vec![slice("web-1", "web", &["10.0.0.1"])],
    );
    advance(0.1).await;
    assert_eq!(calls(&h).len(), 1, "the first sync");
    // nothing asked, nothing changes: no call (the periodic run at 30 s is
    // idle)
    advance(40.0).await;
    assert_eq!(calls(&h).len(), 1, "no resync unless asked");

    // the backend asks for a resync within 3 s from its next sync on
    *h.recorder.resync.lock().unwrap() = Some(Duration::from_secs(3));
    h.apply_slice(slice("web-1", "web", &["10.0.0.2"]));
    advance(0.1).await;
    let after_change = calls(&h);
    assert_eq!(after_change.len(), 2, "the change");
    assert_eq!(after_change[1].changed_ports.len(), 1);
    advance(2.8).await;
    assert_eq!(calls(&h).len(), 2, "not before the interval asked for");
    advance(0.2).await;
    let resync = calls(&h);
    assert_eq!(resync.len(), 3, "a resync 3 s after the change's sync");
    assert!(!resync[2].full, "a partial sync");
    assert!(resync[2].changed_ports.is_empty(), "naming no port");
    assert_eq!(
        resync[2].view, after_change[1].view,
        "on the last synced view"
    );
    advance(3.0).await;
    assert_eq!(
        calls(&h).len(),
        4,
        "asked again after the resync: again 3 s later"
    );

    // the backend no longer asks: the resync already scheduled is the last
    *h.recorder.resync.lock().unwrap() = None;
    advance(3.0).await;
    assert_eq!(calls(&h).len(), 5);
    advance(60.0).await;
    assert_eq!(calls(&h).len(), 5, "no more resyncs");
    assert!(calls(&h).iter().all(|c| c.ok));
    h.stop().await;
}
