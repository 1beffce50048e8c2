//! [`Listings`]: the dataplane state backends publish about themselves
//! ([`Backend::listing`](crate::Backend::listing)), kept per family for the
//! metrics server's `/proxyListeners`.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::config::ProxyMode;
use crate::model::IpFamily;

/// The latest listing of each family, as published after its last
/// successful sync.
#[derive(Debug, Default)]
pub struct Listings {
    latest: Mutex<BTreeMap<IpFamily, (ProxyMode, String)>>,
}

impl Listings {
    /// Keeps `listing` (a JSON document) as `family`'s latest.
    pub fn publish(&self, family: IpFamily, mode: ProxyMode, listing: &str) {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(family, (mode, listing.to_string()));
    }

    /// Every family's latest listing as one JSON document,
    /// `{"mode": "userspace", "families": {"IPv4": {...}, "IPv6": {...}}}`;
    /// `None` while no backend published one (kernel-state modes never do).
    pub fn document(&self) -> Option<String> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let mode = latest.values().next()?.0;
        let families: Vec<String> = latest
            .iter()
            .map(|(family, (_, listing))| format!("{:?}:{listing}", family.as_str()))
            .collect();
        Some(format!(
            "{{\"mode\":{:?},\"families\":{{{}}}}}",
            mode.as_str(),
            families.join(",")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_kept_apart_and_replaced() {
        let listings = Listings::default();
        assert_eq!(listings.document(), None);
        listings.publish(IpFamily::V4, ProxyMode::Userspace, "{\"a\":1}");
        listings.publish(IpFamily::V6, ProxyMode::Userspace, "{\"b\":2}");
        listings.publish(IpFamily::V4, ProxyMode::Userspace, "{\"a\":3}");
        let doc: serde_json::Value = serde_json::from_str(&listings.document().unwrap()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"mode": "userspace", "families": {"IPv4": {"a": 3}, "IPv6": {"b": 2}}})
        );
    }
}
