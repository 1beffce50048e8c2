//! Loopback benchmark, side by side in one run: a direct connection,
//! through the userspace proxy (splice and copy forwarding), and through
//! `socat` (when installed).
//!
//! ```text
//! cargo bench -p backend-userspace --bench proxy
//! ```
//!
//! Measures bulk throughput (one connection, client → server), request/
//! response latency (64-byte ping-pong on one connection, p50/p99) and
//! connections per second (connect, 1-byte exchange, close) at 64 and 1,024
//! concurrent clients. Bulk and latency run `BENCH_ROUNDS` (5) interleaved
//! rounds and report medians. Sizes: `BENCH_BULK_MIB` (1024),
//! `BENCH_ROUND_TRIPS` (10,000), `BENCH_CONN_SECS` (2); 0 skips that part.
//! `BENCH_PATHS=direct,splice` runs only the paths whose label holds one of
//! the words (to profile one path). The proxy's Tokio workers:
//! `BENCH_PROXY_WORKERS` (2; 0 = a current-thread runtime). Threads are
//! named `server`, `userspace-proxy` and `clients` (the bulk and latency
//! client is the main thread), so `perf report --sort comm` splits the CPU
//! time by role.

// A benchmark is test code: a failed set-up should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/congestion.rs"]
mod congestion;
#[path = "support/cpu.rs"]
mod cpu;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend_userspace::{Forwarding, Options, UserspaceBackend};
use common::{context, free_port, service, slice, topology, view};
use proxy_core::{Backend, ChangeSet};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const SERVER_IP: [u8; 4] = [127, 0, 0, 2];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A Tokio runtime of `workers` threads named `name` (so that `perf` and
/// `top` tell the server, the proxy and the clients apart).
fn runtime(name: &str, workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// The server: on each connection, the first byte picks the test:
/// `b` bulk sink (reads to EOF, answers the byte count), `d` bulk source
/// (reads a big-endian u64 count, sends that many bytes, closes), `e` echo.
async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut kind = [0u8; 1];
            if s.read_exact(&mut kind).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 256 * 1024];
            if kind[0] == b'b' {
                let mut total = 0u64;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = s.write_all(&total.to_be_bytes()).await;
            } else if kind[0] == b'd' {
                let mut count = [0u8; 8];
                if s.read_exact(&mut count).await.is_err() {
                    return;
                }
                let mut left = u64::from_be_bytes(count);
                buf.fill(7);
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = s.shutdown().await;
            } else {
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
}

/// Gbit/s of one bulk transfer of `mib` MiB to `addr`, and the CPU time
/// this process spent per GiB meanwhile (client, server and, when it is the
/// path, the proxy: all run in this process; socat does not).
fn bulk(addr: SocketAddr, mib: u64) -> (f64, f64) {
    let cpu_before = process_cpu_seconds();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"b").unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let total = mib * 1024 * 1024;
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(count), total);
    let cpu = process_cpu_seconds() - cpu_before;
    (
        (total as f64 * 8.0) / secs / 1e9,
        cpu / (mib as f64 / 1024.0),
    )
}

/// Which way a bulk transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client → server (the server counts and answers the total).
    Upload,
    /// Server → client (the client counts to the end of stream).
    Download,
}

/// Moves `mib` MiB one way over a new connection to `addr`; returns the
/// seconds from the first payload byte to the last one counted.
fn transfer(addr: SocketAddr, mib: u64, direction: Direction) -> f64 {
    let total = mib * 1024 * 1024;
    let mut s = TcpStream::connect(addr).unwrap();
    let mut chunk = vec![7u8; 256 * 1024];
    let start = Instant::now();
    match direction {
        Direction::Upload => {
            s.write_all(b"b").unwrap();
            let mut sent = 0;
            while sent < total {
                s.write_all(&chunk).unwrap();
                sent += chunk.len() as u64;
            }
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut count = [0u8; 8];
            s.read_exact(&mut count).unwrap();
            assert_eq!(u64::from_be_bytes(count), total);
        }
        Direction::Download => {
            s.write_all(b"d").unwrap();
            s.write_all(&total.to_be_bytes()).unwrap();
            let mut got = 0u64;
            loop {
                let n = s.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            assert_eq!(got, total);
        }
    }
    start.elapsed().as_secs_f64()
}

/// p50 and p99 of 64-byte round trips, in µs.
fn latency(addr: SocketAddr, round_trips: u64) -> (f64, f64) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"e").unwrap();
    let msg = [1u8; 64];
    let mut back = [0u8; 64];
    let mut samples = Vec::with_capacity(round_trips as usize);
    for i in 0..round_trips + 1000 {
        let start = Instant::now();
        s.write_all(&msg).unwrap();
        s.read_exact(&mut back).unwrap();
        if i >= 1000 {
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99))
}

/// Completed connect + 1-byte echo + close per second with `clients`
/// concurrent clients.
fn connections_per_second(rt: &Runtime, addr: SocketAddr, clients: usize, secs: u64) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let one = async {
                        let mut s = tokio::net::TcpStream::connect(addr).await?;
                        s.write_all(b"e!").await?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await?;
                        std::io::Result::Ok(())
                    };
                    match tokio::time::timeout(Duration::from_secs(5), one).await {
                        Ok(Ok(())) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
    });
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    (rate, failed.load(Ordering::Relaxed))
}

/// Where the proxy's listeners run.
enum ProxyRuntime {
    Pool(Runtime),
    Dedicated(tokio::runtime::Handle),
}

impl ProxyRuntime {
    /// Syncs `backend` to `view` on this runtime, so its listeners run here.
    fn sync(&self, mut backend: UserspaceBackend, view: proxy_core::NodeView) -> UserspaceBackend {
        let sync = async move {
            backend.sync(&view, &ChangeSet::full()).await.unwrap();
            backend
        };
        match self {
            ProxyRuntime::Pool(rt) => rt.block_on(sync),
            ProxyRuntime::Dedicated(handle) => {
                let (tx, rx) = std::sync::mpsc::channel();
                handle.spawn(async move { tx.send(sync.await).unwrap() });
                rx.recv().unwrap()
            }
        }
    }
}

/// CPU seconds (user + system) this process used so far, from
/// `/proc/self/stat` (clock ticks of 10 ms); 0 where unavailable.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

struct Socat(Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_socat(listen: u16, target: SocketAddr) -> Option<Socat> {
    let child = Command::new("socat")
        .arg(format!(
            "TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork,backlog=4096"
        ))
        .arg(format!("TCP:{target},nodelay"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", listen)).is_ok() {
            return Some(Socat(child));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Median of each field of `samples`.
fn median_used(samples: &[cpu::Used]) -> cpu::Used {
    let pick = |f: fn(&cpu::Used) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        median(&mut v)
    };
    cpu::Used {
        client: pick(|u| u.client),
        proxy: pick(|u| u.proxy),
        server: pick(|u| u.server),
        process: pick(|u| u.process),
        ksoftirqd: pick(|u| u.ksoftirqd),
    }
}

/// The 1-minute load average, for the report.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The issue-12 figures: CPU seconds per GiB (upload and download) and
/// connections per second at 64 clients, each path in its own phase (one
/// transfer or one connection test at a time, paths interleaved over
/// rounds), side by side with the direct connection.
fn cost(
    variants: &[(String, SocketAddr)],
    client_rt: &Runtime,
    mib: u64,
    rounds: usize,
    conn_secs: u64,
) {
    let clock = cpu::Clock::new();
    let load_before = load_average();
    let n = variants.len();
    let gib = mib as f64 / 1024.0;
    let directions = [Direction::Upload, Direction::Download];
    // [path][direction] → per-round CPU per GiB and Gbit/s.
    let mut per_gib = vec![vec![Vec::new(); 2]; n];
    let mut gbps = vec![vec![Vec::new(); 2]; n];
    let mut conn_rate = vec![Vec::new(); n];
    let mut per_kconn = vec![Vec::new(); n];
    let mut failed = vec![0u64; n];
    // One unmeasured transfer per path and direction: first-use costs
    // (pipes, buffer growth, page faults) are not per-byte costs.
    for (_, addr) in variants {
        for d in directions {
            transfer(*addr, 16, d);
        }
    }
    for _ in 0..rounds {
        for (di, d) in directions.into_iter().enumerate() {
            for (i, (_, addr)) in variants.iter().enumerate() {
                let before = clock.now();
                let secs = transfer(*addr, mib, d);
                per_gib[i][di].push(clock.since(&before).per(gib));
                gbps[i][di].push(mib as f64 * 1024.0 * 1024.0 * 8.0 / secs / 1e9);
            }
        }
        if conn_secs > 0 {
            for (i, (_, addr)) in variants.iter().enumerate() {
                let before = clock.now();
                let (rate, fails) = connections_per_second(client_rt, *addr, 64, conn_secs);
                let used = clock.since(&before);
                let conns = rate * conn_secs as f64;
                conn_rate[i].push(rate);
                per_kconn[i].push(used.per(conns / 1000.0));
                failed[i] += fails;
            }
        }
    }
    println!();
    println!(
        "CPU per GiB and connections per second (rounds: {rounds}; {mib} MiB per transfer; {conn_secs} s per connection cell; load average before {load_before}, after {})",
        load_average()
    );
    println!(
        "| path | upload CPU s/GiB | × direct | download CPU s/GiB | × direct | upload Gbit/s | download Gbit/s | conn/s @64 | × direct | CPU ms per 1k conn | × direct |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let direct = variants.iter().position(|(l, _)| l == "direct");
    let mut cells = Vec::new();
    for i in 0..n {
        let up = median_used(&per_gib[i][0]);
        let down = median_used(&per_gib[i][1]);
        let up_g = median(&mut gbps[i][0]);
        let down_g = median(&mut gbps[i][1]);
        let rate = if conn_rate[i].is_empty() {
            f64::NAN
        } else {
            median(&mut conn_rate[i])
        };
        let kconn = if per_kconn[i].is_empty() {
            cpu::Used::default()
        } else {
            median_used(&per_kconn[i])
        };
        cells.push((up, down, up_g, down_g, rate, kconn));
    }
    let ratio = |i: usize, f: &dyn Fn(usize) -> f64| match direct {
        Some(d) => format!("{:.2}×", f(i) / f(d)),
        None => "n/a".into(),
    };
    for (i, (label, _)) in variants.iter().enumerate() {
        let (up, down, up_g, down_g, rate, kconn) = cells[i];
        let failures = if failed[i] > 0 {
            format!(" ({} failed)", failed[i])
        } else {
            String::new()
        };
        println!(
            "| {label} | {:.3} | {} | {:.3} | {} | {up_g:.1} | {down_g:.1} | {rate:.0}{failures} | {} | {:.1} | {} |",
            up.process,
            ratio(i, &|j| cells[j].0.process),
            down.process,
            ratio(i, &|j| cells[j].1.process),
            ratio(i, &|j| cells[j].4),
            kconn.process * 1000.0,
            ratio(i, &|j| cells[j].5.process),
        );
    }
    println!();
    println!(
        "Where the CPU goes (medians; CPU s/GiB by thread role, and ksoftirqd system-wide, not counted above):"
    );
    println!("| path | direction | client | proxy | server | process | ksoftirqd |");
    println!("|---|---|---|---|---|---|---|");
    for (i, (label, _)) in variants.iter().enumerate() {
        for (name, u) in [("upload", cells[i].0), ("download", cells[i].1)] {
            println!(
                "| {label} | {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                u.client, u.proxy, u.server, u.process, u.ksoftirqd
            );
        }
        let k = cells[i].5;
        println!(
            "| {label} | 1k connections (CPU ms) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            k.client * 1000.0,
            k.proxy * 1000.0,
            k.server * 1000.0,
            k.process * 1000.0,
            k.ksoftirqd * 1000.0
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `--cost` runs only the CPU-per-GiB
    // and connections-per-second comparison, `--full` only the full table
    // (throughput, latency, connections at 64 and 1,024, socat).
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let run_cost = !args.iter().any(|a| a == "--full");
    let run_full = !args.iter().any(|a| a == "--cost");
    let bulk_mib = env_num("BENCH_BULK_MIB", 1024);
    let round_trips = env_num("BENCH_ROUND_TRIPS", 10_000);
    let conn_secs = env_num("BENCH_CONN_SECS", 2);

    let server_rt = runtime("server", 1);
    let server_port = free_port();
    let server = SocketAddr::from((SERVER_IP, server_port));
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind(server))
        .unwrap();
    server_rt.spawn(serve(listener));

    // The proxies: one backend per forwarding mode, each with its node port.
    // The proxy's runtime: `BENCH_PROXY_WORKERS` threads, 0 for a
    // current-thread runtime driven by one dedicated thread.
    let proxy_workers = env_num("BENCH_PROXY_WORKERS", 2) as usize;
    let proxy_rt = if proxy_workers == 0 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("userspace-proxy".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .unwrap();
        ProxyRuntime::Dedicated(handle)
    } else {
        ProxyRuntime::Pool(runtime("userspace-proxy", proxy_workers))
    };
    let mut variants: Vec<(String, SocketAddr)> = vec![("direct".into(), server)];
    let mut backends = Vec::new();
    let mut modes = vec![(
        "userspace (copy)",
        Forwarding::Copy {
            buffer: Forwarding::DEFAULT_COPY_BUFFER,
        },
    )];
    if Forwarding::splice_available() {
        modes.insert(0, ("userspace (splice)", Forwarding::Splice));
    }
    for (i, (label, forwarding)) in modes.into_iter().enumerate() {
        let np = free_port();
        let t = topology(
            &[service(
                &format!("bench{i}"),
                "10.96.0.10",
                "TCP",
                80,
                Some(np),
                json!({}),
            )],
            &[slice(
                &format!("bench{i}"),
                "TCP",
                server_port,
                &[SERVER_IP.into()],
            )],
        );
        let backend = UserspaceBackend::with_options(
            &context(),
            Options::default().with_forwarding(forwarding),
        );
        let backend = proxy_rt.sync(backend, view(&t));
        backends.push(backend);
        variants.push((label.to_string(), SocketAddr::from(([127, 0, 0, 1], np))));
    }
    let socat_port = free_port();
    let _socat = match start_socat(socat_port, server) {
        Some(s) => {
            variants.push((
                "socat".into(),
                SocketAddr::from(([127, 0, 0, 1], socat_port)),
            ));
            Some(s)
        }
        None => {
            eprintln!("socat not found: skipping it (apt-get install socat)");
            None
        }
    };

    // `BENCH_PATHS=direct,splice` keeps only the paths whose label contains
    // one of the words (for profiling one path; ratios need `direct`).
    if let Ok(wanted) = std::env::var("BENCH_PATHS") {
        variants.retain(|(label, _)| {
            wanted
                .split(',')
                .any(|w| !w.is_empty() && label.contains(w))
        });
    }

    // Like for like: every socket of every path runs the system default
    // congestion control (nothing here or in the proxy sets one).
    congestion::check_same_everywhere(&variants, server);

    let client_rt = runtime("clients", 2);
    let rounds = env_num("BENCH_ROUNDS", 5) as usize;
    let n = variants.len();
    // Rounds interleave the paths, so a burst of load on this shared machine
    // hits them alike; each cell is the median over the rounds.
    let (mut gbps, mut p50, mut p99) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    if run_cost {
        let in_process: Vec<_> = variants
            .iter()
            .filter(|(label, _)| label != "socat")
            .cloned()
            .collect();
        cost(&in_process, &client_rt, bulk_mib.max(1), rounds, conn_secs);
    }
    if !run_full {
        drop(backends);
        return;
    }
    // The full table runs socat too; the cost comparison leaves it out
    // (its CPU is another process's).
    let mut cpu = vec![Vec::new(); n];
    for _ in 0..rounds {
        for (i, (_, addr)) in variants.iter().enumerate() {
            let (g, c) = if bulk_mib > 0 {
                bulk(*addr, bulk_mib)
            } else {
                (f64::NAN, f64::NAN)
            };
            gbps[i].push(g);
            cpu[i].push(c);
            let (a, b) = if round_trips > 0 {
                latency(*addr, round_trips)
            } else {
                (f64::NAN, f64::NAN)
            };
            p50[i].push(a);
            p99[i].push(b);
        }
    }
    let mut conns = Vec::new();
    for (_, addr) in &variants {
        if conn_secs == 0 {
            conns.push(((0.0, 0), (0.0, 0)));
            continue;
        }
        conns.push((
            connections_per_second(&client_rt, *addr, 64, conn_secs),
            connections_per_second(&client_rt, *addr, 1024, conn_secs),
        ));
    }
    println!();
    println!(
        "rounds: {rounds}; bulk: {bulk_mib} MiB per transfer; round trips: {round_trips} per round; connections: {conn_secs} s per cell; proxy workers: {proxy_workers}"
    );
    println!(
        "| path | bulk Gbit/s | vs direct | CPU s/GiB (in-process) | RTT p50 µs | RTT p99 µs | p50 overhead µs | conn/s @64 | conn/s @1024 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let (base_gbps, base_p50) = match variants.iter().position(|(l, _)| l == "direct") {
        Some(i) => (median(&mut gbps[i]), median(&mut p50[i])),
        None => (f64::NAN, f64::NAN),
    };
    for (i, (label, _)) in variants.iter().enumerate() {
        let (g, a, b) = (
            median(&mut gbps[i]),
            median(&mut p50[i]),
            median(&mut p99[i]),
        );
        let c = if label == "socat" {
            "n/a".to_string()
        } else {
            format!("{:.2}", median(&mut cpu[i]))
        };
        let ((c64, f64_), (c1024, f1024)) = conns[i];
        let failures = if f64_ + f1024 > 0 {
            format!(" ({} failed)", f64_ + f1024)
        } else {
            String::new()
        };
        println!(
            "| {label} | {g:.1} | {:.2}× | {c} | {a:.1} | {b:.1} | {:+.1} | {c64:.0} | {c1024:.0}{failures} |",
            g / base_gbps,
            a - base_p50
        );
    }
    drop(backends);
}
