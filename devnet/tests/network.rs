//! Real `veritrace-node` processes on 127.0.0.1: election, agreement, a kill -9 of the
//! leader, stop/pause/resume/wipe, re-opening a network, and nothing left behind: a
//! network dropped normally takes its temporary directory and every process with it; one
//! dropped after a failure (a body of `keep_on_failure` that fails, or a panic) still
//! takes its processes but keeps the directory for inspection.
//!
//! The node binary is found or built by `veritrace_devnet::locate::node_binary_for_tests`
//! (set `VERITRACE_NODE_BIN` to use another one); the first run may spend minutes in
//! `cargo build --workspace --bins`. A failing test keeps its network directory and
//! prints the end of every node's log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use veritrace_devnet::locate::node_binary_for_tests;
use veritrace_devnet::manifest::Manifest;
use veritrace_devnet::network::{KEEP_ENV, LOG_FILE, NODES_DIR};
use veritrace_devnet::{Network, NetworkSpec, Stopped};

/// A leader must be known within this long.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);
/// Nodes that serve must agree on their height within this long.
const AGREEMENT_TIMEOUT: Duration = Duration::from_secs(30);

fn gone(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_err()
}

fn pids(net: &Network) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for n in net.node_ids() {
        out.push(net.pid(&n)?.with_context(|| format!("{n} is not running"))?);
    }
    Ok(out)
}

#[test]
fn three_validators_and_an_observer_elect_agree_and_survive_a_leader_kill() -> Result<()> {
    let mut seen = Vec::new();
    Network::temp(3, 1, node_binary_for_tests()?)?.keep_on_failure(|net| {
        net.start_all()?;
        seen = pids(net)?;
        ensure!(seen.len() == 4);

        let leader = net.wait_for_leader(ELECTION_TIMEOUT)?;
        ensure!(net.validators().contains(&leader), "leader {leader} is not a validator");
        // The leader adds the observer as a Raft learner; it then hears the term.
        let observer = net.observers()[0].clone();
        net.wait_until(ELECTION_TIMEOUT, "the observer follows the leader", |n| Ok(n.status(&observer)?.term > 0))?;
        net.wait_for_same_height(AGREEMENT_TIMEOUT)?;
        for s in net.statuses() {
            ensure!(s.up && s.term > 0, "{} is not up or reports term 0: {s:?}", s.node_id);
        }
        ensure!(!net.status(&observer)?.is_leader, "the observer must never lead");

        let old_pid = net.pid(&leader)?.context("leader pid")?;
        net.kill(&leader)?;
        ensure!(gone(old_pid), "the killed leader's process is gone");
        ensure!(!net.status(&leader)?.up, "a killed node is down");
        let mut new_leader = String::new();
        net.wait_until(ELECTION_TIMEOUT, "another validator leads", |n| {
            new_leader = n.leader().unwrap_or_default();
            Ok(!new_leader.is_empty() && new_leader != leader)
        })?;

        net.start(&leader)?;
        net.wait_until(AGREEMENT_TIMEOUT, "the restarted node answers", |n| Ok(n.status(&leader)?.up))?;
        net.wait_for_same_height(AGREEMENT_TIMEOUT)?;
        net.wait_for_leader(ELECTION_TIMEOUT)?;
        seen.extend(pids(net)?);
        Ok(())
    })?;
    // The network is dropped: every process it started is gone.
    for pid in &seen {
        ensure!(gone(*pid), "pid {pid} survived the network's drop");
    }
    Ok(())
}

#[test]
fn stop_pause_resume_and_wipe_are_observable_and_the_network_recovers() -> Result<()> {
    Network::temp(3, 0, node_binary_for_tests()?)?.keep_on_failure(|net| {
        net.start_all()?;
        let leader = net.wait_for_leader(ELECTION_TIMEOUT)?;
        let follower = net.validators().into_iter().find(|n| *n != leader).context("a follower")?;

        // SIGTERM: the node shuts down by itself, within the grace period.
        ensure!(net.stop(&follower)? == Stopped::Terminated, "{follower} needed SIGKILL");
        ensure!(!net.status(&follower)?.up);
        net.start(&follower)?;
        net.wait_until(AGREEMENT_TIMEOUT, "the follower answers again", |n| Ok(n.status(&follower)?.up))?;

        net.pause(&follower)?;
        // Each read of a paused node waits out the HTTP timeout (2 s): room for a few.
        net.wait_until(Duration::from_secs(15), "the paused follower stops answering", |n| {
            let s = n.status(&follower)?;
            Ok(s.paused && !s.up)
        })?;
        // Two of three validators still make a quorum.
        net.wait_for_leader(ELECTION_TIMEOUT)?;
        net.resume(&follower)?;
        net.wait_until(AGREEMENT_TIMEOUT, "the resumed follower answers", |n| Ok(n.status(&follower)?.up))?;

        net.stop(&follower)?;
        net.wipe(&follower)?;
        ensure!(!net.data_dir(&follower)?.exists(), "wipe deletes the data directory");
        net.start(&follower)?;
        net.wait_for_same_height(AGREEMENT_TIMEOUT)?;
        Ok(())
    })
}

/// Stops whatever runs in a network directory and removes it when the test ends, since
/// detached and adopted nodes are not killed by a handle's drop. Kept if the test failed.
struct Cleanup {
    dir: PathBuf,
    passed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(net) = Network::open(&self.dir) {
            let _ = net.down();
        }
        if self.passed {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {} (node logs under nodes/*/node.log)", self.dir.display());
        }
    }
}

fn reopen_scenario(root: &Path) -> Result<()> {
    let net = Network::create(NetworkSpec::new(root, 3, 0, node_binary_for_tests()?))?;
    let genesis = net.genesis().clone();
    net.start_all()?;
    net.wait_for_leader(ELECTION_TIMEOUT)?;
    let first = pids(&net)?;
    net.detach();
    ensure!(first.iter().all(|p| !gone(*p)), "detached nodes keep running");

    // A later process (the CLI) finds the nodes by their pids and reads their status.
    let net = Network::open(root)?;
    ensure!(pids(&net)? == first, "open adopts the running nodes");
    net.wait_for_leader(ELECTION_TIMEOUT)?;
    net.stop_all()?;
    ensure!(first.iter().all(|p| gone(*p)), "stop_all ends adopted nodes");
    drop(net);

    // `devnet up` again: same genesis, same data, a leader again. Meanwhile a handle
    // opened while every node was down (a `devnet status` poller) goes without writing
    // back what it read: the nodes started meanwhile stay in the manifest.
    let poller = Network::open(root)?;
    let net = Network::open(root)?;
    ensure!(net.genesis() == &genesis);
    for n in net.node_ids() {
        ensure!(net.data_dir(&n)?.is_dir(), "{n} kept its data");
    }
    net.start_all()?;
    net.wait_for_leader(ELECTION_TIMEOUT)?;
    drop(poller);
    ensure!(pids(&Network::open(root)?)? == pids(&net)?, "the poller's drop kept the started nodes");
    net.wait_for_same_height(AGREEMENT_TIMEOUT)?;
    net.destroy()?;
    ensure!(!root.exists(), "destroy removes the directory");
    Ok(())
}

#[test]
fn a_detached_network_reopens_with_its_data() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("veritrace-devnet-reopen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cleanup = Cleanup { dir: dir.clone(), passed: false };
    reopen_scenario(&dir)?;
    cleanup.passed = true;
    Ok(())
}

/// A started network of one validator and one observer, its directory and its pids.
fn started() -> Result<(Network, PathBuf, Vec<u32>)> {
    let net = Network::temp(1, 1, node_binary_for_tests()?)?;
    let dir = net.dir().to_path_buf();
    net.start_all()?;
    net.wait_for_leader(ELECTION_TIMEOUT)?;
    let seen = pids(&net)?;
    ensure!(seen.len() == 2 && dir.is_dir());
    Ok((net, dir, seen))
}

/// Whether `dir` was kept whole: its manifest and every node's log.
fn kept(dir: &Path) -> Result<()> {
    ensure!(Manifest::path(dir).is_file(), "{} was not kept", dir.display());
    let nodes: Vec<PathBuf> = std::fs::read_dir(dir.join(NODES_DIR))?.map(|e| Ok(e?.path())).collect::<Result<_>>()?;
    ensure!(nodes.len() == 2, "nodes kept: {nodes:?}");
    for n in nodes {
        ensure!(n.join(LOG_FILE).is_file(), "{} has no log", n.display());
    }
    Ok(())
}

#[test]
fn a_dropped_network_leaves_nothing_behind_and_a_failed_one_keeps_its_directory() -> Result<()> {
    ensure!(std::env::var_os(KEEP_ENV).is_none(), "unset {KEEP_ENV}: it keeps every network's directory");

    // Dropped normally: no directory, no process.
    let (net, dir, seen) = started()?;
    drop(net);
    ensure!(!dir.exists(), "{} survived the network's drop", dir.display());
    for pid in &seen {
        ensure!(gone(*pid), "pid {pid} survived the network's drop");
    }

    // A body of `keep_on_failure` that fails: its error comes back, the processes are
    // gone, the directory is kept.
    let (net, dir, seen) = started()?;
    let mut cleanup = Cleanup { dir: dir.clone(), passed: false };
    let out: Result<()> = net.keep_on_failure(|_| bail!("a deliberate failure"));
    match out {
        Err(e) => ensure!(e.to_string() == "a deliberate failure", "another error: {e:#}"),
        Ok(()) => bail!("keep_on_failure swallowed the body's error"),
    }
    for pid in &seen {
        ensure!(gone(*pid), "pid {pid} survived a failed body");
    }
    kept(&dir)?;
    cleanup.passed = true;
    drop(cleanup);
    ensure!(!dir.exists());

    // A test that panics while it holds the network: the same, through unwinding.
    let (net, dir, seen) = started()?;
    let mut cleanup = Cleanup { dir: dir.clone(), passed: false };
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = net;
        panic!("a deliberate panic, to see the network's directory kept");
    }));
    ensure!(unwound.is_err());
    for pid in &seen {
        ensure!(gone(*pid), "pid {pid} survived a panic");
    }
    kept(&dir)?;
    cleanup.passed = true;
    Ok(())
}
