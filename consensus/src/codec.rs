//! The bytes of everything this crate stores or sends: a version byte, then bincode 2
//! through serde with a fixed configuration (big-endian, fixed-width integers, a size
//! limit).
//!
//! Two families share the encoding but version separately, so the disk format and the
//! wire protocol can move on their own: [`STORAGE_VERSION`] for log entries, Raft
//! metadata, the state machine's Raft blob and snapshot files; [`WIRE_VERSION`] for RPCs
//! between nodes. Decoding refuses a wrong version, malformed bytes and trailing bytes.

use bincode::config::{BigEndian, Configuration, Fixint, Limit};
use serde::{Serialize, de::DeserializeOwned};

/// Version byte in front of every stored format of this crate.
pub const STORAGE_VERSION: u8 = 1;
/// Version byte in front of every RPC and RPC reply.
pub const WIRE_VERSION: u8 = 1;
/// Largest object this crate decodes in one piece: an RPC, a log entry, a metadata blob.
/// Snapshot data is not decoded through here (it is raw bytes behind a small header).
pub const DECODE_BYTES_MAX: usize = 64 * 1024 * 1024;

type Config = Configuration<BigEndian, Fixint, Limit<DECODE_BYTES_MAX>>;

fn config() -> Config {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<DECODE_BYTES_MAX>()
}

/// An encoding or decoding failure, naming what was being handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{what}: empty input")]
    Empty { what: &'static str },
    #[error("{what}: version byte {got}, expected {expected}")]
    Version { what: &'static str, got: u8, expected: u8 },
    #[error("{what}: malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what}: {extra} trailing bytes")]
    Trailing { what: &'static str, extra: u64 },
    #[error("{what}: {bytes} bytes, over the limit of {max} bytes")]
    TooLarge { what: &'static str, bytes: u64, max: u64 },
    #[error("{what}: cannot encode: {reason}")]
    Encode { what: &'static str, reason: String },
}

/// `version`, then the bincode bytes of `value`.
pub fn encode<T: Serialize + ?Sized>(what: &'static str, version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![version];
    let body = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| CodecError::Encode { what, reason: e.to_string() })?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The length [`encode`] would produce, without building the bytes; used to refuse an
/// oversized RPC before it is sent.
pub fn encoded_len<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<u64, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())
        .map_err(|e| CodecError::Encode { what, reason: e.to_string() })?;
    Ok(1 + size.bytes_written as u64)
}

/// Decodes bytes made by [`encode`] with the same `version`.
pub fn decode<T: DeserializeOwned>(what: &'static str, version: u8, bytes: &[u8]) -> Result<T, CodecError> {
    let (&got, body) = bytes.split_first().ok_or(CodecError::Empty { what })?;
    if got != version {
        return Err(CodecError::Version { what, got, expected: version });
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed { what, reason: e.to_string() })?;
    if read != body.len() {
        return Err(CodecError::Trailing { what, extra: (body.len() - read) as u64 });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let value = (7u64, String::from("x"));
        let bytes = encode("pair", STORAGE_VERSION, &value).expect("encode");
        assert_eq!(encoded_len("pair", &value).expect("len"), bytes.len() as u64);
        // Fixed-width big-endian: the u64 is eight bytes, most significant first.
        assert_eq!(&bytes[..9], &[STORAGE_VERSION, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(decode::<(u64, String)>("pair", STORAGE_VERSION, &bytes), Ok(value));

        assert_eq!(decode::<(u64, String)>("pair", STORAGE_VERSION, &[]), Err(CodecError::Empty { what: "pair" }));
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(decode::<(u64, String)>("pair", STORAGE_VERSION, &wrong), Err(CodecError::Version { .. })));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<(u64, String)>("pair", STORAGE_VERSION, &long),
            Err(CodecError::Trailing { extra: 1, .. })
        ));
        assert!(matches!(
            decode::<(u64, String)>("pair", STORAGE_VERSION, &bytes[..5]),
            Err(CodecError::Malformed { .. })
        ));
    }
}
