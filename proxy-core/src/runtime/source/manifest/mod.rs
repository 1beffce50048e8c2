//! [`ManifestSource`]: Services and EndpointSlices from YAML files, watched
//! for changes.

mod files;
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

/// Reads Services and EndpointSlices from a manifest file or a directory of
/// them (`*.yaml`, `*.yml`, `*.json`; multi-document, `kind: List`).
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
        let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            let _ = changed_tx.send(());
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
                        tracing::error!(%error, "manifest scan failed");
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

fn apply_event(object: &ManifestObject, initial: bool) -> SourceEvent {
    match (object.clone(), initial) {
        (ManifestObject::Service(s), true) => SourceEvent::Service(Update::InitApply(s)),
        (ManifestObject::Service(s), false) => SourceEvent::Service(Update::Apply(s)),
        (ManifestObject::EndpointSlice(s), true) => {
            SourceEvent::EndpointSlice(Update::InitApply(s))
        }
        (ManifestObject::EndpointSlice(s), false) => SourceEvent::EndpointSlice(Update::Apply(s)),
    }
}

fn initial_events(objects: &BTreeMap<ObjectId, ManifestObject>) -> Vec<SourceEvent> {
    let mut events = vec![SourceEvent::Service(Update::Init)];
    events.extend(
        objects
            .values()
            .filter(|o| matches!(o, ManifestObject::Service(_)))
            .map(|o| apply_event(o, true)),
    );
    events.push(SourceEvent::Service(Update::InitDone));
    events.push(SourceEvent::EndpointSlice(Update::Init));
    events.extend(
        objects
            .values()
            .filter(|o| matches!(o, ManifestObject::EndpointSlice(_)))
            .map(|o| apply_event(o, true)),
    );
    events.push(SourceEvent::EndpointSlice(Update::InitDone));
    events
}

fn diff_events(
    old: &BTreeMap<ObjectId, ManifestObject>,
    new: &BTreeMap<ObjectId, ManifestObject>,
) -> Vec<SourceEvent> {
    let mut events = Vec::new();
    for (id, object) in new {
        if old.get(id) != Some(object) {
            events.push(apply_event(object, false));
        }
    }
    for (id, object) in old {
        if !new.contains_key(id) {
            events.push(match object.clone() {
                ManifestObject::Service(s) => SourceEvent::Service(Update::Delete(s)),
                ManifestObject::EndpointSlice(s) => SourceEvent::EndpointSlice(Update::Delete(s)),
            });
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
