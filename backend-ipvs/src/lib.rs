//! The `ipvs` mode of the pluggable kube-proxy.
//!
//! - [`IpvsBackend`]: upstream's IPVS proxier, one per IP family
//!   (`kube-ipvs0`, virtual and real servers over [`netlink`], ipsets and
//!   iptables chains, graceful termination), proven in a VM with a real
//!   IPVS kernel (`tests/ipvs_vm`, `vm/ipvs-vm.sh`).
//! - [`IpvsFactory`]: `--proxy-mode=ipvs`, IPv4, IPv6 and dual-stack.
//! - [`wanted`]: what the mode wants for a view, per service port, and
//!   its comparison with the live state (`kube-proxy diff`).
//! - [`netlink`]: a typed client of the kernel's IPVS generic-netlink family.
//!
//! The factory's
//! [`cleanup_leftovers`](proxy_core::backend::BackendFactory::cleanup_leftovers), run
//! by `kube-proxy --cleanup` and when another mode starts (never when the
//! iptables mode starts: the two share chain names). It removes what
//! upstream kube-proxy's IPVS mode leaves on a node, in upstream's order:
//!
//! 1. every IPVS virtual server (`ipvsadm -C`), if the kernel has IPVS
//!    loaded and any virtual server exists;
//! 2. the `kube-ipvs0` link;
//! 3. the mode's iptables jump rules and chains, in every installed
//!    iptables variant (`-nft`, `-legacy`) of the family;
//! 4. the mode's ipsets of the family (`KUBE-6-` names for IPv6).
//!
//! Each step looks first and acts only on what exists, and takes "not
//! found" as done: a node that never ran the IPVS mode sees no change and
//! no error. Commands go through the [`Host`] trait ([`SystemHost`] in
//! production), so tests can record them.
#![warn(missing_docs)]

mod cleanup;
mod error;
mod factory;
mod host;
mod layout;
pub mod netlink;
mod proxier;
pub mod trace;
pub mod wanted;

pub use error::IpvsError;
pub use factory::IpvsFactory;
pub use host::{Command, Host, Output, SystemHost};
pub use proxier::{DRAIN_BOUND, DRAIN_RECHECK, IpvsBackend};
