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

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

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
    let (client_read, client_write) = client.into_split();
    let (endpoint_read, endpoint_write) = endpoint.into_split();
    // One task for both directions: a request/response exchange stays on
    // one worker, and a wake-up for one direction costs the other a poll
    // that finds its socket not ready, without a system call.
    tokio::try_join!(
        pump(client_read, endpoint_write, same_host),
        pump(endpoint_read, client_write, same_host)
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

/// Moves everything from `from` to `to`, then shuts down `to`'s write side
/// (dropping the write half does), so half-closes propagate. The first time
/// the direction carries bulk data it gets its pipe and, when `same_host`,
/// bounded socket buffers.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, same_host: bool) -> io::Result<u64> {
    let mut buffer = vec![0u8; SMALL_READ];
    let mut pipe: Option<Pipe> = None;
    let mut bulk = false;
    let mut total = 0u64;
    loop {
        let moved = if bulk {
            let pipe = match &mut pipe {
                Some(pipe) => pipe,
                None => {
                    if same_host {
                        super::buffers::bound_for_same_host(from.as_ref(), to.as_ref());
                    }
                    pipe.insert(Pipe::new()?)
                }
            };
            splice_through(from.as_ref(), pipe, to.as_ref()).await?
        } else {
            // `read` (unlike `try_read`) marks the socket not ready after a
            // short read, so the next read waits for data without a system
            // call that would only return EAGAIN.
            let n = from.read(&mut buffer).await?;
            to.write_all(&buffer[..n]).await?;
            n
        };
        if moved == 0 {
            break;
        }
        total += moved as u64;
        bulk = moved >= SMALL_READ;
    }
    drop(to);
    drop(from);
    Ok(total)
}

/// Splices what `src` has (up to the pipe's capacity) into the empty pipe
/// and from there to `dst`, until the pipe is empty again. Returns the bytes
/// moved; 0 means end of stream.
async fn splice_through(src: &TcpStream, pipe: &Pipe, dst: &TcpStream) -> io::Result<usize> {
    let filled = read_into_pipe(src, pipe).await?;
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
    Ok(filled)
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{SMALL_READ, bidirectional};

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
        let relay = tokio::spawn(bidirectional(accepted, endpoint, same_host));
        (client, server, relay)
    }

    #[tokio::test]
    async fn request_response_then_bulk_then_small_keeps_every_byte_in_order() {
        for same_host in [false, true] {
            let (mut client, mut server, relay) = relayed(same_host).await;
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
            let expected = tokio::time::timeout(Duration::from_secs(30), test)
                .await
                .expect("relay stalled");
            let counted = relay.await.unwrap().unwrap();
            assert_eq!(counted, expected, "same_host: {same_host}");
        }
    }

    #[tokio::test]
    async fn half_close_reaches_the_other_side_while_it_still_answers() {
        let (mut client, mut server, relay) = relayed(true).await;
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
    }
}
