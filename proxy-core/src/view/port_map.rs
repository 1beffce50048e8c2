//! [`PortMap`]: the sorted map of a [`NodeView`](super::NodeView), cheap to
//! clone and to change one entry of.
//!
//! The change tracker clones the last synced view and recomputes a few
//! services in the clone. With a plain `BTreeMap` that clone costs one copy of
//! every key (two `String`s each); here the entries live in shared chunks of
//! at most [`MAX_CHUNK`] views, sorted across chunks, so a clone copies one
//! pointer per chunk and a change copies one chunk (pointers only).

use std::fmt;
use std::sync::Arc;

use crate::model::ServicePortName;

use super::port_view::ServicePortView;

/// Chunk length after a bulk build or a split.
const CHUNK: usize = 64;
/// A chunk longer than this is split in two.
const MAX_CHUNK: usize = 2 * CHUNK;

type Chunk = Arc<Vec<Arc<ServicePortView>>>;

fn key(view: &ServicePortView) -> &ServicePortName {
    &view.port.name
}

/// Service port views sorted by [`ServicePortName`], keyed by their own
/// `port.name`.
#[derive(Clone, Default)]
pub(crate) struct PortMap {
    chunks: Vec<Chunk>,
    len: usize,
}

impl PortMap {
    /// A map of `views`, which must be sorted by name without duplicates.
    pub(crate) fn from_sorted(views: Vec<Arc<ServicePortView>>) -> Self {
        let len = views.len();
        let chunks = views.chunks(CHUNK).map(|c| Arc::new(c.to_vec())).collect();
        PortMap { chunks, len }
    }

    /// The chunk where `name` is, or would be inserted (`None` when empty).
    fn chunk_index(&self, name: &ServicePortName) -> Option<usize> {
        if self.chunks.is_empty() {
            return None;
        }
        let i = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|v| key(v) < name));
        Some(i.min(self.chunks.len() - 1))
    }

    pub(crate) fn get(&self, name: &ServicePortName) -> Option<&Arc<ServicePortView>> {
        let chunk = &self.chunks[self.chunk_index(name)?];
        let j = chunk.binary_search_by(|v| key(v).cmp(name)).ok()?;
        chunk.get(j)
    }

    /// Inserts or replaces the view named `view.port.name`.
    pub(crate) fn insert(&mut self, view: Arc<ServicePortView>) {
        let Some(i) = self.chunk_index(key(&view)) else {
            self.chunks.push(Arc::new(vec![view]));
            self.len = 1;
            return;
        };
        let chunk = Arc::make_mut(&mut self.chunks[i]);
        match chunk.binary_search_by(|v| key(v).cmp(key(&view))) {
            Ok(j) => chunk[j] = view,
            Err(j) => {
                chunk.insert(j, view);
                self.len += 1;
                if chunk.len() > MAX_CHUNK {
                    let tail = chunk.split_off(chunk.len() / 2);
                    self.chunks.insert(i + 1, Arc::new(tail));
                }
            }
        }
    }

    /// Removes the view named `name`.
    pub(crate) fn remove(&mut self, name: &ServicePortName) -> Option<Arc<ServicePortView>> {
        let i = self.chunk_index(name)?;
        let j = self.chunks[i].binary_search_by(|v| key(v).cmp(name)).ok()?;
        let chunk = Arc::make_mut(&mut self.chunks[i]);
        let removed = chunk.remove(j);
        if chunk.is_empty() {
            self.chunks.remove(i);
        }
        self.len -= 1;
        Some(removed)
    }

    /// The views from the first one named `>= name` on, in order.
    pub(crate) fn range_from<'a>(&'a self, name: &ServicePortName) -> Iter<'a> {
        let Some(i) = self.chunk_index(name) else {
            return Iter::default();
        };
        let j = self.chunks[i].partition_point(|v| key(v) < name);
        let skipped: usize = self.chunks[..i].iter().map(|c| c.len()).sum::<usize>() + j;
        Iter {
            chunks: self.chunks[i + 1..].iter(),
            current: self.chunks[i][j..].iter(),
            remaining: self.len - skipped,
        }
    }

    pub(crate) fn iter(&self) -> Iter<'_> {
        Iter {
            chunks: self.chunks.iter(),
            current: [].iter(),
            remaining: self.len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl PartialEq for PortMap {
    fn eq(&self, other: &Self) -> bool {
        // Chunk boundaries depend on history; compare the entries.
        self.len == other.len && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl Eq for PortMap {}

impl fmt::Debug for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|v| (key(v), v)))
            .finish()
    }
}

/// Iterator over a [`PortMap`], in name order.
#[derive(Clone, Default)]
pub(crate) struct Iter<'a> {
    chunks: std::slice::Iter<'a, Chunk>,
    current: std::slice::Iter<'a, Arc<ServicePortView>>,
    remaining: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Arc<ServicePortView>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(v) = self.current.next() {
                self.remaining -= 1;
                return Some(v);
            }
            self.current = self.chunks.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Iter<'_> {}
