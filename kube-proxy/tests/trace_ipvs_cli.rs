//! `kube-proxy trace --rules FILE` on an ipvs mode dump (the `### ipvsadm
//! -Sn`, `### ipset save`, `### iptables-save`, `### kube-ipvs0` sections):
//! traced on a laptop, without root and without IPVS in the kernel.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[path = "support/cli.rs"]
mod cli;

use cli::{assert_error_saying, text, trace_rules};

const IPTABLES: &str = "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
*filter
:INPUT ACCEPT [0:0]
COMMIT
";

fn dump() -> std::path::PathBuf {
    let text = format!(
        "### ipvsadm -Sn\n-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.10:8080 -m -w 1\n-a -t 10.96.0.10:80 -r 10.244.2.10:8080 -m -w 0\n\
         ### ipset save\ncreate KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\nadd KUBE-CLUSTER-IP 10.96.0.10,tcp:80\n\
         ### iptables-save\n{IPTABLES}### kube-ipvs0\n10.96.0.10\n"
    );
    let path = std::env::temp_dir().join(format!("kube-proxy-ipvs-{}.dump", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_ipvs_dump_is_traced_without_root() {
    let path = dump();
    let out = trace_rules(
        &path,
        &[
            "--from",
            "203.0.113.10",
            "--in-interface",
            "eth0",
            "--to",
            "10.96.0.10:80",
        ],
    );
    let json = trace_rules(
        &path,
        &[
            "--output",
            "json",
            "--from",
            "10.244.3.7",
            "--in-interface",
            "cbr0",
            "--to",
            "10.96.0.10:80",
        ],
    );
    let _ = std::fs::remove_file(&path);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("ipvs mode"), "{stdout}");
    assert!(
        stdout.contains("--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"),
        "{stdout}"
    );
    assert!(
        stdout.contains("chain ipvs/TCP 10.96.0.10:80 rr"),
        "{stdout}"
    );
    assert!(
        stdout.contains("weight 0: draining, takes no new connections"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "verdict: FORWARDED to 10.244.1.10:8080 (source masqueraded to a node address)"
        ),
        "{stdout}"
    );
    // From a pod: not marked, the client's address kept.
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["mode"], "ipvs", "{v}");
    assert_eq!(v["outcome"]["forwarded"]["masqueraded"], false, "{v}");
}

#[test]
fn ipvs_chains_alone_are_refused_with_the_dump_format_named() {
    let path = std::env::temp_dir().join(format!(
        "kube-proxy-ipvs-chains-{}.rules",
        std::process::id()
    ));
    std::fs::write(
        &path,
        IPTABLES.replace(
            ":KUBE-MARK-MASQ - [0:0]\n",
            ":KUBE-MARK-MASQ - [0:0]\n:KUBE-LOAD-BALANCER - [0:0]\n",
        ),
    )
    .unwrap();
    let out = trace_rules(&path, &["--from", "10.244.3.7", "--to", "10.96.0.10:80"]);
    let _ = std::fs::remove_file(&path);
    assert_error_saying(&out, "### ipvsadm -Sn");
}
