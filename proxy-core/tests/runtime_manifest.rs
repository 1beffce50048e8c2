//! The manifest source through the whole loop: files added, changed,
//! replaced by rename, broken and deleted.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod runtime_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::IpFamily;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::ManifestSource;
use proxy_core::runtime::{Runtime, RuntimeOptions};
use runtime_support::{Recorder, RecordingFactory, timing};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kube-proxy-{name}-{}", std::process::id()));
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

fn manifest(service: &str, ip: &str, endpoints: &[&str]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|e| format!("  - addresses: [{e}]"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: ns}}\n\
         spec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-1, namespace: ns, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{}\n",
        endpoints.join("\n")
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn view(recorder: &Recorder) -> Vec<(String, Vec<String>)> {
    recorder
        .calls()
        .last()
        .map(|c| c.view.clone())
        .unwrap_or_default()
}

fn port(name: &str, endpoints: &[&str]) -> (String, Vec<String>) {
    (
        name.to_string(),
        endpoints.iter().map(ToString::to_string).collect(),
    )
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn files_are_followed_and_broken_ones_keep_their_last_good_state() {
    let dir = TempDir::new("manifests");
    write(
        &dir.0,
        "a.yaml",
        &manifest("web", "172.30.0.10", &["10.0.0.1"]),
    );
    write(
        &dir.0,
        "b.yaml",
        &manifest("api", "172.30.0.11", &["10.0.1.1"]),
    );
    write(&dir.0, "notes.txt", "not a manifest");

    let (factory, recorder) = RecordingFactory::new(vec![]);
    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.families = Some(vec![IpFamily::V4]);
    options.timing = timing();
    options.timing.min_interval = Duration::from_millis(20);
    // A long rescan interval: changes must be seen through the watch.
    let source = ManifestSource::new(&dir.0)
        .unwrap()
        .with_rescan_interval(Duration::from_secs(3600));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Runtime::new(config, factory, vec![], options).run(
        Box::new(source),
        async move {
            let _ = stopped.await;
        },
    ));

    eventually("the first sync", || recorder.calls().len() == 1).await;
    assert_eq!(
        view(&recorder),
        [
            port("ns/api:http", &["10.0.1.1"]),
            port("ns/web:http", &["10.0.0.1"])
        ]
    );

    // A change.
    write(
        &dir.0,
        "b.yaml",
        &manifest("api", "172.30.0.11", &["10.0.1.1", "10.0.1.2"]),
    );
    eventually("the change", || {
        view(&recorder).contains(&port("ns/api:http", &["10.0.1.1", "10.0.1.2"]))
    })
    .await;
    let calls = recorder.calls();
    assert_eq!(calls.last().unwrap().changed_ports, ["ns/api:http"]);

    // A broken file keeps its last good objects; a new broken file adds nothing.
    let synced = recorder.calls().len();
    write(
        &dir.0,
        "b.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [\n",
    );
    write(&dir.0, "c.yaml", "kind: EndpointSlice\n\tbad: tab\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        recorder.calls().len(),
        synced,
        "broken files change nothing"
    );

    // A bad object keeps its last good version; the file's other objects update.
    let mut text = manifest("api", "172.30.0.99", &["10.0.1.1", "10.0.1.2"]);
    text = text.replace("addressType: IPv4", "addressType: IPv4\nendpoints: 7\nx:");
    write(&dir.0, "b.yaml", &text);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(view(&recorder).contains(&port("ns/api:http", &["10.0.1.1", "10.0.1.2"])));

    // Rename-on-save, as editors do.
    write(
        &dir.0,
        ".b.yaml.swp",
        &manifest("api", "172.30.0.11", &["10.0.1.3"]),
    );
    std::fs::rename(dir.0.join(".b.yaml.swp"), dir.0.join("b.yaml")).unwrap();
    eventually("the renamed file", || {
        view(&recorder).contains(&port("ns/api:http", &["10.0.1.3"]))
    })
    .await;

    // Deleting a file deletes its objects.
    std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
    eventually("the deletion", || {
        view(&recorder) == [port("ns/api:http", &["10.0.1.3"])]
    })
    .await;

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_single_file_is_watched_and_rescanned() {
    let dir = TempDir::new("single");
    let file = dir.0.join("world.yaml");
    write(
        &dir.0,
        "world.yaml",
        &manifest("web", "172.30.0.10", &["10.0.0.1"]),
    );
    let (factory, recorder) = RecordingFactory::new(vec![]);
    let config = Arc::new(KubeProxyConfiguration::default());
    let mut options = RuntimeOptions::new(&config, "node-a");
    options.families = Some(vec![IpFamily::V4]);
    options.timing = timing();
    options.timing.min_interval = Duration::from_millis(20);
    let source = ManifestSource::new(&file)
        .unwrap()
        .with_rescan_interval(Duration::from_millis(200));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Runtime::new(config, factory, vec![], options).run(
        Box::new(source),
        async move {
            let _ = stopped.await;
        },
    ));
    eventually("the first sync", || recorder.calls().len() == 1).await;
    write(
        &dir.0,
        "other.yaml",
        &manifest("api", "172.30.0.11", &["10.0.1.1"]),
    );
    write(
        &dir.0,
        "world.yaml",
        &manifest("web", "172.30.0.10", &["10.0.0.2"]),
    );
    eventually("the change", || {
        view(&recorder) == [port("ns/web:http", &["10.0.0.2"])]
    })
    .await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(ManifestSource::new(dir.0.join("missing.yaml")).is_err());
}
