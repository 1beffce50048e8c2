//! [`OwnWrites`]: the processes this proxy spawned, so that the nf_tables
//! watcher can tell our own commits from someone else's.
//!
//! Every nf_tables commit is announced with the pid of the committing
//! process (`NFTA_GEN_PROC_PID`). Our commits are made by child processes
//! (`nft`, `iptables-restore`): the executors call [`record_child`] right
//! after spawning one, and the runtime runs each backend call inside
//! [`OwnWrites::scope`], so the pids land in that runtime's set. The set is
//! task-local, not process-global: two runtimes in one process keep their
//! own, and a child spawned outside any scope is simply not recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// How many recent child pids are remembered: far more than one sync
/// spawns, far fewer than the kernel hands out before reusing a pid.
const REMEMBERED: usize = 4096;

tokio::task_local! {
    static CURRENT: OwnWrites;
}

#[derive(Debug, Default)]
struct State {
    pids: VecDeque<u32>,
    spawned: u64,
}

/// The pids of the child processes spawned inside [`OwnWrites::scope`]
/// (the most recent few thousand). Cheap to clone: clones share the set.
#[derive(Debug, Clone, Default)]
pub struct OwnWrites {
    state: Arc<Mutex<State>>,
}

impl OwnWrites {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `future` with this set as the one [`record_child`] records into.
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        CURRENT.scope(self.clone(), future).await
    }

    /// Records `pid` as one of ours.
    pub fn record(&self, pid: u32) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.pids.len() == REMEMBERED {
            state.pids.pop_front();
        }
        state.pids.push_back(pid);
        state.spawned += 1;
    }

    /// Whether `pid` is one of the recorded children.
    pub fn contains(&self, pid: u32) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.pids.contains(&pid)
    }

    /// How many children were ever recorded (a counter: a change means
    /// "we wrote since").
    pub fn spawned(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spawned
    }
}

/// Records a just-spawned child (`tokio::process::Child::id`) in the
/// [`OwnWrites`] of the current scope, if any. The hook every executor that
/// may commit nf_tables changes calls after `spawn`.
pub fn record_child(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = CURRENT.try_with(|own| own.record(pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_spawned_in_a_scope_are_recorded_there_only() {
        let own = OwnWrites::new();
        let other = OwnWrites::new();
        own.scope(async { record_child(Some(10)) }).await;
        other.scope(async { record_child(Some(11)) }).await;
        record_child(Some(12)); // outside any scope: nowhere
        record_child(None);
        assert!(own.contains(10) && !own.contains(11) && !own.contains(12));
        assert!(other.contains(11) && !other.contains(10));
        assert_eq!(own.spawned(), 1);
    }

    #[test]
    fn only_the_most_recent_pids_are_kept() {
        let own = OwnWrites::new();
        for pid in 0..(REMEMBERED as u32 + 5) {
            own.record(pid);
        }
        assert!(!own.contains(4));
        assert!(own.contains(5) && own.contains(REMEMBERED as u32 + 4));
        assert_eq!(own.spawned(), REMEMBERED as u64 + 5);
    }
}
