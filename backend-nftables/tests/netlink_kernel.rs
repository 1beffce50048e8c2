//! The netlink executor against the real kernel, in throw-away network
//! namespaces (needs root and `nft`; skips with the reason otherwise, fails
//! instead when `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};

use backend_nftables::ir::{
    ChainDef, Command, ElemKey, ElemValue, Element, Rule, Stmt, Transaction, Verdict,
};
use backend_nftables::{Executor, NetlinkExecutor, NftError, NftablesBackend};
use proxy_core::backend::CommandLimits;
use proxy_core::conformance::netns::{
    Netns, check_tool, kernel_harness_factory, privileged_or_skip_with, run_tool,
};
use proxy_core::conformance::{Tier, run};
use proxy_core::{Backend, IpFamily, Protocol};

fn nft_present() -> Result<(), String> {
    check_tool("nft", &["--version"], "nftables")
}

/// `nft -f -` with `script`, in the calling thread's namespace.
fn nft_script(script: &str) -> Result<(), String> {
    run_tool("nft", &["-f", "-"], script).map(drop)
}

/// `nft list table <family> kube-proxy`, in the calling thread's namespace.
fn listing(family: IpFamily) -> String {
    let fam = match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    };
    let out = Process::new("nft")
        .args(["list", "table", fam, "kube-proxy"])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What the tee saw.
#[derive(Default)]
struct Seen {
    netlink: u64,
    nft: u64,
    compared: u64,
    mismatches: Vec<String>,
    fallbacks: Vec<String>,
}

/// Applies each transaction over netlink here and as `nft -f` text in
/// namespace `twin`, then compares both tables' listings.
struct Tee {
    netlink: NetlinkExecutor,
    twin: Netns,
    seen: Arc<Mutex<Seen>>,
}

#[async_trait::async_trait]
impl Executor for Tee {
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        let before = self.netlink.counts();
        let result = self.netlink.apply(tx).await;
        let after = self.netlink.counts();
        let script = tx.to_script();
        let family = tx.family;
        let (text, twin_listing) = self
            .twin
            .run(move || (nft_script(&script), listing(family)))
            .unwrap();
        let mut seen = self.seen.lock().unwrap();
        seen.netlink += after.netlink - before.netlink;
        seen.nft += after.nft - before.nft;
        if after.nft > before.nft {
            seen.fallbacks.push(tx.to_script());
        }
        if result.is_ok() != text.is_ok() {
            seen.mismatches.push(format!(
                "netlink {result:?} but nft {text:?} for:\n{}",
                tx.to_script()
            ));
        }
        let here = listing(family);
        seen.compared += 1;
        if here != twin_listing {
            seen.mismatches.push(format!(
                "after:\n{}\nnetlink:\n{here}\nnft:\n{twin_listing}",
                tx.to_script()
            ));
        }
        result
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        self.netlink.table_exists(family).await
    }
}

/// (a) and (b): every conformance scenario with real packets, the backend
/// writing over netlink; each of its transactions (cold starts, full and
/// partial syncs) also applied as `nft -f` text in a twin namespace, whose
/// `nft list table` must be identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_netlink_lists_as_nft_text_does() {
    if !privileged_or_skip_with(
        "conformance_over_netlink_lists_as_nft_text_does",
        nft_present,
    ) {
        return;
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    let factory = kernel_harness_factory(move |ctx| {
        let tee = Tee {
            netlink: NetlinkExecutor::new(ctx.commands.clone()),
            twin: Netns::new().unwrap(),
            seen: shared.clone(),
        };
        Ok(Box::new(NftablesBackend::with_executor(ctx, Box::new(tee))) as Box<dyn Backend>)
    });
    let report = run(&factory, Tier::Kernel).await;
    report.assert_passed();
    let seen = seen.lock().unwrap();
    assert!(
        seen.mismatches.is_empty(),
        "{} of {} transactions differ; first:\n{}",
        seen.mismatches.len(),
        seen.compared,
        seen.mismatches[0]
    );
    assert_eq!(
        seen.nft,
        0,
        "netlink carried {} transactions, nft {}: netlink encodes everything the backend writes; first:\n{}",
        seen.netlink,
        seen.nft,
        seen.fallbacks.first().map_or("", String::as_str)
    );
    eprintln!(
        "{} transactions compared: {} over netlink, {} through nft",
        seen.compared, seen.netlink, seen.nft
    );
}

fn tx(family: IpFamily, commands: Vec<Command>) -> Transaction {
    Transaction { family, commands }
}

/// (c): a command the kernel refuses fails the whole batch, and the error
/// names that command as nft text with the kernel's reason.
#[test]
fn a_refused_command_is_named_and_nothing_is_applied() {
    if !privileged_or_skip_with(
        "a_refused_command_is_named_and_nothing_is_applied",
        nft_present,
    ) {
        return;
    }
    Netns::new()
        .unwrap()
        .block_on(|| async {
            nft_script(
                "add table ip kube-proxy\nadd chain ip kube-proxy a\nadd set ip kube-proxy s { type ipv4_addr ; }\n",
            )
            .unwrap();
            let mut exec = NetlinkExecutor::new(CommandLimits::default());
            let missing = Element {
                set: "missing".into(),
                key: ElemKey::AddrProtoPort("10.96.0.1".parse().unwrap(), Protocol::Tcp, 80),
                value: Some(ElemValue::Verdict(Verdict::Drop)),
                comment: None,
            };
            let refused = tx(
                IpFamily::V4,
                vec![
                    Command::AddChain(ChainDef::regular("b")),
                    Command::AddRule {
                        chain: "b".into(),
                        rule: Rule::new(vec![Stmt::Verdict(Verdict::Drop)]),
                    },
                    Command::AddElement(missing),
                    Command::AddElement(Element {
                        set: "s".into(),
                        key: ElemKey::Addr("10.0.0.1".parse().unwrap()),
                        value: None,
                        comment: None,
                    }),
                ],
            );
            let error = exec.apply(&refused).await.unwrap_err().to_string();
            assert!(
                error.contains("add element ip kube-proxy missing { 10.96.0.1 . tcp . 80 : drop }"),
                "{error}"
            );
            assert!(error.contains("No such file or directory"), "{error}");
            assert_eq!(exec.counts().netlink, 1, "sent over netlink");
            let table = listing(IpFamily::V4);
            assert!(!table.contains("chain b"), "{table}");
            assert!(!table.contains("10.0.0.1"), "{table}");

            let error = exec
                .apply(&tx(
                    IpFamily::V4,
                    vec![Command::DeleteChain("absent".into())],
                ))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("delete chain ip kube-proxy absent"),
                "{error}"
            );

            // The channel still works after refusals.
            exec.apply(&tx(
                IpFamily::V4,
                vec![
                    Command::AddChain(ChainDef::regular("b")),
                    Command::DeleteChain("a".into()),
                ],
            ))
            .await
            .unwrap();
            let table = listing(IpFamily::V4);
            assert!(table.contains("chain b") && !table.contains("chain a"), "{table}");
        })
        .unwrap();
}

/// A netlink commit is announced (`NFT_MSG_NEWGEN`) with the pid that the
/// executor records as one of ours, so the nf_tables watcher does not take
/// our own syncs for outside changes.
#[test]
fn netlink_commits_are_recorded_as_ours() {
    if !privileged_or_skip_with("netlink_commits_are_recorded_as_ours", nft_present) {
        return;
    }
    Netns::new()
        .unwrap()
        .block_on(|| async {
            nft_script("add table ip kube-proxy\n").unwrap();
            // Line-buffered: the monitor is killed, not asked to exit.
            let mut monitor = Process::new("stdbuf")
                .args(["-oL", "nft", "monitor"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            let own = proxy_core::exec::OwnWrites::new();
            own.scope(async {
                let mut exec = NetlinkExecutor::new(CommandLimits::default());
                exec.apply(&tx(
                    IpFamily::V4,
                    vec![Command::AddChain(ChainDef::regular("watched"))],
                ))
                .await
                .unwrap();
            })
            .await;
            std::thread::sleep(std::time::Duration::from_millis(300));
            monitor.kill().unwrap();
            let out = monitor.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let pid: u32 = text
                .lines()
                .find_map(|l| l.split_once("by process ").map(|(_, rest)| rest))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no generation announced: {text}"));
            assert!(text.contains("watched"), "{text}");
            assert!(own.contains(pid), "pid {pid} not recorded: {text}");
        })
        .unwrap();
}

/// An exchange whose last answer never comes ends at its deadline with a
/// time-out (the executor reports it as a timed-out command, as a hung
/// `nft` is), instead of waiting forever.
#[test]
fn an_answer_that_never_comes_times_out() {
    if !privileged_or_skip_with("an_answer_that_never_comes_times_out", nft_present) {
        return;
    }
    let ns = Netns::new().unwrap();
    ns.run(|| {
        let timeout = std::time::Duration::from_millis(200);
        let mut channel = backend_nftables::netlink::Channel::open(timeout).unwrap();
        let batch =
            backend_nftables::netlink::encode(&tx(IpFamily::V4, vec![Command::AddTable]), 1)
                .unwrap();
        let start = std::time::Instant::now();
        // Waits for an answer to a message the batch does not have.
        let answer = channel.exchange(&batch.bytes, batch.begin, batch.last + 100, start + timeout);
        let error = answer.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        // The batch was committed all the same.
        assert!(listing(IpFamily::V4).contains("table ip kube-proxy"));
    })
    .unwrap();
}
