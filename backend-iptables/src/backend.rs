//! [`IptablesBackend`]: the [`Backend`] of the iptables mode.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proxy_core::backend::{Backend, BackendContext, BackendError, Capabilities, SyncStats};
use proxy_core::{ChangeSet, NodeView, ProxyMode, ServicePortName};

use crate::exec::{Executor, SystemExecutor};
use crate::iptables::{Iptables, Variant};
use crate::jumps;
use crate::names::{
    KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS,
    KUBE_POSTROUTING, KUBE_PROXY_CANARY, KUBE_PROXY_FIREWALL, KUBE_SERVICES, is_service_chain,
};
use crate::render::{Lines, RenderConfig, Ruleset, is_large_cluster, render, render_own};
use crate::restore::{TopLevel, assemble, assemble_ports, assemble_with, delete_chains};

/// Where upstream reads whether conntrack is liberal about TCP windows.
const TCP_BE_LIBERAL: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal";

/// What a port owns in the kernel after the last successful sync.
#[derive(Debug, Clone)]
struct PortState {
    chains: Vec<String>,
    rules: usize,
}

impl PortState {
    fn of(chains: Vec<String>, rules: &Lines) -> Self {
        PortState {
            chains,
            rules: rules.len(),
        }
    }
}

/// What the kernel holds after the last successful sync.
#[derive(Debug, Clone)]
struct Synced {
    ports: HashMap<ServicePortName, PortState>,
    /// The filter rules and top-level nat rules last applied: a partial sync
    /// leaves them out when they did not change.
    filter_rules: String,
    nat_rules: String,
    large_cluster: bool,
    totals: Vec<(String, u64)>,
}

/// The iptables mode for one IP family: upstream's rule layout, applied with
/// one `iptables-restore --noflush` per sync (partial when only some ports
/// changed).
pub struct IptablesBackend {
    ctx: BackendContext,
    cfg: RenderConfig,
    exec: Arc<dyn Executor>,
    /// Read the host's `nf_conntrack_tcp_be_liberal` and iptables version
    /// on first use (off for fake executors).
    probe_host: bool,
    ipt: Option<Iptables>,
    synced: Option<Synced>,
    chunking: Chunking,
    rewrite_unchanged_top_level: bool,
}

/// How many service ports one restore of a full sync may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunking {
    /// [`NFT_PORTS_PER_RESTORE`] with `iptables-nft`, unlimited with legacy
    /// iptables (whose every restore rewrites the whole table).
    Auto,
    /// At most this many (`None`: unlimited).
    Fixed(Option<usize>),
}

/// Ports per restore for `iptables-nft`, whose `--noflush` restore time grows
/// super-linearly with the chains of one input (measured: BENCHMARKS.md).
pub const NFT_PORTS_PER_RESTORE: usize = 500;

impl std::fmt::Debug for IptablesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IptablesBackend")
            .field("family", &self.ctx.family)
            .field("ipt", &self.ipt)
            .field("synced", &self.synced.is_some())
            .finish()
    }
}

impl IptablesBackend {
    /// A backend running the host's iptables tools. Touches nothing until
    /// the first sync.
    pub fn new(ctx: &BackendContext) -> Result<Self, BackendError> {
        Ok(
            Self::with_executor(ctx, Arc::new(SystemExecutor::new(ctx.commands.clone())))
                .probe_host(true),
        )
    }

    /// Whether to read the host's `nf_conntrack_tcp_be_liberal` and the
    /// iptables version on first use.
    pub(crate) fn probe_host(mut self, probe: bool) -> Self {
        self.probe_host = probe;
        self
    }

    /// A backend running its commands through `exec` (a fake in tests).
    /// The rendering settings come from `ctx` alone.
    pub fn with_executor(ctx: &BackendContext, exec: Arc<dyn Executor>) -> Self {
        IptablesBackend {
            cfg: RenderConfig::from_context(ctx),
            ctx: ctx.clone(),
            exec,
            probe_host: false,
            ipt: None,
            synced: None,
            chunking: Chunking::Auto,
            rewrite_unchanged_top_level: false,
        }
    }

    /// Splits a full sync writing more than `ports` service ports over
    /// several restores: chunks of `ports` ports' own chains first, then one
    /// restore with the top-level chains (which switches traffic over) and
    /// the stale-chain deletions. Each restore stays atomic. Works around
    /// `iptables-nft-restore --noflush` being super-linear in the chains of
    /// one input (see the README).
    ///
    /// By default [`NFT_PORTS_PER_RESTORE`] with `iptables-nft` and
    /// unlimited with legacy iptables; `None` always writes one restore.
    pub fn max_ports_per_restore(mut self, ports: Option<usize>) -> Self {
        self.chunking = Chunking::Fixed(ports.map(|n| n.max(1)));
        self
    }

    /// Whether partial syncs rewrite the top-level chains even when their
    /// rules did not change, as upstream does on every sync. Off by default:
    /// at 10k services rewriting `KUBE-SERVICES` alone costs about a second
    /// per sync, for rules byte-identical to those the last successful
    /// restore wrote (drift is repaired by full syncs: periodic, after a
    /// failure, and when the canary disappears).
    pub fn rewrite_unchanged_top_level(mut self, rewrite: bool) -> Self {
        self.rewrite_unchanged_top_level = rewrite;
        self
    }

    /// The rendering settings.
    pub fn render_config(&self) -> &RenderConfig {
        &self.cfg
    }

    /// The tools, detected on first use; host settings probed then too.
    async fn tools(&mut self) -> Result<Iptables, BackendError> {
        if let Some(ipt) = &self.ipt {
            return Ok(ipt.clone());
        }
        let ipt = Iptables::detect(Arc::clone(&self.exec), self.ctx.family).await?;
        if self.probe_host {
            if let Ok(text) = std::fs::read_to_string(TCP_BE_LIBERAL)
                && text.trim() != "0"
            {
                tracing::info!(
                    "nf_conntrack_tcp_be_liberal set, not installing DROP rules for INVALID packets"
                );
                self.cfg.drop_invalid = false;
            }
            self.cfg.random_fully = ipt.has_random_fully().await;
        }
        self.ipt = Some(ipt.clone());
        Ok(ipt)
    }

    /// Ensures the canary chains and the jumps from built-in chains (full syncs only).
    async fn ensure_base(&self, ipt: &Iptables) -> Result<(), BackendError> {
        for table in ["mangle", "nat", "filter"] {
            ipt.ensure_chain(table, KUBE_PROXY_CANARY).await?;
        }
        for jump in jumps::ensured() {
            ipt.ensure_chain(jump.table, jump.to).await?;
            ipt.ensure_rule(jump.table, jump.from, &jump.args()).await?;
        }
        Ok(())
    }

    /// The per-service nat chains in the kernel that `active` does not hold.
    async fn stale_in_kernel(
        ipt: &Iptables,
        active: &HashSet<&str>,
    ) -> Result<Vec<String>, BackendError> {
        let mut stale: Vec<String> = ipt
            .chains("nat")
            .await?
            .into_iter()
            .filter(|c| is_service_chain(c) && !active.contains(c.as_str()))
            .collect();
        stale.sort();
        Ok(stale)
    }
}

fn totals(ruleset: &Ruleset, skipped_nat_rules: usize) -> Vec<(String, u64)> {
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    vec![
        ("filter".to_string(), as_u64(ruleset.filter_rules.len())),
        (
            "nat".to_string(),
            as_u64(ruleset.nat_rule_count() + skipped_nat_rules),
        ),
    ]
}

#[async_trait::async_trait]
impl Backend for IptablesBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Iptables
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let large_cluster = is_large_cluster(view);
        // Comments of unchanged ports depend on large-cluster mode: a flip
        // rewrites everything.
        let previous = self
            .synced
            .take()
            .filter(|s| !changes.is_full() && s.large_cluster == large_cluster);
        if let Some(prev) = &previous
            && changes.is_empty()
        {
            let totals = prev.totals.clone();
            self.synced = previous;
            return Ok(SyncStats {
                totals,
                ..SyncStats::default()
            });
        }
        let full = previous.is_none();
        let ipt = self.tools().await?;
        if full {
            self.ensure_base(&ipt).await?;
        }

        let (mut prev_ports, prev_filter, prev_nat) = previous
            .map(|p| (p.ports, Some(p.filter_rules), Some(p.nat_rules)))
            .unwrap_or_default();
        let limit = match self.chunking {
            Chunking::Fixed(limit) => limit,
            Chunking::Auto => (ipt.variant() == Variant::Nft).then_some(NFT_PORTS_PER_RESTORE),
        };
        // A chunked full sync renders each chunk's own chains when it
        // writes them: the whole ruleset (100 MB of text at 30k Services)
        // is never in memory at once.
        let chunk = limit.filter(|n| full && view.len() > *n);
        let ruleset = render(&self.cfg, view, |name| {
            chunk.is_none() && (full || changes.contains(name) || !prev_ports.contains_key(name))
        });

        // The chains every port owns now: rendered ports, unchanged ones
        // carried over.
        let mut ports: HashMap<ServicePortName, PortState> = HashMap::with_capacity(view.len());
        let mut objects = 0;
        let (mut chunked_ports, mut chunked_rules) = (0, 0);
        if let Some(n) = chunk {
            // Endpoint chains jump to KUBE-MARK-MASQ, which only the last
            // restore fills: make sure it exists (empty on a cold start).
            ipt.ensure_chain("nat", KUBE_MARK_MASQ).await?;
            let all: Vec<_> = view.iter().collect();
            for part in all.chunks(n) {
                let rendered = render_own(&self.cfg, view, part.iter().copied());
                let input = assemble_ports(&rendered);
                ipt.restore(&input.text).await?;
                objects += input.objects;
                chunked_ports += rendered.len();
                for port in rendered {
                    chunked_rules += port.rules.len();
                    ports.insert(port.name, PortState::of(port.chains, &port.rules));
                }
                // For the runtime's progress log of long cold starts.
                self.ctx.progress.add(part.len());
            }
        }
        let mut stale: Vec<String> = Vec::new();
        for rendered in &ruleset.ports {
            let state = PortState::of(rendered.chains.clone(), &rendered.rules);
            if let Some(old) = prev_ports.remove(&rendered.name) {
                let now: HashSet<&str> = state.chains.iter().map(String::as_str).collect();
                stale.extend(old.chains.into_iter().filter(|c| !now.contains(c.as_str())));
            }
            ports.insert(rendered.name.clone(), state);
        }
        // Rules of ports `ruleset` does not hold (written in chunks, or unchanged).
        let mut other_port_rules = chunked_rules;
        for (name, _) in view.iter() {
            if let Some(state) = prev_ports.remove(name) {
                other_port_rules += state.rules;
                ports.insert(name.clone(), state);
            }
        }
        // Ports gone from the view.
        stale.extend(prev_ports.into_values().flat_map(|p| p.chains));
        if full {
            let active: HashSet<&str> = ports
                .values()
                .flat_map(|p| p.chains.iter().map(String::as_str))
                .collect();
            stale = Self::stale_in_kernel(&ipt, &active).await?;
        } else {
            stale.sort();
        }

        let input = match chunk {
            Some(_) => assemble_with(&ruleset, &[], &stale, TopLevel::Rewrite),
            // Upstream rewrites the top-level chains on every sync; here a
            // partial sync changes them rule by rule from the previous
            // rendering (thousands of rules at scale, one or two changed).
            None => {
                let top = match (&prev_filter, &prev_nat) {
                    (Some(filter), Some(nat)) if !self.rewrite_unchanged_top_level => {
                        TopLevel::Since { filter, nat }
                    }
                    _ => TopLevel::Rewrite,
                };
                assemble_with(&ruleset, &ruleset.ports, &stale, top)
            }
        };
        // A partial sync whose ports' rules came out unchanged writes nothing.
        if full || input.objects > 0 {
            ipt.restore(&input.text).await?;
        }
        objects += input.objects;
        let totals = totals(&ruleset, other_port_rules);
        let ports_written = ruleset.ports.len() + chunked_ports;
        tracing::debug!(
            full,
            ports = ports_written,
            stale = stale.len(),
            bytes = input.text.len(),
            "iptables rules synced"
        );
        self.synced = Some(Synced {
            ports,
            filter_rules: ruleset.filter_rules.into_string(),
            nat_rules: ruleset.nat_rules.into_string(),
            large_cluster,
            totals: totals.clone(),
        });
        Ok(SyncStats {
            full,
            ports_written,
            objects_written: objects,
            totals,
        })
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.synced = None;
        let ipt = self.tools().await?;
        cleanup_family(&ipt).await
    }

    async fn dataplane_lost(&mut self) -> bool {
        if self.synced.is_none() {
            return false;
        }
        let Some(ipt) = &self.ipt else { return false };
        match ipt.chain_exists("mangle", KUBE_PROXY_CANARY).await {
            Ok(true) => false,
            Ok(false) => {
                tracing::info!(family = ?self.ctx.family, "iptables canary is gone: rules were flushed");
                self.synced = None;
                true
            }
            Err(err) => {
                tracing::warn!(%err, "cannot check the iptables canary");
                false
            }
        }
    }

    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        Ok(assemble(&render(&self.cfg, view, |_| true), &[]).text)
    }
}

/// Kubelet's canary chain: present when kubelet manages iptables rules.
const KUBELET_CANARY: &str = "KUBE-KUBELET-CANARY";

/// Removes every rule and chain the iptables mode installs in one family
/// (jumps, nat/filter/mangle chains), and nothing else.
///
/// `KUBE-FIREWALL` and its jumps are shared with kubelet (it keeps an
/// identical CVE-2020-8558 guard): they stay when kubelet's canary chain
/// shows kubelet manages iptables here, as upstream always keeps them; with
/// no kubelet they are ours alone and go too.
pub(crate) async fn cleanup_family(ipt: &Iptables) -> Result<(), BackendError> {
    let remove_kubelet_firewall = !ipt.chain_exists("mangle", KUBELET_CANARY).await?;
    let mut jumps: Vec<&jumps::Jump> = jumps::JUMPS.iter().collect();
    if remove_kubelet_firewall {
        jumps.extend(jumps::KUBELET_JUMPS);
    }
    for jump in jumps {
        // Delete every copy (a crashed run may have left duplicates).
        while ipt.delete_rule(jump.table, jump.from, &jump.args()).await? {}
    }
    let nat_fixed = [
        KUBE_SERVICES,
        KUBE_NODEPORTS,
        KUBE_POSTROUTING,
        KUBE_MARK_MASQ,
        KUBE_PROXY_CANARY,
    ];
    let mut filter_fixed = vec![
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
        KUBE_PROXY_CANARY,
    ];
    if remove_kubelet_firewall {
        filter_fixed.push(KUBE_FIREWALL);
    }
    let nat: Vec<String> = ipt
        .chains("nat")
        .await?
        .into_iter()
        .filter(|c| nat_fixed.contains(&c.as_str()) || is_service_chain(c))
        .collect();
    let filter: Vec<String> = ipt
        .chains("filter")
        .await?
        .into_iter()
        .filter(|c| filter_fixed.contains(&c.as_str()))
        .collect();
    for (table, chains) in [("filter", filter), ("nat", nat)] {
        if !chains.is_empty() {
            ipt.restore(&delete_chains(table, &chains)).await?;
        }
    }
    ipt.delete_chain("mangle", KUBE_PROXY_CANARY).await?;
    Ok(())
}
