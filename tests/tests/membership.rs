//! Governance drives Raft membership: a validator added or removed by a governance record
//! becomes (or stops being) a Raft voter, one change at a time, and a change that would
//! lose quorum waits until enough voters are live.

use std::time::{Duration, Instant};

use veritrace_devnet::Network;
use veritrace_ledger::org::{KeyId, NodeId, OrgId};
use veritrace_ledger::record::{GovernanceAction, RecordBody, SignedRecord};
use veritrace_tests::*;

/// A governance record by samr, approved by customs-pingtan (the cast's quorum is 2).
fn governance(net: &Network, nonce: u64, action: GovernanceAction) -> SignedRecord {
    let mut r = sign(net, "samr", nonce, RecordBody::Governance(action));
    let approver = net.cast().key("customs-pingtan").expect("customs key");
    r.approve(net.ledger_id(), OrgId::new("customs-pingtan").unwrap(), KeyId::new("k1").unwrap(), approver);
    r
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
