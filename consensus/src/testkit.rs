//! Test doubles, so Raft can be exercised without the ledger or a network: [`MemMachine`],
//! an in-memory state machine, and [`LocalTransport`], RPCs between Raft nodes in one
//! process. Not for production: the machine forgets everything with its process and the
//! transport reaches only handles registered with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{self, STORAGE_VERSION};
use crate::machine::{Machine, MachineError, RestoreStager, SnapshotSource, SnapshotTaker, StagedRestore};
use crate::network::{RaftRpc, RaftRpcReply, RaftTransport, RpcServer, TransportError};
use crate::types::{ConsensusRaft, NodeId, PeerInfo};

/// What a [`MemMachine`] holds: every applied payload with its log index, and a running
/// hash over them, so two machines can be compared cheaply and completely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemContents {
    pub payloads: Vec<(u64, Vec<u8>)>,
    pub hash: u64,
}

#[derive(Default)]
struct MemState {
    contents: MemContents,
    raft_meta: Option<Vec<u8>>,
    applies: u64,
    restores: u64,
    /// Of the restores, those of a snapshot staged while it arrived.
    staged_restores: u64,
    /// How long each restore takes at least (a ledger's install is seconds long).
    restore_delay: Duration,
}

/// An in-memory [`Machine`]. Clones share the state, so a test keeps one clone to look at
/// what the Raft node applied, and can hand the same machine to a restarted node.
///
/// Each apply returns the running hash after it (8 bytes, big-endian).
#[derive(Clone, Default)]
pub struct MemMachine {
    state: Arc<Mutex<MemState>>,
}

// FNV-1a: not cryptographic, only a cheap, deterministic fingerprint for comparisons.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The running hash after applying `payload` at `index` to one that was `before`.
fn running_hash(before: u64, index: u64, payload: &[u8]) -> u64 {
    fnv(fnv(fnv(before, &index.to_be_bytes()), &(payload.len() as u64).to_be_bytes()), payload)
}

impl MemMachine {
    pub fn new() -> Self {
        MemMachine::default()
    }

    // A test looking at a machine whose user panicked still wants to see it.
    fn state(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the applied payloads and hash.
    pub fn contents(&self) -> MemContents {
        self.state().contents.clone()
    }

    /// How many payloads were applied by `apply` (not counting restores).
    pub fn applies(&self) -> u64 {
        self.state().applies
    }

    /// How many snapshots were restored.
    pub fn restores(&self) -> u64 {
        self.state().restores
    }

    /// How many of the restores were of a snapshot staged while it arrived.
    pub fn staged_restores(&self) -> u64 {
        self.state().staged_restores
    }

    /// Makes every later restore take at least `delay`, as installing a large ledger does.
    pub fn slow_restores(&self, delay: Duration) {
        self.state().restore_delay = delay;
    }
}

impl Machine for MemMachine {
    fn apply(&mut self, index: u64, payload: &[u8], raft_meta: &[u8]) -> Result<Vec<u8>, MachineError> {
        let mut state = self.state();
        let base = if state.contents.payloads.is_empty() { FNV_OFFSET } else { state.contents.hash };
        let hash = running_hash(base, index, payload);
        state.contents.payloads.push((index, payload.to_vec()));
        state.contents.hash = hash;
        state.raft_meta = Some(raft_meta.to_vec());
        state.applies += 1;
        Ok(hash.to_be_bytes().to_vec())
    }

    fn save_raft_meta(&mut self, raft_meta: &[u8]) -> Result<(), MachineError> {
        self.state().raft_meta = Some(raft_meta.to_vec());
        Ok(())
    }

    fn raft_meta(&self) -> Result<Option<Vec<u8>>, MachineError> {
        Ok(self.state().raft_meta.clone())
    }

    fn snapshot_taker(&self) -> Result<Box<dyn SnapshotTaker>, MachineError> {
        Ok(Box::new(self.clone()))
    }

    fn restore_from(&mut self, input: &mut dyn std::io::Read, raft_meta: &[u8]) -> Result<(), MachineError> {
        let contents = read_contents(input)?;
        self.install(contents, raft_meta);
        Ok(())
    }

    fn restore_stager(&self) -> Result<Option<Box<dyn RestoreStager>>, MachineError> {
        Ok(Some(Box::new(MemStager)))
    }

    fn restore_staged(&mut self, staged: StagedRestore, raft_meta: &[u8]) -> Result<(), MachineError> {
        let contents = staged
            .downcast::<MemContents>()
            .map_err(|_| MachineError::Snapshot { reason: "staged by another kind of machine".into() })?;
        self.install(*contents, raft_meta);
        self.state().staged_restores += 1;
        Ok(())
    }
}

impl MemMachine {
    /// Replaces the contents, after the test's delay.
    fn install(&mut self, contents: MemContents, raft_meta: &[u8]) {
        let delay = self.state().restore_delay;
        std::thread::sleep(delay);
        let mut state = self.state();
        state.contents = contents;
        state.raft_meta = Some(raft_meta.to_vec());
        state.restores += 1;
    }
}

/// A [`MemMachine`]'s stager: reads and checks the contents as they arrive.
struct MemStager;

impl RestoreStager for MemStager {
    fn stage(self: Box<Self>, input: &mut dyn std::io::Read) -> Result<StagedRestore, MachineError> {
        Ok(Box::new(read_contents(input)?))
    }
}

/// Reads a [`MemMachine`]'s snapshot, refusing one whose running hash is not its payloads'.
fn read_contents(input: &mut dyn std::io::Read) -> Result<MemContents, MachineError> {
    let refuse = |reason: String| MachineError::Snapshot { reason };
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| refuse(e.to_string()))?;
    let contents: MemContents =
        codec::decode("mem machine snapshot", STORAGE_VERSION, &bytes).map_err(|e| refuse(e.to_string()))?;
    let hash = contents.payloads.iter().fold(FNV_OFFSET, |h, (index, payload)| running_hash(h, *index, payload));
    if !contents.payloads.is_empty() && hash != contents.hash {
        return Err(refuse(format!("running hash {:x}, the payloads hash to {hash:x}", contents.hash)));
    }
    Ok(contents)
}

impl SnapshotTaker for MemMachine {
    // Under the state's lock, so between two applies.
    fn take(self: Box<Self>) -> Result<Box<dyn SnapshotSource>, MachineError> {
        let state = self.state();
        Ok(Box::new(MemSource(state.contents.clone(), state.raft_meta.clone())))
    }
}

/// A [`MemMachine`]'s contents and Raft metadata blob when the copy was taken.
struct MemSource(MemContents, Option<Vec<u8>>);

impl SnapshotSource for MemSource {
    fn raft_meta(&self) -> Option<&[u8]> {
        self.1.as_deref()
    }

    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> Result<u64, MachineError> {
        let bytes = codec::encode("mem machine snapshot", STORAGE_VERSION, &self.0)
            .map_err(|e| MachineError::Storage { reason: e.to_string() })?;
        out.write_all(&bytes).map_err(|e| MachineError::Storage { reason: e.to_string() })?;
        Ok(bytes.len() as u64)
    }
}

/// A [`PeerInfo`] for node `id` of an in-process cluster.
pub fn local_peer(id: NodeId) -> PeerInfo {
    PeerInfo { peer_id: format!("local-{id}"), addr: format!("/memory/{id}") }
}

/// RPCs between Raft nodes of one process: a registry of each node's [`RpcServer`].
/// Every request and reply goes through the wire encoding, so tests exercise the bytes a
/// real transport sends. A node not registered (or unregistered, to simulate a crash) is unreachable.
#[derive(Clone)]
pub struct LocalTransport {
    nodes: Arc<RwLock<BTreeMap<NodeId, RpcServer>>>,
    snapshot_bytes_max: u64,
}

impl LocalTransport {
    /// A registry whose nodes accept snapshots of up to `snapshot_bytes_max` bytes.
    pub fn new(snapshot_bytes_max: u64) -> Self {
        LocalTransport { nodes: Arc::default(), snapshot_bytes_max }
    }

    pub fn register(&self, id: NodeId, raft: ConsensusRaft) {
        let server = RpcServer::new(raft, self.snapshot_bytes_max);
        self.nodes.write().unwrap_or_else(PoisonError::into_inner).insert(id, server);
    }

    /// Makes node `id` unreachable, returning its handle.
    pub fn unregister(&self, id: NodeId) -> Option<ConsensusRaft> {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner).remove(&id).map(|s| s.raft().clone())
    }

    fn get(&self, id: NodeId) -> Option<RpcServer> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }
}

impl RaftTransport for LocalTransport {
    async fn call(&self, target: NodeId, _peer: &PeerInfo, rpc: RaftRpc) -> Result<RaftRpcReply, TransportError> {
        let failed = |e: codec::CodecError| TransportError::Failed { target, reason: e.to_string() };
        let server = self.get(target).ok_or(TransportError::Unreachable { target, reason: "not registered".into() })?;
        let request = RaftRpc::decode(&rpc.encode().map_err(failed)?).map_err(failed)?;
        let reply = server.serve(request).await;
        RaftRpcReply::decode(&reply.encode().map_err(failed)?).map_err(failed)
    }
}
