//! Our model of what is committed in the kernel: the objects of every
//! service port, shared set/map elements with their owners, and chains
//! waiting to be deleted. Partial syncs diff against it instead of listing
//! the kernel's table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use proxy_core::ServicePortName;

use crate::ir::{ElemKey, ElemValue, Element, Rule};
use crate::render::PortObjects;

/// The value an owner wants for an element.
type Wanted = (Option<ElemValue>, Option<String>);

/// An element's owners and what each wants, sorted by owner (the first
/// wins). Almost every element has one owner: a vector of exactly that
/// size (80 bytes) instead of a B-tree node (~800 bytes) per element.
type Holders = Vec<(Arc<ServicePortName>, Wanted)>;

/// An element's identity: its set (the name shared by all of the set's
/// elements) and key.
type Key = (Arc<str>, ElemKey);

/// Elements of the shared sets and maps with the ports that want them.
/// Several ports may want one element (a multi-port service's ClusterIP in
/// `cluster-ips`, an endpoint IP in `hairpin-endpoints`); when two want
/// different verdicts for one key (an invalid, conflicting topology) the
/// first port by name wins, so the result does not depend on history.
#[derive(Debug, Clone, Default)]
pub struct ElementStore {
    entries: HashMap<Key, Holders>,
    /// Set names, one allocation each for all elements.
    set_names: HashSet<Arc<str>>,
}

/// An element's state before a batch of changes, to diff and to roll back.
type Saved = HashMap<Key, Option<Holders>>;

fn effective(holders: Option<&Holders>) -> Option<&Wanted> {
    holders.and_then(|h| h.first()).map(|(_, w)| w)
}

/// Changes to the element store since [`ElementStore::begin`].
#[derive(Debug, Default)]
pub struct ElementBatch {
    saved: Saved,
}

impl ElementStore {
    /// Number of distinct elements.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Starts a batch.
    pub fn begin(&self) -> ElementBatch {
        ElementBatch::default()
    }

    fn key(&mut self, e: &Element) -> Key {
        let set = match self.set_names.get(e.set.as_str()) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(e.set.as_str());
                self.set_names.insert(name.clone());
                name
            }
        };
        (set, e.key.clone())
    }

    fn save(&self, batch: &mut ElementBatch, key: &Key) {
        if !batch.saved.contains_key(key) {
            batch
                .saved
                .insert(key.clone(), self.entries.get(key).cloned());
        }
    }

    /// `owner` no longer wants `elements`.
    pub fn release(
        &mut self,
        batch: &mut ElementBatch,
        owner: &Arc<ServicePortName>,
        elements: &[Element],
    ) {
        for e in elements {
            let key = self.key(e);
            self.save(batch, &key);
            if let Some(holders) = self.entries.get_mut(&key) {
                if let Ok(at) = holders.binary_search_by(|(o, _)| o.cmp(owner)) {
                    holders.remove(at);
                }
                if holders.is_empty() {
                    self.entries.remove(&key);
                }
            }
        }
    }

    /// `owner` wants `elements`.
    pub fn acquire(
        &mut self,
        batch: &mut ElementBatch,
        owner: &Arc<ServicePortName>,
        elements: &[Element],
    ) {
        for e in elements {
            let key = self.key(e);
            self.save(batch, &key);
            let wanted = (e.value.clone(), e.comment.clone());
            let holders = self.entries.entry(key).or_default();
            match holders.binary_search_by(|(o, _)| o.cmp(owner)) {
                Ok(at) => holders[at].1 = wanted,
                Err(at) => {
                    holders.reserve_exact(1);
                    holders.insert(at, (owner.clone(), wanted));
                }
            }
        }
    }

    /// The element deletions and additions that take the kernel from the
    /// state before `batch` to the current one (deletions first).
    pub fn diff(&self, batch: &ElementBatch) -> (Vec<Element>, Vec<Element>) {
        let mut deletes = Vec::new();
        let mut adds = Vec::new();
        let mut keys: Vec<&Key> = batch.saved.keys().collect();
        keys.sort();
        for key in keys {
            let before = batch.saved.get(key).and_then(|h| effective(h.as_ref()));
            let after = effective(self.entries.get(key));
            if before == after {
                continue;
            }
            let element = |w: &Wanted| Element {
                set: key.0.to_string(),
                key: key.1.clone(),
                value: w.0.clone(),
                comment: w.1.clone(),
            };
            if let Some(b) = before {
                deletes.push(element(b));
            }
            if let Some(a) = after {
                adds.push(element(a));
            }
        }
        (deletes, adds)
    }

    /// Undoes `batch` (the transaction failed).
    pub fn rollback(&mut self, batch: ElementBatch) {
        for (key, before) in batch.saved {
            match before {
                Some(h) => {
                    self.entries.insert(key, h);
                }
                None => {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

/// What we believe is in the kernel.
#[derive(Debug, Default)]
pub struct Committed {
    /// Objects of every programmed service port.
    pub ports: HashMap<Arc<ServicePortName>, Arc<PortObjects>>,
    /// Shared elements.
    pub elements: ElementStore,
    /// Flushed service chains and when they became stale; deleted at least
    /// a second later (kernels before 6.2 release a map element's chain
    /// reference lazily, so an immediate delete fails with EBUSY).
    pub stale_chains: BTreeMap<String, Instant>,
    /// Chains shared by many ports (`load-balance-N`), with their users.
    pub shared_chains: BTreeMap<String, SharedChain>,
}

/// A chain several service ports use (`load-balance-N`): written when its
/// first user appears, flushed (then deleted like a stale service chain)
/// when its last user goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedChain {
    /// Its rules (a function of the chain's name and the configuration).
    pub rules: Vec<Rule>,
    /// The ports that use it.
    pub users: BTreeSet<Arc<ServicePortName>>,
}
