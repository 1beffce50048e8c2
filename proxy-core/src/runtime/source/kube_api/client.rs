//! The API client from `clientConnection`, `--kubeconfig` and `--master`.

use std::sync::Arc;

use http::Response;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::Client;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

use super::liveness::{
    CONNECT_TIMEOUT, DEAD_AFTER, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, Reachability,
};

use crate::config::KubeProxyConfiguration;
use crate::error::Error;

/// Builds the API client as upstream does: `clientConnection.kubeconfig`
/// (`--kubeconfig`) when set, else the in-cluster service account; `master`
/// (`--master`) overrides the server URL, and alone (no kubeconfig) is used
/// as is.
///
/// kube-rs speaks JSON only: a protobuf `contentType` (upstream's default)
/// is noted at debug level and JSON is used. It has no client-side rate
/// limiter either, so `qps`/`burst` are not enforced (watches make few
/// requests).
///
/// The client notices a silently dead connection and reconnects quickly:
/// see [`client_with_liveness`].
pub async fn client_from_config(
    config: &KubeProxyConfiguration,
    master: Option<&str>,
) -> Result<Client, Error> {
    let connection = &config.client_connection;
    let master = master.filter(|m| !m.is_empty());
    let mut client_config = if !connection.kubeconfig.is_empty() {
        let kubeconfig = Kubeconfig::read_from(&connection.kubeconfig).map_err(|e| {
            Error::Kube(format!("reading kubeconfig {}: {e}", connection.kubeconfig))
        })?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| {
                Error::Kube(format!("loading kubeconfig {}: {e}", connection.kubeconfig))
            })?
    } else if let Some(master) = master {
        Config::new(parse_url(master)?)
    } else {
        Config::incluster().map_err(|e| {
            Error::Kube(format!(
                "neither --kubeconfig nor --master was given and the in-cluster configuration is unavailable: {e}"
            ))
        })?
    };
    if let Some(master) = master {
        client_config.cluster_url = parse_url(master)?;
    }
    if connection.content_type.contains("protobuf") {
        tracing::debug!(content_type = %connection.content_type, "the client speaks JSON only; using application/json");
    }
    tracing::debug!(
        qps = connection.qps,
        burst = connection.burst,
        "client-side rate limits are not enforced"
    );
    client_with_liveness(client_config)
}

/// Builds a client for `config` whose connections die ≤ 45 s after the API
/// server was last heard from, as client-go's do (see the
/// [`liveness`](super::liveness) module): TCP keepalive after 30 s idle,
/// `TCP_USER_TIMEOUT` 45 s, a 5 s connect timeout. Requests and response
/// bodies also feed the outage log (one `warn` when the server is lost,
/// one `info` when it answers again).
///
/// Otherwise the same stack as `kube::Client::try_from(config)`: TLS and
/// authentication from `config`, kube's retry of `429`/`503`/`504`
/// answers, and `config`'s extra headers. `config`'s own
/// `connect_timeout`/`read_timeout`/`write_timeout` are replaced by the
/// timings above. A `config.proxy_url` is left to kube's own builder
/// (which also reports a proxy kind this build cannot use); such a client
/// has no keepalive.
pub fn client_with_liveness(config: Config) -> Result<Client, Error> {
    if config.proxy_url.is_some() {
        return Client::try_from(config)
            .map_err(|e| Error::Kube(format!("creating the API client: {e}")));
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_keepalive(Some(KEEPALIVE_IDLE));
    http.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
    http.set_keepalive_retries(Some(KEEPALIVE_PROBES));
    http.set_tcp_user_timeout(Some(DEAD_AFTER));
    let https = config
        .rustls_https_connector_with_connector(http)
        .map_err(|e| Error::Kube(format!("creating the API client's TLS connector: {e}")))?;
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);

    let reach = Arc::new(Reachability::default());
    let observed = ServiceBuilder::new()
        .map_result(move |result: Result<Response<hyper::body::Incoming>, _>| {
            match &result {
                Ok(response) if response.status().is_server_error() => {
                    reach.failed(&format!("the API server answered {}", response.status()))
                }
                Ok(_) => reach.answered(),
                Err(error) => reach.failed(&crate::runtime::family::error_chain(error)),
            }
            let reach = reach.clone();
            result.map(|response| {
                response.map(move |body| {
                    body.map_err(move |error| {
                        reach.failed(&crate::runtime::family::error_chain(&error));
                        error
                    })
                })
            })
        })
        .service(hyper);

    let auth = config
        .auth_layer()
        .map_err(|e| Error::Kube(format!("setting up the API client's authentication: {e}")))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| Error::Kube(format!("setting up the API client's headers: {e}")))?;
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(auth)
        .layer(headers)
        .map_err(BoxError::from)
        .service(observed);
    Ok(Client::new(service, config.default_namespace))
}

fn parse_url(master: &str) -> Result<http::Uri, Error> {
    master
        .parse::<http::Uri>()
        .map_err(|e| Error::config("--master", format!("\"{master}\" is not a URL: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The hand-built stack keeps what kube's default one does: the base
    /// URI (with its path prefix), the bearer token, and a parsed answer.
    #[tokio::test]
    async fn the_stack_sends_credentials_to_the_configured_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/prefix", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client hung up");
                request.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[{"metadata":{"name":"web","namespace":"ns"}}]}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let mut config = Config::new(url.parse().unwrap());
        config.auth_info.token = Some("s3cret".to_string().into());
        let client = client_with_liveness(config).unwrap();
        let services = kube::Api::<Service>::all(client)
            .list(&Default::default())
            .await
            .unwrap();
        assert_eq!(services.items.len(), 1);
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("get /prefix/api/v1/services"),
            "{request}"
        );
        assert!(
            request.contains("authorization: bearer s3cret"),
            "{request}"
        );
    }

    /// The kernel's view of the client's connection (`/proc/net/tcp`): a
    /// keepalive timer (`tr` = 2) due in at most 30 s. The timer field is
    /// in `USER_HZ` ticks (100 per second).
    #[tokio::test]
    async fn connections_carry_a_30_s_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let mut request = Vec::new();
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[]}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            // Kept open: the client's connection stays in its pool.
            socket
        });
        let config = Config::new(format!("http://127.0.0.1:{server_port}").parse().unwrap());
        let client = client_with_liveness(config).unwrap();
        kube::Api::<Service>::all(client.clone())
            .list(&Default::default())
            .await
            .unwrap();
        let _server_side = server.await.unwrap();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let remote = format!("0100007F:{server_port:04X}");
        let timers: Vec<(u32, u64)> = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // The client's end: remote = the server, state 01 = ESTABLISHED.
                if fields.get(2) != Some(&remote.as_str()) || fields.get(3) != Some(&"01") {
                    return None;
                }
                let (tr, when) = fields.get(5)?.split_once(':')?;
                Some((
                    u32::from_str_radix(tr, 16).ok()?,
                    u64::from_str_radix(when, 16).ok()?,
                ))
            })
            .collect();
        assert_eq!(timers.len(), 1, "one client connection: {table}");
        let (timer, ticks) = timers[0];
        assert_eq!(timer, 2, "a keepalive timer runs: {table}");
        assert!(
            ticks <= 3000 && ticks > 2000,
            "first probe due in ~30 s, not {ticks} ticks"
        );
        drop(client);
    }
}
