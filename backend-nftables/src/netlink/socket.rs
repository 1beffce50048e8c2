//! The persistent `NETLINK_NETFILTER` socket and one batch's exchange:
//! send it whole, read the kernel's answers until the last command's.

use std::io;
use std::time::{Duration, Instant};

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use proxy_core::exec::netlink_datagram::recv_datagram;

use super::consts::NLMSG_ERROR;

/// The receive buffer asked for: room for the answers of a big batch
/// (nft grows its own the same way).
const RCVBUF: usize = 4 << 20;

/// What the kernel answered to a batch.
#[derive(Debug)]
pub enum Answer {
    /// Every message acknowledged: committed.
    Committed,
    /// The batch could not be sent (too big for the send buffer this
    /// process may have, …): the kernel saw nothing of it.
    NotSent(io::Error),
    /// The message with this sequence number was refused with `errno`
    /// (nothing of the batch is applied).
    Refused {
        /// Sequence number of the refused message.
        seq: u32,
        /// The kernel's error number.
        errno: i32,
    },
}

/// A netlink socket to nf_tables in the network namespace of the thread
/// that opened it.
#[derive(Debug)]
pub struct Channel {
    socket: Socket,
    sndbuf: usize,
}

impl Channel {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open(timeout: Duration) -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors echo only the refused message's header.
        socket.set_cap_ack(true)?;
        grow(&socket, RCVBUF, true);
        let tv = TimeVal::new(timeout.as_secs() as i64, i64::from(timeout.subsec_micros()));
        setsockopt(&socket, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
        setsockopt(&socket, sockopt::SendTimeout, &tv).map_err(io::Error::from)?;
        Ok(Channel { socket, sndbuf: 0 })
    }

    /// Sends `batch` (messages `first..=last`, `last` acknowledged; `first`
    /// is the batch's begin, which a failed commit's error names) and reads
    /// the answers until `last`'s, or until `deadline`.
    pub fn exchange(
        &mut self,
        batch: &[u8],
        first: u32,
        last: u32,
        deadline: Instant,
    ) -> io::Result<Answer> {
        if batch.len() > self.sndbuf {
            let want = batch.len().next_power_of_two().max(1 << 16);
            grow(&self.socket, want, false);
            self.sndbuf = want;
        }
        match self.socket.send(batch, 0) {
            Ok(sent) if sent == batch.len() => {}
            Ok(sent) => {
                return Ok(Answer::NotSent(io::Error::other(format!(
                    "netlink sent {sent} of {} bytes",
                    batch.len()
                ))));
            }
            Err(e) => return Ok(Answer::NotSent(e)),
        }
        let mut refused = None;
        let mut datagram = Vec::new();
        loop {
            if Instant::now() > deadline {
                return Err(io::Error::from(io::ErrorKind::TimedOut));
            }
            match recv_datagram(&self.socket, &mut datagram) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                Err(e) => {
                    // Lost answers (ENOBUFS) are refusals of ours: the
                    // kernel only queues errors and the last ack.
                    return match refused {
                        Some(answer) => Ok(answer),
                        None => Err(e),
                    };
                }
            }
            for (seq, errno) in errors(&datagram)? {
                if seq < first || seq > last {
                    continue; // a previous, abandoned exchange
                }
                if errno != 0 && seq == first {
                    // The batch itself refused (its commit failed, or the
                    // kernel could not queue the errors): the answers of
                    // its messages may never come.
                    return Ok(Answer::Refused { seq, errno });
                }
                if errno != 0 && refused.is_none() {
                    refused = Some(Answer::Refused { seq, errno });
                }
                if seq == last {
                    return Ok(refused.unwrap_or(Answer::Committed));
                }
            }
        }
    }
}

/// The `(sequence, errno)` of every `NLMSG_ERROR` in `datagram`.
pub fn errors(mut datagram: &[u8]) -> io::Result<Vec<(u32, i32)>> {
    let mut out = Vec::new();
    while datagram.len() >= 16 {
        let word = |at: usize| {
            u32::from_ne_bytes([
                datagram[at],
                datagram[at + 1],
                datagram[at + 2],
                datagram[at + 3],
            ])
        };
        let len = word(0) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if len < 16 || len > datagram.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink answer",
            ));
        }
        if kind == NLMSG_ERROR && len >= 20 {
            out.push((word(8), -(word(16) as i32)));
        }
        datagram = &datagram[len.next_multiple_of(4).min(datagram.len())..];
    }
    Ok(out)
}

/// Grows a buffer to `size`: beyond the system's limit as root (`…FORCE`),
/// else as far as allowed.
fn grow(socket: &Socket, size: usize, receive: bool) {
    let forced = if receive {
        setsockopt(socket, sockopt::RcvBufForce, &size)
    } else {
        setsockopt(socket, sockopt::SndBufForce, &size)
    };
    if forced.is_err() {
        let _ = if receive {
            setsockopt(socket, sockopt::RcvBuf, &size)
        } else {
            setsockopt(socket, sockopt::SndBuf, &size)
        };
    }
}
