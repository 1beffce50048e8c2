//! [`Netns`]: an anonymous network namespace held by a file descriptor.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;

use nix::sched::{CloneFlags, setns, unshare};

/// An anonymous network namespace, alive as long as this value (or a
/// thread, process or socket inside it).
///
/// It has no name in `/run/netns`, so parallel tests cannot collide, and it
/// disappears with its interfaces, routes, rules and conntrack table when
/// the last reference goes: on drop, on panic, and when the process dies
/// however it dies.
///
/// Never enters the calling thread: [`Netns::run`], [`Netns::block_on`]
/// and [`Netns::spawn`] run code on a fresh thread that `setns`'d into the namespace. Sockets
/// created there stay in the namespace whichever thread uses them later,
/// and processes spawned there inherit it.
#[derive(Debug)]
pub struct Netns {
    fd: File,
}

impl Netns {
    /// Creates a namespace with `unshare(CLONE_NEWNET)` on a throw-away
    /// thread and keeps `/proc/thread-self/ns/net` open.
    ///
    /// Needs `CAP_SYS_ADMIN`. The namespace starts with `lo` down and the
    /// kernel's defaults for every sysctl.
    pub fn new() -> io::Result<Netns> {
        let fd = thread::Builder::new()
            .name("netns-new".into())
            .spawn(|| -> io::Result<File> {
                unshare(CloneFlags::CLONE_NEWNET)?;
                File::open("/proc/thread-self/ns/net")
            })?
            .join()
            .map_err(|_| io::Error::other("the thread creating a network namespace panicked"))??;
        Ok(Netns { fd })
    }

    /// A second handle to the same namespace (a duplicated descriptor).
    pub fn try_clone(&self) -> io::Result<Netns> {
        Ok(Netns {
            fd: self.fd.try_clone()?,
        })
    }

    /// A path naming this namespace while this value lives
    /// (`/proc/<pid>/fd/<n>`): usable as the `netns` argument of
    /// `ip link add … netns <path>` and by `nsenter --net=<path>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/proc")
            .join(std::process::id().to_string())
            .join("fd")
            .join(self.fd.as_raw_fd().to_string())
    }

    /// Whether `self` and `other` are the same namespace.
    pub fn same_as(&self, other: &Netns) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (self.fd.metadata()?, other.fd.metadata()?);
        Ok(a.dev() == b.dev() && a.ino() == b.ino())
    }

    /// Runs `f` on a scoped thread inside the namespace and returns its
    /// result. A panic in `f` is resumed on the caller.
    pub fn run<F, T>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(scope, || -> io::Result<T> {
                    self.enter_current_thread()?;
                    Ok(f())
                })?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs the future `make` returns to completion on a current-thread
    /// tokio runtime (timers and I/O enabled), on a scoped thread inside
    /// the namespace, and returns its output: sockets it opens and commands
    /// it spawns are in the namespace. The future is made on that thread,
    /// so it need not be `Send`. A panic in it is resumed on the caller;
    /// the error is a failure to start the thread or the runtime.
    pub fn block_on<F, Fut>(&self, make: F) -> io::Result<Fut::Output>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future,
        Fut::Output: Send,
    {
        self.run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(make()))
        })?
    }

    /// Spawns a named, detached thread inside the namespace (servers,
    /// workers). The thread holds the namespace alive until it ends.
    pub fn spawn<F, T>(&self, name: &str, f: F) -> io::Result<thread::JoinHandle<io::Result<T>>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.try_clone()?;
        thread::Builder::new().name(name.into()).spawn(move || {
            ns.enter_current_thread()?;
            drop(ns);
            Ok(f())
        })
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> NetnsCommand<'_> {
        NetnsCommand {
            ns: self,
            command: Command::new(program),
        }
    }

    /// Moves the calling thread into the namespace. Private: only threads
    /// this module creates are ever moved.
    fn enter_current_thread(&self) -> io::Result<()> {
        setns(&self.fd, CloneFlags::CLONE_NEWNET)?;
        Ok(())
    }
}

/// A [`Command`] bound to a [`Netns`]: `output`, `status` and `spawn`
/// start the process from a thread inside the namespace, so the child
/// lives there (no `pre_exec`, no `ip netns exec`).
///
/// Deliberately not `Deref<Target = Command>`: a `Command`'s own `output()`
/// would run in the caller's namespace.
#[derive(Debug)]
pub struct NetnsCommand<'a> {
    ns: &'a Netns,
    command: Command,
}

impl NetnsCommand<'_> {
    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.command.env(key, value);
        self
    }

    /// Sets the child's standard input.
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.command.stdin(cfg);
        self
    }

    /// Sets the child's standard output.
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.command.stdout(cfg);
        self
    }

    /// Sets the child's standard error.
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.command.stderr(cfg);
        self
    }

    /// Other settings of the underlying [`Command`] (working directory,
    /// environment clearing). Never start it through this reference.
    pub fn configure(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Spawns the child inside the namespace.
    pub fn spawn(&mut self) -> io::Result<Child> {
        let command = &mut self.command;
        self.ns.run(|| command.spawn())?
    }

    /// Runs the child inside the namespace and collects its output, like
    /// [`Command::output`].
    pub fn output(&mut self) -> io::Result<Output> {
        let command = &mut self.command;
        self.ns.run(|| command.output())?
    }

    /// Runs the child inside the namespace and waits for it, like
    /// [`Command::status`].
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        let command = &mut self.command;
        self.ns.run(|| command.status())?
    }

    /// Runs the child inside the namespace with `input` on its standard
    /// input (`ip -batch -`, `nft -f -`, `iptables-restore`) and collects
    /// its output.
    pub fn output_with_input(&mut self, input: &[u8]) -> io::Result<Output> {
        let command = &mut self.command;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.ns.run(|| command.spawn())??;
        let stdin = child.stdin.take();
        thread::scope(|scope| {
            // Write from another thread so that a child filling its output
            // pipes before reading all input cannot deadlock us.
            let writer = scope.spawn(move || -> io::Result<()> {
                if let Some(mut stdin) = stdin {
                    match stdin.write_all(input) {
                        // The child may exit without reading everything.
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                        other => other?,
                    }
                }
                Ok(())
            });
            let output = child.wait_with_output();
            match writer.join() {
                Ok(written) => written?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
            output
        })
    }
}
