use std::sync::Arc;

use crate::config::ProxyMode;

use super::{Backend, BackendContext, BackendError};

/// Builds backends of one mode. Each backend crate exports one; the binary
/// lists them in a [`Registry`]. No registration by side effect.
#[async_trait::async_trait]
pub trait BackendFactory: Send + Sync {
    /// The mode this factory builds.
    fn mode(&self) -> ProxyMode;

    /// Whether this host can run the mode (tools, kernel features,
    /// privileges), with a clear reason when it cannot.
    async fn check(&self, ctx: &BackendContext) -> Result<(), BackendError>;

    /// One-time privileged set-up the mode needs (sysctls); also run by
    /// `--init-only`. The default does nothing.
    async fn privileged_init(&self, _ctx: &BackendContext) -> Result<(), BackendError> {
        Ok(())
    }

    /// Builds the backend for `ctx.family`. Must not touch the kernel: the
    /// first [`Backend::sync`] does. `--dry-run` builds backends this way
    /// without root.
    fn build(&self, ctx: &BackendContext) -> Result<Box<dyn Backend>, BackendError>;

    /// Removes what this mode may have left behind for `ctx.family`, without
    /// a backend value: on start-up of another mode, and for `--cleanup`.
    async fn cleanup_leftovers(&self, ctx: &BackendContext) -> Result<(), BackendError>;
}

/// The explicit list of backend factories compiled into a binary.
#[derive(Default, Clone)]
pub struct Registry {
    factories: Vec<Arc<dyn BackendFactory>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a factory (a later one for the same mode replaces it).
    pub fn with(mut self, factory: impl BackendFactory + 'static) -> Self {
        let mode = factory.mode();
        self.factories.retain(|f| f.mode() != mode);
        self.factories.push(Arc::new(factory));
        self
    }

    /// The factory of `mode`, if registered.
    pub fn get(&self, mode: ProxyMode) -> Option<&Arc<dyn BackendFactory>> {
        self.factories.iter().find(|f| f.mode() == mode)
    }

    /// Every registered factory.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn BackendFactory>> {
        self.factories.iter()
    }

    /// The registered modes, in registration order.
    pub fn modes(&self) -> Vec<ProxyMode> {
        self.factories.iter().map(|f| f.mode()).collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("modes", &self.modes())
            .finish()
    }
}
