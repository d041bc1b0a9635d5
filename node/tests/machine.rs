//! The state machine every node runs on each committed Raft entry: a block proposed by a
//! faulty leader with a forged record in it gets that record rejected (every signature
//! is verified on apply, on every node), the honest records accepted, and the state
//! identical on every node that applies the same entry.

use std::sync::{Arc, RwLock};

use veritrace_consensus::Machine;
use veritrace_ledger::apply::RejectCode;
use veritrace_ledger::kv::RocksBackend;
use veritrace_ledger::org::NodeId;
use veritrace_ledger::store::{OpenOptions, Store};
use veritrace_ledger::testkit::Fixture;
use veritrace_ledger::view::Outcome;
use veritrace_node::machine::{AppliedBlock, LedgerMachine, Proposal, SnapshotGate};

fn machine(fx: &Fixture, dir: &std::path::Path) -> (LedgerMachine, Arc<RwLock<Store<RocksBackend>>>) {
    let backend = RocksBackend::open(dir).expect("open rocksdb");
    let store = Arc::new(RwLock::new(Store::create(backend, &fx.genesis, OpenOptions::default()).expect("create")));
    let (m, _rx) = LedgerMachine::new(store.clone(), Arc::new(SnapshotGate::default()));
    (m, store)
}

#[test]
fn a_forged_record_from_a_faulty_leader_is_rejected_by_every_node() {
    let fx = Fixture::new();
    let t = fx.genesis.genesis_time_ms + 1_000;
    let honest = fx.sign("nutri", t, fx.issue_range("L1", 10));
    let mut forged = fx.sign("nutri", t, fx.issue_range("L2", 10));
    forged.signature.0[0] ^= 1;
    let proposal = Proposal { time_ms: t, proposer: NodeId::new("node-1").unwrap(), records: vec![forged, honest] };
    let payload = proposal.encode();

    let mut heads = Vec::new();
    for node in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, store) = machine(&fx, dir.path());
        let out = AppliedBlock::decode(&m.apply(1, &payload, b"raft-meta").expect("apply")).expect("decode");
        match &out.receipts[0].outcome {
            Outcome::Rejected { code, message } => {
                assert_eq!(*code, RejectCode::BadSignature, "node {node}: {message}");
            }
            other => panic!("node {node} accepted a forged record: {other:?}"),
        }
        assert!(matches!(out.receipts[1].outcome, Outcome::Accepted { log_index: 0 }), "{:?}", out.receipts[1]);
        let head = store.read().unwrap().head().clone();
        assert_eq!(head.log_size, 1, "only the honest record enters the log");
        heads.push((head.log_root, head.state_root, out.header.hash()));
    }
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "nodes disagree: {heads:?}");
}
