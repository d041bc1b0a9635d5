//! veritrace-consensus: Raft ordering of opaque blocks, on openraft.
//!
//! The crate is a thin adapter around openraft: its storage and network traits
//! implemented for veritrace, and nothing of Raft written again.
//!
//! - [`types`]: the openraft type configuration — node ids, [`PeerInfo`] (libp2p identity
//!   and address), opaque [`Payload`]s and [`Applied`] results.
//! - [`log_store`]: [`RocksLogStore`], the Raft log and vote on a RocksDB of their own.
//! - [`machine`]: the [`Machine`] trait the node implements over its ledger, and
//!   [`MachineStore`], which makes it openraft's state machine, with snapshots.
//! - [`network`]: the [`RaftTransport`] seam the libp2p transport plugs into, the RPC
//!   wire format and [`RpcServer`] for the receiving side, which holds elections off on a
//!   node while it receives and installs a snapshot (`election`).
//! - [`config`]: [`ConsensusConfig`] with named defaults, [`start_raft`] and [`propose`].
//! - [`testkit`]: an in-memory machine and an in-process transport for tests.
//!
//! Both stores pass openraft's storage conformance suite (`tests/suite.rs`).
//!
//! Architecture invariant: it knows nothing of the ledger's domain (records, rules,
//! subjects); it orders opaque blocks and hands them to a state machine. It does not
//! depend on veritrace-ledger. Deliberately absent here: the libp2p transport (it plugs
//! in through [`RaftTransport`]), peer authorisation (the node's job: who may connect,
//! and who may send which Raft message), and membership policy (the node decides when to add or remove members).

pub mod codec;
pub mod config;
mod election;
pub mod log_store;
pub mod machine;
pub mod network;
pub mod staging;
pub mod testkit;
pub mod types;

pub use config::{ConsensusConfig, propose, start_raft};
pub use log_store::RocksLogStore;
pub use machine::{Machine, MachineError, MachineStore, RestoreStager, SnapshotSource, SnapshotTaker, StagedRestore};
pub use network::{RaftRpc, RaftRpcReply, RaftTransport, RpcServer, TransportError};
pub use types::{Applied, ConsensusRaft, NodeId, Payload, PeerInfo, TypeConfig};
