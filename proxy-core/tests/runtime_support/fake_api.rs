//! A fake Kubernetes API server over real HTTP (axum on 127.0.0.1:0):
//! list and watch of Services, EndpointSlices and Nodes with
//! resourceVersions and bookmarks, plus dropped watches, `410 Gone` and
//! outages on demand. A watch from a resourceVersion first replays the
//! events after it, as the real API server's watch cache does.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

#[derive(Debug, Clone)]
enum WatchMessage {
    Event(Value),
    Close,
}

struct Resource {
    kind: &'static str,
    api_version: &'static str,
    items: BTreeMap<String, Value>,
    events: broadcast::Sender<WatchMessage>,
    gone_next_watch: bool,
    /// Every event sent, with its resourceVersion, for replays.
    history: Vec<(u64, Value)>,
}

struct State {
    rv: u64,
    resources: HashMap<&'static str, Resource>,
    down: bool,
}

/// The fake API server.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    /// Every request's path and query, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    slices_gate: Arc<watch::Sender<bool>>,
    pub addr: SocketAddr,
}

fn path_resource(path: &str) -> Option<&'static str> {
    match path {
        "/api/v1/services" => Some("services"),
        "/apis/discovery.k8s.io/v1/endpointslices" => Some("endpointslices"),
        "/api/v1/nodes" => Some("nodes"),
        _ => None,
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl FakeApi {
    /// Starts the server. The EndpointSlice list is held back until
    /// [`FakeApi::release_slices`] when `hold_slices`.
    pub async fn start(hold_slices: bool) -> FakeApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        FakeApi::start_on(listener, hold_slices)
    }

    /// Starts the server on `listener` (say, one bound inside a network
    /// namespace: accepted connections stay in the listener's namespace).
    /// Must be called within a tokio runtime.
    pub fn start_on(listener: std::net::TcpListener, hold_slices: bool) -> FakeApi {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut resources = HashMap::new();
        for (name, kind, api_version) in [
            ("services", "Service", "v1"),
            ("endpointslices", "EndpointSlice", "discovery.k8s.io/v1"),
            ("nodes", "Node", "v1"),
        ] {
            resources.insert(
                name,
                Resource {
                    kind,
                    api_version,
                    items: BTreeMap::new(),
                    events: broadcast::channel(1024).0,
                    gone_next_watch: false,
                    history: Vec::new(),
                },
            );
        }
        let api = FakeApi {
            state: Arc::new(Mutex::new(State {
                rv: 100,
                resources,
                down: false,
            })),
            requests: Arc::new(Mutex::new(Vec::new())),
            slices_gate: Arc::new(watch::channel(!hold_slices).0),
            addr: listener.local_addr().unwrap(),
        };
        let handler_api = api.clone();
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let api = handler_api.clone();
            async move { api.handle(uri).await }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        api
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for this server, built as the binary builds its own
    /// (keepalive, `TCP_USER_TIMEOUT`, outage log).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        proxy_core::runtime::source::client_with_liveness(config).unwrap()
    }

    pub fn release_slices(&self) {
        self.slices_gate.send_replace(true);
    }

    /// Adds or replaces an object and tells the watchers.
    pub fn apply(&self, resource: &str, object: impl serde::Serialize) {
        let mut object = serde_json::to_value(object).unwrap();
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let version = state.rv;
        let rv = version.to_string();
        object["metadata"]["resourceVersion"] = json!(rv);
        let r = state.resources.get_mut(resource).unwrap();
        object["kind"] = json!(r.kind);
        object["apiVersion"] = json!(r.api_version);
        let key = format!(
            "{}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap()
        );
        let kind = if r.items.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        r.items.insert(key, object.clone());
        let event = json!({"type": kind, "object": object});
        r.history.push((version, event.clone()));
        let _ = r.events.send(WatchMessage::Event(event));
    }

    /// Deletes an object and tells the watchers.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let version = state.rv;
        let rv = version.to_string();
        let r = state.resources.get_mut(resource).unwrap();
        if let Some(mut object) = r.items.remove(&format!("{namespace}/{name}")) {
            object["metadata"]["resourceVersion"] = json!(rv);
            let event = json!({"type": "DELETED", "object": object});
            r.history.push((version, event.clone()));
            let _ = r.events.send(WatchMessage::Event(event));
        }
    }

    /// Deletes an object without telling the watchers (it happened while
    /// they were away).
    pub fn delete_silently(&self, resource: &str, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        state
            .resources
            .get_mut(resource)
            .unwrap()
            .items
            .remove(&format!("{namespace}/{name}"));
    }

    /// Ends every open watch (the client re-watches from its last version).
    pub fn drop_watches(&self) {
        let state = self.state.lock().unwrap();
        for r in state.resources.values() {
            let _ = r.events.send(WatchMessage::Close);
        }
    }

    /// The next watch of every resource gets `410 Gone` (the client relists).
    pub fn expire_watches(&self) {
        let mut state = self.state.lock().unwrap();
        for r in state.resources.values_mut() {
            r.gone_next_watch = true;
        }
    }

    /// While down, every request fails with 503 and open watches end.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
        if down {
            self.drop_watches();
        }
    }

    /// The stored object `key` (`namespace/name`) of `resource`, as the
    /// server holds it.
    pub fn state_object(&self, resource: &str, key: &str) -> Value {
        self.state.lock().unwrap().resources[resource].items[key].clone()
    }

    pub fn requests_matching(&self, needle: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains(needle))
            .count()
    }

    async fn handle(&self, uri: Uri) -> Response {
        self.requests.lock().unwrap().push(uri.to_string());
        let query: HashMap<String, String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let Some(resource) = path_resource(uri.path()) else {
            return json_response(
                StatusCode::NOT_FOUND,
                &status(404, "NotFound", "no such path"),
            );
        };
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        if resource == "endpointslices" && !watching {
            let mut gate = self.slices_gate.subscribe();
            let _ = gate.wait_for(|open| *open).await;
        }
        let mut state = self.state.lock().unwrap();
        if state.down {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &status(503, "ServiceUnavailable", "down"),
            );
        }
        let rv = state.rv.to_string();
        let r = state.resources.get_mut(resource).unwrap();
        if !watching {
            let list = json!({
                "kind": format!("{}List", r.kind), "apiVersion": r.api_version,
                "metadata": {"resourceVersion": rv},
                "items": r.items.values().cloned().collect::<Vec<_>>(),
            });
            return json_response(StatusCode::OK, &list);
        }
        if std::mem::take(&mut r.gone_next_watch) {
            let gone = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(line(&gone)))
                .unwrap();
        }
        let bookmark = json!({"type": "BOOKMARK", "object": {"kind": r.kind, "apiVersion": r.api_version,
                                                             "metadata": {"resourceVersion": rv}}});
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        let mut opening: Vec<Value> = r
            .history
            .iter()
            .filter(|(version, _)| *version > from)
            .map(|(_, event)| event.clone())
            .collect();
        opening.push(bookmark);
        let stream = watch_body(opening, r.events.subscribe());
        drop(state);
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap()
    }
}

/// The watch body: the `opening` lines (replayed events, a bookmark), then
/// events until a `Close`.
fn watch_body(
    opening: Vec<Value>,
    receiver: broadcast::Receiver<WatchMessage>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    use futures::StreamExt;
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(WatchMessage::Event(event)) => return Some((Ok(line(&event)), receiver)),
                Ok(WatchMessage::Close) | Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
            }
        }
    });
    futures::stream::iter(opening.into_iter().map(|event| Ok(line(&event)))).chain(events)
}
