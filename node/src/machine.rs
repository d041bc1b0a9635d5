//! The ledger as Raft's state machine: each committed entry is one proposed block, applied
//! to the store with the Raft metadata in the same atomic batch.
//!
//! The leader proposes blocks without knowing which of its in-flight proposals commits
//! first, so a proposal carries no height: the machine gives it the next height and, should
//! a new leader's clock be behind, the previous block's time. Both are functions of the log
//! alone, so every node stores identical blocks.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use veritrace_consensus::{Machine, MachineError};
use veritrace_ledger::block::{Block, BlockHeader};
use veritrace_ledger::codec;
use veritrace_ledger::kv::RocksBackend;
use veritrace_ledger::org::NodeId;
use veritrace_ledger::record::SignedRecord;
use veritrace_ledger::store::Store;
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
}

/// Applied headers buffered for slow listeners.
pub const APPLIED_ANNOUNCEMENTS_MAX: usize = 1_024;

impl LedgerMachine {
    pub fn new(store: SharedStore) -> (LedgerMachine, broadcast::Receiver<BlockHeader>) {
        let (applied, rx) = broadcast::channel(APPLIED_ANNOUNCEMENTS_MAX);
        (LedgerMachine { store, applied }, rx)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BlockHeader> {
        self.applied.subscribe()
    }
}

fn merr(what: &str, e: impl std::fmt::Display) -> MachineError {
    MachineError::Storage { reason: format!("{what}: {e}") }
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

    fn snapshot(&self) -> Result<Vec<u8>, MachineError> {
        let store = self.store.read().map_err(|_| merr("store", "lock poisoned"))?;
        store.export_snapshot().map_err(|e| merr("snapshot", e))
    }

    fn restore(&mut self, snapshot: &[u8], raft_meta: &[u8]) -> Result<(), MachineError> {
        let mut store = self.store.write().map_err(|_| merr("store", "lock poisoned"))?;
        store.install_snapshot(snapshot, raft_meta).map_err(|e| MachineError::Snapshot { reason: e.to_string() })?;
        tracing::info!(height = store.head().height, log_size = store.head().log_size, "installed ledger snapshot");
        Ok(())
    }
}
