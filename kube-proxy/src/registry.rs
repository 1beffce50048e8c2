//! The backends compiled into this binary, each behind the cargo feature
//! of the same name.

use proxy_core::backend::Registry;

/// Every mode this binary was built with.
pub fn registry() -> Registry {
    let registry = Registry::new();
    #[cfg(feature = "iptables")]
    let registry = registry.with(backend_iptables::IptablesFactory::new());
    #[cfg(feature = "ipvs")]
    let registry = registry.with(backend_ipvs::IpvsFactory::new());
    #[cfg(feature = "nftables")]
    let registry = registry.with(backend_nftables::NftablesFactory::new());
    #[cfg(feature = "userspace")]
    let registry = registry.with(backend_userspace::UserspaceFactory);
    registry
}
