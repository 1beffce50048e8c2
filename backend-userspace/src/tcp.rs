//! The TCP listener: accept, choose an endpoint (trying the next one when a
//! connect fails), forward.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::balancer::Decision;
use crate::forward;
use crate::route::Route;

/// Connect timeouts of successive attempts, as upstream's userspace proxier
/// (`EndpointDialTimeouts`): a dead endpoint costs a quarter second before
/// the next one is tried.
const DIAL_TIMEOUTS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Pause after a failed `accept` (out of file descriptors), so the loop
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until the task is aborted (listener removed).
/// Connections already accepted run in their own tasks and finish on their own.
pub(crate) async fn serve(listener: TcpListener, route: Route) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(handle(client, peer, route.clone()));
            }
            Err(error) => {
                tracing::warn!(service = %route.port, %error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn handle(client: TcpStream, peer: SocketAddr, route: Route) {
    let from_host = route.is_host(&peer.ip());
    let candidates = match route
        .balancer
        .decide(route.class, peer.ip(), from_host, Instant::now())
    {
        Decision::Connect(candidates) => candidates,
        Decision::Drop => {
            tracing::debug!(service = %route.port, %peer, "no local endpoint: dropping connection");
            blackhole(client).await;
            return;
        }
        Decision::Reject => {
            tracing::debug!(service = %route.port, %peer, "no endpoint: rejecting connection");
            reset(client);
            return;
        }
    };
    let Some((upstream, endpoint)) = connect(&candidates, peer, &route).await else {
        tracing::warn!(service = %route.port, %peer, attempts = DIAL_TIMEOUTS.len(), "no endpoint answered");
        reset(client);
        return;
    };
    // Small writes (request/response protocols) must not wait for Nagle;
    // on Unix the accepted client inherits TCP_NODELAY from the listener
    // (`sockets::tcp_listener`).
    #[cfg(not(unix))]
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let same_host = from_host && route.is_host(&endpoint.ip());
    if let Err(error) =
        forward::forward(client, upstream, route.options.forwarding, same_host).await
    {
        tracing::debug!(service = %route.port, %peer, %error, "connection ended with an error");
    }
}

/// The first endpoint that accepts, with its address.
async fn connect(
    candidates: &[SocketAddr],
    peer: SocketAddr,
    route: &Route,
) -> Option<(TcpStream, SocketAddr)> {
    // As upstream: four attempts with growing timeouts, each on the next
    // endpoint (wrapping around, so one endpoint gets four tries).
    let attempts = candidates.iter().cycle().zip(DIAL_TIMEOUTS);
    for (endpoint, timeout) in attempts {
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                route
                    .balancer
                    .remember(peer.ip(), *endpoint, Instant::now());
                return Some((stream, *endpoint));
            }
            Ok(Err(error)) => {
                tracing::debug!(service = %route.port, %endpoint, %error, "connect failed, trying the next endpoint");
            }
            Err(_) => {
                tracing::debug!(service = %route.port, %endpoint, ?timeout, "connect timed out, trying the next endpoint");
            }
        }
        route.balancer.forget(peer.ip());
    }
    None
}

/// How long a dropped connection is held open without an answer.
const DROP_HOLD: Duration = Duration::from_secs(30);

/// The userspace form of a silent drop: the kernel has already accepted the
/// connection, so the client must not get an answer or an end of stream it
/// could act on. Discard what it sends until it gives up (or [`DROP_HOLD`]),
/// then reset.
async fn blackhole(mut client: TcpStream) {
    let mut buf = [0u8; 4096];
    let discard = async {
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DROP_HOLD, discard).await;
    reset(client);
}

/// Closes `stream` with a reset, so the client sees a refusal rather than a
/// clean end of stream.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
}
