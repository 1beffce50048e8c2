//! Redirect mode in a dry run: capabilities, the recorded table (`dump`)
//! and the nft script `render()` prints for `--dry-run`. Opens no socket
//! and runs no `nft`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use backend_userspace::{HostAddresses, Options, RedirectMode, UserspaceBackend};
use common::{context, service, slice, topology, view};
use proxy_core::{Backend, ChangeSet, NodeView};
use serde_json::json;

fn two_services() -> NodeView {
    view(&topology(
        &[
            service("web", "10.96.0.10", "TCP", 80, None, json!({})),
            service("empty", "10.96.0.20", "UDP", 53, None, json!({})),
        ],
        &[slice("web", "TCP", 8080, &["10.244.1.10".parse().unwrap()])],
    ))
}

fn dry(mode: RedirectMode) -> UserspaceBackend {
    let ctx = context();
    let options = Options::from_context(&ctx).with_redirect(mode);
    UserspaceBackend::dry_run(&ctx, HostAddresses::new([]), options)
}

#[test]
fn capabilities_follow_the_redirect_mode() {
    let on = dry(RedirectMode::On);
    assert!(on.redirecting());
    assert!(on.capabilities().cluster_ip && on.capabilities().external_ip);
    assert!(!on.capabilities().source_ranges && !on.capabilities().preserves_client_ip);
    let off = dry(RedirectMode::Off);
    assert!(!off.capabilities().cluster_ip && !off.capabilities().external_ip);
    // A dry run never probes the process: automatic means off.
    assert!(!dry(RedirectMode::Auto).redirecting());
}

#[tokio::test]
async fn the_table_redirects_vips_with_endpoints_and_rejects_the_others() {
    let mut backend = dry(RedirectMode::On);
    let view = two_services();
    backend.sync(&view, &ChangeSet::full()).await.unwrap();
    let dump = backend.dump();
    assert!(
        dump.contains("redirect tcp 10.96.0.10:80 ns/web:p internal"),
        "{dump}"
    );
    assert!(
        dump.contains("reject udp 10.96.0.20:53 ns/empty:p internal"),
        "{dump}"
    );
    // One listener: the rejected VIP needs none.
    assert!(
        dump.contains("redirect-listener tcp ns/web:p internal planned"),
        "{dump}"
    );
    assert!(!dump.contains("redirect-listener udp"), "{dump}");

    let script = backend.render(&view).unwrap();
    for line in [
        "add table ip kube-proxy-userspace",
        "type nat hook prerouting priority -100",
        "type nat hook output priority -100",
        "redirect to :ip daddr . meta l4proto . th dport map @redirects",
        "ip daddr . meta l4proto . th dport @rejects reject",
        "add element ip kube-proxy-userspace rejects { 10.96.0.20 . udp . 53 }",
        "# add element ip kube-proxy-userspace redirects { 10.96.0.10 . tcp . 80 : <port> }",
    ] {
        assert!(script.contains(line), "missing {line:?} in:\n{script}");
    }

    backend.cleanup().await.unwrap();
    assert_eq!(backend.dump(), dry(RedirectMode::On).dump());
}

#[tokio::test]
async fn without_redirect_rules_render_shows_no_table() {
    let mut backend = dry(RedirectMode::Off);
    let view = two_services();
    backend.sync(&view, &ChangeSet::full()).await.unwrap();
    assert!(
        !backend
            .render(&view)
            .unwrap()
            .contains("kube-proxy-userspace")
    );
    assert!(!backend.dump().contains("redirect"));
}
