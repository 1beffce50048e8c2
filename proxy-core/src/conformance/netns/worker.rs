//! [`NetnsBackend`]: a backend living on a worker thread inside a
//! namespace, reached through channels.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, BackendContext, BackendError, Capabilities, SyncStats};
use crate::changes::ChangeSet;
use crate::config::ProxyMode;
use crate::view::NodeView;

use super::topology::NodeTopology;

/// Builds the backend under test for a scenario's context.
pub type MakeBackend =
    dyn Fn(&BackendContext) -> Result<Box<dyn Backend>, BackendError> + Send + Sync;

enum Request {
    Sync {
        view: NodeView,
        changes: ChangeSet,
        reply: oneshot::Sender<Result<SyncStats, BackendError>>,
    },
    Cleanup {
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    DataplaneLost {
        reply: oneshot::Sender<bool>,
    },
    Render {
        view: NodeView,
        reply: std_mpsc::Sender<Result<String, BackendError>>,
    },
}

/// The backend under test, acting inside the node namespace of a
/// [`NodeTopology`].
///
/// The real backend is built and driven on a dedicated thread that entered
/// the node namespace, inside a current-thread tokio runtime that keeps
/// running between calls: tasks it spawns and sockets it binds (the
/// userspace proxy) work, and commands it runs (`iptables-restore`,
/// `nft`) inherit the namespace. Calls are forwarded over channels with a
/// clone of the view and change set.
///
/// Before forwarding a `sync`, the topology grows for the view (pods and
/// echo servers for its endpoints, routes for its VIPs).
///
/// Dropping it stops the worker (dropping the real backend, without
/// `cleanup`: the namespace takes everything with it) and joins it.
pub struct NetnsBackend {
    requests: Option<mpsc::UnboundedSender<Request>>,
    worker: Option<JoinHandle<std::io::Result<()>>>,
    mode: ProxyMode,
    capabilities: Capabilities,
    // After the worker: the worker thread sits in the node namespace.
    topology: NodeTopology,
}

impl NetnsBackend {
    /// Starts a worker in `topology`'s node namespace and builds the
    /// backend there with `make_backend(ctx)`.
    pub fn start(
        topology: NodeTopology,
        ctx: &BackendContext,
        make_backend: std::sync::Arc<MakeBackend>,
    ) -> Result<Self, BackendError> {
        let (requests, receiver) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let ctx = ctx.clone();
        let body = move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(BackendError::unsupported(
                        "cannot build the worker runtime",
                    )
                    .with_source(e)));
                    return;
                }
            };
            // Built inside the runtime, so a backend may spawn in its constructor.
            let built = runtime.block_on(async { make_backend(&ctx) });
            let backend = match built {
                Ok(backend) => {
                    let _ = ready_tx.send(Ok((backend.mode(), backend.capabilities())));
                    backend
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(serve(backend, receiver));
        };
        let worker = topology.node().spawn("netns-backend", body).map_err(|e| {
            BackendError::unsupported("cannot start the backend worker thread").with_source(e)
        })?;
        let (mode, capabilities) = match ready_rx.recv() {
            Ok(ready) => ready?,
            // The worker ended without a word: it could not enter the
            // namespace, or the backend's constructor panicked.
            Err(_) => {
                return Err(match worker.join() {
                    Ok(Err(e)) => BackendError::unsupported(
                        "the backend worker cannot enter the node namespace",
                    )
                    .with_source(e),
                    _ => BackendError::dataplane(
                        "the backend worker died while building the backend",
                    ),
                });
            }
        };
        Ok(NetnsBackend {
            requests: Some(requests),
            worker: Some(worker),
            mode,
            capabilities,
            topology,
        })
    }

    /// The topology the backend acts in.
    pub fn topology(&self) -> &NodeTopology {
        &self.topology
    }

    /// The topology, mutably (to grow it or prepare clients).
    pub fn topology_mut(&mut self) -> &mut NodeTopology {
        &mut self.topology
    }

    fn request(&self, request: Request) -> Result<(), BackendError> {
        self.requests
            .as_ref()
            .and_then(|r| r.send(request).ok())
            .ok_or_else(worker_gone)
    }
}

fn worker_gone() -> BackendError {
    BackendError::dataplane("the backend worker thread is gone (the backend panicked?)")
}

async fn serve(mut backend: Box<dyn Backend>, mut requests: mpsc::UnboundedReceiver<Request>) {
    while let Some(request) = requests.recv().await {
        match request {
            Request::Sync {
                view,
                changes,
                reply,
            } => {
                let _ = reply.send(backend.sync(&view, &changes).await);
            }
            Request::Cleanup { reply } => {
                let _ = reply.send(backend.cleanup().await);
            }
            Request::DataplaneLost { reply } => {
                let _ = reply.send(backend.dataplane_lost().await);
            }
            Request::Render { view, reply } => {
                let _ = reply.send(backend.render(&view));
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for NetnsBackend {
    fn mode(&self) -> ProxyMode {
        self.mode
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn sync(
        &mut self,
        view: &NodeView,
        changes: &ChangeSet,
    ) -> Result<SyncStats, BackendError> {
        self.topology.grow(view)?;
        let (reply, answer) = oneshot::channel();
        self.request(Request::Sync {
            view: view.clone(),
            changes: changes.clone(),
            reply,
        })?;
        answer.await.map_err(|_| worker_gone())?
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        let (reply, answer) = oneshot::channel();
        self.request(Request::Cleanup { reply })?;
        answer.await.map_err(|_| worker_gone())?
    }

    async fn dataplane_lost(&mut self) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.request(Request::DataplaneLost { reply }).is_err() {
            return true;
        }
        answer.await.unwrap_or(true)
    }

    fn render(&self, view: &NodeView) -> Result<String, BackendError> {
        // A std channel: blocking on it is allowed inside an async context
        // (the worker is another thread, so this cannot deadlock).
        let (reply, answer) = std_mpsc::channel();
        self.request(Request::Render {
            view: view.clone(),
            reply,
        })?;
        answer.recv().map_err(|_| worker_gone())?
    }
}

impl Drop for NetnsBackend {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; its runtime and the
        // real backend are dropped on the worker thread.
        self.requests.take();
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::warn!("the backend worker panicked");
        }
    }
}
