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
//! - a snapshot install: [`Machine::restore_from`] replaces the data and the blob together.
//!
//! On open, the adapter reads the blob back with [`Machine::raft_meta`].
//!
//! # Snapshots
//!
//! A snapshot is a file, streamed end to end so that memory stays bounded whatever the
//! size of the machine's data: [`Machine::snapshot_taker`] gives a handle whose
//! [`SnapshotTaker::take`] takes a point-in-time copy of the data, whose
//! [`SnapshotSource::write_to`] writes it into a temporary
//! file in the snapshot directory, openraft sends that file in chunks, the receiver writes
//! the chunks into a temporary file of its own ([`RaftStateMachine::begin_receiving_snapshot`])
//! and [`Machine::restore_from`] reads it back. A machine that offers a [`RestoreStager`]
//! has it read that file from the first chunk, as it grows ([`crate::staging`]), so that
//! once the last chunk lands [`Machine::restore_staged`] only swaps in what was staged;
//! should staging fail, `restore_from` reads the whole file. Its size is bounded by
//! `snapshot_bytes_max` (see [`ConsensusConfig`](crate::ConsensusConfig)): a disk bound,
//! checked as a snapshot is built and as each received chunk lands.
//!
//! Nothing of a snapshot is done on the apply path: when openraft asks for a builder (between
//! applies) the machine gives only a handle, and the builder takes the copy on the blocking
//! pool and writes it out on a thread of its own at the lowest CPU priority while the
//! machine goes on applying (openraft runs `build_snapshot` in a task of its own), so
//! neither taking a large copy nor writing it stalls applies, and writing it takes only the
//! CPU the node's own work leaves. The copy names its own last-applied id and membership,
//! from the blob stored with its data, so they match it whatever was applied meanwhile (see
//! [`MachineSnapshotBuilder`]). The directory holds one current snapshot: a data file
//! `<n>.snap` and the pointer `current.meta` (version byte, metadata, the data file's
//! number and length). A snapshot becomes current by fsync of
//! its data file, rename from its temporary name, a new pointer written to a temporary,
//! fsynced and renamed over the old, and fsync of the directory; only then is the old data
//! file removed. A crash leaves the old snapshot or the new one; leftovers are removed on
//! open. A snapshot never replaces a newer one. The file is opened again each time
//! openraft asks for the current snapshot (to send it to a lagging peer).
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
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::codec::{self, CodecError, STORAGE_VERSION};
use crate::staging::Staging;
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
/// Every method is called from one thread at a time, never concurrently (a
/// [`SnapshotTaker`] runs alongside them).
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

    /// A handle that takes a point-in-time copy of the machine's data later, on another
    /// thread, while the machine goes on applying (see [`SnapshotTaker`]). Should be quick
    /// (a shared handle, no data): applies wait while it runs.
    fn snapshot_taker(&self) -> Result<Box<dyn SnapshotTaker>, MachineError>;

    /// Replaces all data with the snapshot read from `input` (written by a [`SnapshotSource`]
    /// on some node) and stores `raft_meta` with it. Must refuse a stream that is not whole
    /// and leave the machine so that it cannot be mistaken for the snapshot's data.
    fn restore_from(&mut self, input: &mut dyn Read, raft_meta: &[u8]) -> Result<(), MachineError>;

    /// A stager that reads a snapshot as it arrives and prepares it apart from the data,
    /// for [`Machine::restore_staged`] (see [`RestoreStager`]); `None`, the default, when the
    /// machine only restores from a whole file. Should be quick (a shared handle): the
    /// machine's other calls wait while it runs.
    fn restore_stager(&self) -> Result<Option<Box<dyn RestoreStager>>, MachineError> {
        Ok(None)
    }

    /// Replaces all data with what this machine's [`RestoreStager`] staged, and stores
    /// `raft_meta` with it, as [`Machine::restore_from`] would from the same stream.
    fn restore_staged(&mut self, _staged: StagedRestore, _raft_meta: &[u8]) -> Result<(), MachineError> {
        Err(MachineError::Snapshot { reason: "this machine stages no snapshots".into() })
    }
}

/// What a [`RestoreStager`] prepared, for its machine's [`Machine::restore_staged`] (which
/// knows its type).
pub type StagedRestore = Box<dyn std::any::Any + Send>;

/// Prepares a snapshot apart from a machine's data while the snapshot is still arriving,
/// so that what is left to do once it is whole is short (see [`crate::staging`]).
pub trait RestoreStager: Send + 'static {
    /// Reads the whole snapshot from `input` (the bytes of the received file, waiting as
    /// they arrive) and prepares it, changing none of the machine's data. Runs on a thread
    /// of its own, concurrently with the machine's calls. Must refuse a stream that is not
    /// whole, as [`Machine::restore_from`] must: an error makes the adapter restore from
    /// the whole file instead.
    fn stage(self: Box<Self>, input: &mut dyn Read) -> Result<StagedRestore, MachineError>;
}

/// Takes a point-in-time copy of a machine's data (see [`Machine::snapshot_taker`]).
pub trait SnapshotTaker: Send + Sync + 'static {
    /// The data as they are at one moment during the call, with the Raft metadata blob
    /// stored with them at that moment. Runs concurrently with the machine's other calls
    /// (apply, restore): the copy must be of the data between two of them, never inside
    /// one, so that the blob names exactly the last entry the copy holds.
    fn take(self: Box<Self>) -> Result<Box<dyn SnapshotSource>, MachineError>;
}

/// A point-in-time copy of a machine's data (see [`SnapshotTaker::take`]), unchanged by
/// later applies.
pub trait SnapshotSource: Send + Sync + 'static {
    /// The Raft metadata blob stored with the data in the copy; `None` for a machine that
    /// never stored one.
    fn raft_meta(&self) -> Option<&[u8]>;

    /// Writes the data to `out` and returns the bytes written. Should stream: the data may
    /// be larger than memory.
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> Result<u64, MachineError>;
}

/// Bytes buffered between a snapshot file and the machine.
pub const SNAPSHOT_IO_BUFFER_BYTES: usize = 1024 * 1024;

/// A snapshot being written is synced each time this many more bytes are in it. A whole
/// snapshot (hundreds of MB) left dirty and synced at the end is a write-back of seconds
/// that every synced Raft append on the same disk waits behind; in steps of this size
/// each wait is a few milliseconds, and the write itself takes about as long.
pub const SNAPSHOT_SYNC_EVERY_BYTES: u64 = 8 * 1024 * 1024;

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
    snapshots: Arc<SnapshotDir>,
    /// The file [`RaftStateMachine::begin_receiving_snapshot`] handed out last.
    receiving: Option<Staged>,
    /// The machine's stager following that file, if the machine stages.
    staging: Option<Staging>,
}

impl<M: Machine> MachineStore<M> {
    /// Wraps `machine`, reading its Raft metadata blob back, and keeps snapshots in
    /// `snapshot_dir` (created if missing), each at most `snapshot_bytes_max` bytes.
    pub fn open(machine: M, snapshot_dir: &Path, snapshot_bytes_max: u64) -> Result<Self, MachineStoreError> {
        let applied = match machine.raft_meta()? {
            Some(blob) => AppliedState::decode(&blob)?,
            None => AppliedState::default(),
        };
        let snapshots = Arc::new(SnapshotDir::open(snapshot_dir, snapshot_bytes_max)?);
        Ok(MachineStore { machine: Some(machine), applied, snapshots, receiving: None, staging: None })
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
        let (meta, file) = self.snapshots.open_current().await?.ok_or_else(|| MachineStoreError::Lost {
            reason: "the snapshot file vanished while the store was open".into(),
        })?;
        let applied = AppliedState { last_applied: meta.last_log_id, last_membership: meta.last_membership };
        let blob = applied.encode()?;
        self.lend(move |machine| {
            machine.restore_from(&mut BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, file), &blob)
        })
        .await??;
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

    /// Starts the machine's stager on the file being received, if the machine stages. A
    /// stager that cannot start only costs the overlap: the install reads the whole file.
    fn start_staging(&self, file: &fs::File) -> Option<Staging> {
        let stager = match self.machine.as_ref().map(|m| m.restore_stager()) {
            Some(Ok(Some(stager))) => stager,
            Some(Ok(None)) | None => return None,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no snapshot stager: the snapshot is restored once it is whole");
                return None;
            }
        };
        match file.try_clone().and_then(|reader| Staging::start(stager, reader)) {
            Ok(staging) => Some(staging),
            Err(e) => {
                tracing::warn!(error = %e, "could not start staging: the snapshot is restored once it is whole");
                None
            }
        }
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

    // Only a handle is taken here, between applies; the copy is taken in `build_snapshot`,
    // which openraft runs concurrently with the applies that follow.
    async fn get_snapshot_builder(&mut self) -> MachineSnapshotBuilder {
        let taker = match self.machine.as_ref() {
            Some(machine) => machine.snapshot_taker().map_err(MachineStoreError::from),
            None => Err(MachineStoreError::Lost { reason: "a previous call panicked".into() }),
        };
        MachineSnapshotBuilder { taker: Some(taker), snapshots: self.snapshots.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let err = |e: MachineStoreError| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        // A transfer begun before is over: its stager stops.
        self.staging = None;
        let snapshots = self.snapshots.clone();
        let (staged, file) = blocking(move || snapshots.receive()).await.map_err(err)?;
        self.staging = self.start_staging(&file);
        self.receiving = Some(staged);
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let err = |e: MachineStoreError| sto_err(ErrorSubject::Snapshot(signature.clone()), ErrorVerb::Write, e);
        let mut file = *snapshot;
        file.flush().await.map_err(|e| err(self.snapshots.io_err(e)))?;
        let file = file.into_std().await;
        let snapshots = self.snapshots.clone();
        let receiving = self.receiving.take();
        let (staged, unsynced) = blocking(move || snapshots.adopt(file, receiving)).await.map_err(err)?;
        // The stager followed the file handed out; another file (a copy) is read whole.
        let staging = self.staging.take().filter(|_| unsynced.is_some());
        let applied = AppliedState { last_applied: meta.last_log_id, last_membership: meta.last_membership.clone() };
        let blob = applied.encode().map_err(|e| err(e.into()))?;
        // The received file reaches the disk while the machine installs from it (a
        // snapshot's worth of dirty pages takes seconds to sync); it is published only once
        // both are done.
        let path = staged.path.clone();
        let synced = tokio::task::spawn_blocking(move || match unsynced {
            Some(file) => file.sync_all().map_err(|e| io_err(&path, e)),
            None => Ok(()),
        });
        // The machine first, then the file: if a crash falls between them the machine is
        // ahead of the snapshot file, which openraft handles (it keeps or rebuilds a
        // snapshot); the other order could leave a snapshot file newer than the data.
        let path = staged.path.clone();
        let restored = self
            .lend(move |machine| {
                if let Some(staging) = staging {
                    match staging.finish() {
                        Ok(prepared) => {
                            return machine.restore_staged(prepared, &blob).map_err(MachineStoreError::from);
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            "staging the snapshot while it arrived failed: restoring it from the whole file"
                        ),
                    }
                }
                let file = fs::File::open(&path).map_err(|e| io_err(&path, e))?;
                let mut input = BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, file);
                machine.restore_from(&mut input, &blob).map_err(MachineStoreError::from)
            })
            .await
            .map_err(err)?;
        let synced = synced.await.map_err(|e| MachineStoreError::Lost { reason: e.to_string() }).and_then(|r| r);
        if let Err(e) = restored.and(synced) {
            staged.discard();
            return Err(err(e));
        }
        self.applied = applied;
        let snapshots = self.snapshots.clone();
        let meta = meta.clone();
        blocking(move || snapshots.publish(meta, staged)).await.map_err(err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let opened = self
            .snapshots
            .open_current()
            .await
            .map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(opened.map(|(meta, file)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice 19) and waits for it:
/// writing a snapshot out is seconds of CPU at a million records, and the node's own work
/// (consensus, apply, answering clients) must go first. At normal priority, three
/// validators writing out 150 MB each on a shared machine busy at half of the peak were
/// most of a second's commit latency (docs/performance.md, session 13).
/// A thread of its own, because a thread's priority cannot be raised again without
/// privileges, and the blocking pool's threads are shared.
fn in_background<R: Send>(work: impl FnOnce() -> R + Send) -> Result<R, MachineStoreError> {
    let lost = |reason: String| MachineStoreError::Lost { reason };
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("snapshot-build".into())
            .spawn_scoped(scope, || {
                lowest_cpu_priority();
                work()
            })
            .map_err(|e| lost(format!("start the snapshot thread: {e}")))?;
        thread.join().map_err(|_| lost("the snapshot thread panicked".into()))
    })
}

/// Sets the calling thread's nice value to 19; Linux keeps one per thread. A failure is
/// logged and the work goes on at the priority it has.
fn lowest_cpu_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the snapshot thread's priority");
        }
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> Result<R, MachineStoreError> + Send + 'static,
) -> Result<R, MachineStoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| MachineStoreError::Lost { reason: e.to_string() })?
}

/// Takes the machine's copy, writes it out and publishes it; openraft runs it concurrently
/// with applying.
///
/// The snapshot's last log id and membership are read from the blob inside the copy, not
/// from the adapter's state when the builder was made: the machine stores the blob in the
/// same atomic write as the data of the entry it names (module docs), and the copy is of
/// the data between two writes, so the blob names exactly the last entry the copy holds —
/// whatever was applied while the copy was being taken. That entry is applied, so openraft
/// may purge the log up to it.
pub struct MachineSnapshotBuilder {
    /// Taken by the one `build_snapshot` call.
    taker: Option<Result<Box<dyn SnapshotTaker>, MachineStoreError>>,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for MachineSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let err = |e: MachineStoreError| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        let taker = self
            .taker
            .take()
            .unwrap_or_else(|| Err(MachineStoreError::Lost { reason: "snapshot builder used twice".into() }))
            .map_err(err)?;
        let snapshots = self.snapshots.clone();
        let (meta, file) = blocking(move || {
            let source = taker.take()?;
            let applied = match source.raft_meta() {
                Some(blob) => AppliedState::decode(blob)?,
                None => AppliedState::default(),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership,
                snapshot_id: snapshot_id(applied.last_applied),
            };
            let staged = in_background(|| snapshots.stage(|out| source.write_to(out)))??;
            // Opened before publishing: the handle reads the data even if a newer snapshot
            // on disk means this one is discarded.
            let file = fs::File::open(&staged.path).map_err(|e| io_err(&staged.path, e))?;
            snapshots.publish(meta.clone(), staged)?;
            Ok((meta, file))
        })
        .await
        .map_err(err)?;
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
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

fn io_err(path: &Path, e: std::io::Error) -> MachineStoreError {
    MachineStoreError::SnapshotIo { path: path.display().to_string(), reason: e.to_string() }
}

/// A snapshot's data file before it is current: being built, received or installed.
struct Staged {
    seq: u64,
    path: PathBuf,
    bytes: u64,
}

impl Staged {
    /// Removes the file; a failure only leaves a leftover that the next open removes.
    fn discard(self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a discarded snapshot file");
        }
    }
}

/// The current snapshot as the pointer file names it.
struct Current {
    meta: SnapshotMeta,
    seq: u64,
    bytes: u64,
}

/// The snapshot directory: one current snapshot, and the files of snapshots under way.
///
/// Files: `current.meta` (version byte, metadata length (u32 BE), metadata (codec bytes),
/// data file number (u64 BE), data length (u64 BE)) names the current data file
/// `<number>.snap`, which holds the machine's bytes alone (what openraft sends). Files
/// being built are `<number>.tmp`, being received `<number>.recv`.
struct SnapshotDir {
    dir: PathBuf,
    bytes_max: u64,
    /// The current snapshot; the lock also serialises publishing and opening.
    current: Mutex<Option<Current>>,
    /// Number of the next data file.
    next_seq: AtomicU64,
    /// The last log id the current snapshot covers, published after each durable switch.
    durable: watch::Sender<Option<LogId>>,
}

const POINTER_FILE: &str = "current.meta";
const POINTER_TMP: &str = "current.meta.tmp";
/// The single-file layout of earlier versions; its data are in the ledger's old snapshot
/// format, which this build cannot read, so it is removed (and rebuilt if needed).
const LEGACY_FILES: [&str; 2] = ["current.snapshot", "current.snapshot.tmp"];
const DATA_EXT: &str = "snap";
const BUILDING_EXT: &str = "tmp";
const RECEIVING_EXT: &str = "recv";

impl SnapshotDir {
    fn open(dir: &Path, bytes_max: u64) -> Result<Self, MachineStoreError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let this = SnapshotDir {
            dir: dir.to_path_buf(),
            bytes_max,
            current: Mutex::new(None),
            next_seq: AtomicU64::new(1),
            durable: watch::Sender::new(None),
        };
        for legacy in LEGACY_FILES {
            let path = dir.join(legacy);
            if path.exists() {
                tracing::warn!(path = %path.display(), "removing a snapshot file of the old layout");
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        let current = this.read_pointer()?;
        let keep = current.as_ref().map(|c| c.seq);
        for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let path = entry.map_err(|e| io_err(dir, e))?.path();
            let leftover = match (file_seq(&path), path.extension().and_then(|e| e.to_str())) {
                (Some(seq), Some(DATA_EXT)) => Some(seq) != keep,
                (Some(_), Some(BUILDING_EXT | RECEIVING_EXT)) => true,
                _ => path.file_name().is_some_and(|n| n == POINTER_TMP),
            };
            if leftover {
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        this.next_seq.store(keep.map_or(1, |s| s + 1), Ordering::Relaxed);
        this.durable.send_replace(current.as_ref().and_then(|c| c.meta.last_log_id));
        *this.lock()? = current;
        Ok(this)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Current>>, MachineStoreError> {
        self.current.lock().map_err(|_| MachineStoreError::Lost { reason: "snapshot lock poisoned".into() })
    }

    fn data_path(&self, seq: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{seq:020}.{ext}"))
    }

    fn check_size(&self, bytes: u64) -> Result<(), MachineStoreError> {
        if bytes > self.bytes_max {
            return Err(MachineStoreError::SnapshotTooLarge { bytes, max: self.bytes_max });
        }
        Ok(())
    }

    fn io_err(&self, e: std::io::Error) -> MachineStoreError {
        io_err(&self.dir, e)
    }

    fn malformed(&self, reason: impl Into<String>) -> MachineStoreError {
        let path = self.dir.join(POINTER_FILE);
        MachineStoreError::SnapshotMalformed { path: path.display().to_string(), reason: reason.into() }
    }

    fn read_pointer(&self) -> Result<Option<Current>, MachineStoreError> {
        let path = self.dir.join(POINTER_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
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
        let (seq, rest) = split_u64(rest).ok_or_else(|| self.malformed("truncated data file number"))?;
        let (len, rest) = split_u64(rest).ok_or_else(|| self.malformed("truncated data length"))?;
        if !rest.is_empty() {
            return Err(self.malformed(format!("{} trailing bytes", rest.len())));
        }
        let data = self.data_path(seq, DATA_EXT);
        let on_disk = fs::metadata(&data).map_err(|e| io_err(&data, e))?.len();
        if on_disk != len {
            return Err(self.malformed(format!("data file {} holds {on_disk} bytes, not {len}", data.display())));
        }
        self.check_size(len)?;
        Ok(Some(Current { meta, seq, bytes: len }))
    }

    fn write_pointer(&self, current: &Current) -> Result<(), MachineStoreError> {
        let meta_bytes = codec::encode("snapshot metadata", STORAGE_VERSION, &current.meta)?;
        let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| self.malformed("metadata over 4 GiB"))?;
        let mut bytes = vec![STORAGE_VERSION];
        bytes.extend_from_slice(&meta_len.to_be_bytes());
        bytes.extend_from_slice(&meta_bytes);
        bytes.extend_from_slice(&current.seq.to_be_bytes());
        bytes.extend_from_slice(&current.bytes.to_be_bytes());
        let tmp = self.dir.join(POINTER_TMP);
        let mut file = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(|e| io_err(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, self.dir.join(POINTER_FILE)).map_err(|e| io_err(&tmp, e))?;
        self.sync_dir()
    }

    /// A rename is durable only once the directory entry is.
    fn sync_dir(&self) -> Result<(), MachineStoreError> {
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| self.io_err(e))
    }

    /// Writes a snapshot through `write` into a new file, synced, refusing it once it
    /// passes the size bound.
    fn stage(
        &self,
        write: impl FnOnce(&mut dyn Write) -> Result<u64, MachineError>,
    ) -> Result<Staged, MachineStoreError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.data_path(seq, BUILDING_EXT);
        let file = fs::File::create_new(&path).map_err(|e| io_err(&path, e))?;
        let mut out = Bounded {
            inner: BufWriter::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, Paced::new(&file, SNAPSHOT_SYNC_EVERY_BYTES)),
            bytes: 0,
            max: self.bytes_max,
            over: false,
        };
        let written = write(&mut out);
        let flushed = out.flush();
        let (bytes, over) = (out.bytes, out.over);
        drop(out);
        let staged = Staged { seq, path, bytes };
        let result = if over {
            Err(MachineStoreError::SnapshotTooLarge { bytes, max: self.bytes_max })
        } else {
            written
                .map_err(MachineStoreError::from)
                .and_then(|_| flushed.and_then(|()| file.sync_all()).map_err(|e| io_err(&staged.path, e)))
        };
        match result {
            Ok(()) => Ok(staged),
            Err(e) => {
                staged.discard();
                Err(e)
            }
        }
    }

    /// A new file to receive a snapshot into. openraft receives one snapshot at a time,
    /// so the files of earlier, abandoned transfers are removed.
    fn receive(&self) -> Result<(Staged, fs::File), MachineStoreError> {
        for entry in fs::read_dir(&self.dir).map_err(|e| self.io_err(e))? {
            let path = entry.map_err(|e| self.io_err(e))?.path();
            if file_seq(&path).is_some() && path.extension().is_some_and(|e| e == RECEIVING_EXT) {
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.data_path(seq, RECEIVING_EXT);
        let file =
            fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| io_err(&path, e))?;
        Ok((Staged { seq, path, bytes: 0 }, file))
    }

    /// Takes a received snapshot as staged: the file handed out by [`SnapshotDir::receive`]
    /// as it is, synced, or any other file (openraft's own tests hand over another store's
    /// snapshot) by copying it.
    ///
    /// Returns, with the file as staged, the handle still to be synced before it is
    /// published (`None` for a copy, synced already): the caller syncs it while the machine
    /// installs, rather than before.
    fn adopt(
        &self,
        mut file: fs::File,
        receiving: Option<Staged>,
    ) -> Result<(Staged, Option<fs::File>), MachineStoreError> {
        let stat = file.metadata().map_err(|e| self.io_err(e))?;
        self.check_size(stat.len())?;
        if let Some(ours) = receiving {
            match fs::metadata(&ours.path) {
                Ok(m) if m.dev() == stat.dev() && m.ino() == stat.ino() => {
                    return Ok((Staged { bytes: stat.len(), ..ours }, Some(file)));
                }
                _ => ours.discard(),
            }
        }
        let staged = self.stage(|out| {
            file.seek(SeekFrom::Start(0))
                .and_then(|_| std::io::copy(&mut file, out))
                .map_err(|e| MachineError::Storage { reason: format!("copy received snapshot: {e}") })
        })?;
        Ok((staged, None))
    }

    /// Makes `staged` the current snapshot under `meta`, unless the current one is newer
    /// (then `staged` is discarded).
    fn publish(&self, meta: SnapshotMeta, staged: Staged) -> Result<(), MachineStoreError> {
        let mut current = self.lock()?;
        if current.as_ref().is_some_and(|c| c.meta.last_log_id > meta.last_log_id) {
            tracing::info!(snapshot = %meta, "snapshot not saved: a newer one is on disk");
            staged.discard();
            return Ok(());
        }
        let data = self.data_path(staged.seq, DATA_EXT);
        fs::rename(&staged.path, &data).map_err(|e| io_err(&staged.path, e))?;
        self.sync_dir()?;
        let new = Current { meta, seq: staged.seq, bytes: staged.bytes };
        self.write_pointer(&new)?;
        if let Some(old) = current.take() {
            let old = self.data_path(old.seq, DATA_EXT);
            if let Err(e) = fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove the previous snapshot");
            }
        }
        tracing::info!(snapshot = %new.meta, bytes = new.bytes, "snapshot saved");
        self.durable.send_replace(new.meta.last_log_id);
        *current = Some(new);
        Ok(())
    }

    /// The current snapshot's metadata and its data file, opened for reading. The handle
    /// reads the data even if a newer snapshot replaces the file meanwhile.
    async fn open_current(self: &Arc<Self>) -> Result<Option<(SnapshotMeta, fs::File)>, MachineStoreError> {
        let this = self.clone();
        blocking(move || {
            let current = this.lock()?;
            let Some(c) = current.as_ref() else { return Ok(None) };
            let path = this.data_path(c.seq, DATA_EXT);
            let file = fs::File::open(&path).map_err(|e| io_err(&path, e))?;
            Ok(Some((c.meta.clone(), file)))
        })
        .await
    }
}

/// The number of a file named `<number>.<ext>` in the snapshot directory.
fn file_seq(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// What [`Paced`] needs of a file: to make what was written durable.
trait SyncData {
    fn sync_data(&self) -> std::io::Result<()>;
}

impl SyncData for &fs::File {
    fn sync_data(&self) -> std::io::Result<()> {
        fs::File::sync_data(self)
    }
}

/// A writer that syncs its file each time `every` more bytes went into it, so the file
/// reaches the disk in steps instead of in one burst when it is closed.
struct Paced<F: Write + SyncData> {
    file: F,
    every: u64,
    unsynced: u64,
}

impl<F: Write + SyncData> Paced<F> {
    fn new(file: F, every: u64) -> Self {
        Paced { file, every: every.max(1), unsynced: 0 }
    }
}

impl<F: Write + SyncData> Write for Paced<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= self.every {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A writer that refuses to go past `max` bytes.
struct Bounded<W: Write> {
    inner: W,
    bytes: u64,
    max: u64,
    over: bool,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes + buf.len() as u64 > self.max {
            self.over = true;
            return Err(std::io::Error::other(format!("snapshot over the limit of {} bytes", self.max)));
        }
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A file in memory that notes how many bytes it held at each sync.
    #[derive(Default)]
    struct Noted {
        bytes: RefCell<Vec<u8>>,
        synced_at: RefCell<Vec<usize>>,
    }

    impl Write for &Noted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SyncData for &Noted {
        fn sync_data(&self) -> std::io::Result<()> {
            self.synced_at.borrow_mut().push(self.bytes.borrow().len());
            Ok(())
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_snapshot_is_written_at_the_lowest_priority_and_the_caller_keeps_its_own() {
        // SAFETY: reads the calling thread's own nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let (inside, name) = in_background(|| (nice(), std::thread::current().name().map(String::from))).unwrap();
        assert_eq!((inside, name.as_deref()), (19, Some("snapshot-build")));
        assert_eq!(nice(), before, "the caller's thread is unchanged");
        let panicked = in_background(|| panic!("in the build")).unwrap_err();
        assert!(panicked.to_string().contains("snapshot thread panicked"), "{panicked}");
    }

    #[test]
    fn a_paced_file_is_synced_each_time_the_step_is_passed() {
        let file = Noted::default();
        let mut out = BufWriter::with_capacity(3, Paced::new(&file, 10));
        for chunk in [&b"abcd"[..], b"efghijk", b"l", b"mnopqrstuvwxyz0123456789"] {
            out.write_all(chunk).unwrap();
        }
        out.flush().unwrap();
        drop(out);
        assert_eq!(file.bytes.borrow().as_slice(), b"abcdefghijklmnopqrstuvwxyz0123456789");
        // Writes of 4, 7, 1 and 24 bytes (the buffer passes large writes straight on): a
        // sync once 10 or more are unsynced, counted afresh after each.
        assert_eq!(*file.synced_at.borrow(), vec![11, 36]);
    }
}
