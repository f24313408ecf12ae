//! The Confluent wire format: one magic byte (0), the schema id as a 4-byte big-endian integer,
//! then the Avro binary body.
//!
//! Spec: <https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html#wire-format>

/// The only framing version Confluent has defined.
pub const MAGIC_BYTE: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("record has {0} bytes, fewer than the 5-byte Confluent header")]
    TooShort(usize),
    #[error("record starts with byte {0:#04x}, not the Confluent magic byte 0x00")]
    BadMagic(u8),
}

/// Appends the header for `schema_id` to `buf`; the Avro body follows.
pub fn write_header(buf: &mut Vec<u8>, schema_id: u32) {
    buf.push(MAGIC_BYTE);
    buf.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits a framed record into its schema id and Avro body.
pub fn split(record: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if record.len() < HEADER_LEN {
        return Err(WireError::TooShort(record.len()));
    }
    if record[0] != MAGIC_BYTE {
        return Err(WireError::BadMagic(record[0]));
    }
    let id = u32::from_be_bytes([record[1], record[2], record[3], record[4]]);
    Ok((id, &record[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_magic_then_big_endian_id() {
        let mut buf = Vec::new();
        write_header(&mut buf, 0x0102_0304);
        buf.extend_from_slice(b"body");
        assert_eq!(buf, [0, 1, 2, 3, 4, b'b', b'o', b'd', b'y']);
        assert_eq!(split(&buf), Ok((0x0102_0304, &b"body"[..])));
    }

    #[test]
    fn empty_body_is_allowed() {
        assert_eq!(split(&[0, 0, 0, 0, 7]), Ok((7, &[][..])));
    }

    #[test]
    fn short_and_foreign_records_are_rejected() {
        assert_eq!(split(&[0, 0, 1]), Err(WireError::TooShort(3)));
        assert_eq!(split(b"{\"json\":1}"), Err(WireError::BadMagic(b'{')));
    }
}
