//! Storage faults (issue 8) with real `veritrace-node` processes through devnet: a torn
//! tail of the RocksDB write-ahead logs after kill -9, and a value edited on disk or a bit
//! flipped in a table file while the node is down (docs/faults.md, "Storage faults").
//!
//! A node's data directory holds `ledger/` (the ledger's RocksDB), `raft/` (the Raft log's
//! RocksDB) and `snapshots/`. The faults are made on those files with the node stopped,
//! exactly as a crash or a hand edit would leave them.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veritrace_devnet::Network;
use veritrace_ledger::kv::{Backend, Batch, Cf, RocksBackend};
use veritrace_ledger::record::SignedRecord;
use veritrace_tests::load::{Acked, complaints, has_all, last_run_log, refusal, start_load};
use veritrace_tests::{WAIT, agree, commit, issue, log_purged, network};

// ---- RocksDB's write-ahead log ----------------------------------------------------------

/// RocksDB's WAL format (`db/log_format.h`): 32 KiB blocks of physical records, each behind
/// a header of crc32c (4 bytes), payload length (u16, little-endian) and type (1 byte),
/// plus a 4-byte log number for the recyclable types. A block's last bytes, too few for a
/// header, are zero padding. A logical record (one write batch) is one FULL physical record
/// or FIRST, MIDDLE..., LAST.
const WAL_BLOCK_BYTES: usize = 32 * 1024;
const WAL_HEADER_BYTES: usize = 7;
const WAL_RECYCLABLE_HEADER_BYTES: usize = 11;
const WAL_ZERO: u8 = 0;
const WAL_FULL: u8 = 1;
const WAL_FIRST: u8 = 2;
const WAL_LAST: u8 = 4;
const WAL_RECYCLABLE_FULL: u8 = 5;
const WAL_RECYCLABLE_FIRST: u8 = 6;
const WAL_RECYCLABLE_LAST: u8 = 8;

fn wal_header_bytes(record_type: u8) -> usize {
    match record_type {
        5..=8 | 11 | 131 => WAL_RECYCLABLE_HEADER_BYTES,
        _ => WAL_HEADER_BYTES,
    }
}

/// The newest WAL file (`NNNNNN.log`, the highest number) of the RocksDB in `db_dir`: the
/// one the node was writing when it died.
fn newest_wal(db_dir: &Path) -> PathBuf {
    let mut wals: Vec<(u64, PathBuf)> = std::fs::read_dir(db_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", db_dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
        .collect();
    wals.sort();
    wals.pop().unwrap_or_else(|| panic!("no WAL file in {}", db_dir.display())).1
}

/// Where a WAL's data ends and where its last complete logical record lies.
struct WalTail {
    bytes: Vec<u8>,
    /// End of the last physical record (trailing zeros of preallocation excluded).
    data_end: usize,
    /// The last complete logical record, headers included.
    last_record: Range<usize>,
}

fn wal_tail(path: &Path) -> WalTail {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut pos = 0usize;
    let mut data_end = 0usize;
    let mut start = None;
    let mut last_record = None;
    while pos < bytes.len() {
        let left = WAL_BLOCK_BYTES - pos % WAL_BLOCK_BYTES;
        if left < WAL_HEADER_BYTES {
            pos += left;
            continue;
        }
        if pos + WAL_HEADER_BYTES > bytes.len() {
            break;
        }
        let length = u16::from_le_bytes([bytes[pos + 4], bytes[pos + 5]]) as usize;
        let record_type = bytes[pos + 6];
        if record_type == WAL_ZERO && length == 0 {
            break;
        }
        let end = pos + wal_header_bytes(record_type) + length;
        if end > bytes.len() {
            break;
        }
        if matches!(record_type, WAL_FULL | WAL_FIRST | WAL_RECYCLABLE_FULL | WAL_RECYCLABLE_FIRST) {
            start = Some(pos);
        }
        if matches!(record_type, WAL_FULL | WAL_LAST | WAL_RECYCLABLE_FULL | WAL_RECYCLABLE_LAST)
            && let Some(s) = start.take()
        {
            last_record = Some(s..end);
        }
        pos = end;
        data_end = end;
    }
    let last_record = last_record.unwrap_or_else(|| {
        panic!(
            "{} holds no complete record ({} bytes): nothing was written since the node's start",
            path.display(),
            bytes.len()
        )
    });
    WalTail { bytes, data_end, last_record }
}

/// How a WAL's tail is torn.
#[derive(Clone, Copy, Debug)]
enum Tear {
    /// A record half written when the process died: a header and half of its payload
    /// after the last complete record (a copy of the first half of the last record, so it
    /// looks like a real one). What kill -9 in the middle of a write leaves, and nothing
    /// acknowledged is lost: a write is acknowledged only once it is synced whole.
    PartialRecord,
    /// 4 KiB of random bytes after the last record, as a file system that grew the file
    /// before its data reached the disk leaves it after a power cut.
    Garbage,
    /// The last record cut in the middle: its second half is gone. Harsher than kill -9,
    /// which cannot lose a write that was synced (and every write here is synced before it
    /// is acknowledged): this is a disk losing the node's last acknowledged write (a Raft
    /// append, a vote, an applied block or a checkpoint signature). Raft cannot survive
    /// that in general — a follower that forgets an append it acknowledged can help elect
    /// a leader without the entry — so it is made only on a follower while the leader,
    /// which holds the entry, lives: the node must then take it again from the leader.
    CutLastRecord,
}

/// RocksDB 11.8.1 loops forever recovering a WAL in which a header it reads has a
/// recyclable record type (5–8, 11, 131) in a log that is not recycled: `ReadPhysicalRecord`
/// returns `kBadRecord` without consuming the header, and `ReadRecord` asks again (found
/// by this test: the node hung in "open and verify the ledger"; docs/faults.md). Recovery
/// reads a header where the garbage begins and at each block start inside it (a bad header
/// drops the rest of its block), so those type bytes get their high bit flipped; the rest
/// stays random. Every tear remains garbage RocksDB must refuse to replay.
fn avoid_rocksdb_recyclable_loop(bytes: &mut [u8], garbage_start: usize) {
    let block_starts = (garbage_start / WAL_BLOCK_BYTES + 1..).map(|k| k * WAL_BLOCK_BYTES);
    let end = bytes.len();
    for header in std::iter::once(garbage_start).chain(block_starts).take_while(|h| h + 6 < end) {
        if wal_header_bytes(bytes[header + 6]) == WAL_RECYCLABLE_HEADER_BYTES {
            bytes[header + 6] ^= 0x80;
        }
    }
}

/// Tears the newest WAL of the RocksDB in `db_dir`; returns what was done, for the output.
fn tear_wal(db_dir: &Path, tear: Tear, seed: u64) -> String {
    let path = newest_wal(db_dir);
    let tail = wal_tail(&path);
    let mut bytes = tail.bytes[..tail.data_end].to_vec();
    let rec = tail.last_record.clone();
    let first_type = tail.bytes[rec.start + 6];
    let first_len = u16::from_le_bytes([tail.bytes[rec.start + 4], tail.bytes[rec.start + 5]]) as usize;
    let first_fragment = wal_header_bytes(first_type) + first_len;
    match tear {
        Tear::PartialRecord => {
            // A writer starts a header only where one fits in the block; the partial record
            // stays inside the block, as the first fragment of a real one would.
            let left = WAL_BLOCK_BYTES - bytes.len() % WAL_BLOCK_BYTES;
            if left < WAL_HEADER_BYTES + 1 {
                bytes.resize(bytes.len() + left, 0);
            }
            let left = WAL_BLOCK_BYTES - bytes.len() % WAL_BLOCK_BYTES;
            let take = (wal_header_bytes(first_type) + first_len / 2).min(left).min(first_fragment - 1);
            bytes.extend_from_slice(&tail.bytes[rec.start..rec.start + take]);
        }
        Tear::Garbage => {
            let start = bytes.len();
            let mut x = seed;
            bytes.extend((0..4096).map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as u8
            }));
            avoid_rocksdb_recyclable_loop(&mut bytes, start);
        }
        Tear::CutLastRecord => {
            bytes.truncate(rec.start + (wal_header_bytes(first_type) + first_len / 2).min(rec.len() - 1));
        }
    }
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    format!(
        "{}: {tear:?} (data {} bytes, last record {}..{}, now {} bytes)",
        path.display(),
        tail.data_end,
        rec.start,
        rec.end,
        bytes.len()
    )
}

// ---- torn WAL tails ----------------------------------------------------------------------

/// kill -9 of `target` under load, its ledger's and its Raft log's WALs torn, a restart:
/// it must start, catch up, agree, and hold every record acknowledged before the kill.
async fn torn_tail_round(net: &Arc<Network>, target: &str, tear: Tear, round: u64) {
    let nodes = net.node_ids();
    let others: Vec<String> = nodes.iter().filter(|n| *n != target).cloned().collect();
    let load = start_load(net, &others, &format!("T{round}"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    net.kill(target).expect("kill -9");
    // The others go on committing (after an election, if the target led).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.finish().await;
    assert!(!acked.is_empty(), "round {round}: the load committed nothing");

    let data = net.data_dir(target).expect("data dir");
    let ledger = tear_wal(&data.join("ledger"), tear, round);
    let raft = tear_wal(&data.join("raft"), tear, round + 1_000);
    println!("round {round}: {target} torn: {ledger}; {raft}");

    let t = Instant::now();
    if let Err(e) = net.start(target) {
        panic!("round {round}: {target} refused to start after a torn WAL tail ({tear:?}): {e:#}");
    }
    // It serves: a record submitted through it is committed.
    commit(net, target, &issue(net, &format!("T{round}after"), 0)).await;
    let s = agree(net, &nodes).await;
    has_all(net, target, &acked).await;
    println!(
        "round {round}: {target} ({tear:?}) back and agreeing in {:.2} s at height {} with {} records acknowledged \
         around the kill; its complaints: {:#?}",
        t.elapsed().as_secs_f64(),
        s.height,
        acked.len(),
        complaints(net, target)
    );
    assert!(!last_run_log(net, target).contains("panicked"), "{target} panicked after a torn WAL tail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_wal_tail_after_kill_9_recovers_to_the_cluster_state() {
    let net = Arc::new(network(3, 0, None));
    let nodes = net.node_ids();
    let follower = |net: &Network| {
        let leader = net.wait_for_leader(WAIT).expect("a leader");
        nodes.iter().find(|n| **n != leader).expect("a follower").clone()
    };
    let target = follower(&net);
    torn_tail_round(&net, &target, Tear::PartialRecord, 1).await;
    let target = follower(&net);
    torn_tail_round(&net, &target, Tear::Garbage, 2).await;
    let leader = net.wait_for_leader(WAIT).expect("a leader");
    torn_tail_round(&net, &leader, Tear::PartialRecord, 3).await;
    let target = follower(&net);
    torn_tail_round(&net, &target, Tear::CutLastRecord, 4).await;
}

// ---- a value edited on disk --------------------------------------------------------------

/// Edits the value of `cf` under the first key `pick` accepts, in the ledger RocksDB of a
/// stopped node; returns the key and the value it had.
fn edit_value(db: &Path, cf: Cf, pick: impl Fn(&[u8]) -> bool, edit: impl Fn(&mut Vec<u8>)) -> (Vec<u8>, Vec<u8>) {
    let backend = RocksBackend::open(db).expect("open the ledger store");
    let (key, value) = backend
        .scan(cf, &[], &[], usize::MAX)
        .expect("scan")
        .into_iter()
        .find(|(k, _)| pick(k))
        .unwrap_or_else(|| panic!("nothing to edit in {}", cf.name()));
    let mut edited = value.clone();
    edit(&mut edited);
    assert_ne!(edited, value);
    let mut batch = Batch::default();
    batch.put(cf, key.clone(), edited);
    backend.write(batch).expect("write the edit");
    (key, value)
}

/// The table files of the ledger RocksDB in `db` of a stopped node, by column family,
/// after writing every memtable out and compacting each column family into one file: what
/// the node had only in its write-ahead log is in a table file too, and every read of a
/// column family reads its file.
///
/// Automatic compactions are off while the files are listed: opening replays the
/// write-ahead log into a new level-0 file, and a fourth one starts a compaction that
/// deletes the files just listed (which failed this test on CI, in `checkpoint_sigs`).
fn flushed_table_files(db: &Path) -> Vec<(String, PathBuf)> {
    let mut opts = rocksdb::Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_disable_auto_compactions(true);
    let raw = rocksdb::DB::open_cf(&opts, db, Cf::ALL.iter().map(|c| c.name())).expect("open the ledger's rocksdb");
    // Files side by side in the bottom level are rewritten too, not only overlapping ones.
    let mut all = rocksdb::CompactOptions::default();
    all.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
    for c in Cf::ALL {
        let cf = raw.cf_handle(c.name()).expect("column family");
        raw.flush_cf(&cf).expect("flush");
        raw.compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &all);
    }
    let files = raw.live_files().expect("live files");
    for c in Cf::ALL {
        let n = files.iter().filter(|f| f.column_family_name == c.name()).count();
        assert!(n <= 1, "{} has {n} table files after a full compaction: {files:?}", c.name());
    }
    files.into_iter().map(|f| (f.column_family_name, db.join(f.name.trim_start_matches('/')))).collect()
}

/// Flips a bit of one byte of `file` (the one `at` picks from its bytes), starts `node`,
/// which must refuse, and puts the byte back; returns the log of that run.
fn refused_with_bit_flipped(net: &Network, node: &str, file: &Path, at: impl Fn(&[u8]) -> usize) -> String {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let mut flipped = bytes.clone();
    flipped[at(&bytes)] ^= 0x10;
    std::fs::write(file, &flipped).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    let log = start_refused(net, node);
    std::fs::write(file, &bytes).unwrap_or_else(|e| panic!("put {} back: {e}", file.display()));
    log
}

/// The MANIFEST that `CURRENT` names, in the RocksDB in `db`.
fn live_manifest(db: &Path) -> PathBuf {
    let current = std::fs::read_to_string(db.join("CURRENT")).expect("read CURRENT");
    db.join(current.trim())
}

/// A byte in the middle of the first record's payload of a MANIFEST, which is written in the
/// WAL's format: a bit flipped there fails the record's checksum. (A flip in a header's
/// length could make the record run past the end of the file, which RocksDB takes for a
/// write cut short by a crash, not for damage.)
fn manifest_payload_middle(bytes: &[u8]) -> usize {
    let length = u16::from_le_bytes([bytes[4], bytes[5]]) as usize;
    assert!(length > 0 && WAL_HEADER_BYTES + length <= bytes.len(), "a MANIFEST's first record: {length} bytes");
    WAL_HEADER_BYTES + length / 2
}

fn put_back(db: &Path, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
    let backend = RocksBackend::open(db).expect("open the ledger store");
    let mut batch = Batch::default();
    batch.put(cf, key, value);
    backend.write(batch).expect("write");
}

/// Starts `node`, which must refuse: exit non-zero before serving. Returns the log of that
/// run (its stderr: the error and its causes).
fn start_refused(net: &Network, node: &str) -> String {
    match net.start(node) {
        Ok(()) => panic!("{node} started on an edited ledger"),
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.contains("exited before serving"), "{e}");
            assert!(!e.contains("exit status: 0"), "{node} exited with status 0: {e}");
            last_run_log(net, node)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_edited_on_disk_is_refused_and_the_node_rebuilt_from_its_peers() {
    // A snapshot every 10 blocks: the wiped node is far enough behind to need one.
    let net = network(3, 0, Some(10));
    let nodes = net.node_ids();
    let mut acked = Acked::new();
    let records: Vec<SignedRecord> = (0..40).map(|i| issue(&net, "E", i)).collect();
    for r in &records {
        let receipt = commit(&net, &nodes[(acked.len()) % nodes.len()], r).await;
        acked.push((receipt.record_id.try_into().expect("32-byte id"), receipt.log_index));
    }
    let before = agree(&net, &nodes).await;
    let leader = net.wait_for_leader(WAIT).expect("a leader");
    let target = nodes.iter().find(|n| **n != leader).expect("a follower").clone();
    net.stop(&target).expect("stop");
    let db = net.data_dir(&target).expect("data dir").join("ledger");

    // A stored record value is (log index, signed record), and a signed record ends with
    // its signature (64 bytes) and the number of approvals (u64, none here).
    let victim = records[7].id();
    let signature_byte = |v: &mut Vec<u8>| {
        let n = v.len();
        v[n - 9] ^= 1;
    };
    let approvals_byte = |v: &mut Vec<u8>| {
        let n = v.len();
        v[n - 1] ^= 1;
    };
    let is_victim = |k: &[u8]| k.ends_with(victim.as_bytes());

    // One byte of its signature: the record still decodes but no longer hashes to its id,
    // which the full check on open re-derives for every record.
    let (key, value) = edit_value(&db, Cf::Records, is_victim, signature_byte);
    let log = start_refused(&net, &target);
    assert!(log.contains("does not verify"), "{log}");
    assert!(log.contains(&victim.to_hex()), "the refusal does not name record {victim}: {log}");
    println!("edited record signature: {target} refused to start: {}", refusal(&log));
    put_back(&db, Cf::Records, key, value);

    // The count of its approvals: the value no longer decodes.
    let (key, value) = edit_value(&db, Cf::Records, is_victim, approvals_byte);
    let log = start_refused(&net, &target);
    assert!(log.contains("does not verify") && log.contains("does not decode"), "{log}");
    assert!(log.contains(&victim.to_hex()), "the refusal does not name record {victim}: {log}");
    println!("edited record approvals: {target} refused to start: {}", refusal(&log));
    put_back(&db, Cf::Records, key, value);

    // A header below the head (height 5): the last byte of its log root. The head and the
    // Merkle log are untouched; the full check re-derives the log root at every header's
    // log size.
    let height5 = 5u64.to_be_bytes();
    let (key, value) = edit_value(
        &db,
        Cf::Headers,
        |k| k.ends_with(&height5),
        |v| {
            let n = v.len();
            v[n - 33] ^= 1; // the state root (32 bytes) ends the header, the log root before it
        },
    );
    let log = start_refused(&net, &target);
    assert!(log.contains("does not verify") && log.contains("headers: header 5: log root"), "{log}");
    println!("edited header 5: {target} refused to start: {}", refusal(&log));
    put_back(&db, Cf::Headers, key, value);

    // A checkpoint signature a peer sent: one byte of the signature.
    let (key, value) = edit_value(
        &db,
        Cf::CheckpointSigs,
        |_| true,
        |v| {
            let n = v.len();
            v[n - 1] ^= 1;
        },
    );
    let log = start_refused(&net, &target);
    assert!(
        log.contains("checkpoint_sigs: signature of") && log.contains("does not verify with the validator's key"),
        "{log}"
    );
    println!("edited checkpoint signature: {target} refused to start: {}", refusal(&log));
    put_back(&db, Cf::CheckpointSigs, key, value);

    // A flipped bit in a table file, one column family at a time: the first byte of its
    // first data block. RocksDB's block checksum fails when the check on open reads it,
    // and the refusal names the file and the column family.
    let tables = flushed_table_files(&db);
    let mut refused = BTreeSet::new();
    for (cf, file) in &tables {
        let log = refused_with_bit_flipped(&net, &target, file, |_| 0);
        let name = file.file_name().expect("file name").to_string_lossy();
        assert!(
            log.contains("does not verify") && log.contains(&format!("in {cf}: Corruption")) && log.contains(&*name),
            "a flipped bit in {name} ({cf}): {log}"
        );
        println!("flipped bit in a table file of {cf}: {target} refused to start: {}", refusal(&log));
        refused.insert(cf.as_str());
    }
    // Every column family but those this ledger has no rows in: no rejections, so no
    // `receipts`; no listed codes, no items with entries of their own.
    let empty = [Cf::Receipts, Cf::ListedCodes, Cf::LotItems];
    for cf in Cf::ALL.into_iter().filter(|c| !empty.contains(c)) {
        assert!(refused.contains(cf.name()), "no table file of {} was tried: {tables:?}", cf.name());
    }

    // RocksDB's own files, in both stores: the MANIFEST (the list of live table files) lost,
    // or a bit flipped inside its first record; and CURRENT (the file naming the MANIFEST)
    // lost, which RocksDB would take for a new database and empty the store.
    for store in ["ledger", "raft"] {
        let dir = net.data_dir(&target).expect("data dir").join(store);
        let manifest = live_manifest(&dir);
        let name = manifest.file_name().expect("file name").to_string_lossy().into_owned();
        let aside = manifest.with_extension("aside");
        std::fs::rename(&manifest, &aside).expect("move the MANIFEST aside");
        let log = start_refused(&net, &target);
        assert!(log.contains("No such file") && log.contains(&name), "{store}: lost {name}: {log}");
        println!("lost {store}/{name}: {target} refused to start: {}", refusal(&log));
        std::fs::rename(&aside, &manifest).expect("put the MANIFEST back");

        let log = refused_with_bit_flipped(&net, &target, &manifest, manifest_payload_middle);
        assert!(log.contains("Corruption") && log.contains(&name), "{store}: flipped bit in {name}: {log}");
        println!("flipped bit in {store}/{name}: {target} refused to start: {}", refusal(&log));

        let current = dir.join("CURRENT");
        let kept = std::fs::read(&current).expect("read CURRENT");
        std::fs::remove_file(&current).expect("remove CURRENT");
        let log = start_refused(&net, &target);
        assert!(log.contains("no CURRENT file") && log.contains(&name), "{store}: lost CURRENT: {log}");
        assert!(!current.exists(), "{store}: the refusal wrote a CURRENT");
        println!("lost {store}/CURRENT: {target} refused to start: {}", refusal(&log));
        std::fs::write(&current, kept).expect("put CURRENT back");
    }

    // One byte of a stored state (lot E-3's): it no longer matches the state root.
    edit_value(
        &db,
        Cf::States,
        |k| String::from_utf8_lossy(k).contains("E-3"),
        |v| {
            let n = v.len();
            v[n - 1] ^= 1;
        },
    );
    let log = start_refused(&net, &target);
    assert!(log.contains("does not verify"), "{log}");
    assert!(
        log.contains("state entry") && log.contains("E-3") && log.contains("does not match the state root"),
        "the refusal does not name the state and the root: {log}"
    );
    println!("edited state: {target} refused to start: {}", refusal(&log));

    // Rebuilt from its peers: wiped, started, it installs a snapshot and agrees.
    let installed = |net: &Network| {
        let log = std::fs::read_to_string(net.logs_path(&target).expect("log path")).expect("read node log");
        log.matches("installed ledger snapshot").count()
    };
    let installs_before = installed(&net);
    let others: Vec<String> = nodes.iter().filter(|n| **n != target).cloned().collect();
    log_purged(&net, &others).await;
    net.wipe(&target).expect("wipe");
    let t = Instant::now();
    net.start(&target).expect("a wiped node starts");
    let deadline = Instant::now() + WAIT;
    while installed(&net) == installs_before {
        assert!(Instant::now() < deadline, "{target} did not install a snapshot within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = agree(&net, &nodes).await;
    assert!(after.height >= before.height);
    has_all(&net, &target, &acked).await;
    println!(
        "rebuilt: {target} installed a snapshot and agrees at height {} after {:.2} s; its complaints: {:#?}",
        after.height,
        t.elapsed().as_secs_f64(),
        complaints(&net, &target)
    );
}
