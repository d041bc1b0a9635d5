//! The RocksDB store: atomic blocks, reopening with the same roots, and refusing a
//! database edited on disk.

use veritrace_ledger::kv::{Cf, RocksBackend};
use veritrace_ledger::record::*;
use veritrace_ledger::store::{OpenOptions, Store, StoreError};
use veritrace_ledger::testkit::{Fixture, T0_MS};

fn build(dir: &std::path::Path, fx: &Fixture) -> veritrace_ledger::view::Head {
    let backend = RocksBackend::open(dir).unwrap();
    let mut store = Store::create(backend, &fx.genesis, OpenOptions::default()).unwrap();
    let mut t = T0_MS + 10_000;
    for h in 1..=5u64 {
        t += 1000;
        let lot = format!("L{h}");
        let recs = vec![fx.sign("nutri", t, fx.issue_range(&lot, 100))];
        store.apply_block(&fx.block(h, t, recs)).unwrap();
    }
    t += 1000;
    let ship =
        RecordBody::Ship(Ship { to: fx.org_id("importer"), subjects: vec![fx.item("L1", 1)], location: String::new() });
    store.apply_block(&fx.block(6, t, vec![fx.sign("nutri", t, ship)])).unwrap();
    store.head().clone()
}

#[test]
fn reopening_gives_the_same_roots() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let head = build(dir.path(), &fx);
    assert_eq!(head.height, 6);
    assert_eq!(head.log_size, 6);
    let store = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), OpenOptions::default()).unwrap();
    assert_eq!(store.head(), &head);
    // The same blocks on memory give the same roots: storage does not change results.
    let mut mem = fx.mem_store();
    for h in 1..=6 {
        mem.apply_block(&store.block(h).unwrap().unwrap()).unwrap();
    }
    assert_eq!(mem.head(), &head);
    // Creating again from the same genesis opens it; from another genesis is refused.
    drop(store);
    let store = Store::create(RocksBackend::open(dir.path()).unwrap(), &fx.genesis, OpenOptions::default());
    drop(store.unwrap());
    let mut other = fx.genesis.clone();
    other.genesis_time_ms += 1;
    let e = Store::create(RocksBackend::open(dir.path()).unwrap(), &other, OpenOptions::default()).err().unwrap();
    assert!(matches!(e, StoreError::WrongLedger { .. }), "{e}");
}

/// Edits one value in a column family directly, bypassing the store.
fn tamper(dir: &std::path::Path, cf: Cf, pick: impl Fn(&[u8]) -> bool, edit: impl Fn(&mut Vec<u8>)) {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let names: Vec<&str> = Cf::ALL.iter().map(|c| c.name()).collect();
    let db = rocksdb::DB::open_cf(&opts, dir, names).unwrap();
    let h = db.cf_handle(cf.name()).unwrap();
    let (k, v) = db
        .iterator_cf(h, rocksdb::IteratorMode::Start)
        .map(|r| r.unwrap())
        .find(|(k, _)| pick(k))
        .expect("a value to tamper with");
    let mut v = v.to_vec();
    edit(&mut v);
    db.put_cf(h, k, v).unwrap();
}

#[test]
fn an_edited_state_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    build(dir.path(), &fx);
    // Give lot L2 one more unit, as someone editing the database by hand would.
    tamper(
        dir.path(),
        Cf::States,
        |k| String::from_utf8_lossy(k).contains("L2"),
        |v| {
            let n = v.len();
            v[n - 50] ^= 1;
        },
    );
    let e = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), OpenOptions::default()).err().unwrap();
    assert!(matches!(e, StoreError::Integrity(_) | StoreError::Corrupt { .. }), "{e}");
}

#[test]
fn an_edited_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    build(dir.path(), &fx);
    tamper(
        dir.path(),
        Cf::Records,
        |_| true,
        |v| {
            let n = v.len();
            v[n - 1] ^= 1;
        },
    );
    let e = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), OpenOptions::default()).err().unwrap();
    assert!(e.to_string().contains("does not verify") || e.to_string().contains("corrupt"), "{e}");
}

#[test]
fn an_edited_log_node_is_refused_even_by_the_quick_check() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    build(dir.path(), &fx);
    // The level-2 node over leaves 0..4 is one of the subtrees the root is folded from.
    let level_at = 1 + fx.ledger().as_str().len();
    tamper(dir.path(), Cf::LogNodes, |k| k[level_at] == 2, |v| v[0] ^= 1);
    let quick = OpenOptions { verification: veritrace_ledger::store::Verification::Quick, ..Default::default() };
    let e = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), quick).err().unwrap();
    assert!(matches!(e, StoreError::Integrity(_)), "{e}");
}

#[test]
fn a_snapshot_moves_a_ledger_to_another_store() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let head = build(dir.path(), &fx);
    let store = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), OpenOptions::default()).unwrap();
    store.save_replication_meta(b"raft state 1").unwrap();
    let mut snap = Vec::new();
    let bytes = store.snapshot_view().unwrap().export_to(&mut snap).unwrap();
    assert_eq!(bytes, snap.len() as u64);

    // Into an empty store, and into one that holds an older copy of the ledger.
    let other = tempfile::tempdir().unwrap();
    let backend = RocksBackend::open(other.path()).unwrap();
    let copy = Store::import_snapshot_from(backend, fx.ledger(), &mut &snap[..], b"m2").unwrap();
    assert_eq!(copy.head(), &head);
    assert_eq!(copy.replication_meta().unwrap().as_deref(), Some(&b"m2"[..]));
    assert_eq!(copy.subject_state(&fx.item("L1", 1)).unwrap(), store.subject_state(&fx.item("L1", 1)).unwrap());
    let mut mem = fx.mem_store();
    let t = T0_MS + 1;
    mem.apply_block(&fx.block(1, t, vec![fx.sign("nutri", t, fx.issue_range("OLD", 5))])).unwrap();
    mem.install_snapshot_from(&mut &snap[..], b"m3").unwrap();
    assert_eq!(mem.head(), &head);
    assert!(mem.subject_state(&fx.lot_id("OLD")).unwrap().is_none());
    assert_eq!(mem.replication_meta().unwrap().as_deref(), Some(&b"m3"[..]));

    // A snapshot of another ledger, or a damaged one, is refused.
    let wrong = veritrace_ledger::org::LedgerId::new("other").unwrap();
    let empty = veritrace_ledger::kv::MemBackend::default();
    assert!(Store::import_snapshot_from(empty, &wrong, &mut &snap[..], b"").is_err());
    let mut bad = snap.clone();
    let n = bad.len();
    bad[n - 3] ^= 0xff;
    let empty = veritrace_ledger::kv::MemBackend::default();
    assert!(Store::import_snapshot_from(empty, fx.ledger(), &mut &bad[..], b"").is_err());
}

#[test]
fn replication_meta_is_written_with_the_block() {
    let fx = Fixture::new();
    let mut store = fx.mem_store();
    assert_eq!(store.replication_meta().unwrap(), None);
    let t = T0_MS + 1_000;
    store.apply_block_with_meta(&fx.block(1, t, vec![]), b"log id 7").unwrap();
    assert_eq!(store.replication_meta().unwrap().as_deref(), Some(&b"log id 7"[..]));
}

/// A memory backend that remembers whether each batch asked to be synced.
#[derive(Default)]
struct SyncLog {
    mem: veritrace_ledger::kv::MemBackend,
    synced: std::sync::Mutex<Vec<bool>>,
}

impl veritrace_ledger::kv::Backend for &SyncLog {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, veritrace_ledger::hash::StorageError> {
        self.mem.get(cf, key)
    }
    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<veritrace_ledger::kv::Entries, veritrace_ledger::hash::StorageError> {
        self.mem.scan(cf, prefix, start, limit)
    }
    fn write(&self, batch: veritrace_ledger::kv::Batch) -> Result<(), veritrace_ledger::hash::StorageError> {
        self.synced.lock().unwrap().push(batch.synced());
        self.mem.write(batch)
    }
}

#[test]
fn a_log_backed_store_leaves_blocks_and_signatures_to_its_log_and_syncs_the_rest() {
    use veritrace_ledger::store::Durability;
    let fx = Fixture::new();
    let t = T0_MS + 1_000;
    for (durability, expected) in [(Durability::Synced, true), (Durability::LogBacked, false)] {
        let backend = SyncLog::default();
        let opts = OpenOptions { durability, ..OpenOptions::default() };
        let mut store = Store::create(&backend, &fx.genesis, opts).unwrap();
        let (header, _) = store.apply_block_with_meta(&fx.block(1, t, vec![]), b"log id 1").unwrap();
        let (node, key) = &fx.validator_keys[0];
        let sig = header.sign(node.clone(), key);
        store.put_checkpoint_signature(1, &sig).unwrap();
        // Plain blocks (no log to replay them from) and metadata on its own stay synced.
        store.apply_block(&fx.block(2, t + 1, vec![])).unwrap();
        store.save_replication_meta(b"log id 2").unwrap();
        let synced = backend.synced.lock().unwrap().clone();
        assert_eq!(
            synced,
            vec![true, expected, expected, true, true],
            "{durability:?}: genesis, block with meta, signature, block, meta"
        );
    }
}

#[test]
fn a_ledger_is_checked_against_a_complete_checkpoint() {
    let fx = Fixture::new();
    let mut store = fx.mem_store();
    let mut t = T0_MS + 1_000;
    let mut headers = vec![];
    for h in 1..=4 {
        t += 1_000;
        headers.push(store.apply_block(&fx.block(h, t, vec![])).unwrap().0);
    }
    let validators = fx.genesis.validator_set();
    store.verify_against_checkpoint(&fx.checkpoint(&headers[1]), &validators).unwrap();
    store.verify_against_checkpoint(&fx.checkpoint(&headers[3]), &validators).unwrap();
    let mut thin = fx.checkpoint(&headers[1]);
    thin.signatures.truncate(1);
    assert!(store.verify_against_checkpoint(&thin, &validators).is_err());
    // A checkpoint of another history at that height.
    let mut other = headers[1].clone();
    other.state_root = veritrace_ledger::hash::Hash32([7; 32]);
    let e = store.verify_against_checkpoint(&fx.checkpoint(&other), &validators).unwrap_err();
    assert!(e.to_string().contains("differs"), "{e}");
}

/// What the live store answers from its caches (states, state-map nodes, the upper levels of
/// the log) is what a store opened afresh on the same data reads from disk.
#[test]
fn cached_answers_match_a_fresh_open() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let backend = RocksBackend::open(dir.path()).unwrap();
    let mut store = Store::create(backend, &fx.genesis, OpenOptions::default()).unwrap();
    let mut t = T0_MS + 10_000;
    for h in 1..=4u64 {
        t += 1000;
        let recs = (0..3).map(|i| fx.sign("nutri", t, fx.issue_range(&format!("C{h}{i}"), 50))).collect();
        store.apply_block(&fx.block(h, t, recs)).unwrap();
    }
    t += 1000;
    let ship = RecordBody::Ship(Ship {
        to: fx.org_id("importer"),
        subjects: vec![fx.item("C10", 1), fx.lot_id("C21")],
        location: String::new(),
    });
    store.apply_block(&fx.block(5, t, vec![fx.sign("nutri", t, ship)])).unwrap();
    let subjects = [fx.item("C10", 1), fx.lot_id("C10"), fx.lot_id("C21"), fx.lot_id("C42"), fx.item("C42", 7)];
    let head = store.head().clone();
    let size = head.log_size;
    let live: Vec<_> = subjects.iter().map(|s| store.subject_state(s).unwrap()).collect();
    let proofs: Vec<_> = (0..size).map(|i| store.inclusion_proof(i, size).unwrap()).collect();
    let state_proof = store.state_at(&head.state_root, &veritrace_ledger::state::StateKey::Subject(fx.lot_id("C21")));
    drop(store);

    let fresh = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), OpenOptions::default()).unwrap();
    assert_eq!(fresh.head(), &head);
    for (s, v) in subjects.iter().zip(&live) {
        assert_eq!(&fresh.subject_state(s).unwrap(), v, "{s}");
    }
    for (i, p) in proofs.iter().enumerate() {
        assert_eq!(&fresh.inclusion_proof(i as u64, size).unwrap(), p);
    }
    assert_eq!(
        fresh.state_at(&head.state_root, &veritrace_ledger::state::StateKey::Subject(fx.lot_id("C21"))),
        state_proof
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// RocksDB writes a batch sorted by key (faster memtable inserts); it must mean the same
    /// as the ops applied in order, repeated keys and deletes included.
    #[test]
    fn a_batch_means_the_same_on_rocksdb_as_in_memory(
        batches in proptest::collection::vec(
            proptest::collection::vec((0usize..3, 0u8..12, proptest::option::of(0u8..4)), 0..40),
            1..4,
        ),
    ) {
        use veritrace_ledger::kv::{Backend, Batch, MemBackend};
        let cfs = [Cf::Records, Cf::SmtNodes, Cf::Holdings];
        let dir = tempfile::tempdir().unwrap();
        let rocks = RocksBackend::open(dir.path()).unwrap();
        let mem = MemBackend::default();
        for ops in &batches {
            let (mut a, mut b) = (Batch::default(), Batch::default());
            for &(cf, key, value) in ops {
                let key = vec![b'k', key];
                match value {
                    Some(v) => {
                        a.put_parts(cfs[cf], &[&key[..1], &key[1..]], &[&[v], b"-value"]);
                        b.put(cfs[cf], key, [&[v][..], b"-value"].concat());
                    }
                    None => {
                        a.delete_parts(cfs[cf], &[&key]);
                        b.delete(cfs[cf], key);
                    }
                }
            }
            proptest::prop_assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            rocks.write(a).unwrap();
            mem.write(b).unwrap();
        }
        for cf in cfs {
            proptest::prop_assert_eq!(rocks.scan(cf, b"k", b"k", 100).unwrap(), mem.scan(cf, b"k", b"k", 100).unwrap());
            let keys: Vec<Vec<u8>> = (0u8..12).map(|k| vec![b'k', k]).collect();
            proptest::prop_assert_eq!(rocks.multi_get(cf, &keys).unwrap(), mem.multi_get(cf, &keys).unwrap());
        }
    }
}

/// A copy of `snap` with two adjacent entries of one column family swapped and the end
/// frame made anew, so only the order is wrong.
fn out_of_order(snap: &[u8], fx: &Fixture) -> Vec<u8> {
    use veritrace_ledger::snapshot::{SnapshotReader, SnapshotWriter};
    let mut input = snap;
    let mut reader = SnapshotReader::start(&mut input, fx.ledger()).unwrap();
    let mut entries = Vec::new();
    while let Some(e) = reader.next().unwrap() {
        entries.push(e);
    }
    let at = entries.windows(2).position(|w| w[0].0 == Cf::Records && w[1].0 == Cf::Records).unwrap();
    entries.swap(at, at + 1);
    let mut out = Vec::new();
    let mut w = SnapshotWriter::start(&mut out, fx.ledger()).unwrap();
    for (cf, k, v) in &entries {
        w.entry(*cf, k, v).unwrap();
    }
    w.finish().unwrap();
    out
}

/// Entries left in the directory where loads are staged (none if it is missing).
fn staged_files(db: &std::path::Path) -> usize {
    std::fs::read_dir(db.join("snapshot-ingest")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_snapshot_is_ingested_whole_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let head = build(dir.path(), &fx);
    let store = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), OpenOptions::default()).unwrap();
    let mut snap = Vec::new();
    store.snapshot_view().unwrap().export_to(&mut snap).unwrap();

    let mut flipped = snap.clone();
    flipped[snap.len() / 2] ^= 0x01;
    let swapped = out_of_order(&snap, &fx);
    let cases: [(&str, &[u8]); 4] = [
        ("cut short", &snap[..snap.len() - 1]),
        ("cut in half", &snap[..snap.len() / 2]),
        ("altered", &flipped),
        ("out of order", &swapped),
    ];
    for (what, bad) in cases {
        let other = tempfile::tempdir().unwrap();
        let mut target =
            Store::create(RocksBackend::open(other.path()).unwrap(), &fx.genesis, OpenOptions::default()).unwrap();
        let before = target.head().clone();
        let e = target.install_snapshot_from(&mut &bad[..], b"raft").unwrap_err();
        assert!(matches!(e, StoreError::Snapshot(_)), "{what}: {e}");
        assert_eq!(staged_files(other.path()), 0, "{what}: the refused load left its table files");
        drop(target);
        let target = Store::open(RocksBackend::open(other.path()).unwrap(), fx.ledger(), OpenOptions::default());
        assert_eq!(target.expect(what).head(), &before, "{what}: refused while staging, the store is as it was");
    }

    // A whole stream goes in, over an older copy, and the store opens with the full check.
    let other = tempfile::tempdir().unwrap();
    let mut target =
        Store::create(RocksBackend::open(other.path()).unwrap(), &fx.genesis, OpenOptions::default()).unwrap();
    let t = T0_MS + 1;
    target.apply_block(&fx.block(1, t, vec![fx.sign("nutri", t, fx.issue_range("OLD", 5))])).unwrap();
    target.install_snapshot_from(&mut &snap[..], b"raft").unwrap();
    assert_eq!(target.head(), &head);
    assert_eq!(staged_files(other.path()), 0, "the load's directory is removed");
    drop(target);
    let target = Store::open(RocksBackend::open(other.path()).unwrap(), fx.ledger(), OpenOptions::default()).unwrap();
    assert_eq!(target.head(), &head);
    assert_eq!(target.replication_meta().unwrap().as_deref(), Some(&b"raft"[..]));
    let mut again = Vec::new();
    target.snapshot_view().unwrap().export_to(&mut again).unwrap();
    assert_eq!(again, snap, "the installed ledger exports the same stream");
}

#[test]
fn a_view_exports_the_ledger_as_it_was_while_the_store_takes_more_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let head = build(dir.path(), &fx);
    let mut store = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), OpenOptions::default()).unwrap();
    let mut then = Vec::new();
    store.snapshot_view().unwrap().export_to(&mut then).unwrap();

    let view = store.snapshot_view().unwrap();
    assert_eq!(view.head(), &head);
    let t = T0_MS + 100_000;
    store.apply_block(&fx.block(7, t, vec![fx.sign("nutri", t, fx.issue_range("L7", 10))])).unwrap();
    assert_eq!(store.head().height, 7);
    let mut from_view = Vec::new();
    view.export_to(&mut from_view).unwrap();
    assert_eq!(from_view, then, "the view changed with the store");
    let mut now = Vec::new();
    store.snapshot_view().unwrap().export_to(&mut now).unwrap();
    assert_ne!(now, then);

    let views = dir.path().join("snapshot-views");
    assert_eq!(std::fs::read_dir(&views).unwrap().count(), 1);
    drop(view);
    assert_eq!(std::fs::read_dir(&views).unwrap().count(), 0, "a dropped view leaves its checkpoint");

    // What a crash leaves of views and loads goes when the database opens again.
    std::fs::create_dir_all(views.join("9/x")).unwrap();
    std::fs::create_dir_all(dir.path().join("snapshot-ingest")).unwrap();
    drop(store);
    let store = Store::open(RocksBackend::open(dir.path()).unwrap(), fx.ledger(), OpenOptions::default()).unwrap();
    assert!(!views.exists() && !dir.path().join("snapshot-ingest").exists());
    assert_eq!(store.head().height, 7);
}
