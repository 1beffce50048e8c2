//! The iptables tools of one family and variant: the driver in
//! [`proxy_core::exec::iptables`] (variant detection, xtables lock,
//! restore, save parsing), shared with the IPVS mode and both cleanups;
//! re-exported here under its old path.

pub use proxy_core::exec::iptables::*;
