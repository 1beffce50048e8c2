//! [`ManifestSource`]: Services, EndpointSlices and the Node from YAML
//! files, watched for changes.

mod files;
mod node;
mod parse;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::error::{Error, ObjectKind};

use super::{Source, SourceEvent, Update};

use files::Files;
pub use parse::{ManifestObject, ObjectError, ObjectId, ParsedManifests, parse_manifests};

/// Reads Services, EndpointSlices and Nodes from a manifest file or a
/// directory of them (`*.yaml`, `*.yml`, `*.json`; multi-document,
/// `kind: List`).
///
/// A `kind: Node` stands for the Node object of a cluster: the one named
/// like this node (`hostnameOverride`) gives kube-proxy the node's IPs
/// (`status.addresses`), pod CIDRs (`spec.podCIDRs`) and zone (labels), and
/// deleting it from the files is the Node's deletion. The runtime ignores
/// Nodes of other names. A Node is optional, so [`Source::kinds`] does not
/// list it: without one, kube-proxy knows only its name and `bindAddress`,
/// and `/healthz` does not wait for a Node. Nodes are delivered ahead of
/// the Services and EndpointSlices, so the first sync already knows the
/// node.
///
/// The directory (or the file's directory) is watched with inotify, which
/// also sees editors' rename-on-save and ConfigMap symlink swaps; a periodic
/// rescan covers what a watch can miss. A file or object that fails to parse
/// is logged once, naming the file and the object, and its last good state
/// stays in effect.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    path: PathBuf,
    rescan_interval: Duration,
    debounce: Duration,
}

impl ManifestSource {
    /// The default interval of the fallback rescan.
    pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(30);

    /// A source reading `path`, which must exist.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        std::fs::metadata(&path).map_err(|source| Error::Io {
            context: format!("reading manifests {}", path.display()),
            source,
        })?;
        Ok(ManifestSource {
            path,
            rescan_interval: Self::DEFAULT_RESCAN_INTERVAL,
            debounce: Duration::from_millis(100),
        })
    }

    /// Sets the interval of the fallback rescan.
    pub fn with_rescan_interval(mut self, interval: Duration) -> Self {
        self.rescan_interval = interval;
        self
    }

    /// The directory to watch.
    fn watched_dir(&self) -> PathBuf {
        if self.path.is_dir() {
            return self.path.clone();
        }
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    async fn run(self, events: mpsc::UnboundedSender<SourceEvent>) {
        let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Our own reads of the files are events too: only what may change
            // a file's content (or a failed watch) triggers a rescan.
            if event.is_err() || event.is_ok_and(|e| may_change_content(&e.kind)) {
                let _ = changed_tx.send(());
            }
        })
        .and_then(|mut watcher| {
            notify::Watcher::watch(
                &mut watcher,
                &self.watched_dir(),
                notify::RecursiveMode::NonRecursive,
            )?;
            Ok(watcher)
        });
        let _watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, interval = ?self.rescan_interval, "cannot watch manifests; rescanning periodically only");
                None
            }
        };
        let mut files = Files::default();
        let mut current = BTreeMap::new();
        let mut first = true;
        loop {
            let (scanned, next) = {
                let path = self.path.clone();
                match tokio::task::spawn_blocking(move || {
                    let objects = files.scan(&path);
                    (files, objects)
                })
                .await
                {
                    Ok(result) => result,
                    Err(error) => {
                        tracing::error!(path = %self.path.display(), %error, "manifest scan failed");
                        return;
                    }
                }
            };
            files = scanned;
            let batch = if first {
                initial_events(&next)
            } else {
                diff_events(&current, &next)
            };
            first = false;
            current = next;
            for event in batch {
                if events.send(event).is_err() {
                    return;
                }
            }
            tokio::select! {
                () = events.closed() => return,
                () = tokio::time::sleep(self.rescan_interval) => {}
                Some(()) = changed.recv() => {
                    tokio::time::sleep(self.debounce).await;
                    while changed.try_recv().is_ok() {}
                }
            }
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Part of the initial list.
    Listed,
    /// Added or modified.
    Applied,
    /// Deleted.
    Deleted,
}

/// The event that tells `change` of `object`.
/// Whether a watch event may have changed a file: anything but opening,
/// reading, or closing a file that was only read.
fn may_change_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

fn object_event(object: &ManifestObject, change: Change) -> SourceEvent {
    fn update<K>(object: K, change: Change) -> Update<K> {
        match change {
            Change::Listed => Update::InitApply(object),
            Change::Applied => Update::Apply(object),
            Change::Deleted => Update::Delete(object),
        }
    }
    match object.clone() {
        ManifestObject::Service(s) => SourceEvent::Service(update(s, change)),
        ManifestObject::EndpointSlice(s) => SourceEvent::EndpointSlice(update(s, change)),
        ManifestObject::Node(n) => SourceEvent::Node(update(n, change)),
    }
}

/// `Init` (or `InitDone` when `done`) of `kind`.
fn list_event(kind: ObjectKind, done: bool) -> SourceEvent {
    fn update<K>(done: bool) -> Update<K> {
        if done { Update::InitDone } else { Update::Init }
    }
    match kind {
        ObjectKind::Service => SourceEvent::Service(update(done)),
        ObjectKind::EndpointSlice => SourceEvent::EndpointSlice(update(done)),
        ObjectKind::Node => SourceEvent::Node(update(done)),
    }
}

/// The initial list of each kind, Nodes first: the runtime is ready once
/// the Services and EndpointSlices are listed, and then knows the Node.
fn initial_events(objects: &BTreeMap<ObjectId, ManifestObject>) -> Vec<SourceEvent> {
    let mut events = Vec::new();
    for kind in [
        ObjectKind::Node,
        ObjectKind::Service,
        ObjectKind::EndpointSlice,
    ] {
        events.push(list_event(kind, false));
        events.extend(
            objects
                .iter()
                .filter(|(id, _)| id.kind == kind)
                .map(|(_, o)| object_event(o, Change::Listed)),
        );
        events.push(list_event(kind, true));
    }
    events
}

/// The events that turn `old` into `new`: `Apply` per added or changed
/// object, `Delete` per removed one.
fn diff_events(
    old: &BTreeMap<ObjectId, ManifestObject>,
    new: &BTreeMap<ObjectId, ManifestObject>,
) -> Vec<SourceEvent> {
    let mut events = Vec::new();
    for (id, object) in new {
        if old.get(id) != Some(object) {
            events.push(object_event(object, Change::Applied));
        }
    }
    for (id, object) in old {
        if !new.contains_key(id) {
            events.push(object_event(object, Change::Deleted));
        }
    }
    events
}

impl Source for ManifestSource {
    fn kinds(&self) -> Vec<ObjectKind> {
        vec![ObjectKind::Service, ObjectKind::EndpointSlice]
    }

    fn events(self: Box<Self>) -> BoxStream<'static, SourceEvent> {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        tokio::spawn(self.run(sender));
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(text: &str) -> BTreeMap<ObjectId, ManifestObject> {
        let parsed = parse_manifests(text).unwrap();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.objects.into_iter().map(|o| (o.id(), o)).collect()
    }

    fn describe(events: &[SourceEvent]) -> Vec<String> {
        fn name<
            K: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
        >(
            kind: ObjectKind,
            update: &Update<K>,
        ) -> String {
            let named = |what: &str, o: &K| {
                format!(
                    "{kind} {what} {}",
                    o.metadata().name.clone().unwrap_or_default()
                )
            };
            match update {
                Update::Init => format!("{kind} Init"),
                Update::InitDone => format!("{kind} InitDone"),
                Update::InitApply(o) => named("InitApply", o),
                Update::Apply(o) => named("Apply", o),
                Update::Delete(o) => named("Delete", o),
            }
        }
        events
            .iter()
            .map(|e| match e {
                SourceEvent::Service(u) => name(ObjectKind::Service, u),
                SourceEvent::EndpointSlice(u) => name(ObjectKind::EndpointSlice, u),
                SourceEvent::Node(u) => name(ObjectKind::Node, u),
            })
            .collect()
    }

    const WORLD: &str = "
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 172.30.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
";

    #[test]
    fn the_initial_list_delivers_nodes_first() {
        let events = initial_events(&objects(WORLD));
        assert_eq!(
            describe(&events),
            [
                "Node Init",
                "Node InitApply node-a",
                "Node InitDone",
                "Service Init",
                "Service InitApply web",
                "Service InitDone",
                "EndpointSlice Init",
                "EndpointSlice InitDone",
            ]
        );
    }

    #[test]
    fn a_node_removed_from_the_files_is_deleted() {
        let before = objects(WORLD);
        let changed = objects(&WORLD.replace("10.0.0.1", "10.0.0.2"));
        assert_eq!(
            describe(&diff_events(&before, &changed)),
            ["Node Apply node-a"]
        );
        let without = objects(WORLD.split("---").next().unwrap());
        assert_eq!(
            describe(&diff_events(&changed, &without)),
            ["Node Delete node-a"]
        );
    }
}
