//! Raft nodes in one process over `LocalTransport`, on real RocksDB log stores: election,
//! replication, leader loss, a learner catching up by snapshot, and a restart that does
//! not re-apply. Every wait polls Raft's metrics with a generous deadline; nothing is
//! asserted about time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::SnapshotPolicy;
use tempfile::TempDir;
use tokio::task::JoinSet;
use veritrace_consensus::config::ProposeError;
use veritrace_consensus::testkit::{LocalTransport, MemContents, MemMachine, local_peer};
use veritrace_consensus::{ConsensusConfig, ConsensusRaft, MachineStore, NodeId, Payload, PeerInfo, RocksLogStore};

/// How long any one wait may take before the test fails: far above what it needs, so a
/// loaded machine slows the test down instead of failing it.
const WAIT: Duration = Duration::from_secs(120);

fn config() -> ConsensusConfig {
    ConsensusConfig {
        cluster_name: "test".into(),
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 800,
        election_timeout_max_ms: 1_600,
        // Small, so the leader snapshots and purges its log during the test and a late
        // learner must catch up from a snapshot.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(200),
        snapshot_logs_to_keep: 0,
        payload_entries_max: 50,
        snapshot_chunk_bytes_max: 4 * 1024,
        ..ConsensusConfig::default()
    }
}

struct Node {
    raft: ConsensusRaft,
    machine: MemMachine,
    dir: TempDir,
}

async fn start(id: NodeId, transport: &LocalTransport, machine: MemMachine, dir: TempDir) -> Node {
    let config = config();
    let log = RocksLogStore::open(&dir.path().join("log")).expect("open log store");
    let store = MachineStore::open(machine.clone(), &dir.path().join("snapshots"), config.snapshot_bytes_max)
        .expect("open machine store");
    let raft = veritrace_consensus::start_raft(id, &config, log, store, transport.clone()).await.expect("start raft");
    transport.register(id, raft.clone());
    Node { raft, machine, dir }
}

async fn start_fresh(id: NodeId, transport: &LocalTransport) -> Node {
    start(id, transport, MemMachine::new(), tempfile::tempdir().expect("temporary directory")).await
}

/// The leader as `observer` sees it, once it sees one that is not `not`.
async fn leader_seen_by(observer: &ConsensusRaft, not: Option<NodeId>) -> NodeId {
    let metrics = observer
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some_and(|l| Some(l) != not), "a leader")
        .await
        .expect("a leader is elected");
    metrics.current_leader.expect("checked above")
}

/// Commits each payload once, through whichever node leads, retrying only refusals that
/// guarantee the payload was not taken (not the leader), so none is committed twice.
async fn write_all(nodes: BTreeMap<NodeId, ConsensusRaft>, payloads: Vec<Vec<u8>>, workers: usize) {
    let mut tasks = JoinSet::new();
    let per_worker = payloads.len().div_ceil(workers);
    for chunk in payloads.chunks(per_worker) {
        let chunk = chunk.to_vec();
        let nodes = nodes.clone();
        tasks.spawn(async move {
            let any = nodes.values().next().expect("a node").clone();
            for payload in chunk {
                let deadline = tokio::time::Instant::now() + WAIT;
                loop {
                    assert!(tokio::time::Instant::now() < deadline, "no stable leader to write {payload:?}");
                    let leader = leader_seen_by(&any, None).await;
                    // `any` may still name a leader that is gone, or leadership may move
                    // under the write: give the election time before asking again.
                    let Some(raft) = nodes.get(&leader) else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    match veritrace_consensus::propose(raft, Payload(payload.clone())).await {
                        Ok(_) => break,
                        Err(ProposeError::Raft(e)) if e.forward_to_leader::<PeerInfo>().is_some() => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("write failed: {e}"),
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer task");
    }
}

fn payloads(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| format!("payload-{i:05}").into_bytes()).collect()
}

/// Waits until every node applied at least what `leader` applied, then returns their
/// machines' contents, which must all be equal.
async fn converged(leader: &ConsensusRaft, nodes: &[&Node]) -> MemContents {
    // The leader's log end, not its applied metric: the metric may trail the writes that
    // were already acknowledged, and every entry up to the log end will be applied.
    let index = leader.metrics().borrow().last_log_index;
    for node in nodes {
        node.raft.wait(Some(WAIT)).applied_index_at_least(index, "caught up").await.expect("node catches up");
    }
    let first = nodes[0].machine.contents();
    for node in &nodes[1..] {
        assert_eq!(node.machine.contents(), first, "state machines differ");
    }
    first
}

/// Three fresh voters on one in-process transport, the cluster initialised by node 1.
async fn three_voters() -> (LocalTransport, BTreeMap<NodeId, Node>) {
    let transport = LocalTransport::new(config().snapshot_bytes_max);
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start_fresh(id, &transport).await);
    }
    let members: BTreeMap<_, _> = (1..=3).map(|id| (id, local_peer(id))).collect();
    nodes[&1].raft.initialize(members).await.expect("initialize");
    (transport, nodes)
}

fn distinct(contents: &MemContents) -> BTreeSet<Vec<u8>> {
    contents.payloads.iter().map(|(_, p)| p.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_replicate_survive_leader_loss_and_a_learner_catches_up_by_snapshot() {
    let (transport, mut nodes) = three_voters().await;
    let first_leader = leader_seen_by(&nodes[&1].raft, None).await;

    // 1,000 payloads from 10 concurrent writers.
    let handles = |nodes: &BTreeMap<NodeId, Node>| nodes.iter().map(|(id, n)| (*id, n.raft.clone())).collect();
    write_all(handles(&nodes), payloads(0..1_000), 10).await;
    let all: Vec<&Node> = nodes.values().collect();
    let contents = converged(&nodes[&first_leader].raft, &all).await;
    assert_eq!(contents.payloads.len(), 1_000, "each payload applied once");
    assert_eq!(distinct(&contents), payloads(0..1_000).into_iter().collect());

    // The leader compacted its log behind a snapshot, so a new learner cannot be sent the
    // log from the start.
    let leader = &nodes[&first_leader].raft;
    leader.wait(Some(WAIT)).metrics(|m| m.purged.is_some(), "log purged").await.expect("leader purges its log");

    let learner = start_fresh(4, &transport).await;
    leader.add_learner(4, local_peer(4), true).await.expect("add learner");
    nodes.insert(4, learner);
    let all: Vec<&Node> = nodes.values().collect();
    converged(&nodes[&first_leader].raft, &all).await;
    assert!(nodes[&4].machine.restores() >= 1, "the learner installed a snapshot");
    assert!(nodes[&4].machine.staged_restores() >= 1, "staged while its chunks arrived");
    assert!(nodes[&4].machine.applies() < 1_000, "the learner did not replay the whole log");

    // Kill the leader: unreachable, then stopped.
    transport.unregister(first_leader);
    let dead = nodes.remove(&first_leader).expect("leader node");
    dead.raft.shutdown().await.expect("shutdown");
    let survivor = nodes.keys().find(|id| **id != 4).copied().expect("a surviving voter");
    let second_leader = leader_seen_by(&nodes[&survivor].raft, Some(first_leader)).await;
    assert_ne!(second_leader, 4, "a learner never leads");

    write_all(handles(&nodes), payloads(1_000..1_100), 4).await;
    let all: Vec<&Node> = nodes.values().collect();
    let contents = converged(&nodes[&second_leader].raft, &all).await;
    assert_eq!(contents.payloads.len(), 1_100);
    assert_eq!(distinct(&contents), payloads(0..1_100).into_iter().collect());

    for node in nodes.values() {
        node.raft.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_without_reapplying() {
    let transport = LocalTransport::new(config().snapshot_bytes_max);
    let node = start_fresh(1, &transport).await;
    node.raft.initialize(BTreeMap::from([(1, local_peer(1))])).await.expect("initialize");
    leader_seen_by(&node.raft, None).await;
    write_all(BTreeMap::from([(1, node.raft.clone())]), payloads(0..20), 1).await;
    let before = node.machine.contents();
    assert_eq!(before.payloads.len(), 20);

    transport.unregister(1);
    node.raft.shutdown().await.expect("shutdown");
    let Node { raft, machine, dir } = node;
    drop(raft);

    // Same log directory and the same machine, as after a process restart.
    let node = start(1, &transport, machine, dir).await;
    leader_seen_by(&node.raft, None).await;
    assert_eq!(node.machine.contents(), before, "nothing re-applied");
    assert_eq!(node.machine.applies(), 20);

    write_all(BTreeMap::from([(1, node.raft.clone())]), payloads(20..25), 1).await;
    let after = node.machine.contents();
    assert_eq!(after.payloads.len(), 25);
    assert_eq!(after.payloads[..20], before.payloads[..]);
    assert!(after.payloads[20].0 > before.payloads[19].0, "new entries follow the old log");
    node.raft.shutdown().await.expect("shutdown");
}

/// A voter that takes longer to install a snapshot than its election timeout must not
/// start an election when it is done: its leader is still there. (openraft runs log IO
/// inside its core loop; a purge that waited for the install there stopped the node from
/// hearing its leader's heartbeats, and it stood for election the moment the install
/// ended, deposing the leader.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_with_a_slow_snapshot_install_does_not_start_an_election() {
    let (transport, mut nodes) = three_voters().await;
    let leader = leader_seen_by(&nodes[&1].raft, None).await;
    let lost = (1..=3).find(|id| *id != leader).expect("a follower");

    // A follower is lost while the log grows and is compacted behind a snapshot.
    transport.unregister(lost);
    let dead = nodes.remove(&lost).expect("follower node");
    dead.raft.shutdown().await.expect("shutdown");
    drop(dead);
    let handles = |nodes: &BTreeMap<NodeId, Node>| nodes.iter().map(|(id, n)| (*id, n.raft.clone())).collect();
    write_all(handles(&nodes), payloads(0..300), 4).await;
    let leader_raft = nodes[&leader].raft.clone();
    leader_raft.wait(Some(WAIT)).metrics(|m| m.purged.is_some(), "log purged").await.expect("leader purges");
    let term = leader_raft.metrics().borrow().current_term;

    // It comes back empty, with an install that lasts well past its election timeout
    // (leader lease plus the randomised timeout: 3.2 s at most here).
    let machine = MemMachine::new();
    machine.slow_restores(Duration::from_secs(6));
    let back = start(lost, &transport, machine, tempfile::tempdir().expect("temporary directory")).await;
    nodes.insert(lost, back);
    let all: Vec<&Node> = nodes.values().collect();
    converged(&leader_raft, &all).await;
    assert_eq!(nodes[&lost].machine.restores(), 1, "the follower installed a snapshot");
    // An election would follow the install within a few ticks; give it time to show.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (id, node) in &nodes {
        let m = node.raft.metrics().borrow().clone();
        assert_eq!(m.current_term, term, "node {id} changed term after the slow install");
        assert_eq!(m.current_leader, Some(leader), "node {id} follows the same leader");
    }
    write_all(handles(&nodes), payloads(300..310), 1).await;
    let all: Vec<&Node> = nodes.values().collect();
    assert_eq!(converged(&leader_raft, &all).await.payloads.len(), 310);
    for node in nodes.values() {
        node.raft.shutdown().await.expect("shutdown");
    }
}
