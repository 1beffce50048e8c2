//! Shared strings for the values many endpoints repeat (node names, zones,
//! hint names): one allocation per distinct value instead of one per
//! endpoint.

use std::collections::HashSet;
use std::sync::Arc;

/// Smallest size at which unused strings are pruned.
const MIN_PRUNE: usize = 1024;

/// Interns strings; forgets the ones no longer used when it has grown.
#[derive(Debug, Clone)]
pub(crate) struct Interner {
    strings: HashSet<Arc<str>>,
    prune_at: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            strings: HashSet::new(),
            prune_at: MIN_PRUNE,
        }
    }
}

impl Interner {
    /// The shared copy of `s`.
    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        if self.strings.len() >= self.prune_at {
            // Only the interner holds these: no object uses them any more.
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.prune_at = (self.strings.len() * 2).max(MIN_PRUNE);
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }
}
