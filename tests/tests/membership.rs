//! Governance drives Raft membership: a validator added or removed by a governance record
//! becomes (or stops being) a Raft voter, one change at a time, and a change that would
//! lose quorum waits until enough voters are live. A node the genesis does not name is
//! refused by every peer until governance admits it, and cut off again once removed.

use std::time::{Duration, Instant};

use veritrace_devnet::Network;
use veritrace_ledger::org::NodeId;
use veritrace_ledger::record::{GovernanceAction, SignedRecord};
use veritrace_proto::v1 as pb;
use veritrace_tests::*;

/// A governance record by the cast's regulators (samr, approved by customs-pingtan).
fn governance(net: &Network, nonce: u64, action: GovernanceAction) -> SignedRecord {
    net.governance(nonce, action).expect("governance record")
}

/// Waits until `node` reports `n` Raft voters; returns them.
async fn wait_voters(net: &Network, node: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(net, node).await;
        if s.voters.len() == n {
            return s.voters;
        }
        assert!(Instant::now() < deadline, "{node} still reports voters {:?}, want {n}", s.voters);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn governance_adds_and_removes_a_voter_and_never_loses_quorum() {
    let net = network(3, 1, None);
    let observer = net.genesis().observers[0].clone();
    let obs = observer.node_id.to_string();
    let leader = net.leader().expect("leader");
    let down = net.validators().into_iter().find(|n| *n != leader).expect("a follower");
    let up: Vec<String> = net.validators().into_iter().filter(|n| *n != down).collect();

    // With one validator and the observer down, making the observer a voter would need 3
    // of 4 live voters while only 2 are: the record commits, the Raft change waits.
    net.kill(&down).unwrap();
    net.kill(&obs).unwrap();
    commit(&net, &leader, &governance(&net, 1, GovernanceAction::AddValidator(observer.clone()))).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(wait_voters(&net, &leader, 3).await.len(), 3, "the change must wait while it would lose quorum");
    let log = std::fs::read_to_string(net.logs_path(&leader).unwrap()).unwrap();
    assert!(log.contains("membership change refused for now"), "the leader did not say why it waits");
    // The cluster keeps committing meanwhile.
    commit(&net, &up[1], &issue(&net, "MEM", 1)).await;

    // Once both are back, the observer becomes the fourth voter.
    net.start(&down).unwrap();
    net.start(&obs).unwrap();
    let voters = wait_voters(&net, &leader, 4).await;
    assert!(voters.contains(&obs), "{voters:?}");
    commit(&net, &obs, &issue(&net, "MEM", 2)).await;

    // Removing it by governance makes it a non-voter again.
    let remove = GovernanceAction::RemoveValidator { node_id: NodeId::new(obs.clone()).unwrap() };
    commit(&net, &leader, &governance(&net, 3, remove)).await;
    let voters = wait_voters(&net, &net.leader().expect("leader"), 3).await;
    assert!(!voters.contains(&obs), "{voters:?}");
    commit(&net, &obs, &issue(&net, "MEM", 4)).await;
    agree(&net, &net.node_ids()).await;
}

/// Lines of `node`'s log that refuse a connection from `peer`.
fn refusals_of(net: &Network, node: &str, peer: &str) -> usize {
    let log = std::fs::read_to_string(net.logs_path(node).unwrap()).unwrap();
    log.lines().filter(|l| l.contains("refused an inbound connection") && l.contains(peer)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_outside_the_genesis_joins_once_governance_admits_it_and_is_cut_off_once_removed() {
    let net = network(3, 0, None);
    let leader = net.leader().expect("leader");
    commit(&net, &leader, &issue(&net, "JOIN", 1)).await;

    // Started, but not admitted: every peer refuses it, and it holds nothing.
    let added = net.add_node("hunan-qi").expect("add a node");
    let node = added.node_id.to_string();
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(added.public_key.as_bytes()).unwrap();
    let peer = libp2p::identity::PublicKey::from(key).to_peer_id().to_string();
    let deadline = Instant::now() + WAIT;
    while net.validators().iter().filter(|v| **v != node).any(|v| refusals_of(&net, v, &peer) == 0) {
        assert!(Instant::now() < deadline, "a genesis node never refused the unadmitted node");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = status(&net, &node).await;
    assert_eq!((s.height, s.leader.as_str()), (0, ""), "an unadmitted node got the ledger");
    assert_eq!(wait_voters(&net, &leader, 3).await.len(), 3);

    // Admitted by governance: it joins Raft, catches up and votes.
    let admitted = Instant::now();
    commit(&net, &leader, &governance(&net, 2, GovernanceAction::AddValidator(added.clone()))).await;
    let voters = wait_voters(&net, &leader, 4).await;
    assert!(voters.contains(&node), "{voters:?}");
    eprintln!(
        "admitted {node}: a voter {:.2} s after the governance record was submitted",
        admitted.elapsed().as_secs_f64()
    );
    commit(&net, &node, &issue(&net, "JOIN", 3)).await;
    let head = agree(&net, &net.node_ids()).await;
    // It signs checkpoints as a validator of the ledger.
    let deadline = Instant::now() + WAIT;
    loop {
        let cp = client(&net, &leader)
            .await
            .get_checkpoint(pb::GetCheckpointRequest { height: head.height })
            .await
            .expect("checkpoint")
            .into_inner();
        if cp.signatures.iter().any(|s| s.node_id == node) {
            break;
        }
        assert!(Instant::now() < deadline, "{node} never signed checkpoint {}", head.height);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Removed by governance: out of Raft altogether, then refused by every peer.
    let remove = GovernanceAction::RemoveValidator { node_id: added.node_id.clone() };
    commit(&net, &leader, &governance(&net, 4, remove)).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(&net, &net.leader().expect("leader")).await;
        if !s.voters.contains(&node) && !s.learners.contains(&node) {
            break;
        }
        assert!(Instant::now() < deadline, "{node} is still in raft: {:?} {:?}", s.voters, s.learners);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let before = status(&net, &node).await.height;
    let genesis_nodes: Vec<String> = net.validators().into_iter().filter(|v| *v != node).collect();
    commit(&net, &leader, &issue(&net, "JOIN", 5)).await;
    let head = agree(&net, &genesis_nodes).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = status(&net, &node).await.height;
    assert!(after < head.height, "{node} removed still got block {} (it was at {before})", head.height);
}
