//! [`RedirectState`]: what the backend keeps for redirect mode: the VIPs
//! each service port wants redirected, one listener per service port and
//! traffic class for them, and the table as written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use proxy_core::{IpFamily, ServicePortName, ServicePortView};

use super::rules::RedirectRules;
use super::table::{Action, Elements, Vip};
use crate::backend::ListenerFailure;
use crate::listener::{Listener, Sockets};
use crate::plan::{
    ListenerKey, ListenerSpec, RedirectSpec, TrafficClass, redirects_of, unspecified,
};
use crate::route::Route;
use proxy_core::backend::CommandLimits;

/// A redirect listener's identity: a service port and a traffic class.
pub(crate) type ListenerId = (ServicePortName, TrafficClass);

/// Redirect mode's part of the backend.
#[derive(Debug)]
pub(crate) struct RedirectState {
    family: IpFamily,
    sockets: Sockets,
    pub rules: RedirectRules,
    /// The VIPs each service port wants, as of the last sync.
    wanted: BTreeMap<ServicePortName, Vec<RedirectSpec>>,
    listeners: BTreeMap<ListenerId, Listener>,
    failures: BTreeMap<ListenerId, ListenerFailure>,
}

impl RedirectState {
    /// Nothing redirected yet; `sockets` says whether listeners and rules
    /// are real.
    pub fn new(family: IpFamily, sockets: Sockets, limits: CommandLimits) -> Self {
        RedirectState {
            family,
            sockets,
            rules: RedirectRules::new(family, sockets == Sockets::Real, limits),
            wanted: BTreeMap::new(),
            listeners: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    /// Brings `name`'s VIPs and listeners to `view` (None: removed).
    /// `route` gives the route of a listener (None when the port has no
    /// balancer). Returns the number of listeners opened or closed.
    pub fn sync_port(
        &mut self,
        name: &ServicePortName,
        view: Option<&ServicePortView>,
        route: impl Fn(TrafficClass) -> Option<Route>,
    ) -> usize {
        let specs = view.map_or_else(Vec::new, redirects_of);
        let mut written = 0;
        for class in [TrafficClass::Internal, TrafficClass::External] {
            let id = (name.clone(), class);
            let needed = specs.iter().any(|s| s.class == class && !s.reject);
            if !needed {
                written += usize::from(self.listeners.remove(&id).is_some());
                self.failures.remove(&id);
                continue;
            }
            if self.listeners.contains_key(&id) {
                continue;
            }
            if let (Some(view), Some(route)) = (view, route(class)) {
                written += usize::from(self.open(id, view, route));
            }
        }
        if specs.is_empty() {
            self.wanted.remove(name);
        } else {
            self.wanted.insert(name.clone(), specs);
        }
        written
    }

    fn open(&mut self, id: ListenerId, view: &ServicePortView, route: Route) -> bool {
        let spec = ListenerSpec {
            key: ListenerKey {
                protocol: view.port.protocol,
                addr: SocketAddr::new(unspecified(self.family), 0),
            },
            port: id.0.clone(),
            class: id.1,
            refuse: false,
        };
        match Listener::open_redirect(spec.clone(), route, self.sockets) {
            Ok(listener) => {
                tracing::debug!(service = %id.0, class = id.1.as_str(), bound = ?listener.bound(), "redirect listener opened");
                self.failures.remove(&id);
                self.listeners.insert(id, listener);
                true
            }
            Err(error) => {
                let reason = error.to_string();
                if self.failures.get(&id).is_none_or(|f| f.reason != reason) {
                    tracing::error!(service = %id.0, class = id.1.as_str(), %error, "cannot open redirect listener");
                }
                self.failures.insert(id, ListenerFailure { spec, reason });
                false
            }
        }
    }

    /// Retries the listeners that could not be opened.
    pub fn retry_failures(&mut self, route: impl Fn(&ListenerId) -> Option<Route>) -> usize {
        let retry: Vec<ListenerId> = self.failures.keys().cloned().collect();
        let mut written = 0;
        for id in retry {
            let (Some(route), Some(spec)) =
                (route(&id), self.failures.get(&id).map(|f| f.spec.clone()))
            else {
                continue;
            };
            match Listener::open_redirect(spec, route, self.sockets) {
                Ok(listener) => {
                    self.failures.remove(&id);
                    self.listeners.insert(id, listener);
                    written += 1;
                }
                Err(error) => {
                    tracing::debug!(service = %id.0, %error, "redirect listener still cannot be opened");
                }
            }
        }
        written
    }

    /// The redirect listeners that could not be opened.
    pub fn failures(&self) -> impl Iterator<Item = &ListenerFailure> {
        self.failures.values()
    }

    /// The number of redirect listeners open.
    pub fn listener_count(&self) -> usize {
        self.listeners.len()
    }

    /// Which service port handles each VIP: the first by name that wants
    /// it (two service ports claiming one VIP is a conflict the API should
    /// have refused; the order makes the outcome the same for every sync).
    pub fn owners(&self) -> BTreeMap<Vip, &RedirectSpec> {
        let mut owners = BTreeMap::new();
        for spec in self.wanted.values().flatten() {
            owners.entry(spec.vip).or_insert(spec);
        }
        owners
    }

    /// The port the listener `id` is bound to (`Some(0)` in a dry run).
    pub fn listener_port(&self, id: &ListenerId) -> Option<u16> {
        let listener = self.listeners.get(id)?;
        Some(match self.sockets {
            Sockets::Real => listener.bound()?.port(),
            Sockets::Dry => 0,
        })
    }

    /// The table's elements: each VIP redirected to its listener's port, or
    /// rejected. A VIP whose listener is not open gets no element.
    pub fn elements(&self) -> Elements {
        self.owners()
            .into_iter()
            .filter_map(|(vip, spec)| {
                let action = if spec.reject {
                    Action::Reject
                } else {
                    Action::Redirect(self.listener_port(&(spec.port.clone(), spec.class))?)
                };
                Some((vip, action))
            })
            .collect()
    }

    /// Each redirect listener with its state and the port it is bound to
    /// (`None` when nothing is bound: a dry run).
    pub fn listener_states(
        &self,
    ) -> impl Iterator<Item = (&ListenerId, &ListenerSpec, &'static str, Option<u16>)> {
        self.listeners
            .iter()
            .map(|(id, l)| (id, &l.spec, l.state(), l.bound().map(|b| b.port())))
    }

    /// Forgets everything (listeners close).
    pub fn clear(&mut self) {
        self.wanted.clear();
        self.listeners.clear();
        self.failures.clear();
    }

    /// Dump lines: VIPs, then listeners.
    pub fn dump(&self, out: &mut String) {
        for (vip, spec) in self.owners() {
            let verb = if spec.reject { "reject" } else { "redirect" };
            let _ = writeln!(out, "{verb} {vip} {} {}", spec.port, spec.class.as_str());
        }
        for ((name, class), listener) in &self.listeners {
            let _ = writeln!(
                out,
                "redirect-listener {} {name} {} {}",
                listener.spec.key.protocol.lower(),
                class.as_str(),
                listener.state()
            );
        }
        for (name, class) in self.failures.keys() {
            let _ = writeln!(out, "redirect-listener-failed {name} {}", class.as_str());
        }
    }
}
