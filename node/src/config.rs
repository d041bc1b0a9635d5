//! The node's TOML configuration. Every default is documented in docs/operations.md; a
//! value that cannot work is refused at start with the field and the value named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Default most records in one block.
pub const BATCH_RECORDS_MAX_DEFAULT: u32 = 2_000;
/// Default most bytes of records in one block.
pub const BATCH_BYTES_MAX_DEFAULT: u32 = 4 * 1024 * 1024;
/// Default time the batcher lingers for more records before proposing a block that is
/// not full (0: propose as soon as the pipeline has room; see `service::batcher`).
pub const BATCH_DEADLINE_MS_DEFAULT: u64 = 0;
/// Default most blocks proposed and not yet committed.
pub const BATCH_IN_FLIGHT_MAX_DEFAULT: u32 = 1;
/// Default submissions queued at the leader before new ones are refused as busy.
pub const SUBMIT_QUEUE_MAX_DEFAULT: u32 = 20_000;
/// Most blocks in one Raft append. openraft times an append out after one heartbeat, and a
/// far-behind follower is sent full appends back to back: a few full blocks must travel
/// and be synced well inside it, or the follower never catches up.
pub const APPEND_ENTRIES_BLOCKS_MAX: u64 = 8;
/// Default Raft log entries between snapshots.
pub const SNAPSHOT_INTERVAL_DEFAULT: u64 = 5_000;
/// Default checkpoint cadence under load: validators sign every header whose height is a
/// multiple of this (and the head once blocks pause, `checkpoint.idle_ms`).
pub const CHECKPOINT_EVERY_BLOCKS_DEFAULT: u64 = 8;
/// Largest `checkpoint.every_blocks`: a node looks back this far for its latest complete
/// checkpoint when it starts ([`crate::service`]).
pub const CHECKPOINT_EVERY_BLOCKS_MAX: u64 = 1_000;
/// Default pause after which a validator signs the head it has, whatever its height.
pub const CHECKPOINT_IDLE_MS_DEFAULT: u64 = 20;

/// How a node reaches another node of the network.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The node id in the genesis (validators and observers).
    pub node_id: String,
    /// Its libp2p address, e.g. `/ip4/127.0.0.1/tcp/7001`.
    pub p2p_addr: String,
}

/// Block batching at the leader.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub records_max: u32,
    pub bytes_max: u32,
    pub deadline_ms: u64,
    pub in_flight_max: u32,
    pub queue_max: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            records_max: BATCH_RECORDS_MAX_DEFAULT,
            bytes_max: BATCH_BYTES_MAX_DEFAULT,
            deadline_ms: BATCH_DEADLINE_MS_DEFAULT,
            in_flight_max: BATCH_IN_FLIGHT_MAX_DEFAULT,
            queue_max: SUBMIT_QUEUE_MAX_DEFAULT,
        }
    }
}

/// Which headers validators sign (docs/operations.md, "Checkpoints").
///
/// A checkpoint costs every validator a signature, a message to every other member and a
/// verification of each one it receives: n² messages per signed header, as much as the
/// Raft round of a small block. So under load validators sign only the heights that are a
/// multiple of `every_blocks` — the same heights on every validator, so each one gathers a
/// quorum — and, whenever no newer block follows within `idle_ms`, the head they have, so
/// the last block before a pause is covered within about `idle_ms`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    pub every_blocks: u64,
    pub idle_ms: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { every_blocks: CHECKPOINT_EVERY_BLOCKS_DEFAULT, idle_ms: CHECKPOINT_IDLE_MS_DEFAULT }
    }
}

/// Raft timing and compaction.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Raft log entries (blocks) between snapshots; the log is compacted behind them.
    pub snapshot_interval: u64,
    /// Bytes of snapshot data in one install-snapshot RPC.
    pub snapshot_chunk_bytes: u64,
    /// Time the leader allows one snapshot chunk, the last one's install and check included.
    pub install_snapshot_timeout_ms: u64,
}

/// Default leader heartbeat. openraft also times AppendEntries out after one heartbeat, so
/// it must cover a follower's synced write of a full block on a loaded machine.
pub const HEARTBEAT_MS_DEFAULT: u64 = 500;
/// Default election timeout range. openraft takes the upper bound as the leader lease too
/// (no vote is granted within it of hearing from a leader), so it sets how long a crashed
/// leader keeps the cluster waiting: about 2–4 s with these. Under the heaviest load of
/// `veritrace bench` (1,000 clients on a two-core machine) no term changed.
pub const ELECTION_TIMEOUT_MIN_MS_DEFAULT: u64 = 1_000;
pub const ELECTION_TIMEOUT_MAX_MS_DEFAULT: u64 = 2_000;
/// Default snapshot chunk: one RPC each, sent raw; a few copies of one are in memory on
/// each side while it moves.
pub const SNAPSHOT_CHUNK_BYTES_DEFAULT: u64 = veritrace_consensus::config::SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT;
/// Smallest snapshot chunk: each chunk is a round trip.
pub const SNAPSHOT_CHUNK_BYTES_MIN: u64 = 64 * 1024;
/// Largest snapshot chunk: it must fit in one RPC with room to spare.
pub const SNAPSHOT_CHUNK_BYTES_LIMIT: u64 =
    veritrace_consensus::network::RPC_BYTES_MAX - veritrace_consensus::network::RPC_OVERHEAD_BYTES_MAX;
/// Default install-snapshot timeout: the last chunk is answered once the whole snapshot is
/// installed and checked (about 16 s for a million records).
pub const INSTALL_SNAPSHOT_TIMEOUT_MS_DEFAULT: u64 = veritrace_consensus::config::INSTALL_SNAPSHOT_TIMEOUT_MS_DEFAULT;
/// Shortest install-snapshot timeout accepted.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS_MIN: u64 = 1_000;
/// Longest install-snapshot timeout accepted: the libp2p request timeout, which cuts any
/// RPC that takes longer.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS_LIMIT: u64 = crate::p2p::REQUEST_TIMEOUT_DEFAULT.as_millis() as u64;

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: HEARTBEAT_MS_DEFAULT,
            election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS_DEFAULT,
            election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS_DEFAULT,
            snapshot_interval: SNAPSHOT_INTERVAL_DEFAULT,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES_DEFAULT,
            install_snapshot_timeout_ms: INSTALL_SNAPSHOT_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id in the genesis.
    pub node_id: String,
    /// Holds `ledger/` (RocksDB), `raft/` (RocksDB), `snapshots/`, `evidence/`.
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    /// The node's ed25519 key file (`veritrace key gen`): its libp2p identity and, for
    /// validators, the key that signs checkpoints.
    pub node_key: PathBuf,
    /// The operating organisation's signing key, for records the node makes itself
    /// (none yet); optional.
    #[serde(default)]
    pub org_key: Option<PathBuf>,
    pub p2p_listen: String,
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
        // Relative paths are relative to the config file, so a node directory can move.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.data_dir, &mut cfg.genesis, &mut cfg.node_key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(k) = &mut cfg.org_key
            && k.is_relative()
        {
            *k = base.join(&*k);
        }
        cfg.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let b = &self.batch;
        if b.records_max == 0 || b.records_max as usize > veritrace_ledger::block::BLOCK_RECORDS_MAX {
            bail!("batch.records_max {} must be 1..={}", b.records_max, veritrace_ledger::block::BLOCK_RECORDS_MAX);
        }
        if b.bytes_max < 64 * 1024 || b.bytes_max as usize > veritrace_ledger::block::BLOCK_BYTES_MAX {
            bail!("batch.bytes_max {} must be 65536..={}", b.bytes_max, veritrace_ledger::block::BLOCK_BYTES_MAX);
        }
        if b.deadline_ms > 10_000 {
            bail!("batch.deadline_ms {} must be 0..=10000", b.deadline_ms);
        }
        if b.in_flight_max == 0 || b.queue_max == 0 {
            bail!("batch.in_flight_max and batch.queue_max must be positive");
        }
        let r = &self.raft;
        if r.snapshot_interval == 0 {
            bail!("raft.snapshot_interval must be positive");
        }
        if !(SNAPSHOT_CHUNK_BYTES_MIN..=SNAPSHOT_CHUNK_BYTES_LIMIT).contains(&r.snapshot_chunk_bytes) {
            bail!(
                "raft.snapshot_chunk_bytes {} must be {SNAPSHOT_CHUNK_BYTES_MIN}..={SNAPSHOT_CHUNK_BYTES_LIMIT}",
                r.snapshot_chunk_bytes
            );
        }
        if !(INSTALL_SNAPSHOT_TIMEOUT_MS_MIN..=INSTALL_SNAPSHOT_TIMEOUT_MS_LIMIT)
            .contains(&r.install_snapshot_timeout_ms)
        {
            bail!(
                "raft.install_snapshot_timeout_ms {} must be {INSTALL_SNAPSHOT_TIMEOUT_MS_MIN}..=\
                 {INSTALL_SNAPSHOT_TIMEOUT_MS_LIMIT} (the peer-to-peer request timeout)",
                r.install_snapshot_timeout_ms
            );
        }
        let c = &self.checkpoint;
        if c.every_blocks == 0 || c.every_blocks > CHECKPOINT_EVERY_BLOCKS_MAX {
            bail!("checkpoint.every_blocks {} must be 1..={CHECKPOINT_EVERY_BLOCKS_MAX}", c.every_blocks);
        }
        if c.idle_ms == 0 || c.idle_ms > 10_000 {
            bail!("checkpoint.idle_ms {} must be 1..=10000", c.idle_ms);
        }
        Ok(())
    }

    /// Consensus settings from this config.
    pub fn consensus(&self, ledger_id: &str) -> veritrace_consensus::ConsensusConfig {
        veritrace_consensus::ConsensusConfig {
            cluster_name: ledger_id.to_string(),
            heartbeat_interval_ms: self.raft.heartbeat_ms,
            election_timeout_min_ms: self.raft.election_timeout_min_ms,
            election_timeout_max_ms: self.raft.election_timeout_max_ms,
            // Every `snapshot_interval` entries, at a phase of this node's own:
            // `crate::snapshots::schedule` asks openraft when.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            snapshot_logs_to_keep: snapshot_logs_to_keep(self.raft.snapshot_interval),
            payload_entries_max: APPEND_ENTRIES_BLOCKS_MAX,
            snapshot_chunk_bytes_max: self.raft.snapshot_chunk_bytes,
            install_snapshot_timeout_ms: self.raft.install_snapshot_timeout_ms,
            ..Default::default()
        }
    }
}

/// Entries compaction keeps behind a snapshot: two intervals, at most the consensus default
/// (1,000). A node that receives the leader's snapshot needs the entries after it; with one
/// interval kept, the leader's next snapshot could purge them while the node still
/// installed (a million-record install outlasted an interval of 200 blocks under load,
/// and the node needed a second snapshot, 65 s more). A node further behind than what is
/// kept catches up by snapshot.
fn snapshot_logs_to_keep(interval: u64) -> u64 {
    interval.saturating_mul(2).min(veritrace_consensus::ConsensusConfig::default().snapshot_logs_to_keep)
}

/// Reads an ed25519 key file (the format of `veritrace key gen`, docs/cli.md).
pub fn read_key_file(path: &Path) -> Result<ed25519_dalek::SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read key file {}", path.display()))?;
    veritrace_ledger::keyfile::parse_key_file(&text).with_context(|| format!("key file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<Config> {
        let text = format!(
            "node_id = \"node-1\"\ndata_dir = \"d\"\ngenesis = \"g\"\nnode_key = \"k\"\n\
             p2p_listen = \"/ip4/127.0.0.1/tcp/0\"\ngrpc_listen = \"127.0.0.1:0\"\n\
             http_listen = \"127.0.0.1:0\"\n{extra}"
        );
        let cfg: Config = toml::from_str(&text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn checkpoint_cadence_defaults_and_bounds() {
        let c = config("").expect("defaults").checkpoint;
        assert_eq!((c.every_blocks, c.idle_ms), (CHECKPOINT_EVERY_BLOCKS_DEFAULT, CHECKPOINT_IDLE_MS_DEFAULT));
        let c = config("[checkpoint]\nevery_blocks = 1\nidle_ms = 5\n").expect("every block").checkpoint;
        assert_eq!((c.every_blocks, c.idle_ms), (1, 5));
        for (extra, named) in [
            ("[checkpoint]\nevery_blocks = 0\n", "checkpoint.every_blocks 0"),
            ("[checkpoint]\nevery_blocks = 1001\n", "checkpoint.every_blocks 1001"),
            ("[checkpoint]\nidle_ms = 0\n", "checkpoint.idle_ms 0"),
        ] {
            let e = config(extra).expect_err(extra).to_string();
            assert!(e.contains(named), "{e}");
        }
        assert!(config("[checkpoint]\nevery = 4\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn two_snapshot_intervals_of_log_are_kept_up_to_the_consensus_default() {
        for (interval, kept) in [(1, 2), (200, 400), (500, 1_000), (5_000, 1_000), (1_000_000, 1_000)] {
            let cfg = config(&format!("[raft]\nsnapshot_interval = {interval}\n")).expect("interval");
            assert_eq!(cfg.consensus("ledger").snapshot_logs_to_keep, kept, "interval {interval}");
        }
    }

    #[test]
    fn snapshot_transfer_settings_defaults_bounds_and_consensus() {
        let r = config("").expect("defaults").raft;
        assert_eq!(
            (r.snapshot_chunk_bytes, r.install_snapshot_timeout_ms),
            (SNAPSHOT_CHUNK_BYTES_DEFAULT, INSTALL_SNAPSHOT_TIMEOUT_MS_DEFAULT)
        );
        let cfg = config("[raft]\nsnapshot_chunk_bytes = 1048576\ninstall_snapshot_timeout_ms = 20000\n").expect("set");
        let consensus = cfg.consensus("ledger");
        assert_eq!((consensus.snapshot_chunk_bytes_max, consensus.install_snapshot_timeout_ms), (1_048_576, 20_000));
        consensus.to_openraft().expect("consensus accepts them");
        for (extra, named) in [
            ("[raft]\nsnapshot_chunk_bytes = 0\n", "raft.snapshot_chunk_bytes 0 must be 65536..="),
            ("[raft]\nsnapshot_chunk_bytes = 67108864\n", "raft.snapshot_chunk_bytes 67108864 must be"),
            (
                "[raft]\ninstall_snapshot_timeout_ms = 999\n",
                "raft.install_snapshot_timeout_ms 999 must be 1000..=120000",
            ),
            ("[raft]\ninstall_snapshot_timeout_ms = 120001\n", "raft.install_snapshot_timeout_ms 120001 must be"),
        ] {
            let e = config(extra).expect_err(extra).to_string();
            assert!(e.contains(named), "{e}");
        }
        // The largest chunk allowed is one consensus accepts.
        let cfg = config(&format!("[raft]\nsnapshot_chunk_bytes = {SNAPSHOT_CHUNK_BYTES_LIMIT}\n")).expect("largest");
        cfg.consensus("ledger").to_openraft().expect("consensus accepts the largest chunk");
    }
}
