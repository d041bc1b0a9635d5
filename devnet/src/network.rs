//! A network of real `veritrace-node` processes in one directory, and the handle that
//! creates, starts, breaks and observes it.
//!
//! Layout of a network directory:
//!
//! ```text
//! DIR/devnet.json               manifest: nodes, roles, operators, addresses, pids, and in
//!                               namespaces mode the bridge, namespaces and cuts (manifest.rs)
//! DIR/genesis.json              the genesis every node loads
//! DIR/keys/ORG.key              each organisation's signing key (0600)
//! DIR/nodes/node-K/config.toml  node K's config (paths relative to it)
//! DIR/nodes/node-K/node.key     node K's key: libp2p identity, checkpoint signatures (0600)
//! DIR/nodes/node-K/data/        node K's stores (deleted by `wipe`)
//! DIR/nodes/node-K/node.log     node K's stdout and stderr, appended across runs
//! ```
//!
//! Every method blocks (polling, with bounded waits) and takes `&self`: the handle can be
//! shared between threads, e.g. one that kills nodes while another checks the chain. A
//! start or stop holds the handle's lock while it waits, so another thread's `status`
//! waits for it; HTTP and gRPC reads happen outside the lock. From async code, call it
//! through `tokio::task::spawn_blocking` or `block_in_place`.
//!
//! Dropping the handle kills (SIGKILL) and reaps every process this handle started. A
//! command-line tool that starts nodes and exits calls [`Network::detach`] instead.
//!
//! Networks come in two modes ([`NetMode`]). On *loopback* every node listens on
//! 127.0.0.1 with ports picked at run time: no privileges needed, tests run side by side,
//! but nothing can come between two nodes. In *namespaces* mode (root only) every node
//! runs in a network namespace of its own on a bridge of the network ([`crate::netns`]),
//! at its own address, and [`Network::partition`], [`Network::cut`] and [`Network::heal`]
//! cut and restore the paths between nodes with routes in their namespaces. The
//! namespaces are made when the network is created or started and removed by
//! [`Network::down`], [`Network::destroy`], or the drop of the handle that made them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::SigningKey;
use nix::sys::signal::Signal;
use serde::Serialize;
use veritrace_ledger::org::{Genesis, KeyId, LedgerId, NodeId, OrgId, Organisation, PublicKey, Role, Validator};
use veritrace_ledger::record::{GovernanceAction, Record, RecordBody, SignedRecord};

use crate::cast::{Cast, NodeRole, org_key_path};
use crate::config::{NodeConfigFile, PeerEntry, Tuning, p2p_addr};
use crate::keyfile::write_key_file;
use crate::manifest::{Cut, MANIFEST_FORMAT, Manifest, ManifestNode, ManifestOrg, NetMode};
use crate::process::{self, LaunchError, Launcher, NodeProcess, ServeLimits};

/// Ledger id of a network made without naming one.
pub const LEDGER_ID_DEFAULT: &str = "veritrace-devnet";
/// Most nodes in one network: each is a process with two RocksDB stores.
pub const NODES_MAX: u32 = 64;
/// Default longest silence of a starting node: the wait for its serving line is given up
/// when it prints nothing on stdout for this long. It opens and verifies its stores first,
/// which takes minutes on a big ledger, but says so every few seconds while it does.
pub const SERVE_SILENCE_DEFAULT: Duration = Duration::from_secs(60);
/// Default longest wait for a node's serving line however much it reports meanwhile, so
/// that a node that reports progress forever is still killed.
pub const SERVE_CEILING_DEFAULT: Duration = Duration::from_secs(30 * 60);
const SERVE_LIMITS_DEFAULT: ServeLimits =
    ServeLimits { silence: SERVE_SILENCE_DEFAULT, ceiling: SERVE_CEILING_DEFAULT };
/// Longest wait after SIGTERM before SIGKILL; above the node's own 10 s shutdown grace.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long pause and resume wait for the kernel to show the process stopped or running.
pub const SIGNAL_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a process to disappear after SIGKILL.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often polling helpers look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Launches of one node before giving up when its ports turn out to be taken.
pub const START_ATTEMPTS_MAX: u32 = 3;
/// Lines of a node's log quoted in a launch error.
pub const LOG_TAIL_LINES: usize = 40;
/// Lines of each node's log printed when a network is kept after a failure.
pub const LOG_TAIL_LINES_ON_FAILURE: usize = 15;
/// Set to keep every network directory when its handle is dropped.
pub const KEEP_ENV: &str = "VERITRACE_DEVNET_KEEP";

/// File names inside a network directory.
pub const GENESIS_FILE: &str = "genesis.json";
pub const KEYS_DIR: &str = "keys";
pub const NODES_DIR: &str = "nodes";
pub const CONFIG_FILE: &str = "config.toml";
pub const NODE_KEY_FILE: &str = "node.key";
pub const DATA_DIR: &str = "data";
pub const LOG_FILE: &str = "node.log";

/// Ports every node listens on at its own address in namespaces mode.
pub const NETNS_P2P_PORT: u16 = 7000;
pub const NETNS_GRPC_PORT: u16 = 7001;
pub const NETNS_HTTP_PORT: u16 = 7002;

/// What to create.
#[derive(Clone, Debug)]
pub struct NetworkSpec {
    pub dir: PathBuf,
    pub validators: u32,
    pub observers: u32,
    /// The `veritrace-node` executable (see `locate::node_binary_for_tests`).
    pub node_binary: PathBuf,
    pub ledger_id: LedgerId,
    /// Batch and Raft settings written into every node's config.
    pub tuning: Tuning,
    /// Loopback (the default) or one network namespace per node (root only; partitions).
    pub net: NetMode,
    /// Whether `dir` is a temporary directory made for this network, removed on drop.
    temp: bool,
}

impl NetworkSpec {
    /// A network in `dir` (created if missing; it must not already hold a network).
    pub fn new(dir: impl Into<PathBuf>, validators: u32, observers: u32, node_binary: impl Into<PathBuf>) -> Self {
        NetworkSpec {
            dir: dir.into(),
            validators,
            observers,
            node_binary: node_binary.into(),
            ledger_id: LedgerId::new(LEDGER_ID_DEFAULT).expect("the default ledger id is valid"),
            tuning: Tuning::default(),
            net: NetMode::Loopback,
            temp: false,
        }
    }

    /// A network in a new directory under the system temp dir, removed when the network is
    /// dropped (unless kept: see [`Network::keep`]).
    pub fn temp(validators: u32, observers: u32, node_binary: impl Into<PathBuf>) -> Result<Self> {
        let dir = crate::fsutil::unique_temp_dir("veritrace-devnet")?;
        Ok(NetworkSpec { temp: true, ..NetworkSpec::new(dir, validators, observers, node_binary) })
    }
}

/// How a stop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It did not exit within [`STOP_TIMEOUT`] and was killed.
    Killed,
}

/// What a node says about itself, and whether it is there to say it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub role: NodeRole,
    pub org: String,
    /// The process, if it runs.
    pub pid: Option<u32>,
    /// Stopped by SIGSTOP.
    pub paused: bool,
    /// Its metrics answered; the numbers below are zero otherwise.
    pub up: bool,
    pub height: u64,
    pub log_size: u64,
    pub complete_checkpoint_height: u64,
    pub term: u64,
    pub is_leader: bool,
    /// Its Raft log is deleted up to this index, covered by its snapshot (0: nothing
    /// purged yet). A member behind the leader's catches up by snapshot, not by log.
    pub raft_purged_index: u64,
    /// Its Raft state as it reports it (`leader`, `follower`, `candidate`, `learner`), from
    /// the gRPC `Status` RPC; `None` if that did not answer.
    pub raft_role: Option<String>,
    /// The leader it knows of, if any (gRPC `Status`).
    pub leader: Option<String>,
    /// Root of its Merkle log and of its state map at its height, hex (gRPC `Status`).
    pub log_root: Option<String>,
    pub state_root: Option<String>,
    /// Nodes it cannot send to because of a cut (namespaces mode).
    pub cut_off_from: Vec<String>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Why the metrics or the gRPC status could not be read, when the process runs.
    pub error: Option<String>,
}

struct State {
    manifest: Manifest,
    procs: BTreeMap<String, NodeProcess>,
    /// This handle made the namespaces that exist now, and removes them when dropped.
    net_owned: bool,
}

/// A network of node processes in one directory. Dropping it kills (SIGKILL) and reaps
/// every process it started; see [`Network::keep`] and [`Network::detach`].
pub struct Network {
    dir: PathBuf,
    genesis: Genesis,
    cast: Cast,
    state: Mutex<State>,
    serve_limits: ServeLimits,
    temp: bool,
    keep: bool,
    /// A body run by `keep_on_failure` failed: report where the logs are.
    failed: bool,
}

/// The wall clock in unix ms (records, genesis times, run tags).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Network {
    /// Generates keys, genesis, configs and manifest for `spec` (starting nothing).
    pub fn create(spec: NetworkSpec) -> Result<Network> {
        let temp = spec.temp;
        let dir = spec.dir.clone();
        let made = Network::create_in(spec);
        if made.is_err() && temp {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }

    fn create_in(spec: NetworkSpec) -> Result<Network> {
        if spec.validators == 0 {
            bail!("a network needs at least one validator");
        }
        let total = spec.validators.checked_add(spec.observers).filter(|t| *t <= NODES_MAX);
        let Some(total) = total else {
            bail!("{} validators + {} observers is more than {NODES_MAX} nodes", spec.validators, spec.observers)
        };
        if spec.net == NetMode::Namespaces
            && let Err(why) = crate::netns::available()
        {
            bail!("cannot make a network in namespaces mode: {why}");
        }
        let dir = process::absolute(&spec.dir)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        for existing in [Manifest::path(&dir), dir.join(GENESIS_FILE)] {
            if existing.exists() {
                bail!("{} already holds a network ({} exists); open it instead", dir.display(), existing.display());
            }
        }
        let node_binary = process::absolute(&spec.node_binary)?;
        if !node_binary.is_file() {
            bail!("node binary {} does not exist", node_binary.display());
        }

        let cast = Cast::generate()?;
        let nodes = Cast::nodes(spec.validators, spec.observers)?;
        let genesis = cast.genesis(&spec.ledger_id, now_ms(), &nodes)?;
        let genesis_path = dir.join(GENESIS_FILE);
        std::fs::write(&genesis_path, genesis.to_json() + "\n")
            .with_context(|| format!("write {}", genesis_path.display()))?;
        let keys_dir = dir.join(KEYS_DIR);
        cast.write_keys(&keys_dir)?;

        // Namespaces mode gives every node its own address and fixed ports (set below).
        let ports = match spec.net {
            NetMode::Loopback => crate::ports::pick_ports(3 * total as usize, &Default::default())?,
            NetMode::Namespaces => {
                (0..total).flat_map(|_| [NETNS_P2P_PORT, NETNS_GRPC_PORT, NETNS_HTTP_PORT]).collect()
            }
        };
        let mut manifest_nodes = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let rel = Path::new(NODES_DIR).join(n.node_id.as_str());
            let node_dir = dir.join(&rel);
            std::fs::create_dir_all(&node_dir).with_context(|| format!("create {}", node_dir.display()))?;
            write_key_file(&node_dir.join(NODE_KEY_FILE), &n.key)?;
            manifest_nodes.push(ManifestNode {
                node_id: n.node_id.to_string(),
                role: n.role,
                org: n.org.to_string(),
                dir: rel,
                ip: Ipv4Addr::LOCALHOST,
                link: None,
                p2p_port: ports[3 * i],
                grpc_port: ports[3 * i + 1],
                http_port: ports[3 * i + 2],
                pid: None,
                pid_start_ticks: None,
                added: false,
            });
        }
        let orgs = cast
            .organisations()
            .iter()
            .map(|o| ManifestOrg {
                id: o.id.to_string(),
                name: o.name.clone(),
                roles: o.roles.iter().copied().collect(),
                key_file: org_key_path(Path::new(KEYS_DIR), &o.id),
            })
            .collect();
        let mut manifest = Manifest {
            format: MANIFEST_FORMAT,
            ledger_id: spec.ledger_id.to_string(),
            node_binary,
            tuning: spec.tuning.clone(),
            net: spec.net,
            layout: None,
            cuts: Vec::new(),
            orgs,
            nodes: manifest_nodes,
        };
        if spec.net == NetMode::Namespaces {
            make_namespaces(&dir, &mut manifest)?;
        }
        let written = manifest
            .validate()
            .context("generated manifest")
            .and_then(|()| write_configs(&dir, &manifest))
            .and_then(|()| manifest.save(&dir));
        if let Err(e) = written {
            if let Some(layout) = &manifest.layout {
                let _ = crate::netns::remove(layout, &manifest.links());
            }
            return Err(e);
        }
        let net_owned = manifest.layout.is_some();
        Ok(Network {
            dir,
            genesis,
            cast,
            state: Mutex::new(State { manifest, procs: BTreeMap::new(), net_owned }),
            serve_limits: SERVE_LIMITS_DEFAULT,
            temp: spec.temp,
            keep: false,
            failed: false,
        })
    }

    /// A new network of `validators` + `observers` nodes in a temporary directory.
    pub fn temp(validators: u32, observers: u32, node_binary: impl Into<PathBuf>) -> Result<Network> {
        Network::create(NetworkSpec::temp(validators, observers, node_binary)?)
    }

    /// Opens the network in `dir` made earlier, by this or another process. Nodes whose
    /// recorded processes still run are adopted: they can be stopped, killed, paused and
    /// observed, but dropping this handle leaves them running. Their data is kept.
    pub fn open(dir: impl AsRef<Path>) -> Result<Network> {
        let dir = process::absolute(dir.as_ref())?;
        let mut manifest = Manifest::load(&dir)?;
        let genesis_path = dir.join(GENESIS_FILE);
        let text =
            std::fs::read_to_string(&genesis_path).with_context(|| format!("read {}", genesis_path.display()))?;
        let genesis = Genesis::from_json(&text).with_context(|| format!("genesis {}", genesis_path.display()))?;
        if genesis.ledger_id.as_str() != manifest.ledger_id {
            bail!(
                "{} is for ledger {:?}, the manifest for {:?}",
                genesis_path.display(),
                genesis.ledger_id.as_str(),
                manifest.ledger_id
            );
        }
        for n in manifest.nodes.iter().filter(|n| !n.added) {
            let known = genesis.validators.iter().chain(&genesis.observers).any(|v| v.node_id.as_str() == n.node_id);
            if !known {
                bail!("manifest node {:?} is not in {}", n.node_id, genesis_path.display());
            }
        }
        let cast = Cast::load(&genesis, &dir.join(KEYS_DIR))?;
        let mut procs = BTreeMap::new();
        let mut changed = false;
        for n in &mut manifest.nodes {
            if let Some(pid) = n.pid {
                match process::adopt(pid, n.pid_start_ticks) {
                    Some(p) => {
                        procs.insert(n.node_id.clone(), p);
                    }
                    None => {
                        n.pid = None;
                        n.pid_start_ticks = None;
                        changed = true;
                    }
                }
            }
        }
        // Namespaces do not survive a reboot; the manifest does.
        if let Some(layout) = &manifest.layout
            && !crate::netns::exists(layout, &manifest.links())
        {
            eprintln!(
                "veritrace-devnet: the namespaces of {} are gone (reboot?); they are made again at the next start",
                dir.display()
            );
            let _ = crate::netns::remove(layout, &manifest.links());
            forget_namespaces(&mut manifest);
            changed = true;
        }
        if changed {
            manifest.save(&dir)?;
        }
        Ok(Network {
            dir,
            genesis,
            cast,
            state: Mutex::new(State { manifest, procs, net_owned: false }),
            serve_limits: SERVE_LIMITS_DEFAULT,
            temp: false,
            keep: true,
            failed: false,
        })
    }

    /// Keeps the directory when the handle is dropped (it is also kept when the thread is
    /// panicking, or when `VERITRACE_DEVNET_KEEP` is set). Tests that return `Result` use
    /// [`Network::keep_on_failure`] instead.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Runs `body` on the network and drops it; if `body` fails, the directory is kept and
    /// the nodes' last log lines are printed first, as for a panic. For tests that return
    /// `Result`, whose errors would otherwise take the logs away with the temp directory.
    pub fn keep_on_failure<T>(mut self, body: impl FnOnce(&Network) -> Result<T>) -> Result<T> {
        let out = body(&self);
        if out.is_err() {
            self.keep = true;
            self.failed = true;
        }
        out
    }

    /// Lets every node run on after this handle is gone, with its pid in the manifest for
    /// a later [`Network::open`]: what `veritrace devnet up` does. The directory is kept.
    ///
    /// The node writes nothing to stdout after its serving line, so the pipe that closes
    /// when this process exits costs it nothing; its log continues through stderr.
    pub fn detach(mut self) {
        self.keep = true;
        self.lock().net_owned = false;
        let procs = std::mem::take(&mut self.lock().procs);
        for p in procs.into_values() {
            p.release();
        }
    }

    /// Longest time a starting node may print nothing on stdout before it is killed
    /// (default [`SERVE_SILENCE_DEFAULT`]); each line it prints restarts the clock.
    pub fn set_serve_silence(&mut self, silence: Duration) {
        self.serve_limits.silence = silence;
    }

    /// Longest wait for a node's serving line however much it reports meanwhile (default
    /// [`SERVE_CEILING_DEFAULT`]).
    pub fn set_serve_ceiling(&mut self, ceiling: Duration) {
        self.serve_limits.ceiling = ceiling;
    }

    /// Uses another node binary from the next start on (recorded in the manifest).
    pub fn set_node_binary(&self, path: &Path) -> Result<()> {
        let path = process::absolute(path)?;
        if !path.is_file() {
            bail!("node binary {} does not exist", path.display());
        }
        let mut st = self.lock();
        st.manifest.node_binary = path;
        st.manifest.save(&self.dir)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as any failed
        // operation does (the manifest is written atomically), so carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- what the network is ----

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    pub fn genesis_path(&self) -> PathBuf {
        self.dir.join(GENESIS_FILE)
    }

    /// The organisations and their signing keys, for signing records.
    pub fn cast(&self) -> &Cast {
        &self.cast
    }

    pub fn ledger_id(&self) -> &LedgerId {
        &self.genesis.ledger_id
    }

    /// A copy of the manifest as it is now.
    pub fn manifest(&self) -> Manifest {
        self.lock().manifest.clone()
    }

    /// Every node id, validators first.
    pub fn node_ids(&self) -> Vec<String> {
        self.lock().manifest.nodes.iter().map(|n| n.node_id.clone()).collect()
    }

    pub fn validators(&self) -> Vec<String> {
        self.ids_with_role(NodeRole::Validator)
    }

    pub fn observers(&self) -> Vec<String> {
        self.ids_with_role(NodeRole::Observer)
    }

    fn ids_with_role(&self, role: NodeRole) -> Vec<String> {
        self.lock().manifest.nodes.iter().filter(|n| n.role == role).map(|n| n.node_id.clone()).collect()
    }

    /// The manifest entry of `node`.
    pub fn node(&self, node: &str) -> Result<ManifestNode> {
        node_entry(&self.lock().manifest, node).cloned()
    }

    /// How the nodes reach each other: loopback or namespaces.
    pub fn net_mode(&self) -> NetMode {
        self.lock().manifest.net
    }

    /// The node's gRPC address, as clients in this (the root) namespace reach it.
    pub fn grpc_addr(&self, node: &str) -> Result<SocketAddr> {
        Ok(self.node(node)?.grpc_addr())
    }

    pub fn http_addr(&self, node: &str) -> Result<SocketAddr> {
        Ok(self.node(node)?.http_addr())
    }

    pub fn p2p_addr(&self, node: &str) -> Result<String> {
        let n = self.node(node)?;
        Ok(p2p_addr(n.ip, n.p2p_port))
    }

    pub fn node_dir(&self, node: &str) -> Result<PathBuf> {
        Ok(self.dir.join(self.node(node)?.dir))
    }

    pub fn config_path(&self, node: &str) -> Result<PathBuf> {
        Ok(self.node_dir(node)?.join(CONFIG_FILE))
    }

    pub fn data_dir(&self, node: &str) -> Result<PathBuf> {
        Ok(self.node_dir(node)?.join(DATA_DIR))
    }

    /// The node's log: its stdout and stderr, appended across runs, each run after a
    /// `=== veritrace-devnet: start ...` line.
    pub fn logs_path(&self, node: &str) -> Result<PathBuf> {
        Ok(self.node_dir(node)?.join(LOG_FILE))
    }

    /// The node's pid, if its process runs.
    pub fn pid(&self, node: &str) -> Result<Option<u32>> {
        let mut st = self.lock();
        node_entry(&st.manifest, node)?;
        Ok(running(&mut st, node).map(|p| p.pid()))
    }

    pub fn is_running(&self, node: &str) -> Result<bool> {
        Ok(self.pid(node)?.is_some())
    }

    // ---- process control ----

    /// Starts every node that is not running and waits until each serves. Nodes start
    /// together, and each is held to the serve limits from its own spawn and its own last
    /// line, whichever node is being waited for; a node whose ports were taken meanwhile
    /// gets new ones and starts again.
    pub fn start_all(&self) -> Result<()> {
        let mut st = self.lock();
        self.ensure_net(&mut st)?;
        let ids: Vec<String> = st.manifest.nodes.iter().map(|n| n.node_id.clone()).collect();
        let mut errors = Vec::new();
        let mut launches = Vec::new();
        for id in ids {
            if running(&mut st, &id).is_some() {
                continue;
            }
            // Spawned nodes are waited for below whatever happens here, so keep going.
            match self.ensure_ports_free(&mut st, &id).and_then(|()| self.spawn_node(&st, &id, 1)) {
                Ok(launch) => launches.push((id, launch)),
                Err(e) => errors.push(format!("{id}: {e:#}")),
            }
        }
        for (id, (launch, log, log_from)) in launches {
            let (proc, outcome) = launch.wait(self.serve_limits);
            let result = match outcome {
                Ok(serving) => self.register(&mut st, &id, proc, serving),
                Err(LaunchError::Exited { .. })
                    if st.manifest.net == NetMode::Loopback && process::log_shows_bind_failure(&log, log_from) =>
                {
                    self.repick_ports(&mut st, &id).and_then(|()| self.start_locked(&mut st, &id, 2))
                }
                Err(e) => Err(launch_error(&id, &log, e, log_from)),
            };
            if let Err(e) = result {
                errors.push(format!("{e:#}"));
            }
        }
        if !errors.is_empty() {
            bail!("{} node(s) did not start:\n{}", errors.len(), errors.join("\n\n"));
        }
        Ok(())
    }

    /// Starts `node` and waits until it serves; an error if it already runs.
    pub fn start(&self, node: &str) -> Result<()> {
        let mut st = self.lock();
        node_entry(&st.manifest, node)?;
        if let Some(p) = running(&mut st, node) {
            bail!("{node} is already running (pid {})", p.pid());
        }
        self.ensure_net(&mut st)?;
        self.start_locked(&mut st, node, 1)
    }

    /// In namespaces mode, makes the namespaces if they do not exist (a network brought
    /// down, or a reboot), on the subnet it had before if that is free, and writes the
    /// configs again if its addresses changed.
    fn ensure_net(&self, st: &mut State) -> Result<()> {
        if st.manifest.net != NetMode::Namespaces || st.manifest.layout.is_some() {
            return Ok(());
        }
        make_namespaces(&self.dir, &mut st.manifest)?;
        st.net_owned = true;
        let written = write_configs(&self.dir, &st.manifest).and_then(|()| st.manifest.save(&self.dir));
        if let Err(e) = written {
            let _ = self.remove_namespaces(st);
            return Err(e);
        }
        Ok(())
    }

    fn start_locked(&self, st: &mut State, node: &str, first_attempt: u32) -> Result<()> {
        for attempt in first_attempt..=START_ATTEMPTS_MAX {
            self.ensure_ports_free(st, node)?;
            let (launch, log, log_from) = self.spawn_node(st, node, attempt)?;
            let (proc, outcome) = launch.wait(self.serve_limits);
            match outcome {
                Ok(serving) => return self.register(st, node, proc, serving),
                Err(LaunchError::Exited { .. })
                    if attempt < START_ATTEMPTS_MAX
                        && st.manifest.net == NetMode::Loopback
                        && process::log_shows_bind_failure(&log, log_from) =>
                {
                    self.repick_ports(st, node)?;
                }
                Err(e) => return Err(launch_error(node, &log, e, log_from)),
            }
        }
        bail!("{node} could not bind its ports in {START_ATTEMPTS_MAX} attempts")
    }

    /// Marks a new run in the log and spawns the node; returns the log and where this run's
    /// output begins in it.
    fn spawn_node(&self, st: &State, node: &str, attempt: u32) -> Result<(process::Launch, PathBuf, u64)> {
        let entry = node_entry(&st.manifest, node)?;
        let node_dir = self.dir.join(&entry.dir);
        let log = node_dir.join(LOG_FILE);
        let marker = format!(
            "=== veritrace-devnet: start {node} (attempt {attempt}) at unix ms {} with {} ===\n",
            now_ms(),
            st.manifest.node_binary.display()
        );
        append(&log, &marker)?;
        let log_from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let launcher = match &entry.link {
            Some(l) => Launcher::in_netns(&st.manifest.node_binary, &l.netns),
            None if st.manifest.net == NetMode::Namespaces => {
                bail!("{node} has no network namespace (the network's namespaces do not exist)")
            }
            None => Launcher::direct(&st.manifest.node_binary),
        };
        let launch = process::spawn(&launcher, &node_dir.join(CONFIG_FILE), &log)?;
        Ok((launch, log, log_from))
    }

    /// Records a node that serves, after checking it serves where its config says.
    fn register(&self, st: &mut State, node: &str, mut proc: NodeProcess, serving: process::Serving) -> Result<()> {
        let entry = node_entry_mut(&mut st.manifest, node)?;
        if serving.grpc != entry.grpc_addr() || serving.http != entry.http_addr() {
            let _ = proc.signal(Signal::SIGKILL);
            proc.wait_exit(KILL_TIMEOUT);
            bail!(
                "{node} serves gRPC on {} and HTTP on {}, but its config says {} and {}; killed it",
                serving.grpc,
                serving.http,
                entry.grpc_addr(),
                entry.http_addr()
            );
        }
        entry.pid = Some(proc.pid());
        entry.pid_start_ticks = process::start_ticks(proc.pid());
        st.procs.insert(node.to_string(), proc);
        st.manifest.save(&self.dir)
    }

    /// Gives `node` new ports if any of its ports is taken by another process right now.
    fn ensure_ports_free(&self, st: &mut State, node: &str) -> Result<()> {
        if st.manifest.net == NetMode::Namespaces {
            // Fixed ports on an address of the node's own, in a namespace of its own.
            return Ok(());
        }
        let ports = node_entry(&st.manifest, node)?.ports();
        if ports.iter().all(|p| crate::ports::is_free(*p)) {
            return Ok(());
        }
        self.repick_ports(st, node)
    }

    /// New ports for `node`, and every config written again, since peers dial it at its
    /// p2p port. Peers that are running keep the old address until they restart; they
    /// still reach it over the connection it opens to them.
    fn repick_ports(&self, st: &mut State, node: &str) -> Result<()> {
        let used = st.manifest.used_ports();
        let fresh = crate::ports::pick_ports(3, &used)?;
        let entry = node_entry_mut(&mut st.manifest, node)?;
        eprintln!(
            "veritrace-devnet: {node}: ports {:?} are taken; moving to {fresh:?}",
            [entry.p2p_port, entry.grpc_port, entry.http_port]
        );
        (entry.p2p_port, entry.grpc_port, entry.http_port) = (fresh[0], fresh[1], fresh[2]);
        write_configs(&self.dir, &st.manifest)?;
        st.manifest.save(&self.dir)
    }

    /// The id of organisation `org` of the genesis; an error naming it and the known ones
    /// if there is none.
    pub fn organisation(&self, org: &str) -> Result<OrgId> {
        let org_id = OrgId::new(org).with_context(|| format!("organisation id {org:?}"))?;
        if self.genesis.org(&org_id).is_none() {
            let known: Vec<&str> = self.genesis.organisations.iter().map(|o| o.id.as_str()).collect();
            bail!("organisation {org:?} is not in the genesis; known: {}", known.join(", "));
        }
        Ok(org_id)
    }

    /// Adds a node the genesis does not name, operated by `org`, and starts it: a key, a
    /// directory, ports (or a namespace), a config dialling every other node, and every
    /// other node's config naming it (read at their next start; until then they learn its
    /// address when it connects). Returns its entry for the governance record that admits
    /// it as a validator ([`crate::admit::add_validator`]): until that record commits, every
    /// peer refuses its connections.
    pub fn add_node(&self, org: &str) -> Result<Validator> {
        let org_id = self.organisation(org)?;
        let mut st = self.lock();
        if st.manifest.nodes.len() as u32 >= NODES_MAX {
            bail!("the network already has {NODES_MAX} nodes");
        }
        let taken: BTreeSet<&str> = st.manifest.nodes.iter().map(|n| n.node_id.as_str()).collect();
        let node_id =
            (1..).map(crate::cast::node_name).find(|name| !taken.contains(name.as_str())).expect("a free node name");
        let key = crate::keyfile::generate_key()?;
        let entry = Validator {
            node_id: NodeId::new(node_id.clone()).with_context(|| format!("node id {node_id:?}"))?,
            org: org_id,
            public_key: PublicKey::from_bytes(key.verifying_key().to_bytes()).context("node public key")?,
        };
        let rel = Path::new(NODES_DIR).join(&node_id);
        let node_dir = self.dir.join(&rel);
        std::fs::create_dir_all(&node_dir).with_context(|| format!("create {}", node_dir.display()))?;
        write_key_file(&node_dir.join(NODE_KEY_FILE), &key)?;
        let (ip, ports, link) = match (st.manifest.net, &st.manifest.layout) {
            (NetMode::Loopback, _) => {
                (Ipv4Addr::LOCALHOST, crate::ports::pick_ports(3, &st.manifest.used_ports())?, None)
            }
            (NetMode::Namespaces, Some(layout)) => {
                let link = crate::netns::add(&self.dir, layout, &st.manifest.links(), &node_id)?;
                (link.ip, vec![NETNS_P2P_PORT, NETNS_GRPC_PORT, NETNS_HTTP_PORT], Some(link))
            }
            (NetMode::Namespaces, None) => bail!("the network's namespaces do not exist (it is down); start it first"),
        };
        st.manifest.nodes.push(ManifestNode {
            node_id: node_id.clone(),
            role: NodeRole::Validator,
            org: org.to_string(),
            dir: rel,
            ip,
            link,
            p2p_port: ports[0],
            grpc_port: ports[1],
            http_port: ports[2],
            pid: None,
            pid_start_ticks: None,
            added: true,
        });
        st.manifest.validate().context("manifest with the added node")?;
        write_configs(&self.dir, &st.manifest)?;
        st.manifest.save(&self.dir)?;
        self.start_locked(&mut st, &node_id, 1)?;
        Ok(entry)
    }

    /// A governance record admitting `validator`, authored by the first regulator of the
    /// cast and approved by as many others as the genesis' governance rules ask, signed
    /// now with `nonce`.
    pub fn governance(&self, nonce: u64, action: GovernanceAction) -> Result<SignedRecord> {
        let regulators: Vec<&Organisation> =
            self.genesis.organisations.iter().filter(|o| o.roles.contains(&Role::Regulator)).collect();
        let needed = self.genesis.governance.quorum as usize;
        if regulators.len() < needed.max(1) {
            bail!("the genesis has {} regulators; governance needs {needed}", regulators.len());
        }
        let key_of = |o: &Organisation| -> Result<(&SigningKey, KeyId)> {
            let key = self.cast.key(o.id.as_str()).with_context(|| format!("no key for {}", o.id))?;
            let id = o.keys.first().map(|k| k.key_id.clone()).with_context(|| format!("{} has no keys", o.id))?;
            Ok((key, id))
        };
        let author = regulators[0];
        let (key, key_id) = key_of(author)?;
        let record = Record {
            author: author.id.clone(),
            key_id,
            time_ms: now_ms(),
            nonce,
            body: RecordBody::Governance(action),
        };
        let mut signed = SignedRecord::sign(&self.genesis.ledger_id, record, key);
        for approver in regulators.iter().skip(1).take(needed.saturating_sub(1)) {
            let (key, key_id) = key_of(approver)?;
            signed.approve(&self.genesis.ledger_id, approver.id.clone(), key_id, key);
        }
        Ok(signed)
    }

    /// SIGTERM, then SIGKILL if it has not exited after [`STOP_TIMEOUT`]. A paused node is
    /// resumed so it can handle the SIGTERM.
    pub fn stop(&self, node: &str) -> Result<Stopped> {
        let mut st = self.lock();
        node_entry(&st.manifest, node)?;
        let Some(proc) = running(&mut st, node) else {
            forget(&mut st, node);
            st.manifest.save(&self.dir)?;
            return Ok(Stopped::NotRunning);
        };
        proc.signal(Signal::SIGTERM)?;
        proc.signal(Signal::SIGCONT)?;
        let outcome = if proc.wait_exit(STOP_TIMEOUT) {
            Stopped::Terminated
        } else {
            proc.signal(Signal::SIGKILL)?;
            if !proc.wait_exit(KILL_TIMEOUT) {
                bail!("{node} (pid {}) survived SIGTERM and SIGKILL", proc.pid());
            }
            Stopped::Killed
        };
        forget(&mut st, node);
        st.manifest.save(&self.dir)?;
        Ok(outcome)
    }

    /// Stops every running node: SIGTERM to all at once, SIGKILL to those still running
    /// after [`STOP_TIMEOUT`].
    pub fn stop_all(&self) -> Result<()> {
        let mut st = self.lock();
        let ids: Vec<String> = st.procs.keys().cloned().collect();
        for id in &ids {
            if let Some(p) = running(&mut st, id) {
                p.signal(Signal::SIGTERM)?;
                p.signal(Signal::SIGCONT)?;
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut survivors = Vec::new();
        for id in &ids {
            if let Some(p) = st.procs.get_mut(id)
                && !p.wait_exit(deadline.saturating_duration_since(Instant::now()))
            {
                p.signal(Signal::SIGKILL)?;
                if !p.wait_exit(KILL_TIMEOUT) {
                    survivors.push(format!("{id} (pid {})", p.pid()));
                    continue;
                }
            }
            forget(&mut st, id);
        }
        st.manifest.save(&self.dir)?;
        if !survivors.is_empty() {
            bail!("still running after SIGTERM and SIGKILL: {}", survivors.join(", "));
        }
        Ok(())
    }

    /// SIGKILL, like a crash or a power cut: the node gets no chance to clean up.
    pub fn kill(&self, node: &str) -> Result<()> {
        let mut st = self.lock();
        node_entry(&st.manifest, node)?;
        if let Some(proc) = running(&mut st, node) {
            proc.signal(Signal::SIGKILL)?;
            if !proc.wait_exit(KILL_TIMEOUT) {
                bail!("{node} (pid {}) survived SIGKILL for {KILL_TIMEOUT:?}", proc.pid());
            }
        }
        forget(&mut st, node);
        st.manifest.save(&self.dir)
    }

    /// SIGSTOP: the process is frozen with its sockets open, like a node stuck in a long
    /// pause; its peers see it time out rather than disconnect.
    pub fn pause(&self, node: &str) -> Result<()> {
        self.signal_running(node, Signal::SIGSTOP, true)
    }

    /// SIGCONT after [`Network::pause`].
    pub fn resume(&self, node: &str) -> Result<()> {
        self.signal_running(node, Signal::SIGCONT, false)
    }

    /// Sends SIGSTOP or SIGCONT and returns once the kernel shows the process stopped or
    /// running again (a signal is delivered asynchronously; on a busy machine a status read
    /// right after `kill` could still see the old state).
    fn signal_running(&self, node: &str, signal: Signal, stopped: bool) -> Result<()> {
        let pid = {
            let mut st = self.lock();
            node_entry(&st.manifest, node)?;
            let Some(proc) = running(&mut st, node) else { bail!("{node} is not running") };
            proc.signal(signal)?;
            proc.pid()
        };
        let deadline = Instant::now() + SIGNAL_SETTLE_TIMEOUT;
        while process::is_stopped(pid) != stopped {
            if Instant::now() >= deadline {
                bail!(
                    "{node} (pid {pid}) still {} {SIGNAL_SETTLE_TIMEOUT:?} after {signal:?}",
                    if stopped { "runs" } else { "is stopped" }
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// [`Network::stop`] then [`Network::start`].
    pub fn restart(&self, node: &str) -> Result<Stopped> {
        let stopped = self.stop(node)?;
        self.start(node)?;
        Ok(stopped)
    }

    /// Deletes a stopped node's data (ledger, Raft log, snapshots), so that at its next
    /// start it catches up from its peers from nothing.
    pub fn wipe(&self, node: &str) -> Result<()> {
        if let Some(pid) = self.pid(node)? {
            bail!("{node} is running (pid {pid}); stop or kill it before wiping its data");
        }
        let data = self.data_dir(node)?;
        match std::fs::remove_dir_all(&data) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", data.display())),
        }
    }

    /// Stops every node, then removes the network's namespaces, veths and bridge (in
    /// namespaces mode), keeping the directory: what `veritrace devnet down` does. A later
    /// start makes the namespaces again.
    pub fn down(&self) -> Result<()> {
        let stopped = self.stop_all();
        let removed = {
            let mut st = self.lock();
            self.remove_namespaces(&mut st)
        };
        match (stopped, removed) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(a), Err(b)) => Err(anyhow!("{a:#}\n{b:#}")),
        }
    }

    /// [`Network::down`], then deletes the whole network directory.
    pub fn destroy(mut self) -> Result<()> {
        self.down()?;
        // Gone on purpose: Drop must neither remove it again nor report it kept.
        self.temp = false;
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("remove {}", self.dir.display()))
    }

    /// Removes the namespaces if they exist; the manifest then records none.
    fn remove_namespaces(&self, st: &mut State) -> Result<()> {
        let Some(layout) = st.manifest.layout.clone() else { return Ok(()) };
        let removed = crate::netns::remove(&layout, &st.manifest.links());
        forget_namespaces(&mut st.manifest);
        st.net_owned = false;
        let saved = if self.dir.exists() { st.manifest.save(&self.dir) } else { Ok(()) };
        removed.and(saved)
    }

    // ---- the network between nodes (namespaces mode) ----

    /// Cuts `nodes` off from every other node, both ways: none of them can send to a node
    /// outside the group, nor such a node to them. Clients still reach every node, so
    /// status shows both sides. Cuts add up: a second call cuts off another group too.
    /// Returns the cuts in force. Namespaces mode only.
    pub fn partition(&self, nodes: &[&str]) -> Result<Vec<Cut>> {
        let mut st = self.lock();
        check_can_cut(&st.manifest)?;
        let mut group = BTreeSet::new();
        for n in nodes {
            group.insert(node_entry(&st.manifest, n)?.node_id.clone());
        }
        let others: Vec<String> =
            st.manifest.nodes.iter().filter(|n| !group.contains(&n.node_id)).map(|n| n.node_id.clone()).collect();
        if group.is_empty() || others.is_empty() {
            bail!(
                "a partition needs at least one node on each side (got {} of {})",
                group.len(),
                others.len() + group.len()
            );
        }
        let mut cuts = Vec::new();
        for a in &group {
            for b in &others {
                cuts.push(Cut { from: a.clone(), to: b.clone() });
                cuts.push(Cut { from: b.clone(), to: a.clone() });
            }
        }
        self.add_cuts(&mut st, cuts)
    }

    /// A one-way cut: `from` can no longer send to `to`; `to` can still send to `from`.
    /// (TCP needs both directions, so connections between them stop working either way;
    /// what differs is who sees its sends fail.) Returns the cuts in force.
    pub fn cut(&self, from: &str, to: &str) -> Result<Vec<Cut>> {
        let mut st = self.lock();
        check_can_cut(&st.manifest)?;
        let from = node_entry(&st.manifest, from)?.node_id.clone();
        let to = node_entry(&st.manifest, to)?.node_id.clone();
        if from == to {
            bail!("cannot cut {from} from itself");
        }
        self.add_cuts(&mut st, vec![Cut { from, to }])
    }

    /// Removes every cut; returns the cuts removed.
    pub fn heal(&self) -> Result<Vec<Cut>> {
        let mut st = self.lock();
        if st.manifest.net == NetMode::Loopback {
            return Ok(Vec::new());
        }
        let cuts = std::mem::take(&mut st.manifest.cuts);
        let mut kept = Vec::new();
        let mut errors = Vec::new();
        let mut healed = Vec::new();
        for c in cuts {
            let from = node_entry(&st.manifest, &c.from)?.link.clone();
            let to_ip = node_entry(&st.manifest, &c.to)?.ip;
            let removed = match &from {
                Some(l) => crate::netns::remove_cut(l, to_ip),
                None => Ok(()),
            };
            match removed {
                Ok(()) => healed.push(c),
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    kept.push(c);
                }
            }
        }
        st.manifest.cuts = kept;
        st.manifest.save(&self.dir)?;
        if !errors.is_empty() {
            bail!("could not remove every cut:\n{}", errors.join("\n"));
        }
        Ok(healed)
    }

    /// The cuts in force.
    pub fn cuts(&self) -> Vec<Cut> {
        self.lock().manifest.cuts.clone()
    }

    fn add_cuts(&self, st: &mut State, cuts: Vec<Cut>) -> Result<Vec<Cut>> {
        let mut result = Ok(());
        for c in cuts {
            if st.manifest.cuts.contains(&c) {
                continue;
            }
            let from = node_entry(&st.manifest, &c.from)?.link.clone().context("node without a namespace")?;
            let to_ip = node_entry(&st.manifest, &c.to)?.ip;
            if let Err(e) = crate::netns::add_cut(&from, to_ip) {
                result = Err(e.context(format!("cut {} from {}", c.from, c.to)));
                break;
            }
            st.manifest.cuts.push(c);
        }
        // Record what was done even if not all of it was.
        st.manifest.save(&self.dir)?;
        result.map(|()| st.manifest.cuts.clone())
    }

    // ---- observation ----

    /// The node's own account of itself from `/metrics` and the gRPC `Status` RPC; `up`
    /// is false if it does not run or its metrics do not answer within the HTTP timeouts
    /// (a paused node does not).
    pub fn status(&self, node: &str) -> Result<NodeStatus> {
        let (entry, pid, cuts) = {
            let mut st = self.lock();
            let entry = node_entry(&st.manifest, node)?.clone();
            let pid = running(&mut st, node).map(|p| p.pid());
            (entry, pid, st.manifest.cuts.clone())
        };
        Ok(read_status(&entry, pid, &cuts))
    }

    /// Every node's status, read in parallel.
    pub fn statuses(&self) -> Vec<NodeStatus> {
        let (nodes, cuts): (Vec<(ManifestNode, Option<u32>)>, Vec<Cut>) = {
            let mut st = self.lock();
            let cuts = st.manifest.cuts.clone();
            let entries = st.manifest.nodes.clone();
            let nodes = entries
                .into_iter()
                .map(|n| {
                    let pid = running(&mut st, &n.node_id).map(|p| p.pid());
                    (n, pid)
                })
                .collect();
            (nodes, cuts)
        };
        let cuts = &cuts;
        std::thread::scope(|s| {
            let handles: Vec<_> = nodes.iter().map(|(n, pid)| s.spawn(move || read_status(n, *pid, cuts))).collect();
            handles
                .into_iter()
                .zip(&nodes)
                .map(|(h, (n, pid))| {
                    h.join().unwrap_or_else(|_| {
                        let mut s = down_status(n, *pid, cuts);
                        s.error = Some("status reader panicked".into());
                        s
                    })
                })
                .collect()
        })
    }

    /// The node that says it leads, now; with several (an old leader that has not heard
    /// of the new term yet), the one with the highest term.
    pub fn leader(&self) -> Option<String> {
        self.statuses().into_iter().filter(|s| s.up && s.is_leader).max_by_key(|s| s.term).map(|s| s.node_id)
    }

    /// Waits until some node leads and returns it.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<String> {
        let mut found = None;
        self.wait_until(timeout, "a leader is elected", |net| {
            found = net.leader();
            Ok(found.is_some())
        })?;
        found.context("leader vanished")
    }

    /// Waits until every running node answers and all report the same height and log
    /// size; returns that height.
    pub fn wait_for_same_height(&self, timeout: Duration) -> Result<u64> {
        let mut height = 0;
        self.wait_until(timeout, "every running node reports the same height", |net| {
            let all: Vec<NodeStatus> = net.statuses().into_iter().filter(|s| s.pid.is_some()).collect();
            let Some(first) = all.first() else { bail!("no node is running") };
            if let Some(s) = all.iter().find(|s| !s.up) {
                bail!("{} does not answer: {}", s.node_id, s.error.as_deref().unwrap_or("?"));
            }
            height = first.height;
            let heights: Vec<String> =
                all.iter().map(|s| format!("{}={}/{}", s.node_id, s.height, s.log_size)).collect();
            if all.iter().all(|s| s.height == first.height && s.log_size == first.log_size) {
                Ok(true)
            } else {
                bail!("heights/log sizes differ: {}", heights.join(" "))
            }
        })?;
        Ok(height)
    }

    /// Polls `predicate` every [`POLL_INTERVAL`] until it returns `Ok(true)`, or fails after
    /// `timeout` naming `what` and the last error the predicate returned (errors count as
    /// "not yet": during a fault, a node that does not answer is normal).
    pub fn wait_until<F>(&self, timeout: Duration, what: &str, mut predicate: F) -> Result<()>
    where
        F: FnMut(&Network) -> Result<bool>,
    {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            match predicate(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = Some(format!("{e:#}")),
            }
            if Instant::now() >= deadline {
                let statuses = self.statuses().iter().map(describe).collect::<Vec<_>>().join("\n  ");
                match last_error {
                    Some(e) => {
                        bail!("timed out after {timeout:?} waiting until {what} (last: {e}); nodes:\n  {statuses}")
                    }
                    None => bail!("timed out after {timeout:?} waiting until {what}; nodes:\n  {statuses}"),
                }
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let keep = self.keep || panicking || std::env::var_os(KEEP_ENV).is_some();
        let dir = self.dir.clone();
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        // Every change before this was saved where it was made. The manifest is written
        // again only for what this drop changes: a handle that changed nothing (the CLI's
        // `status`) must not write back the manifest it read over another process's newer
        // one (a `restart` that registered its node meanwhile).
        let mut changed = false;
        // Only owned processes are killed: adopted ones belong to whoever started them.
        let owned: Vec<String> =
            st.procs.iter().filter(|(_, p)| matches!(p, NodeProcess::Owned { .. })).map(|(k, _)| k.clone()).collect();
        for id in owned {
            if let Some(p) = st.procs.get_mut(&id) {
                let _ = p.signal(Signal::SIGKILL);
                if !p.wait_exit(KILL_TIMEOUT) {
                    eprintln!("veritrace-devnet: {id} (pid {}) survived SIGKILL", p.pid());
                    continue;
                }
            }
            forget(st, &id);
            changed = true;
        }
        // Namespaces this handle made go with it, kept directory or not: processes first
        // (above), then namespaces, veths and bridge.
        if st.net_owned
            && let Some(layout) = st.manifest.layout.clone()
        {
            if let Err(e) = crate::netns::remove(&layout, &st.manifest.links()) {
                eprintln!("veritrace-devnet: {e:#}");
            }
            forget_namespaces(&mut st.manifest);
            st.net_owned = false;
            changed = true;
        }
        if self.temp && !keep {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("veritrace-devnet: could not remove {}: {e}", dir.display());
            }
            return;
        }
        if changed
            && dir.exists()
            && let Err(e) = st.manifest.save(&dir)
        {
            eprintln!("veritrace-devnet: could not update the manifest: {e:#}");
        }
        if panicking || self.failed || (self.temp && keep) {
            let mut msg = format!("veritrace-devnet: kept the network in {}", dir.display());
            for n in &st.manifest.nodes {
                let log = dir.join(&n.dir).join(LOG_FILE);
                msg.push_str(&format!("\n--- {} ({}) log {} ---\n", n.node_id, n.role.as_str(), log.display()));
                msg.push_str(&crate::fsutil::log_tail(&log, 0, LOG_TAIL_LINES_ON_FAILURE));
            }
            eprintln!("{msg}");
        }
    }
}

/// Why `node` did not start, with the end of this run's part of its log.
fn launch_error(node: &str, log: &Path, e: LaunchError, log_from: u64) -> anyhow::Error {
    let what = match e {
        LaunchError::Exited { status } => format!("{node} exited before serving ({status})"),
        LaunchError::Silent { silence } => {
            format!("{node} did not print its serving line, and printed nothing for {silence:?}; killed it")
        }
        LaunchError::OverCeiling { ceiling } => format!(
            "{node} did not print its serving line within {ceiling:?} of its start, though it kept reporting \
             progress; killed it"
        ),
    };
    anyhow!("{what}; last lines of {}:\n{}", log.display(), crate::fsutil::log_tail(log, log_from, LOG_TAIL_LINES))
}

/// Makes the namespaces of a namespaces-mode network, on the subnet its nodes had before
/// if that is free, and records them and the nodes' addresses in the manifest.
fn make_namespaces(dir: &Path, m: &mut Manifest) -> Result<()> {
    let ids: Vec<String> = m.nodes.iter().map(|n| n.node_id.clone()).collect();
    let prefer = m.nodes.first().and_then(|n| crate::netns::index_of(n.ip));
    let (layout, links) = crate::netns::create(dir, &ids, prefer)?;
    for (n, l) in m.nodes.iter_mut().zip(links) {
        n.ip = l.ip;
        n.link = Some(l);
    }
    m.layout = Some(layout);
    Ok(())
}

/// Records that the namespaces are gone (and with them every cut). The nodes keep their
/// last addresses, to be had again if free.
fn forget_namespaces(m: &mut Manifest) {
    m.layout = None;
    m.cuts.clear();
    for n in &mut m.nodes {
        n.link = None;
    }
}

/// Why cuts cannot be made in this network, if they cannot.
fn check_can_cut(m: &Manifest) -> Result<()> {
    match (m.net, &m.layout) {
        (NetMode::Loopback, _) => bail!(
            "this network runs every node on 127.0.0.1, where nothing can come between two nodes, so it \
             cannot be partitioned; partitions need a network in namespaces mode (one network namespace per \
             node, root only): `veritrace devnet up --dir NEW_DIR --net netns`, or NetworkSpec.net = \
             NetMode::Namespaces"
        ),
        (NetMode::Namespaces, None) => {
            bail!("the network's namespaces do not exist (it is down); start it first")
        }
        (NetMode::Namespaces, Some(_)) => Ok(()),
    }
}

fn node_entry<'a>(m: &'a Manifest, node: &str) -> Result<&'a ManifestNode> {
    m.node(node).with_context(|| {
        let ids: Vec<&str> = m.nodes.iter().map(|n| n.node_id.as_str()).collect();
        format!("no node {node:?} in this network (nodes: {})", ids.join(", "))
    })
}

fn node_entry_mut<'a>(m: &'a mut Manifest, node: &str) -> Result<&'a mut ManifestNode> {
    if m.node(node).is_none() {
        bail!("no node {node:?} in this network");
    }
    m.node_mut(node).context("node vanished")
}

/// The node's process if it still runs; a process found dead is forgotten.
fn running<'a>(st: &'a mut State, node: &str) -> Option<&'a mut NodeProcess> {
    let alive = st.procs.get_mut(node).is_some_and(|p| p.is_alive());
    if !alive {
        forget(st, node);
        return None;
    }
    st.procs.get_mut(node)
}

/// Drops the record of `node`'s process (in memory and in the manifest, saved later).
fn forget(st: &mut State, node: &str) {
    if let Some(mut p) = st.procs.remove(node) {
        // Reap it and finish copying its output, if it is ours and has exited.
        p.wait_exit(Duration::ZERO);
    }
    if let Some(n) = st.manifest.node_mut(node) {
        n.pid = None;
        n.pid_start_ticks = None;
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("write {}", path.display()))
}

/// Writes every node's config from the manifest: its own ports, every other node as a peer.
fn write_configs(dir: &Path, m: &Manifest) -> Result<()> {
    for n in &m.nodes {
        let cfg = NodeConfigFile {
            node_id: n.node_id.clone(),
            data_dir: DATA_DIR.into(),
            genesis: Path::new("..").join("..").join(GENESIS_FILE),
            node_key: NODE_KEY_FILE.into(),
            org_key: Some(Path::new("..").join("..").join(KEYS_DIR).join(format!("{}.key", n.org))),
            p2p_listen: p2p_addr(n.ip, n.p2p_port),
            grpc_listen: n.grpc_addr().to_string(),
            http_listen: n.http_addr().to_string(),
            peers: m
                .nodes
                .iter()
                .filter(|p| p.node_id != n.node_id)
                .map(|p| PeerEntry { node_id: p.node_id.clone(), p2p_addr: p2p_addr(p.ip, p.p2p_port) })
                .collect(),
            batch: None,
            raft: None,
        }
        .with_tuning(&m.tuning);
        let path = dir.join(&n.dir).join(CONFIG_FILE);
        crate::fsutil::write_atomic(&path, cfg.to_toml()?.as_bytes())?;
    }
    Ok(())
}

fn down_status(n: &ManifestNode, pid: Option<u32>, cuts: &[Cut]) -> NodeStatus {
    NodeStatus {
        node_id: n.node_id.clone(),
        role: n.role,
        org: n.org.clone(),
        pid,
        paused: pid.is_some_and(process::is_stopped),
        up: false,
        height: 0,
        log_size: 0,
        complete_checkpoint_height: 0,
        term: 0,
        is_leader: false,
        raft_purged_index: 0,
        raft_role: None,
        leader: None,
        log_root: None,
        state_root: None,
        cut_off_from: cuts.iter().filter(|c| c.from == n.node_id).map(|c| c.to.clone()).collect(),
        grpc: n.grpc_addr(),
        http: n.http_addr(),
        error: None,
    }
}

fn read_status(n: &ManifestNode, pid: Option<u32>, cuts: &[Cut]) -> NodeStatus {
    let mut s = down_status(n, pid, cuts);
    if pid.is_none() {
        return s;
    }
    let metrics = crate::http::get(s.http, "/metrics").and_then(|r| {
        if r.status != 200 {
            bail!("GET /metrics answered {}", r.status);
        }
        Ok(crate::http::parse_metrics(&r.body))
    });
    match metrics {
        Ok(m) => {
            let gauge = |name: &str| m.get(name).map(|v| *v as u64).unwrap_or(0);
            s.up = true;
            s.height = gauge("veritrace_height");
            s.log_size = gauge("veritrace_log_size");
            s.complete_checkpoint_height = gauge("veritrace_complete_checkpoint_height");
            s.term = gauge("veritrace_raft_term");
            s.is_leader = gauge("veritrace_is_leader") == 1;
            s.raft_purged_index = gauge("veritrace_raft_purged_index");
        }
        Err(e) => {
            s.error = Some(format!("{e:#}"));
            return s;
        }
    }
    // Roots, the leader it knows and its Raft state come from gRPC; height and log size
    // too, so that they go with the roots.
    match crate::client::status_blocking(s.grpc) {
        Ok(r) => {
            s.height = r.height;
            s.log_size = r.log_size;
            s.complete_checkpoint_height = r.complete_checkpoint_height;
            s.raft_role = Some(r.role);
            s.leader = (!r.leader.is_empty()).then_some(r.leader);
            s.log_root = Some(hex::encode(&r.log_root));
            s.state_root = Some(hex::encode(&r.state_root));
        }
        Err(e) => s.error = Some(format!("{e:#}")),
    }
    s
}

fn describe(s: &NodeStatus) -> String {
    let state = match (s.pid, s.paused, s.up) {
        (None, _, _) => "down".to_string(),
        (Some(p), true, _) => format!("paused pid {p}"),
        (Some(p), false, true) => format!("up pid {p}"),
        (Some(p), false, false) => format!("not answering pid {p}: {}", s.error.as_deref().unwrap_or("?")),
    };
    format!(
        "{} {} ({}): {state}; height {} log {} checkpoint {} term {} raft log purged to {}{}",
        s.node_id,
        s.role.as_str(),
        s.org,
        s.height,
        s.log_size,
        s.complete_checkpoint_height,
        s.term,
        s.raft_purged_index,
        if s.is_leader { " LEADER" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use nix::sys::signal::kill;
    use nix::unistd::Pid;

    use super::*;
    use crate::testdir::{FAKE_SERVING_NODE, TestDir, fake_node};

    fn gone(pid: u32) -> bool {
        kill(Pid::from_raw(pid as i32), None).is_err()
    }

    fn fake_network(dir: &TestDir, validators: u32, observers: u32, script: &str) -> Network {
        let bin = fake_node(dir.path(), script);
        Network::create(NetworkSpec::new(dir.path().join("net"), validators, observers, bin)).expect("create")
    }

    #[test]
    fn create_writes_genesis_keys_configs_and_manifest() {
        let dir = TestDir::new("net-create");
        let mut spec = NetworkSpec::new(dir.path().join("net"), 4, 2, fake_node(dir.path(), FAKE_SERVING_NODE));
        spec.tuning.raft.heartbeat_ms = Some(100);
        let net = Network::create(spec.clone()).expect("create");
        let root = net.dir().to_path_buf();

        let text = std::fs::read_to_string(root.join(GENESIS_FILE)).expect("genesis");
        let genesis = Genesis::from_json(&text).expect("genesis validates");
        assert_eq!(&genesis, net.genesis());
        assert_eq!((genesis.validators.len(), genesis.observers.len()), (4, 2));
        assert_eq!(genesis.ledger_id.as_str(), LEDGER_ID_DEFAULT);

        for org in &genesis.organisations {
            let key = root.join(KEYS_DIR).join(format!("{}.key", org.id));
            assert_eq!(std::fs::metadata(&key).expect("org key").permissions().mode() & 0o777, 0o600);
        }
        let mut ports = std::collections::BTreeSet::new();
        let manifest = Manifest::load(&root).expect("manifest");
        assert_eq!(manifest, net.manifest());
        for (i, n) in manifest.nodes.iter().enumerate() {
            assert_eq!(n.node_id, format!("node-{}", i + 1));
            assert_eq!(n.role, if i < 4 { NodeRole::Validator } else { NodeRole::Observer });
            for p in n.ports() {
                assert!(ports.insert(p), "port {p} handed out twice");
            }
            let node_dir = root.join(&n.dir);
            let key = crate::keyfile::read_key_file(&node_dir.join(NODE_KEY_FILE)).expect("node key");
            let listed = genesis.validators.iter().chain(&genesis.observers).find(|v| v.node_id.as_str() == n.node_id);
            assert_eq!(listed.expect("in genesis").public_key.as_bytes(), &key.verifying_key().to_bytes());
            let cfg = NodeConfigFile::read(&node_dir.join(CONFIG_FILE)).expect("config parses");
            assert_eq!(cfg.node_id, n.node_id);
            assert_eq!(cfg.p2p_listen, p2p_addr(Ipv4Addr::LOCALHOST, n.p2p_port));
            assert_eq!(cfg.grpc_listen, format!("127.0.0.1:{}", n.grpc_port));
            assert_eq!(cfg.http_listen, format!("127.0.0.1:{}", n.http_port));
            assert_eq!(cfg.raft.as_ref().and_then(|r| r.heartbeat_ms), Some(100));
            assert!(cfg.batch.is_none());
            // Relative paths resolve, from the config's directory, to the network's files.
            assert!(node_dir.join(&cfg.genesis).is_file() && node_dir.join(&cfg.node_key).is_file());
            assert!(node_dir.join(cfg.org_key.as_ref().expect("org key")).is_file());
            let peers: Vec<&str> = cfg.peers.iter().map(|p| p.node_id.as_str()).collect();
            let others: Vec<&str> =
                manifest.nodes.iter().filter(|m| m.node_id != n.node_id).map(|m| m.node_id.as_str()).collect();
            assert_eq!(peers, others);
        }
        assert!(Network::create(spec).is_err(), "a second network in the same directory is refused");
        let reopened = Network::open(&root).expect("open");
        assert_eq!(reopened.genesis(), net.genesis());
        assert_eq!(reopened.cast().key("samr").map(|k| k.to_bytes()), net.cast().key("samr").map(|k| k.to_bytes()));
    }

    #[test]
    fn bad_specs_are_refused() {
        let dir = TestDir::new("net-bad");
        let bin = fake_node(dir.path(), FAKE_SERVING_NODE);
        assert!(Network::create(NetworkSpec::new(dir.path().join("a"), 0, 1, &bin)).is_err());
        assert!(Network::create(NetworkSpec::new(dir.path().join("b"), NODES_MAX, 1, &bin)).is_err());
        let err = Network::create(NetworkSpec::new(dir.path().join("c"), 1, 0, dir.path().join("missing")))
            .err()
            .expect("missing binary");
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    }

    #[test]
    fn processes_are_started_signalled_and_killed_on_drop() {
        let dir = TestDir::new("net-procs");
        let net = fake_network(&dir, 2, 1, FAKE_SERVING_NODE);
        net.start_all().expect("start all");
        let pids: Vec<u32> = net.node_ids().iter().map(|n| net.pid(n).expect("known").expect("running")).collect();
        assert!(net.start("node-1").is_err(), "starting a running node is an error");
        assert_eq!(
            net.manifest().nodes.iter().map(|n| n.pid).collect::<Vec<_>>(),
            pids.iter().map(|p| Some(*p)).collect::<Vec<_>>()
        );

        // The fake node serves no metrics: running, but not up.
        let s = net.status("node-1").expect("status");
        assert!(s.pid.is_some() && !s.up && s.error.is_some(), "{s:?}");

        net.pause("node-2").expect("pause");
        net.wait_until(Duration::from_secs(5), "node-2 shows as paused", |n| Ok(n.status("node-2")?.paused))
            .expect("paused");
        assert_eq!(net.stop("node-2").expect("stop a paused node"), Stopped::Terminated);
        assert!(gone(pids[1]));
        assert_eq!(net.stop("node-2").expect("stop again"), Stopped::NotRunning);
        net.start("node-2").expect("start again");
        net.pause("node-2").expect("pause");
        net.resume("node-2").expect("resume");
        assert!(!net.status("node-2").expect("status").paused);

        net.kill("node-3").expect("kill");
        assert!(gone(pids[2]) && net.pid("node-3").expect("known").is_none());
        assert!(net.pause("node-3").is_err(), "pausing a node that is down is an error");
        std::fs::create_dir_all(net.data_dir("node-3").expect("data dir")).expect("mkdir");
        net.wipe("node-3").expect("wipe");
        assert!(!net.data_dir("node-3").expect("data dir").exists());
        assert!(net.wipe("node-1").is_err(), "wiping a running node is refused");
        assert_eq!(net.restart("node-3").expect("restart a stopped node"), Stopped::NotRunning);

        let log = std::fs::read_to_string(net.logs_path("node-2").expect("log")).expect("read log");
        assert_eq!(log.matches("=== veritrace-devnet: start node-2").count(), 2, "{log}");
        assert!(log.contains("fake node starting") && log.contains("\"event\":\"serving\""), "{log}");
        assert!(net.status("node-9").is_err(), "unknown nodes are errors");

        let now: Vec<u32> = net.node_ids().iter().filter_map(|n| net.pid(n).expect("known")).collect();
        assert_eq!(now.len(), 3);
        drop(net);
        for pid in now {
            assert!(gone(pid), "pid {pid} survived the drop");
        }
    }

    #[test]
    fn a_loopback_network_refuses_partitions_and_says_how_to_get_one() {
        let dir = TestDir::new("net-no-partition");
        let net = fake_network(&dir, 2, 0, FAKE_SERVING_NODE);
        assert_eq!(net.net_mode(), NetMode::Loopback);
        for err in [net.partition(&["node-1"]).expect_err("partition"), net.cut("node-1", "node-2").expect_err("cut")] {
            let text = format!("{err:#}");
            assert!(text.contains("127.0.0.1") && text.contains("--net netns"), "{text}");
        }
        assert!(net.heal().expect("heal").is_empty(), "healing a loopback network has nothing to do");
        assert!(net.cuts().is_empty());
        let s = net.status("node-1").expect("status");
        assert!(s.cut_off_from.is_empty() && s.log_root.is_none());
    }

    #[test]
    fn a_node_that_never_serves_times_out_with_its_log() {
        let dir = TestDir::new("net-timeout");
        let mut net = fake_network(&dir, 1, 0, "echo 'opening stores' >&2\nexec sleep 600");
        net.set_serve_silence(Duration::from_millis(500));
        let err = net.start("node-1").expect_err("no serving line");
        let text = format!("{err:#}");
        assert!(text.contains("printed nothing for 500ms") && text.contains("opening stores"), "{text}");
        assert!(text.contains("node-1") && text.contains(LOG_FILE), "{text}");
        assert!(net.pid("node-1").expect("known").is_none());
    }

    /// A fake node's progress line, as the node prints it while it opens its ledger.
    const FAKE_PROGRESS_LINE: &str = r#"echo '{"event":"starting","step":"open and verify the ledger","elapsed_s":0}'"#;

    #[test]
    fn a_node_that_reports_progress_may_take_longer_than_the_serve_timeout() {
        let dir = TestDir::new("net-progress");
        let script = format!(
            "i=0\nwhile [ $i -lt 8 ]; do\n  {FAKE_PROGRESS_LINE}\n  sleep 0.2\n  i=$((i + 1))\ndone\n{FAKE_SERVING_NODE}"
        );
        let mut net = fake_network(&dir, 2, 0, &script);
        net.set_serve_silence(Duration::from_millis(500));
        net.start_all().expect("a node that keeps reporting progress is waited for");
        assert!(net.is_running("node-1").expect("known") && net.is_running("node-2").expect("known"));
    }

    #[test]
    fn a_node_that_reports_progress_forever_is_killed_at_the_ceiling() {
        let dir = TestDir::new("net-ceiling");
        let script = format!("while true; do\n  {FAKE_PROGRESS_LINE}\n  sleep 0.1\ndone");
        let mut net = fake_network(&dir, 1, 0, &script);
        net.set_serve_silence(Duration::from_millis(500));
        net.set_serve_ceiling(Duration::from_secs(2));
        let err = net.start("node-1").expect_err("no serving line");
        let text = format!("{err:#}");
        assert!(text.contains("within 2s of its start") && text.contains("kept reporting progress"), "{text}");
        assert!(text.contains("node-1") && text.contains(LOG_FILE) && text.contains("\"starting\""), "{text}");
        assert!(net.pid("node-1").expect("known").is_none());
    }

    #[test]
    fn a_node_that_cannot_bind_gets_new_ports() {
        let dir = TestDir::new("net-bind");
        let script = format!(
            "marker=\"$(dirname \"$2\")/tried\"\nif [ ! -e \"$marker\" ]; then\n  touch \"$marker\"\n  \
             echo 'Error: bind grpc: Address already in use (os error 98)' >&2\n  exit 1\nfi\n{FAKE_SERVING_NODE}"
        );
        let net = fake_network(&dir, 2, 0, &script);
        let before = net.node("node-1").expect("node");
        net.start_all().expect("start after a bind failure");
        let after = net.node("node-1").expect("node");
        assert_ne!(before.ports(), after.ports());
        let peer_cfg = NodeConfigFile::read(&net.config_path("node-2").expect("path")).expect("config");
        assert_eq!(
            peer_cfg.peers[0].p2p_addr,
            p2p_addr(Ipv4Addr::LOCALHOST, after.p2p_port),
            "peers learn the new address"
        );
        assert!(net.is_running("node-1").expect("known") && net.is_running("node-2").expect("known"));
    }

    #[test]
    fn a_detached_network_is_adopted_by_open_and_stopped_from_there() {
        let dir = TestDir::new("net-adopt");
        let net = fake_network(&dir, 2, 1, FAKE_SERVING_NODE);
        let root = net.dir().to_path_buf();
        net.start_all().expect("start");
        let pids: Vec<u32> = net.node_ids().iter().filter_map(|n| net.pid(n).expect("known")).collect();
        net.detach();
        assert!(pids.iter().all(|p| !gone(*p)), "detached nodes keep running");

        let net = Network::open(&root).expect("open");
        assert_eq!(net.pid("node-1").expect("known"), Some(pids[0]));
        net.kill("node-3").expect("kill an adopted node");
        assert!(gone(pids[2]));
        drop(net);
        assert!(!gone(pids[0]) && !gone(pids[1]), "dropping an opened handle leaves adopted nodes running");

        let net = Network::open(&root).expect("open again");
        assert!(net.pid("node-3").expect("known").is_none());
        net.stop_all().expect("stop all");
        assert!(pids.iter().all(|p| gone(*p)));
        assert!(net.manifest().nodes.iter().all(|n| n.pid.is_none()));
        net.start_all().expect("re-running starts the same network again");
        net.destroy().expect("destroy");
        assert!(!root.exists());
    }

    #[test]
    fn a_temp_network_removes_its_directory_unless_kept() {
        let dir = TestDir::new("net-temp");
        let bin = fake_node(dir.path(), FAKE_SERVING_NODE);
        let net = Network::temp(1, 0, &bin).expect("temp");
        let root = net.dir().to_path_buf();
        assert!(root.join(MANIFEST_FILE_NAME).is_file());
        drop(net);
        assert!(!root.exists(), "a temp network's directory goes with it");
        let mut net = Network::temp(1, 0, &bin).expect("temp");
        let root = net.dir().to_path_buf();
        net.keep();
        drop(net);
        assert!(root.join(MANIFEST_FILE_NAME).is_file(), "a kept network stays");
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    const MANIFEST_FILE_NAME: &str = crate::manifest::MANIFEST_FILE;
}
