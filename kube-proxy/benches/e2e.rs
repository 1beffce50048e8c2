//! End-to-end benchmark: the release binary, fed through its real watch
//! path (list + watch over HTTP) by a fake API server serving N Services x
//! E endpoints, programs a throw-away network namespace; measured are the
//! cold start, the latency of every kind of change from the API event to
//! the rules in the kernel next to the floor (the smallest kernel write of
//! that kind at the same table size), and the memory of the proxy and of
//! its children.
//!
//! ```text
//! cargo bench -p kube-proxy --bench e2e -- --mode nftables --services 10000 --endpoints 10 --changes 50
//! ```
//!
//! Options: `--mode iptables|nftables` (nftables), `--services N` (1000),
//! `--endpoints E` per Service (10), `--changes M` of each kind (50),
//! `--proxy-env KEY=VALUE` (repeatable) for the proxy's environment, e.g.
//! `GLIBC_TUNABLES=glibc.malloc.arena_max=2`; `--proxy-wrapper CMD` runs
//! the proxy under `CMD` (e.g. `heaptrack`, whose profile is written to
//! the bench's working directory): the measured process is then the
//! wrapper's descendant running the binary, not the wrapper.
//!
//! Definitions (see kube-proxy/BENCHMARKS.md):
//! - **cold start**: from spawning the binary to the end of the first sync
//!   after which the kernel holds every Service's ClusterIP and every
//!   endpoint (the end read from the proxy's
//!   `kubeproxy_sync_proxy_rules_last_timestamp_seconds`, the content
//!   checked in the kernel: iptables, `KUBE-SERVICES` with `iptables -S`
//!   (every ClusterIP) and the chains of 100 Services (their endpoints); nftables,
//!   `nft list table`; see `support/kernel.rs`).
//! - **change latency**: from the fake server handing the watch event to
//!   the HTTP stream (just before) to the end of the proxy's sync that
//!   carried it (the same gauge: it is set after `nft`/`iptables-restore`
//!   returned, so the rules are then in the kernel), as upstream's
//!   `network_programming_duration`. The sync that carried it is the first
//!   one ending after the event after which the kernel shows the change
//!   (iptables: the chains it touched, read after each such sync;
//!   nftables: the whole table, read once after each kind, minutes at
//!   100k). A change not in the kernel within 2 minutes is reported (and
//!   the run exits 1), not timed.
//! - **floor**: in a second namespace holding a copy of the proxy's
//!   ruleset, made by a second proxy fed by the same server (no whole-table
//!   save: `iptables-nft-save` beside 10k Services took minutes): one
//!   `nft -f -` adding one set element into the same-size table, or one
//!   `iptables-restore --noflush` of a one-rule chain.
//! - **memory**: the proxy's VmRSS after the cold start and after the
//!   changes, its VmHWM, and the VmHWM of every child (`nft`,
//!   `iptables-restore`), sampled from `/proc/<pid>/task/*/children`
//!   every 2 ms (a child that grows in its last 2 ms is under-reported).
//!
//! Needs root (network namespaces); without it the bench says so and exits
//! 0, or fails when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the failure report

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proxy_core::conformance::netns::Netns;

mod support;
use support::cpu::{cpu_seconds, cpu_split};
use support::kernel::{self, Change, Expected, Mode};
use support::lean_api::{LeanApi, NS, Object, Resource};
use support::proxy::{
    LAST_SYNC, Launch, METRICS, Proxy, SYNCS, children, metric, netns_with_lo, scrape, scratch_dir,
};
use support::{is_root, mib, rss_kib, status_kib};

/// How long a change may take to show in the kernel before the bench
/// reports it as not programmed.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(120);
/// The first node port; LoadBalancer Services get 30000.. (at most 1,000).
const NODE_PORT_BASE: u16 = 30000;
const LB_SERVICES_MAX: usize = 1000;

#[derive(Clone)]
struct Args {
    mode: Mode,
    services: usize,
    endpoints: usize,
    changes: usize,
    /// `KEY=VALUE`s for the proxy's environment (allocator experiments).
    proxy_env: Vec<(String, String)>,
    /// A program that runs the proxy (a profiler).
    proxy_wrapper: Option<String>,
    /// Seconds of an unchanged cluster after the changes, over which the
    /// proxy's CPU is measured (0: none).
    idle_secs: u64,
    /// Keep the proxy's log (run it with `--proxy-wrapper` adding `--v=3`
    /// for every sync's duration) to look into a slow change.
    keep_log: bool,
}

fn args() -> Args {
    let mut args = Args {
        mode: Mode::Nftables,
        services: 1000,
        endpoints: 10,
        changes: 50,
        proxy_env: Vec::new(),
        proxy_wrapper: None,
        keep_log: false,
        idle_secs: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--mode" => {
                args.mode = Mode::parse(&value()).expect("--mode iptables|nftables");
            }
            "--services" => args.services = value().parse().unwrap(),
            "--endpoints" => args.endpoints = value().parse().unwrap(),
            "--changes" => args.changes = value().parse().unwrap(),
            "--proxy-env" => {
                let kv = value();
                let (k, v) = kv.split_once('=').expect("--proxy-env KEY=VALUE");
                args.proxy_env.push((k.to_string(), v.to_string()));
            }
            "--proxy-wrapper" => args.proxy_wrapper = Some(value()),
            "--idle-secs" => args.idle_secs = value().parse().unwrap(),
            "--keep-log" => args.keep_log = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn ip(base: [u8; 4], offset: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + u32::try_from(offset).unwrap())
}

/// ClusterIP of Service `i` (10.96.0.0/12).
fn cluster_ip(i: usize) -> Ipv4Addr {
    ip([10, 96, 0, 1], i)
}

/// Endpoint `k` of Service `i` (10.128.0.0/9).
fn pod_ip(i: usize, k: usize, endpoints: usize) -> Ipv4Addr {
    ip([10, 128, 0, 1], i * endpoints + k)
}

/// Whether Service `i` is a LoadBalancer (with a node port), not a ClusterIP.
fn is_lb(i: usize) -> bool {
    i.is_multiple_of(10) && i / 10 < LB_SERVICES_MAX
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `GET /metrics` requests the bench made (each costs the proxy some CPU).
static SCRAPES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `(syncs, end of the last sync)` as the proxy reports them.
fn syncs() -> (f64, f64) {
    SCRAPES.fetch_add(1, Ordering::Relaxed);
    let body = scrape(None).unwrap_or_default();
    (
        metric(&body, SYNCS).unwrap_or(0.0),
        metric(&body, LAST_SYNC).unwrap_or(0.0),
    )
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Seconds since midnight of a log line's `2026-12-05T04:41:22.639926Z`.
fn log_seconds(line: &str) -> Option<f64> {
    let time = line
        .split_whitespace()
        .next()?
        .split_once('T')?
        .1
        .trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// `GET path` over HTTP/1.0; the body.
fn http_get(addr: SocketAddr, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = Vec::new();
    stream.read_to_end(&mut body).unwrap();
    body
}

/// Lists `path` in pages of 500 as kube's watcher does (`limit`, then
/// `continue` until the server gives no token); the bytes received.
fn list_paged_len(addr: SocketAddr, path: &str) -> usize {
    let mut total = 0;
    let mut token: Option<String> = None;
    loop {
        let query = match &token {
            Some(t) => format!("{path}?limit=500&continue={t}"),
            None => format!("{path}?limit=500"),
        };
        let body = http_get(addr, &query);
        total += body.len();
        // The token sits in the list's metadata, before the items.
        let head = String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned();
        token = head
            .split_once(r#""continue":""#)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(t, _)| t.to_string());
        if token.is_none() {
            return total;
        }
    }
}

/// Peak VmHWM per child program (and of the proxy itself), sampled.
#[derive(Default)]
struct Peaks {
    children: Mutex<BTreeMap<String, u64>>,
}

fn sample_children(pid: u32, peaks: Arc<Peaks>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        for child in children(pid) {
            let name = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            let name = name.trim();
            // A fork that has not exec'd yet still shares the proxy's memory.
            if name == "kube-proxy" || name.starts_with("tokio-") {
                continue;
            }
            let hwm = status_kib(child, "VmHWM:");
            if hwm > 0 {
                let mut map = peaks.children.lock().unwrap();
                let entry = map.entry(name.to_string()).or_default();
                *entry = (*entry).max(hwm);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Starts the binary from the calling thread (in its namespace), with
/// its scratch directory `kube-proxy-<tag>-<pid>`, fed by `master`.
fn start(
    tag: &str,
    mode: Mode,
    master: &str,
    env: &[(String, String)],
    wrapper: Option<&str>,
) -> Proxy {
    let mode = match mode {
        Mode::Iptables => "iptables",
        Mode::Nftables => "nftables",
    };
    // minSyncPeriod 10ms (0 reads as the default, 1s): each change syncs
    // at once, as with the default when changes come more than 1 s apart
    // (here they come one at a time, each after the previous one is in
    // the kernel), without making the bench wait a second per change.
    let config = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: {mode}
hostnameOverride: node-a
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: {METRICS}
iptables: {{minSyncPeriod: 10ms}}
nftables: {{minSyncPeriod: 10ms}}
"
    );
    Proxy::start(&Launch {
        dir: &scratch_dir(tag),
        config: &config,
        args: &["--master", master],
        env,
        wrapper,
        ns: None,
    })
}

/// p50/p90/p99/max of `samples`, in ms.
fn percentiles(samples: &[f64]) -> String {
    if samples.is_empty() {
        return "none".into();
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| s[((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1];
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1}",
        at(0.5),
        at(0.9),
        at(0.99),
        s[s.len() - 1]
    )
}

/// Waits until no sync happened for 50 ms, then returns the sync count.
fn settle(proxy: &mut Proxy) -> f64 {
    let mut last = syncs().0;
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = syncs().0;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(50) {
            return now;
        }
        proxy.check_alive();
    }
}

/// Makes one change (`apply`) and returns ms from the event to the end of
/// the sync that carried it: the first sync that ended after the event
/// and after which the kernel shows `change` (a sync already running when
/// the event came may end after it without carrying it: the kernel is read
/// again after each later sync). `None` when the kernel did not show the
/// change within [`CHANGE_TIMEOUT`] (the run goes on and reports it).
fn timed_change(
    proxy: &mut Proxy,
    mode: Mode,
    change: &Change,
    apply: impl FnOnce(),
) -> Option<f64> {
    let mut checked = settle(proxy);
    let t0 = SystemTime::now();
    apply();
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(1));
        let (count, last) = syncs();
        if count > checked && last >= unix(t0) {
            checked = count;
            if !kernel::reads_each(mode) {
                // Read back with the kind's other changes (`verify`).
                return Some((last - unix(t0)) * 1000.0);
            }
            match kernel::shows(mode, change) {
                Ok(true) => {
                    // A later sync may have written it while the kernel
                    // was read: the latest end is the conservative one.
                    let (_, last) = syncs();
                    return Some((last - unix(t0)) * 1000.0);
                }
                Ok(false) => {}
                Err(e) => println!("warning: reading the kernel for {change:?}: {e}"),
            }
        }
        if started.elapsed() > CHANGE_TIMEOUT {
            println!(
                "NOT PROGRAMMED: {change:?} not in the kernel {} s after the event ({count} syncs)",
                CHANGE_TIMEOUT.as_secs()
            );
            return None;
        }
        proxy.check_alive();
    }
}

/// The latencies of one kind of change, and how many never showed.
struct Kind {
    name: &'static str,
    latencies: Vec<f64>,
    /// When each change of `latencies` was seen in the kernel.
    seen_at: Vec<SystemTime>,
    missing: usize,
}

impl Kind {
    fn new(name: &'static str) -> Kind {
        Kind {
            name,
            latencies: Vec::new(),
            seen_at: Vec::new(),
            missing: 0,
        }
    }

    /// Where the kernel is read once per kind ([`kernel::reads_each`]),
    /// reads back `changes` (those no later change overwrote) and counts
    /// the missing ones.
    fn verify(&mut self, mode: Mode, changes: &[Change]) {
        if kernel::reads_each(mode) {
            return;
        }
        let shown = kernel::shows_all(mode, changes).unwrap();
        for (change, shown) in changes.iter().zip(shown) {
            if !shown {
                println!(
                    "NOT PROGRAMMED: {change:?} not in the kernel after the {}s",
                    self.name
                );
                self.missing += 1;
            }
        }
    }

    fn record(&mut self, latency: Option<f64>) {
        match latency {
            Some(ms) => {
                self.latencies.push(ms);
                self.seen_at.push(SystemTime::now());
            }
            None => self.missing += 1,
        }
    }
}

/// The proxy's CPU over an unchanged cluster.
struct IdleCpu {
    secs: f64,
    /// CPU seconds, children included.
    cpu: f64,
    /// Of which the children's (`nft`, `iptables-restore`, ...).
    children: f64,
    syncs: f64,
    /// The busiest 10 s window, CPU seconds.
    busiest_10s: f64,
    /// CPU seconds the proxy spends on one `GET /metrics`.
    per_scrape: f64,
}

/// Leaves the cluster unchanged for `secs` and measures the proxy's CPU
/// (nothing asks the proxy anything meanwhile), then the cost of one
/// `/metrics` scrape (to subtract the bench's polling from the change
/// phase's CPU).
fn idle_cpu(proxy: &mut Proxy, secs: u64) -> IdleCpu {
    let pid = proxy.pid;
    let syncs_before = syncs().0;
    let started = Instant::now();
    let split_start = cpu_split(pid).unwrap();
    let cpu_start = split_start.0 + split_start.1;
    let mut samples = vec![cpu_start];
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_secs(10)
                .min(Duration::from_secs(secs).saturating_sub(started.elapsed())),
        );
        samples.push(cpu_seconds(pid).unwrap());
        proxy.check_alive();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = samples[samples.len() - 1] - cpu_start;
    let children = cpu_split(pid).unwrap().1 - split_start.1;
    let busiest_10s = samples.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let syncs_after = syncs().0;
    let scrapes = 1000;
    let before = cpu_seconds(pid).unwrap();
    for _ in 0..scrapes {
        syncs();
    }
    let per_scrape = (cpu_seconds(pid).unwrap() - before) / f64::from(scrapes);
    IdleCpu {
        secs: elapsed,
        cpu,
        children,
        syncs: syncs_after - syncs_before,
        busiest_10s,
        per_scrape,
    }
}

/// The floor: `changes` smallest writes into a copy of the proxy's
/// ruleset in `floor_ns` (ms each), and how long making the copy took.
///
/// The copy is made as the proxy made its own: a second proxy, in
/// `floor_ns`, fed by the same API server (served there on a second
/// listener), runs until the kernel holds what the proxy's namespace held
/// (`want`, [`kernel::fingerprint`]), then is killed (its rules stay). A save of the proxy's ruleset and a restore of it would
/// be simpler, but `iptables-nft-save` beside a 10k-Service table ran for
/// minutes and once crashed.
fn floor(
    mode: Mode,
    floor_ns: &Netns,
    api: &LeanApi,
    want: HashSet<String>,
    changes: usize,
) -> (Vec<f64>, Duration) {
    let listener = floor_ns
        .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let master = format!("http://{}", api.serve_on(listener));
    let handle = floor_ns
        .spawn("e2e-floor", move || {
            let copied = Instant::now();
            copy_ruleset(mode, &master, &want);
            let copied = copied.elapsed();
            (floor_writes(mode, changes), copied)
        })
        .unwrap();
    match handle.join() {
        Ok(result) => result.unwrap(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a proxy fed by `master` (from a thread in the floor namespace)
/// until the namespace holds `want` ([`kernel::fingerprint`]), then kills it.
fn copy_ruleset(mode: Mode, master: &str, want: &HashSet<String>) {
    let mut proxy = start("e2e-floor", mode, master, &[], None);
    let started = Instant::now();
    let (mut seen, mut first_sync) = (0.0, None);
    loop {
        proxy.check_alive();
        let (count, _) = syncs();
        if count > seen {
            seen = count;
            first_sync.get_or_insert_with(Instant::now);
            let names = kernel::fingerprint(mode).unwrap();
            let missing = want.difference(&names).count();
            let extra = names.difference(want).count();
            if missing == 0 && extra == 0 {
                break;
            }
            // The same objects make the same chains; should they not, the
            // floor still runs beside a table of about the size, and says so.
            if first_sync.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
                println!(
                    "floor copy: {missing} of the proxy's {} chains or rules missing, {extra} more",
                    want.len()
                );
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the floor's copy was not complete within 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = proxy.dir.clone();
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir);
}

/// `changes` smallest writes of `mode`, from a thread in the floor's
/// namespace (ms each).
fn floor_writes(mode: Mode, changes: usize) -> Vec<f64> {
    let run = |program: &str, args: &[&str], input: &str| {
        use std::io::Write;
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ms
    };
    if mode == Mode::Nftables {
        run(
            "nft",
            &["-f", "-"],
            "add set ip kube-proxy e2e-floor { type ipv4_addr ; }\n",
        );
    }
    (0..changes)
        .map(|k| {
            let target = ip([10, 255, 0, 1], k);
            match mode {
                Mode::Nftables => run(
                    "nft",
                    &["-f", "-"],
                    &format!("add element ip kube-proxy e2e-floor {{ {target} }}\n"),
                ),
                Mode::Iptables => run(
                    "iptables-restore",
                    &["-w", "5", "-W", "100000", "--noflush", "--counters"],
                    &format!(
                        "*nat\n:KUBE-E2E-FLOOR - [0:0]\n-A KUBE-E2E-FLOOR -d {target}/32 -j RETURN\nCOMMIT\n"
                    ),
                ),
            }
        })
        .collect()
}

/// The whole run, on a thread inside the proxy's namespace.
/// Whether every change showed in the kernel.
fn run(args: Args, floor_ns: Netns) -> bool {
    let (n, e, m) = (args.services, args.endpoints, args.changes);
    let load_start = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let api = LeanApi::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    api.apply(Object::node("node-a", Ipv4Addr::new(10, 0, 0, 1)));
    for i in 0..n {
        let name = format!("svc-{i}");
        let node_port = is_lb(i).then(|| NODE_PORT_BASE + u16::try_from(i / 10).unwrap());
        api.apply(Object::service(&name, cluster_ip(i), node_port));
        let ips: Vec<Ipv4Addr> = (0..e).map(|k| pod_ip(i, k, e)).collect();
        api.apply(Object::slice(&name, &ips));
    }
    println!(
        "e2e: {:?} mode, {n} Services x {e} endpoints ({} LoadBalancer), {m} changes of each kind{}; load average {load_start}",
        args.mode,
        (0..n).filter(|i| is_lb(*i)).count(),
        args.proxy_env
            .iter()
            .map(|(k, v)| format!(", proxy env {k}={v}"))
            .collect::<String>()
    );

    // What the fake server itself takes to serve the lists (part of the
    // cold start, not the proxy's).
    let api_addr = api.addr;
    let list_started = Instant::now();
    let list_bytes: usize = [
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ]
    .iter()
    .map(|path| list_paged_len(api_addr, path))
    .sum();
    let list_time = list_started.elapsed();

    // Cold start.
    let spawned = SystemTime::now();
    let mut proxy = start(
        "e2e",
        args.mode,
        &api.url(),
        &args.proxy_env,
        args.proxy_wrapper.as_deref(),
    );
    let pid = proxy.pid;
    let peaks = Arc::new(Peaks::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peaks, stop) = (peaks.clone(), stop.clone());
        std::thread::spawn(move || sample_children(pid, peaks, stop))
    };
    let expected: Vec<Expected> = (0..n)
        .map(|i| Expected {
            service: format!("svc-{i}"),
            cluster_ip: cluster_ip(i),
            endpoints: (0..e).map(|k| pod_ip(i, k, e)).collect(),
        })
        .collect();
    let mut seen = 0.0;
    let mut checking = Duration::ZERO;
    let cold = loop {
        proxy.check_alive();
        let (count, last) = syncs();
        if count > seen {
            seen = count;
            let check = Instant::now();
            let complete = kernel::complete(args.mode, &expected).unwrap();
            checking += check.elapsed();
            if complete {
                break last - unix(spawned);
            }
        }
        assert!(
            SystemTime::now().duration_since(spawned).unwrap() < Duration::from_secs(1800),
            "no complete ruleset within 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let cold_children = std::mem::take(&mut *peaks.children.lock().unwrap());
    let rss_cold = rss_kib(pid);
    let hwm_cold = status_kib(pid, "VmHWM:");
    let log = proxy.log();
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .and_then(log_seconds)
    };
    if let (Some(start), Some(lists_done)) = (at("starting kube-proxy"), at("serving family=IPv4"))
    {
        println!(
            "cold start phases: from the process's first log line to the initial lists done {:.2} s (the fake server alone serves them in {:.2} s, {:.1} MB), first sync and kernel write {:.2} s",
            lists_done - start,
            list_time.as_secs_f64(),
            list_bytes as f64 / 1e6,
            cold - (lists_done - unix(spawned) % 86400.0),
        );
    }
    println!(
        "cold start: {cold:.2} s to the complete ruleset ({seen} syncs); RSS {} ({:.0} B/endpoint), peak {}; children at peak: {}",
        mib(rss_cold),
        rss_cold as f64 * 1024.0 / (n * e) as f64,
        mib(hwm_cold),
        cold_children
            .iter()
            .map(|(name, kib)| format!("{name} {}", mib(*kib)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Changes, each kind in turn; children sampled throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peaks, stop) = (peaks.clone(), stop.clone());
        std::thread::spawn(move || sample_children(pid, peaks, stop))
    };
    let targets: Vec<usize> = (0..m).map(|k| (k * 7919 + 1) % n).collect();
    let (cpu_changes_start, children_cpu_start, scrapes_start) = (
        cpu_seconds(pid).unwrap(),
        cpu_split(pid).unwrap().1,
        SCRAPES.load(Ordering::Relaxed),
    );
    let mode = args.mode;
    let changes_started = Instant::now();
    let mut results: Vec<Kind> = Vec::new();
    let mut made: Vec<Change> = Vec::new();

    // Endpoint change: endpoint 0 of a Service gets a new address.
    let mut kind = Kind::new("endpoint change");
    let fresh = |k: usize| ip([10, 64, 0, 1], k);
    for (k, &i) in targets.iter().enumerate() {
        let name = format!("svc-{i}");
        let mut ips: Vec<Ipv4Addr> = (0..e).map(|j| pod_ip(i, j, e)).collect();
        ips[0] = fresh(k);
        let change = Change::Endpoint {
            service: name.clone(),
            ip: fresh(k),
        };
        kind.record(timed_change(&mut proxy, mode, &change, || {
            api.apply(Object::slice(&name, &ips));
        }));
        made.push(change);
    }
    kind.verify(mode, &std::mem::take(&mut made));
    results.push(kind);

    // Service added (its EndpointSlice first, then the Service: the event).
    let mut kind = Kind::new("Service added");
    let new_ip = |k: usize| ip([10, 112, 0, 1], k);
    for k in 0..m {
        let name = format!("new-{k}");
        let ips: Vec<Ipv4Addr> = (0..e).map(|j| ip([10, 80, 0, 1], k * e + j)).collect();
        api.apply(Object::slice(&name, &ips));
        let change = Change::ServiceAdded {
            service: name.clone(),
            cluster_ip: new_ip(k),
            endpoints: ips,
        };
        kind.record(timed_change(&mut proxy, mode, &change, || {
            api.apply(Object::service(&name, new_ip(k), None));
        }));
        made.push(change);
    }
    kind.verify(mode, &std::mem::take(&mut made));
    results.push(kind);

    // Service removed (the Service, then its EndpointSlice).
    let mut kind = Kind::new("Service removed");
    for k in 0..m {
        let name = format!("new-{k}");
        let change = Change::ServiceRemoved {
            service: name.clone(),
            cluster_ip: new_ip(k),
        };
        kind.record(timed_change(&mut proxy, mode, &change, || {
            api.delete(Resource::Services, NS, &name);
        }));
        api.delete(Resource::EndpointSlices, NS, &format!("{name}-e2e"));
        made.push(change);
    }
    kind.verify(mode, &std::mem::take(&mut made));
    results.push(kind);

    // LoadBalancer Service's node port changed.
    let lbs: Vec<usize> = (0..n).filter(|i| is_lb(*i)).collect();
    let mut kind = Kind::new("NodePort/LB changed");
    let new_port = |k: usize| 32767 - u16::try_from(k).unwrap();
    for k in 0..m {
        let i = lbs[k % lbs.len()];
        let name = format!("svc-{i}");
        let change = Change::NodePort {
            service: name.clone(),
            port: new_port(k),
        };
        kind.record(timed_change(&mut proxy, mode, &change, || {
            api.apply(Object::service(&name, cluster_ip(i), Some(new_port(k))));
        }));
        // A later change of the same Service overwrites this one.
        made.retain(|c| !matches!(c, Change::NodePort { service, .. } if *service == name));
        made.push(change);
    }
    kind.verify(mode, &made);
    results.push(kind);
    let changes_took = changes_started.elapsed();
    // Controls: changes never made must not show, or the checks above
    // could not fail.
    let controls = [
        Change::Endpoint {
            service: "svc-0".into(),
            ip: ip([10, 64, 0, 1], m),
        },
        Change::ServiceAdded {
            service: format!("new-{m}"),
            cluster_ip: new_ip(m),
            endpoints: vec![ip([10, 80, 0, 1], m * e)],
        },
        Change::ServiceRemoved {
            service: "svc-0".into(),
            cluster_ip: cluster_ip(0),
        },
        Change::NodePort {
            service: "svc-0".into(),
            port: new_port(m),
        },
    ];
    let shown = kernel::shows_all(mode, &controls).unwrap();
    for (control, shown) in controls.iter().zip(shown) {
        assert!(
            !shown,
            "the kernel check passes a change never made: {control:?}"
        );
    }
    settle(&mut proxy);
    let rss_after = rss_kib(pid);
    let cpu_changes = cpu_seconds(pid).unwrap() - cpu_changes_start;
    let children_cpu_changes = cpu_split(pid).unwrap().1 - children_cpu_start;
    let change_scrapes = SCRAPES.load(Ordering::Relaxed) - scrapes_start;
    let idle = (args.idle_secs > 0).then(|| idle_cpu(&mut proxy, args.idle_secs));
    let hwm_after = status_kib(pid, "VmHWM:");

    // A relist: every watch expires and ends, the client lists again. The
    // peak is the VmHWM since `clear_refs` reset it to the current RSS.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    // The relist is over when, for Services and EndpointSlices, a list was
    // followed by a new watch (the client watches once it has consumed the
    // list).
    let seen_before = api.requests.lock().unwrap().len();
    let relisted = || {
        let requests = api.requests.lock().unwrap();
        let new = &requests[seen_before.min(requests.len())..];
        ["/services", "/endpointslices"].iter().all(|kind| {
            new.iter()
                .position(|r| r.contains(kind) && !r.contains("watch="))
                .is_some_and(|list| {
                    new[list..]
                        .iter()
                        .any(|r| r.contains(kind) && r.contains("watch="))
                })
        })
    };
    api.expire_watches();
    api.drop_watches();
    let relist_started = Instant::now();
    while !relisted() {
        assert!(
            relist_started.elapsed() < Duration::from_secs(300),
            "no relist within 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(2));
    settle(&mut proxy);
    let relist_peak = status_kib(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let change_children = std::mem::take(&mut *peaks.children.lock().unwrap());

    // The floor, next to the same-size ruleset: a copy of the proxy's
    // chains (by name) in the floor's namespace.
    let want = kernel::fingerprint(mode).unwrap();
    let missing: usize = results.iter().map(|k| k.missing).sum();
    // The proxy's log stays when the run failed (a panic skips this) or
    // when asked.
    let dir = proxy.dir.clone();
    drop(proxy);
    if missing == 0 && !args.keep_log {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        println!("the proxy's log: {}", dir.join("kube-proxy.log").display());
    }
    let floor_started = Instant::now();
    let (floor_ms, copy_took) = floor(mode, &floor_ns, &api, want, m);
    let floor_took = floor_started.elapsed();
    let load_end = load_average();

    println!(
        "bench phases: cold start {cold:.1} s (of which the bench's kernel checks {:.1} s), {} changes {:.1} s, floor {:.1} s (its copy of the ruleset {:.1} s)",
        checking.as_secs_f64(),
        4 * m,
        changes_took.as_secs_f64(),
        floor_took.as_secs_f64(),
        copy_took.as_secs_f64()
    );
    println!(
        "latency, API event -> rules in the kernel, ms (p50 / p90 / p99 / max over {m}; {}):",
        if kernel::reads_each(mode) {
            "each change read back from the chains it touched"
        } else {
            "every change read back from the whole table after its kind"
        }
    );
    for kind in &results {
        let missed = if kind.missing > 0 {
            format!(
                " -- {} NOT PROGRAMMED within {} s",
                kind.missing,
                CHANGE_TIMEOUT.as_secs()
            )
        } else {
            String::new()
        };
        let slowest = kind
            .latencies
            .iter()
            .zip(&kind.seen_at)
            .enumerate()
            .max_by(|a, b| a.1.0.total_cmp(b.1.0))
            .map(|(i, (_, at))| format!("; slowest #{i}, in the kernel at {:.3} (unix)", unix(*at)))
            .unwrap_or_default();
        println!(
            "  {:<20} {}{missed}{slowest}",
            kind.name,
            percentiles(&kind.latencies)
        );
    }
    let floor_kind = match mode {
        Mode::Nftables => "one nft element",
        Mode::Iptables => "one-chain restore",
    };
    println!("  floor: {floor_kind:<13} {}", percentiles(&floor_ms));
    println!(
        "memory: proxy RSS after cold start {} ({:.0} B/endpoint), after {} changes {} ({:.0} B/endpoint), peak {}; children during changes and relist: {}",
        mib(rss_cold),
        rss_cold as f64 * 1024.0 / (n * e) as f64,
        4 * m,
        mib(rss_after),
        rss_after as f64 * 1024.0 / (n * e) as f64,
        mib(hwm_after),
        change_children
            .iter()
            .map(|(name, kib)| format!("{name} {}", mib(*kib)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "relist: peak RSS {} = {:.2}x the steady {}",
        mib(relist_peak),
        relist_peak as f64 / rss_after as f64,
        mib(rss_after)
    );
    let changes = 4 * m;
    print!(
        "cpu: {cpu_changes:.2} CPU-s during the {changes} changes (with their slices), {:.1} ms per change, children included (theirs: {children_cpu_changes:.2} CPU-s)",
        cpu_changes * 1000.0 / changes as f64
    );
    match &idle {
        Some(idle) => println!(
            "; of which the bench's {change_scrapes} /metrics polls at {:.3} ms each: {:.1} ms per change without them",
            idle.per_scrape * 1000.0,
            (cpu_changes - idle.per_scrape * change_scrapes as f64).max(0.0) * 1000.0
                / changes as f64
        ),
        None => println!(
            " (and the bench's {change_scrapes} /metrics polls; --idle-secs measures their cost)"
        ),
    }
    if let Some(idle) = &idle {
        println!(
            "idle: {:.0} s of an unchanged cluster: {:.2} CPU-s = {:.3} % of one core, of which children {:.2} CPU-s ({} IPv4 syncs; busiest 10 s: {:.1} %)",
            idle.secs,
            idle.cpu,
            idle.cpu * 100.0 / idle.secs,
            idle.children,
            idle.syncs,
            idle.busiest_10s * 10.0
        );
    }
    println!("load average: start {load_start}, end {load_end}");
    if missing > 0 {
        println!("FAIL: {missing} changes never showed in the kernel");
    }
    missing == 0
}

fn main() {
    let args = args();
    if !is_root() {
        let required = std::env::var("KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS").as_deref() == Ok("1");
        assert!(!required, "the e2e bench needs root (network namespaces)");
        println!("e2e: skipped, needs root (it runs the proxy in a network namespace)");
        return;
    }
    let ns = netns_with_lo();
    let floor_ns = netns_with_lo();
    let handle = ns.spawn("e2e", move || run(args, floor_ns)).unwrap();
    let all_programmed = match handle.join() {
        Ok(result) => result.unwrap(),
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if !all_programmed {
        std::process::exit(1);
    }
}
