//! Real partitions: networks in namespaces mode (one network namespace per node, on a
//! bridge of the network's own), cut with routes and healed, with real `veritrace-node`
//! processes. A partitioned minority leader is replaced by a new leader of the majority,
//! which goes on committing; a partitioned follower falls behind in height; after the
//! heal every node agrees on height and roots again. Nothing is left behind: no process,
//! namespace, veth or bridge, also when a test body fails.
//!
//! Namespaces need root (CAP_NET_ADMIN). Without it these tests fail and say so, unless
//! `VERITRACE_DEVNET_SKIP_NETNS=1` is set (a machine that cannot run them at all).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use veritrace_devnet::locate::node_binary_for_tests;
use veritrace_devnet::manifest::Cut;
use veritrace_devnet::{NetMode, Network, NetworkSpec, netns};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const AGREEMENT_TIMEOUT: Duration = Duration::from_secs(60);

fn netns_network(validators: u32, observers: u32) -> Result<Network> {
    let mut spec = NetworkSpec::temp(validators, observers, node_binary_for_tests()?)?;
    spec.net = NetMode::Namespaces;
    Network::create(spec)
}

/// Names of the namespaces and interfaces a network has now.
fn created(net: &Network) -> Vec<String> {
    let m = net.manifest();
    let mut out: Vec<String> = m.layout.iter().map(|l| l.bridge.clone()).collect();
    for n in &m.nodes {
        if let Some(l) = &n.link {
            out.push(l.netns.clone());
            out.push(l.veth.clone());
        }
    }
    out
}

fn still_there(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| Path::new("/sys/class/net").join(n).exists() || Path::new("/run/netns").join(n).exists())
        .cloned()
        .collect()
}

/// Plays the demo through `via` (which must be on the majority side).
fn play(net: &Network, via: &str) -> Result<u64> {
    let target = veritrace_devnet::demo::DemoTarget::of(net, Some(via), ELECTION_TIMEOUT)?;
    let report = veritrace_devnet::demo::run(&target, &mut |_| {})?;
    ensure!(report.failures().is_empty(), "demo failures: {:?}", report.failures());
    Ok(report.steps.iter().map(|s| s.height).max().unwrap_or(0))
}

/// Every running node has the same height and roots.
fn same_roots(net: &Network) -> Result<bool> {
    let all: Vec<_> = net.statuses().into_iter().filter(|s| s.pid.is_some()).collect();
    let first = all.first().context("no node runs")?;
    ensure!(first.log_root.is_some(), "{} gave no roots: {:?}", first.node_id, first.error);
    Ok(all.iter().all(|s| s.height == first.height && s.log_root == first.log_root && s.state_root == first.state_root))
}

#[test]
fn a_partitioned_minority_leader_is_replaced_and_rejoins_after_heal() -> Result<()> {
    if !netns::available_for_test("the partition tests") {
        return Ok(());
    }
    let net = netns_network(3, 0)?;
    let names = created(&net);
    ensure!(names.len() == 7, "a bridge and three namespaces with their veths: {names:?}");
    ensure!(still_there(&names) == names, "everything the manifest names exists");
    net.keep_on_failure(|net| {
        net.start_all()?;
        let old = net.wait_for_leader(ELECTION_TIMEOUT)?;
        let old_term = net.status(&old)?.term;
        let majority: Vec<String> = net.node_ids().into_iter().filter(|n| *n != old).collect();

        let cuts = net.partition(&[old.as_str()])?;
        ensure!(cuts.len() == 4, "two cuts each way: {cuts:?}");
        let s = net.status(&old)?;
        ensure!(s.up && s.cut_off_from == majority, "the cut-off leader still answers clients: {s:?}");

        // The majority elects a leader of its own, in a later term, and commits without
        // the old one.
        let mut new = String::new();
        net.wait_until(ELECTION_TIMEOUT, "the majority elects a new leader", |n| {
            let st = n.statuses();
            let leading = st.iter().find(|s| s.is_leader && s.term > old_term && majority.contains(&s.node_id));
            new = leading.map(|s| s.node_id.clone()).unwrap_or_default();
            Ok(!new.is_empty())
        })?;
        let height = play(net, &new)?;
        let stale = net.status(&old)?;
        ensure!(stale.height < height, "the cut-off node applied {} of {height} blocks", stale.height);
        ensure!(stale.term < net.status(&new)?.term, "the cut-off node cannot have heard of the new term");

        let healed = net.heal()?;
        ensure!(healed.len() == 4 && net.cuts().is_empty(), "heal removes every cut: {healed:?}");
        net.wait_until(AGREEMENT_TIMEOUT, "the old leader steps down and catches up", |n| {
            let s = n.status(&old)?;
            Ok(!s.is_leader && s.height >= height && same_roots(n)?)
        })?;
        ensure!(net.leader().is_some_and(|l| l != old), "one leader, of the later term");
        Ok(())
    })?;
    let left = still_there(&names);
    ensure!(left.is_empty(), "dropping the network removes its namespaces, veths and bridge: {left:?} remain");
    Ok(())
}

#[test]
fn a_partitioned_follower_falls_behind_and_catches_up_one_way_cuts_and_restarts_keep_cuts() -> Result<()> {
    if !netns::available_for_test("the partition tests") {
        return Ok(());
    }
    netns_network(3, 1)?.keep_on_failure(|net| {
        net.start_all()?;
        let leader = net.wait_for_leader(ELECTION_TIMEOUT)?;
        net.wait_for_same_height(AGREEMENT_TIMEOUT)?;
        let follower = net.validators().into_iter().find(|n| *n != leader).context("a follower")?;
        let observer = net.observers()[0].clone();

        net.partition(&[follower.as_str()])?;
        let before = net.status(&follower)?.height;
        let height = play(net, &leader)?;
        ensure!(net.status(&follower)?.height == before, "the cut-off follower stays at {before}");
        // The observer is on the majority side and follows.
        net.wait_until(AGREEMENT_TIMEOUT, "the observer follows the majority", |n| {
            Ok(n.status(&observer)?.height >= height)
        })?;

        // A restarted node stays cut off: the routes live in its namespace, not in it.
        net.restart(&follower)?;
        ensure!(net.status(&follower)?.height == before, "still cut off after a restart");

        net.heal()?;
        net.wait_until(AGREEMENT_TIMEOUT, "the follower catches up after the heal", |n| {
            Ok(n.status(&follower)?.height >= height && same_roots(n)?)
        })?;

        // One-way cuts: recorded, shown in status, added once, removed by heal.
        let one_way = net.cut(&follower, &leader)?;
        ensure!(one_way == [Cut { from: follower.clone(), to: leader.clone() }], "{one_way:?}");
        ensure!(net.cut(&follower, &leader)? == one_way, "a cut made twice is one cut");
        ensure!(net.status(&follower)?.cut_off_from == std::slice::from_ref(&leader));
        ensure!(net.status(&leader)?.cut_off_from.is_empty());
        ensure!(net.heal()?.len() == 1 && net.cuts().is_empty());
        ensure!(net.cut(&follower, &follower).is_err(), "a node cannot be cut from itself");
        ensure!(net.partition(&net.node_ids().iter().map(String::as_str).collect::<Vec<_>>()).is_err());
        Ok(())
    })
}

#[test]
fn a_failed_test_keeps_its_directory_but_not_its_namespaces() -> Result<()> {
    if !netns::available_for_test("the partition tests") {
        return Ok(());
    }
    let net = netns_network(2, 0)?;
    let names = created(&net);
    let dir = net.dir().to_path_buf();
    let outcome: Result<()> = net.keep_on_failure(|_| bail!("a deliberate failure"));
    ensure!(outcome.is_err());
    let left = still_there(&names);
    let kept = veritrace_devnet::manifest::Manifest::load(&dir);
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    ensure!(left.is_empty(), "namespaces of a failed test are removed: {left:?} remain");
    ensure!(kept?.layout.is_none(), "the kept manifest records that they are gone");
    Ok(())
}

#[test]
fn down_removes_the_namespaces_and_up_again_makes_them_on_the_same_addresses() -> Result<()> {
    if !netns::available_for_test("the partition tests") {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("veritrace-devnet-netns-reopen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = (|| -> Result<()> {
        let mut spec = NetworkSpec::new(&dir, 1, 0, node_binary_for_tests()?);
        spec.net = NetMode::Namespaces;
        let net = Network::create(spec)?;
        let names = created(&net);
        let addr = net.grpc_addr("node-1")?;
        net.start_all()?;
        net.wait_for_leader(ELECTION_TIMEOUT)?;
        net.detach();
        ensure!(still_there(&names) == names, "a detached network keeps its namespaces");

        // Another process (the CLI) brings it down, and up again.
        let net = Network::open(&dir)?;
        net.down()?;
        ensure!(still_there(&names).is_empty(), "down removes namespaces, veths and bridge");
        ensure!(net.manifest().layout.is_none() && net.pid("node-1")?.is_none());
        net.start_all()?;
        ensure!(net.grpc_addr("node-1")? == addr, "the same subnet again when it is free");
        net.wait_for_leader(ELECTION_TIMEOUT)?;
        net.destroy()?;
        ensure!(still_there(&names).is_empty() && !dir.exists());
        Ok(())
    })();
    if outcome.is_err() {
        if let Ok(net) = Network::open(&dir) {
            let _ = net.down();
        }
        bail!("{:#} (kept {})", outcome.err().map(|e| format!("{e:#}")).unwrap_or_default(), dir.display());
    }
    Ok(())
}
