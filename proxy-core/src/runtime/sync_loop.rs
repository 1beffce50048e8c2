//! [`Runtime`]: the sync loop.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;

use crate::backend::{BackendContext, BackendError, BackendFactory, CommandLimits, Registry};
use crate::config::{KubeProxyConfiguration, LocalMode, ProxyMode};
use crate::error::Error;
use crate::exec::OwnWrites;
use crate::model::IpFamily;
use crate::topology::ServiceTopology;

use super::family::{FamilyState, Outcome, error_chain};
use super::nft_watch::{NftWatcher, next_change};
use super::node::{NodeChange, NodeState};
use super::observer::{NodeHealth, SyncObserver};
use super::progress::{PROGRESS_INTERVAL, report_listing_progress};
use super::source::Source;
use super::world::{Delta, World};

/// The loop's clock: tokio's, so tests can pause and advance it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Events applied in one batch before the loop looks at its timers again.
const MAX_BATCH: usize = 1024;

/// When the loop syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTiming {
    /// `minSyncPeriod`: two syncs of a family never start closer than this.
    pub min_interval: Duration,
    /// `syncPeriod`: at least this often the loop asks the backend whether
    /// its dataplane was lost ([`Backend::dataplane_lost`](crate::Backend::dataplane_lost))
    /// and syncs, fully if it was.
    pub sync_period: Duration,
    /// A full sync happens at least this often, even when nothing was lost
    /// (upstream's `FullSyncPeriod`, 1 h, of the iptables and nftables modes).
    pub full_sync_period: Duration,
    /// The first retry after a failed sync; it doubles per consecutive
    /// failure, up to `sync_period`.
    pub retry_interval: Duration,
}

impl SyncTiming {
    /// Upstream's full-sync period.
    pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

    /// The timing of `config`'s active mode.
    ///
    /// Upstream retries a failed sync after `syncPeriod`; this loop retries
    /// sooner, after `max(minSyncPeriod, 1s)`, backing off to `syncPeriod`.
    pub fn from_config(config: &KubeProxyConfiguration) -> Self {
        let sync_period = config.sync_period().max(Duration::from_secs(1));
        SyncTiming {
            min_interval: config.min_sync_period(),
            sync_period,
            full_sync_period: Self::FULL_SYNC_PERIOD.max(sync_period),
            retry_interval: config
                .min_sync_period()
                .max(Duration::from_secs(1))
                .min(sync_period),
        }
    }
}

/// What the runtime needs besides the configuration and the backend factory.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// This node's name (`--hostname-override`, or the host name).
    pub node_name: String,
    /// `bindAddress` when it names a specific IP: the node's primary IP.
    pub bind_ip: Option<IpAddr>,
    /// The families to serve, primary first. `None`: the primary family
    /// is the node's first IP's (IPv4 when unknown) and the other family is
    /// served too when the factory's check passes for it (upstream's
    /// dual-stack detection).
    pub families: Option<Vec<IpFamily>>,
    /// When to sync.
    pub timing: SyncTiming,
    /// The time limit of the backends' external commands, and who counts
    /// the ones killed (set in every [`BackendContext`]).
    pub commands: CommandLimits,
}

impl RuntimeOptions {
    /// Options for node `node_name` with `config`'s timing.
    pub fn new(config: &KubeProxyConfiguration, node_name: impl Into<String>) -> Self {
        let bind_ip = config
            .bind_address
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified());
        RuntimeOptions {
            node_name: node_name.into(),
            bind_ip,
            families: None,
            timing: SyncTiming::from_config(config),
            commands: CommandLimits::default(),
        }
    }
}

/// The sync loop: one [`Source`] in, one backend per IP family out.
///
/// See the [module documentation](super) for the data flow. Backends are
/// built once the source delivered its initial lists (so the Node's IPs and
/// pod CIDRs are known), one per family; each family syncs independently,
/// with its own [`SyncRunner`](crate::runner::SyncRunner).
pub struct Runtime {
    config: Arc<KubeProxyConfiguration>,
    factory: Arc<dyn BackendFactory>,
    observers: Vec<Arc<dyn SyncObserver>>,
    options: RuntimeOptions,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("mode", &self.factory.mode())
            .field("observers", &self.observers.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime that builds its backends with `factory`.
    pub fn new(
        config: Arc<KubeProxyConfiguration>,
        factory: Arc<dyn BackendFactory>,
        observers: Vec<Arc<dyn SyncObserver>>,
        options: RuntimeOptions,
    ) -> Self {
        Runtime {
            config,
            factory,
            observers,
            options,
        }
    }

    /// Runs until `shutdown` completes, then returns and leaves the rules in
    /// place. Fails only if no family can be served.
    pub async fn run(
        self,
        source: Box<dyn Source>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let started_at = SystemTime::now();
        let mut world = World::new(&self.options.node_name, source.kinds());
        let mut events = source.events();
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        let mut families: Vec<FamilyState> = Vec::new();
        let mut node = NodeState::new(&self.options.node_name, self.options.bind_ip, None);
        let mut source_open = true;
        // The child processes the backends spawn (our own nf_tables
        // commits), and the watcher of everyone else's.
        let own_writes = OwnWrites::new();
        let mut watcher: Option<NftWatcher> = None;
        tracing::info!(mode = %self.factory.mode(), node = %self.options.node_name, "waiting for the initial lists of the sources");
        let listing_started = tokio::time::Instant::now();
        let mut listing_progress =
            tokio::time::interval_at(listing_started + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
        loop {
            let wake = families.iter().map(|f| f.runner.next_run()).min();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!("shutting down; the dataplane is left in place");
                    return Ok(());
                }
                // Due syncs before more events: a busy source must not
                // starve the periodic run.
                () = sleep => {
                    let mut all_synced = true;
                    for family in &mut families {
                        let outcome = own_writes
                            .scope(family.sync_if_due(now(), &world.topology, &node.info, &self.observers))
                            .await;
                        all_synced &= outcome != Some(Outcome::Failed) && family.pending.is_empty();
                    }
                    if all_synced && world.change_counts() != (0, 0) {
                        world.clear_change_counts();
                        for observer in &self.observers {
                            observer.pending(0, 0);
                        }
                    }
                }
                changed = next_change(&mut watcher) => {
                    let now = now();
                    let wall = SystemTime::now();
                    for family in families.iter_mut().filter(|f| changed.contains(&f.family)) {
                        family.external_change(now, &self.observers);
                        for observer in &self.observers {
                            observer.queued(family.family, wall);
                        }
                    }
                }
                _ = listing_progress.tick(), if families.is_empty() && source_open => {
                    report_listing_progress(&world.listing(), listing_started.elapsed());
                }
                event = events.next(), if source_open => {
                    let Some(event) = event else {
                        tracing::warn!("the source ended; keeping the last state");
                        source_open = false;
                        continue;
                    };
                    let mut delta = Delta::default();
                    world.apply(event, &mut delta);
                    for _ in 0..MAX_BATCH {
                        match events.next().now_or_never() {
                            Some(Some(event)) => world.apply(event, &mut delta),
                            Some(None) => { source_open = false; break; }
                            None => break,
                        }
                    }
                    if families.is_empty() {
                        if world.is_ready() {
                            node = self.node_state(&world);
                            families = own_writes.scope(self.build_families(&node)).await?;
                            watcher = self.open_watcher(&families, &own_writes);
                            let served: Vec<IpFamily> = families.iter().map(|f| f.family).collect();
                            node.warn_unresolved_settings(&self.config, &served, None);
                            self.report_node(&node);
                        }
                    } else {
                        self.absorb(&mut world, &mut node, &mut families, delta, started_at)?;
                    }
                    let (services, slices) = world.change_counts();
                    for observer in &self.observers {
                        observer.pending(services, slices);
                    }
                }
            }
        }
    }

    /// The nf_tables watcher of the served families (see
    /// [`nft_watch`](super::nft_watch)); `None` when the mode is not watched
    /// or the socket cannot be opened (then polling alone repairs drift).
    fn open_watcher(&self, families: &[FamilyState], own: &OwnWrites) -> Option<NftWatcher> {
        let served = families.iter().map(|f| f.family).collect();
        match NftWatcher::open(self.factory.mode(), served, own.clone()) {
            Ok(watcher) => {
                if watcher.is_some() {
                    tracing::info!(
                        "watching nf_tables notifications to repair external changes at once"
                    );
                }
                watcher
            }
            Err(error) => {
                tracing::info!(%error, "cannot watch nf_tables notifications; external changes are found by the periodic drift check only");
                None
            }
        }
    }

    fn node_state(&self, world: &World) -> NodeState {
        let mut state = NodeState::new(&self.options.node_name, self.options.bind_ip, world.node());
        if !world.watches_node() {
            state.health = NodeHealth {
                known: true,
                ..NodeHealth::default()
            };
        }
        state
    }

    fn report_node(&self, node: &NodeState) {
        for observer in &self.observers {
            observer.node(&node.health);
        }
    }

    /// Hands what changed to every family and requests their syncs.
    fn absorb(
        &self,
        world: &mut World,
        node: &mut NodeState,
        families: &mut [FamilyState],
        delta: Delta,
        started_at: SystemTime,
    ) -> Result<(), Error> {
        if delta.node {
            let mut new = self.node_state(world);
            new.keep_ips_of_unlisted(node);
            let served: Vec<IpFamily> = families.iter().map(|f| f.family).collect();
            new.warn_unresolved_settings(&self.config, &served, Some(node));
            if new.health != node.health {
                self.report_node(&new);
            }
            let watch_pod_cidrs = self.config.effective_detect_local_mode() == LocalMode::NodeCidr;
            match node.change_to(&new, watch_pod_cidrs) {
                NodeChange::Unchanged => {}
                // Backends are built from the node's primary IPs (and pod
                // CIDRs): like upstream's NodeManager, exit so that the
                // restart (the DaemonSet's) programs the new ones.
                NodeChange::Restart(why) => return Err(Error::Restart(why)),
                // The views carry the new node: a full sync applies it.
                NodeChange::FullSync => {
                    tracing::info!(node = %new.info.name, addresses = ?new.info.addresses, "the node changed; applying it with a full sync");
                    for family in families.iter_mut() {
                        family.pending.require_full();
                    }
                }
            }
            *node = new;
        }
        let now = now();
        let wall = SystemTime::now();
        for family in families.iter_mut() {
            let times = delta
                .trigger_times
                .iter()
                .filter(|(f, at)| *f == family.family && *at >= started_at);
            family.trigger_times.extend(times.map(|(_, at)| *at));
            if delta.services.is_empty() && !family.pending.is_full() {
                continue;
            }
            family.pending.touch_all(delta.services.iter().cloned());
            family.runner.request(now);
            for observer in &self.observers {
                observer.queued(family.family, wall);
            }
        }
        Ok(())
    }

    /// Builds one backend per servable family, primary first.
    async fn build_families(&self, node: &NodeState) -> Result<Vec<FamilyState>, Error> {
        let explicit = self.options.families.is_some();
        let wanted = self
            .options
            .families
            .clone()
            .unwrap_or_else(|| node.families());
        let mut families = Vec::new();
        let mut first_error = None;
        for family in wanted {
            match self.build_family(node, family).await {
                Ok(state) => families.push(state),
                Err(error) if families.is_empty() && first_error.is_none() => {
                    tracing::error!(%family, error = %error_chain(&error), "cannot serve the primary IP family");
                    first_error = Some(error);
                }
                Err(error) => {
                    let level_info = !explicit;
                    if level_info {
                        tracing::info!(%family, reason = %error_chain(&error), "not serving this IP family (single-stack)");
                    } else {
                        tracing::error!(%family, error = %error_chain(&error), "cannot serve this IP family");
                    }
                }
            }
        }
        if families.is_empty() {
            return Err(first_error.map_or_else(
                || Error::config("mode", "no IP family to serve"),
                Error::Backend,
            ));
        }
        if let Some(error) = first_error {
            tracing::warn!(error = %error_chain(&error), "serving the secondary family only");
        }
        let wall = SystemTime::now();
        for family in &families {
            tracing::info!(family = %family.family, mode = %family.backend.mode(), "serving");
            for observer in &self.observers {
                observer.queued(family.family, wall);
            }
        }
        Ok(families)
    }

    async fn build_family(
        &self,
        node: &NodeState,
        family: IpFamily,
    ) -> Result<FamilyState, BackendError> {
        let ctx = BackendContext::new(self.config.clone(), node.info.clone(), family)
            .map_err(|e| BackendError::config(e.to_string()))?
            .with_commands(self.options.commands.clone());
        self.factory.check(&ctx).await?;
        let backend = self.factory.build(&ctx)?;
        let mut state = FamilyState::new(
            backend,
            node.info.clone(),
            family,
            &self.options.timing,
            now(),
        );
        state.progress = ctx.progress;
        Ok(state)
    }
}

/// Reads `source` until it delivered its initial lists; returns the
/// topology and this node's object (for `--dry-run`).
pub async fn initial_state(
    source: Box<dyn Source>,
    node_name: &str,
) -> Result<(ServiceTopology, Option<Node>), Error> {
    let mut world = World::new(node_name, source.kinds());
    let mut events = source.events();
    let mut delta = Delta::default();
    while !world.is_ready() {
        let Some(event) = events.next().await else {
            return Err(Error::Kube(
                "the source ended before delivering its initial lists".to_string(),
            ));
        };
        world.apply(event, &mut delta);
    }
    let node = world.node().cloned();
    Ok((world.topology, node))
}

/// Removes what the modes other than `mode` left behind, as upstream does on
/// start-up: iptables and ipvs share chain names, so neither cleans the
/// other. Failures are logged, never fatal.
pub async fn cleanup_other_modes(
    registry: &Registry,
    mode: ProxyMode,
    contexts: &[BackendContext],
) {
    let shares_chains = |a: ProxyMode, b: ProxyMode| {
        matches!(
            (a, b),
            (ProxyMode::Iptables, ProxyMode::Ipvs) | (ProxyMode::Ipvs, ProxyMode::Iptables)
        )
    };
    for factory in registry.iter() {
        let other = factory.mode();
        if other == mode || shares_chains(mode, other) {
            continue;
        }
        for ctx in contexts {
            match factory.cleanup_leftovers(ctx).await {
                Ok(()) => {
                    tracing::debug!(mode = %other, family = %ctx.family, "cleaned up leftovers")
                }
                Err(error) => {
                    tracing::warn!(mode = %other, family = %ctx.family, error = %error_chain(&error), "cleaning up leftovers failed")
                }
            }
        }
    }
}
