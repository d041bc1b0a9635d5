//! The Raft type configuration: what a node id, a node's address, a log payload and an
//! apply result are for this crate.
//!
//! Payloads and results are opaque bytes: the node encodes a block into a [`Payload`] and
//! decodes the state machine's [`Applied`]; this crate never looks inside either.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft node id. Stable for the life of a node; chosen by the node's operator.
pub type NodeId = u64;

/// How to reach a member: its libp2p identity and address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// libp2p peer id, base58.
    pub peer_id: String,
    /// libp2p multiaddr.
    pub addr: String,
}

/// One log payload: an encoded block, opaque here.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload(pub Vec<u8>);

/// What the state machine returned for one applied entry, opaque here. Blank and
/// membership entries get an empty one.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Vec<u8>);

// Payloads are blocks of up to megabytes: log their size, not their bytes.
impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl fmt::Debug for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Applied({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of veritrace.
    pub TypeConfig:
        D = Payload,
        R = Applied,
        NodeId = NodeId,
        Node = PeerInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft node of this configuration.
pub type ConsensusRaft = openraft::Raft<TypeConfig>;
/// A log id (leader term and node, index).
pub type LogId = openraft::LogId<NodeId>;
/// A log entry as stored and replicated.
pub type Entry = openraft::Entry<TypeConfig>;
/// Membership as recorded at a log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerInfo>;
/// The storage error openraft expects from stores.
pub type StorageError = openraft::StorageError<NodeId>;
/// Snapshot metadata: last included log id and membership.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerInfo>;
/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
