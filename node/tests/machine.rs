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

/// A writer that, at its first write, says so and waits until it is let go.
struct Paused {
    reached: Option<std::sync::mpsc::Sender<()>>,
    go: std::sync::mpsc::Receiver<()>,
    bytes: Vec<u8>,
}

impl std::io::Write for Paused {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(reached) = self.reached.take() {
            reached.send(()).unwrap();
            self.go.recv().unwrap();
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_block_applies_while_a_snapshot_is_being_written() {
    use std::sync::mpsc;
    use std::time::Duration;

    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut m, store) = machine(&fx, dir.path());
    let proposer = NodeId::new("node-1").unwrap();
    let proposal = |i: u64| {
        let t = fx.genesis.genesis_time_ms + 1_000 * i;
        let records = vec![fx.sign("nutri", t, fx.issue_range(&format!("L{i}"), 10))];
        Proposal { time_ms: t, proposer: proposer.clone(), records }.encode()
    };
    for i in 1..=3 {
        m.apply(i, &proposal(i), b"raft-meta").expect("apply");
    }
    let before = store.read().unwrap().head().clone();

    let source = m.snapshot_source().expect("snapshot source");
    let (reached_tx, reached) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let export = std::thread::spawn(move || {
        let mut out = Paused { reached: Some(reached_tx), go: go_rx, bytes: Vec::new() };
        source.write_to(&mut out).expect("export");
        out.bytes
    });
    reached.recv().expect("the export started writing");

    // The export is stopped mid-stream; a block must still apply. (Were the store locked
    // for the export, the apply would wait for `go`, which comes only after it.)
    let payload = proposal(4);
    let (applied_tx, applied) = mpsc::channel();
    let applier = std::thread::spawn(move || {
        let out = m.apply(4, &payload, b"raft-meta-4").map(|_| ());
        applied_tx.send(out).unwrap();
        m
    });
    let outcome = applied.recv_timeout(Duration::from_secs(120));
    go.send(()).unwrap();
    outcome.expect("the apply waited for the snapshot export").expect("apply");
    let snap = export.join().unwrap();
    let _m = applier.join().unwrap();
    assert_eq!(store.read().unwrap().head().height, before.height + 1);

    // The stream holds the ledger as it was when the snapshot was asked for.
    let copy_dir = tempfile::tempdir().unwrap();
    let backend = RocksBackend::open(copy_dir.path()).unwrap();
    let copy = Store::import_snapshot_from(backend, fx.ledger(), &mut &snap[..], b"raft-meta").expect("import");
    assert_eq!(copy.head(), &before);
}
