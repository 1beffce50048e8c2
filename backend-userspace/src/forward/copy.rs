//! The portable path: `copy_bidirectional` through user-space buffers.

use tokio::net::TcpStream;

pub(super) async fn bidirectional(
    mut client: TcpStream,
    mut endpoint: TcpStream,
    buffer: usize,
) -> std::io::Result<(u64, u64)> {
    let buffer = buffer.max(4096);
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut endpoint, buffer, buffer).await
}
