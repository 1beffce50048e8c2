//! Renders a [`NodeView`] into upstream's iptables layout.
//!
//! The output is split the way partial syncs need it: the top-level chains
//! (rewritten on every sync) and, per service port, its own chains
//! (`KUBE-SVC/SVL/EXT/FW/SEP-…`, written only when the port changed).
//! [`crate::restore`] assembles an `iptables-restore` input from it.

mod config;
mod port;
mod text;
mod top;

use std::fmt::Write as _;
use std::sync::Arc;

use proxy_core::{NodeView, ServicePortName, ServicePortView};

pub use config::{NodePortDestinations, RenderConfig};

use crate::names::{
    KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS,
    KUBE_POSTROUTING, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};

/// Above this many endpoints in total, upstream's "large cluster mode" drops
/// the comments of `KUBE-SVC → KUBE-SEP` and `KUBE-SEP` rules.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// A block of `iptables-restore` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lines {
    text: String,
    count: usize,
}

impl Lines {
    /// Appends one line (without its newline).
    pub fn push(&mut self, args: std::fmt::Arguments<'_>) {
        // Writing to a String cannot fail.
        let _ = self.text.write_fmt(args);
        self.text.push('\n');
        self.count += 1;
    }

    /// Appends one line made of `parts` (faster than formatting for the
    /// hottest rules).
    pub fn push_parts(&mut self, parts: &[&str]) {
        for part in parts {
            self.text.push_str(part);
        }
        self.text.push('\n');
        self.count += 1;
    }

    /// Empty, with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        Lines {
            text: String::with_capacity(bytes),
            count: 0,
        }
    }

    /// Reserves room for `bytes` more bytes.
    pub fn reserve(&mut self, bytes: usize) {
        self.text.reserve(bytes);
    }

    /// The text, one line per entry, each ending in `\n`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text, kept without a copy.
    pub fn into_string(self) -> String {
        self.text
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no line.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Appends a formatted line to a [`Lines`].
macro_rules! line {
    ($lines:expr, $($arg:tt)*) => {
        $lines.push(format_args!($($arg)*))
    };
}
pub(crate) use line;

/// The chains and rules one service port owns in the nat table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// The port.
    pub name: ServicePortName,
    /// Its chains, in creation order.
    pub chains: Vec<String>,
    /// The rules of those chains.
    pub rules: Lines,
}

impl PortRules {
    /// No chain yet, with room for the rules of `view`: about 200 bytes per
    /// rule, two rules per endpoint chain, one or two per endpoint in each
    /// policy chain, a few per port.
    fn empty(name: &ServicePortName, view: &ServicePortView) -> Self {
        let endpoints = view.cluster.len() + view.local.len();
        PortRules {
            name: name.clone(),
            chains: Vec::with_capacity(endpoints + 3),
            rules: Lines::with_capacity(600 + endpoints * 450),
        }
    }
}

/// A rendered ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// filter chains, all top-level.
    pub filter_chains: Vec<&'static str>,
    /// filter rules.
    pub filter_rules: Lines,
    /// Top-level nat chains.
    pub nat_chains: Vec<&'static str>,
    /// Rules of the top-level nat chains.
    pub nat_rules: Lines,
    /// Per service port, in view order, for the ports that were rendered in
    /// full (see [`render`]).
    pub ports: Vec<PortRules>,
    /// Whether large-cluster mode was on.
    pub large_cluster: bool,
}

impl Ruleset {
    /// Number of rules (not chain declarations) in the nat table.
    pub fn nat_rule_count(&self) -> usize {
        self.nat_rules.len() + self.ports.iter().map(|p| p.rules.len()).sum::<usize>()
    }
}

/// Renders `view`. The own chains of a port are rendered only when
/// `full_port(name)` is true; the others contribute only their top-level
/// rules (their chains are assumed to be in place already).
pub fn render(
    cfg: &RenderConfig,
    view: &NodeView,
    mut full_port: impl FnMut(&ServicePortName) -> bool,
) -> Ruleset {
    let large_cluster = is_large_cluster(view);
    let mut out = Ruleset {
        filter_chains: vec![
            KUBE_NODEPORTS,
            KUBE_SERVICES,
            KUBE_EXTERNAL_SERVICES,
            KUBE_FORWARD,
            KUBE_PROXY_FIREWALL,
        ],
        nat_chains: vec![
            KUBE_NODEPORTS,
            KUBE_SERVICES,
            KUBE_MARK_MASQ,
            KUBE_POSTROUTING,
        ],
        large_cluster,
        ..Ruleset::default()
    };
    if cfg.localhost_node_ports {
        out.filter_chains.push(KUBE_FIREWALL);
    }
    out.nat_rules.reserve(view.len() * 160);
    top::masquerade_rules(cfg, &mut out.nat_rules);
    let mut ports = port::PortRenderer::new(cfg, large_cluster);
    for (name, spv) in view.iter() {
        let mut own = full_port(name).then(|| PortRules::empty(name, spv));
        ports.render(
            name,
            spv,
            &mut out.filter_rules,
            &mut out.nat_rules,
            own.as_mut(),
        );
        out.ports.extend(own);
    }
    top::node_port_jump(cfg, &mut out.nat_rules);
    top::filter_rules(cfg, &mut out.filter_rules);
    out
}

/// The own chains and rules of `ports` (ports of `view`), as [`render`]
/// gives them for ports rendered in full, without the top-level rules: a
/// chunk of a cold start rendered when it is written, so that the whole
/// ruleset is never in memory at once.
pub fn render_own<'a>(
    cfg: &RenderConfig,
    view: &NodeView,
    ports: impl IntoIterator<Item = (&'a ServicePortName, &'a Arc<ServicePortView>)>,
) -> Vec<PortRules> {
    let mut renderer = port::PortRenderer::new(cfg, is_large_cluster(view));
    // The ports' top-level rules, not wanted here.
    let (mut filter, mut nat) = (Lines::default(), Lines::default());
    ports
        .into_iter()
        .map(|(name, spv)| {
            let mut own = PortRules::empty(name, spv);
            renderer.render(name, spv, &mut filter, &mut nat, Some(&mut own));
            own
        })
        .collect()
}

/// Whether upstream's large-cluster mode is on for `view` (more than
/// [`LARGE_CLUSTER_ENDPOINTS`] endpoints).
pub fn is_large_cluster(view: &NodeView) -> bool {
    view.endpoint_count() > LARGE_CLUSTER_ENDPOINTS
}
