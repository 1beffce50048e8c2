//! [`NftablesBackend`]: the [`Backend`] of nftables mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::backend::BackendContext;
use proxy_core::{
    Backend, BackendError, Capabilities, ChangeSet, NodeView, ProxyMode, ServicePortView, SyncStats,
};

use crate::exec::Executor;
use crate::ir::{Command, Transaction};
use crate::netlink::NetlinkExecutor;
use crate::plan::{Plan, PlanMode, PortChange, commit, plan_ports, push_skeleton};
use crate::render::{PortObjects, Skeleton, render_port};
use crate::state::{Committed, ElementStore};

/// Default delay before a stale chain is deleted (upstream: 1 s).
pub const STALE_CHAIN_DELAY: Duration = Duration::from_secs(1);
/// Default size of one cold-start transaction, in objects.
pub const CHUNK_OBJECTS: usize = 100_000;

/// nftables mode for one IP family: tables `ip kube-proxy` / `ip6 kube-proxy`.
pub struct NftablesBackend {
    ctx: BackendContext,
    exec: Box<dyn Executor>,
    skeleton: Skeleton,
    /// What we wrote; `None` until the first full sync succeeds, after a
    /// failed full sync and once the table was found lost: the kernel no
    /// longer matches any model then, so the next full sync starts from an
    /// empty one (a cold start into a missing table, else a reset of the
    /// table in the same transaction as its new contents).
    committed: Option<Committed>,
    /// A transaction failed: the next sync is full whatever it is given.
    needs_full: bool,
    stale_delay: Duration,
    chunk_objects: usize,
    /// Set by tests of fingerprint collisions in the element store.
    fingerprint_mask: Option<u64>,
}

impl std::fmt::Debug for NftablesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftablesBackend")
            .field("family", &self.ctx.family)
            .field("ports", &self.committed.as_ref().map(|c| c.ports.len()))
            .finish_non_exhaustive()
    }
}

impl NftablesBackend {
    /// A backend writing over netlink ([`NetlinkExecutor`], its socket
    /// opened here: in the caller's network namespace). Touches nothing
    /// until the first sync.
    pub fn new(ctx: &BackendContext) -> Result<Self, BackendError> {
        Ok(Self::with_executor(
            ctx,
            Box::new(NetlinkExecutor::new(ctx.commands.clone())),
        ))
    }

    /// A backend applying its transactions through `exec` (a fake in tests).
    pub fn with_executor(ctx: &BackendContext, exec: Box<dyn Executor>) -> Self {
        NftablesBackend {
            ctx: ctx.clone(),
            exec,
            skeleton: Skeleton::new(ctx),
            committed: None,
            needs_full: false,
            stale_delay: STALE_CHAIN_DELAY,
            chunk_objects: CHUNK_OBJECTS,
            fingerprint_mask: None,
        }
    }

    /// Keeps only the bits of `mask` of the element store's fingerprints
    /// (0: every element collides), to test that collisions change
    /// nothing.
    #[cfg(feature = "fake")]
    pub fn with_fingerprint_mask(mut self, mask: u64) -> Self {
        self.fingerprint_mask = Some(mask);
        self
    }

    /// An empty model.
    fn empty_committed(&self) -> Committed {
        Committed {
            elements: match self.fingerprint_mask {
                Some(m) => ElementStore::with_fingerprint_mask(m),
                None => ElementStore::default(),
            },
            ..Committed::default()
        }
    }

    /// Sets how long flushed service chains wait before deletion.
    pub fn with_stale_chain_delay(mut self, delay: Duration) -> Self {
        self.stale_delay = delay;
        self
    }

    /// Sets the size of cold-start transactions (objects per `nft` run).
    pub fn with_chunk_objects(mut self, objects: usize) -> Self {
        self.chunk_objects = objects.max(1);
        self
    }

    /// The transaction a full sync of `view` into an empty kernel would
    /// apply in one piece (what `render` prints), for tools and tests.
    pub fn full_transaction(&self, view: &NodeView) -> Option<Transaction> {
        let (_, plan) = self.full_plan(view, None, true, Instant::now());
        Some(plan.tx)
    }

    /// The context this backend serves.
    pub fn context(&self) -> &BackendContext {
        &self.ctx
    }

    fn render(&self, view: &ServicePortView) -> PortObjects {
        render_port(&self.ctx, view)
    }

    /// The objects `old` (a committed view) rendered to, given those of
    /// `new`: the same when the views are.
    fn old_objects(
        &self,
        old: &Arc<ServicePortView>,
        new: Option<(&Arc<ServicePortView>, &Arc<PortObjects>)>,
    ) -> Arc<PortObjects> {
        match new {
            Some((view, objects)) if Arc::ptr_eq(old, view) || old == view => objects.clone(),
            _ => Arc::new(self.render(old)),
        }
    }

    async fn apply(&mut self, tx: &Transaction) -> Result<(), BackendError> {
        tracing::debug!(family = %self.ctx.family, commands = tx.len(), "applying nftables transaction");
        self.exec.apply(tx).await.map_err(|e| {
            tracing::error!(family = %self.ctx.family, error = %e, "nftables transaction failed");
            e.into_backend("nftables transaction failed")
        })
    }

    /// The single transaction of a full sync: everything rewritten, maps
    /// refilled; with `reset`, the table is deleted first (unknown state).
    fn full_plan(
        &self,
        view: &NodeView,
        old: Option<&Committed>,
        reset: bool,
        now: Instant,
    ) -> (Committed, Plan) {
        let mut tx = Transaction::new(self.ctx.family);
        if reset {
            tx.push(Command::AddTable);
            tx.push(Command::DeleteTable);
        }
        push_skeleton(&mut tx, &self.skeleton, true);
        let mut fresh = Committed {
            stale_chains: old.map(|o| o.stale_chains.clone()).unwrap_or_default(),
            shared_chains: old.map(|o| o.shared_chains.clone()).unwrap_or_default(),
            port_chains: old.map_or(0, |o| o.port_chains),
            ..self.empty_committed()
        };
        let mut changes: Vec<PortChange> = Vec::with_capacity(view.len());
        for (name, port) in view.iter() {
            let new = Arc::new(self.render(port));
            let (name, previous) = match old.and_then(|o| o.ports.get_key_value(name)) {
                Some((key, committed)) => (
                    key.clone(),
                    Some(self.old_objects(committed, Some((port, &new)))),
                ),
                None => (Arc::new(name.clone()), None),
            };
            changes.push(PortChange {
                name,
                old: previous,
                new: Some(new),
                view: Some(port.clone()),
            });
        }
        if let Some(o) = old {
            for (name, committed) in &o.ports {
                if view.get(name).is_none() {
                    changes.push(PortChange {
                        name: name.clone(),
                        old: Some(self.old_objects(committed, None)),
                        new: None,
                        view: None,
                    });
                }
            }
        }
        let plan = plan_ports(
            &mut fresh,
            tx,
            changes,
            now,
            self.stale_delay,
            PlanMode::Rewrite,
            &|v| self.render(v),
        );
        (fresh, plan)
    }

    async fn full_sync(&mut self, view: &NodeView) -> Result<SyncStats, BackendError> {
        let now = Instant::now();
        if self.committed.is_none() && !self.table_exists().await? {
            return self.cold_start(view).await;
        }
        let old = self.committed.take();
        let (mut fresh, plan) = self.full_plan(view, old.as_ref(), old.is_none(), now);
        let stats = SyncStats {
            full: true,
            ports_written: plan.changes.len(),
            objects_written: plan.tx.len(),
            totals: Vec::new(),
        };
        if let Err(e) = self.apply(&plan.tx).await {
            // The transaction changed nothing, but it may have failed
            // because the kernel differs from the model (a chain or element
            // removed from outside): diffing against the model again could
            // fail forever. The next full sync rebuilds from an empty model.
            drop(old);
            self.committed = None;
            self.needs_full = true;
            return Err(e);
        }
        commit(&mut fresh, plan, now);
        self.committed = Some(fresh);
        self.needs_full = false;
        Ok(self.with_totals(stats))
    }

    /// First sync into an empty kernel: the skeleton, then the ports in
    /// transactions of about `chunk_objects` objects. Nothing is there to
    /// keep consistent yet, and bounded transactions keep `nft`'s time and
    /// memory linear.
    async fn cold_start(&mut self, view: &NodeView) -> Result<SyncStats, BackendError> {
        let now = Instant::now();
        let mut tx = Transaction::new(self.ctx.family);
        push_skeleton(&mut tx, &self.skeleton, false);
        let mut stats = SyncStats {
            full: true,
            ..SyncStats::default()
        };
        stats.objects_written += tx.len();
        self.apply(&tx)
            .await
            .inspect_err(|_| self.needs_full = true)?;
        let mut committed = self.empty_committed();
        let mut chunk: Vec<PortChange> = Vec::new();
        let mut size = 0;
        let total = view.len();
        for (i, (name, port)) in view.iter().enumerate() {
            let objects = Arc::new(self.render(port));
            size += objects.object_count();
            chunk.push(PortChange {
                name: Arc::new(name.clone()),
                old: None,
                new: Some(objects),
                view: Some(port.clone()),
            });
            if size >= self.chunk_objects || i + 1 == total {
                let tx = Transaction::new(self.ctx.family);
                let plan = plan_ports(
                    &mut committed,
                    tx,
                    std::mem::take(&mut chunk),
                    now,
                    self.stale_delay,
                    PlanMode::KeepStale,
                    &|v| self.render(v),
                );
                stats.ports_written += plan.changes.len();
                stats.objects_written += plan.tx.len();
                let ports = plan.changes.len();
                if let Err(e) = self.apply(&plan.tx).await {
                    // The table holds part of the view; the next (full) sync
                    // resets it.
                    self.committed = None;
                    self.needs_full = true;
                    return Err(e);
                }
                commit(&mut committed, plan, now);
                // For the runtime's progress log of long cold starts.
                self.ctx.progress.add(ports);
                size = 0;
            }
        }
        self.committed = Some(committed);
        self.needs_full = false;
        Ok(self.with_totals(stats))
    }

    async fn partial_sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let now = Instant::now();
        let Some(mut committed) = self.committed.take() else {
            return self.full_sync(view).await;
        };
        let port_changes: Vec<PortChange> = changes
            .ports()
            .map(|name| {
                let port = view.get(name);
                let new = port.map(|p| Arc::new(self.render(p)));
                let (key, old) = match committed.ports.get_key_value(name) {
                    Some((key, committed)) => (
                        key.clone(),
                        Some(self.old_objects(committed, port.zip(new.as_ref()))),
                    ),
                    None => (Arc::new(name.clone()), None),
                };
                PortChange {
                    name: key,
                    old,
                    new,
                    view: port.cloned(),
                }
            })
            .collect();
        let plan = plan_ports(
            &mut committed,
            Transaction::new(self.ctx.family),
            port_changes,
            now,
            self.stale_delay,
            PlanMode::KeepStale,
            &|v| self.render(v),
        );
        if plan.tx.is_empty() {
            self.committed = Some(committed);
            return Ok(SyncStats::default());
        }
        // Something is written anyway: piggy-back the due stale-chain deletions.
        let plan = self.with_due_deletions(&committed, plan, now);
        let stats = SyncStats {
            full: false,
            ports_written: plan.changes.len(),
            objects_written: plan.tx.len(),
            totals: Vec::new(),
        };
        if let Err(e) = self.apply(&plan.tx).await {
            committed.elements.rollback(plan.batch);
            self.committed = Some(committed);
            self.needs_full = true;
            return Err(e);
        }
        commit(&mut committed, plan, now);
        self.committed = Some(committed);
        Ok(self.with_totals(stats))
    }

    fn with_due_deletions(&self, committed: &Committed, mut plan: Plan, now: Instant) -> Plan {
        let mut live: std::collections::HashSet<&str> = plan
            .changes
            .iter()
            .filter_map(|c| c.new.as_ref())
            .flat_map(|n| n.chains.iter().map(|(c, _)| c.as_str()))
            .collect();
        live.extend(plan.revived.iter().map(String::as_str));
        for (c, since) in &committed.stale_chains {
            if now.saturating_duration_since(*since) >= self.stale_delay
                && !live.contains(c.as_str())
            {
                plan.tx.push(Command::DeleteChain(c.clone()));
                plan.deleted_stale.push(c.clone());
            }
        }
        plan
    }

    fn with_totals(&self, mut stats: SyncStats) -> SyncStats {
        if let Some(c) = &self.committed {
            let chains = c.port_chains + c.shared_chains.len();
            stats.totals = vec![
                ("service_ports".to_string(), c.ports.len() as u64),
                ("chains".to_string(), chains as u64),
                ("elements".to_string(), c.elements.len() as u64),
            ];
        }
        stats
    }

    async fn table_exists(&mut self) -> Result<bool, BackendError> {
        let family = self.ctx.family;
        self.exec
            .table_exists(family)
            .await
            .map_err(|e| e.into_backend("cannot list nftables tables"))
    }
}

#[async_trait::async_trait]
impl Backend for NftablesBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Nftables
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        if view.family() != self.ctx.family {
            return Err(BackendError::config(format!(
                "view of family {} given to the {} nftables backend",
                view.family(),
                self.ctx.family
            )));
        }
        let start = Instant::now();
        let result = if self.committed.is_none() || self.needs_full || changes.is_full() {
            self.full_sync(view).await
        } else if changes.is_empty() {
            Ok(SyncStats::default())
        } else {
            self.partial_sync(view, changes).await
        };
        if let Ok(stats) = &result {
            tracing::debug!(
                family = %self.ctx.family,
                full = stats.full,
                ports = stats.ports_written,
                objects = stats.objects_written,
                elapsed = ?start.elapsed(),
                "nftables sync complete"
            );
        }
        result
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        let mut tx = Transaction::new(self.ctx.family);
        tx.push(Command::AddTable);
        tx.push(Command::DeleteTable);
        self.apply(&tx).await?;
        self.committed = None;
        Ok(())
    }

    async fn dataplane_lost(&mut self) -> bool {
        if self.committed.is_none() {
            return false;
        }
        let lost = matches!(self.exec.table_exists(self.ctx.family).await, Ok(false));
        if lost {
            // Nothing of the model is in the kernel: the next (full) sync
            // is a cold start, not a diff against what was lost.
            self.committed = None;
            self.needs_full = true;
        }
        lost
    }

    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        let (_, plan) = self.full_plan(view, None, true, Instant::now());
        Ok(plan.tx.to_script())
    }
}
