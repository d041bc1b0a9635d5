//! The snapshot stream: every stored entry of one ledger, framed one by one, so a ledger of
//! any size moves between nodes through a bounded buffer (the store's export and install,
//! [`SnapshotView::export_to`](crate::store::SnapshotView::export_to) and
//! [`Store::install_snapshot_from`](crate::store::Store::install_snapshot_from), are built
//! on [`SnapshotWriter`] and [`SnapshotReader`]).
//!
//! Layout (integers big-endian):
//!
//! - header: the magic `VTSNAPSH`, the format byte ([`SNAPSHOT_FORMAT`]), the ledger id
//!   (length byte, then its bytes);
//! - one frame per entry: column family index (u8, [`Cf::index`]), key length (u32), key
//!   (after the ledger prefix), value length (u32), value; in the order a store holds them
//!   (column families in the order of [`Cf::ALL`], keys strictly increasing within each),
//!   so an installer can write them straight into sorted table files;
//! - the end frame: the tag `0xff`, the number of entry frames (u64), then the blake3 hash
//!   of every byte before the hash.
//!
//! Nothing may follow the end frame. A reader hands out no entry it cannot frame, and
//! reports the end only after the count and hash match, so a truncated, altered or padded
//! stream is refused at its end at the latest — the installer writes the head last, after
//! that check.

use std::io::{self, BufReader, BufWriter, Read, Write};

use crate::codec::CANONICAL_BYTES_MAX;
use crate::kv::Cf;
use crate::org::LedgerId;

/// The first bytes of every snapshot stream.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"VTSNAPSH";
/// Version of the stream layout, after the magic.
pub const SNAPSHOT_FORMAT: u8 = 1;
/// Largest key a frame may hold: keys are ids and short composite indexes.
pub const SNAPSHOT_KEY_BYTES_MAX: u32 = 64 * 1024;
/// Largest value a frame may hold: the largest stored value is a block.
pub const SNAPSHOT_VALUE_BYTES_MAX: u32 = CANONICAL_BYTES_MAX as u32;
/// Bytes buffered between the store and the writer or reader it was given.
pub const SNAPSHOT_BUFFER_BYTES: usize = 256 * 1024;
/// Tag of the end frame (no column family has this index).
const END_TAG: u8 = 0xff;

/// Why a snapshot stream was refused or could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot io at byte {offset}: {reason}")]
    Io { offset: u64, reason: String },
    #[error("snapshot truncated at byte {offset}: the stream ends before its end frame")]
    Truncated { offset: u64 },
    #[error("not a ledger snapshot: magic {found}")]
    Magic { found: String },
    #[error("snapshot format {found}, this build reads format {SNAPSHOT_FORMAT}")]
    Format { found: u8 },
    #[error("snapshot is of ledger {found:?}, not {expected:?}")]
    WrongLedger { found: String, expected: String },
    #[error("snapshot frame at byte {offset}: column family {index} does not exist")]
    ColumnFamily { offset: u64, index: u8 },
    #[error("snapshot frame at byte {offset}: {what} of {bytes} bytes, at most {max}")]
    TooLong { offset: u64, what: &'static str, bytes: u32, max: u32 },
    #[error("snapshot end frame names {stated} entries, the stream holds {found}")]
    Count { stated: u64, found: u64 },
    #[error("snapshot hash {stated} does not match its contents ({found}): the stream was altered")]
    Hash { stated: String, found: String },
    #[error("snapshot has bytes after its end frame, at byte {offset}")]
    Trailing { offset: u64 },
    #[error("snapshot frame at byte {offset} is out of order: entries come sorted by column family, then key")]
    OutOfOrder { offset: u64 },
}

/// Writes a snapshot stream: [`SnapshotWriter::start`], one [`SnapshotWriter::entry`] per
/// stored entry, then [`SnapshotWriter::finish`].
pub struct SnapshotWriter<'a> {
    out: BufWriter<&'a mut dyn Write>,
    hasher: blake3::Hasher,
    bytes: u64,
    entries: u64,
}

impl<'a> SnapshotWriter<'a> {
    /// Writes the header of a snapshot of `ledger`.
    pub fn start(out: &'a mut dyn Write, ledger: &LedgerId) -> Result<SnapshotWriter<'a>, SnapshotError> {
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(SNAPSHOT_BUFFER_BYTES, out),
            hasher: blake3::Hasher::new(),
            bytes: 0,
            entries: 0,
        };
        let id = ledger.as_str().as_bytes();
        let id_len = u8::try_from(id.len()).expect("a ledger id is at most 64 bytes");
        w.put(&SNAPSHOT_MAGIC)?;
        w.put(&[SNAPSHOT_FORMAT, id_len])?;
        w.put(id)?;
        Ok(w)
    }

    /// Writes one entry: its column family, its key after the ledger prefix, its value.
    pub fn entry(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let key_len = self.len32("key", key.len(), SNAPSHOT_KEY_BYTES_MAX)?;
        let value_len = self.len32("value", value.len(), SNAPSHOT_VALUE_BYTES_MAX)?;
        self.put(&[cf.index()])?;
        self.put(&key_len.to_be_bytes())?;
        self.put(key)?;
        self.put(&value_len.to_be_bytes())?;
        self.put(value)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes the end frame and flushes; returns the bytes of the whole stream.
    pub fn finish(mut self) -> Result<u64, SnapshotError> {
        self.put(&[END_TAG])?;
        self.put(&self.entries.to_be_bytes())?;
        let hash = *self.hasher.finalize().as_bytes();
        self.put(&hash)?;
        let offset = self.bytes;
        self.out.flush().map_err(|e| SnapshotError::Io { offset, reason: e.to_string() })?;
        Ok(self.bytes)
    }

    fn len32(&self, what: &'static str, len: usize, max: u32) -> Result<u32, SnapshotError> {
        match u32::try_from(len) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(SnapshotError::TooLong {
                offset: self.bytes,
                what,
                bytes: u32::try_from(len).unwrap_or(u32::MAX),
                max,
            }),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.hasher.update(bytes);
        self.out.write_all(bytes).map_err(|e| SnapshotError::Io { offset: self.bytes, reason: e.to_string() })?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Reads a snapshot stream, checking it as it goes: [`SnapshotReader::start`] checks the
/// header, [`SnapshotReader::next`] hands out entries and, at the end frame, checks the
/// count, the hash and that nothing follows.
pub struct SnapshotReader<'a> {
    input: BufReader<&'a mut dyn Read>,
    hasher: blake3::Hasher,
    bytes: u64,
    entries: u64,
    ended: bool,
    /// Column family and key of the last entry (once `entries > 0`), which the next must
    /// follow.
    last_tag: u8,
    last_key: Vec<u8>,
}

/// One entry of a snapshot: column family, key after the ledger prefix, value.
pub type SnapshotEntry = (Cf, Vec<u8>, Vec<u8>);

impl<'a> SnapshotReader<'a> {
    /// Reads the header and checks it is a snapshot of `ledger` in this build's format.
    pub fn start(input: &'a mut dyn Read, ledger: &LedgerId) -> Result<SnapshotReader<'a>, SnapshotError> {
        let mut r = SnapshotReader {
            input: BufReader::with_capacity(SNAPSHOT_BUFFER_BYTES, input),
            hasher: blake3::Hasher::new(),
            bytes: 0,
            entries: 0,
            ended: false,
            last_tag: 0,
            last_key: Vec::new(),
        };
        let magic: [u8; 8] = r.take_array()?;
        if magic != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Magic { found: hex::encode(magic) });
        }
        let [format, id_len] = r.take_array()?;
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format { found: format });
        }
        let id = r.take_vec(usize::from(id_len))?;
        if id != ledger.as_str().as_bytes() {
            return Err(SnapshotError::WrongLedger {
                found: String::from_utf8_lossy(&id).into_owned(),
                expected: ledger.as_str().to_string(),
            });
        }
        Ok(r)
    }

    /// The next entry, or `None` once the end frame has been read and checked.
    #[allow(clippy::should_implement_trait)] // fallible, and final after `None`
    pub fn next(&mut self) -> Result<Option<SnapshotEntry>, SnapshotError> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        Ok(self.next_into(&mut key, &mut value)?.map(|cf| (cf, key, value)))
    }

    /// Like [`SnapshotReader::next`], into the caller's buffers (replacing what they held),
    /// so a long stream costs no allocation per entry.
    pub fn next_into(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<Option<Cf>, SnapshotError> {
        if self.ended {
            return Ok(None);
        }
        let offset = self.bytes;
        let [tag] = self.take_array()?;
        if tag == END_TAG {
            return self.end().map(|()| None);
        }
        let cf = Cf::from_index(tag).ok_or(SnapshotError::ColumnFamily { offset, index: tag })?;
        self.take_len_prefixed("key", SNAPSHOT_KEY_BYTES_MAX, key)?;
        if self.entries > 0 && (self.last_tag, self.last_key.as_slice()) >= (tag, key.as_slice()) {
            return Err(SnapshotError::OutOfOrder { offset });
        }
        self.last_tag = tag;
        self.last_key.clone_from(key);
        self.take_len_prefixed("value", SNAPSHOT_VALUE_BYTES_MAX, value)?;
        self.entries += 1;
        Ok(Some(cf))
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn end(&mut self) -> Result<(), SnapshotError> {
        let stated = u64::from_be_bytes(self.take_array()?);
        let found = *self.hasher.finalize().as_bytes();
        // The hash itself is not hashed: read it around the hasher.
        let mut hash = [0u8; 32];
        self.read_exact(&mut hash)?;
        if hash != found {
            return Err(SnapshotError::Hash { stated: hex::encode(hash), found: hex::encode(found) });
        }
        if stated != self.entries {
            return Err(SnapshotError::Count { stated, found: self.entries });
        }
        let mut probe = [0u8; 1];
        loop {
            match self.input.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => return Err(SnapshotError::Trailing { offset: self.bytes }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SnapshotError::Io { offset: self.bytes, reason: e.to_string() }),
            }
        }
        self.ended = true;
        Ok(())
    }

    fn take_len_prefixed(&mut self, what: &'static str, max: u32, buf: &mut Vec<u8>) -> Result<(), SnapshotError> {
        let offset = self.bytes;
        let len = u32::from_be_bytes(self.take_array()?);
        if len > max {
            return Err(SnapshotError::TooLong { offset, what, bytes: len, max });
        }
        buf.clear();
        buf.resize(len as usize, 0);
        self.read_exact(buf)?;
        self.hasher.update(buf);
        Ok(())
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut buf = [0u8; N];
        self.read_exact(&mut buf)?;
        self.hasher.update(&buf);
        Ok(buf)
    }

    fn take_vec(&mut self, len: usize) -> Result<Vec<u8>, SnapshotError> {
        let mut buf = vec![0u8; len];
        self.read_exact(&mut buf)?;
        self.hasher.update(&buf);
        Ok(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.bytes += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(SnapshotError::Truncated { offset: self.bytes }),
            Err(e) => Err(SnapshotError::Io { offset: self.bytes, reason: e.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> LedgerId {
        LedgerId::new("demo").unwrap()
    }

    fn stream(entries: &[SnapshotEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = SnapshotWriter::start(&mut out, &ledger()).unwrap();
        for (cf, k, v) in entries {
            w.entry(*cf, k, v).unwrap();
        }
        let n = w.finish().unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    fn read_all(mut bytes: &[u8], ledger: &LedgerId) -> Result<Vec<SnapshotEntry>, SnapshotError> {
        let mut r = SnapshotReader::start(&mut bytes, ledger)?;
        let mut out = Vec::new();
        while let Some(e) = r.next()? {
            out.push(e);
        }
        Ok(out)
    }

    fn sample() -> Vec<SnapshotEntry> {
        vec![
            (Cf::Meta, b"head".to_vec(), vec![1, 2, 3]),
            (Cf::Blocks, 7u64.to_be_bytes().to_vec(), vec![9; 1000]),
            (Cf::CheckpointSigs, Vec::new(), Vec::new()),
        ]
    }

    #[test]
    fn round_trip() {
        let bytes = stream(&sample());
        assert_eq!(&bytes[..8], b"VTSNAPSH");
        assert_eq!(read_all(&bytes, &ledger()).unwrap(), sample());
        assert_eq!(read_all(&stream(&[]), &ledger()).unwrap(), vec![]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = stream(&sample());
        for len in 0..bytes.len() {
            let e = read_all(&bytes[..len], &ledger()).unwrap_err();
            assert!(matches!(e, SnapshotError::Truncated { .. }), "{len}: {e}");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = stream(&sample());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(read_all(&bad, &ledger()).is_err(), "byte {i} flipped was accepted");
        }
    }

    #[test]
    fn another_ledger_and_trailing_bytes_are_refused() {
        let bytes = stream(&sample());
        let other = LedgerId::new("other").unwrap();
        assert!(matches!(read_all(&bytes, &other), Err(SnapshotError::WrongLedger { .. })));
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(read_all(&padded, &ledger()), Err(SnapshotError::Trailing { .. })));
    }

    #[test]
    fn entries_out_of_order_are_refused() {
        let [meta, blocks, sigs] = <[SnapshotEntry; 3]>::try_from(sample()).unwrap();
        let repeated = (Cf::Blocks, blocks.1.clone(), Vec::new());
        let cases = [
            ("column families backwards", vec![blocks.clone(), meta.clone()]),
            ("keys backwards", vec![(Cf::Meta, b"z".to_vec(), Vec::new()), meta.clone()]),
            ("a key twice", vec![blocks.clone(), repeated]),
            ("last family first", vec![sigs, blocks]),
        ];
        for (what, entries) in cases {
            let e = read_all(&stream(&entries), &ledger()).unwrap_err();
            assert!(matches!(e, SnapshotError::OutOfOrder { .. }), "{what}: {e}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_read() {
        let mut bytes = stream(&[]);
        bytes.truncate(bytes.len() - 41); // drop the end frame
        bytes.push(Cf::Meta.index());
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = read_all(&bytes, &ledger()).unwrap_err();
        assert!(matches!(e, SnapshotError::TooLong { what: "key", .. }), "{e}");
    }
}
