//! Canonical bytes: the one encoding of everything that is signed, hashed or stored.
//!
//! bincode 2 through serde with a fixed configuration (big-endian, fixed-width integers,
//! a size limit), behind a version byte. Only types whose serde form is deterministic
//! go through here: no maps with unstable order, no floats. Golden vectors in
//! `tests/golden.rs` pin the bytes; a change to them is a protocol change.
//!
//! Every hash the ledger takes of structured data is domain-separated: a fixed context
//! string per use (see [`Domain`]), so bytes meant for one purpose can never be replayed
//! as another.

use bincode::config::{BigEndian, Configuration, Fixint, Limit};
use bincode::enc::write::{SizeWriter, Writer};
use bincode::error::EncodeError;
use serde::{Serialize, de::DeserializeOwned};

use crate::hash::Hash32;

/// Version byte in front of every canonical encoding.
pub const CODEC_VERSION: u8 = 1;
/// Largest canonical object the ledger will decode (a block is bounded separately).
pub const CANONICAL_BYTES_MAX: usize = 64 * 1024 * 1024;

type Config = Configuration<BigEndian, Fixint, Limit<CANONICAL_BYTES_MAX>>;

fn config() -> Config {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<CANONICAL_BYTES_MAX>()
}

/// A decoding failure, naming what was being decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: empty input")]
    Empty { what: &'static str },
    #[error("{what}: version byte {got}, expected {CODEC_VERSION}")]
    Version { what: &'static str, got: u8 },
    #[error("{what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what}: {extra} trailing bytes")]
    Trailing { what: &'static str, extra: usize },
}

/// Canonical bytes of `value`: the version byte, then bincode with the fixed config.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    const INFALLIBLE: &str = "canonical encoding of ledger types cannot fail (no maps, no unsized seqs)";
    // A counting pass first, so the bytes are written once into a buffer of the right size
    // instead of growing one and copying it behind the version byte.
    let mut size = SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config()).expect(INFALLIBLE);
    let mut out = Vec::with_capacity(1 + size.bytes_written);
    out.push(CODEC_VERSION);
    bincode::serde::encode_into_writer(value, Append(&mut out), config()).expect(INFALLIBLE);
    out
}

/// `field` (canonical bytes, version byte first) as the next field of a struct or tuple:
/// bincode writes a struct's fields one after another, so this is `field` without its
/// version byte. With it, a caller that already holds a record's bytes (encoded once, for
/// its id) builds the bytes of a row that contains the record without encoding it again.
pub(crate) fn as_field(field: &[u8]) -> &[u8] {
    assert_eq!(field.first(), Some(&CODEC_VERSION), "a field is given as canonical bytes");
    &field[1..]
}

/// A bincode writer appending to a vector.
struct Append<'a>(&'a mut Vec<u8>);

impl Writer for Append<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Decodes canonical bytes, refusing a wrong version, malformed data and trailing bytes,
/// so that exactly one byte string decodes to each value.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    decode_with(what, bytes, config())
}

fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    what: &'static str,
    bytes: &[u8],
    config: C,
) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty { what })?;
    if version != CODEC_VERSION {
        return Err(DecodeError::Version { what, got: version });
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config)
        .map_err(|e| DecodeError::Malformed { what, reason: e.to_string() })?;
    if read != body.len() {
        return Err(DecodeError::Trailing { what, extra: body.len() - read });
    }
    Ok(value)
}

/// The uses of hashing and signing, each with its own context string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// The message a record's author signs.
    RecordSignature,
    /// A record's id: hash of its signed bytes.
    RecordId,
    /// The hash of a block header; validators sign it to make a checkpoint.
    Header,
    /// The message a validator signs for a checkpoint.
    CheckpointSignature,
    /// The genesis file.
    Genesis,
    /// A subject's or organisation's state value in the state map.
    StateValue,
    /// The key of a subject or organisation in the state map.
    StateKey,
    /// One link of a subject's hash chain over its records.
    SubjectChain,
    /// The list of records of a block.
    BlockRecords,
}

impl Domain {
    pub fn context(self) -> &'static str {
        match self {
            Domain::RecordSignature => "veritrace/v1/record-signature",
            Domain::RecordId => "veritrace/v1/record-id",
            Domain::Header => "veritrace/v1/block-header",
            Domain::CheckpointSignature => "veritrace/v1/checkpoint-signature",
            Domain::Genesis => "veritrace/v1/genesis",
            Domain::StateValue => "veritrace/v1/state-value",
            Domain::StateKey => "veritrace/v1/state-key",
            Domain::SubjectChain => "veritrace/v1/subject-chain",
            Domain::BlockRecords => "veritrace/v1/block-records",
        }
    }
}

/// blake3 of `bytes`, keyed by the domain's context (blake3's derive-key mode).
pub fn domain_hash(domain: Domain, bytes: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new_derive_key(domain.context());
    h.update(bytes);
    h.finalize().into()
}

/// Like [`domain_hash`] over several parts, each length-prefixed so that part boundaries
/// cannot be shifted.
pub fn domain_hash_parts(domain: Domain, parts: &[&[u8]]) -> Hash32 {
    let mut h = blake3::Hasher::new_derive_key(domain.context());
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}
