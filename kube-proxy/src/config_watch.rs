//! Noticing that the `--config` file changed, so that kube-proxy can exit
//! and be restarted with it, as upstream does (its DaemonSet restarts it).
//!
//! The file's *directory* is watched, not the file: a ConfigMap volume is
//! updated by swapping its `..data` symlink, which replaces the file rather
//! than writing it, so a watch on the file itself never fires. Every event
//! in the directory, and a periodic recheck for what a watch cannot see (a
//! symlink whose target lives in another directory, a watch that could not
//! be set up), leads to reading the file again, and only a change of its
//! **content** counts: a `touch`, or a ConfigMap update that leaves this key
//! alone, changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// A `--config` file and the content kube-proxy was configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The path given to `--config`.
    pub path: PathBuf,
    /// The file's content when the configuration was loaded.
    pub content: Vec<u8>,
}

impl ConfigFile {
    /// Reads the file at `path`.
    pub fn read(path: &Path) -> std::io::Result<ConfigFile> {
        Ok(ConfigFile {
            path: path.to_path_buf(),
            content: std::fs::read(path)?,
        })
    }
}

/// Watches a [`ConfigFile`] for a change of its content.
#[derive(Debug, Clone)]
pub struct ConfigWatch {
    file: ConfigFile,
    recheck_interval: Duration,
    debounce: Duration,
}

impl ConfigWatch {
    /// The default interval of the periodic recheck.
    pub const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(30);

    /// A watch of `file`, which changes when its content is no longer
    /// `file.content`.
    pub fn new(file: ConfigFile) -> Self {
        ConfigWatch {
            file,
            recheck_interval: Self::DEFAULT_RECHECK_INTERVAL,
            debounce: Duration::from_millis(100),
        }
    }

    /// Sets the interval of the periodic recheck.
    pub fn with_recheck_interval(mut self, interval: Duration) -> Self {
        self.recheck_interval = interval;
        self
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Completes once the file's content differs from the content it was
    /// loaded with. A file that cannot be read (removed, mid-replacement) is
    /// not a change: it is logged once, and the watch goes on.
    pub async fn changed(self) {
        let (notify_tx, mut events) = mpsc::unbounded_channel::<()>();
        let dir = watched_dir(&self.file.path);
        // Held for as long as the watch runs; dropping it stops the watch.
        let _watcher = match watch_dir(&dir, notify_tx) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, interval = ?self.recheck_interval, "cannot watch the configuration file's directory; rechecking periodically only");
                None
            }
        };
        let mut unreadable = false;
        loop {
            match tokio::fs::read(&self.file.path).await {
                Ok(content) if content != self.file.content => return,
                Ok(_) => {
                    if unreadable {
                        tracing::info!(path = %self.file.path.display(), "the configuration file is readable again, unchanged");
                    }
                    unreadable = false;
                }
                Err(error) => {
                    if !unreadable {
                        tracing::warn!(path = %self.file.path.display(), %error, "cannot read the configuration file; going on with the configuration loaded at start-up");
                    }
                    unreadable = true;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.recheck_interval) => {}
                Some(()) = events.recv() => {
                    // Let a burst (truncate + write, a symlink swap) settle.
                    tokio::time::sleep(self.debounce).await;
                    while events.try_recv().is_ok() {}
                }
            }
        }
    }
}

/// The directory holding `path`.
fn watched_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether an event may mean a new content. Opening and reading files —
/// our own rereads among them — do not; a write, create, rename, removal or
/// attribute change may.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `dir` (not recursively), sending `()` on `events` for every event
/// that may change a file's content.
fn watch_dir(dir: &Path, events: mpsc::UnboundedSender<()>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (say, a queue overflow) may hide a change: recheck.
        if event.is_err() || event.is_ok_and(|event| may_change_content(&event.kind)) {
            let _ = events.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "kube-proxy-config-watch-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const SHORT: Duration = Duration::from_millis(500);
    const LONG: Duration = Duration::from_secs(5);

    /// Starts watching `path`, whose content now is the baseline.
    fn start(path: &Path, recheck: Duration) -> tokio::task::JoinHandle<()> {
        let watch =
            ConfigWatch::new(ConfigFile::read(path).unwrap()).with_recheck_interval(recheck);
        tokio::spawn(watch.changed())
    }

    async fn still_running(task: &mut tokio::task::JoinHandle<()>) -> bool {
        tokio::time::timeout(SHORT, task).await.is_err()
    }

    async fn completes(task: tokio::task::JoinHandle<()>) -> bool {
        tokio::time::timeout(LONG, task).await.is_ok()
    }

    #[tokio::test]
    async fn a_new_content_is_a_change_the_same_content_is_not() {
        let dir = TempDir::new("content");
        let path = dir.0.join("config.yaml");
        std::fs::write(&path, "mode: iptables\n").unwrap();
        let mut task = start(&path, ConfigWatch::DEFAULT_RECHECK_INTERVAL);
        std::fs::write(&path, "mode: iptables\n").unwrap();
        assert!(still_running(&mut task).await, "rewriting the same content");
        std::fs::write(&path, "mode: nftables\n").unwrap();
        assert!(completes(task).await, "a new content is noticed");
    }

    #[tokio::test]
    async fn a_configmap_symlink_swap_is_a_change() {
        // The layout of a ConfigMap volume: config.conf -> ..data/config.conf,
        // ..data -> ..<timestamp>; an update swaps ..data by a rename.
        let dir = TempDir::new("configmap");
        let first = dir.0.join("..2025_01_01_00_00_00.1");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join("config.conf"), "mode: iptables\n").unwrap();
        std::os::unix::fs::symlink(first.file_name().unwrap(), dir.0.join("..data")).unwrap();
        let path = dir.0.join("config.conf");
        std::os::unix::fs::symlink("..data/config.conf", &path).unwrap();
        let task = start(&path, ConfigWatch::DEFAULT_RECHECK_INTERVAL);
        tokio::time::sleep(SHORT).await;

        let second = dir.0.join("..2025_01_01_00_00_01.2");
        std::fs::create_dir(&second).unwrap();
        std::fs::write(second.join("config.conf"), "mode: nftables\n").unwrap();
        std::os::unix::fs::symlink(second.file_name().unwrap(), dir.0.join("..data_tmp")).unwrap();
        std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
        assert!(completes(task).await, "the swap is noticed");
    }

    #[tokio::test]
    async fn a_removed_file_is_not_a_change_until_it_returns_different() {
        let dir = TempDir::new("removed");
        let path = dir.0.join("config.yaml");
        std::fs::write(&path, "mode: iptables\n").unwrap();
        let mut task = start(&path, ConfigWatch::DEFAULT_RECHECK_INTERVAL);
        std::fs::remove_file(&path).unwrap();
        assert!(still_running(&mut task).await, "a missing file");
        std::fs::write(&path, "mode: nftables\n").unwrap();
        assert!(completes(task).await, "the new file is noticed");
    }

    #[tokio::test]
    async fn the_recheck_sees_a_symlink_target_in_another_directory() {
        let watched = TempDir::new("link");
        let elsewhere = TempDir::new("target");
        let target = elsewhere.0.join("config.yaml");
        std::fs::write(&target, "mode: iptables\n").unwrap();
        let path = watched.0.join("config.yaml");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let mut task = start(&path, Duration::from_millis(200));
        assert!(still_running(&mut task).await, "nothing changed yet");
        std::fs::write(&target, "mode: nftables\n").unwrap();
        assert!(completes(task).await, "the recheck notices the target");
    }

    #[test]
    fn opening_and_reading_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind};
        assert!(!may_change_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!may_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(may_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(may_change_content(&EventKind::Modify(ModifyKind::Any)));
        assert!(may_change_content(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn the_directory_of_a_bare_file_name_is_the_current_one() {
        assert_eq!(watched_dir(Path::new("config.yaml")), PathBuf::from("."));
        assert_eq!(
            watched_dir(Path::new("/var/lib/kube-proxy/config.conf")),
            PathBuf::from("/var/lib/kube-proxy")
        );
    }
}
