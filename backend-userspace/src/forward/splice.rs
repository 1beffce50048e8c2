//! Zero-copy forwarding with `splice(2)`: socket → pipe → socket, driven by
//! Tokio readiness, so the payload never enters user space.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Pipe capacity asked for; the kernel may grant less (the default 64 KiB
/// when the user's pipe budget is spent), which only costs system calls.
const PIPE_SIZE: i32 = 1 << 20;

pub(super) async fn bidirectional(
    client: TcpStream,
    endpoint: TcpStream,
) -> io::Result<(u64, u64)> {
    let (client_read, client_write) = client.into_split();
    let (endpoint_read, endpoint_write) = endpoint.into_split();
    tokio::try_join!(
        pump(client_read, endpoint_write),
        pump(endpoint_read, client_write)
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

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Moves everything from `from` to `to`, then shuts down `to`'s write side
/// (dropping the write half does), so half-closes propagate.
async fn pump(from: OwnedReadHalf, to: OwnedWriteHalf) -> io::Result<u64> {
    let pipe = Pipe::new()?;
    let (src, dst): (&TcpStream, &TcpStream) = (from.as_ref(), to.as_ref());
    let mut total = 0u64;
    loop {
        let filled = read_into_pipe(src, &pipe).await?;
        if filled == 0 {
            break;
        }
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
        total += filled as u64;
    }
    drop(to);
    drop(from);
    Ok(total)
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
