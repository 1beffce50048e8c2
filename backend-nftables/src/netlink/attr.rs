//! Netlink messages and their attributes (TLVs), written into one buffer.

use super::consts::{NFNL_SUBSYS_NFTABLES, NLA_F_NESTED};

/// A buffer of netlink messages under construction.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Starts a message: `nlmsghdr` (length filled in by [`Writer::end`])
    /// and `nfgenmsg`. Returns the message's start.
    pub fn begin(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Starts an nf_tables message of type `msg`.
    pub fn begin_nft(&mut self, msg: u16, flags: u16, seq: u32, family: u8) -> usize {
        self.begin(NFNL_SUBSYS_NFTABLES << 8 | msg, flags, seq, family, 0)
    }

    /// Ends the message started at `start`.
    pub fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// An attribute with `value`, padded to 4 bytes.
    pub fn put(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    /// A big-endian `u32` attribute (nf_tables' integers).
    pub fn put_u32(&mut self, kind: u16, value: u32) {
        self.put(kind, &value.to_be_bytes());
    }

    /// A NUL-terminated string attribute.
    pub fn put_str(&mut self, kind: u16, value: &str) {
        let len = 4 + value.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// Opens a nested attribute; close it with [`Writer::close`].
    pub fn open(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Closes the nested attribute opened at `start`.
    pub fn close(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        let padded = self.buf.len().next_multiple_of(4);
        self.buf.resize(padded, 0);
    }
}

/// User data holding one comment TLV, as libnftnl writes it
/// (`nftnl_udata_put_strz`: type, length with the NUL, text, NUL).
pub fn comment_udata(kind: u8, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(kind);
    out.push((text.len() + 1) as u8);
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out
}

impl Writer {
    /// Drops everything written after `len` bytes (a message abandoned
    /// half-way).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Number of bytes written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
}
