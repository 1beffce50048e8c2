//! `kube-proxy diff`: does the live dataplane match what the current
//! Services and EndpointSlices want? Renders the desired rules with the
//! mode's backend (as `--dry-run` does), reads the live ones (as `kube-proxy
//! trace` does), and compares them per service port: missing, extra, or
//! different (with the differing endpoints and rules); other modes' rules
//! are reported as leftovers. Exit 0 when equal, 1 when different, 2 when
//! it cannot tell. Changes nothing.

#[cfg(feature = "ipvs")]
pub mod ipvs;
pub mod model;
#[cfg(feature = "userspace")]
pub mod userspace;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use proxy_core::backend::BackendContext;
use proxy_core::runtime::{NodeState, RuntimeOptions, initial_state};
use proxy_core::{IpFamily, NodeView, ProxyMode};

use crate::trace::{InspectError, Rules, live};
use model::{Model, models};

pub use proxy_core::diff::{PortDiff, Status};

/// The comparison of one family.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiffReport {
    /// The mode compared.
    pub mode: String,
    /// `IPv4` / `IPv6`.
    pub family: String,
    /// Service ports compared (wanted or present).
    pub compared: usize,
    /// What differs.
    pub differences: Vec<PortDiff>,
}

/// Compares `desired` with `live` for `family`.
pub fn compare(mode: ProxyMode, family: IpFamily, desired: &Rules, live: &Rules) -> DiffReport {
    let (want, have) = models(desired, live, family);
    DiffReport {
        mode: mode.to_string(),
        family: family.to_string(),
        compared: want
            .keys()
            .chain(have.keys())
            .collect::<BTreeSet<_>>()
            .len(),
        differences: differences(&want, &have),
    }
}

fn differences(want: &Model, have: &Model) -> Vec<PortDiff> {
    let names: BTreeSet<&String> = want.keys().chain(have.keys()).collect();
    let empty = model::Group::default();
    let mut out = Vec::new();
    for name in names {
        let w = want.get(name).unwrap_or(&empty);
        let h = have.get(name).unwrap_or(&empty);
        if w == h {
            continue;
        }
        let missing_rules: Vec<String> = w
            .rules
            .iter()
            .filter(|(k, _)| !h.rules.contains_key(*k))
            .map(|(_, v)| v.clone())
            .collect();
        let extra_rules: Vec<String> = h
            .rules
            .iter()
            .filter(|(k, _)| !w.rules.contains_key(*k))
            .map(|(_, v)| v.clone())
            .collect();
        if missing_rules.is_empty() && extra_rules.is_empty() && w.endpoints == h.endpoints {
            continue;
        }
        let status = if h.rules.is_empty() {
            Status::Missing
        } else if w.rules.is_empty() {
            Status::Extra
        } else {
            Status::Different
        };
        out.push(PortDiff {
            service_port: name.clone(),
            status,
            missing_endpoints: w.endpoints.difference(&h.endpoints).copied().collect(),
            extra_endpoints: h.endpoints.difference(&w.endpoints).copied().collect(),
            missing_rules,
            extra_rules,
        });
    }
    out
}

fn list(set: &BTreeSet<SocketAddr>) -> String {
    set.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl DiffReport {
    /// Whether live and desired agree.
    pub fn equal(&self) -> bool {
        self.differences.is_empty()
    }

    /// As text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.equal() {
            let _ = writeln!(
                out,
                "{} {}: the live state matches the wanted one ({} service ports and shared rules compared)",
                self.mode, self.family, self.compared
            );
            return out;
        }
        let _ = writeln!(
            out,
            "{} {}: {} of {} differ",
            self.mode,
            self.family,
            self.differences.len(),
            self.compared
        );
        for d in &self.differences {
            let status = match d.status {
                Status::Missing => "MISSING  ",
                Status::Extra => "EXTRA    ",
                Status::Different => "DIFFERENT",
            };
            let _ = writeln!(out, "  {status} {}", d.service_port);
            if !d.missing_endpoints.is_empty() {
                let _ = writeln!(
                    out,
                    "      endpoints not programmed: {}",
                    list(&d.missing_endpoints)
                );
            }
            if !d.extra_endpoints.is_empty() {
                let _ = writeln!(
                    out,
                    "      endpoints programmed but not wanted: {}",
                    list(&d.extra_endpoints)
                );
            }
            for r in &d.missing_rules {
                let _ = writeln!(out, "      - {r}");
            }
            for r in &d.extra_rules {
                let _ = writeln!(out, "      + {r}");
            }
        }
        out
    }
}

/// The rules `mode` wants for `view` in `ctx`'s family, rendered by the
/// backend itself (iptables: its restore input; nftables: its transactions
/// applied to the in-memory table). The ipvs and userspace modes' wanted
/// state is built by `diff::ipvs` and `diff::userspace` instead.
pub async fn desired_rules(
    mode: ProxyMode,
    ctx: &BackendContext,
    view: &NodeView,
) -> Result<Rules, InspectError> {
    let _ = (ctx, view);
    match mode {
        #[cfg(feature = "iptables")]
        ProxyMode::Iptables => {
            use proxy_core::Backend as _;
            let backend = backend_iptables::IptablesBackend::new(ctx)
                .map_err(|e| InspectError::Rules(format!("building the iptables backend: {e}")))?;
            let text = backend
                .render(view)
                .map_err(|e| InspectError::Rules(format!("rendering the iptables rules: {e}")))?;
            live::parse(ProxyMode::Iptables, ctx.family, &text)
        }
        #[cfg(feature = "nftables")]
        ProxyMode::Nftables => {
            use backend_nftables::fake::{FakeExecutor, FakeNft, lock};
            use proxy_core::{Backend as _, ChangeSet};
            let fake = FakeNft::shared();
            let mut backend = backend_nftables::NftablesBackend::with_executor(
                ctx,
                Box::new(FakeExecutor::new(fake.clone())),
            );
            backend
                .sync(view, &ChangeSet::full())
                .await
                .map_err(|e| InspectError::Rules(format!("rendering the nftables rules: {e}")))?;
            let table = lock(&fake).table(ctx.family).cloned();
            Ok(Rules::Nftables(table))
        }
        other => Err(InspectError::Mode(format!(
            "{other} mode has no rules dump to render: diff compares iptables and nftables modes' rules, ipvs mode's virtual servers, ipsets and kube-ipvs0 addresses, and userspace mode's listener table, each as compiled into this binary"
        ))),
    }
}

/// `kube-proxy diff`'s command line: kube-proxy's own flags (the same
/// configuration, `--manifests` or the API server, `--hostname-override`,
/// `--proxy-mode`), plus the output format.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kube-proxy diff",
    about = "Compare the live rules of this network namespace with what the current Services and EndpointSlices want. Exit 0: equal, 1: different, 2: error. Changes nothing.",
    disable_version_flag = true
)]
pub struct DiffArgs {
    /// kube-proxy's flags.
    #[command(flatten)]
    pub flags: crate::Flags,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: crate::trace::Format,
}

/// What `diff` found over every family.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diff {
    /// Per family.
    pub families: Vec<DiffReport>,
    /// Other modes whose rules are installed too.
    pub leftovers: Vec<String>,
}

async fn execute(args: &DiffArgs) -> Result<Diff, InspectError> {
    let options = crate::Options::resolve(&args.flags).map_err(|e| InspectError::Usage(e.0))?;
    let installed = live::detect_live().await?;
    let wanted = args.flags.proxy_mode.or_else(|| {
        options
            .config_file
            .as_ref()
            .map(|_| options.config.effective_mode())
    });
    let mode = live::choose_mode(wanted, &installed)?;
    // Defaults depend on the mode (nftables serves node ports on the
    // primary IPs only): resolve again for the detected one.
    let options = if wanted.is_none() {
        let mut flags = args.flags.clone();
        flags.proxy_mode = Some(mode);
        crate::Options::resolve(&flags).map_err(|e| InspectError::Usage(e.0))?
    } else {
        options
    };
    let name = crate::options::node_name(&options.config).map_err(|e| InspectError::Usage(e.0))?;
    let source = crate::app::source(&options, &name)
        .await
        .map_err(|e| InspectError::Read {
            what: "Services and EndpointSlices".into(),
            detail: format!("{e:#}"),
        })?;
    let (topology, node) = initial_state(source, &name)
        .await
        .map_err(|e| InspectError::Read {
            what: "Services and EndpointSlices".into(),
            detail: e.to_string(),
        })?;
    let state = NodeState::new(
        &name,
        RuntimeOptions::new(&options.config, &name).bind_ip,
        node.as_ref(),
    );
    let config = Arc::new(options.config.clone());
    let mut families = Vec::new();
    for family in state.families() {
        let ctx = BackendContext::new(config.clone(), state.info.clone(), family)
            .map_err(|e| InspectError::Usage(e.to_string()))?;
        let view = NodeView::build(&topology, state.info.clone(), family);
        let live_rules = live::read_live_at(mode, family, metrics_address(&options)).await?;
        // ipvs: virtual servers, ipsets and addresses, compared as such
        #[cfg(feature = "ipvs")]
        if let Rules::Ipvs(live) = &live_rules {
            let wanted = ipvs::wanted(&ctx, &view)?;
            families.push(ipvs::report(family, &wanted, live));
            continue;
        }
        let desired = match &live_rules {
            // As the live proxy runs it: with or without redirect rules.
            #[cfg(feature = "userspace")]
            Rules::Userspace(live) => Rules::Userspace(Box::new(
                userspace::desired(&ctx, &view, live.table.redirecting).await?,
            )),
            #[allow(unreachable_patterns)]
            _ => desired_rules(mode, &ctx, &view).await?,
        };
        families.push(compare(mode, family, &desired, &live_rules));
    }
    let leftovers = installed
        .modes
        .iter()
        .filter(|m| **m != mode)
        .map(|m| format!("{m} mode's rules are installed too (leftovers? `kube-proxy --cleanup` removes every mode's rules)"))
        .collect();
    Ok(Diff {
        families,
        leftovers,
    })
}

/// Where the metrics server of the configuration listens (the userspace
/// mode's listener table): its `metricsBindAddress`, loopback for an
/// unspecified address.
fn metrics_address(options: &crate::Options) -> Option<SocketAddr> {
    let mut addr = options.config.metrics_socket_addr().ok().flatten()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(addr)
}

/// `kube-proxy diff ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    let args = match crate::parse_subcommand::<DiffArgs>("diff", args) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let diff = match crate::trace::block_on(execute(&args)).and_then(|r| r) {
        Ok(diff) => diff,
        Err(e) => {
            eprintln!("kube-proxy diff: {e}");
            return ExitCode::from(crate::trace::EXIT_ERROR);
        }
    };
    let text = match args.output {
        crate::trace::Format::Text => {
            let mut out: String = diff.families.iter().map(DiffReport::text).collect();
            for l in &diff.leftovers {
                out.push_str(&format!("leftover: {l}\n"));
            }
            out
        }
        crate::trace::Format::Json => match serde_json::to_string_pretty(&diff) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("kube-proxy diff: {e}");
                return ExitCode::from(crate::trace::EXIT_ERROR);
            }
        },
    };
    crate::trace::write_stdout(&text);
    if diff.families.iter().all(DiffReport::equal) && diff.leftovers.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
