//! Serving an axum router on a TCP address: the plumbing shared by the
//! health and metrics servers.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::error::Error;

/// How long upstream waits before retrying a server that failed to bind
/// or stopped (`wait.Until(…, 5*time.Second, …)`).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Binds `addr` for the server named `what` (used in the error).
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        context: format!("binding the {what} server to {addr}"),
        source,
    })
}

/// Serves `router` on `listener` until the listener fails.
pub async fn serve_on(listener: TcpListener, router: Router, what: &str) -> Result<(), Error> {
    let addr = listener.local_addr().ok();
    tracing::info!(server = what, address = ?addr, "serving");
    axum::serve(listener, router)
        .await
        .map_err(|source| Error::Io {
            context: format!("serving the {what} server"),
            source,
        })
}

/// Upstream's server loop for the health and metrics servers: bind `addr`
/// and serve; when binding or serving fails, return the error if
/// `hard_fail` (`bindAddressHardFail`), otherwise log it and retry every
/// [`RETRY_INTERVAL`]. Never returns `Ok` unless serving ends cleanly.
pub async fn serve_retrying(
    addr: SocketAddr,
    hard_fail: bool,
    router: Router,
    what: &'static str,
) -> Result<(), Error> {
    loop {
        let result = match bind(addr, what).await {
            Ok(listener) => serve_on(listener, router.clone(), what).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(error) if hard_fail => return Err(error),
            Err(error) => {
                tracing::error!(server = what, %addr, %error, "server failed; retrying in 5s");
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    }
}
