//! Render and apply benchmarks of the iptables mode (a custom harness: the
//! apply runs need root and happen in throw-away network namespaces).
//!
//! ```text
//! cargo bench -p backend-iptables --bench sync -- [SIZES] [--no-apply] [--chunk N]
//! ```
//!
//! `--upstream-partial` rewrites the top-level chains in every partial sync,
//! as upstream. `--single` also times upstream's one-input restore above 1000 services
//! (minutes: it is super-linear). `--chunk N` sets the ports per restore of a full sync (`0`: one restore;
//! default: the backend's, 500 with iptables-nft).
//!
//! ```text
//! ```
//!
//! `SIZES` is a comma-separated list of service counts (default
//! `1000,10000,30000`), each service with one TCP port and 10 endpoints.
//! For each size it prints: render time (render + assemble, median), the
//! restore input size, and — as root with `iptables-nft` — the time of a
//! full sync through the backend into a fresh namespace, the time of a bare
//! `iptables-nft-restore --noflush` of the identical text into another
//! fresh namespace (the kernel floor), and a partial sync after one endpoint
//! change. Peak RSS of this process is printed at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backend_iptables::IptablesBackend;
use backend_iptables::render::{RenderConfig, render};
use backend_iptables::restore::{TopLevel, assemble, assemble_ports, assemble_with};
use proxy_core::conformance::netns::Netns;
use proxy_core::{Backend, ChangeSet, NodeView};

const ENDPOINTS: usize = 10;
/// A bare restore slower than this is stopped and reported as such.
const BARE_LIMIT: Duration = Duration::from_secs(180);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `iptables-nft-restore --noflush --counters` of `text` in `ns`; `None` past [`BARE_LIMIT`].
fn bare_restore(ns: &Netns, text: &str) -> Option<Duration> {
    let start = Instant::now();
    let mut child = ns
        .command("iptables-nft-restore")
        .args(["--noflush", "--counters"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iptables-nft-restore");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = text.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let _ = writer.join();
            assert!(status.success(), "bare restore failed");
            return Some(start.elapsed());
        }
        if start.elapsed() > BARE_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writer.join();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` with a fresh backend in `ns` (current-thread runtime there).
fn in_ns<T: Send>(
    ns: &Netns,
    (chunk, upstream_partial): (Option<usize>, bool),
    f: impl AsyncFnOnce(&mut IptablesBackend) -> T + Send,
) -> T {
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut b = IptablesBackend::new(&common::context()).expect("backend");
            if upstream_partial {
                b = b.rewrite_unchanged_top_level(true);
            }
            if let Some(n) = chunk {
                b = b.max_ports_per_restore((n > 0).then_some(n));
            }
            f(&mut b).await
        })
    })
    .expect("netns")
}

fn fmt(d: Option<Duration>) -> String {
    d.map_or(format!("> {} s", BARE_LIMIT.as_secs()), |d| {
        format!("{:.3} s", d.as_secs_f64())
    })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let sizes: Vec<usize> = args
        .iter()
        .find(|a| a.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map_or(vec![1000, 10_000, 30_000], |s| {
            s.split(',').filter_map(|n| n.parse().ok()).collect()
        });
    let no_apply = args.iter().any(|a| a == "--no-apply");
    let single = args.iter().any(|a| a == "--single");
    let upstream_partial = args.iter().any(|a| a == "--upstream-partial");
    let chunk: Option<usize> = args
        .iter()
        .position(|a| a == "--chunk")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let can_apply = !no_apply
        && nix_is_root()
        && Command::new("iptables-nft-restore")
            .arg("--version")
            .output()
            .is_ok();
    if !no_apply && !can_apply {
        println!("apply runs skipped: need root and iptables-nft-restore");
    }
    let ctx = common::context();
    let cfg = RenderConfig::from_context(&ctx);
    for &n in &sizes {
        let mut topo = common::topology(n, ENDPOINTS);
        let view = common::view(&topo);
        let runs = if n > 10_000 { 3 } else { 7 };
        let mut times = Vec::new();
        let mut text = String::new();
        for _ in 0..runs {
            let start = Instant::now();
            text = assemble(&render(&cfg, &view, |_| true), &[]).text;
            times.push(start.elapsed());
        }
        println!(
            "{n} services x {ENDPOINTS} endpoints: render {:.1} ms (median of {runs}), input {:.1} MB, {} lines",
            median(times).as_secs_f64() * 1e3,
            text.len() as f64 / 1e6,
            text.lines().count()
        );
        if !can_apply {
            continue;
        }
        let ns = Netns::new().expect("netns");
        let full = in_ns(&ns, (chunk, upstream_partial), async |b| {
            let start = Instant::now();
            let stats = b.sync(&view, &ChangeSet::full()).await.expect("full sync");
            (start.elapsed(), stats)
        });
        println!(
            "  backend full sync (cold, fresh netns): {:.3} s",
            full.0.as_secs_f64()
        );

        // One endpoint of one service moves.
        let _ = topo.apply_endpoint_slice(&common::slice(n / 2, ENDPOINTS, 1));
        let mut new: NodeView = view.clone();
        new.update_service(&topo, &common::key(n / 2));
        let changes = ChangeSet::between(&view, &new, &[common::key(n / 2)]);
        let ns2 = Netns::new().expect("netns");
        let partial = in_ns(&ns2, (chunk, upstream_partial), async |b| {
            b.sync(&view, &ChangeSet::full()).await.expect("full sync");
            let mut times = Vec::new();
            let (mut from, mut to) = (&view, &new);
            for _ in 0..5 {
                let changes = ChangeSet::between(from, to, &[common::key(n / 2)]);
                let start = Instant::now();
                let stats = b.sync(to, &changes).await.expect("partial sync");
                assert!(!stats.full);
                times.push(start.elapsed());
                std::mem::swap(&mut from, &mut to);
            }
            median(times)
        });
        drop(changes);
        println!(
            "  partial sync after one endpoint change (end to end, median of 5): {:.1} ms",
            partial.as_secs_f64() * 1e3
        );

        // The kernel floor: the identical restore inputs the backend wrote
        // (its chunks, then the top-level restore), piped to
        // iptables-nft-restore directly.
        let per = match chunk {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => backend_iptables::NFT_PORTS_PER_RESTORE,
        };
        let ruleset = render(&cfg, &view, |_| true);
        let mut inputs: Vec<String> = Vec::new();
        if ruleset.ports.len() > per {
            inputs.extend(ruleset.ports.chunks(per).map(|c| assemble_ports(c).text));
            inputs.push(assemble_with(&ruleset, &[], &[], TopLevel::Rewrite).text);
        } else {
            inputs.push(text.clone());
        }
        let floor_ns = Netns::new().expect("netns");
        // KUBE-MARK-MASQ must exist before the chunks, as the backend ensures.
        let _ = floor_ns
            .command("iptables-nft")
            .args(["-t", "nat", "-N", "KUBE-MARK-MASQ"])
            .status();
        let start = Instant::now();
        let floor: Option<Duration> = inputs
            .iter()
            .try_fold(Duration::ZERO, |acc, input| {
                bare_restore(&floor_ns, input).map(|d| acc + d)
            })
            .map(|_| start.elapsed());
        println!(
            "  bare iptables-nft-restore of the identical {} input(s): {}",
            inputs.len(),
            fmt(floor)
        );
        if let Some(f) = floor {
            println!(
                "  backend / bare (same inputs): {:.2}",
                full.0.as_secs_f64() / f.as_secs_f64()
            );
        }
        if inputs.len() > 1 && (n <= 1000 || single) {
            let single_ns = Netns::new().expect("netns");
            let single = bare_restore(&single_ns, &text);
            println!(
                "  bare iptables-nft-restore of the whole text as one input (upstream's way): {}",
                fmt(single)
            );
        }
    }
    println!("peak RSS of this process: {:.0} MiB", peak_rss_mib());
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}
