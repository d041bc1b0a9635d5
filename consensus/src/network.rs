//! The network seam: openraft's `RaftNetworkFactory` / `RaftNetwork` over a small
//! [`RaftTransport`] trait, so the libp2p request-response transport (or the in-process
//! one of the tests) plugs in without knowing Raft.
//!
//! A transport moves one [`RaftRpc`] to a peer and brings back its [`RaftRpcReply`]. On
//! the wire both are [`codec`] bytes behind [`WIRE_VERSION`], at most
//! [`RPC_BYTES_MAX`] long. The receiving side hands a decoded request to [`RpcServer`],
//! which calls the local Raft node and enforces the snapshot size limit.
//!
//! Sizes: an append-entries request that would encode past [`RPC_BYTES_MAX`] is refused
//! before it is sent with openraft's `PayloadTooLarge`, which makes the leader retry with
//! fewer entries. A single entry that is too large can never be sent, which is why
//! [`propose`](crate::propose) refuses payloads over [`PAYLOAD_BYTES_MAX`]. Snapshots go in
//! chunks of `snapshot_chunk_bytes_max`, each an RPC of its own.

use std::future::Future;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, RPCTypes};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, WIRE_VERSION};
use crate::election::ElectionHold;
use crate::types::{ConsensusRaft, NodeId, PeerInfo, TypeConfig};

/// Largest encoded RPC or reply, in bytes.
pub const RPC_BYTES_MAX: u64 = codec::DECODE_BYTES_MAX as u64;
/// Room kept in an RPC for everything but the payload of its one entry.
pub const RPC_OVERHEAD_BYTES_MAX: u64 = 1024 * 1024;
/// Largest payload a log entry may carry: one entry must always fit in one RPC.
pub const PAYLOAD_BYTES_MAX: u64 = RPC_BYTES_MAX - RPC_OVERHEAD_BYTES_MAX;

/// A Raft request from one node to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot; its data go as one byte string (see `chunk_wire`).
    InstallSnapshot(#[serde(with = "chunk_wire")] InstallSnapshotRequest<TypeConfig>),
}

/// A snapshot chunk as serde sees it: openraft's request field by field, its data as serde
/// bytes (`serde_bytes`: a length, then the bytes, copied whole) rather than a sequence of `u8`, which
/// serde formats encode and decode one element at a time — about 10 ms per 4 MiB chunk
/// each way in bincode. In bincode with fixed-width integers both are the same bytes, so
/// the wire format does not change (a test pins it).
mod chunk_wire {
    use openraft::Vote;
    use openraft::raft::InstallSnapshotRequest;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::types::{NodeId, SnapshotMeta, TypeConfig};

    /// openraft's field order: vote, meta, offset, data, done.
    #[derive(Serialize)]
    struct ChunkRef<'a> {
        vote: &'a Vote<NodeId>,
        meta: &'a SnapshotMeta,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
        done: bool,
    }

    #[derive(Deserialize)]
    struct Chunk {
        vote: Vote<NodeId>,
        meta: SnapshotMeta,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        done: bool,
    }

    pub fn serialize<S: Serializer>(req: &InstallSnapshotRequest<TypeConfig>, s: S) -> Result<S::Ok, S::Error> {
        let chunk = ChunkRef { vote: &req.vote, meta: &req.meta, offset: req.offset, data: &req.data, done: req.done };
        chunk.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<InstallSnapshotRequest<TypeConfig>, D::Error> {
        let Chunk { vote, meta, offset, data, done } = Chunk::deserialize(d)?;
        Ok(InstallSnapshotRequest { vote, meta, offset, data, done })
    }
}

/// The answer to a [`RaftRpc`], of the same kind, or a refusal by the receiver.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The receiver would not process the request (over a limit); the reason says why.
    Refused {
        reason: String,
    },
}

fn check_len(what: &'static str, bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.len() as u64 > RPC_BYTES_MAX {
        return Err(CodecError::TooLarge { what, bytes: bytes.len() as u64, max: RPC_BYTES_MAX });
    }
    Ok(())
}

impl RaftRpc {
    pub fn kind(&self) -> RPCTypes {
        match self {
            RaftRpc::AppendEntries(_) => RPCTypes::AppendEntries,
            RaftRpc::Vote(_) => RPCTypes::Vote,
            RaftRpc::InstallSnapshot(_) => RPCTypes::InstallSnapshot,
        }
    }

    /// Wire bytes, refusing a request over [`RPC_BYTES_MAX`].
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let bytes = codec::encode("raft rpc", WIRE_VERSION, self)?;
        check_len("raft rpc", &bytes)?;
        Ok(bytes)
    }

    /// Length of the wire bytes, without building them.
    pub fn encoded_len(&self) -> Result<u64, CodecError> {
        codec::encoded_len("raft rpc", self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        check_len("raft rpc", bytes)?;
        codec::decode("raft rpc", WIRE_VERSION, bytes)
    }
}

impl RaftRpcReply {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let bytes = codec::encode("raft rpc reply", WIRE_VERSION, self)?;
        check_len("raft rpc reply", &bytes)?;
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        check_len("raft rpc reply", bytes)?;
        codec::decode("raft rpc reply", WIRE_VERSION, bytes)
    }
}

/// Why a transport could not get a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection to the peer (not dialable, not allowed, gone); Raft backs off.
    #[error("node {target} is unreachable: {reason}")]
    Unreachable { target: NodeId, reason: String },
    /// The request was sent or being sent and failed (timeout, reset, bad reply bytes).
    #[error("rpc to node {target} failed: {reason}")]
    Failed { target: NodeId, reason: String },
}

/// Moves one RPC to a peer and returns its reply. Implemented by the libp2p transport and,
/// for tests, by [`LocalTransport`](crate::testkit::LocalTransport).
pub trait RaftTransport: Clone + Send + Sync + 'static {
    /// Sends `rpc` to node `target`, reachable at `peer`, and waits for the reply. The
    /// transport applies its own timeout and reports it as [`TransportError::Failed`].
    fn call(
        &self,
        target: NodeId,
        peer: &PeerInfo,
        rpc: RaftRpc,
    ) -> impl Future<Output = Result<RaftRpcReply, TransportError>> + Send;
}

/// Answers requests with the local node: what a transport calls for each request it
/// receives. Refuses a snapshot chunk that would take the snapshot past
/// `snapshot_bytes_max`, so a peer cannot make this node fill its disk without bound (a
/// received snapshot is written to a file as it arrives). Turns the node's elections off
/// while it receives and installs a snapshot, and back on once its leader is heard from
/// after it (see the `election` module: openraft 0.9's leader sends no heartbeats to a
/// node it is sending a snapshot to). Clones share the node's election hold.
#[derive(Clone)]
pub struct RpcServer {
    raft: ConsensusRaft,
    snapshot_bytes_max: u64,
    elections: ElectionHold,
}

impl RpcServer {
    pub fn new(raft: ConsensusRaft, snapshot_bytes_max: u64) -> Self {
        RpcServer { raft, snapshot_bytes_max, elections: ElectionHold::default() }
    }

    /// The local node's Raft.
    pub fn raft(&self) -> &ConsensusRaft {
        &self.raft
    }

    /// Answers one request.
    pub async fn serve(&self, rpc: RaftRpc) -> RaftRpcReply {
        let raft = &self.raft;
        match rpc {
            RaftRpc::AppendEntries(req) => {
                let reply = raft.append_entries(req).await;
                if matches!(reply, Ok(ref r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    self.elections.leader_heard(raft);
                }
                RaftRpcReply::AppendEntries(reply)
            }
            RaftRpc::Vote(req) => RaftRpcReply::Vote(raft.vote(req).await),
            RaftRpc::InstallSnapshot(req) => match req.offset.checked_add(req.data.len() as u64) {
                Some(end) if end <= self.snapshot_bytes_max => {
                    let generation = self.elections.snapshot_chunk_arrived(raft);
                    let reply = raft.install_snapshot(req).await;
                    self.elections.after_snapshot_chunk(raft, generation);
                    RaftRpcReply::InstallSnapshot(reply)
                }
                _ => {
                    let reason = format!(
                        "snapshot chunk at offset {} of {} bytes goes past the limit of {} bytes",
                        req.offset,
                        req.data.len(),
                        self.snapshot_bytes_max
                    );
                    tracing::warn!(leader_vote = %req.vote, %reason, "refused install-snapshot rpc");
                    RaftRpcReply::Refused { reason }
                }
            },
        }
    }
}

/// openraft's network factory over a transport.
#[derive(Clone)]
pub struct Network<T: RaftTransport> {
    transport: T,
}

impl<T: RaftTransport> Network<T> {
    pub fn new(transport: T) -> Self {
        Network { transport }
    }
}

impl<T: RaftTransport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = PeerClient<T>;

    async fn new_client(&mut self, target: NodeId, node: &PeerInfo) -> PeerClient<T> {
        PeerClient { transport: self.transport.clone(), target, peer: node.clone() }
    }
}

/// openraft's connection to one peer: sends through the transport.
pub struct PeerClient<T: RaftTransport> {
    transport: T,
    target: NodeId,
    peer: PeerInfo,
}

type RpcResult<R, E = RaftError<NodeId>> = Result<R, RPCError<NodeId, PeerInfo, E>>;

fn network_error<E: std::error::Error>(reason: String) -> RPCError<NodeId, PeerInfo, E> {
    RPCError::Network(NetworkError::new(&AnyError::error(reason)))
}

impl<T: RaftTransport> PeerClient<T> {
    /// Sends `rpc` after checking its size; `entries` is the number of log entries in it,
    /// used to hint how many would fit.
    async fn send<E: std::error::Error>(&self, rpc: RaftRpc, entries: u64) -> RpcResult<RaftRpcReply, E> {
        let kind = rpc.kind();
        let len = rpc.encoded_len().map_err(|e| network_error(e.to_string()))?;
        if len > RPC_BYTES_MAX {
            if kind == RPCTypes::AppendEntries && entries > 1 {
                let fit = (u128::from(entries) * u128::from(RPC_BYTES_MAX) / u128::from(len)) as u64;
                let hint = fit.clamp(1, entries - 1);
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
            }
            return Err(network_error(format!(
                "{kind} rpc to node {} of {len} bytes is over the limit of {RPC_BYTES_MAX} bytes",
                self.target
            )));
        }
        match self.transport.call(self.target, &self.peer, rpc).await {
            Ok(RaftRpcReply::Refused { reason }) => {
                Err(network_error(format!("node {} refused {kind} rpc: {reason}", self.target)))
            }
            Ok(reply) => Ok(reply),
            Err(e @ TransportError::Unreachable { .. }) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e @ TransportError::Failed { .. }) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, PeerInfo, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.peer.clone(), e))
    }

    fn mismatched<E: std::error::Error>(&self, kind: RPCTypes, reply: &RaftRpcReply) -> RPCError<NodeId, PeerInfo, E> {
        network_error(format!("node {} answered a {kind} rpc with {reply:?}", self.target))
    }
}

impl<T: RaftTransport> RaftNetwork<TypeConfig> for PeerClient<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        match self.send(RaftRpc::AppendEntries(rpc), entries).await? {
            RaftRpcReply::AppendEntries(Ok(resp)) => Ok(resp),
            RaftRpcReply::AppendEntries(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatched(RPCTypes::AppendEntries, &other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        match self.send(RaftRpc::InstallSnapshot(rpc), 0).await? {
            RaftRpcReply::InstallSnapshot(Ok(resp)) => Ok(resp),
            RaftRpcReply::InstallSnapshot(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatched(RPCTypes::InstallSnapshot, &other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, _option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.send(RaftRpc::Vote(rpc), 0).await? {
            RaftRpcReply::Vote(Ok(resp)) => Ok(resp),
            RaftRpcReply::Vote(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatched(RPCTypes::Vote, &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, StoredMembership, Vote};

    use super::*;
    use crate::types::SnapshotMeta;

    /// [`RaftRpc`] as it was before chunks went as bytes: openraft's derived serde.
    #[derive(Serialize, Deserialize)]
    enum DerivedRpc {
        AppendEntries(AppendEntriesRequest<TypeConfig>),
        Vote(VoteRequest<NodeId>),
        InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    }

    fn chunk(data: Vec<u8>, done: bool) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 77)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-1-77-1700000000000".into(),
            },
            offset: 4 * 1024 * 1024,
            data,
            done,
        }
    }

    #[test]
    fn a_snapshot_chunk_goes_as_bytes_on_the_same_wire_format() {
        for (data, done) in [(Vec::new(), true), ((0..=255u8).cycle().take(100_003).collect(), false)] {
            let req = chunk(data, done);
            let ours = RaftRpc::InstallSnapshot(req.clone()).encode().unwrap();
            let derived = codec::encode("derived", WIRE_VERSION, &DerivedRpc::InstallSnapshot(req.clone())).unwrap();
            assert_eq!(ours, derived, "the wire bytes of a chunk of {} bytes changed", req.data.len());
            assert_eq!(RaftRpc::InstallSnapshot(req.clone()).encoded_len().unwrap(), ours.len() as u64);
            match RaftRpc::decode(&ours).unwrap() {
                RaftRpc::InstallSnapshot(back) => assert_eq!(back, req),
                other => panic!("decoded as {other:?}"),
            }
        }
        // A chunk cut short is refused, not read as a shorter one.
        let ours = RaftRpc::InstallSnapshot(chunk(vec![7; 1000], false)).encode().unwrap();
        assert!(RaftRpc::decode(&ours[..ours.len() - 2]).is_err());
    }
}
