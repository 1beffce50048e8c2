//! `/proxyListeners` on the metrics server: 404 with a plain reason while
//! no backend published a listing (the kernel-state modes never do), then
//! every family's latest listing as one JSON document.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)] // fixtures are literals: a failure is a bug in the test

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use proxy_core::config::KubeProxyConfiguration;
use proxy_core::runtime::SyncObserver;
use proxy_core::runtime::metrics::{MetricsServer, ProxyMetrics};
use proxy_core::{IpFamily, ProxyMode};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

#[tokio::test]
async fn the_listing_is_served_once_published_and_replaced_by_the_next() {
    let metrics = Arc::new(ProxyMetrics::new());
    let server = MetricsServer::new(metrics.clone(), &KubeProxyConfiguration::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_listener(listener).await });

    let (status, body) = get(addr, "/proxyListeners").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("publishes no listener table"), "{body}");

    // What the sync loop does after a sync of a backend with a listing.
    let observer: &dyn SyncObserver = metrics.as_ref();
    observer.listing(IpFamily::V4, ProxyMode::Userspace, r#"{"listeners":[1]}"#);
    observer.listing(IpFamily::V6, ProxyMode::Userspace, r#"{"listeners":[]}"#);
    observer.listing(IpFamily::V4, ProxyMode::Userspace, r#"{"listeners":[2]}"#);
    let (status, body) = get(addr, "/proxyListeners").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        doc,
        json!({"mode": "userspace", "families": {"IPv4": {"listeners": [2]}, "IPv6": {"listeners": []}}})
    );
}
