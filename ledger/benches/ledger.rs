//! Ledger benchmark: prints figures, asserts nothing about time.
//!
//! `cargo bench --workspace --profile dev --bench ledger` measures, on RocksDB in a temp dir,
//! one thread:
//! - apply throughput for blocks of 1,000 signed records (batch signature verification,
//!   rules, Merkle log, state map, and the synced RocksDB write), and where that time goes;
//! - inclusion proof generation (from RocksDB) and verification at 1,000,000 leaves
//!   (`VERITRACE_BENCH_LEAVES` to change);
//! - verification of a trace bundle of 20 records;
//! - at the full log size, the store's part of a trace query (an item's and its lot's
//!   states, the first page of each chain, every record on it) and building and verifying a
//!   trace bundle, for items of 100 lots whose 20 records each are spread over the log;
//! - at the end, the full integrity check a node runs on open ([`Verification::Full`]).
//!
//! With `VERITRACE_BENCH_CHECK_DIR=DIR VERITRACE_BENCH_CHECK_GENESIS=FILE` it instead times
//! the full check, step by step, of the ledger in the RocksDB directory DIR (a node's
//! `data_dir/ledger`, stopped, or a copy: it is opened for writing) made from the genesis
//! FILE, three times in a row.

use std::collections::HashMap;
use std::time::Instant;

use ed25519_dalek::VerifyingKey;
use veritrace_ledger::apply;
use veritrace_ledger::bundle::verify_bundle;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::kv::RocksBackend;
use veritrace_ledger::merkle;
use veritrace_ledger::record::*;
use veritrace_ledger::store::{OpenOptions, Store, Verification};
use veritrace_ledger::testkit::{Fixture, T0_MS};
use veritrace_ledger::view::Outcome;

const BLOCK_RECORDS: usize = 1_000;
const LOTS: u64 = 1_000;
/// Lots whose items are traced at the end: each gets an issuance, up to 18 inspections
/// spread over the fill, and the sale of one item.
const TRACED_LOTS: u64 = 100;
/// A trace's first page, as the API serves it by default.
const TRACE_PAGE: u32 = 100;

struct Bench {
    fx: Fixture,
    store: Store<RocksBackend>,
    t: u64,
    n: u64,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let fx = Fixture::new();
        let backend = RocksBackend::open(dir.path()).expect("rocksdb");
        let opts = OpenOptions { verification: Verification::Quick, ..Default::default() };
        let store = Store::create(backend, &fx.genesis, opts).expect("genesis");
        let mut b = Bench { fx, store, t: T0_MS + 1_000, n: 0, _dir: dir };
        let issues: Vec<SignedRecord> =
            (0..LOTS).map(|i| b.fx.sign("nutri", b.t, b.fx.issue_range(&format!("L{i}"), 6_000))).collect();
        b.apply(issues);
        b
    }

    fn records(&mut self, count: usize) -> Vec<SignedRecord> {
        (0..count)
            .map(|_| {
                self.n += 1;
                let lot = self.fx.lot_id(&format!("L{}", self.n % LOTS));
                self.fx.sign_nonce("ccic-au", self.t, self.n, self.fx.passed_inspection(vec![lot], self.n))
            })
            .collect()
    }

    fn apply(&mut self, records: Vec<SignedRecord>) {
        self.t += 1;
        let block = self.fx.block(self.store.head().height + 1, self.t, records);
        let (_, receipts) = self.store.apply_block(&block).expect("apply");
        assert!(receipts.iter().all(|r| matches!(r.outcome, Outcome::Accepted { .. })), "benchmark record rejected");
    }
}

fn apply_throughput(b: &mut Bench) {
    let blocks = 20;
    let prepared: Vec<Vec<SignedRecord>> = (0..blocks).map(|_| b.records(BLOCK_RECORDS)).collect();
    let start = Instant::now();
    for recs in prepared {
        b.apply(recs);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (blocks * BLOCK_RECORDS) as f64;
    println!(
        "apply: {blocks} blocks x {BLOCK_RECORDS} signed records in {secs:.2} s = {:.0} records/s ({:.2} ms per block)",
        n / secs,
        secs * 1000.0 / blocks as f64
    );
}

/// Where apply's time goes, measured from outside on blocks like the throughput's: the
/// authors' signatures alone (one ed25519 batch, each key decompressed once, as apply does
/// it); `apply::apply_block` without committing (signatures, rules, log, state map); and the
/// rest of `Store::apply_block`, the commit (the batch and the synced RocksDB write).
fn apply_breakdown(b: &mut Bench) {
    let blocks = 5;
    let (mut sig, mut pure, mut full) = (0.0, 0.0, 0.0);
    for _ in 0..blocks {
        let recs = b.records(BLOCK_RECORDS);
        b.t += 1;
        let block = b.fx.block(b.store.head().height + 1, b.t, recs);

        let start = Instant::now();
        let mut points: HashMap<[u8; 32], VerifyingKey> = HashMap::new();
        let mut keys = Vec::with_capacity(block.records.len());
        for r in &block.records {
            let org = b.fx.genesis.organisations.iter().find(|o| o.id == r.record.author).expect("author");
            let pk = org.key(&r.record.key_id).expect("key").public_key;
            keys.push(*points.entry(*pk.as_bytes()).or_insert_with(|| pk.verifying_key()));
        }
        let msgs: Vec<Vec<u8>> = block.records.iter().map(|r| signing_message(b.fx.ledger(), &r.record)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let sigs: Vec<_> = block.records.iter().map(|r| r.signature.to_dalek()).collect();
        assert!(veritrace_ledger::sigbatch::verify_batch(&refs, &sigs, &keys), "signatures verify");
        sig += start.elapsed().as_secs_f64();

        // Twice, keeping the faster, so that `Store::apply_block` below, which applies the
        // block a third time, is compared with an apply as warm as its own.
        let mut fastest = f64::MAX;
        for _ in 0..2 {
            let start = Instant::now();
            let ws = apply::apply_block(&b.store, &block).expect("apply");
            fastest = fastest.min(start.elapsed().as_secs_f64());
            drop(ws);
        }
        pure += fastest;

        let start = Instant::now();
        b.store.apply_block(&block).expect("apply and commit");
        full += start.elapsed().as_secs_f64();
    }
    let ms = |s: f64| s * 1000.0 / f64::from(blocks);
    println!(
        "apply breakdown, per block of {BLOCK_RECORDS}: signatures (one ed25519 batch) {:.1} ms, rules + log + state \
         map {:.1} ms, commit (batch + synced RocksDB write) {:.1} ms",
        ms(sig),
        ms(pure - sig),
        ms(full - pure)
    );
}

fn traced_lot(i: u64) -> String {
    format!("T{i}")
}

fn proofs(b: &mut Bench, leaves: u64) {
    let start = Instant::now();
    let issues = (0..TRACED_LOTS).map(|i| b.fx.sign("nutri", b.t, b.fx.issue_range(&traced_lot(i), 100))).collect();
    b.apply(issues);
    let mut traced_inspections = 0u64;
    while b.store.head().log_size < leaves {
        let left = (leaves - b.store.head().log_size) as usize;
        let mut recs = b.records(left.min(BLOCK_RECORDS * 10).saturating_sub(2).max(1));
        // Two inspections of traced lots per block, so their chains spread over the log.
        for _ in 0..2 {
            if traced_inspections < TRACED_LOTS * 18 {
                let lot = b.fx.lot_id(&traced_lot(traced_inspections % TRACED_LOTS));
                b.n += 1;
                recs.push(b.fx.sign_nonce(
                    "ccic-au",
                    b.t,
                    b.n,
                    b.fx.passed_inspection(vec![lot], 2_000_000_000 + traced_inspections),
                ));
                traced_inspections += 1;
            }
        }
        b.apply(recs);
    }
    let size = b.store.head().log_size;
    let root = b.store.head().log_root;
    println!("log: filled to {size} leaves in {:.1} s", start.elapsed().as_secs_f64());

    let samples = 20_000u64;
    let step = size / samples;
    let mut proofs = Vec::with_capacity(samples as usize);
    let start = Instant::now();
    for i in 0..samples {
        let idx = (i * step + i % 7) % size;
        proofs.push((idx, b.store.inclusion_proof(idx, size).expect("proof")));
    }
    let gen_secs = start.elapsed().as_secs_f64();
    let leaves: Vec<Hash32> = proofs
        .iter()
        .map(|(idx, _)| merkle::leaf_hash(b.store.record_id_at(*idx).unwrap().unwrap().as_bytes()))
        .collect();
    let start = Instant::now();
    for ((idx, path), leaf) in proofs.iter().zip(&leaves) {
        merkle::verify_inclusion(leaf, *idx, size, path, &root).expect("proof verifies");
    }
    let ver_secs = start.elapsed().as_secs_f64();
    println!(
        "inclusion proofs at {size} leaves: generate {:.0}/s (RocksDB), verify {:.0}/s; path length {}",
        samples as f64 / gen_secs,
        samples as f64 / ver_secs,
        proofs[0].1.len()
    );
    let start = Instant::now();
    let mut n = 0;
    for old in (1..size).step_by((size / 2_000).max(1) as usize) {
        let p = b.store.consistency_proof(old, size).expect("consistency proof");
        std::hint::black_box(p);
        n += 1;
    }
    println!("consistency proofs at {size} leaves: generate {:.0}/s", n as f64 / start.elapsed().as_secs_f64());
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    sorted_ms[((sorted_ms.len() - 1) as f64 * p).round() as usize]
}

/// The store's part of a trace query and a bundle, for an item of each traced lot, at the
/// log's full size.
fn traces(b: &mut Bench) {
    let sales = (0..TRACED_LOTS)
        .map(|i| {
            let item = b.fx.item(&traced_lot(i), 7);
            b.fx.sign("nutri", b.t, RecordBody::Sell(Sell { subjects: vec![item], channel: "web".into() }))
        })
        .collect();
    b.apply(sales);
    let size = b.store.head().log_size;
    let items: Vec<(SubjectId, SubjectId)> =
        (0..TRACED_LOTS).map(|i| (b.fx.item(&traced_lot(i), 7), b.fx.lot_id(&traced_lot(i)))).collect();
    let mut trace_ms = Vec::new();
    let mut chain = 0;
    for _ in 0..10 {
        for (item, lot) in &items {
            let start = Instant::now();
            let mut n = 0;
            for sid in [item, lot] {
                let state = b.store.subject_state(sid).expect("state").expect("traced subject has a state");
                std::hint::black_box(state);
                for id in b.store.subject_record_ids(sid, 0, TRACE_PAGE).expect("chain") {
                    let rec = b.store.record(&id).expect("record").expect("chain names a stored record");
                    std::hint::black_box(rec);
                    n += 1;
                }
            }
            trace_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            chain = n;
        }
    }
    trace_ms.sort_by(f64::total_cmp);
    println!(
        "trace at {size} leaves (store part: 2 states, first pages of the item's and the lot's chains, {chain} records): p50 {:.3} ms, p99 {:.3} ms",
        percentile(&trace_ms, 0.5),
        percentile(&trace_ms, 0.99)
    );
    let header = b.store.header(b.store.head().height).unwrap().unwrap();
    let checkpoint = b.fx.checkpoint(&header);
    let trusted = b.fx.genesis.validator_set();
    let (mut build_ms, mut verify_ms) = (Vec::new(), Vec::new());
    let mut records = 0;
    for _ in 0..5 {
        for (item, _) in &items {
            let start = Instant::now();
            let bundle = b.store.bundle(item, checkpoint.clone()).expect("bundle");
            build_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            let start = Instant::now();
            verify_bundle(&bundle, &trusted).expect("bundle verifies");
            verify_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            records = bundle.records.len();
        }
    }
    build_ms.sort_by(f64::total_cmp);
    verify_ms.sort_by(f64::total_cmp);
    println!(
        "bundle at {size} leaves ({records} records, +3 checkpoint signatures): build p50 {:.3} ms, p99 {:.3} ms (RocksDB); verify p50 {:.3} ms, p99 {:.3} ms",
        percentile(&build_ms, 0.5),
        percentile(&build_ms, 0.99),
        percentile(&verify_ms, 0.5),
        percentile(&verify_ms, 0.99)
    );
}

fn bundle_verification(b: &mut Bench) {
    // An item with 20 records in its trace: its lot's issuance and 18 inspections, plus
    // a sale of the item itself.
    let lot = "BUNDLE";
    b.apply(vec![b.fx.sign("nutri", b.t, b.fx.issue_range(lot, 100))]);
    for k in 0..18 {
        b.n += 1;
        let r = b.fx.sign_nonce("ccic-au", b.t, b.n, b.fx.passed_inspection(vec![b.fx.lot_id(lot)], 1_000_000_000 + k));
        b.apply(vec![r]);
    }
    let item = b.fx.item(lot, 5);
    b.apply(vec![b.fx.sign(
        "nutri",
        b.t,
        RecordBody::Sell(Sell { subjects: vec![item.clone()], channel: "web".into() }),
    )]);
    let header = b.store.header(b.store.head().height).unwrap().unwrap();
    let bundle = b.store.bundle(&item, b.fx.checkpoint(&header)).expect("bundle");
    assert_eq!(bundle.records.len(), 20);
    let trusted = b.fx.genesis.validator_set();
    let runs = 2_000;
    let start = Instant::now();
    for _ in 0..runs {
        verify_bundle(&bundle, &trusted).expect("bundle verifies");
    }
    let per = start.elapsed().as_secs_f64() / runs as f64;
    println!(
        "bundle of 20 records (+3 checkpoint signatures), {} bytes JSON: verify in {:.3} ms",
        bundle.to_json().len(),
        per * 1000.0
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if let Ok(dir) = std::env::var("VERITRACE_BENCH_CHECK_DIR") {
        let genesis =
            std::env::var("VERITRACE_BENCH_CHECK_GENESIS").expect("VERITRACE_BENCH_CHECK_GENESIS=genesis.json");
        return check_existing(&dir, &genesis);
    }
    let leaves: u64 = std::env::var("VERITRACE_BENCH_LEAVES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let mut b = Bench::new();
    apply_throughput(&mut b);
    bundle_verification(&mut b);
    apply_breakdown(&mut b);
    proofs(&mut b, leaves);
    traces(&mut b);
    full_verification(&b);
}

/// The check on open, on the whole ledger: every record, header, block and index.
fn full_verification(b: &Bench) {
    let head = b.store.head();
    let times = b.store.verify(Verification::Full).expect("the ledger verifies").expect("a full check is timed");
    println!("full verification at {} leaves, height {}: {times}", head.log_size, head.height);
}

/// The full check of a ledger already on disk, three times.
fn check_existing(dir: &str, genesis: &str) {
    let text = std::fs::read_to_string(genesis).unwrap_or_else(|e| panic!("read {genesis}: {e}"));
    let genesis = veritrace_ledger::org::Genesis::from_json(&text).unwrap_or_else(|e| panic!("{genesis}: {e}"));
    let backend = RocksBackend::open(std::path::Path::new(dir)).unwrap_or_else(|e| panic!("open {dir}: {e}"));
    let opts = OpenOptions { verification: Verification::Quick, ..Default::default() };
    let store = Store::open(backend, &genesis.ledger_id, opts).expect("open the ledger");
    let head = store.head();
    for run in 1..=3 {
        let times = store.verify(Verification::Full).expect("the ledger verifies").expect("a full check is timed");
        println!("full check {run} of {dir} ({} records, height {}): {times}", head.log_size, head.height);
    }
}
