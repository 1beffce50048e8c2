//! Netlink attributes: a kind and a value, the value raw bytes or nested
//! attributes. Encoding goes through `netlink-packet-core`'s [`Nla`];
//! decoding yields raw values the caller interprets by kind.

use netlink_packet_core::{DecodeError, Emitable, NLA_F_NESTED, NLA_TYPE_MASK, Nla, NlasIterator};

/// One attribute to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attribute {
    /// A value of raw bytes.
    Bytes(u16, Vec<u8>),
    /// Nested attributes (sent with `NLA_F_NESTED`).
    Nested(u16, Vec<Attribute>),
}

impl Attribute {
    /// A `u16` in host byte order.
    pub(crate) fn u16(kind: u16, value: u16) -> Self {
        Attribute::Bytes(kind, value.to_ne_bytes().to_vec())
    }

    /// A `u16` in network byte order (ports).
    pub(crate) fn be16(kind: u16, value: u16) -> Self {
        Attribute::Bytes(kind, value.to_be_bytes().to_vec())
    }

    /// A `u32` in host byte order.
    pub(crate) fn u32(kind: u16, value: u32) -> Self {
        Attribute::Bytes(kind, value.to_ne_bytes().to_vec())
    }

    /// A NUL-terminated string.
    pub(crate) fn string(kind: u16, value: &str) -> Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        Attribute::Bytes(kind, bytes)
    }
}

impl Nla for Attribute {
    fn value_len(&self) -> usize {
        match self {
            Attribute::Bytes(_, bytes) => bytes.len(),
            Attribute::Nested(_, attributes) => attributes.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attribute::Bytes(kind, _) => *kind,
            Attribute::Nested(kind, _) => *kind | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attribute::Bytes(_, bytes) => buffer[..bytes.len()].copy_from_slice(bytes),
            Attribute::Nested(_, attributes) => attributes.as_slice().emit(buffer),
        }
    }
}

/// Decoded attributes: `(kind without flags, value)` in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attributes(pub(crate) Vec<(u16, Vec<u8>)>);

impl Attributes {
    /// Decodes a buffer of attributes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut attributes = Vec::new();
        for nla in NlasIterator::new(bytes) {
            let nla = nla?;
            attributes.push((nla.kind() & NLA_TYPE_MASK, nla.value().to_vec()));
        }
        Ok(Attributes(attributes))
    }

    /// The value of the first attribute of `kind`.
    pub(crate) fn get(&self, kind: u16) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_slice())
    }

    /// The nested attributes of the first attribute of `kind`.
    pub(crate) fn nested(&self, kind: u16) -> Result<Option<Attributes>, DecodeError> {
        self.get(kind).map(Attributes::parse).transpose()
    }

    /// A `u16` in host byte order.
    pub(crate) fn u16(&self, kind: u16) -> Option<u16> {
        Some(u16::from_ne_bytes(
            self.get(kind)?.get(..2)?.try_into().ok()?,
        ))
    }

    /// A `u16` in network byte order.
    pub(crate) fn be16(&self, kind: u16) -> Option<u16> {
        Some(u16::from_be_bytes(
            self.get(kind)?.get(..2)?.try_into().ok()?,
        ))
    }

    /// A `u32` in host byte order.
    pub(crate) fn u32(&self, kind: u16) -> Option<u32> {
        Some(u32::from_ne_bytes(
            self.get(kind)?.get(..4)?.try_into().ok()?,
        ))
    }

    /// A string, up to its NUL.
    pub(crate) fn string(&self, kind: u16) -> Option<String> {
        let bytes = self.get(kind)?;
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        String::from_utf8(bytes[..end].to_vec()).ok()
    }
}

/// Encodes attributes into a buffer.
pub(crate) fn emit(attributes: &[Attribute]) -> Vec<u8> {
    let mut buffer = vec![0; attributes.buffer_len()];
    attributes.emit(&mut buffer);
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_padded_to_four_bytes_and_nested_ones_flagged() {
        let bytes = emit(&[
            Attribute::string(6, "rr"),
            Attribute::Nested(1, vec![Attribute::be16(4, 80)]),
        ]);
        assert_eq!(
            bytes,
            [
                7, 0, 6, 0, b'r', b'r', 0, 0, // len 7 (4 + "rr\0"), padded to 8
                12, 0, 1, 0x80, // len 12, kind 1 | NLA_F_NESTED
                6, 0, 4, 0, 0, 80, 0, 0, // port 80, big-endian, padded
            ]
        );
    }

    #[test]
    fn decoding_gives_back_kinds_values_and_nested_attributes() {
        let bytes = emit(&[
            Attribute::u16(1, 2),
            Attribute::Nested(2, vec![Attribute::u32(3, 7), Attribute::string(4, "wrr")]),
        ]);
        let attributes = Attributes::parse(&bytes).unwrap();
        assert_eq!(attributes.u16(1), Some(2));
        let nested = attributes.nested(2).unwrap().unwrap();
        assert_eq!(nested.u32(3), Some(7));
        assert_eq!(nested.string(4).as_deref(), Some("wrr"));
        assert_eq!(nested.u32(9), None);
    }

    #[test]
    fn a_truncated_buffer_is_a_decode_error_not_a_panic() {
        let bytes = emit(&[Attribute::u32(3, 7)]);
        assert!(Attributes::parse(&bytes[..6]).is_err());
    }

    #[test]
    fn a_short_value_reads_as_absent() {
        let attributes = Attributes(vec![(1, vec![1])]);
        assert_eq!(attributes.u16(1), None);
        assert_eq!(attributes.u32(1), None);
    }
}
