//! The node's TOML config as devnet writes it (docs/operations.md has the node's side).
//!
//! devnet never links the node crate, so this is a second description of the same file:
//! field names must follow `veritrace_node::config::Config`. The node refuses unknown
//! fields, so a rename there shows up as a node that exits at start with the field named,
//! and the launch error carries that line of its log.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Overrides of the node's `[batch]` section; `None` leaves the node's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_max: Option<u32>,
}

impl BatchSettings {
    fn is_empty(&self) -> bool {
        self == &BatchSettings::default()
    }
}

/// Overrides of the node's `[raft]` section; `None` leaves the node's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_timeout_min_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_timeout_max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_interval: Option<u64>,
}

impl RaftSettings {
    fn is_empty(&self) -> bool {
        self == &RaftSettings::default()
    }
}

/// Node settings a network applies to every node's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    #[serde(default)]
    pub batch: BatchSettings,
    #[serde(default)]
    pub raft: RaftSettings,
}

/// How a node reaches another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub node_id: String,
    pub p2p_addr: String,
}

/// One node's config file. Paths are relative to the file, so a network directory can be
/// moved or copied whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfigFile {
    pub node_id: String,
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    pub node_key: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_key: Option<PathBuf>,
    pub p2p_listen: String,
    pub grpc_listen: String,
    pub http_listen: String,
    // Tables last: TOML needs a table's plain values before its sub-tables.
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftSettings>,
}

impl NodeConfigFile {
    /// Sets the tuning sections, leaving out those that change nothing.
    pub fn with_tuning(mut self, tuning: &Tuning) -> Self {
        self.batch = (!tuning.batch.is_empty()).then(|| tuning.batch.clone());
        self.raft = (!tuning.raft.is_empty()).then(|| tuning.raft.clone());
        self
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).with_context(|| format!("encode config of {}", self.node_id))
    }

    pub fn read(path: &Path) -> Result<NodeConfigFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }
}

/// The libp2p address of a TCP port on `ip`.
pub fn p2p_addr(ip: Ipv4Addr, port: u16) -> String {
    format!("/ip4/{ip}/tcp/{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeConfigFile {
        NodeConfigFile {
            node_id: "node-1".into(),
            data_dir: "data".into(),
            genesis: "../../genesis.json".into(),
            node_key: "node.key".into(),
            org_key: Some("../../keys/samr.key".into()),
            p2p_listen: p2p_addr(Ipv4Addr::LOCALHOST, 7001),
            grpc_listen: "127.0.0.1:7002".into(),
            http_listen: "127.0.0.1:7003".into(),
            peers: vec![PeerEntry { node_id: "node-2".into(), p2p_addr: p2p_addr(Ipv4Addr::LOCALHOST, 7004) }],
            batch: None,
            raft: None,
        }
    }

    #[test]
    fn config_toml_round_trips_without_empty_sections() {
        let cfg = sample().with_tuning(&Tuning::default());
        let text = cfg.to_toml().expect("toml");
        assert!(!text.contains("[batch]") && !text.contains("[raft]"), "{text}");
        assert!(text.contains("[[peers]]"), "{text}");
        let back: NodeConfigFile = toml::from_str(&text).expect("parse back");
        assert_eq!(back, cfg);
    }

    #[test]
    fn tuning_is_written_only_where_set() {
        let tuning = Tuning {
            batch: BatchSettings { records_max: Some(100), ..Default::default() },
            raft: RaftSettings { heartbeat_ms: Some(50), snapshot_interval: Some(10), ..Default::default() },
        };
        let cfg = sample().with_tuning(&tuning);
        let text = cfg.to_toml().expect("toml");
        assert!(text.contains("records_max = 100") && !text.contains("bytes_max"), "{text}");
        assert!(text.contains("heartbeat_ms = 50") && text.contains("snapshot_interval = 10"), "{text}");
        let back: NodeConfigFile = toml::from_str(&text).expect("parse back");
        assert_eq!(back, cfg);
    }
}
