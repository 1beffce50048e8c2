//! The store: validated services and slices, joined by service.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;

use crate::error::InvalidObject;
use crate::model::ServiceKey;

use super::interner::Interner;
use super::service::{self, Service, Validated};
use super::slice::{self, Slice, ValidatedSlice};

/// What applying one object did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use]
pub struct Applied {
    /// Services whose validated state changed (empty for a no-op update or a
    /// rejected object).
    pub changed: Vec<ServiceKey>,
    /// Invalid fields found, one error each.
    pub errors: Vec<InvalidObject>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct ServiceEntry {
    pub(crate) service: Option<Arc<Service>>,
    /// By `namespace/slice-name`'s slice name.
    pub(crate) slices: BTreeMap<String, Arc<Slice>>,
}

impl ServiceEntry {
    fn is_empty(&self) -> bool {
        self.service.is_none() && self.slices.is_empty()
    }
}

/// The cluster-wide, validated model of Services and their EndpointSlices.
///
/// It is fed object by object, as a watch delivers them; each call returns
/// the services whose state changed, so a change tracker can collect them.
/// An update equal to what is stored changes nothing.
#[derive(Debug, Default, Clone)]
pub struct ServiceTopology {
    /// Sorted, so views are built in order without a sort.
    entries: BTreeMap<ServiceKey, ServiceEntry>,
    /// `(namespace, slice name)` → the service the slice belongs to.
    slice_owner: HashMap<(String, String), ServiceKey>,
    /// Node names and zones, shared by the endpoints that repeat them.
    names: Interner,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl ServiceTopology {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or updates a Service. ExternalName and headless services, and
    /// services labelled for another proxy, are treated as absent. A rejected
    /// update keeps the version accepted before.
    pub fn apply_service(&mut self, svc: &corev1::Service) -> Applied {
        let (namespace, name) = key_of(&svc.metadata);
        let key = ServiceKey::new(namespace, name);
        match service::validate(svc) {
            Validated::Skipped => Applied {
                changed: self.remove_service(&key).into_iter().collect(),
                errors: Vec::new(),
            },
            Validated::Rejected(e) => Applied {
                changed: Vec::new(),
                errors: vec![e],
            },
            Validated::Accepted(service, errors) => {
                let entry = self.entries.entry(key.clone()).or_default();
                let changed = entry.service.as_deref() != Some(&service);
                if changed {
                    entry.service = Some(Arc::new(service));
                }
                Applied {
                    changed: if changed { vec![key] } else { Vec::new() },
                    errors,
                }
            }
        }
    }

    /// Removes a Service; returns its key when it was present.
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> Option<ServiceKey> {
        self.remove_service(&ServiceKey::new(namespace, name))
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Option<ServiceKey> {
        let entry = self.entries.get_mut(key)?;
        let had = entry.service.take().is_some();
        if entry.is_empty() {
            self.entries.remove(key);
        }
        had.then(|| key.clone())
    }

    /// Adds or updates an EndpointSlice. FQDN slices and slices labelled for
    /// another proxy or for a headless service are treated as absent. A
    /// rejected update keeps the version accepted before.
    pub fn apply_endpoint_slice(&mut self, slice: &discoveryv1::EndpointSlice) -> Applied {
        let (namespace, name) = key_of(&slice.metadata);
        match slice::validate(slice, &mut self.names) {
            ValidatedSlice::Skipped => Applied {
                changed: self.remove_slice(&namespace, &name).into_iter().collect(),
                errors: Vec::new(),
            },
            ValidatedSlice::Rejected(e) => Applied {
                changed: Vec::new(),
                errors: vec![e],
            },
            ValidatedSlice::Accepted(validated, errors) => {
                let mut changed = Vec::new();
                let owner = validated.service.clone();
                // The slice may have moved to another service (label change).
                let slice_key = (namespace, name);
                if let Some(previous) = self.slice_owner.get(&slice_key)
                    && *previous != owner
                    && let Some(old) = self.remove_slice(&slice_key.0, &slice_key.1)
                {
                    changed.push(old);
                }
                let entry = self.entries.entry(owner.clone()).or_default();
                let same = entry
                    .slices
                    .get(&slice_key.1)
                    .is_some_and(|s| **s == validated);
                if !same {
                    entry
                        .slices
                        .insert(slice_key.1.clone(), Arc::new(validated));
                    changed.push(owner.clone());
                }
                self.slice_owner.insert(slice_key, owner);
                Applied { changed, errors }
            }
        }
    }

    /// Removes an EndpointSlice; returns the service it belonged to, if known.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) -> Option<ServiceKey> {
        self.remove_slice(namespace, name)
    }

    fn remove_slice(&mut self, namespace: &str, name: &str) -> Option<ServiceKey> {
        let owner = self
            .slice_owner
            .remove(&(namespace.to_string(), name.to_string()))?;
        let entry = self.entries.get_mut(&owner)?;
        entry.slices.remove(name);
        if entry.is_empty() {
            self.entries.remove(&owner);
        }
        Some(owner)
    }

    /// The validated service, if present.
    pub fn service(&self, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.entries.get(key).and_then(|e| e.service.as_ref())
    }

    /// All validated services, sorted by key.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.entries.values().filter_map(|e| e.service.as_ref())
    }

    /// The slices of a service, by slice name.
    pub fn slices(&self, key: &ServiceKey) -> impl Iterator<Item = &Arc<Slice>> {
        self.entries
            .get(key)
            .into_iter()
            .flat_map(|e| e.slices.values())
    }

    /// Keys of every service or slice owner known, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.entries.keys()
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.service.is_some())
            .count()
    }

    /// Names of every stored EndpointSlice, as `(namespace, name)`.
    pub fn slice_names(&self) -> impl Iterator<Item = &(String, String)> {
        self.slice_owner.keys()
    }

    pub(crate) fn entry(&self, key: &ServiceKey) -> Option<&ServiceEntry> {
        self.entries.get(key)
    }

    /// Every entry, sorted by key.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.entries.values()
    }
}
