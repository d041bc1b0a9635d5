//! `devnet.json`: what a later devnet process (the CLI, another test step) needs to find
//! and control a network — its nodes, who runs them, their ports and their pids.
//!
//! Paths in it are relative to the network directory, so the directory can be moved. In
//! namespaces mode it also records the bridge, namespaces and veths that exist and the
//! cuts in force, so that a later `veritrace devnet down` can remove exactly those.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use veritrace_ledger::org::Role;

use crate::cast::NodeRole;
use crate::config::Tuning;
use crate::netns::{NetLayout, NodeLink};

/// Current manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// The manifest's file name in a network directory.
pub const MANIFEST_FILE: &str = "devnet.json";

/// How the nodes of a network reach each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// Every node on 127.0.0.1 with ports picked at run time. Needs no privileges; nodes
    /// cannot be cut from each other.
    #[default]
    Loopback,
    /// Every node in a network namespace of its own on a bridge of the network
    /// ([`crate::netns`]), at its own address with fixed ports. Needs root; supports
    /// partitions.
    Namespaces,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Loopback => "loopback",
            NetMode::Namespaces => "namespaces",
        }
    }
}

/// A one-way cut: `from` cannot send to `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cut {
    pub from: String,
    pub to: String,
}

fn loopback() -> Ipv4Addr {
    Ipv4Addr::LOCALHOST
}

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
    /// The address it listens on and is reached at: 127.0.0.1, or its own address on the
    /// network's bridge in namespaces mode.
    #[serde(default = "loopback")]
    pub ip: Ipv4Addr,
    /// Its namespace and veth, while they exist (namespaces mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<NodeLink>,
    pub p2p_port: u16,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The running process, or `None` when the node is down.
    pub pid: Option<u32>,
    /// The process's start time (`/proc/PID/stat`), so a recycled pid is not mistaken for it.
    pub pid_start_ticks: Option<u64>,
    /// Added after the genesis ([`crate::Network::add_node`]): a validator only once a
    /// governance record admits its key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub added: bool,
}

impl ManifestNode {
    pub fn ports(&self) -> [u16; 3] {
        [self.p2p_port, self.grpc_port, self.http_port]
    }

    /// Its gRPC address as clients reach it.
    pub fn grpc_addr(&self) -> std::net::SocketAddr {
        (self.ip, self.grpc_port).into()
    }

    /// Its HTTP address as clients reach it.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        (self.ip, self.http_port).into()
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
    #[serde(default)]
    pub net: NetMode,
    /// The bridge and subnet, while they exist (namespaces mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<NetLayout>,
    /// Cuts in force (namespaces mode), in the order they were made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<Cut>,
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
    /// unique node ids, distinct addresses, and namespaces, links and cuts only where the
    /// network mode has them.
    pub fn validate(&self) -> Result<()> {
        if self.format != MANIFEST_FORMAT {
            bail!("format {} is not supported (expected {MANIFEST_FORMAT})", self.format);
        }
        if self.nodes.is_empty() {
            bail!("no nodes");
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for n in &self.nodes {
            if !ids.insert(n.node_id.as_str()) {
                bail!("node {:?} appears twice", n.node_id);
            }
            for p in n.ports() {
                if p == 0 || !addrs.insert((n.ip, p)) {
                    bail!("node {:?}: port {p} is zero or used twice on {}", n.node_id, n.ip);
                }
            }
            match (&self.layout, &n.link) {
                (Some(_), Some(l)) if l.ip != n.ip => {
                    bail!("node {:?} is at {} but its namespace has {}", n.node_id, n.ip, l.ip)
                }
                (Some(_), None) => bail!("node {:?} has no namespace although the network has", n.node_id),
                (None, Some(_)) => bail!("node {:?} has a namespace although the network has none", n.node_id),
                _ => {}
            }
        }
        if self.net == NetMode::Loopback && self.layout.is_some() {
            bail!("a loopback network has a bridge");
        }
        if self.layout.is_none() && !self.cuts.is_empty() {
            bail!("cuts are recorded but the network's namespaces do not exist");
        }
        for c in &self.cuts {
            if c.from == c.to || !ids.contains(c.from.as_str()) || !ids.contains(c.to.as_str()) {
                bail!("cut from {:?} to {:?} does not name two nodes of the network", c.from, c.to);
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

    /// The namespace links of every node, in node order (empty unless they exist).
    pub fn links(&self) -> Vec<NodeLink> {
        self.nodes.iter().filter_map(|n| n.link.clone()).collect()
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
            net: NetMode::Loopback,
            layout: None,
            cuts: Vec::new(),
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
                    ip: Ipv4Addr::LOCALHOST,
                    link: None,
                    p2p_port: 7001,
                    grpc_port: 7002,
                    http_port: 7003,
                    pid: Some(1234),
                    pid_start_ticks: Some(99),
                    added: false,
                },
                ManifestNode {
                    node_id: "node-2".into(),
                    role: NodeRole::Observer,
                    org: "samr".into(),
                    dir: "nodes/node-2".into(),
                    ip: Ipv4Addr::LOCALHOST,
                    link: None,
                    p2p_port: 7004,
                    grpc_port: 7005,
                    http_port: 7006,
                    pid: None,
                    pid_start_ticks: None,
                    added: true,
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
        let mut m = sample();
        m.cuts.push(Cut { from: "node-1".into(), to: "node-2".into() });
        assert!(m.validate().is_err(), "cuts without namespaces");
    }

    #[test]
    fn namespaces_manifest_allows_equal_ports_on_distinct_addresses() {
        let mut m = sample();
        m.net = NetMode::Namespaces;
        m.layout = Some(NetLayout {
            subnet_index: 7,
            bridge: "vtd7br".into(),
            gateway: Ipv4Addr::new(10, 200, 7, 1),
            prefix_len: 24,
        });
        for (k, n) in m.nodes.iter_mut().enumerate() {
            n.ip = Ipv4Addr::new(10, 200, 7, k as u8 + 2);
            n.link = Some(NodeLink { netns: format!("vtd7-{}", n.node_id), veth: format!("vtd7h{}", k + 1), ip: n.ip });
            (n.p2p_port, n.grpc_port, n.http_port) = (7000, 7001, 7002);
        }
        m.cuts.push(Cut { from: "node-1".into(), to: "node-2".into() });
        m.validate().expect("valid");
        let text = serde_json::to_string(&m).expect("encode");
        assert_eq!(serde_json::from_str::<Manifest>(&text).expect("decode"), m);
        let mut bad = m.clone();
        bad.nodes[1].link = None;
        assert!(bad.validate().is_err(), "a node without its namespace");
        let mut bad = m.clone();
        bad.cuts.push(Cut { from: "node-1".into(), to: "node-9".into() });
        assert!(bad.validate().is_err(), "a cut to an unknown node");
        let mut bad = m;
        bad.nodes[1].ip = bad.nodes[0].ip;
        bad.nodes[1].link.as_mut().expect("link").ip = bad.nodes[0].ip;
        assert!(bad.validate().is_err(), "two nodes on one address and port");
    }
}
