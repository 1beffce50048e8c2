//! Progress of long start-ups at info level: the initial lists while they
//! arrive, and syncs that take longer than [`PROGRESS_INTERVAL`] (a cold
//! start with many Services), with the service ports programmed so far.

use std::future::Future;
use std::time::Duration;

use crate::backend::SyncProgress;
use crate::config::ProxyMode;
use crate::error::ObjectKind;
use crate::model::IpFamily;

/// How often a long start-up step reports its progress.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// What [`with_progress`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Still running after `elapsed`, `programmed` ports so far.
    Running {
        programmed: usize,
        elapsed: Duration,
    },
    /// A sync that reported `Running` at least once ended.
    Finished {
        programmed: usize,
        elapsed: Duration,
    },
}

/// Runs `work`, calling `report` every [`PROGRESS_INTERVAL`] while it runs
/// with the service ports `progress` counted so far, and once more when a
/// sync that took that long ends. Short syncs report nothing.
pub(crate) async fn with_progress<T>(
    progress: &SyncProgress,
    work: impl Future<Output = T>,
    mut report: impl FnMut(Tick),
) -> T {
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(started + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    let mut work = std::pin::pin!(work);
    let mut reported = false;
    loop {
        tokio::select! {
            output = &mut work => {
                if reported {
                    report(Tick::Finished { programmed: progress.programmed(), elapsed: started.elapsed() });
                }
                return output;
            }
            _ = ticker.tick() => {
                reported = true;
                report(Tick::Running { programmed: progress.programmed(), elapsed: started.elapsed() });
            }
        }
    }
}

/// Logs `tick` of a sync of `total` service ports of `family` at info.
pub(crate) fn log_sync_progress(family: IpFamily, mode: ProxyMode, total: usize, tick: Tick) {
    match tick {
        Tick::Running {
            programmed,
            elapsed,
        } => {
            tracing::info!(%family, %mode, programmed, total, ?elapsed, "sync in progress: service ports programmed so far, of the total")
        }
        Tick::Finished {
            programmed,
            elapsed,
        } => {
            tracing::info!(%family, %mode, programmed, total, ?elapsed, "sync finished: service ports programmed, of the total")
        }
    }
}

/// Logs at info which initial lists are still arriving, with the objects
/// of each received so far.
pub(crate) fn report_listing_progress(listing: &[(ObjectKind, usize)], elapsed: Duration) {
    let received: Vec<String> = listing
        .iter()
        .map(|(kind, count)| format!("{kind}: {count}"))
        .collect();
    tracing::info!(received = %received.join(", "), ?elapsed, "still waiting for the initial lists of the sources (objects received so far)");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_sync_reports_the_ports_programmed_so_far_until_it_ends() {
        let progress = Arc::new(SyncProgress::default());
        let work = {
            let progress = progress.clone();
            async move {
                tokio::time::sleep(secs(7)).await;
                progress.add(40);
                tokio::time::sleep(secs(5)).await;
                progress.add(60);
                "done"
            }
        };
        let mut ticks = Vec::new();
        let output = with_progress(&progress, work, |tick| ticks.push(tick)).await;
        assert_eq!(output, "done");
        assert_eq!(
            ticks,
            [
                Tick::Running {
                    programmed: 0,
                    elapsed: secs(5)
                },
                Tick::Running {
                    programmed: 40,
                    elapsed: secs(10)
                },
                Tick::Finished {
                    programmed: 100,
                    elapsed: secs(12)
                },
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_sync_reports_nothing() {
        let progress = SyncProgress::default();
        let mut ticks = Vec::new();
        let work = async {
            tokio::time::sleep(secs(4)).await;
            progress.add(3);
        };
        with_progress(&progress, work, |tick| ticks.push(tick)).await;
        assert_eq!(ticks, []);
    }
}
