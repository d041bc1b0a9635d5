//! The Raft log and vote on their own RocksDB database: openraft's `RaftLogStorage`.
//!
//! Layout (part of the on-disk format, versioned by [`STORAGE_VERSION`]):
//! - column family `raft_log`: log index (u64, big-endian, so key order is index order)
//!   -> the entry, in [`codec`] bytes;
//! - column family `raft_meta`: `format` -> the format version byte; `vote`, `committed`,
//!   `last_purged` -> codec bytes of the vote and log ids.
//!
//! Crash safety: every write that Raft relies on — appends, votes, truncation, purge — is
//! one RocksDB write batch with `sync = true`, finished before the call returns (and, for
//! appends, before the [`LogFlushed`] callback fires). Purge writes the new last-purged
//! log id and the range deletion in the same batch, so the log never has a hole that
//! the metadata does not explain. Synced writes run on tokio's blocking pool so an fsync
//! never stalls a runtime worker; each call awaits its own write, which keeps Raft's
//! writes in order without any queue.
//!
//! Purges can be fenced ([`RocksLogStore::fence_purges`]): a purge past the state
//! machine's snapshot on disk is *held* until the snapshot covers it, so a crash never
//! leaves the log purged past the snapshot (see [`machine`](crate::machine)). A held purge
//! returns at once and is carried out by the first append once the snapshot covers it,
//! in the append's own batch. It must not wait in `purge`: openraft runs log IO inside its
//! core loop, and it purges when a snapshot install *starts* — a purge waiting there for
//! the install to end stopped the node's Raft for the whole install (no vote answered, no
//! metrics, no message handled; seconds per million records). Holding the purge is safe: openraft
//! reads nothing at or below a purged id, and the entries held back are only deleted
//! later (a crash meanwhile leaves more log, never less); an append waits for the fence
//! before it writes past them, so the log never has a hole (openraft appends only once
//! the install is done, so in practice it never waits).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::codec::{self, CodecError, STORAGE_VERSION};
use tokio::sync::watch;

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const CF_LOG: &str = "raft_log";
const CF_META: &str = "raft_meta";
const KEY_FORMAT: &[u8] = b"format";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// A failure of the log store, naming the operation or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("cannot open raft log store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("raft log store format version {got}, expected {expected}")]
    Format { got: u8, expected: u8 },
    #[error("raft log store is missing column family {name}")]
    MissingColumnFamily { name: &'static str },
    #[error("raft log store {op} failed: {reason}")]
    Rocks { op: &'static str, reason: String },
    #[error("raft log store: {0}")]
    Codec(#[from] CodecError),
    #[error("raft log store is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("raft log store blocking task failed: {reason}")]
    Blocking { reason: String },
    #[error("purge up to {upto} held back: {reason}")]
    PurgeFence { upto: String, reason: String },
}

/// How long an append waits for the snapshot to cover a held purge before it fails (and
/// stops Raft). openraft appends only after the install that held the purge has ended,
/// so this is never reached in practice.
pub const PURGE_FENCE_WAIT: Duration = Duration::from_secs(600);

fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> LogStoreError {
    move |e| LogStoreError::Rocks { op, reason: e.to_string() }
}

fn sto_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: LogStoreError) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// The Raft log and vote of one node. Cheap to clone: clones share the database, and
/// openraft's replication tasks read through clones (see `get_log_reader`).
#[derive(Clone)]
pub struct RocksLogStore {
    db: Arc<DB>,
    /// When set, the log id the snapshot on disk covers; purges past it are held.
    purge_fence: Option<watch::Receiver<Option<LogId>>>,
    /// A purge not yet carried out because the snapshot did not cover it. In memory only:
    /// after a crash the log is simply longer, and openraft purges again once it runs.
    held_purge: Option<LogId>,
}

/// Bytes of a table file RocksDB writes before it hands them to the operating system to
/// write back (`bytes_per_sync`), as the ledger's store does.
const WRITE_BACK_EVERY_BYTES: u64 = 1024 * 1024;

impl RocksLogStore {
    /// Opens or creates the log store in `dir` (a directory of its own), refusing a
    /// database written in another format version.
    ///
    /// A store that lost its `CURRENT` file (which names the live MANIFEST) is refused and
    /// left as it was. RocksDB would take the directory for a new database and write an
    /// empty one over the old files, and a node that forgot its vote and its log could vote
    /// twice in a term, which Raft's safety rests on never happening.
    pub fn open(dir: &Path) -> Result<Self, LogStoreError> {
        let lost_current = files_without_current(dir);
        if !lost_current.is_empty() {
            return Err(LogStoreError::Open {
                path: dir.display().to_string(),
                reason: format!(
                    "it holds a log store ({}) but no CURRENT file, which names its live MANIFEST: the \
                     file was lost. Refusing to create a new, empty store over it (this node's vote and \
                     log); restore CURRENT, or remove the node's data directory to rejoin afresh",
                    lost_current.join(", ")
                ),
            });
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Appends are synced; the table files its flushes write are not, and would reach the
        // disk in one burst that the next synced append waits behind.
        opts.set_bytes_per_sync(WRITE_BACK_EVERY_BYTES);
        let cfs = [CF_LOG, CF_META].into_iter().map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)
            .map_err(|e| LogStoreError::Open { path: dir.display().to_string(), reason: e.to_string() })?;
        let store = RocksLogStore { db: Arc::new(db), purge_fence: None, held_purge: None };
        store.check_format()?;
        Ok(store)
    }

    /// Holds every purge until `watermark` (the log id the state machine's snapshot on
    /// disk covers, [`MachineStore::snapshot_watermark`](crate::MachineStore::snapshot_watermark))
    /// reaches it. [`start_raft`](crate::start_raft) sets this up.
    pub fn fence_purges(&mut self, watermark: watch::Receiver<Option<LogId>>) {
        self.purge_fence = Some(watermark);
    }

    /// Whether the snapshot on disk covers a purge up to `upto` (always, unfenced).
    fn fence_covers(&self, upto: LogId) -> bool {
        self.purge_fence.as_ref().is_none_or(|fence| *fence.borrow() >= Some(upto))
    }

    async fn wait_for_fence(&self, upto: LogId) -> Result<(), LogStoreError> {
        let Some(mut fence) = self.purge_fence.clone() else {
            return Ok(());
        };
        if *fence.borrow() >= Some(upto) {
            return Ok(());
        }
        tracing::info!(upto = %upto, "append waits for the snapshot to cover a held purge");
        let fail = |reason: String| LogStoreError::PurgeFence { upto: upto.to_string(), reason };
        match tokio::time::timeout(PURGE_FENCE_WAIT, fence.wait_for(|covered| *covered >= Some(upto))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(fail("the state machine stopped before its snapshot covered it".into())),
            Err(_) => Err(fail(format!("no snapshot covered it within {PURGE_FENCE_WAIT:?}"))),
        }
    }

    /// Adds a purge up to `log_id` to `batch`: the new last-purged id and the deletion of
    /// every entry up to it, together, so the log never has a hole its metadata does not
    /// explain.
    fn add_purge(&self, batch: &mut WriteBatch, log_id: LogId) -> Result<(), LogStoreError> {
        let log = cf(&self.db, CF_LOG)?;
        let meta = cf(&self.db, CF_META)?;
        batch.put_cf(meta, KEY_LAST_PURGED, codec::encode("last purged", STORAGE_VERSION, &log_id)?);
        match log_id.index.checked_add(1) {
            Some(end) => batch.delete_range_cf(log, 0u64.to_be_bytes(), end.to_be_bytes()),
            None => {
                batch.delete_range_cf(log, 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
                batch.delete_cf(log, u64::MAX.to_be_bytes());
            }
        }
        Ok(())
    }

    fn check_format(&self) -> Result<(), LogStoreError> {
        let meta = cf(&self.db, CF_META)?;
        match self.db.get_cf(meta, KEY_FORMAT).map_err(rocks("read format"))? {
            Some(v) if v.as_slice() == [STORAGE_VERSION] => Ok(()),
            Some(v) => Err(LogStoreError::Format { got: v.first().copied().unwrap_or(0), expected: STORAGE_VERSION }),
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, KEY_FORMAT, [STORAGE_VERSION]);
                write_synced(&self.db, batch)
            }
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &'static [u8]) -> Result<Option<T>, LogStoreError> {
        let meta = cf(&self.db, CF_META)?;
        let Some(bytes) = self.db.get_cf(meta, key).map_err(rocks("read metadata"))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode("raft log metadata", STORAGE_VERSION, &bytes)?))
    }

    /// Runs a synced write on the blocking pool and waits for it.
    async fn write(&self, batch: WriteBatch) -> Result<(), LogStoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || write_synced(&db, batch))
            .await
            .map_err(|e| LogStoreError::Blocking { reason: e.to_string() })?
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<Entry>, LogStoreError> {
        let log = cf(&self.db, CF_LOG)?;
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let from = start.to_be_bytes();
        for item in self.db.iterator_cf(log, IteratorMode::From(&from, Direction::Forward)) {
            let (key, value) = item.map_err(rocks("read log"))?;
            let index = key_index(&key)?;
            if index >= end {
                break;
            }
            // The first entry may be past `start` (purged below it); after that a gap
            // would mean the log lost an entry.
            if let Some(prev) = out.last().map(|e: &Entry| e.log_id.index)
                && index != prev + 1
            {
                return Err(LogStoreError::Corrupt { reason: format!("log jumps from index {prev} to {index}") });
            }
            out.push(decode_entry(index, &value)?);
        }
        Ok(out)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, LogStoreError> {
        let log = cf(&self.db, CF_LOG)?;
        let Some(item) = self.db.iterator_cf(log, IteratorMode::End).next() else {
            return Ok(None);
        };
        let (key, value) = item.map_err(rocks("read log"))?;
        Ok(Some(decode_entry(key_index(&key)?, &value)?.log_id))
    }
}

fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, LogStoreError> {
    db.cf_handle(name).ok_or(LogStoreError::MissingColumnFamily { name })
}

fn write_synced(db: &DB, batch: WriteBatch) -> Result<(), LogStoreError> {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo).map_err(rocks("synced write"))
}

fn key_index(key: &[u8]) -> Result<u64, LogStoreError> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| LogStoreError::Corrupt { reason: format!("log key of {} bytes", key.len()) })?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, LogStoreError> {
    let entry: Entry = codec::decode("raft log entry", STORAGE_VERSION, bytes)?;
    if entry.log_id.index != index {
        return Err(LogStoreError::Corrupt {
            reason: format!("entry stored at index {index} has log id index {}", entry.log_id.index),
        });
    }
    Ok(entry)
}

fn range_to_half_open<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_to_half_open(&range);
        self.entries(start, end).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = RocksLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<LogState<TypeConfig>, LogStoreError> {
            let last_purged_log_id: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
            let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id })
        };
        read().map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let write = async {
            let mut batch = WriteBatch::default();
            batch.put_cf(cf(&self.db, CF_META)?, KEY_VOTE, codec::encode("vote", STORAGE_VERSION, vote)?);
            self.write(batch).await
        };
        write.await.map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE).map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    // The committed log id lets a restarted node re-apply what it knows is committed
    // without waiting for a leader. It is written without sync: losing the latest value
    // only makes the node re-learn it, and the log entries it points at were synced
    // before they could be committed.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let write = || -> Result<(), LogStoreError> {
            let meta = cf(&self.db, CF_META)?;
            let bytes = codec::encode("committed", STORAGE_VERSION, &committed)?;
            self.db.put_cf(meta, KEY_COMMITTED, bytes).map_err(rocks("write committed"))
        };
        write().map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let read = self.read_meta::<Option<LogId>>(KEY_COMMITTED).map(Option::flatten);
        read.map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // A held purge goes first, in the same batch: the new entries may follow the
        // snapshot, past entries the purge deletes, and must not leave a hole behind.
        let held = self.held_purge;
        if let Some(upto) = held
            && let Err(e) = self.wait_for_fence(upto).await
        {
            callback.log_io_completed(Err(io::Error::other(e.to_string())));
            return Err(sto_err(ErrorSubject::Log(upto), ErrorVerb::Delete, e));
        }
        let prepare = || -> Result<WriteBatch, LogStoreError> {
            let log = cf(&self.db, CF_LOG)?;
            let mut batch = WriteBatch::default();
            if let Some(upto) = held {
                self.add_purge(&mut batch, upto)?;
            }
            for entry in entries {
                let bytes = codec::encode("raft log entry", STORAGE_VERSION, &entry)?;
                batch.put_cf(log, entry.log_id.index.to_be_bytes(), bytes);
            }
            Ok(batch)
        };
        let result = match prepare() {
            Ok(batch) => self.write(batch).await,
            Err(e) => Err(e),
        };
        // The callback is what tells Raft the entries are durable: it fires only after the
        // synced write returned.
        match result {
            Ok(()) => {
                if held.is_some() {
                    self.held_purge = None;
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let write = async {
            let log = cf(&self.db, CF_LOG)?;
            let mut batch = WriteBatch::default();
            // delete_range's end is exclusive: u64::MAX itself goes separately.
            batch.delete_range_cf(log, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
            batch.delete_cf(log, u64::MAX.to_be_bytes());
            self.write(batch).await
        };
        write.await.map_err(|e| sto_err(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if !self.fence_covers(log_id) {
            // Held, not awaited: see the module docs. openraft purges forward only.
            tracing::info!(upto = %log_id, "purge held until the snapshot on disk covers it");
            self.held_purge = self.held_purge.max(Some(log_id));
            return Ok(());
        }
        let write = async {
            let mut batch = WriteBatch::default();
            self.add_purge(&mut batch, log_id)?;
            self.write(batch).await
        };
        write.await.map_err(|e| sto_err(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))?;
        if self.held_purge <= Some(log_id) {
            self.held_purge = None;
        }
        Ok(())
    }
}

/// What `dir` holds of a RocksDB database when it has no `CURRENT`, for an error: its
/// MANIFESTs by name and a count of its table files and write-ahead logs. Nothing when it
/// has a `CURRENT`, or when the directory is missing or new (RocksDB's open reports any
/// other trouble reading it).
fn files_without_current(dir: &Path) -> Vec<String> {
    if dir.join("CURRENT").exists() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let mut said: Vec<String> = names.iter().filter(|n| n.starts_with("MANIFEST-")).cloned().collect();
    said.sort();
    match names.iter().filter(|n| n.ends_with(".sst") || n.ends_with(".log")).count() {
        0 => {}
        n => said.push(format!("{n} table and log files")),
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_lost_its_current_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        drop(RocksLogStore::open(dir.path()).unwrap());
        std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
        let names = || {
            let mut n: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            n.sort();
            n
        };
        let before = names();
        let Err(e) = RocksLogStore::open(dir.path()) else { panic!("opened without CURRENT") };
        assert!(e.to_string().contains("no CURRENT file"), "{e}");
        assert_eq!(names(), before, "the refusal wrote to the directory");
    }

    #[test]
    fn ranges_become_half_open() {
        assert_eq!(range_to_half_open(&(3..7)), (3, 7));
        assert_eq!(range_to_half_open(&(3..=7)), (3, 8));
        assert_eq!(range_to_half_open(&(..)), (0, u64::MAX));
        assert_eq!(range_to_half_open(&(5..)), (5, u64::MAX));
        assert_eq!(range_to_half_open(&(..=u64::MAX)), (0, u64::MAX));
    }

    #[test]
    fn table_files_are_written_back_as_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        drop(RocksLogStore::open(dir.path()).unwrap());
        let options = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect::<Vec<_>>();
        assert!(!options.is_empty());
        let setting = format!("bytes_per_sync={WRITE_BACK_EVERY_BYTES}");
        assert!(options.iter().all(|o| o.lines().any(|l| l.trim() == setting)), "{setting} missing");
    }

    #[test]
    fn log_keys_must_be_eight_bytes() {
        assert_eq!(key_index(&7u64.to_be_bytes()).ok(), Some(7));
        assert!(matches!(key_index(b"short"), Err(LogStoreError::Corrupt { .. })));
    }
}
