//! `kube-proxy trace` and `kube-proxy diff` in userspace mode, on the real
//! kernel. The listener table lives in the proxy's process: here, as in the
//! daemon, the backend publishes it after every sync
//! (`Backend::listing` → `SyncObserver::listing` → `ProxyMetrics`) and a
//! metrics server on loopback in the node namespace serves it at
//! `/proxyListeners`; trace and diff read it over HTTP, and the redirect
//! rules with `nft -j list`.
//!
//! - Every probe of the conformance suite's kernel tier (redirect rules on,
//!   as root runs it) is also traced; the prediction must give the real
//!   packet's verdict: the same endpoint set (a subset under ClientIP
//!   affinity), drop / reject / not matched, and the source masqueraded
//!   (the proxy connects from a node address).
//! - After every scenario's sync `diff` is equal; after one redirect
//!   element is deleted from outside, it reports exactly that.
//!
//! Needs root and nftables; skips with the reason otherwise (fails instead
//! when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[path = "support/trace_predictor.rs"]
mod trace_predictor;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use backend_userspace::{Options, RedirectMode, UserspaceBackend};
use kube_proxy::diff::{Status, compare, userspace::desired};
use kube_proxy::trace::Rules;
use kube_proxy::trace::live::read_live_at;
use proxy_core::backend::{Backend, BackendContext, BackendError, Capabilities, SyncStats};
use proxy_core::conformance::netns::{
    KernelHarness, MakeBackend, Netns, PredictingHarness, PredictionTally, check_tool,
    privileged_or_skip_with,
};
use proxy_core::conformance::{Harness, Tier, load_scenarios, run};
use proxy_core::runtime::SyncObserver;
use proxy_core::runtime::metrics::{MetricsServer, ProxyMetrics};
use proxy_core::{ChangeSet, NodeView, ProxyMode};
use trace_predictor::Tracing;

fn tools_present() -> Result<(), String> {
    check_tool("nft", &["--version"], "nftables")
}

/// The userspace backend as the runtime drives it: after every sync its
/// listing goes to the metrics, which the metrics server serves.
struct Publishing {
    inner: UserspaceBackend,
    family: proxy_core::IpFamily,
    metrics: Arc<ProxyMetrics>,
}

impl Publishing {
    /// Builds the backend and starts a metrics server on 127.0.0.1 (in the
    /// current namespace and tokio runtime); its address goes to `addr`.
    fn start(
        ctx: &BackendContext,
        options: Options,
        addr: &Mutex<Option<SocketAddr>>,
    ) -> Result<Self, BackendError> {
        let metrics = Arc::new(ProxyMetrics::new());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                BackendError::unsupported("cannot bind the metrics server").with_source(e)
            })?;
        *addr.lock().unwrap() = Some(std_listener.local_addr().unwrap());
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        let server = MetricsServer::new(metrics.clone(), &ctx.config);
        tokio::spawn(async move { server.serve_listener(listener).await });
        Ok(Publishing {
            inner: UserspaceBackend::with_options(ctx, options),
            family: ctx.family,
            metrics,
        })
    }
}

#[async_trait::async_trait]
impl Backend for Publishing {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Userspace
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        let stats = self.inner.sync(view, changes).await?;
        if let Some(listing) = self.inner.listing() {
            self.metrics
                .listing(self.family, ProxyMode::Userspace, &listing);
        }
        Ok(stats)
    }
    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.inner.cleanup().await
    }
    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        self.inner.render(view)
    }
}

/// Runs the kernel tier with `redirect` and checks every probe's trace.
async fn predicts_every_probe(redirect: RedirectMode) {
    let tally = Arc::new(Mutex::new(PredictionTally::default()));
    let t = tally.clone();
    let factory = move |ctx: &BackendContext| -> Result<Box<dyn Harness>, BackendError> {
        let tracing = Tracing::new(ProxyMode::Userspace);
        let slot = tracing.metrics.clone();
        let make: Arc<MakeBackend> = Arc::new(move |ctx: &BackendContext| {
            let options = Options::from_context(ctx).with_redirect(redirect);
            Ok(Box::new(Publishing::start(ctx, options, &slot)?) as Box<dyn Backend>)
        });
        let inner = KernelHarness::new(ctx, make)?;
        Ok(Box::new(PredictingHarness::new(
            inner,
            tracing,
            "",
            t.clone(),
        )))
    };
    let report = run(&factory, Tier::Kernel).await;
    report.assert_passed();
    let tally = tally.lock().unwrap();
    tally.assert_all_agree("userspace", 30);
    eprintln!(
        "userspace ({redirect:?} redirect rules): trace predicted all {} probes",
        tally.checked
    );
}

/// As root runs it: redirect rules capture every VIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_predicts_every_probe_in_userspace_mode() {
    if !privileged_or_skip_with(
        "trace_predicts_every_probe_in_userspace_mode",
        tools_present,
    ) {
        return;
    }
    predicts_every_probe(RedirectMode::On).await;
}

/// As an unprivileged process runs it: node ports and VIPs assigned to the
/// node, no redirect rules (trace reads no nft then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_predicts_every_probe_in_userspace_mode_without_redirect_rules() {
    if !privileged_or_skip_with(
        "trace_predicts_every_probe_in_userspace_mode_without_redirect_rules",
        tools_present,
    ) {
        return;
    }
    predicts_every_probe(RedirectMode::Off).await;
}

/// Runs a future to completion on a throw-away runtime.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn diff_is_equal_after_syncs_and_names_a_deleted_redirect_in_userspace_mode() {
    if !privileged_or_skip_with(
        "diff_is_equal_after_syncs_and_names_a_deleted_redirect_in_userspace_mode",
        tools_present,
    ) {
        return;
    }
    let (mut synced, mut damaged) = (0, 0);
    for scenario in &load_scenarios() {
        let options = Options::from_context(scenario.context()).with_redirect(RedirectMode::On);
        let ns = Netns::new().unwrap();
        let name = scenario.name().to_string();
        let family = scenario.family();
        let (equal, after) = ns
            .run(|| {
                let up = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()
                    .unwrap();
                assert!(up.success());
                block(async {
                    let addr = Mutex::new(None);
                    let mut b = Publishing::start(scenario.context(), options, &addr).unwrap();
                    let addr = *addr.lock().unwrap();
                    b.sync(scenario.view(), &ChangeSet::full()).await.unwrap();
                    let diff = || async {
                        let live = read_live_at(ProxyMode::Userspace, family, addr)
                            .await
                            .unwrap();
                        let Rules::Userspace(rules) = &live else {
                            panic!("not userspace rules")
                        };
                        let want = desired(scenario.context(), scenario.view(), true)
                            .await
                            .unwrap();
                        let damage = rules.kernel.as_ref().and_then(|k| {
                            let (vip, _) = k.redirects.iter().next()?;
                            let owner = rules.table.redirects.iter().find(|r| {
                                r.ip == vip.ip && r.protocol == vip.protocol && r.port == vip.port
                            })?;
                            Some((*vip, owner.service_port.clone(), owner.class.as_str()))
                        });
                        (
                            compare(
                                ProxyMode::Userspace,
                                family,
                                &Rules::Userspace(Box::new(want)),
                                &live,
                            ),
                            damage,
                        )
                    };
                    let (equal, damage) = diff().await;
                    let after = match damage {
                        Some((vip, port, class)) => {
                            let word = if vip.ip.is_ipv4() { "ip" } else { "ip6" };
                            let script = format!(
                                "delete element {word} kube-proxy-userspace redirects {{ {} . {} . {} }}",
                                vip.ip,
                                vip.protocol.lower(),
                                vip.port
                            );
                            let status = std::process::Command::new("nft")
                                .arg(&script)
                                .status()
                                .unwrap();
                            assert!(status.success(), "{name}: {script} failed");
                            Some((vip, port, class, diff().await.0))
                        }
                        None => None,
                    };
                    (equal, after)
                })
            })
            .unwrap();
        assert!(equal.equal(), "{name}: after the sync\n{}", equal.text());
        synced += 1;
        if let Some((vip, port, class, after)) = after {
            let [d] = after.differences.as_slice() else {
                panic!(
                    "{name}: after deleting {vip}, expected one difference:\n{}",
                    after.text()
                );
            };
            assert_eq!(d.service_port, port, "{name}:\n{}", after.text());
            assert_eq!(d.status, Status::Different, "{name}:\n{}", after.text());
            assert_eq!(
                d.missing_rules,
                vec![format!("redirect {vip} to the {class} listener")],
                "{name}:\n{}",
                after.text()
            );
            assert_eq!(d.missing_rules.len(), 1, "{name}:\n{}", after.text());
            assert!(d.extra_rules.is_empty(), "{name}:\n{}", after.text());
            damaged += 1;
        }
    }
    assert!(
        synced > 20 && damaged > 10,
        "only {synced} syncs, {damaged} damages checked"
    );
    eprintln!(
        "userspace: diff equal after {synced} syncs; exactly the damage reported {damaged} times"
    );
}
