//! Starting and stopping a node: open the ledger and Raft stores, join the network,
//! start Raft and the services, serve gRPC and HTTP, and shut down cleanly on SIGTERM.
//!
//! Crash safety comes from the stores, not from shutdown: every block and Raft write is
//! synced before it is acknowledged, so SIGKILL loses nothing that was acknowledged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use veritrace_consensus::{MachineStore, PeerInfo, RocksLogStore};
use veritrace_ledger::kv::RocksBackend;
use veritrace_ledger::org::{Genesis, NodeId, PublicKey};
use veritrace_ledger::store::{Durability, OpenOptions, Store, Verification};

use crate::config::{Config, read_key_file};
use crate::machine::{LedgerMachine, SnapshotGate};
use crate::p2p::{P2p, P2pConfig, P2pTransport, peer_id_of};
use crate::service::{Member, Services, raft_id_of};

/// Inbound peer requests queued for the services.
pub const INBOUND_QUEUE_MAX: usize = 1_024;

/// A running node.
pub struct RunningNode {
    pub services: Arc<Services>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Stops serving, shuts Raft down (flushing nothing: every write was synced) and leaves
    /// the network.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        if let Err(e) = self.services.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.services.p2p.shutdown().await;
    }
}

/// Everyone in the genesis with their Raft id and how to reach them.
fn members(genesis: &Genesis, cfg: &Config, own: &NodeId) -> Result<BTreeMap<u64, Member>> {
    let addrs: BTreeMap<&str, &str> = cfg.peers.iter().map(|p| (p.node_id.as_str(), p.p2p_addr.as_str())).collect();
    let mut out = BTreeMap::new();
    for v in genesis.validators.iter().chain(&genesis.observers) {
        let peer_id = peer_id_of(v.public_key.as_bytes()).context("genesis node key")?;
        let addr = if &v.node_id == own {
            cfg.p2p_listen.clone()
        } else {
            addrs.get(v.node_id.as_str()).map(|a| a.to_string()).unwrap_or_default()
        };
        out.insert(
            raft_id_of(&v.public_key),
            Member {
                node_id: v.node_id.clone(),
                raft_id: raft_id_of(&v.public_key),
                peer: PeerInfo { peer_id: peer_id.to_string(), addr },
                public_key: v.public_key,
            },
        );
    }
    Ok(out)
}

pub async fn start(cfg: Config) -> Result<RunningNode> {
    let genesis_text =
        std::fs::read_to_string(&cfg.genesis).with_context(|| format!("read genesis {}", cfg.genesis.display()))?;
    let genesis = Genesis::from_json(&genesis_text).with_context(|| format!("genesis {}", cfg.genesis.display()))?;
    let node_id = NodeId::new(cfg.node_id.clone()).context("node_id")?;
    let node_key = read_key_file(&cfg.node_key)?;
    let public = PublicKey::from_bytes(node_key.verifying_key().to_bytes()).context("node key")?;
    let me = genesis
        .validators
        .iter()
        .chain(&genesis.observers)
        .find(|v| v.node_id == node_id)
        .with_context(|| format!("node {node_id} is not a validator or observer of the genesis"))?;
    if me.public_key != public {
        bail!(
            "node key {} is not the key the genesis names for {node_id} ({})",
            public.to_hex(),
            me.public_key.to_hex()
        );
    }
    let members = members(&genesis, &cfg, &node_id)?;

    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("create {}", cfg.data_dir.display()))?;
    let backend = RocksBackend::open(&cfg.data_dir.join("ledger")).context("open ledger store")?;
    let store = Store::create(
        backend,
        &genesis,
        OpenOptions { verification: Verification::Full, durability: Durability::LogBacked },
    )
    .context("the stored ledger does not verify; refusing to serve it")?;
    tracing::info!(height = store.head().height, log_size = store.head().log_size, "ledger opened and verified");
    let store = Arc::new(RwLock::new(store));

    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(INBOUND_QUEUE_MAX);
    let allowed = members.values().filter_map(|m| m.peer.peer_id.parse().ok()).collect();
    let dial = members
        .values()
        .filter(|m| m.node_id != node_id && !m.peer.addr.is_empty())
        .filter_map(|m| Some((m.peer.peer_id.parse().ok()?, m.peer.addr.parse().ok()?)))
        .collect();
    let p2p_cfg = P2pConfig {
        listen: cfg.p2p_listen.parse().with_context(|| format!("p2p_listen {:?}", cfg.p2p_listen))?,
        node_key_seed: node_key.to_bytes(),
        allowed,
        peers: dial,
        ..P2pConfig::default()
    };
    let (p2p, _p2p_task) = P2p::start(p2p_cfg, inbound_tx).await.context("start p2p")?;
    tracing::info!(peer_id = %p2p.local_peer_id(), addrs = ?p2p.listen_addrs().await, "p2p listening");

    let consensus = cfg.consensus(genesis.ledger_id.as_str());
    let log_store = RocksLogStore::open(&cfg.data_dir.join("raft")).context("open raft log")?;
    let gate = Arc::new(SnapshotGate::default());
    let (machine, applied_rx) = LedgerMachine::new(store.clone(), gate.clone());
    let machine_store = MachineStore::open(machine, &cfg.data_dir.join("snapshots"), consensus.snapshot_bytes_max)
        .context("open raft state machine")?;
    let raft_id = raft_id_of(&public);
    let raft =
        veritrace_consensus::start_raft(raft_id, &consensus, log_store, machine_store, P2pTransport::new(p2p.clone()))
            .await
            .context("start raft")?;

    // The first validator of the genesis founds the cluster, once; everyone else joins.
    let founder = genesis.validators.first().map(|v| v.node_id == node_id).unwrap_or(false);
    if founder && !raft.is_initialized().await.context("raft state")? {
        let voters: BTreeMap<u64, PeerInfo> = genesis
            .validators
            .iter()
            .filter_map(|v| members.get(&raft_id_of(&v.public_key)).map(|m| (m.raft_id, m.peer.clone())))
            .collect();
        tracing::info!(voters = voters.len(), "initialising the raft cluster");
        if let Err(e) = raft.initialize(voters).await {
            tracing::warn!(error = %e, "raft initialise (already initialised elsewhere?)");
        }
    }

    let services = Services::start(
        node_id,
        genesis,
        store,
        raft,
        p2p,
        members,
        node_key,
        cfg.batch.clone(),
        consensus.snapshot_bytes_max,
        cfg.data_dir.join("evidence"),
        gate,
        inbound_rx,
        applied_rx,
    );

    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let grpc = tokio::net::TcpListener::bind(cfg.grpc_listen)
        .await
        .with_context(|| format!("bind grpc {}", cfg.grpc_listen))?;
    let grpc_addr = grpc.local_addr()?;
    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("bind http {}", cfg.http_listen))?;
    let http_addr = http.local_addr()?;
    let servers = vec![
        tokio::spawn(crate::serve::grpc(services.clone(), grpc, shutdown_rx.clone())),
        tokio::spawn(crate::serve::http(services.clone(), http, shutdown_rx)),
    ];
    tracing::info!(%grpc_addr, %http_addr, "serving");
    Ok(RunningNode { services, grpc_addr, http_addr, shutdown, servers })
}

/// How long shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
