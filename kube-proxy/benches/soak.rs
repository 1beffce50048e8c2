//! Soak benchmark: the real binary fed by a manifest directory of 1,000
//! Services (each with an EndpointSlice), one of which changes every
//! 0.5 s, for an hour; its resident memory (RSS) is sampled throughout and
//! must stay within 10 % of its value at the end of the warm-up.
//!
//! ```text
//! cargo bench -p kube-proxy --bench soak -- --duration 1h      # the full run
//! cargo bench -p kube-proxy --bench soak -- --duration 60s     # a quick check
//! ```
//!
//! Options: `--duration D` (default 1h), `--warmup D` (default a sixth of the
//! duration, at most 10m: at 2 changes/s one round of changes over 1,000
//! Services takes 500 s, and the RSS settles after about that), `--services N` (1000), `--rate R` changes per second
//! (2), `--sample D` (10s), `--mode nftables|userspace` (nftables as root,
//! userspace otherwise). Durations are `90s`, `5m`, `1h`. As root the binary
//! runs in a network namespace of its own (nothing touches the host's
//! rules); without root only userspace mode can run (it then installs no
//! rules). Exits 1 when the RSS grew more than 10 %.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the failure report

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use proxy_core::conformance::netns::Netns;

mod support;
use support::proxy::{Launch, METRICS, Proxy, SYNCS, metric, netns_with_lo, scrape};
use support::{is_root, mib, parse_duration, rss_kib};

struct Args {
    duration: Duration,
    warmup: Option<Duration>,
    services: usize,
    rate: f64,
    sample: Duration,
    mode: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        duration: Duration::from_secs(3600),
        warmup: None,
        services: 1000,
        rate: 2.0,
        sample: Duration::from_secs(10),
        mode: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--duration" => args.duration = parse_duration(&value()),
            "--warmup" => args.warmup = Some(parse_duration(&value())),
            "--services" => args.services = value().parse().unwrap(),
            "--rate" => args.rate = value().parse().unwrap(),
            "--sample" => args.sample = parse_duration(&value()),
            "--mode" => args.mode = Some(value()),
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Service `i` and its EndpointSlice, at change `generation`: the
/// endpoints move with the generation, so every write is a real change.
fn manifest(i: usize, generation: u64) -> String {
    let (hi, lo) = (i / 250, i % 250 + 1);
    let endpoints: String = (0..2)
        .map(|k| {
            let third = (generation as usize * 2 + k) % 250;
            format!(
                "  - addresses: [\"10.{}.{third}.{lo}\"]\n    conditions: {{ready: true}}\n    nodeName: node-b\n",
                200 + hi
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{namespace: soak, name: svc-{i}}}
spec:
  type: ClusterIP
  clusterIP: 10.96.{hi}.{lo}
  clusterIPs: [10.96.{hi}.{lo}]
  ports:
  - {{name: http, port: 80, protocol: TCP, targetPort: 8080}}
  - {{name: dns, port: 53, protocol: UDP, targetPort: 5353}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  namespace: soak
  name: svc-{i}-1
  labels: {{kubernetes.io/service-name: svc-{i}}}
addressType: IPv4
ports:
- {{name: http, port: 8080, protocol: TCP}}
- {{name: dns, port: 5353, protocol: UDP}}
endpoints:
{endpoints}"
    )
}

/// Writes `text` to `path` atomically (a rename from `scratch`), so the
/// watch never sees half a file.
fn write_atomically(scratch: &Path, path: &Path, text: &str) {
    std::fs::write(scratch, text).unwrap();
    std::fs::rename(scratch, path).unwrap();
}

/// The proxy and the namespace it runs in (none without root).
struct Soaked {
    proxy: Proxy,
    ns: Option<Netns>,
}

impl Soaked {
    fn metric(&self, name: &str) -> Option<f64> {
        metric(&scrape(self.ns.as_ref())?, name)
    }
}

fn start(dir: &Path, mode: &str, root: bool) -> Soaked {
    let config = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: {mode}
hostnameOverride: node-a
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: {METRICS}
userspace:
  redirectServiceIPs: false
"
    );
    let manifests = dir.join("manifests").to_string_lossy().into_owned();
    let ns = root.then(netns_with_lo);
    let proxy = Proxy::start(&Launch {
        dir,
        config: &config,
        args: &["--manifests", &manifests],
        env: &[],
        wrapper: None,
        ns: ns.as_ref(),
    });
    Soaked { proxy, ns }
}

fn main() {
    let args = args();
    let root = is_root();
    let mode = args
        .mode
        .clone()
        .unwrap_or_else(|| if root { "nftables" } else { "userspace" }.to_string());
    assert!(
        root || mode == "userspace",
        "{mode} mode needs root (it runs in a network namespace)"
    );
    let warmup = args
        .warmup
        .unwrap_or_else(|| (args.duration / 6).min(Duration::from_secs(600)));
    let dir = std::env::temp_dir().join(format!("kube-proxy-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let scratch = dir.join("scratch.yaml");
    for i in 0..args.services {
        std::fs::write(manifests.join(format!("svc-{i}.yaml")), manifest(i, 0)).unwrap();
    }
    println!(
        "soak: {mode} mode, {} Services (2 ports, 2 endpoints each), {} changes/s, {:?} after a {:?} warm-up, RSS every {:?}",
        args.services, args.rate, args.duration, warmup, args.sample
    );
    let mut proxy = start(&dir, &mode, root);
    let pid = proxy.proxy.pid;
    let started = Instant::now();
    while proxy.metric(SYNCS).unwrap_or(0.0) < 1.0 {
        proxy.proxy.check_alive();
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no first sync within 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "first sync after {:?}; RSS {}",
        started.elapsed(),
        mib(rss_kib(pid))
    );

    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let begin = Instant::now();
    let end = begin + warmup + args.duration;
    let mut next_change = begin;
    let mut next_sample = begin;
    let mut changes = 0u64;
    let mut baseline = None;
    let mut samples: Vec<(Duration, u64, f64)> = Vec::new();
    // Changes keep coming, so syncs must too.
    let (mut last_syncs, mut last_progress) = (0.0, Instant::now());
    let mut report = String::new();
    println!(
        "{:>8}  {:>10}  {:>8}  {:>7}",
        "t", "RSS", "changes", "syncs"
    );
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_change {
            let i = (changes as usize * 7919) % args.services;
            write_atomically(
                &scratch,
                &manifests.join(format!("svc-{i}.yaml")),
                // A new generation per round over the Services: every
                // write changes the file.
                &manifest(i, changes / args.services as u64 + 1),
            );
            changes += 1;
            next_change += interval;
        }
        if now >= next_sample {
            let rss = rss_kib(pid);
            let syncs = proxy.metric(SYNCS).unwrap_or(f64::NAN);
            if syncs > last_syncs {
                (last_syncs, last_progress) = (syncs, now);
            } else if now - last_progress > Duration::from_secs(90) {
                println!("FAIL: no sync for 90 s while changes kept coming");
                drop(proxy);
                std::process::exit(1);
            }
            let t = now - begin;
            println!(
                "{:>7.0}s  {:>10}  {changes:>8}  {syncs:>7}",
                t.as_secs_f64(),
                mib(rss)
            );
            if baseline.is_none() && t >= warmup {
                baseline = Some(rss);
                println!("-- warm-up over: baseline RSS {}", mib(rss));
            }
            if baseline.is_some() {
                samples.push((t, rss, syncs));
            }
            next_sample += args.sample;
        }
        proxy.proxy.check_alive();
        let wake = next_change.min(next_sample);
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        );
    }
    let baseline = baseline.expect("the run ended before the warm-up did");
    let (max_t, max) = samples
        .iter()
        .map(|(t, rss, _)| (*t, *rss))
        .max_by_key(|(_, rss)| *rss)
        .unwrap();
    let last = samples.last().unwrap();
    let growth = |rss: u64| (rss as f64 / baseline as f64 - 1.0) * 100.0;
    let pass = growth(max) <= 10.0;
    let _ = writeln!(
        report,
        "soak result: {mode}, {} Services, {changes} changes in {:?} ({} changes/s), {} syncs",
        args.services,
        begin.elapsed(),
        args.rate,
        last.2
    );
    let _ = writeln!(
        report,
        "RSS: warm-up {} | max after warm-up {} at {:.0}s ({:+.1} %) | end {} ({:+.1} %) -> {}",
        mib(baseline),
        mib(max),
        max_t.as_secs_f64(),
        growth(max),
        mib(last.1),
        growth(last.1),
        if pass {
            "PASS (within 10 %)"
        } else {
            "FAIL (grew more than 10 %)"
        }
    );
    print!("{report}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
    if !pass {
        std::process::exit(1);
    }
}
