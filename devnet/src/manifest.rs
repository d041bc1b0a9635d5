//! `devnet.json`: what a later devnet process (the CLI, another test step) needs to find
//! and control a network — its nodes, who runs them, their ports and their pids.
//!
//! Paths in it are relative to the network directory, so the directory can be moved.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use veritrace_ledger::org::Role;

use crate::cast::NodeRole;
use crate::config::Tuning;

/// Current manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// The manifest's file name in a network directory.
pub const MANIFEST_FILE: &str = "devnet.json";

/// One organisation of the network and where its key is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestOrg {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// Relative to the network directory: `keys/ORG.key`.
    pub key_file: PathBuf,
}

/// One node: identity, ports, and the process running it if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestNode {
    pub node_id: String,
    pub role: NodeRole,
    /// The operating organisation.
    pub org: String,
    /// Relative to the network directory: `nodes/node-K`.
    pub dir: PathBuf,
    pub p2p_port: u16,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The running process, or `None` when the node is down.
    pub pid: Option<u32>,
    /// The process's start time (`/proc/PID/stat`), so a recycled pid is not mistaken for it.
    pub pid_start_ticks: Option<u64>,
}

impl ManifestNode {
    pub fn ports(&self) -> [u16; 3] {
        [self.p2p_port, self.grpc_port, self.http_port]
    }
}

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub ledger_id: String,
    /// The `veritrace-node` executable the nodes are started with (absolute).
    pub node_binary: PathBuf,
    /// Settings written into every node's config; kept so configs can be written again
    /// when a node's ports change.
    #[serde(default)]
    pub tuning: Tuning,
    pub orgs: Vec<ManifestOrg>,
    pub nodes: Vec<ManifestNode>,
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = Manifest::path(dir);
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let m: Manifest = serde_json::from_str(&text).with_context(|| format!("manifest {}", path.display()))?;
        m.validate().with_context(|| format!("manifest {}", path.display()))?;
        Ok(m)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).context("encode manifest")?;
        text.push('\n');
        crate::fsutil::write_atomic(&Manifest::path(dir), text.as_bytes())
    }

    /// Checks what a hand-edited or damaged manifest could get wrong: a known format,
    /// unique node ids and distinct ports.
    pub fn validate(&self) -> Result<()> {
        if self.format != MANIFEST_FORMAT {
            bail!("format {} is not supported (expected {MANIFEST_FORMAT})", self.format);
        }
        if self.nodes.is_empty() {
            bail!("no nodes");
        }
        let mut ids = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for n in &self.nodes {
            if !ids.insert(n.node_id.as_str()) {
                bail!("node {:?} appears twice", n.node_id);
            }
            for p in n.ports() {
                if p == 0 || !ports.insert(p) {
                    bail!("node {:?}: port {p} is zero or used twice", n.node_id);
                }
            }
        }
        Ok(())
    }

    pub fn node(&self, id: &str) -> Option<&ManifestNode> {
        self.nodes.iter().find(|n| n.node_id == id)
    }

    pub fn node_mut(&mut self, id: &str) -> Option<&mut ManifestNode> {
        self.nodes.iter_mut().find(|n| n.node_id == id)
    }

    /// Every port handed out to any node.
    pub fn used_ports(&self) -> BTreeSet<u16> {
        self.nodes.iter().flat_map(|n| n.ports()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            ledger_id: "devnet".into(),
            node_binary: "/usr/bin/veritrace-node".into(),
            tuning: Tuning::default(),
            orgs: vec![ManifestOrg {
                id: "samr".into(),
                name: "State Administration for Market Regulation".into(),
                roles: vec![Role::Regulator],
                key_file: "keys/samr.key".into(),
            }],
            nodes: vec![
                ManifestNode {
                    node_id: "node-1".into(),
                    role: NodeRole::Validator,
                    org: "samr".into(),
                    dir: "nodes/node-1".into(),
                    p2p_port: 7001,
                    grpc_port: 7002,
                    http_port: 7003,
                    pid: Some(1234),
                    pid_start_ticks: Some(99),
                },
                ManifestNode {
                    node_id: "node-2".into(),
                    role: NodeRole::Observer,
                    org: "samr".into(),
                    dir: "nodes/node-2".into(),
                    p2p_port: 7004,
                    grpc_port: 7005,
                    http_port: 7006,
                    pid: None,
                    pid_start_ticks: None,
                },
            ],
        }
    }

    #[test]
    fn manifest_round_trips_through_the_file() {
        let dir = crate::testdir::TestDir::new("manifest");
        let m = sample();
        m.save(dir.path()).expect("save");
        assert_eq!(Manifest::load(dir.path()).expect("load"), m);
        let text = std::fs::read_to_string(Manifest::path(dir.path())).expect("read");
        assert!(
            text.contains("\"role\": \"validator\"") && text.contains("\"roles\": [\n        \"regulator\""),
            "{text}"
        );
    }

    #[test]
    fn repeated_ports_and_ids_are_refused() {
        let mut m = sample();
        m.nodes[1].grpc_port = 7001;
        assert!(m.validate().is_err());
        let mut m = sample();
        m.nodes[1].node_id = "node-1".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.format = 2;
        assert!(m.validate().is_err());
    }
}
