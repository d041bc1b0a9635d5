//! Raft messages are accepted only from the Raft node they name, and only if that node may
//! vote. With a real 3-validator + 1-observer network through devnet, the test stops the
//! observer and speaks for it over libp2p with its own node key — an admitted identity,
//! so the connection is allowed — and sends node-1 Raft messages with a far higher term:
//! a vote request and an append-entries as itself (a learner, not a voting member), and a
//! vote request in node-2's name. Each is refused with its reason; no node's term or
//! leader moves, and the network goes on committing with identical roots.
//!
//! Waits poll with a generous deadline; nothing is asserted about time.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, Vote};
use tokio::sync::mpsc;
use veritrace_consensus::RaftRpc;
use veritrace_devnet::Network;
use veritrace_devnet::network::NODE_KEY_FILE;
use veritrace_node::config::read_key_file;
use veritrace_node::members::raft_id_of;
use veritrace_node::p2p::{NodeRequest, NodeResponse, P2p, P2pConfig, peer_id_of};
use veritrace_tests::{WAIT, agree, commit, issue, network};

const TARGET: &str = "node-1";
const OBSERVER: &str = "node-4";

fn genesis_node(net: &Network, node: &str) -> veritrace_ledger::org::Validator {
    net.genesis()
        .validators
        .iter()
        .chain(&net.genesis().observers)
        .find(|v| v.node_id.as_str() == node)
        .unwrap_or_else(|| panic!("{node} is not in the genesis"))
        .clone()
}

/// Sends `rpc` to the target and returns the reason it was refused; retries while it
/// cannot connect. Any other answer fails the test.
async fn refusal(p2p: &P2p, to: PeerId, addr: &Multiaddr, rpc: RaftRpc) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        match p2p.request(to, Some(addr.clone()), NodeRequest::Raft(rpc.clone())).await {
            Ok(NodeResponse::Refused(reason)) => return reason,
            Ok(NodeResponse::Raft(reply)) => panic!("{TARGET} handled a raft message it should refuse: {reply:?}"),
            Ok(other) => panic!("{TARGET} answered a raft message with {other:?}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reach {TARGET}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_messages_from_a_non_voter_or_in_another_nodes_name_are_refused() {
    let net = network(3, 1, None);
    assert_eq!(net.observers(), [OBSERVER]);
    commit(&net, TARGET, &issue(&net, "RS", 0)).await;
    let before = agree(&net, &net.node_ids()).await;
    let term_and_leader = |node: &str| {
        let s = tokio::task::block_in_place(|| net.status(node)).expect("status");
        (s.term, s.leader)
    };
    let (term_before, leader_before) = term_and_leader(TARGET);

    // Take the observer's place: its identity is admitted, so the connection is allowed.
    net.stop(OBSERVER).expect("stop the observer");
    let key = read_key_file(&net.node_dir(OBSERVER).expect("node dir").join(NODE_KEY_FILE)).expect("observer key");
    let target = genesis_node(&net, TARGET);
    let target_peer = peer_id_of(target.public_key.as_bytes()).expect("peer id");
    let target_addr: Multiaddr = net.p2p_addr(TARGET).expect("p2p address").parse().expect("multiaddr");
    let mut cfg = P2pConfig::new("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"), key.to_bytes());
    cfg.allowed = vec![target_peer];
    let (inbound_tx, mut inbound) = mpsc::channel(64);
    let (p2p, task) = P2p::start(cfg, inbound_tx).await.expect("start p2p as the observer");
    // The leader replicates to the observer over this connection: answer nothing.
    let drain = tokio::spawn(async move { while inbound.recv().await.is_some() {} });

    let me = raft_id_of(&genesis_node(&net, OBSERVER).public_key);
    let node_2 = raft_id_of(&genesis_node(&net, "node-2").public_key);
    let term = term_before + 100;
    let far_ahead = |id| Some(LogId::new(CommittedLeaderId::new(term, id), 1_000_000));

    // As itself: a learner asking for votes, and a learner claiming leadership.
    let vote = RaftRpc::Vote(VoteRequest::new(Vote::new(term, me), far_ahead(me)));
    let why = refusal(&p2p, target_peer, &target_addr, vote).await;
    assert!(why.contains("not a voting member") && why.contains(OBSERVER), "{why}");
    let append = RaftRpc::AppendEntries(AppendEntriesRequest {
        vote: Vote::new_committed(term, me),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: far_ahead(me),
    });
    let why = refusal(&p2p, target_peer, &target_addr, append).await;
    assert!(why.contains("not a voting member"), "{why}");

    // In node-2's name, a voter's: the message does not name the sender's own node.
    let vote = RaftRpc::Vote(VoteRequest::new(Vote::new(term, node_2), far_ahead(node_2)));
    let why = refusal(&p2p, target_peer, &target_addr, vote).await;
    assert!(why.contains("not its own"), "{why}");

    p2p.shutdown().await;
    let _ = task.await;
    drain.abort();

    // Nothing moved: same term and leader everywhere, and the network goes on.
    for node in net.validators() {
        assert_eq!(term_and_leader(&node), (term_before, leader_before.clone()), "{node} moved");
    }
    net.start(OBSERVER).expect("restart the observer");
    commit(&net, TARGET, &issue(&net, "RS", 1)).await;
    let after = agree(&net, &net.node_ids()).await;
    assert!(after.height > before.height);
    let log = std::fs::read_to_string(net.logs_path(TARGET).expect("log")).expect("read log");
    assert!(log.contains("not a voting member"), "{TARGET} did not log the refusal");
}
