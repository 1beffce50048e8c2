use std::fmt;

/// What kind of failure a [`BackendError`] is: for logs and metrics (only
/// failed writes to the dataplane count as restore/sync failures). Whatever
/// the kind, the runtime keeps the pending changes and retries with back-off
/// as a full sync, as upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendErrorKind {
    /// May succeed if retried (lock contention, a busy kernel).
    Transient,
    /// This host cannot run the backend (missing tool, kernel feature or
    /// privilege).
    Unsupported,
    /// The configuration asks for something the backend cannot do.
    Config,
    /// The dataplane rejected what the backend wrote.
    Dataplane,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendErrorKind::Transient => "transient",
            BackendErrorKind::Unsupported => "unsupported",
            BackendErrorKind::Config => "config",
            BackendErrorKind::Dataplane => "dataplane",
        })
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every [`Backend`](super::Backend): a kind, a message, and
/// the backend's own error as `source`.
#[derive(Debug, thiserror::Error)]
#[error("{kind} error: {message}")]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
    #[source]
    source: Option<Source>,
}

impl BackendError {
    /// An error of `kind` with `message`.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the backend's own error.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A [`BackendErrorKind::Transient`] error.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Transient, message)
    }

    /// A [`BackendErrorKind::Unsupported`] error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Unsupported, message)
    }

    /// A [`BackendErrorKind::Config`] error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Config, message)
    }

    /// A [`BackendErrorKind::Dataplane`] error.
    pub fn dataplane(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Dataplane, message)
    }

    /// The kind.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }
}
