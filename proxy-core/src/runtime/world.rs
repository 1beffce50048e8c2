//! The world as the sources describe it: the [`ServiceTopology`], this
//! node's object, and the bookkeeping between them and the loop (what a
//! (re)list has delivered so far, initial-list gating, change counts,
//! trigger times).
//!
//! # Lists and relists
//!
//! A (re)list (`Init`, `InitApply` per object, `InitDone`) is applied as it
//! arrives: each `InitApply` goes into the topology at once and records its
//! change in the [`Delta`] exactly as an `Apply` would; the list keeps only
//! the names it delivered ([`Listing`]), never the objects, so a relist
//! costs the memory of one object at a time plus a set of names instead of
//! a second copy of every object. At `InitDone`, the objects of that kind
//! the list did not name are deleted (and their logged errors forgotten):
//! deletions only ever come from a complete list. An `Init` arriving while
//! a list is in progress (the watcher restarted mid-list) starts the set of
//! names again, so nothing is deleted on the strength of an aborted list.
//!
//! The world is not ready until every required kind's first list completed
//! and the sync loop programs nothing before that, so the first list never
//! programs a partial world. During a later relist, objects that changed
//! are programmed as they arrive, like watch events; objects that are gone
//! are removed at `InitDone`. A relist that finds nothing new changes
//! nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::{InvalidObject, ObjectKind};
use crate::model::{IpFamily, ServiceKey};
use crate::topology::{Applied, ServiceTopology};

use super::source::{SourceEvent, Update};

/// The EndpointSlice annotation that records when the change it carries was
/// triggered; the base of `network_programming_duration_seconds`.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// What applying some events changed.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// Services whose validated state changed.
    pub services: BTreeSet<ServiceKey>,
    /// The Node object changed.
    pub node: bool,
    /// Trigger times of applied EndpointSlices, with their family.
    pub trigger_times: Vec<(IpFamily, SystemTime)>,
}

impl Delta {
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.services.is_empty() && !self.node && self.trigger_times.is_empty()
    }
}

/// A (re)list of one kind in progress: the names of the objects it
/// delivered so far (the objects themselves are applied on arrival).
#[derive(Debug, Default)]
struct Listing {
    /// `Some` between `Init` and `InitDone`.
    seen: Option<HashSet<ObjectName>>,
}

impl Listing {
    /// Starts a (re)list, forgetting any list that was in progress.
    fn start(&mut self) {
        self.seen = Some(HashSet::new());
    }

    /// Notes that the list in progress delivered `name` (nothing when no
    /// list is in progress: the object is then a plain update).
    fn saw(&mut self, name: ObjectName) {
        if let Some(seen) = &mut self.seen {
            seen.insert(name);
        }
    }

    /// Ends the list in progress, returning the names it delivered; `None`
    /// for an `InitDone` without an `Init`, which deletes nothing.
    fn finish(&mut self) -> Option<HashSet<ObjectName>> {
        self.seen.take()
    }

    /// Objects of the (re)list in progress received so far.
    fn received(&self) -> usize {
        self.seen.as_ref().map_or(0, HashSet::len)
    }
}

type ObjectName = (String, String);

fn name_of(meta: &ObjectMeta) -> ObjectName {
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The sources' world, fed event by event.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) topology: ServiceTopology,
    node_name: String,
    node: Option<Node>,
    required: HashSet<ObjectKind>,
    listed: HashSet<ObjectKind>,
    services: Listing,
    slices: Listing,
    nodes: Listing,
    /// Invalid fields last logged, per object: each is logged once per change.
    logged: HashMap<(ObjectKind, ObjectName), Vec<InvalidObject>>,
    changed_services: HashSet<ObjectName>,
    changed_slices: HashSet<ObjectName>,
}

impl World {
    /// An empty world that is ready once every kind in `required` delivered
    /// its initial list.
    pub(crate) fn new(node_name: &str, required: impl IntoIterator<Item = ObjectKind>) -> Self {
        World {
            topology: ServiceTopology::new(),
            node_name: node_name.to_string(),
            node: None,
            required: required.into_iter().collect(),
            listed: HashSet::new(),
            services: Listing::default(),
            slices: Listing::default(),
            nodes: Listing::default(),
            logged: HashMap::new(),
            changed_services: HashSet::new(),
            changed_slices: HashSet::new(),
        }
    }

    /// Whether every required kind delivered its initial list.
    pub(crate) fn is_ready(&self) -> bool {
        self.required.is_subset(&self.listed)
    }

    /// Whether the node's health follows its Node object: the sources must
    /// deliver it (`Node` is among the required kinds: the API server), or
    /// a source that may deliver one did (a manifest directory holding this
    /// node's Node). Otherwise there is no Node to be ineligible by.
    pub(crate) fn watches_node(&self) -> bool {
        self.required.contains(&ObjectKind::Node) || self.node.is_some()
    }

    /// This node's object, if known.
    pub(crate) fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Distinct Services and EndpointSlices changed since
    /// [`World::clear_change_counts`].
    pub(crate) fn change_counts(&self) -> (usize, usize) {
        (self.changed_services.len(), self.changed_slices.len())
    }

    /// The required kinds whose initial list is not complete yet, with the
    /// objects of each received so far.
    pub(crate) fn listing(&self) -> Vec<(ObjectKind, usize)> {
        [
            (ObjectKind::Service, self.services.received()),
            (ObjectKind::EndpointSlice, self.slices.received()),
            (ObjectKind::Node, self.nodes.received()),
        ]
        .into_iter()
        .filter(|(kind, _)| self.required.contains(kind) && !self.listed.contains(kind))
        .collect()
    }

    pub(crate) fn clear_change_counts(&mut self) {
        self.changed_services.clear();
        self.changed_slices.clear();
    }

    /// Applies one event, adding what it changed to `delta`.
    pub(crate) fn apply(&mut self, event: SourceEvent, delta: &mut Delta) {
        match event {
            SourceEvent::Service(update) => self.service_update(update, delta),
            SourceEvent::EndpointSlice(update) => self.slice_update(update, delta),
            SourceEvent::Node(update) => self.node_update(update, delta),
        }
    }

    fn service_update(&mut self, update: Update<Service>, delta: &mut Delta) {
        match update {
            Update::Init => self.services.start(),
            Update::InitApply(svc) => {
                self.services.saw(name_of(&svc.metadata));
                self.apply_service(&svc, delta);
            }
            Update::InitDone => {
                if let Some(seen) = self.services.finish() {
                    let gone: Vec<ServiceKey> = self
                        .topology
                        .services()
                        .map(|s| &s.key)
                        .filter(|k| !seen.contains(&(k.namespace.clone(), k.name.clone())))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.delete_service(&key.namespace, &key.name, delta);
                    }
                    self.forget_logged(ObjectKind::Service, &seen);
                }
                self.listed.insert(ObjectKind::Service);
            }
            Update::Apply(svc) => self.apply_service(&svc, delta),
            Update::Delete(svc) => {
                let (ns, name) = name_of(&svc.metadata);
                self.logged
                    .remove(&(ObjectKind::Service, (ns.clone(), name.clone())));
                self.delete_service(&ns, &name, delta);
            }
        }
    }

    fn slice_update(&mut self, update: Update<EndpointSlice>, delta: &mut Delta) {
        match update {
            Update::Init => self.slices.start(),
            Update::InitApply(slice) => {
                self.slices.saw(name_of(&slice.metadata));
                self.apply_slice(&slice, delta);
            }
            Update::InitDone => {
                if let Some(seen) = self.slices.finish() {
                    let gone: Vec<ObjectName> = self
                        .topology
                        .slice_names()
                        .filter(|n| !seen.contains(*n))
                        .cloned()
                        .collect();
                    for (ns, name) in gone {
                        self.delete_slice(&ns, &name, delta);
                    }
                    self.forget_logged(ObjectKind::EndpointSlice, &seen);
                }
                self.listed.insert(ObjectKind::EndpointSlice);
            }
            Update::Apply(slice) => self.apply_slice(&slice, delta),
            Update::Delete(slice) => {
                let (ns, name) = name_of(&slice.metadata);
                self.logged
                    .remove(&(ObjectKind::EndpointSlice, (ns.clone(), name.clone())));
                self.delete_slice(&ns, &name, delta);
            }
        }
    }

    fn node_update(&mut self, update: Update<Node>, delta: &mut Delta) {
        match update {
            Update::Init => self.nodes.start(),
            Update::InitApply(node) => {
                self.nodes.saw(name_of(&node.metadata));
                self.set_node(Some(node), delta);
            }
            Update::InitDone => {
                // Only this node's object matters: the list either
                // delivered (and so applied) it, or it is gone.
                if let Some(seen) = self.nodes.finish()
                    && !seen.iter().any(|(_, name)| *name == self.node_name)
                {
                    self.set_node(None, delta);
                }
                self.listed.insert(ObjectKind::Node);
            }
            Update::Apply(node) => self.set_node(Some(node), delta),
            Update::Delete(node) => {
                if self.is_mine(&node) {
                    self.set_node(None, delta);
                }
            }
        }
    }

    /// Forgets the logged errors of the objects of `kind` a complete list
    /// did not deliver: they are gone.
    fn forget_logged(&mut self, kind: ObjectKind, seen: &HashSet<ObjectName>) {
        self.logged
            .retain(|(logged_kind, name), _| *logged_kind != kind || seen.contains(name));
    }

    /// Whether `node` is this node's object; logs (debug) the others, which
    /// a manifest directory may hold.
    fn is_mine(&self, node: &Node) -> bool {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let mine = name == self.node_name;
        if !mine {
            tracing::debug!(node = name, this_node = %self.node_name, "ignoring the Node object of another node");
        }
        mine
    }

    fn set_node(&mut self, node: Option<Node>, delta: &mut Delta) {
        if node.as_ref().is_some_and(|n| !self.is_mine(n)) {
            return;
        }
        // Compare what matters, not the resourceVersion or status heartbeats.
        let relevant = |n: &Option<Node>| {
            n.as_ref().map(|n| {
                (
                    n.metadata.labels.clone(),
                    n.metadata.deletion_timestamp.clone(),
                    n.spec.clone(),
                    n.status.as_ref().and_then(|s| s.addresses.clone()),
                )
            })
        };
        if relevant(&self.node) != relevant(&node) {
            delta.node = true;
        }
        self.node = node;
    }

    fn apply_service(&mut self, svc: &Service, delta: &mut Delta) {
        let name = name_of(&svc.metadata);
        let applied = self.topology.apply_service(svc);
        if !applied.changed.is_empty() {
            self.changed_services.insert(name.clone());
        }
        self.record(ObjectKind::Service, name, applied, delta);
    }

    fn delete_service(&mut self, namespace: &str, name: &str, delta: &mut Delta) {
        if let Some(key) = self.topology.delete_service(namespace, name) {
            self.changed_services
                .insert((namespace.to_string(), name.to_string()));
            delta.services.insert(key);
        }
    }

    fn apply_slice(&mut self, slice: &EndpointSlice, delta: &mut Delta) {
        let name = name_of(&slice.metadata);
        let applied = self.topology.apply_endpoint_slice(slice);
        if !applied.changed.is_empty() {
            self.changed_slices.insert(name.clone());
            if let Some(at) = trigger_time(slice) {
                let family = if slice.address_type == "IPv6" {
                    IpFamily::V6
                } else {
                    IpFamily::V4
                };
                delta.trigger_times.push((family, at));
            }
        }
        self.record(ObjectKind::EndpointSlice, name, applied, delta);
    }

    fn delete_slice(&mut self, namespace: &str, name: &str, delta: &mut Delta) {
        if let Some(key) = self.topology.delete_endpoint_slice(namespace, name) {
            self.changed_slices
                .insert((namespace.to_string(), name.to_string()));
            delta.services.insert(key);
        }
    }

    /// Notes what an object's application changed and logs its invalid
    /// fields, once per distinct set of errors.
    fn record(&mut self, kind: ObjectKind, name: ObjectName, applied: Applied, delta: &mut Delta) {
        delta.services.extend(applied.changed);
        let key = (kind, name);
        if applied.errors.is_empty() {
            self.logged.remove(&key);
            return;
        }
        if self.logged.get(&key) != Some(&applied.errors) {
            for error in &applied.errors {
                tracing::error!(
                    kind = %error.kind,
                    object = %error.object,
                    field = %error.field,
                    "{error}"
                );
            }
            self.logged.insert(key, applied.errors);
        }
    }
}

/// The slice's `endpoints.kubernetes.io/last-change-trigger-time`, if set
/// and valid.
fn trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let text = slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)?;
    match text.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(ts) => Some(SystemTime::from(ts)),
        Err(error) => {
            tracing::debug!(annotation = TRIGGER_TIME_ANNOTATION, value = %text, %error, "ignoring unparsable trigger time");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80, "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    fn slice(name: &str, svc: &str, ip: &str) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": svc},
                         "annotations": {TRIGGER_TIME_ANNOTATION: "2026-01-02T03:04:05Z"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip]}],
            "ports": [{"port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    }

    fn relist(world: &mut World, services: Vec<Service>, slices: Vec<EndpointSlice>) -> Delta {
        let mut delta = Delta::default();
        world.apply(SourceEvent::Service(Update::Init), &mut delta);
        for s in services {
            world.apply(SourceEvent::Service(Update::InitApply(s)), &mut delta);
        }
        world.apply(SourceEvent::Service(Update::InitDone), &mut delta);
        world.apply(SourceEvent::EndpointSlice(Update::Init), &mut delta);
        for s in slices {
            world.apply(SourceEvent::EndpointSlice(Update::InitApply(s)), &mut delta);
        }
        world.apply(SourceEvent::EndpointSlice(Update::InitDone), &mut delta);
        delta
    }

    #[test]
    fn ready_only_after_every_initial_list() {
        let mut world = World::new("n1", [ObjectKind::Service, ObjectKind::EndpointSlice]);
        let mut delta = Delta::default();
        world.apply(SourceEvent::Service(Update::Init), &mut delta);
        world.apply(SourceEvent::Service(Update::InitDone), &mut delta);
        assert!(!world.is_ready());
        world.apply(SourceEvent::EndpointSlice(Update::Init), &mut delta);
        assert!(!world.is_ready());
        world.apply(SourceEvent::EndpointSlice(Update::InitDone), &mut delta);
        assert!(world.is_ready());
    }

    fn keys(delta: &Delta) -> Vec<ServiceKey> {
        delta.services.iter().cloned().collect()
    }

    fn service_keys(world: &World) -> Vec<ServiceKey> {
        world.topology.services().map(|s| s.key.clone()).collect()
    }

    #[test]
    fn an_unchanged_relist_changes_nothing() {
        let mut world = World::new("n1", [ObjectKind::Service, ObjectKind::EndpointSlice]);
        let first = relist(
            &mut world,
            vec![service("a", "172.30.0.1"), service("b", "172.30.0.2")],
            vec![slice("a-1", "a", "10.0.0.1")],
        );
        assert_eq!(first.services.len(), 2);
        assert_eq!(first.trigger_times.len(), 1);

        let same = relist(
            &mut world,
            vec![service("a", "172.30.0.1"), service("b", "172.30.0.2")],
            vec![slice("a-1", "a", "10.0.0.1")],
        );
        assert!(
            same.is_empty(),
            "an unchanged relist changes nothing: {same:?}"
        );
        assert_eq!(world.topology.service_count(), 2);
        assert_eq!(world.topology.slice_names().count(), 1);
    }

    #[test]
    fn a_relist_applies_objects_on_arrival_and_deletes_missing_ones_at_init_done() {
        let mut world = World::new("n1", [ObjectKind::Service, ObjectKind::EndpointSlice]);
        let _ = relist(
            &mut world,
            vec![service("a", "172.30.0.1"), service("b", "172.30.0.2")],
            vec![slice("a-1", "a", "10.0.0.1"), slice("b-1", "b", "10.0.0.2")],
        );

        let mut delta = Delta::default();
        world.apply(SourceEvent::Service(Update::Init), &mut delta);
        world.apply(
            SourceEvent::Service(Update::InitApply(service("a", "172.30.0.9"))),
            &mut delta,
        );
        assert_eq!(
            keys(&delta),
            [ServiceKey::new("ns", "a")],
            "a changed object applies as it arrives"
        );
        assert_eq!(
            world
                .topology
                .service(&ServiceKey::new("ns", "a"))
                .map(|s| s.ports(IpFamily::V4)[0].cluster_ip),
            Some("172.30.0.9".parse().unwrap())
        );
        world.apply(
            SourceEvent::Service(Update::InitApply(service("c", "172.30.0.3"))),
            &mut delta,
        );
        assert_eq!(
            keys(&delta),
            [ServiceKey::new("ns", "a"), ServiceKey::new("ns", "c")],
            "a new object applies as it arrives"
        );
        assert_eq!(
            world.topology.service_count(),
            3,
            "b, not listed yet, stays until the list is complete"
        );
        world.apply(SourceEvent::Service(Update::InitDone), &mut delta);
        assert_eq!(
            keys(&delta),
            [
                ServiceKey::new("ns", "a"),
                ServiceKey::new("ns", "b"),
                ServiceKey::new("ns", "c")
            ],
            "b, missing from the complete list, is deleted at InitDone"
        );
        assert_eq!(world.topology.service_count(), 2);
        assert!(
            world
                .topology
                .service(&ServiceKey::new("ns", "b"))
                .is_none()
        );

        // Slices alike: a changed slice applies on arrival (with its
        // trigger time), a missing one goes at InitDone.
        let mut delta = Delta::default();
        world.apply(SourceEvent::EndpointSlice(Update::Init), &mut delta);
        world.apply(
            SourceEvent::EndpointSlice(Update::InitApply(slice("a-1", "a", "10.0.0.7"))),
            &mut delta,
        );
        assert_eq!(keys(&delta), [ServiceKey::new("ns", "a")]);
        assert_eq!(delta.trigger_times.len(), 1);
        assert_eq!(world.topology.slice_names().count(), 2);
        world.apply(SourceEvent::EndpointSlice(Update::InitDone), &mut delta);
        assert_eq!(
            keys(&delta),
            [ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b")]
        );
        assert_eq!(
            world.topology.slice_names().cloned().collect::<Vec<_>>(),
            [("ns".to_string(), "a-1".to_string())]
        );
    }

    #[test]
    fn an_interrupted_list_deletes_nothing_and_the_next_list_starts_afresh() {
        let mut world = World::new("n1", [ObjectKind::Service, ObjectKind::EndpointSlice]);
        let _ = relist(
            &mut world,
            vec![service("a", "172.30.0.1"), service("b", "172.30.0.2")],
            vec![],
        );

        // The watcher restarts mid-list: the aborted list named a and b and
        // brought c; nothing is deleted on its account.
        let mut delta = Delta::default();
        world.apply(SourceEvent::Service(Update::Init), &mut delta);
        for (name, ip) in [
            ("a", "172.30.0.1"),
            ("b", "172.30.0.2"),
            ("c", "172.30.0.3"),
        ] {
            world.apply(
                SourceEvent::Service(Update::InitApply(service(name, ip))),
                &mut delta,
            );
        }
        world.apply(SourceEvent::Service(Update::Init), &mut delta);
        assert_eq!(keys(&delta), [ServiceKey::new("ns", "c")]);
        assert_eq!(
            world.topology.service_count(),
            3,
            "an aborted list deletes nothing"
        );
        assert_eq!(
            world.listing(),
            [],
            "the kinds were listed once: the world stays ready"
        );
        assert!(world.is_ready());

        // The complete list names only a: what the aborted list saw does
        // not count, so b and c go.
        world.apply(
            SourceEvent::Service(Update::InitApply(service("a", "172.30.0.1"))),
            &mut delta,
        );
        assert_eq!(world.topology.service_count(), 3);
        world.apply(SourceEvent::Service(Update::InitDone), &mut delta);
        assert_eq!(service_keys(&world), [ServiceKey::new("ns", "a")]);
        assert_eq!(
            keys(&delta),
            [ServiceKey::new("ns", "b"), ServiceKey::new("ns", "c")]
        );
    }

    #[test]
    fn an_initial_list_restarted_midway_keeps_the_world_not_ready() {
        let mut world = World::new("n1", [ObjectKind::Service]);
        let mut delta = Delta::default();
        world.apply(SourceEvent::Service(Update::Init), &mut delta);
        world.apply(
            SourceEvent::Service(Update::InitApply(service("a", "172.30.0.1"))),
            &mut delta,
        );
        world.apply(SourceEvent::Service(Update::Init), &mut delta);
        assert!(!world.is_ready());
        assert_eq!(
            world.listing(),
            [(ObjectKind::Service, 0)],
            "a restarted list counts again from zero"
        );
        world.apply(
            SourceEvent::Service(Update::InitApply(service("b", "172.30.0.2"))),
            &mut delta,
        );
        world.apply(SourceEvent::Service(Update::InitDone), &mut delta);
        assert!(world.is_ready());
        assert_eq!(service_keys(&world), [ServiceKey::new("ns", "b")]);
    }

    #[test]
    fn a_relist_forgets_the_logged_errors_of_objects_it_no_longer_holds() {
        let mut world = World::new("n1", [ObjectKind::Service, ObjectKind::EndpointSlice]);
        let bad: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "bad"},
            "spec": {"clusterIP": "172.30.0.5", "clusterIPs": ["172.30.0.5"],
                     "ports": [{"port": 80, "protocol": "TCP"}, {"port": 99999, "protocol": "TCP"}]}
        }))
        .unwrap();
        let _ = relist(
            &mut world,
            vec![service("a", "172.30.0.1"), bad.clone()],
            vec![],
        );
        let bad_key = (ObjectKind::Service, ("ns".to_string(), "bad".to_string()));
        assert!(world.logged.contains_key(&bad_key), "{:?}", world.logged);
        let _ = relist(&mut world, vec![service("a", "172.30.0.1"), bad], vec![]);
        assert!(
            world.logged.contains_key(&bad_key),
            "a listed object keeps its logged errors"
        );
        let _ = relist(&mut world, vec![service("a", "172.30.0.1")], vec![]);
        assert!(world.logged.is_empty(), "{:?}", world.logged);
    }

    #[test]
    fn a_node_relist_applies_this_node_on_arrival_and_removes_it_only_at_init_done() {
        let mut world = World::new("n1", [ObjectKind::Node]);
        let node = |name: &str, zone: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}
            }))
            .unwrap()
        };
        let mut delta = Delta::default();
        world.apply(SourceEvent::Node(Update::Init), &mut delta);
        world.apply(
            SourceEvent::Node(Update::InitApply(node("n1", "z1"))),
            &mut delta,
        );
        assert!(delta.node && world.node().is_some());
        world.apply(SourceEvent::Node(Update::InitDone), &mut delta);
        assert!(world.is_ready());

        let mut delta = Delta::default();
        world.apply(SourceEvent::Node(Update::Init), &mut delta);
        world.apply(
            SourceEvent::Node(Update::InitApply(node("n1", "z1"))),
            &mut delta,
        );
        world.apply(SourceEvent::Node(Update::InitDone), &mut delta);
        assert!(!delta.node, "an unchanged Node relist changes nothing");

        world.apply(SourceEvent::Node(Update::Init), &mut delta);
        world.apply(
            SourceEvent::Node(Update::InitApply(node("n2", "z2"))),
            &mut delta,
        );
        assert!(
            !delta.node && world.node().is_some(),
            "another node's object changes nothing, and this node stays until the list is complete"
        );
        world.apply(SourceEvent::Node(Update::InitDone), &mut delta);
        assert!(delta.node && world.node().is_none());
    }

    #[test]
    fn change_counts_are_distinct_objects() {
        let mut world = World::new("n1", [ObjectKind::Service, ObjectKind::EndpointSlice]);
        let _ = relist(
            &mut world,
            vec![service("a", "172.30.0.1")],
            vec![slice("a-1", "a", "10.0.0.1")],
        );
        assert_eq!(world.change_counts(), (1, 1));
        world.clear_change_counts();
        let mut delta = Delta::default();
        world.apply(
            SourceEvent::EndpointSlice(Update::Apply(slice("a-1", "a", "10.0.0.2"))),
            &mut delta,
        );
        world.apply(
            SourceEvent::EndpointSlice(Update::Apply(slice("a-1", "a", "10.0.0.3"))),
            &mut delta,
        );
        assert_eq!(world.change_counts(), (0, 1));
        world.apply(
            SourceEvent::EndpointSlice(Update::Delete(slice("a-1", "a", "10.0.0.3"))),
            &mut delta,
        );
        assert_eq!(world.topology.slice_names().count(), 0);
    }

    #[test]
    fn node_changes_count_only_when_relevant_fields_change() {
        let mut world = World::new("n1", [ObjectKind::Node]);
        let node = |zone: &str, rv: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n1", "resourceVersion": rv, "labels": {"topology.kubernetes.io/zone": zone}}
            }))
            .unwrap()
        };
        let mut delta = Delta::default();
        world.apply(
            SourceEvent::Node(Update::Apply(node("z1", "1"))),
            &mut delta,
        );
        assert!(delta.node);
        let mut delta = Delta::default();
        world.apply(
            SourceEvent::Node(Update::Apply(node("z1", "2"))),
            &mut delta,
        );
        assert!(!delta.node);
        world.apply(
            SourceEvent::Node(Update::Apply(node("z2", "3"))),
            &mut delta,
        );
        assert!(delta.node);
        let other: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n2"}})).unwrap();
        let mut delta = Delta::default();
        world.apply(SourceEvent::Node(Update::Apply(other.clone())), &mut delta);
        assert!(!delta.node && world.node().is_some());
        world.apply(SourceEvent::Node(Update::Delete(other)), &mut delta);
        assert!(!delta.node && world.node().is_some());
    }

    #[test]
    fn an_optional_node_governs_health_only_while_present() {
        // A manifest source: Node is not a required kind, but may come.
        let mut world = World::new("n1", [ObjectKind::Service, ObjectKind::EndpointSlice]);
        let node = |name: &str| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
        };
        let mut delta = Delta::default();
        world.apply(SourceEvent::Node(Update::Init), &mut delta);
        world.apply(SourceEvent::Node(Update::InitApply(node("n2"))), &mut delta);
        world.apply(SourceEvent::Node(Update::InitDone), &mut delta);
        assert!(!delta.node && world.node().is_none() && !world.watches_node());
        assert!(
            !world.is_ready(),
            "the Node list does not make the world ready"
        );

        world.apply(SourceEvent::Node(Update::Apply(node("n1"))), &mut delta);
        assert!(delta.node && world.watches_node());

        let mut delta = Delta::default();
        world.apply(SourceEvent::Node(Update::Delete(node("n1"))), &mut delta);
        assert!(delta.node && world.node().is_none() && !world.watches_node());

        let required = World::new("n1", [ObjectKind::Node]);
        assert!(
            required.watches_node(),
            "a required Node is watched while unknown"
        );
    }

    #[test]
    fn listing_names_the_kinds_still_listing_with_the_objects_received_so_far() {
        let mut world = World::new("n1", [ObjectKind::Service, ObjectKind::EndpointSlice]);
        let mut delta = Delta::default();
        assert_eq!(
            world.listing(),
            [(ObjectKind::Service, 0), (ObjectKind::EndpointSlice, 0)]
        );
        world.apply(SourceEvent::Service(Update::Init), &mut delta);
        for (name, ip) in [("a", "10.96.0.1"), ("b", "10.96.0.2")] {
            world.apply(
                SourceEvent::Service(Update::InitApply(service(name, ip))),
                &mut delta,
            );
        }
        assert_eq!(
            world.listing(),
            [(ObjectKind::Service, 2), (ObjectKind::EndpointSlice, 0)]
        );
        world.apply(SourceEvent::Service(Update::InitDone), &mut delta);
        assert_eq!(world.listing(), [(ObjectKind::EndpointSlice, 0)]);
    }
}
