//! [`Clock`]: where health and metrics read the wall-clock time, so tests
//! can control it.

use std::sync::Arc;
use std::time::SystemTime;

/// A source of wall-clock time.
///
/// [`SystemClock`] reads the system clock; any `Fn() -> SystemTime` closure
/// is a clock too, which is how tests drive time by hand.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl<F> Clock for F
where
    F: Fn() -> SystemTime + Send + Sync + 'static,
{
    fn now(&self) -> SystemTime {
        self()
    }
}

/// The system clock, shared.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
