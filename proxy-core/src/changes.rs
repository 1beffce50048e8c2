//! Change tracking: which service ports may differ since the last
//! *successful* sync.
//!
//! [`PendingChanges`] collects the services touched by the topology. At sync
//! time the runtime brings the last synced [`NodeView`] up to date for exactly
//! those services and asks [`ChangeSet::between`] which ports really differ,
//! so a no-op update collapses to nothing. The pending set is cleared only
//! after the backend reports success; a failed sync keeps it, so the next
//! attempt can still be partial. A sync that programs everything but
//! service ports the dataplane refuses clears it as well: the runtime holds
//! those ports back and retries them itself (`runtime::isolation`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::model::{ServiceKey, ServicePortName};
use crate::view::NodeView;

/// The service ports that may differ between the dataplane and the view a
/// backend is given. [`ChangeSet::is_full`] means: trust nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    full: bool,
    ports: BTreeSet<ServicePortName>,
}

impl ChangeSet {
    /// A full change set: the backend must rewrite everything.
    pub fn full() -> Self {
        ChangeSet {
            full: true,
            ports: BTreeSet::new(),
        }
    }

    /// A partial change set naming `ports`.
    pub fn partial(ports: impl IntoIterator<Item = ServicePortName>) -> Self {
        ChangeSet {
            full: false,
            ports: ports.into_iter().collect(),
        }
    }

    /// The ports of `services` that differ between `old` and `new`
    /// (added, removed or changed).
    pub fn between<'a>(
        old: &NodeView,
        new: &NodeView,
        services: impl IntoIterator<Item = &'a ServiceKey>,
    ) -> Self {
        let mut ports = BTreeSet::new();
        for key in services {
            for (name, view) in old.service_ports(key) {
                if new.get(name) != Some(view) {
                    ports.insert(name.clone());
                }
            }
            for (name, view) in new.service_ports(key) {
                if old.get(name) != Some(view) {
                    ports.insert(name.clone());
                }
            }
        }
        ChangeSet { full: false, ports }
    }

    /// Every port that differs between `old` and `new` (added, removed or
    /// changed), as a partial set: what a full sync from `old` to `new`
    /// really changes. Walks both views once, in name order.
    pub fn all_between(old: &NodeView, new: &NodeView) -> Self {
        let mut ports = BTreeSet::new();
        let mut a = old.iter().peekable();
        let mut b = new.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((name, _)), None) => {
                    ports.insert((*name).clone());
                    a.next();
                }
                (None, Some((name, _))) => {
                    ports.insert((*name).clone());
                    b.next();
                }
                (Some((x, xv)), Some((y, yv))) => match x.cmp(y) {
                    std::cmp::Ordering::Less => {
                        ports.insert((*x).clone());
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        ports.insert((*y).clone());
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if xv != yv {
                            ports.insert((*x).clone());
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        ChangeSet { full: false, ports }
    }

    /// Whether the backend must distrust its state and rewrite everything.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Whether nothing changed (and the set is not full).
    pub fn is_empty(&self) -> bool {
        !self.full && self.ports.is_empty()
    }

    /// Whether `port` may have changed (always true for a full set).
    pub fn contains(&self, port: &ServicePortName) -> bool {
        self.full || self.ports.contains(port)
    }

    /// The changed ports of a partial set (empty for a full set).
    pub fn ports(&self) -> impl ExactSizeIterator<Item = &ServicePortName> {
        self.ports.iter()
    }

    /// Number of changed ports named (0 for a full set).
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// The ports a sync must visit: the changed ones; for a full set, every
    /// port of `view` plus every port the backend still holds (`held`), so
    /// that ports gone from the view are removed too.
    pub fn ports_to_visit<'a>(
        &self,
        view: &NodeView,
        held: impl IntoIterator<Item = &'a ServicePortName>,
    ) -> BTreeSet<ServicePortName> {
        if self.full {
            let mut ports: BTreeSet<ServicePortName> =
                view.iter().map(|(name, _)| name.clone()).collect();
            ports.extend(held.into_iter().cloned());
            ports
        } else {
            self.ports.clone()
        }
    }
}

/// Services touched since the last successful sync.
#[derive(Debug, Clone, Default)]
pub struct PendingChanges {
    full: bool,
    services: HashSet<ServiceKey>,
}

impl PendingChanges {
    /// Nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `key` (its Service or one of its slices) changed.
    pub fn touch(&mut self, key: ServiceKey) {
        self.services.insert(key);
    }

    /// Notes every key in `keys`.
    pub fn touch_all(&mut self, keys: impl IntoIterator<Item = ServiceKey>) {
        self.services.extend(keys);
    }

    /// Requests a full sync (start-up, node change, failed sync, periodic).
    pub fn require_full(&mut self) {
        self.full = true;
    }

    /// Whether a full sync is requested.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Whether anything is pending.
    pub fn is_empty(&self) -> bool {
        !self.full && self.services.is_empty()
    }

    /// The touched services.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.iter()
    }

    /// Number of touched services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Forgets everything: call only after a successful sync.
    pub fn clear(&mut self) {
        self.full = false;
        self.services.clear();
    }

    /// Brings `synced` (the view of the last successful sync) up to date with
    /// `topology` and returns the new view with the change set to give the
    /// backend. Nothing is cleared: call [`PendingChanges::clear`] once the
    /// backend succeeded, and keep the returned view as the new `synced`.
    ///
    /// The cost is that of recomputing the touched services, plus a clone
    /// of `synced` that copies one pointer per chunk of 64 ports.
    pub fn prepare(
        &self,
        topology: &crate::ServiceTopology,
        synced: &NodeView,
        node: &Arc<crate::NodeInfo>,
    ) -> (NodeView, ChangeSet) {
        if self.full || (!Arc::ptr_eq(synced.node(), node) && synced.node() != node) {
            return (
                NodeView::build(topology, node.clone(), synced.family()),
                ChangeSet::full(),
            );
        }
        let mut view = synced.clone();
        for key in &self.services {
            view.update_service(topology, key);
        }
        let changes = ChangeSet::between(synced, &view, &self.services);
        (view, changes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::ChangeSet;
    use crate::model::{IpFamily, NodeInfo, Protocol, ServicePortName};
    use crate::view::NodeView;

    #[test]
    fn a_full_set_visits_every_held_port_a_partial_one_only_the_changed() {
        let view = NodeView::empty(IpFamily::V4, Arc::new(NodeInfo::named("n")));
        let gone = ServicePortName::new("ns", "gone", "http", Protocol::Tcp);
        let changed = ServicePortName::new("ns", "web", "http", Protocol::Tcp);
        let full = ChangeSet::full().ports_to_visit(&view, [&gone]);
        assert!(full.len() == 1 && full.contains(&gone), "{full:?}");
        let partial = ChangeSet::partial([changed.clone()]).ports_to_visit(&view, [&gone]);
        assert_eq!(partial.into_iter().collect::<Vec<_>>(), [changed]);
    }
}
