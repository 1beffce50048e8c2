//! The host side of the IPVS VM: prepares it with `vm/ipvs-vm.sh prepare`
//! (installs QEMU and the tools, downloads Debian's kernel, builds the base
//! initramfs; cached under `target/`), then boots it with test files added
//! and collects the guest's exit status and output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use proxy_core::conformance::netns::PrivilegeGate;

/// A prepared VM: the script and its cache directory.
pub struct Vm {
    script: PathBuf,
    work: PathBuf,
    /// Guest RAM in MiB and the boot's time limit in seconds, when not
    /// the script's defaults (256, 240).
    size: Option<(u32, u32)>,
}

/// What one boot produced.
pub struct VmRun {
    /// The guest command's exit status; `None` if it never finished.
    pub exit_code: Option<i32>,
    /// What the guest command printed (stdout and stderr).
    pub output: String,
    /// Guest uptime (s) when init started, after the modules, at the test's
    /// start and when it powered off.
    pub booted: Option<f64>,
    /// See [`VmRun::booted`].
    pub modules_loaded: Option<f64>,
    /// See [`VmRun::booted`].
    pub test_started: Option<f64>,
    /// See [`VmRun::booted`].
    pub done: Option<f64>,
    /// Host wall time of the whole run, building the extra cpio included.
    pub wall: Duration,
    /// The guest's console log (kernel and init messages).
    pub console: PathBuf,
}

impl VmRun {
    /// One line of timings for the log.
    pub fn timings(&self) -> String {
        let s = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2}s"));
        format!(
            "IPVS VM: guest init at {}, modules loaded at {}, test started at {}, powered off at {} (guest uptime, TCG); host wall {:.1}s",
            s(self.booted),
            s(self.modules_loaded),
            s(self.test_started),
            s(self.done),
            self.wall.as_secs_f64()
        )
    }
}

impl Vm {
    /// Prepares the VM, or skips (returns `None`, printing why) when this
    /// host cannot: not root, or the preparation failed (no network for
    /// `apt-get`, …). With `KUBE_PROXY_REQUIRE_PRIVILEGED_TESTS=1` it panics
    /// instead of skipping.
    pub fn prepare_or_skip(test: &str) -> Option<Vm> {
        let vm = Vm {
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/ipvs-vm.sh"),
            work: std::env::var_os("IPVS_VM_WORK").map_or_else(
                || Path::new(env!("CARGO_TARGET_TMPDIR")).join("ipvs-vm"),
                PathBuf::from,
            ),
            size: None,
        };
        let check = if nix::unistd::geteuid().is_root() {
            vm.prepare()
        } else {
            Err("not root: QEMU's guest image needs apt-get and dpkg as root".to_string())
        };
        PrivilegeGate::decide(check, PrivilegeGate::required_by_env())
            .apply(test)
            .then_some(vm)
    }

    /// The same VM with `mib` of RAM and a time limit of `seconds` per boot.
    pub fn sized(mut self, mib: u32, seconds: u32) -> Vm {
        self.size = Some((mib, seconds));
        self
    }

    fn prepare(&self) -> Result<(), String> {
        let output = Command::new(&self.script)
            .arg("prepare")
            .env("IPVS_VM_WORK", &self.work)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} prepare failed ({}): {}",
                self.script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Boots the VM with `files` under `/test/` and runs `command` as the
    /// test (with `KUBE_PROXY_IPVS_VM=1`); `name` names the run directory
    /// under the cache (kept for inspection until the next run of that name).
    pub fn run(&self, name: &str, files: &[&Path], command: &[String]) -> Result<VmRun, String> {
        let dir = self.work.join(format!("run-{name}"));
        let started = Instant::now();
        let mut script = Command::new(&self.script);
        if let Some((mib, seconds)) = self.size {
            script
                .env("IPVS_VM_MEM", mib.to_string())
                .env("IPVS_VM_TIMEOUT", seconds.to_string());
        }
        let status = script
            .arg("run")
            .arg(&dir)
            .args(files)
            .arg("--")
            .args(command)
            .env("IPVS_VM_WORK", &self.work)
            .env(
                "IPVS_VM_GUEST_ENV",
                format!(
                    "{}=1 {}=1 RUST_BACKTRACE=1",
                    super::guest::IN_VM_ENV,
                    proxy_core::conformance::netns::REQUIRE_PRIVILEGED_ENV
                ),
            )
            .status()
            .map_err(|e| format!("cannot run {}: {e}", self.script.display()))?;
        let wall = started.elapsed();
        let results = std::fs::read_to_string(dir.join("results.txt"))
            .map_err(|e| format!("no results from the guest ({status}): {e}"))?;
        let uptime = |key: &str| {
            results
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(" uptime=")?.parse().ok())
        };
        let run = VmRun {
            exit_code: results
                .lines()
                .find_map(|l| l.strip_prefix("KPT_EXIT=")?.trim().parse().ok()),
            output: results
                .lines()
                .filter(|l| !l.starts_with("KPT_"))
                .collect::<Vec<_>>()
                .join("\n"),
            booted: uptime("KPT_BOOTED"),
            modules_loaded: uptime("KPT_MODULES_LOADED"),
            test_started: uptime("KPT_TEST_START"),
            done: uptime("KPT_DONE"),
            wall,
            console: dir.join("console.log"),
        };
        if let Some(failed) = results.lines().find(|l| l.starts_with("KPT_INSMOD_FAIL=")) {
            return Err(format!("a guest module did not load: {failed}"));
        }
        if run.exit_code.is_none() {
            let console = std::fs::read_to_string(&run.console).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(15).collect();
            return Err(format!(
                "the guest never ran the test ({status}); {}; console tail:\n{}",
                run.timings(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        if !status.success() {
            return Err(format!(
                "the guest did not finish ({status}); {}; output:\n{}",
                run.timings(),
                run.output
            ));
        }
        Ok(run)
    }
}

/// The `kube-proxy` binary the guest runs (`guest_binary.rs`):
/// `$KUBE_PROXY_BIN`, else `kube-proxy` in the profile directory of this
/// test binary (`target/debug/deps/ipvs_vm-…` → `target/debug/kube-proxy`),
/// which `cargo test --workspace` builds before running any test. An error
/// says how to build it when it is missing.
pub fn kube_proxy_binary(test_exe: &Path) -> Result<PathBuf, String> {
    let path = match std::env::var_os("KUBE_PROXY_BIN") {
        Some(path) => PathBuf::from(path),
        None => test_exe
            .parent()
            .and_then(Path::parent)
            .map(|profile| profile.join("kube-proxy"))
            .ok_or_else(|| format!("no profile directory above {}", test_exe.display()))?,
    };
    if path.file_name().is_none_or(|n| n != "kube-proxy") {
        return Err(format!(
            "KUBE_PROXY_BIN must name a file called kube-proxy (the guest runs /test/kube-proxy), not {}",
            path.display()
        ));
    }
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(|e| {
            format!(
                "the IPVS VM tier runs the kube-proxy binary, and {} is missing ({e}): \
                 build it first with `cargo build -p kube-proxy` (`cargo test --workspace` does), \
                 or set KUBE_PROXY_BIN",
                path.display()
            )
        })?;
    let age = modified.elapsed().unwrap_or_default();
    eprintln!(
        "IPVS VM: carrying {} (built {:.0} s ago) into the guest",
        path.display(),
        age.as_secs_f64()
    );
    Ok(path)
}
