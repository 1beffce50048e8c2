//! [`IpvsBackend`]: upstream's IPVS mode, one backend per IP family.
//!
//! Each sync diffs the desired state of the view against the kernel's
//! (nothing is rewritten that is already right). A full sync rebuilds the
//! whole [`Table`] and trusts nothing; a partial one recomputes only the
//! changed service ports and touches only what they change (see
//! `table.rs`). Between syncs, `dataplane_lost` verifies the IPVS table
//! (`verify.rs`) and `next_resync` asks for a sync while a real server
//! drains. What a sync programs:
//!
//! 1. the sysctls upstream sets (`vs/conntrack`, `expire_nodest_conn`, …);
//! 2. `kube-ipvs0` with every ClusterIP and every external and
//!    load-balancer IP that is not a node address bound, stale ones
//!    unbound (each family's backend only its own family's addresses: the
//!    link is shared);
//! 3. one virtual server per (ClusterIP, port, protocol), per (node IP,
//!    node port, protocol) on the non-loopback addresses `nodePortAddresses`
//!    selects, and per external and load-balancer IP, the scheduler of
//!    `ipvs.scheduler`, ClientIP affinity as persistence; masquerading
//!    real servers of weight 1; a real server that goes away gets weight 0
//!    and is deleted once IPVS counts no connection to it (TCP; UDP and
//!    SCTP at once, as upstream), or after [`DRAIN_BOUND`];
//! 4. upstream's ipsets (`KUBE-CLUSTER-IP`, `KUBE-LOOP-BACK`,
//!    `KUBE-IPVS-IPS`, `KUBE-NODE-PORT-*`, `KUBE-EXTERNAL-IP*`,
//!    `KUBE-LOAD-BALANCER*`, `KUBE-HEALTH-CHECK-NODE-PORT`; `KUBE-6-…` of
//!    family `inet6` for IPv6) through `ipset restore`;
//! 5. upstream's chains (`loadBalancerSourceRanges` among them) through
//!    `iptables-restore --noflush` (`ip6tables-restore` for IPv6) and its
//!    jump rules, with `backend-iptables`' iptables layer.

mod desired;
mod dummy;
mod ipset_sizes;
mod plan;
mod rules;
mod sysctls;
mod table;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_iptables::render::RenderConfig;
use ipnet::IpNet;
use proxy_core::backend::{Backend, BackendContext, BackendError};
use proxy_core::exec::iptables::Iptables;
use proxy_core::exec::{Command, Executor};
use proxy_core::{Capabilities, ChangeSet, IpFamily, NodeView, ProxyMode, SyncStats};

use crate::error::IpvsError;
use crate::host::Host;
use crate::netlink::{Destination, IpvsNetlink, IpvsProtocol, ServiceKey, Timeouts};

use desired::Desired;
pub(crate) use dummy::node_addresses;
use plan::{KernelTable, Operation, plan};
use table::Table;

/// How long a removed TCP real server may drain before it is deleted even
/// with connections left.
pub const DRAIN_BOUND: Duration = Duration::from_secs(15 * 60);

/// How soon a sync re-examines draining real servers
/// ([`Backend::next_resync`] while one drains). Upstream's
/// graceful-termination manager checks every minute (`rsCheckDeleteInterval`);
/// here a check is a partial sync that reads only the draining virtual
/// servers (no command, no write unless one is done), so it runs often
/// enough that a finished real server does not linger.
pub const DRAIN_RECHECK: Duration = Duration::from_secs(2);

/// The IPVS mode's backend for one family.
///
/// [`render`](Backend::render) (`--dry-run`) shows node-port virtual
/// servers only after a sync has read the node's addresses.
pub struct IpvsBackend {
    ctx: BackendContext,
    exec: Arc<dyn Executor>,
    host: Arc<dyn Host>,
    render: RenderConfig,
    scheduler: String,
    ipvs: Option<IpvsNetlink>,
    iptables: Option<Iptables>,
    applied_rules: Option<String>,
    draining: HashMap<(ServiceKey, IpAddr, u16), Instant>,
    /// The desired state of the last successful sync, per service port
    /// (rebuilt by full syncs, with the node IPs node ports are served on).
    table: Option<Table>,
    /// `kube-ipvs0`'s addresses after the last successful sync (re-read
    /// by full syncs).
    bound: Option<BTreeSet<IpAddr>>,
    /// Whether `MASQUERADE --random-fully` works (asked once).
    random_fully: Option<bool>,
    /// Where the periodic verify's window of real servers starts.
    verify_cursor: Option<ServiceKey>,
    /// `ipvs.excludeCIDRs`: virtual servers there that no Service wants are
    /// left alone (another tool's), as upstream's cleanup of stale ones.
    exclude_cidrs: Vec<IpNet>,
}

impl std::fmt::Debug for IpvsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsBackend")
            .field("family", &self.ctx.family)
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl IpvsBackend {
    /// The backend of `ctx`, running commands through `exec` (sync) and
    /// `host` (cleanup). Nothing touches the kernel before the first sync.
    pub fn new(
        ctx: &BackendContext,
        exec: Arc<dyn Executor>,
        host: Arc<dyn Host>,
    ) -> Result<Self, BackendError> {
        Ok(IpvsBackend {
            render: RenderConfig::from_context(ctx),
            scheduler: ctx.config.effective_scheduler().to_string(),
            ctx: ctx.clone(),
            exec,
            host,
            ipvs: None,
            iptables: None,
            applied_rules: None,
            draining: HashMap::new(),
            table: None,
            bound: None,
            random_fully: None,
            verify_cursor: None,
            exclude_cidrs: ctx
                .config
                .ipvs
                .exclude_cidrs
                .iter()
                .flatten()
                .filter_map(|cidr| cidr.parse().ok())
                .collect(),
        })
    }

    /// The node IPs of this family that `nodePortAddresses` selects.
    fn select_node_ips(&self, addresses: BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
        addresses
            .into_iter()
            .filter(|ip| IpFamily::of(ip) == self.ctx.family)
            .filter(|ip| {
                self.ctx
                    .node_port_cidrs
                    .as_ref()
                    .is_none_or(|cidrs| cidrs.iter().any(|c| c.contains(ip)))
            })
            .collect()
    }

    /// What this backend wants in the kernel for `view`, read-only (no
    /// sync, nothing touched): per service port its virtual servers, ipset
    /// entries and `kube-ipvs0` addresses, and the mode's chains; node
    /// ports on the addresses of `node_addresses` that `nodePortAddresses`
    /// selects, as a sync does (read them with
    /// [`crate::wanted::node_addresses`]). `kube-proxy diff` compares it
    /// with the live state ([`crate::wanted::WantedState::compare`]).
    pub fn wanted(
        &self,
        view: &NodeView,
        node_addresses: BTreeSet<IpAddr>,
    ) -> crate::wanted::WantedState {
        let node_ips = self.select_node_ips(node_addresses);
        let parts = view
            .iter()
            .map(|(name, port_view)| {
                let desired = Desired::of_port(
                    name,
                    port_view,
                    &self.scheduler,
                    &node_ips,
                    self.render.node_ip,
                );
                crate::wanted::PortParts {
                    name: name.to_string(),
                    services: desired
                        .services
                        .values()
                        .map(|s| (s.service.clone(), s.servers.values().copied().collect()))
                        .collect(),
                    entries: rules::ipset_entries(&desired),
                    vips: desired.vips.clone(),
                }
            })
            .collect();
        let set_names = rules::ipset_entries(&Desired::default())
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        crate::wanted::WantedState::of_parts(
            self.ctx.family,
            parts,
            set_names,
            node_ips,
            self.exclude_cidrs.clone(),
        )
    }

    async fn sync_inner(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, IpvsError> {
        // A partial sync builds on the table and addresses of the last
        // successful sync (taken out: a failed sync leaves none, so the
        // next one is full); without them it is a full one.
        let previous = self.table.take().zip(self.bound.take());
        let full = changes.is_full() || previous.is_none();
        sysctls::apply(self.ctx.config.ipvs.strict_arp, self.ctx.family)?;
        let exec = self.exec.clone();
        let (table, delta, mut bound) = match previous {
            Some((mut table, bound)) if !full => {
                let delta = table.update(view, changes.ports());
                (table, Some(delta), bound)
            }
            _ => {
                let node_ips = self.select_node_ips(dummy::node_addresses()?);
                let table = Table::build(view, &self.scheduler, &node_ips, self.render.node_ip);
                // kube-ipvs0, and this family's addresses on it as the
                // kernel has them
                (table, None, dummy::ensure_device(self.ctx.family)?)
            }
        };
        let node_ips = table.node_ips();
        let mut written = 0;

        let (add, remove): (BTreeSet<IpAddr>, BTreeSet<IpAddr>) = match &delta {
            None => (
                table.vips().difference(&bound).copied().collect(),
                bound
                    .iter()
                    .filter(|ip| !table.has_vip(ip))
                    .copied()
                    .collect(),
            ),
            Some(delta) => (
                delta.vips_added.difference(&bound).copied().collect(),
                delta.vips_removed.intersection(&bound).copied().collect(),
            ),
        };

        // the IPVS table: ours are the services on kube-ipvs0's addresses
        if self.ipvs.is_none() {
            self.ipvs = Some(IpvsNetlink::open()?);
        }
        let Some(ipvs) = self.ipvs.as_mut() else {
            return Err(IpvsError::NoIpvs);
        };
        if full {
            // ipvs.tcpTimeout, tcpFinTimeout, udpTimeout (0 leaves one as is)
            let config = &self.ctx.config.ipvs;
            let secs = |d: proxy_core::config::Duration| {
                u32::try_from(d.to_std().as_secs()).unwrap_or(u32::MAX)
            };
            let want = Timeouts {
                tcp: secs(config.tcp_timeout),
                tcp_fin: secs(config.tcp_fin_timeout),
                udp: secs(config.udp_timeout),
            };
            if want != Timeouts::default() {
                let have = ipvs.timeouts()?;
                let differs = |w: u32, h: u32| w != 0 && w != h;
                if differs(want.tcp, have.tcp)
                    || differs(want.tcp_fin, have.tcp_fin)
                    || differs(want.udp, have.udp)
                {
                    ipvs.set_timeouts(&want)?;
                    written += 1;
                }
            }
        }
        // A partial sync looks only at the virtual servers of the changed
        // ports (before and after) and at draining ones; a full sync at all.
        let scope: Option<BTreeSet<ServiceKey>> = delta.as_ref().map(|delta| {
            let mut keys = delta.keys.clone();
            keys.extend(self.draining.keys().map(|(k, _, _)| *k));
            keys
        });
        let in_scope = |k: &ServiceKey| scope.as_ref().is_none_or(|s| s.contains(k));
        let exclude = &self.exclude_cidrs;
        let owned = |k: &ServiceKey| {
            in_scope(k)
                && (table.has_vip(&k.address)
                    || ((bound.contains(&k.address) || node_ips.contains(&k.address))
                        && !excluded(exclude, &k.address)))
        };
        let wanted = table.services(scope.as_ref());
        let listed = match &scope {
            None => ipvs.services()?,
            Some(keys) => {
                let mut services = Vec::with_capacity(keys.len());
                for key in keys {
                    services.extend(ipvs.service(key)?);
                }
                services
            }
        };
        let mut kernel = KernelTable::new();
        for service in listed {
            if owned(&service.key) {
                let destinations = ipvs.destinations(&service.key)?;
                kernel.insert(service.key, (service, destinations));
            }
        }
        let now = Instant::now();
        let draining = &mut self.draining;
        let terminated = |key: &ServiceKey, d: &Destination| {
            let since = *draining
                .entry((*key, d.server.address, d.server.port))
                .or_insert(now);
            key.protocol != IpvsProtocol::Tcp
                || d.active_connections + d.inactive_connections == 0
                || now.duration_since(since) >= DRAIN_BOUND
        };
        let operations = plan(&kernel, &wanted, owned, terminated);
        // new addresses before new services, so the first packet finds both
        written += dummy::rebind(&add, &BTreeSet::new())?;
        bound.extend(&add);
        for op in &operations {
            apply(ipvs, op)?;
        }
        written += operations.len();
        written += dummy::rebind(&BTreeSet::new(), &remove)?;
        bound.retain(|ip| !remove.contains(ip));
        self.draining.retain(|(key, ip, port), _| {
            kernel_has(&kernel, key, *ip, *port)
                && !operations.contains(&Operation::DeleteServer(*key, *ip, *port))
        });

        // ipsets (a full sync rewrites them, a partial one adds and deletes
        // the entries that changed), then the rules that use them
        let sets = match &delta {
            None => table.ipset_restore(self.ctx.family),
            Some(delta) => delta.ipset_restore(self.ctx.family),
        };
        if !sets.is_empty() {
            let command = Command::new("ipset", ["restore"]).with_stdin(sets);
            let output = exec
                .run(&command)
                .await
                .map_err(|source| IpvsError::Spawn {
                    program: "ipset".into(),
                    source,
                })?;
            if !output.success() {
                return Err(IpvsError::command(&command, &output));
            }
            written += 1;
        }
        if self.iptables.is_none() {
            self.iptables = Some(Iptables::detect(exec.clone(), self.ctx.family).await?);
        }
        let Some(iptables) = self.iptables.as_ref() else {
            return Err(IpvsError::NoIpvs);
        };
        let random_fully = match self.random_fully {
            Some(known) => known,
            None => *self.random_fully.insert(iptables.has_random_fully().await),
        };
        // the rules of a small table with the same filled sets: the same
        // text, without formatting every set entry
        let text = rules::iptables_restore(&self.render, &table.rules_shape(), random_fully);
        if full || self.applied_rules.as_ref() != Some(&text) {
            iptables.restore(&text).await?;
            rules::ensure_jumps(iptables).await?;
            self.applied_rules = Some(text);
            written += 1;
        }
        let virtual_servers = table.service_count() as u64;
        self.table = Some(table);
        self.bound = Some(bound);
        Ok(SyncStats {
            full,
            ports_written: operations
                .iter()
                .map(Operation::key)
                .collect::<BTreeSet<_>>()
                .len(),
            objects_written: written,
            totals: vec![("ipvs_virtual_servers".into(), virtual_servers)],
        })
    }
}

/// Whether `address` is in one of `ipvs.excludeCIDRs`.
pub(crate) fn excluded(exclude: &[IpNet], address: &IpAddr) -> bool {
    exclude.iter().any(|cidr| cidr.contains(address))
}

fn kernel_has(kernel: &KernelTable, key: &ServiceKey, ip: IpAddr, port: u16) -> bool {
    kernel.get(key).is_some_and(|(_, ds)| {
        ds.iter()
            .any(|d| d.server.address == ip && d.server.port == port)
    })
}

fn apply(ipvs: &mut IpvsNetlink, op: &Operation) -> Result<(), IpvsError> {
    match op {
        Operation::NewService(s) => ipvs.new_service(s),
        Operation::SetService(s) => ipvs.set_service(s),
        Operation::DeleteService(k) => ipvs.delete_service(k),
        Operation::NewServer(k, s) => ipvs.new_destination(k, s),
        Operation::SetServer(k, s) => ipvs.set_destination(k, s),
        Operation::DeleteServer(k, ip, port) => ipvs.delete_destination(k, *ip, *port),
    }
}

fn backend_error(error: IpvsError) -> BackendError {
    let message = format!("IPVS sync: {error}");
    let backend_error = if matches!(error, IpvsError::NoIpvs) {
        BackendError::unsupported(message)
    } else {
        BackendError::dataplane(message)
    };
    backend_error.with_source(error)
}

#[async_trait::async_trait]
impl Backend for IpvsBackend {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Ipvs
    }

    /// ClusterIP, node-port, external-IP and load-balancer traffic (TCP,
    /// UDP, SCTP), `loadBalancerSourceRanges`, ClientIP affinity, hairpin
    /// and masquerade per the local-traffic detector, in either family.
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        if changes.is_full() {
            self.applied_rules = None;
        }
        self.sync_inner(view, changes).await.map_err(backend_error)
    }

    /// The periodic verify: the IPVS table over netlink against the last
    /// sync's (see `verify.rs`); reads only, writes nothing, runs no
    /// command. Before the first sync, nothing is lost.
    async fn dataplane_lost(&mut self) -> bool {
        let (Some(table), Some(ipvs)) = (self.table.as_ref(), self.ipvs.as_mut()) else {
            return false;
        };
        match verify::drift(
            ipvs,
            table,
            &self.draining,
            &mut self.verify_cursor,
            self.ctx.family,
            &self.exclude_cidrs,
        ) {
            Ok(None) => false,
            Ok(Some(what)) => {
                tracing::warn!(%what, "the IPVS table was changed from outside");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the IPVS table to verify it");
                true
            }
        }
    }

    /// While a real server drains, a sync within [`DRAIN_RECHECK`] to
    /// delete it once its connections are gone.
    fn next_resync(&self) -> Option<Duration> {
        (!self.draining.is_empty()).then_some(DRAIN_RECHECK)
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.bound = None;
        self.table = None;
        self.applied_rules = None;
        self.draining.clear();
        crate::cleanup::cleanup_leftovers(self.host.as_ref(), self.ctx.family)
            .await
            .map_err(BackendError::from)
    }

    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        let node_ips: BTreeSet<IpAddr> = self
            .table
            .as_ref()
            .map(|t| t.node_ips().clone())
            .unwrap_or_default();
        let desired = Desired::of(view, &self.scheduler, &node_ips, self.render.node_ip);
        let mut out = String::from("# kube-ipvs0 addresses\n");
        for vip in &desired.vips {
            let _ = writeln!(out, "{vip}");
        }
        out.push_str("# IPVS virtual servers\n");
        let services: BTreeMap<_, _> = desired.services.iter().collect();
        for (key, s) in services {
            let _ = write!(out, "{key} {}", s.service.scheduler);
            if s.service.timeout > 0 {
                let _ = write!(out, " persistent {}", s.service.timeout);
            }
            out.push('\n');
            for server in s.servers.values() {
                let _ = writeln!(
                    out,
                    "  -> {} masq {}",
                    std::net::SocketAddr::new(server.address, server.port),
                    server.weight
                );
            }
        }
        out.push_str("# ipset restore\n");
        out.push_str(&rules::ipset_restore(
            &rules::ipset_entries(&desired),
            self.ctx.family,
        ));
        out.push_str("# iptables-restore --noflush\n");
        out.push_str(&rules::iptables_restore(&self.render, &desired, true));
        Ok(out)
    }
}
