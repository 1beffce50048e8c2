//! `userspace.maxUDPSessions`: a UDP listener keeps at most that many
//! sessions, closing the least recently active first. Real sockets on
//! loopback; needs no privileges.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use backend_userspace::{Options, RedirectMode, UserspaceBackend};
use common::{context, free_port, service, slice, topology, view};
use proxy_core::{Backend, ChangeSet};
use serde_json::json;
use tokio::net::UdpSocket;

/// An endpoint on `ip` answering every datagram with the address it came
/// from: the proxy's socket of that session.
async fn mirror(ip: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    loop {
        let addr = SocketAddr::new(ip.parse().unwrap(), free_port());
        let Ok(socket) = UdpSocket::bind(addr).await else {
            continue;
        };
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(from.to_string().as_bytes(), from).await;
            }
        });
        return (addr, task);
    }
}

/// A userspace backend serving a UDP node port to `endpoint`, with at most
/// `max` sessions that never go idle during the test.
async fn proxy(endpoint: SocketAddr, max: usize) -> (UserspaceBackend, SocketAddr) {
    let np = free_port();
    let t = topology(
        &[service("dns", "10.96.0.10", "UDP", 53, Some(np), json!({}))],
        &[slice("dns", "UDP", endpoint.port(), &[endpoint.ip()])],
    );
    let options = Options::default()
        .with_redirect(RedirectMode::Off)
        .with_udp_idle_timeout(Duration::from_secs(60))
        .with_max_udp_sessions(max);
    let mut backend = UserspaceBackend::with_options(&context(), options);
    backend.sync(&view(&t), &ChangeSet::full()).await.unwrap();
    (backend, SocketAddr::from(([127, 0, 0, 1], np)))
}

/// Sends from `client` and returns the session socket the endpoint saw.
async fn session_of(client: &UdpSocket, proxy: SocketAddr) -> String {
    client.send_to(b"q", proxy).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
        .await
        .expect("no answer through the proxy")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn the_least_recently_active_session_is_evicted_first() {
    let (endpoint, _task) = mirror("127.0.0.91").await;
    let (_backend, proxy) = proxy(endpoint, 3).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let [a, b, c, d] = &clients[..] else {
        unreachable!()
    };
    let sa = session_of(a, proxy).await;
    let sb = session_of(b, proxy).await;
    let sc = session_of(c, proxy).await;
    // A is used again: B is now the least recently active.
    assert_eq!(session_of(a, proxy).await, sa);
    // A fourth client: one session must go, and it is B's.
    let sd = session_of(d, proxy).await;
    assert_eq!(session_of(a, proxy).await, sa, "A kept its session");
    assert_eq!(session_of(c, proxy).await, sc, "C kept its session");
    assert_eq!(session_of(d, proxy).await, sd, "D kept its session");
    assert_ne!(session_of(b, proxy).await, sb, "B got a new session");
}

/// The UDP sockets in this network namespace connected to `endpoint`
/// (`/proc/net/udp`): the proxy's open sessions to it.
fn sockets_connected_to(endpoint: SocketAddr) -> usize {
    let IpAddr::V4(ip) = endpoint.ip() else {
        unreachable!()
    };
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(ip.octets()),
        endpoint.port()
    );
    std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(2) == Some(remote.as_str()))
        .count()
}

#[tokio::test]
async fn a_flood_of_client_ports_holds_at_most_the_cap() {
    const MAX: usize = 64;
    const CLIENTS: usize = 1000;
    let (endpoint, _task) = mirror("127.0.0.92").await;
    let (_backend, proxy) = proxy(endpoint, MAX).await;
    let mut most = 0;
    for i in 0..CLIENTS {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        session_of(&client, proxy).await;
        if i % 50 == 0 {
            most = most.max(sockets_connected_to(endpoint));
        }
    }
    // Evicted sessions close their sockets (at once: their relay task is
    // aborted); give the runtime a moment to drop the last ones.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let open = sockets_connected_to(endpoint);
    most = most.max(open);
    assert!(open > 0, "sessions are open");
    assert!(
        most <= MAX,
        "{most} sessions open at once for {CLIENTS} clients; the cap is {MAX}"
    );
}
