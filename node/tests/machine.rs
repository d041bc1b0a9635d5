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

    let source = m.snapshot_taker().expect("snapshot taker").take().expect("snapshot view");
    assert_eq!(source.raft_meta(), Some(&b"raft-meta"[..]), "the view carries the metadata stored with its blocks");
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

/// The snapshot view is taken while blocks go on applying (openraft builds snapshots
/// concurrently with applies), so each view must hold whole blocks and the Raft metadata
/// written with the last of them: here every apply stores "meta-<height>", and every view
/// taken in the middle of them names its own head.
#[test]
fn snapshot_views_taken_while_blocks_apply_match_their_raft_metadata() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    const VIEWS: usize = 6;
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut m, store) = machine(&fx, dir.path());
    let proposer = NodeId::new("node-1").unwrap();
    let proposals: Vec<Vec<u8>> = (1..=600u64)
        .map(|i| {
            let t = fx.genesis.genesis_time_ms + 1_000 * i;
            let records = vec![fx.sign("nutri", t, fx.issue_range(&format!("L{i}"), 5))];
            Proposal { time_ms: t, proposer: proposer.clone(), records }.encode()
        })
        .collect();
    m.apply(1, &proposals[0], b"meta-1").expect("apply");
    let taker = m.snapshot_taker().expect("snapshot taker");

    // Blocks apply until the views are taken (or the blocks run out).
    let taken = Arc::new(AtomicUsize::new(0));
    let applier = {
        let taken = taken.clone();
        std::thread::spawn(move || {
            for (i, payload) in proposals.iter().enumerate().skip(1) {
                if taken.load(Ordering::SeqCst) >= VIEWS {
                    break;
                }
                let height = i as u64 + 1;
                m.apply(height, payload, format!("meta-{height}").as_bytes()).expect("apply");
            }
        })
    };
    let mut views = vec![taker.take().expect("snapshot view")];
    while views.len() < VIEWS {
        views.push(m_taker(&store).take().expect("snapshot view"));
        taken.store(views.len(), Ordering::SeqCst);
    }
    applier.join().unwrap();
    let mut heights = std::collections::BTreeSet::new();
    for source in views {
        let meta = String::from_utf8(source.raft_meta().expect("metadata in the view").to_vec()).unwrap();
        let mut bytes = Vec::new();
        source.write_to(&mut bytes).expect("export");
        let copy_dir = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(copy_dir.path()).unwrap();
        let copy = Store::import_snapshot_from(backend, fx.ledger(), &mut &bytes[..], b"x").expect("import");
        assert_eq!(meta, format!("meta-{}", copy.head().height), "a view's metadata names its own head");
        heights.insert(copy.head().height);
    }
    assert!(heights.len() > 1, "blocks applied while the views were taken: {heights:?}");
}

/// Another taker on the same store, as the machine gives one per snapshot.
fn m_taker(store: &Arc<RwLock<Store<RocksBackend>>>) -> Box<dyn veritrace_consensus::SnapshotTaker> {
    let (m, _rx) = LedgerMachine::new(store.clone(), Arc::new(SnapshotGate::default()));
    m.snapshot_taker().expect("snapshot taker")
}
