//! Starting and stopping a node: open the ledger and Raft stores, join the network,
//! start Raft and the services, serve gRPC and HTTP, and shut down cleanly on SIGTERM.
//!
//! Crash safety comes from the stores, not from shutdown: every block and Raft write is
//! synced before it is acknowledged, so SIGKILL loses nothing that was acknowledged.
//!
//! Launchers learn how the start goes from JSON lines on stdout: a `starting` line as each
//! long step begins and every [`STARTUP_PROGRESS_INTERVAL`] while it runs (verifying a big
//! ledger takes minutes), then one `serving` line, after which the node writes nothing more
//! there.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
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
use crate::members::{Members, raft_id_of};
use crate::p2p::{P2p, P2pConfig, P2pTransport};
use crate::service::Services;

/// Inbound peer requests queued for the services.
pub const INBOUND_QUEUE_MAX: usize = 1_024;
/// How often a start-up step that is still running says so on stdout; well below the
/// silence a launcher tolerates (devnet: 60 s).
pub const STARTUP_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// A running node.
pub struct RunningNode {
    pub services: Arc<Services>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The listeners and the snapshot schedule: each ends once `shutdown` is set.
    servers: Vec<tokio::task::JoinHandle<()>>,
    /// This process' claim on the data directory ([`claim_data_dir`]), let go when the
    /// node is dropped.
    _data_dir: DataDirClaim,
}

impl RunningNode {
    /// Prints the `serving` line with the bound addresses: the last line on stdout.
    pub fn announce_serving(&self) {
        stdout_line(&serde_json::json!({
            "event": "serving",
            "grpc": self.grpc_addr.to_string(),
            "http": self.http_addr.to_string(),
        }));
    }

    /// Resolves when Raft has stopped by itself, with why: a fatal error, which is a write
    /// to the Raft log, the ledger or a snapshot that failed (a full disk, an I/O error), or
    /// a panic in Raft's core. Such a node can neither vote nor apply, and only a restart
    /// brings its Raft back: the stores reopen as they were synced, and the node catches
    /// up from its peers. `veritrace-node` exits with the error then, rather than go on
    /// answering reads of a ledger that no longer moves (as etcd and TiKV stop on a failed
    /// write).
    pub async fn raft_stopped(&self) -> anyhow::Error {
        let mut metrics = self.services.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return anyhow::anyhow!("raft stopped: {}", why_stopped(fatal));
            }
            if metrics.changed().await.is_err() {
                return anyhow::anyhow!("raft stopped: its core ended and left no error");
            }
        }
    }

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

/// Why Raft stopped, each cause said once: the outer error up to where its text repeats its
/// source, then the innermost cause. openraft's storage errors print what they wrap inside
/// their own text (`when Write Snapshot(None): <type>: <message>; source: <message>`) and
/// then give it again as their source, so the whole chain says the same thing three times.
pub(crate) fn why_stopped(fatal: &(dyn std::error::Error + 'static)) -> String {
    let texts: Vec<String> = std::iter::successors(Some(fatal), |e| e.source()).map(|e| e.to_string()).collect();
    let innermost = texts.last().map(String::as_str).unwrap_or_default();
    match texts.get(1).and_then(|next| texts[0].find(next.as_str())) {
        Some(at) => format!("{}{innermost}", &texts[0][..at]),
        None => texts.join(": "),
    }
}

/// Runs RocksDB's flushes and compactions at the lowest CPU priority (nice 19), for every
/// store of the process: the ledger's and the Raft log's share RocksDB's default
/// environment and its two thread pools, so this is one setting of the process, made once
/// before they open. A node's own work — consensus, apply, answering clients — goes first,
/// and the background work takes the CPU left over. The validators of a network write the
/// same rows, so their memtables fill and flush at the same moment; at normal priority a 50
/// MB flush of the state map held every node's apply back at once, the commit latency's
/// tail under steady load (docs/performance.md, session 11).
pub fn rocksdb_background_at_low_priority() -> Result<()> {
    let mut env = rocksdb::Env::new().context("RocksDB's default environment")?;
    env.lower_thread_pool_cpu_priority();
    env.lower_high_priority_thread_pool_cpu_priority();
    Ok(())
}

pub async fn start(cfg: Config) -> Result<RunningNode> {
    rocksdb_background_at_low_priority()?;
    let genesis_text =
        std::fs::read_to_string(&cfg.genesis).with_context(|| format!("read genesis {}", cfg.genesis.display()))?;
    let genesis = Genesis::from_json(&genesis_text).with_context(|| format!("genesis {}", cfg.genesis.display()))?;
    let node_id = NodeId::new(cfg.node_id.clone()).context("node_id")?;
    let node_key = read_key_file(&cfg.node_key)?;
    let public = PublicKey::from_bytes(node_key.verifying_key().to_bytes()).context("node key")?;
    match genesis.validators.iter().chain(&genesis.observers).find(|v| v.node_id == node_id) {
        Some(me) if me.public_key != public => bail!(
            "node key {} is not the key the genesis names for {node_id} ({})",
            public.to_hex(),
            me.public_key.to_hex()
        ),
        Some(_) => {}
        // Not in the genesis: the node joins once governance admits its key as a validator
        // (a peer refuses its connection until then).
        None => tracing::info!(
            node = %node_id,
            key = %public.to_hex(),
            "not in the genesis: waiting to be admitted by governance"
        ),
    }
    if cfg.peers.is_empty() && !genesis.validators.iter().any(|v| v.node_id == node_id) {
        tracing::warn!("no [[peers]] configured: nobody will be dialled, so this node waits to be dialled");
    }
    let configured = cfg.peers.iter().map(|p| (p.node_id.clone(), p.p2p_addr.clone())).collect();
    let members = Members::from_genesis(&genesis, configured, &node_id, &cfg.p2p_listen)?;

    let startup = Startup::new();
    let data_dir_claim = claim_data_dir(&cfg.data_dir)?;
    let ledger_dir = cfg.data_dir.join("ledger");
    let ledger_genesis = genesis.clone();
    let store = startup
        .blocking("open and verify the ledger", move || {
            let backend = RocksBackend::open(&ledger_dir).context("open ledger store")?;
            let opts = OpenOptions { verification: Verification::Full, durability: Durability::LogBacked };
            Store::create(backend, &ledger_genesis, opts)
                .context("the stored ledger does not verify; refusing to serve it")
        })
        .await?;
    tracing::info!(
        height = store.head().height,
        log_size = store.head().log_size,
        full_check = %store.last_full_check().map(ToString::to_string).unwrap_or_default(),
        "ledger opened and verified"
    );
    let store = Arc::new(RwLock::new(store));

    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(INBOUND_QUEUE_MAX);
    let allowed = members.all().iter().filter_map(|m| m.peer_id()).collect();
    let dial =
        members.all().iter().filter(|m| m.node_id != node_id).filter_map(|m| Some((m.peer_id()?, m.addr()?))).collect();
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
    let gate = Arc::new(SnapshotGate::default());
    let (machine, applied_rx) = LedgerMachine::new(store.clone(), gate.clone());
    let (raft_dir, snapshot_dir) = (cfg.data_dir.join("raft"), cfg.data_dir.join("snapshots"));
    let snapshot_bytes_max = consensus.snapshot_bytes_max;
    let (log_store, machine_store) = startup
        .blocking("open the raft stores", move || {
            let log_store = RocksLogStore::open(&raft_dir).context("open raft log")?;
            let machine_store =
                MachineStore::open(machine, &snapshot_dir, snapshot_bytes_max).context("open raft state machine")?;
            Ok((log_store, machine_store))
        })
        .await?;
    let raft_id = raft_id_of(&public);
    let transport = P2pTransport::new(p2p.clone());
    let raft = startup
        .step("start raft", veritrace_consensus::start_raft(raft_id, &consensus, log_store, machine_store, transport))
        .await
        .context("start raft")?;

    // The first validator of the genesis founds the cluster, once; everyone else joins.
    let founder = genesis.validators.first().map(|v| v.node_id == node_id).unwrap_or(false);
    if founder && !raft.is_initialized().await.context("raft state")? {
        let voters: BTreeMap<u64, PeerInfo> = genesis
            .validators
            .iter()
            .filter_map(|v| members.get(&raft_id_of(&v.public_key)).map(|m| (m.raft_id, m.peer)))
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
        cfg.checkpoint.clone(),
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
        tokio::spawn(crate::serve::http(services.clone(), http, shutdown_rx.clone())),
        tokio::spawn(crate::snapshots::schedule(services.raft.clone(), cfg.raft.snapshot_interval, shutdown_rx)),
    ];
    tracing::info!(%grpc_addr, %http_addr, "serving");
    Ok(RunningNode { services, grpc_addr, http_addr, shutdown, servers, _data_dir: data_dir_claim })
}

/// The lock file in a data directory, held by the node that uses it.
pub const DATA_DIR_LOCK: &str = "node.lock";

/// A claim on a data directory: an exclusive lock on its [`DATA_DIR_LOCK`] file, held
/// while this lives (the kernel lets it go when the process ends, however it ends).
#[derive(Debug)]
pub struct DataDirClaim {
    _file: std::fs::File,
}

/// Creates `dir` if missing and claims it for this node, before anything in it is opened
/// or removed. A second node given the same directory (a copied config, a launcher
/// started twice) stops here with a message that names the directory and the process
/// holding it, and changes nothing in it.
pub fn claim_data_dir(dir: &std::path::Path) -> Result<DataDirClaim> {
    std::fs::create_dir_all(dir).with_context(|| format!("create data_dir {}", dir.display()))?;
    let path = dir.join(DATA_DIR_LOCK);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => String::from("another process"),
                pid => format!("process {pid}"),
            };
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            bail!(
                "data_dir {} is in use by {holder} (it holds {}): stop that node first, or give \
                 this one a data_dir of its own",
                dir.display(),
                dir.join(DATA_DIR_LOCK).display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("lock {}", path.display()));
        }
    }
    // Who holds it, for the message above; the lock, not this text, is the claim. Nothing
    // was read or written through `file` yet, so it writes from the start.
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(DataDirClaim { _file: file })
}

/// How long shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The start-up steps that may take long, reported on stdout so that a launcher waiting
/// for the `serving` line can tell a slow start from a hung one.
struct Startup {
    began: tokio::time::Instant,
}

impl Startup {
    fn new() -> Startup {
        Startup { began: tokio::time::Instant::now() }
    }

    /// Runs `work` to its end, reporting `step` as it begins and every
    /// [`STARTUP_PROGRESS_INTERVAL`] until it ends. The ticking lives in this future, so no
    /// report can follow the step's end.
    async fn step<F: Future>(&self, step: &str, work: F) -> F::Output {
        self.report(step);
        let mut work = std::pin::pin!(work);
        let first = tokio::time::Instant::now() + STARTUP_PROGRESS_INTERVAL;
        let mut ticks = tokio::time::interval_at(first, STARTUP_PROGRESS_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                _ = ticks.tick() => self.report(step),
            }
        }
    }

    /// [`Startup::step`] for blocking work, which runs on tokio's blocking pool so that the
    /// reports (and the runtime) are not held up by it.
    async fn blocking<T: Send + 'static>(
        &self,
        step: &str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.step(step, tokio::task::spawn_blocking(work)).await.with_context(|| format!("{step}: the task failed"))?
    }

    fn report(&self, step: &str) {
        let elapsed_s = self.began.elapsed().as_secs();
        stdout_line(&StartingLine { event: "starting", step, elapsed_s });
    }
}

/// The progress line of a start-up step, fields in this order.
#[derive(serde::Serialize)]
struct StartingLine<'a> {
    event: &'static str,
    step: &'a str,
    elapsed_s: u64,
}

/// Writes one JSON line on stdout for launchers. A launcher that stopped reading is no
/// reason to fail (or to panic, as `println!` would on a closed pipe), so write errors are
/// ignored.
fn stdout_line(line: &impl serde::Serialize) {
    if let Ok(text) = serde_json::to_string(line) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use veritrace_ledger::kv::{Backend, Batch, Cf, PointInTime, RocksBackend};

    #[test]
    fn why_raft_stopped_says_each_cause_once() {
        // Shaped as the machine store's errors are: a wrapper whose source says it all.
        #[derive(Debug, thiserror::Error)]
        #[error("state machine storage failed: snapshot: {0}")]
        struct Failed(String);
        #[derive(Debug, thiserror::Error)]
        #[error("state machine: {0}")]
        struct Store(#[source] Failed);
        let full = Store(Failed(std::io::Error::from_raw_os_error(28).to_string()));
        let io = openraft::StorageIOError::<u64>::write_snapshot(None, openraft::AnyError::new(&full));
        let fatal = openraft::error::Fatal::StorageError(openraft::StorageError::IO { source: io });
        assert_eq!(
            super::why_stopped(&fatal),
            "when Write Snapshot(None): state machine storage failed: snapshot: No space left on device (os error 28)",
            "from the chain {:#}",
            anyhow::Error::new(fatal.clone())
        );
        let panicked = openraft::error::Fatal::<u64>::Panicked;
        assert_eq!(super::why_stopped(&panicked), "panicked");
    }

    /// Nice values of this process' threads named `name`.
    fn nice_of_threads(name: &str) -> Vec<i64> {
        let mut nice = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            // Fields after the parenthesised command: state is field 3, nice field 19.
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or_default();
            if let Some(n) = after.split_whitespace().nth(16).and_then(|f| f.parse().ok()) {
                nice.push(n);
            }
        }
        nice
    }

    #[test]
    fn a_flush_after_the_setting_runs_at_the_lowest_cpu_priority() {
        super::rocksdb_background_at_low_priority().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        batch.put(Cf::Records, b"key".to_vec(), b"value".to_vec());
        backend.write(batch).unwrap();
        // The flush is a job of the high-priority pool; its thread lowers itself to the
        // pool's priority before it runs the job.
        backend.prepare_view()().unwrap();
        let nice = nice_of_threads("rocksdb:high");
        assert!(nice.contains(&19), "a flush thread at nice 19: {nice:?}");
    }

    #[test]
    fn a_data_dir_is_claimed_by_one_node_at_a_time() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let claim = super::claim_data_dir(&dir).unwrap();
        let lock = dir.join(super::DATA_DIR_LOCK);
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), format!("{}\n", std::process::id()));

        // A second claim (another open of the file, as another process would make) fails,
        // naming the directory and the holder, and leaves the file as it was.
        let err = format!("{:#}", super::claim_data_dir(&dir).unwrap_err());
        let shown = std::fs::canonicalize(&dir).unwrap();
        assert!(
            err.contains(&format!("data_dir {} is in use by process {}", shown.display(), std::process::id())),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), format!("{}\n", std::process::id()));

        // Let go, the directory can be claimed again.
        drop(claim);
        let _again = super::claim_data_dir(&dir).unwrap();
    }
}
