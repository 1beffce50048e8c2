//! Turning "these ports changed" into a transaction against our model of
//! the kernel. Pure: nothing here runs `nft`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::{ServicePortName, ServicePortView};

use crate::ir::{ChainDef, Command, ElemKey, Element, Transaction};
use crate::render::{PortObjects, Skeleton};
use crate::state::{Committed, ElementBatch, Fingerprint, SharedChain};

/// One service port whose objects may change.
#[derive(Debug, Clone)]
pub struct PortChange {
    /// The port.
    pub name: Arc<ServicePortName>,
    /// What is committed (None: nothing), rendered from the committed view.
    pub old: Option<Arc<PortObjects>>,
    /// What the view wants (None: remove).
    pub new: Option<Arc<PortObjects>>,
    /// The view `new` was rendered from (recorded when the plan commits).
    pub view: Option<Arc<ServicePortView>>,
}

/// Renders a port's objects from its view (the backend's `render_port`).
pub type Render<'a> = &'a dyn Fn(&ServicePortView) -> PortObjects;

/// A planned transaction plus what to record once it succeeds.
#[derive(Debug)]
pub struct Plan {
    /// The transaction.
    pub tx: Transaction,
    /// Element store changes (rolled back if the transaction fails).
    pub batch: ElementBatch,
    /// Ports written.
    pub changes: Vec<PortChange>,
    /// Chains that became stale.
    pub newly_stale: Vec<String>,
    /// Stale chains deleted by this transaction.
    pub deleted_stale: Vec<String>,
    /// Stale chains that are live again.
    pub revived: Vec<String>,
    /// Shared chains whose users changed, as they are after the plan.
    pub shared: BTreeMap<String, SharedChain>,
    /// Ports whose view changed but not their objects: the new view is
    /// recorded (the node view's, so the old one is not kept alive).
    pub views: Vec<(Arc<ServicePortName>, Arc<ServicePortView>)>,
}

/// The sorted, deduplicated fingerprints of `objects`' elements.
fn fingerprints(committed: &Committed, objects: Option<&Arc<PortObjects>>) -> Vec<Fingerprint> {
    let mut fps: Vec<Fingerprint> = objects
        .iter()
        .flat_map(|o| o.elements.iter())
        .map(|e| committed.elements.fingerprint(&e.set, &e.key))
        .collect();
    fps.sort_unstable();
    fps.dedup();
    fps
}

/// Updates the element store for `changes` (owners of fingerprints only
/// the old or only the new objects hold) and returns the element
/// deletions and additions that take the kernel from the state before to
/// the one after (deletions first). An element's value is that of its
/// first owner by name whose objects hold it: the changed ports' old or
/// new objects, the others' rendered from their committed view.
fn plan_elements(
    committed: &mut Committed,
    changes: &[PortChange],
    render: Render<'_>,
) -> (ElementBatch, Vec<Element>, Vec<Element>) {
    let mut batch = committed.elements.begin();
    for c in changes {
        let old = fingerprints(committed, c.old.as_ref());
        let new = fingerprints(committed, c.new.as_ref());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            match (old.get(i), new.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    // Already ours, unless `committed` is a fresh model (a
                    // full rewrite): then it must become ours. (Checked
                    // first: an acquisition saves the owners for rollback,
                    // a copy of every owner of a widely shared element.)
                    if committed
                        .elements
                        .owners(*b)
                        .binary_search(&c.name)
                        .is_err()
                    {
                        committed.elements.acquire(&mut batch, &c.name, *b);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(a), b) if b.is_none_or(|b| a < b) => {
                    committed.elements.release(&mut batch, &c.name, *a);
                    i += 1;
                }
                (_, Some(b)) => {
                    committed.elements.acquire(&mut batch, &c.name, *b);
                    j += 1;
                }
                _ => break,
            }
        }
    }

    // Every element whose value may have changed is one of a changed port.
    let mut touched: Vec<(&str, &ElemKey)> = changes
        .iter()
        .flat_map(|c| c.old.iter().chain(c.new.iter()))
        .flat_map(|o| o.elements.iter())
        .map(|e| (e.set.as_str(), &e.key))
        .collect();
    touched.sort_unstable();
    touched.dedup();

    // Owners are found by the address of their name first (the store holds
    // the ports' own `Arc`s: no string hashing), by name otherwise.
    let by_address: HashMap<*const ServicePortName, &PortChange> =
        changes.iter().map(|c| (Arc::as_ptr(&c.name), c)).collect();
    let changed: HashMap<&ServicePortName, &PortChange> =
        changes.iter().map(|c| (&*c.name, c)).collect();
    // Unchanged co-owners' objects, rendered once.
    let mut others: HashMap<Arc<ServicePortName>, Option<PortObjects>> = HashMap::new();
    let committed = &*committed;
    let mut value = |owners: &[Arc<ServicePortName>], after: bool, set: &str, key: &ElemKey| {
        for owner in owners {
            let change = by_address
                .get(&Arc::as_ptr(owner))
                .or_else(|| changed.get(&**owner));
            let element = match change {
                Some(c) => if after { &c.new } else { &c.old }
                    .as_ref()
                    .and_then(|o| o.element(set, key))
                    .cloned(),
                None => others
                    .entry(owner.clone())
                    .or_insert_with(|| committed.ports.get(owner).map(|v| render(v)))
                    .as_ref()
                    .and_then(|o| o.element(set, key))
                    .cloned(),
            };
            if element.is_some() {
                return element;
            }
        }
        None
    };
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    for (set, key) in touched {
        let fp = committed.elements.fingerprint(set, key);
        let before = value(
            committed.elements.owners_before(&batch, fp),
            false,
            set,
            key,
        );
        let after = value(committed.elements.owners(fp), true, set, key);
        let same = match (&before, &after) {
            (Some(b), Some(a)) => b.value == a.value && b.comment == a.comment,
            (None, None) => true,
            _ => false,
        };
        if same {
            continue;
        }
        deletes.extend(before);
        adds.extend(after);
    }
    (batch, deletes, adds)
}

/// Appends the skeleton: table, sets and maps, fixed chains (flushed and
/// rewritten) and fixed elements. With `flush_sets`, every non-affinity
/// set and map is emptied first (full sync: trust nothing).
pub fn push_skeleton(tx: &mut Transaction, skeleton: &Skeleton, flush_sets: bool) {
    tx.push(Command::AddTable);
    for s in &skeleton.sets {
        tx.push(Command::AddSet(s.clone()));
        if flush_sets {
            tx.push(Command::FlushSet {
                name: s.name.clone(),
                map: s.is_map(),
            });
        }
    }
    for (def, _) in &skeleton.chains {
        tx.push(Command::AddChain(def.clone()));
        tx.push(Command::FlushChain(def.name.clone()));
    }
    for (def, rules) in &skeleton.chains {
        for r in rules {
            tx.push(Command::AddRule {
                chain: def.name.clone(),
                rule: r.clone(),
            });
        }
    }
    for e in &skeleton.elements {
        tx.push(Command::AddElement(e.clone()));
    }
}

/// How [`plan_ports`] treats unchanged objects and stale chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanMode {
    /// Write only what differs; leave stale chains (cold-start chunks).
    KeepStale,
    /// Rewrite every chain of every port (full sync); delete due stale chains.
    Rewrite,
}

/// Plans writing `changes` against `committed`, appending to `tx`.
/// Port objects that did not change are skipped unless `mode` is
/// [`PlanMode::Rewrite`]; stale chains older than `stale_delay` are deleted
/// unless it is [`PlanMode::KeepStale`].
pub fn plan_ports(
    committed: &mut Committed,
    mut tx: Transaction,
    changes: Vec<PortChange>,
    now: Instant,
    stale_delay: Duration,
    mode: PlanMode,
    render: Render<'_>,
) -> Plan {
    let force = mode == PlanMode::Rewrite;
    let mut views = Vec::new();
    let changes: Vec<PortChange> = changes
        .into_iter()
        .filter(|c| match (&c.old, &c.new) {
            (Some(o), Some(n)) if !force && o == n => {
                let recorded = committed.ports.get(&c.name);
                if let Some(v) = &c.view
                    && !recorded.is_some_and(|r| Arc::ptr_eq(r, v))
                {
                    views.push((c.name.clone(), v.clone()));
                }
                false
            }
            (None, None) => false,
            _ => true,
        })
        .collect();
    let (batch, element_deletes, element_adds) = plan_elements(committed, &changes, render);

    // Shared chains: users after the plan, starting from the committed ones.
    let mut shared: BTreeMap<String, SharedChain> = BTreeMap::new();
    for c in &changes {
        for (objects, acquire) in [(&c.old, false), (&c.new, true)] {
            for (name, rules) in objects.iter().flat_map(|o| o.shared_chains.iter()) {
                let entry = shared.entry(name.clone()).or_insert_with(|| {
                    committed
                        .shared_chains
                        .get(name)
                        .cloned()
                        .unwrap_or_default()
                });
                if acquire {
                    entry.rules.clone_from(rules);
                    entry.users.insert(c.name.clone());
                } else {
                    entry.users.remove(&c.name);
                }
            }
        }
    }

    let mut live_chains: BTreeSet<&str> = BTreeSet::new();
    let mut rewrite: Vec<(&str, &[crate::ir::Rule])> = Vec::new();
    let mut gone_chains: Vec<String> = Vec::new();
    let mut gone_sets: Vec<String> = Vec::new();
    for c in &changes {
        let old_chains: HashMap<&str, &Vec<crate::ir::Rule>> = c
            .old
            .iter()
            .flat_map(|o| o.chains.iter().map(|(n, r)| (n.as_str(), r)))
            .collect();
        let old_sets: BTreeSet<&str> = c
            .old
            .iter()
            .flat_map(|o| o.affinity_sets.iter().map(|s| s.name.as_str()))
            .collect();
        let mut new_sets = BTreeSet::new();
        if let Some(n) = &c.new {
            for s in &n.affinity_sets {
                new_sets.insert(s.name.as_str());
                if force || !old_sets.contains(s.name.as_str()) {
                    tx.push(Command::AddSet(s.clone()));
                }
            }
            for (name, rules) in &n.chains {
                live_chains.insert(name);
                if force
                    || old_chains.get(name.as_str()) != Some(&rules)
                    || committed.stale_chains.contains_key(name)
                {
                    rewrite.push((name, rules));
                }
            }
        }
        for name in old_chains.keys() {
            if !c
                .new
                .iter()
                .any(|n| n.chains.iter().any(|(x, _)| x == name))
            {
                gone_chains.push((*name).to_string());
            }
        }
        gone_sets.extend(
            old_sets
                .iter()
                .filter(|s| !new_sets.contains(*s))
                .map(|s| (*s).to_string()),
        );
    }
    for (name, after) in &shared {
        let used_before = committed
            .shared_chains
            .get(name)
            .is_some_and(|s| !s.users.is_empty());
        if !after.users.is_empty() {
            live_chains.insert(name);
            if force || !used_before || committed.stale_chains.contains_key(name) {
                rewrite.push((name, &after.rules));
            }
        } else if used_before {
            gone_chains.push(name.clone());
        }
    }
    for (name, _) in &rewrite {
        tx.push(Command::AddChain(ChainDef::regular(*name)));
    }
    for (name, rules) in &rewrite {
        tx.push(Command::FlushChain((*name).to_string()));
        for r in *rules {
            tx.push(Command::AddRule {
                chain: (*name).to_string(),
                rule: r.clone(),
            });
        }
    }
    for e in element_deletes {
        tx.push(Command::DeleteElement(e));
    }
    for e in element_adds {
        tx.push(Command::AddElement(e));
    }
    gone_chains.retain(|c| !live_chains.contains(c.as_str()));
    for c in &gone_chains {
        tx.push(Command::FlushChain(c.clone()));
    }
    for s in &gone_sets {
        tx.push(Command::DeleteSet(s.clone()));
    }
    let revived: Vec<String> = committed
        .stale_chains
        .keys()
        .filter(|c| live_chains.contains(c.as_str()))
        .cloned()
        .collect();
    let mut deleted_stale = Vec::new();
    if mode != PlanMode::KeepStale {
        for (c, since) in &committed.stale_chains {
            if now.saturating_duration_since(*since) >= stale_delay
                && !live_chains.contains(c.as_str())
            {
                tx.push(Command::DeleteChain(c.clone()));
                deleted_stale.push(c.clone());
            }
        }
    }
    Plan {
        tx,
        batch,
        changes,
        newly_stale: gone_chains,
        deleted_stale,
        revived,
        shared,
        views,
    }
}

/// Records a successful plan in `committed`.
pub fn commit(committed: &mut Committed, plan: Plan, now: Instant) {
    for c in plan.changes {
        let chains = |o: &Option<Arc<PortObjects>>| o.as_ref().map_or(0, |o| o.chains.len());
        committed.port_chains =
            committed.port_chains.saturating_sub(chains(&c.old)) + chains(&c.new);
        match c.view.filter(|_| c.new.is_some()) {
            Some(v) => {
                committed.ports.insert(c.name, v);
            }
            None => {
                committed.ports.remove(&c.name);
            }
        }
    }
    for (name, view) in plan.views {
        committed.ports.insert(name, view);
    }
    for c in plan.revived {
        committed.stale_chains.remove(&c);
    }
    for c in plan.deleted_stale {
        committed.stale_chains.remove(&c);
    }
    for c in plan.newly_stale {
        committed.stale_chains.insert(c, now);
    }
    for (name, chain) in plan.shared {
        if chain.users.is_empty() {
            committed.shared_chains.remove(&name);
        } else {
            committed.shared_chains.insert(name, chain);
        }
    }
}
