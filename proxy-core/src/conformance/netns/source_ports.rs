//! Client source ports that a topology never hands out twice in a row.
//!
//! Each attempt must be a new flow: a new conntrack entry, so a new NAT
//! and load-balancing decision. A port the kernel picks (`bind` to port 0)
//! may repeat one a recent attempt used, and the conntrack entry of that
//! attempt outlives it: a SYN that was forwarded unanswered leaves an
//! entry in `SYN_SENT` for two minutes, an unreplied UDP request one for
//! 30 s. A new attempt from the same port is then a retransmission of the
//! old flow to the kernel and skips the rules written since. Seen in CI: a
//! Service probed before it was programmed (forwarded to the LAN, no
//! route there) and after, one attempt of 64 rejected by the rule for
//! unknown ports of ClusterIPs, its SYN having matched the old entry.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// The first port handed out: the start of the kernel's default range
/// for client ports (`net.ipv4.ip_local_port_range`), where no scenario,
/// echo server, NodePort (30000–32767) or kube-proxy listener (10249,
/// 10256) binds: a port taken by another client of the namespace is
/// skipped, and the kernel skips ours when it picks one.
const FIRST: u16 = 32_768;
/// The end of that range.
const LAST: u16 = 60_999;
/// How many taken ports in a row one bind may skip.
const MAX_SKIPPED: usize = 256;

/// The next source port of a topology's clients, cycling through
/// 32768–60999: a port comes back after 28,232 attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourcePorts {
    next: u16,
}

impl Default for SourcePorts {
    fn default() -> Self {
        SourcePorts { next: FIRST }
    }
}

impl SourcePorts {
    fn take(&mut self) -> u16 {
        let port = self.next;
        self.next = if port >= LAST { FIRST } else { port + 1 };
        port
    }

    /// Runs `bind` with the next ports from `source` until one is free
    /// (`EADDRINUSE` skips to the next one) and returns what it made.
    pub(crate) fn bind<T>(
        &mut self,
        source: IpAddr,
        mut bind: impl FnMut(SocketAddr) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut skipped = 0;
        loop {
            match bind(SocketAddr::new(source, self.take())) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && skipped < MAX_SKIPPED => {
                    skipped += 1;
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn ports_do_not_repeat_within_a_cycle_and_wrap_after_it() {
        let mut ports = SourcePorts::default();
        let mut seen = std::collections::BTreeSet::new();
        for _ in FIRST..=LAST {
            let port = ports.bind(SOURCE, |a| Ok(a.port())).unwrap();
            assert!((FIRST..=LAST).contains(&port), "{port}");
            assert!(seen.insert(port), "port {port} handed out twice");
        }
        assert_eq!(ports.bind(SOURCE, |a| Ok(a.port())).unwrap(), FIRST);
    }

    #[test]
    fn a_taken_port_is_skipped_and_other_errors_are_returned() {
        let mut ports = SourcePorts::default();
        let taken = |a: SocketAddr| {
            if a.port() < FIRST + 3 {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else {
                Ok(a)
            }
        };
        assert_eq!(
            ports.bind(SOURCE, taken).unwrap(),
            SocketAddr::new(SOURCE, FIRST + 3)
        );
        let denied = ports
            .bind(SOURCE, |_| -> io::Result<()> {
                Err(io::Error::from(io::ErrorKind::PermissionDenied))
            })
            .unwrap_err();
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied);
        let always_taken = ports
            .bind(SOURCE, |_| -> io::Result<()> {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            })
            .unwrap_err();
        assert_eq!(always_taken.kind(), io::ErrorKind::AddrInUse);
    }
}
