//! A lean fake Kubernetes API server for the benchmarks (axum over real
//! HTTP): list and watch of Services, EndpointSlices and Nodes as the e2e
//! bench needs them, at 100,000 Services in a few tens of MiB.
//!
//! Unlike the runtime tests' server (`proxy-core/tests/runtime_support/
//! fake_api.rs`, which keeps every object and every event as a
//! `serde_json::Value`: ~9 GiB at 30k Services × 10 endpoints), objects are
//! kept compactly ([`Object`]: a name, a ClusterIP, a node port, the
//! endpoints' addresses) and rendered on the fly to the JSON a real API
//! server sends (uid, creationTimestamp, labels, `managedFields` with a
//! `fieldsV1` naming every endpoint, `targetRef` per endpoint).
//!
//! As the real API server:
//! - a list honours `limit` and `continue` (kube's watcher asks for pages
//!   of 500): every page carries the resourceVersion of the first one and
//!   a `continue` token while items remain; a list without `limit` is one
//!   response, streamed in chunks as it is rendered;
//! - a watch from a resourceVersion first replays the events after it,
//!   then sends a `BOOKMARK` (and one a minute when
//!   `allowWatchBookmarks=true`), then the events as they happen, and ends
//!   after `timeoutSeconds`;
//! - [`LeanApi::expire_watches`] makes the next watch of every resource
//!   answer `410 Gone` (the client relists), [`LeanApi::drop_watches`] ends
//!   the open ones.
//!
//! Simplifications: pages after the first are read from the current state,
//! not from a snapshot at the first page's version (the bench does not
//! change objects while the proxy lists); label and field selectors are
//! ignored (every object matches the proxy's).
#![allow(dead_code)] // each bench uses a subset

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use tokio::sync::broadcast;

/// The namespace of every Service and EndpointSlice.
pub const NS: &str = "bench";
/// Items per chunk of a list streamed without `limit`.
const STREAM_CHUNK: usize = 256;
/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// One object, as compactly as the bench needs it.
#[derive(Debug, Clone)]
pub enum Object {
    /// A Service with one TCP port 80 → 8080; with a node port it is a
    /// LoadBalancer whose ingress IP is 198.18.<ClusterIP's last two octets>.
    Service {
        name: Box<str>,
        cluster_ip: Ipv4Addr,
        node_port: Option<u16>,
    },
    /// The EndpointSlice `<service>-e2e` of `service`: one ready endpoint
    /// on `node-b` per address, port 8080.
    Slice {
        service: Box<str>,
        ips: Box<[Ipv4Addr]>,
    },
    /// A Node with one InternalIP.
    Node { name: Box<str>, ip: Ipv4Addr },
}

/// The three resources served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Services,
    EndpointSlices,
    Nodes,
}

impl Resource {
    fn from_path(path: &str) -> Option<Resource> {
        match path {
            "/api/v1/services" => Some(Resource::Services),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Resource::EndpointSlices),
            "/api/v1/nodes" => Some(Resource::Nodes),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Resource::Services => "Service",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Nodes => "Node",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }
}

impl Object {
    /// A Service (a LoadBalancer when it has a node port).
    pub fn service(name: &str, cluster_ip: Ipv4Addr, node_port: Option<u16>) -> Object {
        Object::Service {
            name: name.into(),
            cluster_ip,
            node_port,
        }
    }

    /// The EndpointSlice of Service `service` with these endpoints.
    pub fn slice(service: &str, ips: &[Ipv4Addr]) -> Object {
        Object::Slice {
            service: service.into(),
            ips: ips.into(),
        }
    }

    /// A Node.
    pub fn node(name: &str, ip: Ipv4Addr) -> Object {
        Object::Node {
            name: name.into(),
            ip,
        }
    }

    /// The resource this object belongs to.
    pub fn resource(&self) -> Resource {
        match self {
            Object::Service { .. } => Resource::Services,
            Object::Slice { .. } => Resource::EndpointSlices,
            Object::Node { .. } => Resource::Nodes,
        }
    }

    /// `namespace/name` (`/name` for a Node).
    fn key(&self) -> String {
        match self {
            Object::Service { name, .. } => format!("{NS}/{name}"),
            Object::Slice { service, .. } => format!("{NS}/{service}-e2e"),
            Object::Node { name, .. } => format!("/{name}"),
        }
    }

    /// The object's JSON at resourceVersion `rv`, appended to `out`.
    fn render(&self, rv: u64, out: &mut Vec<u8>) {
        let resource = self.resource();
        write!(
            out,
            r#"{{"kind":"{}","apiVersion":"{}","metadata":"#,
            resource.kind(),
            resource.api_version()
        )
        .unwrap();
        match self {
            Object::Service {
                name,
                cluster_ip,
                node_port,
            } => {
                metadata(
                    out,
                    name,
                    rv,
                    "kubectl-client-side-apply",
                    &[("app", name), ("app.kubernetes.io/managed-by", "e2e-bench")],
                    ["f:ports", "f:selector", "f:type"]
                        .into_iter()
                        .map(|f| move |out: &mut Vec<u8>| write!(out, "{f}").unwrap()),
                );
                let kind = if node_port.is_some() {
                    "LoadBalancer"
                } else {
                    "ClusterIP"
                };
                write!(
                    out,
                    r#","spec":{{"type":"{kind}","clusterIP":"{cluster_ip}","selector":{{"app":"{name}"}},"sessionAffinity":"None","internalTrafficPolicy":"Cluster","ipFamilyPolicy":"SingleStack","clusterIPs":["{cluster_ip}"],"ipFamilies":["IPv4"],"ports":[{{"name":"http","port":80,"protocol":"TCP","targetPort":8080"#
                )
                .unwrap();
                if let Some(node_port) = node_port {
                    let [_, _, c, d] = cluster_ip.octets();
                    write!(
                        out,
                        r#","nodePort":{node_port}}}]}},"status":{{"loadBalancer":{{"ingress":[{{"ip":"198.18.{c}.{d}"}}]}}}}}}"#
                    )
                    .unwrap();
                } else {
                    out.extend_from_slice(b"}]}}");
                }
            }
            Object::Slice { service, ips } => {
                let name = format!("{service}-e2e");
                metadata(
                    out,
                    &name,
                    rv,
                    "endpointslice-controller.k8s.io",
                    &[
                        ("kubernetes.io/service-name", service),
                        (
                            "endpointslice.kubernetes.io/managed-by",
                            "endpointslice-controller.k8s.io",
                        ),
                    ],
                    ips.iter().map(|ip| {
                        move |out: &mut Vec<u8>| {
                            write!(out, r#"k:{{\"addresses\":[\"{ip}\"]}}"#).unwrap();
                        }
                    }),
                );
                out.extend_from_slice(
                    br#","addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP"}],"endpoints":["#,
                );
                for (k, ip) in ips.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    write!(
                        out,
                        r#"{{"addresses":["{ip}"],"conditions":{{"ready":true,"serving":true,"terminating":false}},"nodeName":"node-b","targetRef":{{"kind":"Pod","namespace":"{NS}","name":"{service}-pod-{k}","uid":"{:032x}"}}}}"#,
                        u32::from(*ip)
                    )
                    .unwrap();
                }
                out.extend_from_slice(b"]}");
            }
            Object::Node { name, ip } => {
                write!(
                    out,
                    r#"{{"name":"{name}","resourceVersion":"{rv}"}},"status":{{"addresses":[{{"type":"InternalIP","address":"{ip}"}}]}}}}"#
                )
                .unwrap();
            }
        }
    }
}

/// Metadata as a real API server sends it: uid, creation time, labels and
/// one `managedFields` entry whose `fieldsV1` names every field written by
/// `fields` (as the real one lists every endpoint address of a slice).
fn metadata<F: FnOnce(&mut Vec<u8>)>(
    out: &mut Vec<u8>,
    name: &str,
    rv: u64,
    manager: &str,
    labels: &[(&str, &str)],
    fields: impl Iterator<Item = F>,
) {
    let uid = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (name, manager).hash(&mut h);
        h.finish()
    };
    write!(
        out,
        r#"{{"namespace":"{NS}","name":"{name}","uid":"{uid:032x}","generation":1,"resourceVersion":"{rv}","creationTimestamp":"2026-12-01T10:00:00Z","labels":{{"#
    )
    .unwrap();
    for (k, (key, value)) in labels.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write!(out, r#""{key}":"{value}""#).unwrap();
    }
    write!(
        out,
        r#"}},"managedFields":[{{"manager":"{manager}","operation":"Update","apiVersion":"v1","time":"2026-12-01T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:labels":{{".":{{}},"f:app":{{}}}}}},"f:spec":{{"#
    )
    .unwrap();
    for (k, field) in fields.enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.push(b'"');
        field(out);
        out.extend_from_slice(br#"":{".":{},"f:conditions":{".":{},"f:ready":{}}}"#);
    }
    out.extend_from_slice(b"}}}]}");
}

#[derive(Debug, Clone, Copy)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One watch event line (`{"type":...,"object":...}\n`).
fn event_line(kind: EventType, object: &Object, rv: u64) -> Bytes {
    let mut out = Vec::with_capacity(4096);
    write!(out, r#"{{"type":"{}","object":"#, kind.name()).unwrap();
    object.render(rv, &mut out);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark_line(resource: Resource, rv: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}}}}}}\n",
        resource.kind(),
        resource.api_version()
    ))
}

#[derive(Debug, Clone)]
enum WatchMessage {
    /// An event line, with the resourceVersion it carries.
    Event(u64, Bytes),
    Close,
}

struct Stored {
    rv: u64,
    object: Arc<Object>,
}

struct Collection {
    items: BTreeMap<String, Stored>,
    events: broadcast::Sender<WatchMessage>,
    gone_next_watch: bool,
    /// Every event, compactly (rendered again on a replay).
    history: Vec<(u64, EventType, Arc<Object>)>,
}

struct State {
    rv: u64,
    collections: HashMap<Resource, Collection>,
}

/// The lean fake API server.
#[derive(Clone)]
pub struct LeanApi {
    state: Arc<Mutex<State>>,
    /// Every request's path and query, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
}

/// A Kubernetes `Status` failure.
fn status(code: u16, reason: &str, message: &str) -> String {
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{message}","reason":"{reason}","code":{code}}}"#
    )
}

fn json_response(code: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The `continue` token: the list's resourceVersion and the last key sent.
fn continue_token(rv: u64, last_key: &str) -> String {
    format!("{rv:x}.{}", hex(last_key.as_bytes()))
}

fn parse_continue(token: &str) -> Option<(u64, String)> {
    let (rv, key) = token.split_once('.')?;
    Some((u64::from_str_radix(rv, 16).ok()?, unhex(key)?))
}

impl LeanApi {
    /// Starts the server on `listener` (say, one bound inside a network
    /// namespace: accepted connections stay in the listener's namespace).
    /// Must be called within a tokio runtime.
    pub fn start_on(listener: std::net::TcpListener) -> LeanApi {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let collections = [
            Resource::Services,
            Resource::EndpointSlices,
            Resource::Nodes,
        ]
        .into_iter()
        .map(|r| {
            (
                r,
                Collection {
                    items: BTreeMap::new(),
                    events: broadcast::channel(1024).0,
                    gone_next_watch: false,
                    history: Vec::new(),
                },
            )
        })
        .collect();
        let api = LeanApi {
            state: Arc::new(Mutex::new(State {
                rv: 100,
                collections,
            })),
            requests: Arc::new(Mutex::new(Vec::new())),
            addr: listener.local_addr().unwrap(),
        };
        api.serve(listener);
        api
    }

    /// Serves the same objects on `listener` too (say, one bound in a
    /// second namespace, for a second proxy); its address. Must be called
    /// within a tokio runtime.
    pub fn serve_on(&self, listener: std::net::TcpListener) -> SocketAddr {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        self.serve(listener);
        addr
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let handler_api = self.clone();
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let api = handler_api.clone();
            async move { api.handle(uri) }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds or replaces an object and tells the watchers.
    pub fn apply(&self, object: Object) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        let c = state.collections.get_mut(&object.resource()).unwrap();
        let object = Arc::new(object);
        let previous = c.items.insert(
            object.key(),
            Stored {
                rv,
                object: object.clone(),
            },
        );
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        if c.events.receiver_count() > 0 {
            let _ = c
                .events
                .send(WatchMessage::Event(rv, event_line(kind, &object, rv)));
        }
        c.history.push((rv, kind, object));
    }

    /// Deletes an object and tells the watchers.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        let c = state.collections.get_mut(&resource).unwrap();
        if let Some(stored) = c.items.remove(&format!("{namespace}/{name}")) {
            if c.events.receiver_count() > 0 {
                let line = event_line(EventType::Deleted, &stored.object, rv);
                let _ = c.events.send(WatchMessage::Event(rv, line));
            }
            c.history.push((rv, EventType::Deleted, stored.object));
        }
    }

    /// Ends every open watch (the client re-watches from its last version).
    pub fn drop_watches(&self) {
        let state = self.state.lock().unwrap();
        for c in state.collections.values() {
            let _ = c.events.send(WatchMessage::Close);
        }
    }

    /// The next watch of every resource gets `410 Gone` (the client relists).
    pub fn expire_watches(&self) {
        let mut state = self.state.lock().unwrap();
        for c in state.collections.values_mut() {
            c.gone_next_watch = true;
        }
    }

    /// Renders up to `max` items of `resource` after `after` into `out`
    /// (comma-separated); returns the last key rendered and whether more
    /// items follow it.
    fn render_items(
        &self,
        resource: Resource,
        after: Option<&str>,
        max: usize,
        first: bool,
        out: &mut Vec<u8>,
    ) -> (Option<String>, bool) {
        let state = self.state.lock().unwrap();
        let items = &state.collections[&resource].items;
        let lower = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.to_string()));
        let mut range = items.range::<String, _>((lower, Bound::Unbounded));
        let mut last = None;
        for (k, (key, stored)) in range.by_ref().take(max).enumerate() {
            if k > 0 || !first {
                out.push(b',');
            }
            stored.object.render(stored.rv, out);
            last = Some(key);
        }
        let more = range.next().is_some();
        (last.cloned(), more)
    }

    fn handle(&self, uri: Uri) -> Response {
        self.requests.lock().unwrap().push(uri.to_string());
        let query: HashMap<&str, &str> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let Some(resource) = Resource::from_path(uri.path()) else {
            return json_response(
                StatusCode::NOT_FOUND,
                status(404, "NotFound", "no such path"),
            );
        };
        if query
            .get("watch")
            .is_some_and(|w| *w == "true" || *w == "1")
        {
            return self.watch(resource, &query);
        }
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(0);
        let (rv, after) = match query.get("continue") {
            Some(token) => match parse_continue(token) {
                Some((rv, key)) => (rv, Some(key)),
                None => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        status(400, "BadRequest", "invalid continue token"),
                    );
                }
            },
            None => (self.state.lock().unwrap().rv, None),
        };
        let head = format!(
            r#"{{"kind":"{}List","apiVersion":"{}","metadata":{{"resourceVersion":"{rv}""#,
            resource.kind(),
            resource.api_version()
        );
        if limit > 0 {
            // One page; its metadata (the continue token) is known once the
            // items are rendered.
            let mut items = Vec::with_capacity(limit * 2048);
            let (last, more) =
                self.render_items(resource, after.as_deref(), limit, true, &mut items);
            let mut body = Vec::with_capacity(items.len() + 256);
            body.extend_from_slice(head.as_bytes());
            if let (true, Some(last)) = (more, last) {
                write!(body, r#","continue":"{}""#, continue_token(rv, &last)).unwrap();
            }
            body.extend_from_slice(br#"},"items":["#);
            body.extend_from_slice(&items);
            body.extend_from_slice(b"]}");
            return json_response(StatusCode::OK, body);
        }
        // The whole list, streamed in chunks as it is rendered.
        let api = self.clone();
        let opening = Bytes::from(format!(r#"{head}}},"items":["#));
        let chunks = futures::stream::unfold(
            (api, after, true, false),
            move |(api, after, first, done)| async move {
                if done {
                    return None;
                }
                let mut out = Vec::with_capacity(STREAM_CHUNK * 2048);
                let (last, more) =
                    api.render_items(resource, after.as_deref(), STREAM_CHUNK, first, &mut out);
                if !more {
                    out.extend_from_slice(b"]}");
                }
                let after = last.or(after);
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(out)),
                    (api, after, false, !more),
                ))
            },
        );
        use futures::StreamExt;
        let body = futures::stream::once(async move { Ok(opening) }).chain(chunks);
        json_response(StatusCode::OK, Body::from_stream(body))
    }

    fn watch(&self, resource: Resource, query: &HashMap<&str, &str>) -> Response {
        let mut state = self.state.lock().unwrap();
        let rv = state.rv;
        let c = state.collections.get_mut(&resource).unwrap();
        if std::mem::take(&mut c.gone_next_watch) {
            let gone = format!(
                "{{\"type\":\"ERROR\",\"object\":{}}}\n",
                status(410, "Expired", "too old resource version")
            );
            return json_response(StatusCode::OK, gone);
        }
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .unwrap_or(u64::MAX);
        let start = c.history.partition_point(|(v, _, _)| *v <= from);
        let mut opening: Vec<Bytes> = c.history[start..]
            .iter()
            .map(|(v, kind, object)| event_line(*kind, object, *v))
            .collect();
        opening.push(bookmark_line(resource, rv));
        let receiver = c.events.subscribe();
        drop(state);
        let bookmarks = query.get("allowWatchBookmarks") == Some(&"true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs);
        let body = watch_body(resource, rv, opening, receiver, bookmarks, timeout);
        json_response(StatusCode::OK, Body::from_stream(body))
    }
}

/// The watch body: the `opening` lines (replayed events, a bookmark), then
/// events (and a bookmark a minute when `bookmarks`) until a `Close` or
/// `timeout`.
fn watch_body(
    resource: Resource,
    rv: u64,
    opening: Vec<Bytes>,
    receiver: broadcast::Receiver<WatchMessage>,
    bookmarks: bool,
    timeout: Option<Duration>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    use futures::StreamExt;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.reset();
    let events = futures::stream::unfold(
        (receiver, rv, tick),
        move |(mut receiver, mut rv, mut tick)| async move {
            loop {
                let expired = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    message = receiver.recv() => match message {
                        Ok(WatchMessage::Event(v, line)) => {
                            rv = v;
                            return Some((Ok(line), (receiver, rv, tick)));
                        }
                        Ok(WatchMessage::Close) | Err(broadcast::error::RecvError::Closed) => {
                            return None;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    },
                    _ = tick.tick(), if bookmarks => {
                        return Some((Ok(bookmark_line(resource, rv)), (receiver, rv, tick)));
                    }
                    () = expired => return None,
                }
            }
        },
    );
    futures::stream::iter(opening.into_iter().map(Ok)).chain(events)
}
