//! nftables backend (see the crate README).
