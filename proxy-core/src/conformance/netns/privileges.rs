//! Whether this host can run the real-kernel tier, and what a test does
//! when it cannot.

use std::process::{Command, Stdio};

use super::Netns;

/// The environment variable CI sets to `1`: a test that cannot get the
/// privileges or tools it needs then fails instead of skipping.
pub const REQUIRE_PRIVILEGED_ENV: &str = "KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS";

/// Checks what every real-kernel test needs: root, a working
/// `unshare(CLONE_NEWNET)`, and iproute2's `ip`. The error says which is
/// missing.
pub fn check_privileges() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "not running as root (euid {}); network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN",
            nix::unistd::geteuid()
        ));
    }
    Netns::new().map_err(|e| format!("unshare(CLONE_NEWNET) failed: {e}"))?;
    check_tool("ip", &["-V"], "iproute2")
}

/// Checks that `program` runs (`program args…` exits 0); `package` names
/// the Debian package that provides it, for the message.
pub fn check_tool(program: &str, args: &[&str], package: &str) -> Result<(), String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{program} {}` failed ({status})", args.join(" "))),
        Err(e) => Err(format!(
            "`{program}` not usable ({e}); install the {package} package"
        )),
    }
}

/// What a test does about a missing privilege or tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivilegeGate {
    /// Everything is there: run.
    Run,
    /// Missing, and not required: print `SKIP: <reason>` and pass.
    Skip(String),
    /// Missing, but [`REQUIRE_PRIVILEGED_ENV`] is `1`: fail.
    Fail(String),
}

impl PrivilegeGate {
    /// The decision for a check result, given whether privileged tests are
    /// required.
    pub fn decide(check: Result<(), String>, required: bool) -> PrivilegeGate {
        match check {
            Ok(()) => PrivilegeGate::Run,
            Err(reason) if required => PrivilegeGate::Fail(reason),
            Err(reason) => PrivilegeGate::Skip(reason),
        }
    }

    /// Whether [`REQUIRE_PRIVILEGED_ENV`] is set to `1` in this process.
    pub fn required_by_env() -> bool {
        std::env::var(REQUIRE_PRIVILEGED_ENV).is_ok_and(|v| v == "1")
    }

    /// Applies the decision in a test: `true` means run; `false` means the
    /// test should return now (it printed `SKIP: <test>: <reason>`).
    ///
    /// # Panics
    ///
    /// On [`PrivilegeGate::Fail`], so that the test fails with the reason.
    pub fn apply(self, test: &str) -> bool {
        match self {
            PrivilegeGate::Run => true,
            PrivilegeGate::Skip(reason) => {
                // Straight to the process's stderr: the test harness captures
                // `print!`/`eprint!` of passing tests, and a skip must be seen.
                let line = format!(
                    "SKIP: {test}: {reason} (set {REQUIRE_PRIVILEGED_ENV}=1 to make this a failure)\n"
                );
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                false
            }
            PrivilegeGate::Fail(reason) => {
                panic!(
                    "{test}: {reason}, and {REQUIRE_PRIVILEGED_ENV}=1 requires privileged tests to run"
                )
            }
        }
    }
}

/// The gate every real-kernel test starts with:
/// `if !privileged_or_skip("my_test") { return; }`.
///
/// Runs [`check_privileges`] plus `extra` (further tools, e.g.
/// [`check_tool`]`("nft", &["--version"], "nftables")`), then applies
/// [`PrivilegeGate`] with [`PrivilegeGate::required_by_env`].
///
/// # Panics
///
/// When something is missing and [`REQUIRE_PRIVILEGED_ENV`] is `1`.
pub fn privileged_or_skip_with(test: &str, extra: impl FnOnce() -> Result<(), String>) -> bool {
    let check = check_privileges().and_then(|()| extra());
    PrivilegeGate::decide(check, PrivilegeGate::required_by_env()).apply(test)
}

/// [`privileged_or_skip_with`] without extra checks.
///
/// # Panics
///
/// When something is missing and [`REQUIRE_PRIVILEGED_ENV`] is `1`.
pub fn privileged_or_skip(test: &str) -> bool {
    privileged_or_skip_with(test, || Ok(()))
}
