//! Health-check node ports through the binary: a node namespace with a
//! veth carrying the node's addresses, a manifest directory
//! with the Node, two `externalTrafficPolicy: Local` LoadBalancer Services
//! (one with local endpoints, one without) and their EndpointSlices, and
//! the binary in one mode with one `nodePortAddresses`; then HTTP GETs to
//! `<address>:<healthCheckNodePort>` from inside the namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proxy_core::ProxyMode;
use proxy_core::conformance::netns::Netns;

use super::files::{HEALTHZ_ADDRESS, METRICS_ADDRESS};
use super::http;
use super::process::{KubeProxyProcess, last_sync_in};

/// The node's name (`hostnameOverride`, the Node object, `nodeName`s).
pub const NODE: &str = "node-hc";
/// The node's primary IP (its first InternalIP).
pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 2);
/// The node's second InternalIP, inside [`CIDR`].
pub const SECONDARY: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 2);
/// A host address the Node does not list, outside [`CIDR`].
pub const OTHER: Ipv4Addr = Ipv4Addr::new(10, 92, 0, 2);
/// The `nodePortAddresses` CIDR of the tests.
pub const CIDR: &str = "10.91.0.0/16";
/// Another address inside [`CIDR`], added while the binary runs.
pub const ADDED: Ipv4Addr = Ipv4Addr::new(10, 91, 7, 7);
/// The health-check node port of the Service with two local endpoints.
pub const LOCAL_HCNP: u16 = 32101;
/// The health-check node port of the Service without local endpoints.
pub const REMOTE_HCNP: u16 = 32102;

/// How long the binary may take to its first sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an address change may take to show on the health-check ports.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// One HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// A node namespace (lo and `hc0`, one end of a veth, with `addresses`),
/// the files and the running binary; everything goes on drop.
pub struct HealthCheckNode {
    pub ns: Netns,
    dir: PathBuf,
    pub process: KubeProxyProcess,
}

impl Drop for HealthCheckNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one GET to a health-check node port found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Connection refused or failed.
    Nothing,
    /// Status and `localEndpoints`.
    Http(u16, u64),
}

impl HealthCheckNode {
    /// Starts the binary in `mode` with `node_port_addresses` (`None`:
    /// unset) in a new namespace whose `hc0` carries `addresses`; the Node
    /// lists [`PRIMARY`] then [`SECONDARY`]. Waits for its first IPv4 sync.
    pub fn start(
        mode: ProxyMode,
        node_port_addresses: Option<&[&str]>,
        addresses: &[Ipv4Addr],
        tag: &str,
    ) -> Result<Self, String> {
        let ns = Netns::new().map_err(|e| format!("creating the node namespace: {e}"))?;
        let mut script = String::from(
            "link set lo up\nlink add hc0 type veth peer name hc1\nlink set hc0 up\nlink set hc1 up\n",
        );
        for ip in addresses {
            script.push_str(&format!("address add {ip}/24 dev hc0\n"));
        }
        ip_batch(&ns, &script)?;
        let dir = std::env::temp_dir().join(format!(
            "kube-proxy-e2e-hcnp-{}-{mode}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).map_err(|e| e.to_string())?;
        write_node(&dir, &[PRIMARY, SECONDARY])?;
        for (name, file) in objects() {
            let text = serde_saphyr::to_string(&file).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("manifests").join(name), text).map_err(|e| e.to_string())?;
        }
        std::fs::write(dir.join("config.yaml"), config(mode, node_port_addresses))
            .map_err(|e| e.to_string())?;
        let config = dir.join("config.yaml");
        let manifests = dir.join("manifests");
        let args = ["--config", utf8(&config)?, "--manifests", utf8(&manifests)?];
        let process = KubeProxyProcess::start(&ns, &args, &dir.join("run.log"))?;
        let mut node = HealthCheckNode { ns, dir, process };
        node.process
            .wait_synced(&node.ns, proxy_core::IpFamily::V4, SYNC_TIMEOUT)?;
        Ok(node)
    }

    /// GET `/` on `ip`:`port` from inside the namespace.
    pub fn get(&self, ip: Ipv4Addr, port: u16) -> Answer {
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        match self.ns.run(|| http::get(addr, "/", HTTP_TIMEOUT)) {
            Ok(Ok(response)) => {
                let body: serde_json::Value =
                    serde_json::from_str(&response.body).unwrap_or_default();
                Answer::Http(
                    response.status,
                    body["localEndpoints"].as_u64().unwrap_or(u64::MAX),
                )
            }
            _ => Answer::Nothing,
        }
    }

    /// Polls until `ip`:`port` answers `expected`; how long that took, or
    /// what it answered at the timeout.
    pub fn wait_for(
        &self,
        ip: Ipv4Addr,
        port: u16,
        expected: &Answer,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let answer = self.get(ip, port);
            if answer == *expected {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{ip}:{port} answered {answer:?}, not {expected:?}, after {timeout:?}; the log:\n{}",
                    self.process.log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Checks that the health-check ports answer as expected on `serving`
    /// (200 with two local endpoints, 503 with none) and not at all on
    /// `silent`. The first check polls (the listeners open during the
    /// first sync).
    pub fn check(&self, serving: &[Ipv4Addr], silent: &[Ipv4Addr]) -> Result<(), String> {
        for ip in serving {
            self.wait_for(*ip, LOCAL_HCNP, &Answer::Http(200, 2), REBIND_TIMEOUT)?;
            let remote = self.get(*ip, REMOTE_HCNP);
            if remote != Answer::Http(503, 0) {
                return Err(format!(
                    "{ip}:{REMOTE_HCNP} (no local endpoint) answered {remote:?}"
                ));
            }
        }
        for ip in silent {
            for port in [LOCAL_HCNP, REMOTE_HCNP] {
                let answer = self.get(*ip, port);
                if answer != Answer::Nothing {
                    return Err(format!(
                        "{ip}:{port} is outside nodePortAddresses but answered {answer:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The TCP sockets listening on `port` in the namespace (`ss -tln`),
    /// as `address:port`.
    pub fn listeners(&self, port: u16) -> Result<Vec<String>, String> {
        let output = self
            .ns
            .command("ss")
            .args(["-Htln", &format!("sport = :{port}")])
            .output()
            .map_err(|e| format!("running ss: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "ss failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().nth(3).map(str::to_string))
            .collect())
    }

    /// Polls until the IPv4 sockets listening on `port` are `expected`
    /// (`address:port`, sorted); how long that took. (IPv6 ones are left
    /// out: the host may have IPv6 off.)
    pub fn wait_listeners(
        &self,
        port: u16,
        expected: &[String],
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let mut seen = self.listeners(port)?;
            seen.retain(|l| !l.starts_with('['));
            seen.sort();
            if seen == expected {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "listening on port {port}: {seen:?}, not {expected:?}, after {timeout:?}; the log:\n{}",
                    self.process.log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `ip -batch` lines in the namespace (`address add …`).
    pub fn ip(&self, script: &str) -> Result<(), String> {
        ip_batch(&self.ns, script)
    }

    /// Rewrites the Node's manifest with these InternalIPs.
    pub fn set_node_ips(&self, ips: &[Ipv4Addr]) -> Result<(), String> {
        write_node(&self.dir, ips)
    }

    /// The binary's last IPv4 sync (`0.0` before the first).
    pub fn last_sync(&self) -> f64 {
        last_sync_in(&self.ns, proxy_core::IpFamily::V4)
            .ok()
            .flatten()
            .unwrap_or(0.0)
    }
}

fn utf8(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

fn ip_batch(ns: &Netns, script: &str) -> Result<(), String> {
    let output = ns
        .command("ip")
        .args(["-batch", "-"])
        .output_with_input(script.as_bytes())
        .map_err(|e| format!("running ip -batch: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip -batch failed on\n{script}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Writes the Node with `ips` as its InternalIPs (the first is primary),
/// atomically (a rename), so the watch never reads half a file.
fn write_node(dir: &Path, ips: &[Ipv4Addr]) -> Result<(), String> {
    let addresses: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({"type": "InternalIP", "address": ip.to_string()}))
        .collect();
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE},
        "status": {"addresses": addresses},
    });
    let text = serde_saphyr::to_string(&node).map_err(|e| e.to_string())?;
    let staged = dir.join("node.yaml.tmp");
    std::fs::write(&staged, text).map_err(|e| e.to_string())?;
    std::fs::rename(&staged, dir.join("manifests").join("00-node.yaml")).map_err(|e| e.to_string())
}

/// The Services and EndpointSlices, by file name.
fn objects() -> Vec<(&'static str, serde_json::Value)> {
    let service = |name: &str, ip: &str, hcnp: u16, node_port: u16| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "default", "name": name},
            "spec": {
                "type": "LoadBalancer", "clusterIP": ip, "clusterIPs": [ip],
                "externalTrafficPolicy": "Local", "healthCheckNodePort": hcnp,
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": node_port}],
            },
        })
    };
    let slice = |service: &str, endpoints: &[(&str, &str)]| {
        let endpoints: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|(ip, node)| {
                serde_json::json!({"addresses": [ip], "nodeName": node,
                                   "conditions": {"ready": true, "serving": true, "terminating": false}})
            })
            .collect();
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "default", "name": format!("{service}-1"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        })
    };
    vec![
        (
            "01-service-local.yaml",
            service("local", "172.30.0.11", LOCAL_HCNP, 30111),
        ),
        (
            "02-service-remote.yaml",
            service("remote", "172.30.0.12", REMOTE_HCNP, 30112),
        ),
        (
            "03-slice-local.yaml",
            slice(
                "local",
                &[
                    ("10.244.0.5", NODE),
                    ("10.244.0.6", NODE),
                    ("10.244.1.5", "elsewhere"),
                ],
            ),
        ),
        (
            "04-slice-remote.yaml",
            slice("remote", &[("10.244.1.6", "elsewhere")]),
        ),
    ]
}

/// The configuration file: `mode`, this node, the servers on loopback,
/// no conntrack table sizing (host-wide), and `nodePortAddresses`.
fn config(mode: ProxyMode, node_port_addresses: Option<&[&str]>) -> String {
    let mut text = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: {mode}\nhostnameOverride: {NODE}\nhealthzBindAddress: {HEALTHZ_ADDRESS}\n\
         metricsBindAddress: {METRICS_ADDRESS}\nconntrack:\n  maxPerCore: 0\n"
    );
    if let Some(list) = node_port_addresses {
        let quoted: Vec<String> = list.iter().map(|e| format!("\"{e}\"")).collect();
        text.push_str(&format!("nodePortAddresses: [{}]\n", quoted.join(", ")));
    }
    text
}
