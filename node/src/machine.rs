//! The ledger as Raft's state machine: each committed entry is one proposed block, applied
//! to the store with the Raft metadata in the same atomic batch.
//!
//! The leader proposes blocks without knowing which of its in-flight proposals commits
//! first, so a proposal carries no height: the machine gives it the next height and, should
//! a new leader's clock be behind, the previous block's time. Both are functions of the log
//! alone, so every node stores identical blocks.

use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use veritrace_consensus::{Machine, MachineError, RestoreStager, SnapshotSource, SnapshotTaker, StagedRestore};
use veritrace_ledger::block::{Block, BlockHeader, Checkpoint};
use veritrace_ledger::codec;
use veritrace_ledger::kv::{RocksBackend, RocksView};
use veritrace_ledger::org::{NodeId, ValidatorSet};
use veritrace_ledger::record::SignedRecord;
use veritrace_ledger::state::{StateKey, StateValue};
use veritrace_ledger::store::{SnapshotStager, SnapshotView, StagedSnapshot, Store, StoreError};
use veritrace_ledger::view::Receipt;

/// The ledger store, shared by the state machine (writes) and the API (reads).
pub type SharedStore = Arc<RwLock<Store<RocksBackend>>>;

/// What a leader puts in one Raft entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proposal {
    pub time_ms: u64,
    pub proposer: NodeId,
    pub records: Vec<SignedRecord>,
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

/// What applying one proposal returned: the header and a receipt per record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppliedBlock {
    pub header: BlockHeader,
    pub receipts: Vec<Receipt>,
}

impl AppliedBlock {
    pub fn decode(bytes: &[u8]) -> Result<AppliedBlock, codec::DecodeError> {
        codec::decode("applied block", bytes)
    }
}

/// The state machine over the shared store. Applied headers are announced on a bounded
/// broadcast channel (checkpoint signing listens); a slow listener misses announcements
/// rather than slowing apply, and catches up from the store.
pub struct LedgerMachine {
    store: SharedStore,
    applied: broadcast::Sender<BlockHeader>,
    gate: Arc<SnapshotGate>,
}

/// Heights below the head searched for a complete checkpoint in an installed snapshot.
pub const SNAPSHOT_CHECKPOINT_SEARCH: u64 = 1_000;

/// Whether the ledger may be served. A node that installed a snapshot serves it only once
/// a complete checkpoint — signed by a quorum of the validators it trusted *before* the
/// snapshot — vouches for it: one carried in the snapshot at install time, or the first
/// one gathered afterwards. Until then submissions and queries answer UNAVAILABLE.
#[derive(Default)]
pub struct SnapshotGate {
    /// (height of the installed snapshot, validators trusted before it).
    pending: Mutex<Option<(u64, ValidatorSet)>>,
}

impl SnapshotGate {
    /// The height of a snapshot still waiting for its checkpoint.
    pub fn pending(&self) -> Option<u64> {
        self.pending.lock().expect("gate lock").as_ref().map(|(h, _)| *h)
    }

    fn hold(&self, height: u64, trusted: ValidatorSet) {
        *self.pending.lock().expect("gate lock") = Some((height, trusted));
    }

    /// Opens the gate if `checkpoint` is complete against the trusted validators, is at or
    /// above the snapshot's height, and the store extends it.
    pub fn offer(&self, store: &Store<RocksBackend>, checkpoint: &Checkpoint) {
        let mut pending = self.pending.lock().expect("gate lock");
        let Some((height, trusted)) = pending.as_ref() else { return };
        if checkpoint.header.height < *height {
            return;
        }
        if store.verify_against_checkpoint(checkpoint, trusted).is_ok() {
            tracing::info!(
                snapshot = height,
                checkpoint = checkpoint.header.height,
                "installed snapshot verified against a complete checkpoint; serving"
            );
            *pending = None;
        }
    }
}

/// Applied headers buffered for slow listeners.
pub const APPLIED_ANNOUNCEMENTS_MAX: usize = 1_024;

impl LedgerMachine {
    pub fn new(store: SharedStore, gate: Arc<SnapshotGate>) -> (LedgerMachine, broadcast::Receiver<BlockHeader>) {
        let (applied, rx) = broadcast::channel(APPLIED_ANNOUNCEMENTS_MAX);
        (LedgerMachine { store, applied, gate }, rx)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BlockHeader> {
        self.applied.subscribe()
    }
}

fn merr(what: &str, e: impl std::fmt::Display) -> MachineError {
    MachineError::Storage { reason: format!("{what}: {e}") }
}

impl LedgerMachine {
    /// Tells the listeners (checkpoint signing) of the head a snapshot jumped to.
    fn announce_head(&self, store: &Store<RocksBackend>) {
        if let Ok(Some(h)) = store.header(store.head().height) {
            let _ = self.applied.send(h);
        }
    }
}

impl Machine for LedgerMachine {
    fn apply(&mut self, _index: u64, payload: &[u8], raft_meta: &[u8]) -> Result<Vec<u8>, MachineError> {
        let proposal: Proposal = codec::decode("proposal", payload).map_err(|e| merr("proposal", e))?;
        let mut store = self.store.write().map_err(|_| merr("store", "lock poisoned"))?;
        let head = store.head().clone();
        let block = Block {
            height: head.height + 1,
            time_ms: proposal.time_ms.max(head.time_ms),
            proposer: proposal.proposer,
            records: proposal.records,
        };
        let (header, receipts) = store.apply_block_with_meta(&block, raft_meta).map_err(|e| merr("apply", e))?;
        drop(store);
        // No listener is fine: the send only fails when nobody subscribes.
        let _ = self.applied.send(header.clone());
        Ok(codec::encode(&AppliedBlock { header, receipts }))
    }

    fn save_raft_meta(&mut self, raft_meta: &[u8]) -> Result<(), MachineError> {
        let store = self.store.read().map_err(|_| merr("store", "lock poisoned"))?;
        store.save_replication_meta(raft_meta).map_err(|e| merr("save raft meta", e))
    }

    fn raft_meta(&self) -> Result<Option<Vec<u8>>, MachineError> {
        let store = self.store.read().map_err(|_| merr("store", "lock poisoned"))?;
        store.replication_meta().map_err(|e| merr("read raft meta", e))
    }

    /// A handle on the shared store; the view is taken by `LedgerSnapshotTaker`, off the
    /// apply path.
    fn snapshot_taker(&self) -> Result<Box<dyn SnapshotTaker>, MachineError> {
        Ok(Box::new(LedgerSnapshotTaker(self.store.clone())))
    }

    fn restore_from(&mut self, input: &mut dyn std::io::Read, raft_meta: &[u8]) -> Result<(), MachineError> {
        self.install(false, |store| store.install_snapshot_from(input, raft_meta))
    }

    /// The ledger's snapshot stager: reads, checks and writes the table files of a
    /// snapshot while its chunks arrive, with no lock on the store.
    fn restore_stager(&self) -> Result<Option<Box<dyn RestoreStager>>, MachineError> {
        let store = self.store.read().map_err(|_| merr("store", "lock poisoned"))?;
        let stager = store.snapshot_stager().map_err(|e| merr("snapshot stager", e))?;
        Ok(Some(Box::new(LedgerStager(stager))))
    }

    fn restore_staged(&mut self, staged: StagedRestore, raft_meta: &[u8]) -> Result<(), MachineError> {
        let staged = staged
            .downcast::<StagedSnapshot>()
            .map_err(|_| MachineError::Snapshot { reason: "the staged snapshot is not a ledger's".into() })?;
        self.install(true, |store| store.install_staged(*staged, raft_meta))
    }
}

impl LedgerMachine {
    /// Installs a snapshot into the store by `how` (`staged`: from what was staged while it
    /// arrived), then checks it against the newest complete checkpoint in it.
    fn install(
        &mut self,
        staged: bool,
        how: impl FnOnce(&mut Store<RocksBackend>) -> Result<(), StoreError>,
    ) -> Result<(), MachineError> {
        let mut store = self.store.write().map_err(|_| merr("store", "lock poisoned"))?;
        let trusted = validators_of(&store)?;
        let started = std::time::Instant::now();
        how(&mut store).map_err(|e| MachineError::Snapshot { reason: e.to_string() })?;
        let head = store.head().clone();
        tracing::info!(
            height = head.height,
            log_size = head.log_size,
            staged,
            secs = started.elapsed().as_secs_f64(),
            full_check = %store.last_full_check().map(ToString::to_string).unwrap_or_default(),
            "installed ledger snapshot"
        );
        // The newest checkpoint in the snapshot with a quorum of the validators trusted
        // before it must be one the snapshot extends; a snapshot that contradicts its own
        // checkpoint is refused.
        for h in (head.height.saturating_sub(SNAPSHOT_CHECKPOINT_SEARCH)..=head.height).rev() {
            let Some(cp) = store.checkpoint(h).map_err(|e| merr("read checkpoint", e))? else { continue };
            if cp.verify(&head.ledger_id, &trusted).is_err() {
                continue;
            }
            store.verify_against_checkpoint(&cp, &trusted).map_err(|e| MachineError::Snapshot {
                reason: format!("snapshot at height {} does not extend its checkpoint: {e}", head.height),
            })?;
            tracing::info!(
                snapshot = head.height,
                checkpoint = h,
                "installed snapshot verified against a complete checkpoint"
            );
            self.announce_head(&store);
            return Ok(());
        }
        tracing::warn!(
            snapshot = head.height,
            "installed snapshot carries no complete checkpoint; not serving until one arrives"
        );
        self.gate.hold(head.height, trusted);
        self.announce_head(&store);
        Ok(())
    }
}

/// Stages a ledger snapshot as it arrives (see [`Machine::restore_stager`]).
struct LedgerStager(SnapshotStager);

impl RestoreStager for LedgerStager {
    fn stage(self: Box<Self>, input: &mut dyn std::io::Read) -> Result<StagedRestore, MachineError> {
        let started = std::time::Instant::now();
        let staged = self.0.stage(input).map_err(|e| MachineError::Snapshot { reason: e.to_string() })?;
        // From the first chunk to the last and past it: the transfer is most of it.
        tracing::info!(secs = started.elapsed().as_secs_f64(), "staged ledger snapshot");
        Ok(Box::new(staged))
    }
}

/// Takes the ledger's snapshot view while blocks go on being applied: the memtables are
/// flushed first with no lock held (seconds at a million records), then the RocksDB
/// checkpoint is taken under the store's read lock: hard links, and a copy of the
/// write-ahead log written since that flush (no flush under the lock). The read lock keeps
/// applies and installs (which take the write lock) out of the checkpoint, so the view
/// holds whole blocks with the Raft metadata written with them. (A RocksDB snapshot would
/// borrow the database the lock guards, so it could not outlive the guard.)
struct LedgerSnapshotTaker(SharedStore);

impl SnapshotTaker for LedgerSnapshotTaker {
    fn take(self: Box<Self>) -> Result<Box<dyn SnapshotSource>, MachineError> {
        let started = std::time::Instant::now();
        let prepare = self.0.read().map_err(|_| merr("store", "lock poisoned"))?.prepare_snapshot_view();
        prepare().map_err(|e| merr("flush before snapshot view", e))?;
        let flushed = started.elapsed();
        let locked = std::time::Instant::now();
        let store = self.0.read().map_err(|_| merr("store", "lock poisoned"))?;
        let view = store.snapshot_view().map_err(|e| merr("snapshot view", e))?;
        drop(store);
        let locked = locked.elapsed();
        let raft_meta = view.replication_meta().map_err(|e| merr("snapshot view", e))?;
        // `locked_secs` is what applies can wait: the figure to watch in the commit
        // latency's tail.
        tracing::info!(
            height = view.head().height,
            flush_secs = flushed.as_secs_f64(),
            locked_secs = locked.as_secs_f64(),
            open_secs = started.elapsed().saturating_sub(flushed + locked).as_secs_f64(),
            "took ledger snapshot view"
        );
        Ok(Box::new(LedgerSnapshot(view, raft_meta)))
    }
}

/// The ledger as it was when the view was taken, and the Raft metadata stored in it.
struct LedgerSnapshot(SnapshotView<RocksView>, Option<Vec<u8>>);

impl SnapshotSource for LedgerSnapshot {
    fn raft_meta(&self) -> Option<&[u8]> {
        self.1.as_deref()
    }

    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> Result<u64, MachineError> {
        let head = self.0.head();
        let (height, started) = (head.height, std::time::Instant::now());
        let bytes = self.0.export_to(out).map_err(|e| merr("snapshot", e))?;
        tracing::info!(height, bytes, secs = started.elapsed().as_secs_f64(), "wrote ledger snapshot");
        Ok(bytes)
    }
}

/// The validator set of a store's current state (the genesis set if governance never
/// changed it).
fn validators_of(store: &Store<RocksBackend>) -> Result<ValidatorSet, MachineError> {
    match store.state_value(&StateKey::Validators).map_err(|e| merr("read validators", e))? {
        Some(StateValue::Validators(v)) => Ok(v),
        _ => Ok(store.genesis().map_err(|e| merr("read genesis", e))?.validator_set()),
    }
}
