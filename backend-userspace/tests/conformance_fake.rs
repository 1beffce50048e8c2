//! The shared conformance suite, fake tier: the backend in dry-run mode
//! (listeners recorded, no sockets) with its route-table tracer.

use backend_userspace::{HostAddresses, Options, RedirectMode, UserspaceBackend, Verdict};
use proxy_core::backend::BackendContext;
use proxy_core::conformance::{self, Harness, Origin, Outcome, Packet, Tier};
use proxy_core::{Backend, BackendError};
use std::net::SocketAddr;

struct RouteTableHarness {
    backend: UserspaceBackend,
}

#[async_trait::async_trait]
impl Harness for RouteTableHarness {
    fn backend(&mut self) -> &mut dyn Backend {
        &mut self.backend
    }

    async fn send(&mut self, packet: &Packet) -> Result<Outcome, BackendError> {
        let destination = SocketAddr::new(packet.destination, packet.port);
        Ok(
            match self
                .backend
                .trace(packet.protocol, destination, packet.origin == Origin::Host)
            {
                Verdict::NotMatched => Outcome::NotMatched,
                Verdict::Rejected => Outcome::Rejected,
                Verdict::Dropped => Outcome::Dropped,
                Verdict::Forwarded(endpoints) => Outcome::Forwarded {
                    endpoints,
                    masqueraded: true,
                },
            },
        )
    }

    async fn dump(&mut self) -> Option<String> {
        Some(self.backend.dump())
    }
}

/// A harness factory for backends with redirect rules `mode`.
fn harness(
    mode: RedirectMode,
) -> impl Fn(&BackendContext) -> Result<Box<dyn Harness>, BackendError> + Send + Sync {
    move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        // The node's addresses are its own; everything else (ClusterIPs,
        // external and load-balancer IPs) is not local, as on a real node.
        let host = HostAddresses::new(ctx.node.addresses.iter().copied());
        let options = Options::from_context(ctx).with_redirect(mode);
        Ok(Box::new(RouteTableHarness {
            backend: UserspaceBackend::dry_run(ctx, host, options),
        }))
    }
}

/// Without privileges: node ports and local VIPs only.
#[tokio::test]
async fn conformance_fake_tier() {
    let report = conformance::run(&harness(RedirectMode::Off), Tier::Fake).await;
    report.assert_passed();
}

/// With redirect rules (modelled: the dry run records the table and the
/// tracer applies it before any listener): ClusterIPs, external and
/// load-balancer IPs too.
#[tokio::test]
async fn conformance_fake_tier_with_redirect_rules() {
    let report = conformance::run(&harness(RedirectMode::On), Tier::Fake).await;
    eprintln!("{report}");
    report.assert_passed();
    let without = conformance::run(&harness(RedirectMode::Off), Tier::Fake).await;
    assert!(
        report.passed().count() > without.passed().count(),
        "redirect rules should make more scenarios run:\n{report}"
    );
}
