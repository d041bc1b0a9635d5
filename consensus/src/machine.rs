//! The state machine seam: the [`Machine`] trait the node implements over its ledger, and
//! [`MachineStore`], the adapter that makes any `Machine` openraft's `RaftStateMachine`.
//!
//! # Where last-applied and membership live
//!
//! Raft must know, after a restart, which entry was applied last and which membership
//! was in force, or it re-applies entries. The adapter keeps these in a small *Raft
//! metadata blob* ([`AppliedState`] in codec bytes) and hands the blob to the machine,
//! which stores it **in the same atomic write as its own data**:
//!
//! - a normal entry: [`Machine::apply`] gets the payload and the blob that names this very
//!   entry as last applied; the machine's data and the blob land together or not at all,
//!   so a crash can never leave data applied with an older last-applied (which would
//!   apply the entry twice) nor a newer last-applied without the data (which would skip
//!   it);
//! - blank and membership entries change no data, only the blob: the adapter saves the
//!   blob once at the end of a batch ([`Machine::save_raft_meta`]) unless a later normal
//!   entry in the batch already carried it. A crash before that save re-applies those
//!   entries on restart, which is harmless: they have no effect beyond the blob;
//! - a snapshot install: [`Machine::restore`] replaces the data and the blob together.
//!
//! On open, the adapter reads the blob back with [`Machine::raft_meta`].
//!
//! # Snapshots
//!
//! A snapshot is the machine's full data as bytes ([`Machine::snapshot`]), held in memory
//! and bounded by `snapshot_bytes_max` (see [`ConsensusConfig`](crate::ConsensusConfig)).
//! The bytes are taken while no entry is being applied (when openraft asks for a builder),
//! so they match the last-applied id recorded with them. The current snapshot is kept in
//! one file in the snapshot directory — its metadata and data behind a version byte —
//! replaced by write-to-temporary, fsync, rename, fsync of the directory, so a crash
//! leaves the old snapshot or the new one. A snapshot never replaces a newer one. The file
//! is read again each time openraft asks for the current snapshot (to send it to a lagging
//! peer, which is rare) rather than kept in memory beside the machine's own data.
//!
//! # A purge never outruns the snapshot
//!
//! openraft 0.9 purges the log covered by an installed snapshot *while* the state
//! machine is still installing it, and on restart it purges up to last-applied when the
//! log ends before it. Either way a crash could leave the log purged past the snapshot
//! on disk, which openraft refuses on start (`purge_upto <= snapshot_last_log_id`) and a
//! node cannot recover from alone. So the snapshot file publishes the log id it durably
//! covers ([`MachineStore::snapshot_watermark`]); the log store holds every purge until
//! the watermark reaches it ([`RocksLogStore::fence_purges`](crate::RocksLogStore::fence_purges));
//! and before Raft starts, [`MachineStore::reconcile_with_log`] rebuilds the snapshot
//! from the machine when a crash fell between a snapshot install and its file.
//!
//! The machine's calls are synchronous and run on tokio's blocking pool, one at a time:
//! a ledger apply does disk IO and signature checks and must not stall Raft's timers.

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec::{self, CodecError, STORAGE_VERSION};
use crate::types::{Applied, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// A failure reported by a [`Machine`]. Deterministic rejections of content (a bad record
/// in a block) are not errors: the machine records them in its result. An error here is
/// a storage failure and stops the Raft node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("state machine storage failed: {reason}")]
    Storage { reason: String },
    #[error("snapshot refused by the state machine: {reason}")]
    Snapshot { reason: String },
}

/// The replicated state machine, as the node implements it over its ledger.
///
/// Every method is called from one thread at a time, never concurrently.
pub trait Machine: Send + Sync + 'static {
    /// Applies the committed `payload` at Raft log `index` and stores `raft_meta` in the
    /// same atomic write as the resulting data. Must be deterministic: the same data and
    /// payload give the same data and result on every node. Returns the result handed to
    /// the proposer.
    fn apply(&mut self, index: u64, payload: &[u8], raft_meta: &[u8]) -> Result<Vec<u8>, MachineError>;

    /// Stores `raft_meta` alone, atomically replacing the previous one (after blank and
    /// membership entries, which change no data).
    fn save_raft_meta(&mut self, raft_meta: &[u8]) -> Result<(), MachineError>;

    /// The blob last stored by `apply`, `save_raft_meta` or `restore`; `None` for a machine
    /// that never stored one.
    fn raft_meta(&self) -> Result<Option<Vec<u8>>, MachineError>;

    /// The machine's full data as bytes, consistent with the last stored blob.
    fn snapshot(&self) -> Result<Vec<u8>, MachineError>;

    /// Replaces all data with `snapshot` (bytes made by `snapshot` on some node) and stores
    /// `raft_meta`, atomically.
    fn restore(&mut self, snapshot: &[u8], raft_meta: &[u8]) -> Result<(), MachineError>;
}

/// What the Raft metadata blob holds: the last applied log id and the membership in force
/// after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
}

impl AppliedState {
    /// The blob's bytes: the storage version byte, then bincode.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode("raft metadata blob", STORAGE_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode("raft metadata blob", STORAGE_VERSION, bytes)
    }
}

/// A failure of the state-machine adapter.
#[derive(Debug, thiserror::Error)]
pub enum MachineStoreError {
    #[error("state machine: {0}")]
    Machine(#[from] MachineError),
    #[error("state machine adapter: {0}")]
    Codec(#[from] CodecError),
    #[error("snapshot file {path}: {reason}")]
    SnapshotIo { path: String, reason: String },
    #[error("snapshot file {path} is malformed: {reason}")]
    SnapshotMalformed { path: String, reason: String },
    #[error("snapshot of {bytes} bytes is over the limit of {max} bytes")]
    SnapshotTooLarge { bytes: u64, max: u64 },
    #[error("the state machine was lost when a blocking call failed: {reason}")]
    Lost { reason: String },
    #[error("rebuilding the snapshot from the state machine failed: {reason}")]
    SnapshotRebuild { reason: String },
    #[error(
        "the raft log is purged up to {purged} but the state machine has applied only up to {applied}: \
         the entries between are gone; wipe this node's data directory and let it rejoin by snapshot"
    )]
    PurgedPastApplied { purged: String, applied: String },
}

fn sto_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: MachineStoreError) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// openraft's state machine over a [`Machine`], with its snapshot file.
pub struct MachineStore<M: Machine> {
    /// `None` only while lent to a blocking thread, or for good if that thread panicked.
    machine: Option<M>,
    applied: AppliedState,
    snapshots: Arc<SnapshotFile>,
}

impl<M: Machine> MachineStore<M> {
    /// Wraps `machine`, reading its Raft metadata blob back, and keeps snapshots in
    /// `snapshot_dir` (created if missing), each at most `snapshot_bytes_max` bytes.
    pub fn open(machine: M, snapshot_dir: &Path, snapshot_bytes_max: u64) -> Result<Self, MachineStoreError> {
        let applied = match machine.raft_meta()? {
            Some(blob) => AppliedState::decode(&blob)?,
            None => AppliedState::default(),
        };
        let snapshots = Arc::new(SnapshotFile::open(snapshot_dir, snapshot_bytes_max)?);
        Ok(MachineStore { machine: Some(machine), applied, snapshots })
    }

    /// The log id the snapshot on disk covers, updated each time a snapshot file lands.
    /// The log store must not purge past it (see the module docs).
    pub fn snapshot_watermark(&self) -> watch::Receiver<Option<LogId>> {
        self.snapshots.durable.subscribe()
    }

    /// Makes the snapshot on disk cover everything openraft will treat as purged when it
    /// starts over a log whose last purged id is `last_purged` and last id is `last_log`:
    /// the purged prefix, and last-applied when the log ends before it (openraft then
    /// purges up to last-applied). That only differs from the file after a crash between
    /// a snapshot install and the file write; the snapshot is then rebuilt from the
    /// machine. When the log is purged past what the machine applied (the machine's store
    /// lost its last writes), the machine is restored from the snapshot on disk if that
    /// covers the purge, and refused otherwise: those entries are nowhere on this node.
    async fn restore_from_file(&mut self) -> Result<(), MachineStoreError> {
        let (meta, data) = self.snapshots.load().await?.ok_or_else(|| MachineStoreError::Lost {
            reason: "the snapshot file vanished while the store was open".into(),
        })?;
        let applied = AppliedState { last_applied: meta.last_log_id, last_membership: meta.last_membership };
        let blob = applied.encode()?;
        self.lend(move |machine| machine.restore(&data, &blob)).await??;
        self.applied = applied;
        Ok(())
    }

    pub async fn reconcile_with_log(
        &mut self,
        last_purged: Option<LogId>,
        last_log: Option<LogId>,
    ) -> Result<(), MachineStoreError> {
        let applied = self.applied.last_applied;
        let on_disk = *self.snapshots.durable.borrow();
        if last_purged > applied {
            if on_disk < last_purged {
                return Err(MachineStoreError::PurgedPastApplied {
                    purged: display_log_id(last_purged),
                    applied: display_log_id(applied),
                });
            }
            // The machine lost writes the snapshot on disk still holds (a torn tail of its
            // own store): start again from that snapshot, then from the log after it.
            tracing::warn!(
                snapshot = display_log_id(on_disk),
                applied = display_log_id(applied),
                purged = display_log_id(last_purged),
                "the state machine is behind the purged log: restoring it from the snapshot on disk"
            );
            return self.restore_from_file().await;
        }
        let must_cover = if last_log < applied { applied } else { last_purged };
        if must_cover <= on_disk {
            return Ok(());
        }
        tracing::warn!(
            snapshot = display_log_id(on_disk),
            applied = display_log_id(applied),
            purged = display_log_id(last_purged),
            "the snapshot on disk is behind the purged log (a crash during a snapshot install?): rebuilding it"
        );
        let mut builder = self.get_snapshot_builder().await;
        builder.build_snapshot().await.map_err(|e| MachineStoreError::SnapshotRebuild { reason: e.to_string() })?;
        Ok(())
    }

    /// Runs `work` on the machine on the blocking pool. The machine moves to the blocking
    /// thread and back, so no lock is shared with anything else.
    async fn lend<R, F>(&mut self, work: F) -> Result<R, MachineStoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut M) -> R + Send + 'static,
    {
        let mut machine =
            self.machine.take().ok_or_else(|| MachineStoreError::Lost { reason: "a previous call panicked".into() })?;
        let (machine, out) = tokio::task::spawn_blocking(move || {
            let out = work(&mut machine);
            (machine, out)
        })
        .await
        .map_err(|e| MachineStoreError::Lost { reason: e.to_string() })?;
        self.machine = Some(machine);
        Ok(out)
    }
}

/// The outcome of applying a batch on the blocking thread: the new state and results, or
/// the error with the entry it happened at.
type BatchOutcome = Result<(AppliedState, Vec<Applied>), (Option<LogId>, MachineStoreError)>;

fn apply_batch<M: Machine>(machine: &mut M, mut applied: AppliedState, entries: Vec<Entry>) -> BatchOutcome {
    let mut replies = Vec::with_capacity(entries.len());
    // Whether the blob in memory is ahead of the one the machine stored.
    let mut unsaved = false;
    for entry in entries {
        let log_id = entry.log_id;
        let at = |e: MachineStoreError| (Some(log_id), e);
        applied.last_applied = Some(log_id);
        match entry.payload {
            EntryPayload::Blank => {
                unsaved = true;
                replies.push(Applied::default());
            }
            EntryPayload::Membership(membership) => {
                applied.last_membership = StoredMembership::new(Some(log_id), membership);
                unsaved = true;
                replies.push(Applied::default());
            }
            EntryPayload::Normal(payload) => {
                let blob = applied.encode().map_err(|e| at(e.into()))?;
                let result = machine.apply(log_id.index, &payload.0, &blob).map_err(|e| at(e.into()))?;
                unsaved = false;
                replies.push(Applied(result));
            }
        }
    }
    if unsaved {
        let blob = applied.encode().map_err(|e| (applied.last_applied, e.into()))?;
        machine.save_raft_meta(&blob).map_err(|e| (applied.last_applied, e.into()))?;
    }
    Ok((applied, replies))
}

impl<M: Machine> RaftStateMachine<TypeConfig> for MachineStore<M> {
    type SnapshotBuilder = MachineSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let applied = self.applied.clone();
        let outcome = self
            .lend(move |machine| apply_batch(machine, applied, entries))
            .await
            .map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        match outcome {
            Ok((applied, replies)) => {
                self.applied = applied;
                Ok(replies)
            }
            Err((Some(log_id), e)) => Err(StorageIOError::apply(log_id, AnyError::new(&e)).into()),
            Err((None, e)) => Err(sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)),
        }
    }

    async fn get_snapshot_builder(&mut self) -> MachineSnapshotBuilder {
        let data = match self.lend(|machine| machine.snapshot()).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(MachineStoreError::Machine(e)),
            Err(e) => Err(e),
        };
        MachineSnapshotBuilder { applied: self.applied.clone(), data: Some(data), snapshots: self.snapshots.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let err = |e: MachineStoreError| sto_err(ErrorSubject::Snapshot(signature.clone()), ErrorVerb::Write, e);
        let data = snapshot.into_inner();
        self.snapshots.check_size(data.len()).map_err(err)?;
        let applied = AppliedState { last_applied: meta.last_log_id, last_membership: meta.last_membership.clone() };
        let blob = applied.encode().map_err(|e| err(e.into()))?;
        // The machine first, then the file: if a crash falls between them the machine is
        // ahead of the snapshot file, which openraft handles (it keeps or rebuilds a
        // snapshot); the other order could leave a snapshot file newer than the data.
        let (data, restored) = self
            .lend(move |machine| {
                let restored = machine.restore(&data, &blob);
                (data, restored)
            })
            .await
            .map_err(err)?;
        restored.map_err(|e| err(e.into()))?;
        self.applied = applied;
        self.snapshots.save(meta.clone(), data).await.map_err(err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let loaded =
            self.snapshots.load().await.map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(loaded.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

/// Builds a snapshot from bytes taken when openraft asked for the builder; writing the
/// file happens later, concurrently with applying.
pub struct MachineSnapshotBuilder {
    applied: AppliedState,
    /// Taken by the one `build_snapshot` call.
    data: Option<Result<Vec<u8>, MachineStoreError>>,
    snapshots: Arc<SnapshotFile>,
}

impl RaftSnapshotBuilder<TypeConfig> for MachineSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let err = |e: MachineStoreError| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        let data = self
            .data
            .take()
            .unwrap_or_else(|| Err(MachineStoreError::Lost { reason: "snapshot builder used twice".into() }))
            .map_err(err)?;
        self.snapshots.check_size(data.len()).map_err(err)?;
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.last_membership.clone(),
            snapshot_id: snapshot_id(self.applied.last_applied),
        };
        let data = self.snapshots.save(meta.clone(), data).await.map_err(err)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

// A snapshot id names one transfer stream. Two snapshots at the same log id hold the same
// data (the machine is deterministic), so the clock only has to tell apart rebuilds, and
// a clock that goes backwards costs at most a restarted transfer.
fn snapshot_id(last: Option<LogId>) -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    match last {
        Some(id) => format!("{}-{}-{}-{millis}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => format!("none-{millis}"),
    }
}

fn display_log_id(id: Option<LogId>) -> String {
    id.map(|id| id.to_string()).unwrap_or_else(|| "nothing".into())
}

/// The one current snapshot on disk.
///
/// File layout: version byte, metadata length (u32 BE), metadata (codec bytes), data
/// length (u64 BE), data.
struct SnapshotFile {
    path: PathBuf,
    dir: PathBuf,
    bytes_max: u64,
    /// Metadata of the file on disk; the lock also serialises writers and readers.
    current: Mutex<Option<SnapshotMeta>>,
    /// The last log id the file on disk covers, published after each durable write.
    durable: watch::Sender<Option<LogId>>,
}

const SNAPSHOT_FILE: &str = "current.snapshot";
const SNAPSHOT_TMP: &str = "current.snapshot.tmp";

impl SnapshotFile {
    fn open(dir: &Path, bytes_max: u64) -> Result<Self, MachineStoreError> {
        let io = |e: std::io::Error| MachineStoreError::SnapshotIo {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        fs::create_dir_all(dir).map_err(io)?;
        let file = SnapshotFile {
            path: dir.join(SNAPSHOT_FILE),
            dir: dir.to_path_buf(),
            bytes_max,
            current: Mutex::new(None),
            durable: watch::Sender::new(None),
        };
        let current = file.read()?.map(|(meta, _)| meta);
        file.durable.send_replace(current.as_ref().and_then(|m| m.last_log_id));
        *file.lock()? = current;
        Ok(file)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<SnapshotMeta>>, MachineStoreError> {
        self.current.lock().map_err(|_| MachineStoreError::Lost { reason: "snapshot lock poisoned".into() })
    }

    fn check_size(&self, bytes: usize) -> Result<(), MachineStoreError> {
        if bytes as u64 > self.bytes_max {
            return Err(MachineStoreError::SnapshotTooLarge { bytes: bytes as u64, max: self.bytes_max });
        }
        Ok(())
    }

    fn io_err(&self, e: std::io::Error) -> MachineStoreError {
        MachineStoreError::SnapshotIo { path: self.path.display().to_string(), reason: e.to_string() }
    }

    fn malformed(&self, reason: impl Into<String>) -> MachineStoreError {
        MachineStoreError::SnapshotMalformed { path: self.path.display().to_string(), reason: reason.into() }
    }

    fn read(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, MachineStoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err(e)),
        };
        let (&version, rest) = bytes.split_first().ok_or_else(|| self.malformed("empty file"))?;
        if version != STORAGE_VERSION {
            return Err(self.malformed(format!("version byte {version}, expected {STORAGE_VERSION}")));
        }
        let (meta_len, rest) = split_u32(rest).ok_or_else(|| self.malformed("truncated metadata length"))?;
        let meta_len = usize::try_from(meta_len).map_err(|_| self.malformed("metadata length overflows"))?;
        if rest.len() < meta_len {
            return Err(self.malformed(format!("metadata of {meta_len} bytes truncated")));
        }
        let (meta_bytes, rest) = rest.split_at(meta_len);
        let meta: SnapshotMeta = codec::decode("snapshot metadata", STORAGE_VERSION, meta_bytes)?;
        let (data_len, data) = split_u64(rest).ok_or_else(|| self.malformed("truncated data length"))?;
        if data_len != data.len() as u64 {
            return Err(self.malformed(format!("data length {data_len}, file holds {} bytes", data.len())));
        }
        self.check_size(data.len())?;
        Ok(Some((meta, data.to_vec())))
    }

    fn write(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), MachineStoreError> {
        let meta_bytes = codec::encode("snapshot metadata", STORAGE_VERSION, meta)?;
        let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| self.malformed("metadata over 4 GiB"))?;
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let mut file = fs::File::create(&tmp).map_err(|e| self.io_err(e))?;
        let mut header = vec![STORAGE_VERSION];
        header.extend_from_slice(&meta_len.to_be_bytes());
        header.extend_from_slice(&meta_bytes);
        header.extend_from_slice(&(data.len() as u64).to_be_bytes());
        file.write_all(&header).map_err(|e| self.io_err(e))?;
        file.write_all(data).map_err(|e| self.io_err(e))?;
        file.sync_all().map_err(|e| self.io_err(e))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(|e| self.io_err(e))?;
        // The rename is durable only once the directory entry is.
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| self.io_err(e))?;
        Ok(())
    }

    /// Makes `meta` + `data` the current snapshot unless the current one is newer, and
    /// hands `data` back.
    async fn save(self: &Arc<Self>, meta: SnapshotMeta, data: Vec<u8>) -> Result<Vec<u8>, MachineStoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut current = this.lock()?;
            let newer_on_disk = current.as_ref().is_some_and(|c| c.last_log_id > meta.last_log_id);
            if newer_on_disk {
                tracing::info!(snapshot = %meta, "snapshot not saved: a newer one is on disk");
            } else {
                this.write(&meta, &data)?;
                tracing::info!(snapshot = %meta, bytes = data.len() as u64, "snapshot saved");
                this.durable.send_replace(meta.last_log_id);
                *current = Some(meta);
            }
            Ok(data)
        })
        .await
        .map_err(|e| MachineStoreError::Lost { reason: e.to_string() })?
    }

    async fn load(self: &Arc<Self>) -> Result<Option<(SnapshotMeta, Vec<u8>)>, MachineStoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _current = this.lock()?;
            this.read()
        })
        .await
        .map_err(|e| MachineStoreError::Lost { reason: e.to_string() })?
    }
}

fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}
