//! [`NftWatcher`]: repairs external changes to our nf_tables state as soon
//! as the kernel announces them, instead of at the next drift check.
//!
//! The watcher listens on a `NETLINK_NETFILTER` socket joined to the
//! `NFNLGRP_NFTABLES` multicast group. Every committed nf_tables transaction
//! (by `nft`, `iptables-nft`, firewalld, …) is announced there as one message
//! per object it added or deleted, then one `NFT_MSG_NEWGEN` carrying the pid
//! of the committing process. The watcher collects the objects of a
//! transaction that are ours ([`WatchScope`]) and, when the transaction's
//! `NEWGEN` arrives, reports the families it touched, unless the committing
//! process is one of ours.
//!
//! **Telling our writes apart.** Our commits are made by child processes
//! (`nft -f -`, `iptables-restore`); the executors record their pids in the
//! loop's [`OwnWrites`] (see there). A transaction whose `NEWGEN` names a
//! recorded pid is ours and ignored, whenever it is read: an external change
//! that lands while our own sync runs is still seen (a time window "while
//! our sync is in flight" would miss exactly those). Processes exit right
//! after committing; the pids of the last few thousand children are kept, so
//! only a pid reused by an outside `nft` within that many of our spawns
//! could hide an external change (the drift check still catches a lost
//! table or canary every `syncPeriod`).
//!
//! If the pids of our children are never the committers (a wrapper that
//! forks the real tool instead of exec'ing it), every one of our syncs would
//! look external and cause another: after a few such "external" changes
//! without a single commit of ours seen, the watcher stops with a warning and
//! polling remains.
//!
//! **Lost messages.** If the socket's buffer overflows (`ENOBUFS`, e.g.
//! during a huge transaction), the watcher cannot know who did what: if we
//! spawned nothing since the last read it reports every watched family
//! (the change was someone else's), otherwise it assumes the flood was our
//! own sync and leaves the rest to the drift check. The receive buffer is
//! enlarged to make this rare.
//!
//! The socket belongs to the network namespace of the thread that opens it:
//! the runtime opens it on the loop's thread, where the backends program.

#[cfg(all(test, feature = "netns"))]
mod kernel_tests;
mod message;
mod scope;

use std::collections::BTreeSet;
use std::io;

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, SocketAddr, TokioSocket};

use crate::config::ProxyMode;
use crate::exec::OwnWrites;
use crate::model::IpFamily;

use message::Notification;
pub(crate) use scope::WatchScope;

/// `NFNLGRP_NFTABLES`: the nf_tables notification group.
const NFNLGRP_NFTABLES: u32 = 7;
/// `ENOBUFS`: the kernel dropped notifications for this socket.
const ENOBUFS: i32 = 105;
/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RECEIVE_BUFFER: usize = 8 << 20;
/// Largest datagram read at once (one notification is at most a page or two).
const DATAGRAM: usize = 64 << 10;

/// Which families a batch of notifications says were changed from outside.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// Families touched by the objects of the transaction not yet closed by
    /// its `NEWGEN`.
    open: BTreeSet<IpFamily>,
    /// Families changed from outside, not yet reported.
    changed: BTreeSet<IpFamily>,
    /// `OwnWrites::spawned` at the last overrun check.
    spawned_seen: u64,
    warned_no_pid: bool,
    /// Commits seen from our own children.
    own_commits: u64,
    /// External changes reported.
    reported: u64,
}

/// External changes reported, with not one commit of ours seen, after which
/// the watcher concludes that it cannot see our own commits (a wrapper that
/// forks the real `nft` / `iptables-restore` instead of exec'ing it) and
/// stops, rather than answer each of our syncs with another full sync.
const BLIND_AFTER: u64 = 5;

impl Decoder {
    /// Feeds one notification.
    fn feed(&mut self, notification: Notification, scope: &WatchScope, own: &OwnWrites) {
        match notification {
            Notification::Object(change) => {
                if let Some(family) = scope.concerns(&change) {
                    self.open.insert(family);
                }
            }
            Notification::Generation { id, pid, process } => {
                let touched = std::mem::take(&mut self.open);
                if pid.is_some_and(|pid| own.contains(pid)) {
                    self.own_commits += 1;
                    tracing::trace!(generation = id, ?pid, "our own nf_tables commit");
                    return;
                }
                if touched.is_empty() {
                    return;
                }
                match pid {
                    Some(pid) => {
                        tracing::info!(generation = id, pid, process = process.as_deref().unwrap_or("?"), families = ?touched, "another process changed our nf_tables rules");
                        self.reported += 1;
                        self.changed.extend(touched);
                    }
                    None => {
                        // Without the committer's pid our own writes look
                        // external: reacting would loop. Leave it to polling.
                        if !std::mem::replace(&mut self.warned_no_pid, true) {
                            tracing::warn!(
                                "nf_tables notifications carry no process id (old kernel); external changes are found by the periodic drift check only"
                            );
                        }
                    }
                }
            }
            Notification::Overrun => self.overrun(scope, own),
        }
    }

    /// Messages were lost: see the module documentation.
    fn overrun(&mut self, scope: &WatchScope, own: &OwnWrites) {
        self.open.clear();
        let spawned = own.spawned();
        if std::mem::replace(&mut self.spawned_seen, spawned) == spawned {
            tracing::warn!("nf_tables notifications were lost while we wrote nothing; repairing");
            self.changed.extend(scope.families().iter().copied());
        } else {
            tracing::debug!("nf_tables notifications were lost during our own writes");
        }
    }

    /// The families changed from outside since the last call.
    fn take_changed(&mut self) -> Vec<IpFamily> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// Whether every commit looked external so far, too often to be true:
    /// see [`BLIND_AFTER`].
    fn blind(&self) -> bool {
        self.own_commits == 0 && self.reported >= BLIND_AFTER
    }
}

/// The nf_tables notification listener of one runtime. See the [module
/// documentation](self).
pub(crate) struct NftWatcher {
    socket: TokioSocket,
    scope: WatchScope,
    own: OwnWrites,
    decoder: Decoder,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for NftWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftWatcher")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl NftWatcher {
    /// A watcher for `mode`'s state in `families`, whose own writes are
    /// recorded in `own`; `Ok(None)` when the mode is not watched. Must be
    /// called from a tokio runtime, on the thread (network namespace) the
    /// backends program.
    pub(crate) fn open(
        mode: ProxyMode,
        families: Vec<IpFamily>,
        own: OwnWrites,
    ) -> io::Result<Option<Self>> {
        let Some(scope) = WatchScope::for_mode(mode, families) else {
            return Ok(None);
        };
        let mut socket = TokioSocket::new(NETLINK_NETFILTER)?;
        socket.socket_mut().bind(&SocketAddr::new(0, 0))?;
        socket.socket_ref().add_membership(NFNLGRP_NFTABLES)?;
        if let Err(error) = socket.socket_ref().set_rx_buf_sz(RECEIVE_BUFFER) {
            tracing::debug!(%error, "cannot enlarge the nf_tables notification buffer");
        }
        let decoder = Decoder {
            spawned_seen: own.spawned(),
            ..Decoder::default()
        };
        Ok(Some(NftWatcher {
            socket,
            scope,
            own,
            decoder,
            buffer: Vec::with_capacity(DATAGRAM),
        }))
    }

    /// Waits until another process changed our state; returns the families
    /// to repair. Cancel-safe: what was read is kept for the next call.
    pub(crate) async fn changed(&mut self) -> io::Result<Vec<IpFamily>> {
        loop {
            self.drain()?;
            if self.decoder.blind() {
                return Err(io::Error::other(format!(
                    "{BLIND_AFTER} nf_tables commits looked external and none carried the pid of a process we spawned: are nft / iptables-restore wrappers that fork?"
                )));
            }
            let changed = self.decoder.take_changed();
            if !changed.is_empty() {
                return Ok(changed);
            }
            // Wait for the next datagram (the wait registers readiness).
            self.buffer.clear();
            let (socket, buffer) = (&self.socket, &mut self.buffer);
            let received = std::future::poll_fn(|cx| socket.poll_recv(cx, buffer)).await;
            if let Some(result) = self.received(received.map(|()| 0)) {
                result?;
            }
        }
    }

    /// Reads and decodes every datagram already queued on the socket.
    fn drain(&mut self) -> io::Result<()> {
        loop {
            self.buffer.clear();
            let received = self.socket.socket_ref().recv(&mut self.buffer, 0);
            match received {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                other => {
                    if let Some(result) = self.received(other) {
                        result?;
                    }
                }
            }
        }
    }

    /// Handles one read: decodes a datagram, notes an overflow. `Some(Err)`
    /// for a socket error, `None` for a datagram or a harmless error.
    fn received(&mut self, result: io::Result<usize>) -> Option<io::Result<()>> {
        match result {
            Ok(_) => {
                for n in message::parse_datagram(&self.buffer) {
                    self.decoder.feed(n, &self.scope, &self.own);
                }
                None
            }
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                self.decoder.overrun(&self.scope, &self.own);
                None
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// Waits on `watcher` if there is one, forever otherwise. Errors end the
/// watch (logged once) and leave repairs to the drift check.
pub(crate) async fn next_change(watcher: &mut Option<NftWatcher>) -> Vec<IpFamily> {
    let Some(w) = watcher else {
        return std::future::pending().await;
    };
    match w.changed().await {
        Ok(families) => families,
        Err(error) => {
            tracing::warn!(%error, "the nf_tables watcher failed; external changes are found by the periodic drift check only");
            *watcher = None;
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::message::build;
    use super::message::{NFPROTO_IPV4, NFPROTO_IPV6, parse_datagram};
    use super::*;

    fn feed(decoder: &mut Decoder, scope: &WatchScope, own: &OwnWrites, bytes: &[u8]) {
        for n in parse_datagram(bytes) {
            decoder.feed(n, scope, own);
        }
    }

    fn scope() -> WatchScope {
        WatchScope::Nftables {
            families: vec![IpFamily::V4, IpFamily::V6],
        }
    }

    #[test]
    fn an_outside_commit_to_our_table_is_reported_once() {
        let (scope, own) = (scope(), OwnWrites::new());
        let mut d = Decoder::default();
        feed(
            &mut d,
            &scope,
            &own,
            &build::rule(false, NFPROTO_IPV4, "kube-proxy", "services", None),
        );
        assert!(
            d.take_changed().is_empty(),
            "not before the transaction is committed"
        );
        feed(&mut d, &scope, &own, &build::generation(5, 999, "nft"));
        assert_eq!(d.take_changed(), [IpFamily::V4]);
        assert!(d.take_changed().is_empty());
    }

    #[test]
    fn our_own_commits_are_ignored_even_interleaved_with_others() {
        let (scope, own) = (scope(), OwnWrites::new());
        own.record(100);
        let mut d = Decoder::default();
        let ours = [
            build::rule(true, NFPROTO_IPV4, "kube-proxy", "services", None),
            build::table(false, NFPROTO_IPV4, "kube-proxy"),
            build::generation(6, 100, "nft"),
        ]
        .concat();
        feed(&mut d, &scope, &own, &ours);
        assert!(d.take_changed().is_empty());
        // Someone else's commit to another table, then one to ours in v6.
        let theirs = [
            build::table(false, NFPROTO_IPV4, "firewalld"),
            build::generation(7, 200, "firewalld"),
            build::set_element_deleted(NFPROTO_IPV6, "kube-proxy", "service-ips"),
            build::generation(8, 201, "nft"),
        ]
        .concat();
        feed(&mut d, &scope, &own, &theirs);
        assert_eq!(d.take_changed(), [IpFamily::V6]);
    }

    #[test]
    fn a_watcher_that_never_sees_our_own_commits_gives_up() {
        let (scope, own) = (scope(), OwnWrites::new());
        own.record(100);
        let mut d = Decoder::default();
        let theirs = |id| {
            [
                build::table(false, NFPROTO_IPV4, "kube-proxy"),
                build::generation(id, 200 + id, "nft"),
            ]
            .concat()
        };
        for id in 0..BLIND_AFTER as u32 {
            assert!(!d.blind());
            feed(&mut d, &scope, &own, &theirs(id));
        }
        assert!(
            d.blind(),
            "every commit looked external: our pids are not what commits"
        );
        // One commit of ours seen (even outside our tables): it can tell.
        let mut d = Decoder::default();
        feed(&mut d, &scope, &own, &build::generation(1, 100, "nft"));
        for id in 0..10 {
            feed(&mut d, &scope, &own, &theirs(id));
        }
        assert!(!d.blind());
    }

    #[test]
    fn a_commit_without_a_pid_is_not_acted_on() {
        let (scope, own) = (scope(), OwnWrites::new());
        let mut d = Decoder::default();
        feed(
            &mut d,
            &scope,
            &own,
            &build::table(false, NFPROTO_IPV4, "kube-proxy"),
        );
        let mut gen_without_pid =
            build::message(15, 0, &[build::attr(1, &9u32.to_be_bytes(), false)]);
        gen_without_pid.truncate(gen_without_pid.len());
        feed(&mut d, &scope, &own, &gen_without_pid);
        assert!(d.take_changed().is_empty());
    }

    #[test]
    fn an_overrun_is_a_change_only_if_we_wrote_nothing_since() {
        let (scope, own) = (scope(), OwnWrites::new());
        let mut d = Decoder::default();
        d.overrun(&scope, &own);
        assert_eq!(d.take_changed(), [IpFamily::V4, IpFamily::V6]);
        own.record(1);
        d.overrun(&scope, &own);
        assert!(d.take_changed().is_empty(), "the flood was our own sync");
        d.overrun(&scope, &own);
        assert_eq!(d.take_changed().len(), 2);
    }
}
