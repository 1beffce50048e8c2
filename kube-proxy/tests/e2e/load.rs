//! A connection load generator: new TCP connections at a bounded rate from
//! a client namespace to one address, each one counted as answered (an
//! echo server's reply came back) or failed, with its start time.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proxy_core::conformance::netns::{Netns, parse_echo_reply};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

/// How long one connection may take (connect, reply, close).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it started, from the load's start.
    pub started: Duration,
    /// `None` when answered, else what went wrong.
    pub error: Option<String>,
}

/// A running load; [`Load::finish`] stops it and returns every attempt.
#[derive(Debug)]
pub struct Load {
    stop: Arc<Mutex<bool>>,
    thread: Option<JoinHandle<std::io::Result<std::io::Result<Vec<Attempt>>>>>,
    /// When the load started.
    pub start: Instant,
}

impl Load {
    /// Starts opening `rate` connections per second from `source` (an
    /// address of `ns`) to `destination`, in a thread inside `ns`; a
    /// connection counts as answered when the echo server of one of
    /// `endpoints` replies.
    pub fn start(
        ns: &Netns,
        source: IpAddr,
        destination: SocketAddr,
        rate: u32,
        endpoints: BTreeSet<SocketAddr>,
        start: Instant,
    ) -> Result<Load, String> {
        let stop = Arc::new(Mutex::new(false));
        let stopped = stop.clone();
        let target = Arc::new((source, destination, endpoints));
        let thread = ns
            .spawn("load", move || run(target, rate, start, stopped))
            .map_err(|e| format!("starting the load in the client namespace: {e}"))?;
        Ok(Load {
            stop,
            thread: Some(thread),
            start,
        })
    }

    /// Stops opening connections, waits for those in flight, and returns
    /// every attempt.
    pub fn finish(mut self) -> Result<Vec<Attempt>, String> {
        self.request_stop();
        let thread = self.thread.take().ok_or("the load was already finished")?;
        match thread.join() {
            Ok(Ok(Ok(attempts))) => Ok(attempts),
            Ok(Ok(Err(e))) | Ok(Err(e)) => Err(format!("the load failed: {e}")),
            Err(_) => Err("the load thread panicked".into()),
        }
    }

    fn request_stop(&self) {
        if let Ok(mut stop) = self.stop.lock() {
            *stop = true;
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `(source, destination, endpoints)`.
type Target = Arc<(IpAddr, SocketAddr, BTreeSet<SocketAddr>)>;

fn run(
    target: Target,
    rate: u32,
    start: Instant,
    stop: Arc<Mutex<bool>>,
) -> std::io::Result<Vec<Attempt>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        while !stop.lock().map(|s| *s).unwrap_or(true) {
            ticks.tick().await;
            let started = start.elapsed();
            let target = target.clone();
            tasks.spawn(async move {
                let error = tokio::time::timeout(ATTEMPT_TIMEOUT, connect(&target))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")))
                    .err();
                Attempt { started, error }
            });
        }
        let mut attempts = Vec::new();
        while let Some(done) = tasks.join_next().await {
            attempts.push(done.map_err(std::io::Error::other)?);
        }
        attempts.sort_by_key(|a| a.started);
        Ok(attempts)
    })
}

/// One connection: bound to `source`, answered by an endpoint's echo
/// server.
async fn connect(target: &Target) -> Result<(), String> {
    let (source, destination, endpoints) = (target.0, target.1, &target.2);
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let mut stream = socket
        .connect(destination)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .await
        .map_err(|e| format!("read: {e}"))?;
    match parse_echo_reply(&reply) {
        Some((server, _)) if endpoints.contains(&server) => Ok(()),
        Some((server, _)) => Err(format!("answered by {server}, not an endpoint")),
        None => Err(format!("not an echo reply: {reply:?}")),
    }
}
