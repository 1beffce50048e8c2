//! Real sockets on loopback: echo endpoints on 127.0.0.x, clients through
//! the proxy's node port. Needs no privileges.

// Helpers shared by the tests fail the test on any set-up error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use backend_userspace::{Options, RedirectMode, UserspaceBackend};
use common::{Echoes, context, free_port, service, slice, topology, view};
use proxy_core::{Backend, ChangeSet, NodeView};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Connects and reads the endpoint's name.
async fn who(addr: SocketAddr) -> std::io::Result<(String, BufReader<TcpStream>)> {
    let stream = TcpStream::connect(addr).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((line.trim().to_string(), reader))
}

/// These tests run in the root network namespace: never install redirect
/// rules there, even as root.
fn no_redirect() -> Options {
    Options::default().with_redirect(RedirectMode::Off)
}

async fn synced(backend: &mut UserspaceBackend, view: &NodeView) {
    backend.sync(view, &ChangeSet::full()).await.unwrap();
}

#[tokio::test]
async fn tcp_node_port_round_robins_over_endpoints() {
    let echoes = Echoes::start(&["127.0.0.21", "127.0.0.22", "127.0.0.23"]).await;
    let np = free_port();
    let t = topology(
        &[service("web", "10.96.0.10", "TCP", 80, Some(np), json!({}))],
        &[slice("web", "TCP", echoes.port, &echoes.addrs)],
    );
    let mut backend = UserspaceBackend::with_options(&context(), no_redirect());
    synced(&mut backend, &view(&t)).await;

    let mut counts = BTreeMap::new();
    for _ in 0..30 {
        let (name, mut conn) = who(localhost(np)).await.unwrap();
        // The connection forwards both ways.
        conn.get_mut().write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        *counts.entry(name).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
        .into_iter()
        .map(|n| (n.to_string(), 10))
        .collect();
    assert_eq!(counts, expected);
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped() {
    let echoes = Echoes::start(&["127.0.0.31"]).await;
    let np = free_port();
    // 127.0.0.32 has no server: connects there are refused.
    let dead = "127.0.0.32".parse().unwrap();
    let t = topology(
        &[service("web", "10.96.0.10", "TCP", 80, Some(np), json!({}))],
        &[slice("web", "TCP", echoes.port, &[echoes.addrs[0], dead])],
    );
    let mut backend = UserspaceBackend::with_options(&context(), no_redirect());
    synced(&mut backend, &view(&t)).await;
    for _ in 0..6 {
        let (name, _) = who(localhost(np)).await.unwrap();
        assert_eq!(name, "127.0.0.31");
    }
}

#[tokio::test]
async fn client_ip_affinity_sticks_to_one_endpoint() {
    let echoes = Echoes::start(&["127.0.0.41", "127.0.0.42", "127.0.0.43"]).await;
    let np = free_port();
    let affinity = json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}});
    let t = topology(
        &[service("web", "10.96.0.10", "TCP", 80, Some(np), affinity)],
        &[slice("web", "TCP", echoes.port, &echoes.addrs)],
    );
    let mut backend = UserspaceBackend::with_options(&context(), no_redirect());
    synced(&mut backend, &view(&t)).await;
    let (first, _) = who(localhost(np)).await.unwrap();
    for _ in 0..9 {
        assert_eq!(who(localhost(np)).await.unwrap().0, first);
    }
}

#[tokio::test]
async fn no_endpoints_refuses_connections() {
    let np = free_port();
    let t = topology(
        &[service("web", "10.96.0.10", "TCP", 80, Some(np), json!({}))],
        &[],
    );
    let mut backend = UserspaceBackend::with_options(&context(), no_redirect());
    synced(&mut backend, &view(&t)).await;
    // The listener accepts and resets at once: the client sees a reset, never data.
    use tokio::io::AsyncReadExt;
    let mut stream = TcpStream::connect(localhost(np)).await.unwrap();
    let mut buf = [0u8; 16];
    let err = stream.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn local_cluster_ip_is_served() {
    let echoes = Echoes::start(&["127.0.0.51"]).await;
    let port = free_port();
    // A ClusterIP that is a local address gets a listener.
    let t = topology(
        &[service("web", "127.0.0.150", "TCP", port, None, json!({}))],
        &[slice("web", "TCP", echoes.port, &echoes.addrs)],
    );
    let mut backend = UserspaceBackend::with_options(&context(), no_redirect());
    synced(&mut backend, &view(&t)).await;
    let (name, _) = who(SocketAddr::from(([127, 0, 0, 150], port)))
        .await
        .unwrap();
    assert_eq!(name, "127.0.0.51");
}

#[tokio::test]
async fn udp_sessions_stick_per_client_and_end_when_idle() {
    let echoes = Echoes::start(&["127.0.0.61", "127.0.0.62"]).await;
    let np = free_port();
    let t = topology(
        &[service("dns", "10.96.0.10", "UDP", 53, Some(np), json!({}))],
        &[slice("dns", "UDP", echoes.port, &echoes.addrs)],
    );
    let options = no_redirect().with_udp_idle_timeout(Duration::from_millis(150));
    let mut backend = UserspaceBackend::with_options(&context(), options);
    synced(&mut backend, &view(&t)).await;

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(localhost(np)).await.unwrap();
    let ask = || async {
        client.send(b"q").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    // One session: every datagram goes to the same endpoint while active.
    let first = ask().await;
    for _ in 0..5 {
        assert_eq!(ask().await, first);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Idle past the timeout: a new session, the next endpoint in turn.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_ne!(ask().await, first);
}

#[tokio::test]
async fn removing_a_service_keeps_open_connections() {
    let echoes = Echoes::start(&["127.0.0.71"]).await;
    let np = free_port();
    let t = topology(
        &[service("web", "10.96.0.10", "TCP", 80, Some(np), json!({}))],
        &[slice("web", "TCP", echoes.port, &echoes.addrs)],
    );
    let mut backend = UserspaceBackend::with_options(&context(), no_redirect());
    synced(&mut backend, &view(&t)).await;
    let (_, mut open) = who(localhost(np)).await.unwrap();

    let empty = view(&topology(&[], &[]));
    let changes = ChangeSet::between(
        &view(&t),
        &empty,
        [&proxy_core::ServiceKey::new("ns", "web")],
    );
    let stats = backend.sync(&empty, &changes).await.unwrap();
    assert!(stats.objects_written >= 2, "{stats:?}");

    // New connections are refused...
    assert!(TcpStream::connect(localhost(np)).await.is_err());
    // ...the open one still works.
    open.get_mut().write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still");
}

#[tokio::test]
async fn endpoint_changes_apply_without_reopening_the_listener() {
    let echoes = Echoes::start(&["127.0.0.81", "127.0.0.82"]).await;
    let np = free_port();
    let svc = service("web", "10.96.0.10", "TCP", 80, Some(np), json!({}));
    let before = topology(
        std::slice::from_ref(&svc),
        &[slice("web", "TCP", echoes.port, &echoes.addrs[..1])],
    );
    let after = topology(
        &[svc],
        &[slice("web", "TCP", echoes.port, &echoes.addrs[1..])],
    );
    let mut backend = UserspaceBackend::with_options(&context(), no_redirect());
    synced(&mut backend, &view(&before)).await;
    let (_, mut open) = who(localhost(np)).await.unwrap();

    let changes = ChangeSet::between(
        &view(&before),
        &view(&after),
        [&proxy_core::ServiceKey::new("ns", "web")],
    );
    let stats = backend.sync(&view(&after), &changes).await.unwrap();
    // Only the balancer changed: the listener stayed.
    assert_eq!(stats.objects_written, 1, "{stats:?}");
    assert_eq!(who(localhost(np)).await.unwrap().0, "127.0.0.82");
    // The connection to the removed endpoint finishes on its own.
    open.get_mut().write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    open.read_exact(&mut buf).await.unwrap();
}

#[tokio::test]
async fn a_port_in_use_fails_only_its_service() {
    let echoes = Echoes::start(&["127.0.0.91"]).await;
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let np = free_port();
    let t = topology(
        &[
            service("busy", "10.96.0.11", "TCP", 80, Some(busy_port), json!({})),
            service("web", "10.96.0.10", "TCP", 80, Some(np), json!({})),
        ],
        &[
            slice("busy", "TCP", echoes.port, &echoes.addrs),
            slice("web", "TCP", echoes.port, &echoes.addrs),
        ],
    );
    let mut backend = UserspaceBackend::with_options(&context(), no_redirect());
    let stats = backend.sync(&view(&t), &ChangeSet::full()).await.unwrap();
    assert!(
        stats.totals.contains(&("listener_failures".to_string(), 1)),
        "{stats:?}"
    );
    let failures: Vec<_> = backend
        .failures()
        .map(|f| f.spec.port.to_string())
        .collect();
    assert_eq!(failures, ["ns/busy:p"]);
    assert_eq!(who(localhost(np)).await.unwrap().0, "127.0.0.91");

    // Once the port is free, the next sync (even with no changes) opens it.
    drop(busy);
    let stats = backend
        .sync(&view(&t), &ChangeSet::default())
        .await
        .unwrap();
    assert_eq!(stats.objects_written, 1, "{stats:?}");
    assert_eq!(backend.failures().count(), 0);
    assert_eq!(who(localhost(busy_port)).await.unwrap().0, "127.0.0.91");
}

async fn bulk_transfer_with_half_close(forwarding: backend_userspace::Forwarding) {
    let echoes = Echoes::start(&["127.0.0.101"]).await;
    let np = free_port();
    let t = topology(
        &[service(
            "bulk",
            "10.96.0.10",
            "TCP",
            80,
            Some(np),
            json!({}),
        )],
        &[slice("bulk", "TCP", echoes.port, &echoes.addrs)],
    );
    let mut backend =
        UserspaceBackend::with_options(&context(), no_redirect().with_forwarding(forwarding));
    synced(&mut backend, &view(&t)).await;

    let (name, conn) = who(localhost(np)).await.unwrap();
    assert_eq!(name, "127.0.0.101");
    let (mut read, mut write) = conn.into_inner().into_split();
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        // Half-close: the endpoint sees EOF, finishes echoing, and closes.
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    read.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "payload corrupted");
}

#[tokio::test]
async fn bulk_transfer_with_half_close_copy() {
    bulk_transfer_with_half_close(backend_userspace::Forwarding::Copy { buffer: 64 * 1024 }).await;
}

#[tokio::test]
async fn bulk_transfer_with_half_close_splice() {
    // Falls back to copying when the `splice` feature is off.
    bulk_transfer_with_half_close(backend_userspace::Forwarding::Splice).await;
}
