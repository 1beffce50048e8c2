//! A scenario written out as the binary reads it: a manifest directory
//! (one YAML file per Service or EndpointSlice, and the node's `kind: Node`)
//! and a `KubeProxyConfiguration` file.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use proxy_core::ProxyMode;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::conformance::Scenario;

/// `healthzBindAddress`: the node namespace's own loopback.
pub const HEALTHZ_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 10256);
/// `metricsBindAddress`: the node namespace's own loopback.
pub const METRICS_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 10249);

/// A temporary directory holding `config.yaml`, `manifests/` and the
/// binary's logs; removed on drop.
#[derive(Debug)]
pub struct ScenarioFiles {
    dir: PathBuf,
    manifests: Vec<Manifest>,
}

/// One object's file in the manifest directory.
#[derive(Debug, Clone)]
struct Manifest {
    file: PathBuf,
    kind: String,
    namespace: String,
    name: String,
}

impl ScenarioFiles {
    /// Writes `scenario` for the binary in `mode`.
    pub fn write(mode: ProxyMode, scenario: &Scenario) -> io::Result<ScenarioFiles> {
        Self::write_with(mode, scenario, |_| {})
    }

    /// Like [`write`](Self::write), with `edit` applied to the
    /// configuration first (e.g. a short `syncPeriod`).
    pub fn write_with(
        mode: ProxyMode,
        scenario: &Scenario,
        edit: impl FnOnce(&mut KubeProxyConfiguration),
    ) -> io::Result<ScenarioFiles> {
        let dir = std::env::temp_dir().join(format!(
            "kube-proxy-e2e-{}-{mode}-{}",
            std::process::id(),
            scenario.name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests"))?;
        let mut files = ScenarioFiles {
            dir,
            manifests: Vec::new(),
        };
        let node = scenario.node_object();
        let objects = std::iter::once(&node).chain(scenario.objects());
        for (index, object) in objects.enumerate() {
            let text = serde_saphyr::to_string(object).map_err(io::Error::other)?;
            let manifest = Manifest {
                file: files.manifests().join(manifest_name(index, object)),
                kind: field(object, &["kind"]).unwrap_or_default().to_string(),
                namespace: field(object, &["metadata", "namespace"])
                    .unwrap_or("default")
                    .to_string(),
                name: field(object, &["metadata", "name"])
                    .unwrap_or_default()
                    .to_string(),
            };
            std::fs::write(&manifest.file, text)?;
            files.manifests.push(manifest);
        }
        let mut config = binary_config(mode, scenario);
        edit(&mut config);
        let config = config.to_yaml().map_err(io::Error::other)?;
        std::fs::write(files.config(), config)?;
        Ok(files)
    }

    /// The configuration file (`--config`).
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// The manifest directory (`--manifests`).
    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    /// Deletes the files of every EndpointSlice; returns their
    /// `(namespace, name)`.
    pub fn remove_endpoint_slices(&mut self) -> io::Result<Vec<(String, String)>> {
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for manifest in std::mem::take(&mut self.manifests) {
            if manifest.kind == "EndpointSlice" {
                std::fs::remove_file(&manifest.file)?;
                removed.push((manifest.namespace, manifest.name));
            } else {
                kept.push(manifest);
            }
        }
        self.manifests = kept;
        Ok(removed)
    }

    /// A file for a log of the binary (`stderr-run.log`).
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }
}

impl Drop for ScenarioFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The string at `path` in `object`.
fn field<'a>(object: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(object, |value, key| value.get(key))?
        .as_str()
}

/// `03-endpointslice-web-1.yaml`.
fn manifest_name(index: usize, object: &serde_json::Value) -> String {
    let part = |path: &[&str]| {
        field(object, path)
            .unwrap_or("unnamed")
            .to_ascii_lowercase()
    };
    format!(
        "{index:02}-{}-{}.yaml",
        part(&["kind"]),
        part(&["metadata", "name"])
    )
}

/// The scenario's configuration (upstream's defaults plus its overrides)
/// as the binary in `mode` on the scenario's node gets it:
///
/// - `mode`, and `hostnameOverride` = the scenario's node, so that the
///   EndpointSlices' `nodeName`s make endpoints local as in the library
///   run, and the manifests' Node object is this node's;
/// - `bindAddress` left unspecified: the node's IPs, pod CIDRs and zone
///   come from the Node object in the manifests (see `Scenario::node_object`), as
///   they come from the API server in a cluster;
/// - health and metrics servers on the node namespace's loopback;
/// - `conntrack.maxPerCore: 0`: `nf_conntrack_max` cannot be set from a
///   network namespace, and the hash size it would adjust
///   (`/sys/module/nf_conntrack/parameters/hashsize`) is host-wide.
pub fn binary_config(mode: ProxyMode, scenario: &Scenario) -> KubeProxyConfiguration {
    let mut config = KubeProxyConfiguration::clone(scenario.config());
    config.mode = Some(mode);
    config.hostname_override = scenario.node().name.clone();
    config.healthz_bind_address = HEALTHZ_ADDRESS.to_string();
    config.metrics_bind_address = METRICS_ADDRESS.to_string();
    config.conntrack.max_per_core = Some(0);
    config
}
