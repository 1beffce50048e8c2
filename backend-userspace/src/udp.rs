//! The UDP listener: one session per client address, each with its own
//! socket connected to the chosen endpoint, ended after
//! `udpIdleTimeout` without traffic in either direction. A listener keeps
//! at most `maxUDPSessions`: a new client beyond it first closes the
//! sessions idle the longest.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::balancer::Decision;
use crate::pktinfo;
use crate::plan::unspecified;
use crate::route::Route;

/// Largest UDP payload.
const DATAGRAM: usize = 64 * 1024;

struct Session {
    id: u64,
    upstream: Arc<UdpSocket>,
    last_active: Arc<Mutex<Instant>>,
    /// The task relaying the endpoint's replies; aborted on eviction, which
    /// closes the session's socket.
    relay: tokio::task::AbortHandle,
}

/// A client as a session knows it: its address, and the local address it
/// sent to when the socket reports it (redirect listeners).
type Peer = (SocketAddr, Option<IpAddr>);

type Sessions = Arc<Mutex<HashMap<Peer, Session>>>;

/// How the listening socket learns where a datagram was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalAddress {
    /// The socket is bound to it: replies leave from it anyway.
    Bound,
    /// The socket is bound to the unspecified address with `IP_PKTINFO`
    /// on: each datagram says, and its replies leave from that address.
    PacketInfo,
}

/// Relays datagrams until the task is aborted (listener removed). Sessions
/// already open keep relaying replies until they go idle.
pub(crate) async fn serve(socket: UdpSocket, route: Route, local: LocalAddress) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut next_id = 0u64;
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let received = match local {
            LocalAddress::Bound => socket.recv_from(&mut buf).await.map(|(n, c)| (n, c, None)),
            LocalAddress::PacketInfo => pktinfo::recv(&socket, &mut buf).await,
        };
        let (len, client, to) = match received {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors of earlier replies surface here; keep serving.
                tracing::debug!(service = %route.port, %error, "receive failed");
                continue;
            }
        };
        let existing = {
            let map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
            map.get(&(client, to)).map(|s| {
                *s.last_active.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                s.upstream.clone()
            })
        };
        let upstream = match existing {
            Some(upstream) => upstream,
            None => {
                next_id += 1;
                match open_session(next_id, (client, to), &socket, &sessions, &route).await {
                    Some(upstream) => upstream,
                    None => continue,
                }
            }
        };
        if let Err(error) = upstream.send(&buf[..len]).await {
            tracing::debug!(service = %route.port, %client, %error, "datagram to endpoint dropped");
        }
    }
}

async fn open_session(
    id: u64,
    peer: Peer,
    listener: &Arc<UdpSocket>,
    sessions: &Sessions,
    route: &Route,
) -> Option<Arc<UdpSocket>> {
    let client = peer.0;
    let from_host = route.is_host(&client.ip());
    let endpoint = match route
        .balancer
        .decide(route.class, client.ip(), from_host, Instant::now())
    {
        Decision::Connect(candidates) => *candidates.first()?,
        Decision::Drop | Decision::Reject => {
            tracing::debug!(service = %route.port, %client, "no usable endpoint: datagram dropped");
            return None;
        }
    };
    let upstream = match connected_socket(endpoint).await {
        Ok(socket) => Arc::new(socket),
        Err(error) => {
            tracing::warn!(service = %route.port, %endpoint, %error, "cannot open a UDP session");
            return None;
        }
    };
    route
        .balancer
        .remember(client.ip(), endpoint, Instant::now());
    let last_active = Arc::new(Mutex::new(Instant::now()));
    // Evict, spawn and insert under one lock: the relay task cannot end
    // (and try to remove its session) before the session is in the map.
    let mut map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
    let evicted = evict_least_recent(&mut map, route.options.max_udp_sessions);
    if evicted > 0 {
        tracing::debug!(service = %route.port, evicted, max = route.options.max_udp_sessions, "UDP session limit reached: closed the sessions idle the longest");
    }
    let relay = tokio::spawn(relay_replies(
        id,
        peer,
        upstream.clone(),
        listener.clone(),
        last_active.clone(),
        sessions.clone(),
        route.clone(),
    ));
    map.insert(
        peer,
        Session {
            id,
            upstream: upstream.clone(),
            last_active,
            relay: relay.abort_handle(),
        },
    );
    Some(upstream)
}

/// Makes room for one more session in `map` (at most `max`): closes the
/// sessions whose last datagram, either way, is the oldest. At least one,
/// and up to `max / 16` at once, so that under a flood of new clients the
/// scan costs constant time per session. Returns how many were closed.
fn evict_least_recent(map: &mut HashMap<Peer, Session>, max: usize) -> usize {
    let max = max.max(1);
    if map.len() < max {
        return 0;
    }
    let count = (map.len() + 1 - max).max(max / 16).min(map.len());
    let mut ages: Vec<(Instant, Peer)> = map
        .iter()
        .map(|(peer, s)| {
            let last = *s.last_active.lock().unwrap_or_else(PoisonError::into_inner);
            (last, *peer)
        })
        .collect();
    if count < ages.len() {
        ages.select_nth_unstable_by_key(count - 1, |(last, _)| *last);
    }
    for (_, peer) in &ages[..count] {
        if let Some(session) = map.remove(peer) {
            session.relay.abort();
        }
    }
    count
}

async fn connected_socket(endpoint: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(
        unspecified(proxy_core::IpFamily::of(&endpoint.ip())),
        0,
    ))
    .await?;
    socket.connect(endpoint).await?;
    Ok(socket)
}

/// Sends the endpoint's replies back to the client until the session has
/// been idle for `udpIdleTimeout`, then forgets it.
async fn relay_replies(
    id: u64,
    peer: Peer,
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    last_active: Arc<Mutex<Instant>>,
    sessions: Sessions,
    route: Route,
) {
    let (client, from) = peer;
    let idle = route.options.udp_idle_timeout;
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let deadline = *last_active.lock().unwrap_or_else(PoisonError::into_inner) + idle;
        match tokio::time::timeout_at(deadline.into(), upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                *last_active.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                let sent = match from {
                    Some(from) => pktinfo::send(&listener, &buf[..len], from, client).await,
                    None => listener.send_to(&buf[..len], client).await,
                };
                if let Err(error) = sent {
                    tracing::debug!(service = %route.port, %client, %error, "reply to client dropped");
                }
            }
            Ok(Err(error)) => {
                // Typically ICMP port unreachable from the endpoint.
                tracing::debug!(service = %route.port, %client, %error, "endpoint error; ending session");
                route.balancer.forget(client.ip());
                break;
            }
            Err(_) => {
                let last = *last_active.lock().unwrap_or_else(PoisonError::into_inner);
                if last.elapsed() >= idle {
                    break;
                }
            }
        }
    }
    let mut map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
    if map.get(&peer).is_some_and(|s| s.id == id) {
        map.remove(&peer);
    }
}
