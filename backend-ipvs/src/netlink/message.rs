//! A generic-netlink message: the netlink message type is the family's id,
//! the payload is `struct genlmsghdr` (command, version, reserved) and
//! attributes.

use netlink_packet_core::{DecodeError, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable};

use super::attribute::{self, Attribute, Attributes};

/// `GENL_ID_CTRL`: the controller family, which resolves family names.
pub(crate) const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_GETFAMILY`.
pub(crate) const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (`u16`).
pub(crate) const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (string).
pub(crate) const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// Size of `struct genlmsghdr`.
const GENL_HEADER_LEN: usize = 4;

/// A message to send: its family id, command, version and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) family: u16,
    pub(crate) command: u8,
    pub(crate) version: u8,
    pub(crate) attributes: Vec<u8>,
}

impl Request {
    /// A request with `attributes` encoded.
    pub(crate) fn new(family: u16, command: u8, version: u8, attributes: &[Attribute]) -> Self {
        Request {
            family,
            command,
            version,
            attributes: attribute::emit(attributes),
        }
    }
}

impl NetlinkSerializable for Request {
    fn message_type(&self) -> u16 {
        self.family
    }

    fn buffer_len(&self) -> usize {
        GENL_HEADER_LEN + self.attributes.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.command;
        buffer[1] = self.version;
        buffer[2] = 0;
        buffer[3] = 0;
        buffer[GENL_HEADER_LEN..].copy_from_slice(&self.attributes);
    }
}

/// A message received: its command and decoded attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) command: u8,
    pub(crate) attributes: Attributes,
}

impl NetlinkDeserializable for Reply {
    type Error = DecodeError;

    fn deserialize(_header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let Some((header, attributes)) = payload.split_at_checked(GENL_HEADER_LEN) else {
            return Err(DecodeError::from(format!(
                "generic netlink payload of {} bytes, shorter than its header",
                payload.len()
            )));
        };
        Ok(Reply {
            command: header[0],
            attributes: Attributes::parse(attributes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkMessage;

    use super::*;

    #[test]
    fn a_request_is_the_genl_header_then_the_attributes() {
        let request = Request::new(0x1d, 4, 1, &[Attribute::u16(1, 2)]);
        let mut message = NetlinkMessage::new(
            netlink_packet_core::NetlinkHeader::default(),
            netlink_packet_core::NetlinkPayload::InnerMessage(request),
        );
        message.finalize();
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        assert_eq!(buffer.len(), 16 + 4 + 8);
        assert_eq!(
            &buffer[4..6],
            &0x1d_u16.to_ne_bytes(),
            "message type = family id"
        );
        assert_eq!(&buffer[16..20], &[4, 1, 0, 0], "command, version, reserved");
        assert_eq!(&buffer[20..], &[6, 0, 1, 0, 2, 0, 0, 0]);
    }

    #[test]
    fn a_reply_decodes_its_command_and_attributes() {
        let mut bytes = vec![1, 1, 0, 0];
        bytes.extend(attribute::emit(&[Attribute::u32(3, 9)]));
        let reply = Reply::deserialize(&NetlinkHeader::default(), &bytes).unwrap();
        assert_eq!(reply.command, 1);
        assert_eq!(reply.attributes.u32(3), Some(9));
    }

    #[test]
    fn a_payload_shorter_than_the_header_is_an_error() {
        assert!(Reply::deserialize(&NetlinkHeader::default(), &[1, 1]).is_err());
        assert!(NetlinkMessage::<Reply>::deserialize(&[0; 3]).is_err());
    }
}
