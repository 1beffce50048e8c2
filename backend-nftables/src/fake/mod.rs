//! An in-memory nftables: applies the same [`Transaction`]s the backend
//! sends to `nft`, with the kernel's checks (missing objects, busy chains,
//! duplicate elements), plus a packet tracer and a conformance harness.

#[cfg(feature = "fake")]
mod harness;
mod listing;
mod path;
mod tracer;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;
use proxy_core::IpFamily;

#[cfg(feature = "fake")]
pub use harness::{FakeHarness, fake_harness_factory};
pub use listing::{ListingError, table_from_json};
pub use path::{Choice, Hop, Path};
pub use tracer::Tracer;

use crate::error::NftError;
use crate::exec::Executor;
use crate::ir::{
    ChainDef, Command, CommandDisplay, ElemKey, ElemValue, ElementDisplay, KeyType, Rule,
    RuleDisplay, SetDef, Transaction,
};

/// A set or map and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSet {
    /// Declaration.
    pub def: SetDef,
    /// Elements: value and comment.
    pub elements: BTreeMap<ElemKey, (Option<ElemValue>, Option<String>)>,
}

impl FakeSet {
    /// Whether an element of this set matches `addr`: an equal address, or
    /// a prefix containing it (interval sets).
    pub fn matches_addr(&self, addr: &IpAddr) -> bool {
        if self.elements.contains_key(&ElemKey::Addr(*addr)) {
            return true;
        }
        self.def.key == KeyType::Net
            && self
                .elements
                .keys()
                .any(|k| matches!(k, ElemKey::Net(n) if n.contains(addr)))
    }

    /// Whether `key` overlaps an element other than itself, as the
    /// kernel checks for interval sets ("interval overlaps with an
    /// existing one").
    fn overlaps(&self, key: &ElemKey) -> bool {
        let Some(new) = as_net(key) else {
            return false;
        };
        self.elements.keys().filter(|k| *k != key).any(|k| {
            as_net(k)
                .is_some_and(|old| old.contains(&new.network()) || new.contains(&old.network()))
        })
    }
}

/// An address or prefix key as a prefix.
fn as_net(key: &ElemKey) -> Option<IpNet> {
    match key {
        ElemKey::Net(n) => Some(*n),
        ElemKey::Addr(a) => Some(IpNet::from(*a)),
        _ => None,
    }
}

/// A chain and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChain {
    /// Declaration.
    pub def: ChainDef,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// One table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeTable {
    /// Chains by name.
    pub chains: BTreeMap<String, FakeChain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, FakeSet>,
}

impl FakeTable {
    fn chain_referenced(&self, name: &str) -> bool {
        self.chains
            .values()
            .any(|c| c.rules.iter().any(|r| r.targets().any(|t| t == name)))
            || self.sets.values().any(|s| {
                s.elements
                    .values()
                    .any(|(v, _)| v.as_ref().and_then(ElemValue::target) == Some(name))
            })
    }

    fn set_referenced(&self, name: &str) -> bool {
        self.chains
            .values()
            .any(|c| c.rules.iter().any(|r| r.sets().any(|s| s == name)))
    }
}

/// The in-memory dataplane: one optional table per family.
#[derive(Debug, Default)]
pub struct FakeNft {
    tables: BTreeMap<IpFamily, FakeTable>,
    /// Transactions applied successfully.
    pub transactions: usize,
    /// Commands applied successfully.
    pub commands: usize,
    /// Make the next transaction fail (tests of failure handling).
    pub fail_next: bool,
}

/// A [`FakeNft`] shared by the backend's executor and the test.
pub type SharedFake = Arc<Mutex<FakeNft>>;

/// Locks a shared fake, recovering from a poisoned lock (a panicking test).
pub fn lock(fake: &SharedFake) -> MutexGuard<'_, FakeNft> {
    fake.lock().unwrap_or_else(|p| p.into_inner())
}

fn reject(family: IpFamily, command: &Command, reason: &str) -> NftError {
    NftError::Fake {
        command: CommandDisplay { family, command }.to_string(),
        reason: reason.to_string(),
    }
}

impl FakeNft {
    /// A new, empty dataplane behind a lock.
    pub fn shared() -> SharedFake {
        Arc::new(Mutex::new(FakeNft::default()))
    }

    /// The table of `family`, if it exists.
    pub fn table(&self, family: IpFamily) -> Option<&FakeTable> {
        self.tables.get(&family)
    }

    /// Applies `tx` atomically.
    pub fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        if std::mem::take(&mut self.fail_next) {
            return Err(NftError::Fake {
                command: "<transaction>".into(),
                reason: "injected failure".into(),
            });
        }
        let mut table = self.tables.get(&tx.family).cloned();
        let mut added: BTreeSet<(String, ElemKey)> = BTreeSet::new();
        for c in &tx.commands {
            apply_command(&mut table, &mut added, tx.family, c)?;
        }
        match table {
            Some(t) => self.tables.insert(tx.family, t),
            None => self.tables.remove(&tx.family),
        };
        self.transactions += 1;
        self.commands += tx.len();
        Ok(())
    }

    /// A canonical, sorted dump of one family's table: sets with sorted
    /// elements, chains by name with their rules in order. Empty regular
    /// chains nothing refers to (flushed stale chains waiting for their
    /// delayed deletion) are left out: they cannot affect a packet.
    pub fn dump(&self, family: IpFamily) -> String {
        let Some(t) = self.tables.get(&family) else {
            return String::new();
        };
        let mut out = String::from("table\n");
        for s in t.sets.values() {
            out.push_str(
                &CommandDisplay {
                    family,
                    command: &Command::AddSet(s.def.clone()),
                }
                .to_string(),
            );
            out.push('\n');
            let mut elems: Vec<String> = s
                .elements
                .iter()
                .map(|(k, (v, c))| {
                    let e = crate::ir::Element {
                        set: s.def.name.clone(),
                        key: k.clone(),
                        value: v.clone(),
                        comment: c.clone(),
                    };
                    format!("  element {}", ElementDisplay(&e))
                })
                .collect();
            elems.sort();
            for e in elems {
                out.push_str(&e);
                out.push('\n');
            }
        }
        for (name, c) in &t.chains {
            if c.def.base.is_none() && c.rules.is_empty() && !t.chain_referenced(name) {
                continue;
            }
            out.push_str(
                &CommandDisplay {
                    family,
                    command: &Command::AddChain(c.def.clone()),
                }
                .to_string(),
            );
            out.push('\n');
            for r in &c.rules {
                out.push_str(&format!("  {}\n", RuleDisplay { family, rule: r }));
            }
        }
        out
    }
}

fn apply_command(
    table: &mut Option<FakeTable>,
    added: &mut BTreeSet<(String, ElemKey)>,
    family: IpFamily,
    c: &Command,
) -> Result<(), NftError> {
    let err = |reason: &str| reject(family, c, reason);
    if let Command::AddTable = c {
        table.get_or_insert_with(FakeTable::default);
        return Ok(());
    }
    let Some(t) = table.as_mut() else {
        return Err(err("No such file or directory (table)"));
    };
    match c {
        Command::AddTable => {}
        Command::DeleteTable => *table = None,
        Command::AddChain(def) => match t.chains.get(&def.name) {
            Some(existing) if existing.def != *def => {
                return Err(err("File exists (chain with other type)"));
            }
            Some(_) => {}
            None => {
                t.chains.insert(
                    def.name.clone(),
                    FakeChain {
                        def: def.clone(),
                        rules: Vec::new(),
                    },
                );
            }
        },
        Command::FlushChain(name) => match t.chains.get_mut(name) {
            Some(ch) => ch.rules.clear(),
            None => return Err(err("No such file or directory (chain)")),
        },
        Command::DeleteChain(name) => {
            let Some(ch) = t.chains.get(name) else {
                return Err(err("No such file or directory (chain)"));
            };
            if !ch.rules.is_empty() || t.chain_referenced(name) {
                return Err(err("Device or resource busy"));
            }
            t.chains.remove(name);
        }
        Command::AddRule { chain, rule } => {
            if let Some(missing) = rule.targets().find(|x| !t.chains.contains_key(*x)) {
                return Err(err(&format!("No such file or directory (chain {missing})")));
            }
            if let Some(missing) = rule.sets().find(|x| !t.sets.contains_key(*x)) {
                return Err(err(&format!("No such file or directory (set {missing})")));
            }
            match t.chains.get_mut(chain) {
                Some(ch) => ch.rules.push(rule.clone()),
                None => return Err(err("No such file or directory (chain)")),
            }
        }
        Command::AddSet(def) => match t.sets.get(&def.name) {
            Some(existing)
                if existing.def.key != def.key || existing.def.verdict_map != def.verdict_map =>
            {
                return Err(err("File exists (set with other type)"));
            }
            Some(_) => {}
            None => {
                t.sets.insert(
                    def.name.clone(),
                    FakeSet {
                        def: def.clone(),
                        elements: BTreeMap::new(),
                    },
                );
            }
        },
        Command::FlushSet { name, .. } => match t.sets.get_mut(name) {
            Some(s) => s.elements.clear(),
            None => return Err(err("No such file or directory (set)")),
        },
        Command::DeleteSet(name) => {
            if !t.sets.contains_key(name) {
                return Err(err("No such file or directory (set)"));
            }
            if t.set_referenced(name) {
                return Err(err("Device or resource busy"));
            }
            t.sets.remove(name);
        }
        Command::AddElement(e) => {
            if let Some(target) = e.value.as_ref().and_then(ElemValue::target)
                && !t.chains.contains_key(target)
            {
                return Err(err(&format!("No such file or directory (chain {target})")));
            }
            let Some(s) = t.sets.get_mut(&e.set) else {
                return Err(err("No such file or directory (set)"));
            };
            let fits = match &e.value {
                None => !s.def.is_map(),
                Some(ElemValue::Verdict(_)) => s.def.verdict_map,
                Some(ElemValue::Endpoint(_)) => matches!(s.def.key, KeyType::LoadBalance(_)),
            };
            if !fits {
                return Err(err("Invalid argument (element value does not fit the set)"));
            }
            if !s.def.key.accepts(&e.key) {
                return Err(err("Invalid argument (element key does not fit the set)"));
            }
            if s.def.key == KeyType::Net && s.overlaps(&e.key) {
                return Err(err("File exists (interval overlaps with an existing one)"));
            }
            if !added.insert((e.set.clone(), e.key.clone())) {
                return Err(err("File exists (duplicate element in one transaction)"));
            }
            match s.elements.get(&e.key) {
                Some((v, _)) if *v != e.value => return Err(err("File exists")),
                _ => {
                    s.elements
                        .insert(e.key.clone(), (e.value.clone(), e.comment.clone()));
                }
            }
        }
        Command::DeleteElement(e) => {
            let Some(s) = t.sets.get_mut(&e.set) else {
                return Err(err("No such file or directory (set)"));
            };
            if s.elements.remove(&e.key).is_none() {
                return Err(err("No such file or directory (element)"));
            }
            added.remove(&(e.set.clone(), e.key.clone()));
        }
    }
    Ok(())
}

/// An [`Executor`] writing into a [`SharedFake`].
#[derive(Debug, Clone)]
pub struct FakeExecutor {
    fake: SharedFake,
}

impl FakeExecutor {
    /// An executor for `fake`.
    pub fn new(fake: SharedFake) -> Self {
        FakeExecutor { fake }
    }
}

#[async_trait::async_trait]
impl Executor for FakeExecutor {
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        lock(&self.fake).apply(tx)
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        Ok(lock(&self.fake).table(family).is_some())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ir::Element;

    fn interval_set() -> SetDef {
        SetDef {
            name: "nets".into(),
            key: KeyType::Net,
            verdict_map: false,
            timeout: None,
            comment: None,
        }
    }

    fn add(fake: &mut FakeNft, set: &str, key: ElemKey) -> Result<(), NftError> {
        let mut tx = Transaction::new(IpFamily::V4);
        tx.push(Command::AddElement(Element {
            set: set.into(),
            key,
            value: None,
            comment: None,
        }));
        fake.apply(&tx)
    }

    fn net(s: &str) -> ElemKey {
        ElemKey::Net(s.parse().unwrap())
    }

    fn fake_with_sets() -> FakeNft {
        let mut fake = FakeNft::default();
        let mut tx = Transaction::new(IpFamily::V4);
        tx.push(Command::AddTable);
        tx.push(Command::AddSet(interval_set()));
        tx.push(Command::AddSet(SetDef {
            name: "addrs".into(),
            key: KeyType::Addr,
            ..interval_set()
        }));
        fake.apply(&tx).unwrap();
        fake
    }

    #[test]
    fn interval_sets_match_addresses_inside_their_prefixes() {
        let mut fake = fake_with_sets();
        add(&mut fake, "nets", net("10.0.0.0/24")).unwrap();
        add(
            &mut fake,
            "nets",
            ElemKey::Addr("192.168.1.1".parse().unwrap()),
        )
        .unwrap();
        let set = &fake.table(IpFamily::V4).unwrap().sets["nets"];
        for (addr, inside) in [
            ("10.0.0.0", true),
            ("10.0.0.255", true),
            ("10.0.1.0", false),
            ("192.168.1.1", true),
            ("192.168.1.2", false),
        ] {
            assert_eq!(set.matches_addr(&addr.parse().unwrap()), inside, "{addr}");
        }
    }

    #[test]
    fn overlapping_intervals_are_rejected_like_the_kernel() {
        let mut fake = fake_with_sets();
        add(&mut fake, "nets", net("10.0.0.0/24")).unwrap();
        // The same prefix again is not an overlap (`add` is idempotent).
        add(&mut fake, "nets", net("10.0.0.0/24")).unwrap();
        assert!(add(&mut fake, "nets", net("10.0.0.1/32")).is_err());
        assert!(add(&mut fake, "nets", net("10.0.0.0/8")).is_err());
        assert!(
            add(
                &mut fake,
                "nets",
                ElemKey::Addr("10.0.0.7".parse().unwrap())
            )
            .is_err()
        );
        add(&mut fake, "nets", net("10.0.1.0/24")).unwrap();
    }

    #[test]
    fn a_prefix_needs_an_interval_set() {
        let mut fake = fake_with_sets();
        assert!(add(&mut fake, "addrs", net("10.0.0.0/24")).is_err());
        let set = &fake.table(IpFamily::V4).unwrap().sets["addrs"];
        assert!(set.elements.is_empty());
    }
}
