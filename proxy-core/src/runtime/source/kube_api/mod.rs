//! [`KubeSource`]: Services, EndpointSlices and this Node from the API server.

mod client;
pub mod liveness;
mod prune;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::{Expression, Selector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::error::ObjectKind;
use crate::topology::{LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME};

use super::{Source, SourceEvent, Update};

pub use client::{client_from_config, client_with_liveness};

/// Upstream's selector for Services and EndpointSlices:
/// `!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`.
/// Any value of `service-proxy-name` means another proxy handles the object.
pub fn proxy_label_selector() -> Selector {
    Selector::from_iter([
        Expression::DoesNotExist(LABEL_SERVICE_PROXY_NAME.into()),
        Expression::DoesNotExist(LABEL_HEADLESS.into()),
    ])
}

/// Objects per list request for Services and EndpointSlices (kube-rs and
/// client-go use 500). The watcher decodes a whole page, `managedFields`
/// and all, before it hands out the first object, and holds it while the
/// page drains: that page (with the response body's copies) is what a
/// relist costs beyond the steady state once objects are applied on
/// arrival. Measured with the end-to-end bench (iptables, 3,000 Services
/// × 10): relist peak 1.60× the steady RSS with 500, 1.11× with 100
/// (nftables, 10,000 × 10: 1.24× → 1.08×, the cold start's peak 231 →
/// 209 MiB), the lists no slower against the bench's local server; a real
/// API server answers 5× the requests (1,000 per kind at 100k Services).
const LIST_PAGE_SIZE: u32 = 100;

/// How [`KubeSource`] watches.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// This node's name: its Node object is watched (field selector
    /// `metadata.name=<name>`).
    pub node_name: String,
}

/// Watches Services and EndpointSlices (with [`proxy_label_selector`]) and
/// this Node, with kube-rs watchers.
///
/// A watcher relists after a `410 Gone` and re-watches after a dropped
/// connection, retrying with [`liveness::WatchBackoff`] (1 s doubling to
/// 5 s) while the API server is unreachable; meanwhile nothing is deleted,
/// so the rules stay in place. Errors are logged here and never reach the
/// runtime. A silently dead connection is noticed within 45 s when the
/// client comes from [`client_from_config`] or [`client_with_liveness`]
/// (see [`liveness`]).
///
/// Objects lose what the proxy never reads (managed fields, most
/// annotations, a Node's status beyond its addresses) as soon as they are
/// decoded, so neither the world nor a relist holds them.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    options: KubeSourceOptions,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source reading through `client`.
    pub fn new(client: Client, options: KubeSourceOptions) -> Self {
        KubeSource { client, options }
    }
}

fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    prune: fn(&mut K),
    wrap: fn(Update<K>) -> SourceEvent,
) -> impl Stream<Item = SourceEvent> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    // Whether the last item was an error: only the first of a streak is
    // worth a warning (the back-off retries every few seconds).
    let mut failing = false;
    watcher(api, config)
        .modify(prune)
        .backoff(liveness::WatchBackoff::default())
        .filter_map(move |event| std::future::ready(forward(&kind, event, &mut failing, wrap)))
}

/// One watcher item as a [`SourceEvent`]; errors are logged and dropped.
fn forward<K>(
    kind: &str,
    event: Result<watcher::Event<K>, watcher::Error>,
    failing: &mut bool,
    wrap: fn(Update<K>) -> SourceEvent,
) -> Option<SourceEvent> {
    let update = match event {
        Ok(watcher::Event::Init) => {
            tracing::debug!(%kind, "listing");
            Update::Init
        }
        Ok(watcher::Event::InitApply(object)) => Update::InitApply(object),
        Ok(watcher::Event::InitDone) => {
            tracing::debug!(%kind, "list complete");
            Update::InitDone
        }
        Ok(watcher::Event::Apply(object)) => Update::Apply(object),
        Ok(watcher::Event::Delete(object)) => Update::Delete(object),
        Err(error) => {
            let error_text = crate::runtime::family::error_chain(&error);
            let what = "watch failed; retrying with back-off, rules stay in place";
            if matches!(&error, watcher::Error::WatchError(status) if status.code == 410) {
                tracing::debug!(%kind, error = %error_text, "resource version expired; relisting");
            } else if *failing || liveness::is_unreachable(&error) {
                // Repeats, and outages (the client logs those once).
                tracing::debug!(%kind, error = %error_text, "{what}");
            } else {
                tracing::warn!(%kind, error = %error_text, "{what}");
            }
            *failing = true;
            return None;
        }
    };
    *failing = false;
    Some(wrap(update))
}

impl Source for KubeSource {
    fn kinds(&self) -> Vec<ObjectKind> {
        vec![
            ObjectKind::Service,
            ObjectKind::EndpointSlice,
            ObjectKind::Node,
        ]
    }

    fn events(self: Box<Self>) -> BoxStream<'static, SourceEvent> {
        let selected = watcher::Config::default()
            .page_size(LIST_PAGE_SIZE)
            .labels_from(&proxy_label_selector());
        let services = watch(
            Api::<Service>::all(self.client.clone()),
            selected.clone(),
            prune::service,
            SourceEvent::Service,
        );
        let slices = watch(
            Api::<EndpointSlice>::all(self.client.clone()),
            selected,
            prune::endpoint_slice,
            SourceEvent::EndpointSlice,
        );
        let node = watch(
            Api::<Node>::all(self.client),
            watcher::Config::default().fields(&format!("metadata.name={}", self.options.node_name)),
            prune::node,
            SourceEvent::Node,
        );
        futures::stream::select_all([services.boxed(), slices.boxed(), node.boxed()]).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_is_upstreams() {
        assert_eq!(
            proxy_label_selector().to_string(),
            "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
        );
    }
}
