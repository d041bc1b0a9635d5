//! Consensus settings with named defaults, and starting a Raft node from the stores and a
//! transport.
//!
//! [`ConsensusConfig`] is what an operator tunes; it is checked and turned into openraft's
//! own `Config` in one place ([`ConsensusConfig::to_openraft`]), so the limits this crate
//! relies on (RPC size, snapshot size) are enforced when a node starts, not discovered
//! when a message is refused.

use std::sync::Arc;

use openraft::SnapshotPolicy;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::storage::RaftLogStorage;

use crate::log_store::RocksLogStore;
use crate::machine::{Machine, MachineStore, MachineStoreError};
use crate::network::{Network, PAYLOAD_BYTES_MAX, RPC_BYTES_MAX, RPC_OVERHEAD_BYTES_MAX, RaftTransport};
use crate::types::{ConsensusRaft, NodeId, Payload, PeerInfo, StorageError, TypeConfig};

/// Default leader heartbeat period. Validators sit on a WAN: a quarter second keeps
/// followers well inside their election timeout across a slow link.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 250;
/// Default lower bound of the randomised election timeout.
pub const ELECTION_TIMEOUT_MIN_MS_DEFAULT: u64 = 1_000;
/// Default upper bound of the randomised election timeout.
pub const ELECTION_TIMEOUT_MAX_MS_DEFAULT: u64 = 2_000;
/// Default time for sending and installing one snapshot chunk. openraft 0.9 answers the
/// last chunk only once the whole snapshot is installed and checked, so this must cover
/// that too (16–30 s for a million records on a two-core machine); past it the leader gives
/// up on the transfer and retries, which wastes seconds once the install is done. A
/// transport's own request timeout must not be shorter.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS_DEFAULT: u64 = 90_000;
/// Default number of entries applied since the last snapshot that triggers a new one.
/// Entries are blocks, and a snapshot is the whole ledger: take one rarely.
pub const SNAPSHOT_LOGS_SINCE_LAST_DEFAULT: u64 = 5_000;
/// Default number of entries kept in the log after they are in a snapshot, so a briefly
/// lagging follower catches up from the log instead of a snapshot.
pub const SNAPSHOT_LOGS_TO_KEEP_DEFAULT: u64 = 1_000;
/// Default largest number of entries in one append-entries RPC (the RPC byte limit may
/// cut it further).
pub const PAYLOAD_ENTRIES_MAX_DEFAULT: u64 = 64;
/// Default snapshot chunk size: one install-snapshot RPC each. Large, as each RPC is a
/// round trip and the data go raw; a few copies of a chunk are in memory on each side
/// while it moves.
pub const SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;
/// Default largest snapshot. Snapshots are files, streamed when built, sent, received and
/// installed, so this bounds disk, not memory: a node refuses to build a larger one and
/// refuses a received chunk that would take a snapshot past it. About 40 million records
/// of 1.5 KB; a node needs this much free space (twice, while a new snapshot replaces the
/// old) in its snapshot directory.
pub const SNAPSHOT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024 * 1024;

/// Consensus settings of one node. All members of a cluster should use the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// Name of the Raft cluster, for logs (the ledger id is a good choice).
    pub cluster_name: String,
    /// How often a leader sends heartbeats.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in [min, max) starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Time allowed to send and install one snapshot chunk.
    pub install_snapshot_timeout_ms: u64,
    /// When to build a snapshot: `LogsSinceLast(n)` or `Never` (then only on request).
    pub snapshot_policy: SnapshotPolicy,
    /// Entries kept in the log once a snapshot covers them.
    pub snapshot_logs_to_keep: u64,
    /// Entries in one append-entries RPC at most.
    pub payload_entries_max: u64,
    /// Bytes of snapshot data in one install-snapshot RPC at most.
    pub snapshot_chunk_bytes_max: u64,
    /// Largest snapshot built, sent or accepted; give the same value to
    /// [`MachineStore::open`] and [`RpcServer`](crate::RpcServer).
    pub snapshot_bytes_max: u64,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            cluster_name: "veritrace".into(),
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS_DEFAULT,
            election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS_DEFAULT,
            install_snapshot_timeout_ms: INSTALL_SNAPSHOT_TIMEOUT_MS_DEFAULT,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS_SINCE_LAST_DEFAULT),
            snapshot_logs_to_keep: SNAPSHOT_LOGS_TO_KEEP_DEFAULT,
            payload_entries_max: PAYLOAD_ENTRIES_MAX_DEFAULT,
            snapshot_chunk_bytes_max: SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT,
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX_DEFAULT,
        }
    }
}

/// A setting that cannot work, naming it and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} must be above zero")]
    Zero { field: &'static str },
    #[error("election timeout min {min} ms must be below max {max} ms")]
    ElectionTimeouts { min: u64, max: u64 },
    #[error("heartbeat interval {heartbeat} ms must be below the election timeout min {election_min} ms")]
    HeartbeatTooSlow { heartbeat: u64, election_min: u64 },
    #[error("snapshot chunk of {chunk} bytes must leave room in an rpc of at most {max} bytes")]
    ChunkTooLarge { chunk: u64, max: u64 },
    #[error("openraft refused the config: {reason}")]
    Openraft { reason: String },
}

impl ConsensusConfig {
    /// Checks the settings and builds openraft's config from them.
    pub fn to_openraft(&self) -> Result<openraft::Config, ConfigError> {
        for (field, value) in [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("install_snapshot_timeout_ms", self.install_snapshot_timeout_ms),
            ("payload_entries_max", self.payload_entries_max),
            ("snapshot_chunk_bytes_max", self.snapshot_chunk_bytes_max),
            ("snapshot_bytes_max", self.snapshot_bytes_max),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if let SnapshotPolicy::LogsSinceLast(0) = self.snapshot_policy {
            return Err(ConfigError::Zero { field: "snapshot_policy logs since last" });
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err(ConfigError::ElectionTimeouts {
                min: self.election_timeout_min_ms,
                max: self.election_timeout_max_ms,
            });
        }
        if self.heartbeat_interval_ms >= self.election_timeout_min_ms {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_interval_ms,
                election_min: self.election_timeout_min_ms,
            });
        }
        let chunk_max = RPC_BYTES_MAX - RPC_OVERHEAD_BYTES_MAX;
        if self.snapshot_chunk_bytes_max > chunk_max {
            return Err(ConfigError::ChunkTooLarge { chunk: self.snapshot_chunk_bytes_max, max: RPC_BYTES_MAX });
        }
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_policy: self.snapshot_policy.clone(),
            max_in_snapshot_log_to_keep: self.snapshot_logs_to_keep,
            max_payload_entries: self.payload_entries_max,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes_max,
            ..openraft::Config::default()
        };
        config.validate().map_err(|e| ConfigError::Openraft { reason: e.to_string() })
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("consensus config: {0}")]
    Config(#[from] ConfigError),
    #[error("raft failed to start: {0}")]
    Raft(#[from] Fatal<NodeId>),
    #[error("raft log store: {0}")]
    Log(#[from] StorageError),
    #[error("raft state machine: {0}")]
    Machine(#[from] MachineStoreError),
}

/// Starts Raft node `id` over its stores and a transport. The caller keeps the returned
/// handle, registers it with the transport's server side (requests go to
/// [`RpcServer`](crate::RpcServer)) and initialises a new cluster once, on one node.
pub async fn start_raft<M: Machine, T: RaftTransport>(
    id: NodeId,
    config: &ConsensusConfig,
    mut log_store: RocksLogStore,
    mut state_machine: MachineStore<M>,
    transport: T,
) -> Result<ConsensusRaft, StartError> {
    let raft_config = Arc::new(config.to_openraft()?);
    // Purges never outrun the snapshot on disk, and a crash that left them ahead of it
    // is repaired before openraft looks (see the `machine` module docs).
    let log_state = log_store.get_log_state().await?;
    state_machine.reconcile_with_log(log_state.last_purged_log_id, log_state.last_log_id).await?;
    log_store.fence_purges(state_machine.snapshot_watermark());
    let raft = openraft::Raft::new(id, raft_config, Network::new(transport), log_store, state_machine).await?;
    Ok(raft)
}

/// Why a payload was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("payload of {bytes} bytes is over the limit of {max} bytes")]
    TooLarge { bytes: u64, max: u64 },
    /// Boxed: openraft's error is large and this is the rare path.
    #[error(transparent)]
    Raft(Box<RaftError<NodeId, ClientWriteError<NodeId, PeerInfo>>>),
}

/// Proposes `payload` on `raft` (which must be the leader; the error names the leader
/// otherwise) and waits until it is committed and applied here. Refuses payloads that
/// could never be replicated (over [`PAYLOAD_BYTES_MAX`]).
pub async fn propose(raft: &ConsensusRaft, payload: Payload) -> Result<ClientWriteResponse<TypeConfig>, ProposeError> {
    let bytes = payload.0.len() as u64;
    if bytes > PAYLOAD_BYTES_MAX {
        return Err(ProposeError::TooLarge { bytes, max: PAYLOAD_BYTES_MAX });
    }
    raft.client_write(payload).await.map_err(|e| ProposeError::Raft(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = ConsensusConfig::default().to_openraft().expect("defaults");
        assert_eq!(config.heartbeat_interval, HEARTBEAT_INTERVAL_MS_DEFAULT);
        assert_eq!(config.snapshot_policy, SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS_SINCE_LAST_DEFAULT));
        assert_eq!(config.max_payload_entries, PAYLOAD_ENTRIES_MAX_DEFAULT);
    }

    #[test]
    fn bad_settings_are_named() {
        let base = ConsensusConfig::default();
        let cases = [
            (ConsensusConfig { payload_entries_max: 0, ..base.clone() }, "payload_entries_max must be above zero"),
            (
                ConsensusConfig { election_timeout_min_ms: 3_000, ..base.clone() },
                "election timeout min 3000 ms must be below max 2000 ms",
            ),
            (
                ConsensusConfig { heartbeat_interval_ms: 1_000, ..base.clone() },
                "heartbeat interval 1000 ms must be below the election timeout min 1000 ms",
            ),
            (
                ConsensusConfig { snapshot_chunk_bytes_max: RPC_BYTES_MAX, ..base.clone() },
                "snapshot chunk of 67108864 bytes must leave room in an rpc of at most 67108864 bytes",
            ),
            (
                ConsensusConfig { snapshot_policy: SnapshotPolicy::LogsSinceLast(0), ..base.clone() },
                "snapshot_policy logs since last must be above zero",
            ),
        ];
        for (config, message) in cases {
            assert_eq!(config.to_openraft().map(|_| ()).map_err(|e| e.to_string()), Err(message.to_string()));
        }
    }
}
