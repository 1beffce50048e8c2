//! Quickstart: a NodePort service on your laptop, no root, no cluster.
//!
//! ```text
//! cargo run -p examples --bin quickstart
//! ```
//!
//! 1. starts three HTTP servers on 127.0.0.11-13:8080, each answering with
//!    its name (the endpoints of `examples/quickstart/hello.yaml`);
//! 2. starts kube-proxy in userspace mode on those manifests: the real
//!    binary from the same target directory (built with
//!    `cargo build -p kube-proxy` if it is missing), or, if that is not
//!    possible or `--in-process` is given, the same runtime in this process;
//! 3. sends 30 requests to 127.0.0.1:30080 and prints who answered each;
//! 4. keeps serving until Ctrl-C (`--once` exits instead).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use backend_userspace::UserspaceFactory;
use examples::http;
use proxy_core::IpFamily;
use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::source::ManifestSource;
use proxy_core::runtime::{Runtime, RuntimeOptions};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NODE: &str = "quickstart-node";
const NODE_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 30080);
const ENDPOINTS: [(&str, [u8; 4]); 3] = [
    ("hello-1", [127, 0, 0, 11]),
    ("hello-2", [127, 0, 0, 12]),
    ("hello-3", [127, 0, 0, 13]),
];

struct Args {
    in_process: bool,
    once: bool,
    requests: usize,
    manifests: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        in_process: false,
        once: false,
        requests: 30,
        manifests: Path::new(env!("CARGO_MANIFEST_DIR")).join("quickstart"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--in-process" => args.in_process = true,
            "--once" => args.once = true,
            "--requests" => {
                args.requests = it.next().context("--requests needs a number")?.parse()?
            }
            "--manifests" => {
                args.manifests = it.next().context("--manifests needs a directory")?.into()
            }
            "-h" | "--help" => {
                println!(
                    "usage: quickstart [--in-process] [--once] [--requests N] [--manifests DIR]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// The proxy this quickstart runs: the kube-proxy binary or the runtime in
/// this process. Dropping it stops it.
enum Proxy {
    Binary(Child),
    InProcess {
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<()>,
    },
}

impl Proxy {
    fn describe(&self) -> &'static str {
        match self {
            Proxy::Binary(_) => "kube-proxy binary",
            Proxy::InProcess { .. } => "in-process runtime",
        }
    }

    /// Fails if the proxy already exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self {
            Proxy::Binary(child) => match child.try_wait()? {
                Some(status) => bail!("kube-proxy exited: {status}"),
                None => Ok(()),
            },
            Proxy::InProcess { task, .. } if task.is_finished() => {
                bail!("the in-process runtime stopped")
            }
            Proxy::InProcess { .. } => Ok(()),
        }
    }

    async fn stop(self) {
        match self {
            Proxy::Binary(mut child) => {
                let _ = child.kill().await;
            }
            Proxy::InProcess { mut stop, task } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        }
    }
}

/// `kube-proxy` next to this executable (the same target directory).
fn kube_proxy_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    // Test binaries live one level deeper, in `deps/`.
    if dir.ends_with("deps") {
        dir = dir.parent()?;
    }
    Some(dir.join(format!("kube-proxy{}", std::env::consts::EXE_SUFFIX)))
}

/// Makes sure `path` holds an up-to-date kube-proxy: under `cargo run`,
/// builds it with the same cargo and profile (a no-op when it is up to
/// date); run directly, uses the binary if it is there.
async fn build_kube_proxy(path: &Path) -> bool {
    let Ok(cargo) = std::env::var("CARGO") else {
        return path.exists();
    };
    let release = path.parent().is_some_and(|d| d.ends_with("release"));
    println!(
        "building kube-proxy: `cargo build -p kube-proxy{}`",
        if release { " --release" } else { "" }
    );
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "kube-proxy"]);
    if release {
        cmd.arg("--release");
    }
    matches!(cmd.status().await, Ok(s) if s.success()) && path.exists()
}

async fn start_binary(args: &Args) -> anyhow::Result<Proxy> {
    let path = kube_proxy_path().context("cannot locate this executable")?;
    // Always (a no-op when it is up to date): never run a stale binary.
    if !build_kube_proxy(&path).await {
        bail!("cannot build {}", path.display());
    }
    let child = Command::new(&path)
        .arg("--config")
        .arg(config_path())
        .arg("--manifests")
        .arg(&args.manifests)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    println!(
        "started {} (pid {})",
        path.display(),
        child.id().unwrap_or_default()
    );
    Ok(Proxy::Binary(child))
}

/// `examples/config/quickstart.yaml`: userspace mode, loopback servers, no
/// kernel rules.
fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/quickstart.yaml")
}

fn start_in_process(args: &Args) -> anyhow::Result<Proxy> {
    let mut config = KubeProxyConfiguration::load(config_path())?;
    config.apply_defaults();
    let options = RuntimeOptions {
        families: Some(vec![IpFamily::V4]),
        ..RuntimeOptions::new(&config, NODE)
    };
    let source = ManifestSource::new(&args.manifests)?;
    let runtime = Runtime::new(
        Arc::new(config),
        Arc::new(UserspaceFactory),
        Vec::new(),
        options,
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(error) = runtime
            .run(Box::new(source), async {
                stopped.await.unwrap_or_default()
            })
            .await
        {
            tracing::error!(%error, "the in-process runtime failed");
        }
    });
    Ok(Proxy::InProcess {
        stop: Some(stop),
        task,
    })
}

async fn wait_until_served(proxy: &mut Proxy) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proxy.check_running()?;
        if http::get(NODE_PORT).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{NODE_PORT} is not served after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = parse_args()?;

    let mut servers = Vec::new();
    for (name, ip) in ENDPOINTS {
        let addr = SocketAddr::from((ip, 8080));
        servers.push(http::serve(addr, format!("{name} ({addr})\n")).await?);
        println!("endpoint {name} listening on {addr}");
    }

    let mut proxy = if args.in_process {
        start_in_process(&args)?
    } else {
        match start_binary(&args).await {
            Ok(mut proxy) => match wait_until_served(&mut proxy).await {
                Ok(()) => proxy,
                Err(error) => {
                    println!(
                        "kube-proxy did not serve {NODE_PORT} ({error:#}); falling back to the in-process runtime"
                    );
                    proxy.stop().await;
                    start_in_process(&args)?
                }
            },
            Err(error) => {
                println!(
                    "cannot run the kube-proxy binary ({error:#}); using the in-process runtime"
                );
                start_in_process(&args)?
            }
        }
    };
    wait_until_served(&mut proxy).await?;
    println!("{NODE_PORT} is served by the {}", proxy.describe());

    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for i in 1..=args.requests {
        let body = http::get(NODE_PORT).await?;
        let name = body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        println!("request {i:>2} -> {}", body.trim());
        *answers.entry(name).or_default() += 1;
    }
    let summary: Vec<String> = answers.iter().map(|(n, c)| format!("{n}: {c}")).collect();
    println!("answers: {}", summary.join(", "));

    if !args.once {
        println!(
            "serving http://{NODE_PORT} through the {}; press Ctrl-C to stop",
            proxy.describe()
        );
        tokio::select! {
            signal = tokio::signal::ctrl_c() => signal?,
            error = async { loop { tokio::time::sleep(Duration::from_secs(1)).await; if let Err(e) = proxy.check_running() { break e; } } } => {
                bail!("{error:#}");
            }
        }
    }
    proxy.stop().await;
    servers.iter().for_each(JoinHandle::abort);
    Ok(())
}
