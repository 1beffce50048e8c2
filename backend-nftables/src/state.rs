//! Our model of what is committed in the kernel: the view every service
//! port was rendered from, who owns which shared set/map element, and
//! chains waiting to be deleted. Partial syncs diff against it instead of
//! listing the kernel's table.
//!
//! The model is kept small (it lives as long as the proxy, one record per
//! endpoint): a port's objects are not kept but rendered again from its
//! view when a sync needs them (rendering is a pure function of the view
//! and the backend's context, and the view is the one the node view
//! already holds, shared); and the element store keeps for each element
//! only a 64-bit fingerprint of its set and key with the ports that want
//! it, the element itself being in those ports' objects.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

use proxy_core::{ServicePortName, ServicePortView};

use crate::ir::{ElemKey, Rule};

/// A hasher for keys that are already uniform hashes (fingerprints): the
/// key is the hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// An element's fingerprint: a hash of its set's name and its key.
pub type Fingerprint = u64;

/// The ports that want elements of one fingerprint, sorted by name (the
/// first that wants an element decides its value). Almost every element
/// has one owner, held inline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owners {
    One(Arc<ServicePortName>),
    // A thin pointer: the enum is 16 bytes, not 24 with a `Vec` inline
    // (one per element).
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Arc<ServicePortName>>>),
}

impl Owners {
    fn as_slice(&self) -> &[Arc<ServicePortName>] {
        match self {
            Owners::One(o) => std::slice::from_ref(o),
            Owners::Many(v) => v,
        }
    }

    /// Adds `owner` (kept sorted, once).
    fn insert(&mut self, owner: &Arc<ServicePortName>) {
        match self {
            Owners::One(o) => {
                if o != owner {
                    let mut both = vec![o.clone(), owner.clone()];
                    both.sort();
                    *self = Owners::Many(Box::new(both));
                }
            }
            Owners::Many(v) => {
                if let Err(at) = v.binary_search(owner) {
                    v.insert(at, owner.clone());
                }
            }
        }
    }

    /// Removes `owner`; false when none is left.
    fn remove(&mut self, owner: &Arc<ServicePortName>) -> bool {
        match self {
            Owners::One(o) => o != owner,
            Owners::Many(v) => {
                if let Ok(at) = v.binary_search(owner) {
                    v.remove(at);
                }
                match v.len() {
                    0 => false,
                    1 => {
                        *self = Owners::One(v[0].clone());
                        true
                    }
                    _ => true,
                }
            }
        }
    }
}

/// Elements of the shared sets and maps with the ports that want them.
/// Several ports may want one element (a multi-port service's ClusterIP in
/// `cluster-ips`, an endpoint IP in `hairpin-endpoints`); when two want
/// different values for one key (an invalid, conflicting topology) the
/// first port by name wins, so the result does not depend on history.
///
/// Elements are known by fingerprint: a port is an owner of a fingerprint
/// while its objects hold an element of that fingerprint. Two elements
/// with one fingerprint (a 64-bit hash collision, with random keys per
/// store) share their owner list, which stays correct: whoever reads an
/// element's owners checks that the owner's objects hold that element.
#[derive(Debug, Clone, Default)]
pub struct ElementStore {
    hasher: RandomState,
    /// Bits of the hash kept in fingerprints: all but in tests of
    /// collisions ([`ElementStore::with_fingerprint_mask`]).
    mask: Option<Fingerprint>,
    owners: HashMap<Fingerprint, Owners, BuildHasherDefault<FingerprintHasher>>,
}

/// Fingerprints' owners before a batch of changes, to diff and to roll back.
#[derive(Debug, Default)]
pub struct ElementBatch {
    saved: HashMap<Fingerprint, Option<Owners>, BuildHasherDefault<FingerprintHasher>>,
}

impl ElementStore {
    /// Number of distinct elements (fingerprints).
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Starts a batch.
    pub fn begin(&self) -> ElementBatch {
        ElementBatch::default()
    }

    /// An empty store whose fingerprints keep only the bits of `mask`
    /// (0: every element collides with every other), to test collisions.
    pub fn with_fingerprint_mask(mask: Fingerprint) -> Self {
        ElementStore {
            mask: Some(mask),
            ..ElementStore::default()
        }
    }

    /// The fingerprint of the element `key` of `set`.
    pub fn fingerprint(&self, set: &str, key: &ElemKey) -> Fingerprint {
        let fp = self.hasher.hash_one((set, key));
        self.mask.map_or(fp, |m| fp & m)
    }

    fn save(&self, batch: &mut ElementBatch, fp: Fingerprint) {
        batch
            .saved
            .entry(fp)
            .or_insert_with(|| self.owners.get(&fp).cloned());
    }

    /// `owner` holds no element of fingerprint `fp` any more.
    pub fn release(
        &mut self,
        batch: &mut ElementBatch,
        owner: &Arc<ServicePortName>,
        fp: Fingerprint,
    ) {
        self.save(batch, fp);
        if let Entry::Occupied(mut e) = self.owners.entry(fp)
            && !e.get_mut().remove(owner)
        {
            e.remove();
        }
    }

    /// `owner` holds an element of fingerprint `fp`.
    pub fn acquire(
        &mut self,
        batch: &mut ElementBatch,
        owner: &Arc<ServicePortName>,
        fp: Fingerprint,
    ) {
        self.save(batch, fp);
        match self.owners.entry(fp) {
            Entry::Occupied(mut e) => e.get_mut().insert(owner),
            Entry::Vacant(e) => {
                e.insert(Owners::One(owner.clone()));
            }
        }
    }

    /// The owners of `fp` now, sorted by name.
    pub fn owners(&self, fp: Fingerprint) -> &[Arc<ServicePortName>] {
        self.owners.get(&fp).map_or(&[], Owners::as_slice)
    }

    /// The owners of `fp` before `batch`, sorted by name.
    pub fn owners_before<'a>(
        &'a self,
        batch: &'a ElementBatch,
        fp: Fingerprint,
    ) -> &'a [Arc<ServicePortName>] {
        match batch.saved.get(&fp) {
            Some(before) => before.as_ref().map_or(&[], Owners::as_slice),
            None => self.owners(fp),
        }
    }

    /// Undoes `batch` (the transaction failed).
    pub fn rollback(&mut self, batch: ElementBatch) {
        for (fp, before) in batch.saved {
            match before {
                Some(o) => {
                    self.owners.insert(fp, o);
                }
                None => {
                    self.owners.remove(&fp);
                }
            }
        }
    }
}

/// What we believe is in the kernel.
#[derive(Debug, Default)]
pub struct Committed {
    /// Every programmed service port, with the view its objects were
    /// rendered from (the node view's own, shared).
    pub ports: HashMap<Arc<ServicePortName>, Arc<ServicePortView>>,
    /// Number of the ports' own chains.
    pub port_chains: usize,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_element_costs_a_fingerprint_and_a_pointer() {
        assert_eq!(std::mem::size_of::<(Fingerprint, Owners)>(), 24);
    }
    use proxy_core::Protocol;

    fn port(name: &str) -> Arc<ServicePortName> {
        Arc::new(ServicePortName::new("ns", name, "p", Protocol::Tcp))
    }

    #[test]
    fn owners_stay_sorted_and_a_rollback_restores_them() {
        let mut store = ElementStore::default();
        let (a, b, c) = (port("a"), port("b"), port("c"));
        let fp = store.fingerprint(
            "hairpin-endpoints",
            &ElemKey::Addr("10.0.0.1".parse().unwrap()),
        );
        let mut batch = store.begin();
        for o in [&c, &a, &b, &a] {
            store.acquire(&mut batch, o, fp);
        }
        assert_eq!(store.owners(fp), [a.clone(), b.clone(), c.clone()]);
        assert!(store.owners_before(&batch, fp).is_empty());
        store.release(&mut batch, &a, fp);
        store.release(&mut batch, &c, fp);
        assert_eq!(store.owners(fp), std::slice::from_ref(&b));
        assert_eq!(store.owners.get(&fp), Some(&Owners::One(b.clone())));
        store.release(&mut batch, &b, fp);
        assert_eq!(store.len(), 0);
        store.rollback(batch);
        assert_eq!(store.len(), 0, "nothing was there before the batch");

        let mut batch = store.begin();
        store.acquire(&mut batch, &b, fp);
        let mut second = store.begin();
        store.acquire(&mut second, &a, fp);
        store.release(&mut second, &b, fp);
        assert_eq!(store.owners(fp), std::slice::from_ref(&a));
        assert_eq!(store.owners_before(&second, fp), std::slice::from_ref(&b));
        store.rollback(second);
        assert_eq!(store.owners(fp), [b]);
        drop(batch);
    }

    #[test]
    fn fingerprints_tell_sets_and_keys_apart() {
        let store = ElementStore::default();
        let k1 = ElemKey::Addr("10.0.0.1".parse().unwrap());
        let k2 = ElemKey::Addr("10.0.0.2".parse().unwrap());
        assert_eq!(store.fingerprint("a", &k1), store.fingerprint("a", &k1));
        assert_ne!(store.fingerprint("a", &k1), store.fingerprint("a", &k2));
        assert_ne!(store.fingerprint("a", &k1), store.fingerprint("b", &k1));
    }
}
