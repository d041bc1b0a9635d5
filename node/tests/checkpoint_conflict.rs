//! A validator that signs two different headers at one height is caught: with a real
//! 3-validator network through devnet, the test stops node-3 and speaks for it over
//! libp2p with its own node key, sending node-1 a validly signed checkpoint signature on a
//! header that differs from node-1's at an existing height (another state root). node-1
//! keeps the evidence (`evidence/conflict-H-node-3.json` in its data directory, both
//! headers and the signature), logs `CHECKPOINT CONFLICT`, counts it in `/metrics`, and
//! goes on serving with its own checkpoint unchanged. A signature that does not verify
//! under node-3's key is no evidence of anything and leaves no file.
//!
//! Waits poll with a generous deadline; nothing is asserted about time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use veritrace_devnet::Network;
use veritrace_devnet::network::NODE_KEY_FILE;
use veritrace_ledger::block::{BlockHeader, CheckpointSignature};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::org::NodeId;
use veritrace_node::config::read_key_file;
use veritrace_node::p2p::{NodeRequest, NodeResponse, P2p, P2pConfig, peer_id_of};
use veritrace_node::service::SignatureMessage;
use veritrace_proto::convert::checkpoint_from_pb;
use veritrace_proto::v1 as pb;
use veritrace_tests::{WAIT, checkpoint_at, client, commit, issue, network};

/// The node that is wronged, and the validator whose identity the test takes.
const VICTIM: &str = "node-1";
const SIGNER: &str = "node-3";

fn signature_bytes(header: &BlockHeader, signer: &str, key: &SigningKey) -> Vec<u8> {
    let signature = header.sign(NodeId::new(signer).expect("node id"), key);
    veritrace_ledger::codec::encode(&SignatureMessage { header: header.clone(), signature })
}

/// The libp2p identity of a genesis node.
fn peer_of(net: &Network, node: &str) -> PeerId {
    let v = net
        .genesis()
        .validators
        .iter()
        .chain(&net.genesis().observers)
        .find(|v| v.node_id.as_str() == node)
        .unwrap_or_else(|| panic!("{node} is not in the genesis"));
    peer_id_of(v.public_key.as_bytes()).expect("peer id")
}

/// Sends `bytes` to `to` as a checkpoint signature; retries while it cannot connect.
async fn send_signature(p2p: &P2p, to: PeerId, addr: &Multiaddr, bytes: Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match p2p.request(to, Some(addr.clone()), NodeRequest::Signature(bytes.clone())).await {
            Ok(NodeResponse::Ack) => return,
            Ok(other) => panic!("{VICTIM} answered a signature message with {other:?}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot send a signature to {VICTIM}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn header_at(net: &Network, node: &str, height: u64) -> (BlockHeader, pb::Checkpoint) {
    let cp = client(net, node)
        .await
        .get_checkpoint(pb::GetCheckpointRequest { height })
        .await
        .expect("checkpoint")
        .into_inner();
    (checkpoint_from_pb(&cp).expect("checkpoint decodes").header, cp)
}

fn metrics(net: &Network, node: &str) -> String {
    let r = veritrace_devnet::http::get(net.http_addr(node).expect("http address"), "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_validator_signing_a_different_header_at_a_height_leaves_evidence() {
    let net = network(3, 0, None);
    assert_eq!(net.validators(), [VICTIM, "node-2", SIGNER]);

    // A block at height >= 1, with a complete checkpoint on the victim.
    let receipt = commit(&net, VICTIM, &issue(&net, "CC", 0)).await;
    let height = receipt.height;
    assert!(height >= 1);
    checkpoint_at(&net, VICTIM, height).await;
    let (header, checkpoint) = header_at(&net, VICTIM, height).await;
    assert!(checkpoint.complete);

    // Take node-3's place: one identity on one libp2p connection at a time.
    net.stop(SIGNER).expect("stop node-3");
    let key = read_key_file(&net.node_dir(SIGNER).expect("node dir").join(NODE_KEY_FILE)).expect("node-3 key");
    let victim_peer = peer_of(&net, VICTIM);
    let victim_addr: Multiaddr = net.p2p_addr(VICTIM).expect("p2p address").parse().expect("multiaddr");
    let mut cfg = P2pConfig::new("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"), key.to_bytes());
    cfg.allowed = vec![victim_peer];
    let (inbound_tx, mut inbound) = mpsc::channel(64);
    let (p2p, task) = P2p::start(cfg, inbound_tx).await.expect("start p2p as node-3");
    assert_eq!(p2p.local_peer_id(), peer_of(&net, SIGNER));
    // node-1 takes this connection for node-3's and sends Raft RPCs down it: refuse them
    // all (a dropped reply is answered "refused").
    let drain = tokio::spawn(async move { while inbound.recv().await.is_some() {} });

    let evidence_dir: PathBuf = net.data_dir(VICTIM).expect("data dir").join("evidence");
    let evidence = evidence_dir.join(format!("conflict-{height}-{SIGNER}.json"));
    let mut conflicting = header.clone();
    conflicting.state_root = Hash32([0xab; 32]);
    assert_ne!(conflicting, header);

    // A signature that does not verify under node-3's key proves nothing: no evidence.
    // node-1 handles a signature message before it acknowledges it.
    let stranger = SigningKey::from_bytes(&[7; 32]);
    send_signature(&p2p, victim_peer, &victim_addr, signature_bytes(&conflicting, SIGNER, &stranger)).await;
    assert!(!evidence.exists(), "a forged signature was kept as evidence: {}", evidence.display());

    // node-3's real signature on another header at an existing height: a conflict.
    send_signature(&p2p, victim_peer, &victim_addr, signature_bytes(&conflicting, SIGNER, &key)).await;
    let text = std::fs::read_to_string(&evidence)
        .unwrap_or_else(|e| panic!("no evidence at {} after the ack: {e}", evidence.display()));
    let kept: serde_json::Value = serde_json::from_str(&text).expect("evidence is JSON");
    let ours: BlockHeader = serde_json::from_value(kept["ours"].clone()).expect("ours is a header");
    let theirs: BlockHeader = serde_json::from_value(kept["theirs"].clone()).expect("theirs is a header");
    assert_eq!((ours, theirs), (header.clone(), conflicting.clone()));
    let signature: CheckpointSignature = serde_json::from_value(kept["signature"].clone()).expect("a signature");
    assert_eq!(signature.node_id.as_str(), SIGNER);
    let files: Vec<_> = std::fs::read_dir(&evidence_dir).expect("evidence dir").collect();
    assert_eq!(files.len(), 1, "one conflict, one file: {files:?}");

    // The log says so, loudly.
    let log_path = net.logs_path(VICTIM).expect("log path");
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(&log_path).expect("node-1 log");
        if log.contains("CHECKPOINT CONFLICT") {
            break;
        }
        assert!(Instant::now() < deadline, "no CHECKPOINT CONFLICT in {}", log_path.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // And /metrics counts it.
    let body = metrics(&net, VICTIM);
    assert!(
        body.lines().any(|l| l == "veritrace_checkpoint_conflicts_total 1"),
        "no veritrace_checkpoint_conflicts_total 1 in /metrics:\n{body}"
    );

    // node-1 keeps its own header and checkpoint at that height, and goes on serving.
    let (header_after, checkpoint_after) = header_at(&net, VICTIM, height).await;
    assert_eq!(header_after, header);
    assert!(checkpoint_after.complete, "the checkpoint at {height} lost its quorum");

    p2p.shutdown().await;
    let _ = task.await;
    drain.abort();
}
