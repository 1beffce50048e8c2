//! [`ConntrackTable`]: access to a conntrack table, behind a trait so the
//! cleanup logic runs against a fake in tests.

use std::io;

use crate::model::IpFamily;

use super::entry::ConntrackEntry;

/// A conntrack table: list one family's entries, delete one entry.
///
/// Blocking; the cleaner calls it from a blocking task.
pub trait ConntrackTable: Send + 'static {
    /// Every entry of `family` (all protocols).
    fn list(&mut self, family: IpFamily) -> io::Result<Vec<ConntrackEntry>>;

    /// Deletes the entry with `entry`'s original tuple. Deleting an entry
    /// that is already gone is not an error.
    fn delete(&mut self, entry: &ConntrackEntry) -> io::Result<()>;
}

impl<T: ConntrackTable + ?Sized> ConntrackTable for Box<T> {
    fn list(&mut self, family: IpFamily) -> io::Result<Vec<ConntrackEntry>> {
        (**self).list(family)
    }

    fn delete(&mut self, entry: &ConntrackEntry) -> io::Result<()> {
        (**self).delete(entry)
    }
}
