//! The driver against a scripted executor: variant detection from the
//! programs and `iptables-save` output it shows, the commands it runs, and
//! how failures map.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex};

use super::*;
use crate::BackendErrorKind;

/// Installed programs, answers by exact command line (success with no
/// output otherwise), and a log of the command lines run.
#[derive(Default)]
struct Host {
    programs: BTreeSet<String>,
    answers: HashMap<String, io::Result<Output>>,
    log: Mutex<Vec<String>>,
}

impl Host {
    fn with(programs: &[&str]) -> Self {
        Host {
            programs: programs.iter().map(|p| p.to_string()).collect(),
            ..Host::default()
        }
    }

    fn answer(mut self, line: &str, code: i32, stdout: &str, stderr: &str) -> Self {
        let output = Output {
            code: Some(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
        };
        self.answers.insert(line.to_string(), Ok(output));
        self
    }

    fn timeout(mut self, line: &str) -> Self {
        let error = io::Error::new(io::ErrorKind::TimedOut, "killed after 30s");
        self.answers.insert(line.to_string(), Err(error));
        self
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl Executor for Host {
    async fn run(&self, cmd: &Command) -> io::Result<Output> {
        let line = cmd.to_string();
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.clone());
        match self.answers.get(&line) {
            Some(Ok(output)) => Ok(output.clone()),
            Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Ok(Output {
                code: Some(0),
                ..Output::default()
            }),
        }
    }

    fn has_program(&self, program: &str) -> bool {
        self.programs.contains(program)
    }
}

async fn detect(host: &Host, family: IpFamily) -> Result<Variant, ToolError> {
    Iptables::detect(host, family).await.map(|i| i.variant())
}

fn unwrap<T>(result: Result<T, ToolError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

const LEGACY_RULES: &str = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n";
const NFT_HINT: &str = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";

#[tokio::test]
async fn the_only_installed_variant_is_used_without_reading_rules() {
    let nft = Host::with(&["iptables-nft-restore"]);
    assert_eq!(unwrap(detect(&nft, IpFamily::V4).await), Variant::Nft);
    let legacy = Host::with(&["ip6tables-legacy-restore"]);
    assert_eq!(unwrap(detect(&legacy, IpFamily::V6).await), Variant::Legacy);
    let plain = Host::with(&["iptables-restore"]);
    assert_eq!(
        unwrap(detect(&plain, IpFamily::V4).await),
        Variant::Unsuffixed
    );
    assert!(nft.log().is_empty() && legacy.log().is_empty() && plain.log().is_empty());

    let none = Host::with(&["ip6tables-restore"]);
    let error = detect(&none, IpFamily::V4).await.err();
    assert!(
        matches!(&error, Some(ToolError::Missing { program, .. }) if program == "iptables-restore"),
        "{error:?}"
    );
    assert_eq!(
        error.map(|e| e.into_backend_error().kind()),
        Some(BackendErrorKind::Unsupported)
    );
}

#[tokio::test]
async fn with_both_variants_the_rules_of_both_families_decide() {
    let both = ["iptables-nft-restore", "iptables-legacy-restore"];
    // Legacy holds rules (in IPv6 only), nft none, no hint: legacy, after
    // nft's mangle tables, legacy's saves and nft's whole saves.
    let host = Host::with(&both).answer("ip6tables-legacy-save", 0, LEGACY_RULES, "");
    assert_eq!(unwrap(detect(&host, IpFamily::V4).await), Variant::Legacy);
    assert_eq!(
        host.log(),
        [
            "iptables-nft-save -t mangle",
            "ip6tables-nft-save -t mangle",
            "iptables-legacy-save",
            "ip6tables-legacy-save",
            "iptables-nft-save",
            "ip6tables-nft-save",
        ]
    );
    // kubelet's hint in nft wins over legacy's rules.
    let hinted = Host::with(&both)
        .answer("iptables-nft-save", 0, NFT_HINT, "")
        .answer("iptables-legacy-save", 0, LEGACY_RULES, "");
    assert_eq!(unwrap(detect(&hinted, IpFamily::V4).await), Variant::Nft);
    // A failing save counts as empty: nft on a tie.
    let failing = Host::with(&both).answer("iptables-legacy-save", 1, LEGACY_RULES, "denied");
    assert_eq!(unwrap(detect(&failing, IpFamily::V4).await), Variant::Nft);
}

#[tokio::test]
async fn a_hint_in_nfts_mangle_table_spares_the_whole_table_saves() {
    let both = ["ip6tables-nft-restore", "ip6tables-legacy-restore"];
    for chain in ["KUBE-IPTABLES-HINT", "KUBE-PROXY-CANARY"] {
        let mangle = format!("*mangle\n:{chain} - [0:0]\nCOMMIT\n");
        // In the other family's table: the IPv4 backend's canary decides
        // for the IPv6 one.
        let host = Host::with(&both).answer("iptables-nft-save -t mangle", 0, &mangle, "");
        assert_eq!(unwrap(detect(&host, IpFamily::V6).await), Variant::Nft);
        let log = host.log();
        assert!(
            !log.iter().any(|l| l.ends_with("nft-save")),
            "{chain}: no whole nft save: {log:?}"
        );
    }
}

#[test]
fn every_installed_variant_with_iptables_and_save_may_hold_leftovers() {
    let variants = |host: &Host| -> Vec<Variant> {
        Iptables::installed(host, IpFamily::V4)
            .iter()
            .map(Iptables::variant)
            .collect()
    };
    let all = Host::with(&[
        "iptables",
        "iptables-save",
        "iptables-nft",
        "iptables-nft-save",
        "iptables-legacy",
        "iptables-legacy-save",
    ]);
    assert_eq!(variants(&all), [Variant::Nft, Variant::Legacy]);
    // A variant without its save does not count; then the unsuffixed tools.
    let plain = Host::with(&["iptables", "iptables-save", "iptables-nft"]);
    assert_eq!(variants(&plain), [Variant::Unsuffixed]);
    assert!(variants(&Host::with(&["ip6tables", "ip6tables-save"])).is_empty());
}

#[tokio::test]
async fn commands_wait_for_the_xtables_lock() {
    let host = Host::default();
    let ipt = Iptables::new(&host, IpFamily::V6, Variant::Legacy);
    unwrap(ipt.restore("*nat\nCOMMIT\n").await);
    unwrap(ipt.ensure_chain("nat", "KUBE-A").await);
    unwrap(ipt.save(Some("nat")).await);
    unwrap(ipt.save(None).await);
    assert_eq!(
        host.log(),
        [
            "ip6tables-legacy-restore -w 5 -W 100000 --noflush --counters",
            "ip6tables-legacy -w 5 -W 100000 -t nat -N KUBE-A",
            "ip6tables-legacy-save -t nat",
            "ip6tables-legacy-save",
        ]
    );
}

const NO_CHAIN: &str = "iptables v1.8.9 (nf_tables): Chain 'KUBE-A' does not exist";
const TOO_MANY_LINKS: &str = "iptables: Too many links.";

#[tokio::test]
async fn exit_code_one_is_no_for_checks_and_an_error_for_strict_removals() {
    let host = Host::default()
        .answer(
            "iptables-nft -w 5 -W 100000 -t nat -X KUBE-A",
            1,
            "",
            TOO_MANY_LINKS,
        )
        .answer(
            "iptables-nft -w 5 -W 100000 -t nat -F KUBE-B",
            2,
            "",
            NO_CHAIN,
        )
        .answer(
            "iptables-nft -w 5 -W 100000 -t nat -S KUBE-C",
            1,
            "",
            "iptables: No chain/target/match by that name.",
        )
        .answer(
            "iptables-nft -w 5 -W 100000 -t nat -N KUBE-D",
            1,
            "",
            "iptables: Chain already exists.",
        );
    let ipt = Iptables::new(&host, IpFamily::V4, Variant::Nft);
    // Checks: exit code 1 is "no".
    assert!(!unwrap(ipt.chain_exists("nat", "KUBE-C").await));
    assert!(
        unwrap(ipt.ensure_chain("nat", "KUBE-D").await),
        "KUBE-D existed"
    );
    // Strict removals: "not found" (exit code 2 with nft) is no, "Too many
    // links" (exit code 1) an error naming the command.
    assert!(!unwrap(ipt.remove("nat", &["-F", "KUBE-B"]).await));
    assert!(unwrap(ipt.remove("nat", &["-F", "KUBE-A"]).await));
    let error = ipt.remove("nat", &["-X", "KUBE-A"]).await.err();
    assert_eq!(
        error.map(|e| e.to_string()),
        Some(
            "`iptables-nft -w 5 -W 100000 -t nat -X KUBE-A` failed (exit code 1): iptables: Too many links."
                .to_string()
        )
    );
}

#[tokio::test]
async fn a_refused_restore_shows_the_failing_line_and_a_held_lock_is_transient() {
    let input = "*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j NOWHERE\nCOMMIT\n";
    let refused = Host::default().answer(
        "iptables-restore -w 5 -W 100000 --noflush --counters",
        2,
        "",
        "iptables-restore: line 3 failed\n",
    );
    let ipt = Iptables::new(&refused, IpFamily::V4, Variant::Unsuffixed);
    let Some(error) = ipt.restore(input).await.err() else {
        panic!("a refused restore succeeded")
    };
    assert!(
        error.to_string().ends_with(
            "iptables-restore: line 3 failed\n     1: *nat\n     2: :KUBE-A - [0:0]\n     3: -A KUBE-A -j NOWHERE"
        ),
        "{error}"
    );
    assert_eq!(
        error.into_backend_error().kind(),
        BackendErrorKind::Dataplane
    );

    let locked = Host::default().answer(
        "iptables-restore -w 5 -W 100000 --noflush --counters",
        4,
        "",
        "Another app is currently holding the xtables lock. Stopped waiting after 5s.",
    );
    let ipt = Iptables::new(&locked, IpFamily::V4, Variant::Unsuffixed);
    let kind = ipt
        .restore(input)
        .await
        .err()
        .map(|e| e.into_backend_error().kind());
    assert_eq!(kind, Some(BackendErrorKind::Transient));
}

#[tokio::test]
async fn a_timed_out_command_is_a_transient_error_naming_the_program() {
    let host = Host::default().timeout("iptables-legacy-save -t nat");
    let ipt = Iptables::new(&host, IpFamily::V4, Variant::Legacy);
    let Some(error) = ipt.chains("nat").await.err() else {
        panic!("a timed-out save succeeded")
    };
    assert!(error.timed_out());
    assert!(
        error
            .to_string()
            .starts_with("cannot run iptables-legacy-save: "),
        "{error}"
    );
    assert_eq!(
        error.into_backend_error().kind(),
        BackendErrorKind::Transient
    );
}

#[tokio::test]
async fn random_fully_needs_iptables_1_6_2() {
    for (version, expected) in [
        ("iptables v1.8.9 (nf_tables)\n", true),
        ("iptables v1.6.2\n", true),
        ("iptables v1.6.1\n", false),
        ("garbage\n", false),
    ] {
        let host = Host::default().answer("iptables-nft --version", 0, version, "");
        let ipt = Iptables::new(&host, IpFamily::V4, Variant::Nft);
        assert_eq!(ipt.has_random_fully().await, expected, "{version}");
    }
}

#[test]
fn not_found_messages_of_both_variants() {
    assert!(is_not_found(NO_CHAIN));
    assert!(is_not_found(
        "iptables: No chain/target/match by that name."
    ));
    assert!(is_not_found(
        "iptables: Bad rule (does a matching rule exist in that chain?)."
    ));
    assert!(!is_not_found(
        "iptables: Permission denied (you must be root)."
    ));
    assert!(!is_not_found(TOO_MANY_LINKS));
}

#[test]
fn an_arc_executor_drives_it_too() {
    let exec: Arc<dyn Executor> = Arc::new(Host::with(&["iptables-nft-restore"]));
    let ipt: Iptables = Iptables::new(exec, IpFamily::V4, Variant::Nft);
    assert_eq!(ipt.program("-restore"), "iptables-nft-restore");
}
