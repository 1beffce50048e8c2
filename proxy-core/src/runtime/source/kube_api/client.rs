//! The API client from `clientConnection`, `--kubeconfig` and `--master`.

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

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
    Client::try_from(client_config)
        .map_err(|e| Error::Kube(format!("creating the API client: {e}")))
}

fn parse_url(master: &str) -> Result<http::Uri, Error> {
    master
        .parse::<http::Uri>()
        .map_err(|e| Error::config("--master", format!("\"{master}\" is not a URL: {e}")))
}
