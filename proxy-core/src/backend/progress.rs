//! [`SyncProgress`]: how far a sync in progress got, for the progress log.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The service ports a sync in progress has programmed so far.
///
/// The runtime logs it at info every few seconds while a sync runs long (a
/// cold start with many Services). A backend that programs one sync in
/// several steps (a cold start in chunks) calls [`add`](Self::add) after
/// each step, through [`BackendContext::progress`](super::BackendContext::progress);
/// one that programs a sync in one step need not call it: the runtime
/// counts the ports of every sync the backend accepted.
#[derive(Debug, Default)]
pub struct SyncProgress {
    programmed: AtomicUsize,
}

impl SyncProgress {
    /// `ports` more service ports were programmed.
    pub fn add(&self, ports: usize) {
        self.programmed.fetch_add(ports, Ordering::Relaxed);
    }

    /// Service ports programmed so far.
    pub fn programmed(&self) -> usize {
        self.programmed.load(Ordering::Relaxed)
    }

    /// Sets the count (the runtime, at the start of a sync and after each
    /// backend call).
    pub fn set(&self, ports: usize) {
        self.programmed.store(ports, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_is_added_from_where_it_was_set() {
        let progress = SyncProgress::default();
        progress.add(3);
        progress.add(4);
        assert_eq!(progress.programmed(), 7);
        progress.set(2);
        progress.add(1);
        assert_eq!(progress.programmed(), 3);
    }
}
