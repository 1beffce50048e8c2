//! The manifest files' last good state and what changes between scans.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::parse::{ManifestObject, ObjectId, parse_manifests};

/// What one file last contributed.
#[derive(Debug, Default)]
struct FileState {
    /// The text last read, to skip unchanged files and log each problem once.
    text: Option<String>,
    /// Its last good objects.
    objects: BTreeMap<ObjectId, ManifestObject>,
}

/// Every manifest file under a path, with its last good objects.
#[derive(Debug, Default)]
pub(super) struct Files {
    files: BTreeMap<PathBuf, FileState>,
}

/// The manifest files of `path`: the file itself, or the directory's
/// `*.yaml`, `*.yml` and `*.json` files (not hidden, not recursive), sorted.
fn list(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let file = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let manifest = [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if manifest && !name.starts_with('.') && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

impl Files {
    /// Re-reads `path` and returns every object, merged over files in path
    /// order (a later file wins a duplicate). Problems are logged once per
    /// file content; a file that cannot be read or parsed keeps its last good
    /// objects, and so does an object that turned bad.
    pub(super) fn scan(&mut self, path: &Path) -> BTreeMap<ObjectId, ManifestObject> {
        match list(path) {
            Ok(present) => {
                self.files.retain(|file, _| {
                    let keep = present.contains(file);
                    if !keep {
                        tracing::info!(file = %file.display(), "manifest file removed");
                    }
                    keep
                });
                for file in present {
                    self.read(&file);
                }
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot list manifests; keeping the last good state");
            }
        }
        let mut merged: BTreeMap<ObjectId, (PathBuf, ManifestObject)> = BTreeMap::new();
        for (file, state) in &self.files {
            for (id, object) in &state.objects {
                if let Some((other, _)) = merged.insert(id.clone(), (file.clone(), object.clone()))
                {
                    tracing::warn!(object = %id, first = %other.display(), second = %file.display(), "object defined in two manifest files; the second wins");
                }
            }
        }
        merged
            .into_iter()
            .map(|(id, (_, object))| (id, object))
            .collect()
    }

    fn read(&mut self, file: &Path) {
        let state = self.files.entry(file.to_path_buf()).or_default();
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // Gone between listing and reading (a rename-on-save): next scan.
                return;
            }
            Err(error) => {
                tracing::error!(file = %file.display(), %error, "cannot read manifest file; keeping its last good objects");
                return;
            }
        };
        if state.text.as_deref() == Some(text.as_str()) {
            return;
        }
        match parse_manifests(&text) {
            Err(reason) => {
                tracing::error!(file = %file.display(), %reason, "invalid manifest file; keeping its last good objects");
            }
            Ok(parsed) => {
                let mut objects: BTreeMap<ObjectId, ManifestObject> =
                    parsed.objects.into_iter().map(|o| (o.id(), o)).collect();
                for error in parsed.errors {
                    let kept = error
                        .id
                        .as_ref()
                        .and_then(|id| state.objects.get(id).map(|old| (id.clone(), old.clone())));
                    let kept_note = if kept.is_some() {
                        "; keeping its last good version"
                    } else {
                        ""
                    };
                    tracing::error!(file = %file.display(), object = %error.object, reason = %error.reason, "invalid object in manifest file{kept_note}");
                    if let Some((id, old)) = kept {
                        objects.entry(id).or_insert(old);
                    }
                }
                tracing::debug!(file = %file.display(), objects = objects.len(), "manifest file loaded");
                state.objects = objects;
            }
        }
        state.text = Some(text);
    }
}
