//! Zero-copy forwarding with `splice(2)`: socket → pipe → socket, driven by
//! Tokio readiness, so bulk payload never enters user space.
//!
//! Small reads take the copy path instead: a request of a few hundred bytes
//! costs a `recv` and a `send` through a small buffer, against three
//! `splice` calls through a pipe (the third one finding the socket empty),
//! and the pipe is only created once a direction carries bulk data. Each
//! direction switches per read: a read that fills the small buffer makes the
//! next one a splice, a splice that moves less than the small buffer makes
//! the next one a copy. The pipe is always empty when a copy read starts, so
//! the byte order is kept.
//!
//! Where splicing is not possible (no pipe: the process is out of file
//! descriptors; or a socket the kernel cannot splice from), the direction
//! falls back to copying for the rest of the connection; the pipe is empty
//! at that point, so nothing is lost or reordered.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Pipe capacity asked for; the kernel may grant less (the default 64 KiB
/// when the user's pipe budget, `fs.pipe-user-pages-soft`, is spent), which
/// only costs system calls.
const PIPE_SIZE: i32 = 1 << 20;

/// The copy buffer for small reads, and the read size from which a
/// direction counts as bulk and switches to splicing.
const SMALL_READ: usize = 16 * 1024;

pub(super) async fn bidirectional(
    client: TcpStream,
    endpoint: TcpStream,
    same_host: bool,
) -> io::Result<(u64, u64)> {
    bidirectional_with(client, endpoint, same_host, &Pipe::new).await
}

/// Makes a direction's pipe.
type NewPipe = dyn Fn() -> io::Result<Pipe> + Sync;

/// [`bidirectional`] with the pipes made by `new_pipe` (tests make it fail
/// to prove the fallback).
async fn bidirectional_with(
    mut client: TcpStream,
    mut endpoint: TcpStream,
    same_host: bool,
    new_pipe: &NewPipe,
) -> io::Result<(u64, u64)> {
    // Borrowed halves: no reference-counted allocation per connection.
    let (client_read, client_write) = client.split();
    let (endpoint_read, endpoint_write) = endpoint.split();
    // One task for both directions: a request/response exchange stays on
    // one worker, and a wake-up for one direction costs the other a poll
    // that finds its socket not ready, without a system call. On an error
    // both sockets are closed (dropped) when this returns.
    tokio::try_join!(
        pump(client_read, endpoint_write, same_host, new_pipe),
        pump(endpoint_read, client_write, same_host, new_pipe)
    )
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let capacity = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE))
            .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))
            .map_or(64 * 1024, |n| usize::try_from(n).unwrap_or(64 * 1024));
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

/// `SPLICE_F_MOVE` is a hint the kernel ignores today; `SPLICE_F_NONBLOCK`
/// keeps the pipe side from blocking (the sockets are non-blocking already).
fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Whether a direction's bulk data can go through a pipe.
enum Splicing {
    /// Not tried yet: no bulk data so far.
    Untried,
    Ready(Pipe),
    /// Not possible on this connection: copy instead.
    Unavailable,
}

/// Moves everything from `from` to `to`, then shuts down `to`'s write side,
/// so half-closes propagate. The first time the direction carries bulk data
/// it gets its pipe and, when `same_host`, bounded socket buffers.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    same_host: bool,
    new_pipe: &NewPipe,
) -> io::Result<u64> {
    // Filled by `read_buf` (no zeroing), emptied after each write.
    let mut buffer = Vec::with_capacity(SMALL_READ);
    let mut splicing = Splicing::Untried;
    let mut bulk = false;
    let mut total = 0u64;
    loop {
        if bulk && matches!(splicing, Splicing::Untried) {
            if same_host {
                super::buffers::bound_for_same_host(from.as_ref(), to.as_ref());
            }
            splicing = match new_pipe() {
                Ok(pipe) => Splicing::Ready(pipe),
                Err(error) => {
                    tracing::debug!(%error, "no pipe for splice: copying this direction");
                    Splicing::Unavailable
                }
            };
        }
        let spliced = match &splicing {
            Splicing::Ready(pipe) if bulk => {
                match splice_through(from.as_ref(), pipe, to.as_ref()).await {
                    Ok(moved) => Some(moved),
                    Err(Failed::IntoPipe(error)) if cannot_splice(&error) => {
                        tracing::debug!(%error, "the socket cannot be spliced: copying this direction");
                        splicing = Splicing::Unavailable;
                        None
                    }
                    Err(Failed::IntoPipe(error) | Failed::OutOfPipe(error)) => return Err(error),
                }
            }
            _ => None,
        };
        let moved = match spliced {
            Some(moved) => moved,
            None => {
                // `read_buf` (unlike `try_read`) marks the socket not ready
                // after a short read, so the next read waits for data
                // without a system call that would only return EAGAIN.
                buffer.clear();
                let n = from.read_buf(&mut buffer).await?;
                to.write_all(&buffer).await?;
                n
            }
        };
        if moved == 0 {
            break;
        }
        total += moved as u64;
        bulk = moved >= SMALL_READ;
    }
    // As dropping an owned write half would: errors (the peer is gone)
    // change nothing here.
    let _ = to.shutdown().await;
    Ok(total)
}

/// Whether `error` from splicing into the (empty) pipe means that this
/// socket cannot be spliced, rather than that the connection failed.
fn cannot_splice(error: &io::Error) -> bool {
    use nix::errno::Errno;
    [Errno::EINVAL, Errno::ENOSYS, Errno::EOPNOTSUPP]
        .iter()
        .any(|e| error.raw_os_error() == Some(*e as i32))
}

/// Which half of [`splice_through`] failed: only a failure into the pipe
/// leaves it empty (and so allows copying instead).
enum Failed {
    IntoPipe(io::Error),
    OutOfPipe(io::Error),
}

/// Splices what `src` has (up to the pipe's capacity) into the empty pipe
/// and from there to `dst`, until the pipe is empty again. Returns the bytes
/// moved; 0 means end of stream.
async fn splice_through(src: &TcpStream, pipe: &Pipe, dst: &TcpStream) -> Result<usize, Failed> {
    let filled = read_into_pipe(src, pipe).await.map_err(Failed::IntoPipe)?;
    write_from_pipe(pipe, filled, dst)
        .await
        .map_err(Failed::OutOfPipe)?;
    Ok(filled)
}

/// Splices the `filled` bytes in `pipe` to `dst`.
async fn write_from_pipe(pipe: &Pipe, filled: usize, dst: &TcpStream) -> io::Result<()> {
    let mut pending = filled;
    while pending > 0 {
        dst.writable().await?;
        match dst.try_io(Interest::WRITABLE, || {
            Ok(splice(
                pipe.read.as_fd(),
                None,
                dst.as_fd(),
                None,
                pending,
                flags(),
            )?)
        }) {
            Ok(n) => pending -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splices what `src` has (up to the pipe's capacity) into the empty pipe;
/// 0 means end of stream.
async fn read_into_pipe(src: &TcpStream, pipe: &Pipe) -> io::Result<usize> {
    loop {
        src.readable().await?;
        match src.try_io(Interest::READABLE, || {
            Ok(splice(
                src.as_fd(),
                None,
                pipe.write.as_fd(),
                None,
                pipe.capacity,
                flags(),
            )?)
        }) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Pipe, SMALL_READ, bidirectional_with};

    /// Where the relay's pipes come from.
    #[derive(Clone)]
    enum Pipes {
        /// Real pipes, counted.
        Counted(Arc<AtomicUsize>),
        /// None: every attempt fails as when out of file descriptors.
        Exhausted,
    }

    /// Byte `i` of a test stream: not periodic in any buffer size used here,
    /// so a reordered or lost chunk shows.
    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add((i / 251) as u8) ^ seed)
            .collect()
    }

    /// A client connected through `bidirectional` to a server:
    /// (client, server, relay task).
    async fn relayed(
        same_host: bool,
        pipes: Pipes,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<std::io::Result<(u64, u64)>>,
    ) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = front.accept().await.unwrap();
        let endpoint = TcpStream::connect(back.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = back.accept().await.unwrap();
        let relay = tokio::spawn(async move {
            let new_pipe = move || match &pipes {
                Pipes::Counted(made) => {
                    made.fetch_add(1, Ordering::SeqCst);
                    Pipe::new()
                }
                Pipes::Exhausted => Err(std::io::Error::from_raw_os_error(nix::libc::EMFILE)),
            };
            bidirectional_with(accepted, endpoint, same_host, &new_pipe).await
        });
        (client, server, relay)
    }

    #[tokio::test]
    async fn request_response_then_bulk_then_small_keeps_every_byte_in_order() {
        for same_host in [false, true] {
            let made = Arc::new(AtomicUsize::new(0));
            let (client, server, relay) = relayed(same_host, Pipes::Counted(made.clone())).await;
            let expected = small_bulk_small(client, server).await;
            let counted = relay.await.unwrap().unwrap();
            assert_eq!(counted, expected, "same_host: {same_host}");
            assert_eq!(
                made.load(Ordering::SeqCst),
                2,
                "both directions carried bulk data through a pipe"
            );
        }
    }

    #[tokio::test]
    async fn without_pipes_both_directions_fall_back_to_copying() {
        let (client, server, relay) = relayed(true, Pipes::Exhausted).await;
        let expected = small_bulk_small(client, server).await;
        assert_eq!(relay.await.unwrap().unwrap(), expected);
    }

    /// Small exchanges, then bulk both ways at once ending in half-closes
    /// from both sides, through the relay; returns the bytes it should
    /// have counted (client → server, server → client).
    async fn small_bulk_small(mut client: TcpStream, mut server: TcpStream) -> (u64, u64) {
        {
            let test = async {
                // Small exchanges: the copy path, one read per message.
                for round in 0..50u8 {
                    let request = pattern(round, 64);
                    client.write_all(&request).await.unwrap();
                    let mut got = [0u8; 64];
                    server.read_exact(&mut got).await.unwrap();
                    assert_eq!(got.as_slice(), request.as_slice());
                    server.write_all(&got[..7]).await.unwrap();
                    let mut answer = [0u8; 7];
                    client.read_exact(&mut answer).await.unwrap();
                    assert_eq!(answer.as_slice(), &request[..7]);
                }
                // Bulk both ways at once (splice), sizes around the switch,
                // then small messages again.
                let up: Vec<u8> = [
                    pattern(1, SMALL_READ - 1),
                    pattern(2, SMALL_READ),
                    pattern(3, 3 << 20),
                    pattern(4, 5),
                ]
                .concat();
                let down = pattern(9, 2 << 20);
                let (mut client_read, mut client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let send_up = async {
                    client_write.write_all(&up).await.unwrap();
                    client_write.write_all(b"tail").await.unwrap();
                    client_write.shutdown().await.unwrap();
                };
                let send_down = async {
                    server_write.write_all(&down).await.unwrap();
                    server_write.shutdown().await.unwrap();
                };
                let receive_up = async {
                    let mut got = Vec::new();
                    server_read.read_to_end(&mut got).await.unwrap();
                    got
                };
                let receive_down = async {
                    let mut got = Vec::new();
                    client_read.read_to_end(&mut got).await.unwrap();
                    got
                };
                let ((), (), got_up, got_down) =
                    tokio::join!(send_up, send_down, receive_up, receive_down);
                assert_eq!(got_up.len(), up.len() + 4);
                assert!(got_up[..up.len()] == up[..], "client → server bytes differ");
                assert_eq!(&got_up[up.len()..], b"tail");
                assert!(got_down == down, "server → client bytes differ");
                // The small rounds moved 50 × 64 bytes up and 50 × 7 down.
                (50 * 64 + up.len() as u64 + 4, 50 * 7 + down.len() as u64)
            };
            tokio::time::timeout(Duration::from_secs(30), test)
                .await
                .expect("relay stalled")
        }
    }

    #[tokio::test]
    async fn half_close_reaches_the_other_side_while_it_still_answers() {
        let made = Arc::new(AtomicUsize::new(0));
        let (mut client, mut server, relay) = relayed(true, Pipes::Counted(made.clone())).await;
        client.write_all(b"question").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"question");
        let answer = pattern(5, 1 << 20);
        server.write_all(&answer).await.unwrap();
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert!(back == answer, "answer after half-close differs");
        assert_eq!(relay.await.unwrap().unwrap(), (8, 1 << 20));
        assert_eq!(made.load(Ordering::SeqCst), 1, "the answer was spliced");
    }
}
