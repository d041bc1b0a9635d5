//! The ledger store: key layout, atomic block commits, indexes, queries, proofs and the
//! integrity check on open, over a [`Backend`] (RocksDB, or memory in tests).
//!
//! Every key starts with the ledger id (length byte, then the id), so one database can
//! hold several ledgers (DESIGN.md §9). One block is one atomic batch (synced, unless the
//! store is [`Durability::LogBacked`]): the block,
//! its header, receipts, records, log and state-map nodes, state values and every index
//! move together or not at all. Bounded in-memory copies (module `cache`) of the upper
//! log levels and of what the last blocks wrote serve apply and proofs; the integrity check
//! reads past them.

use crate::apply::{self, ApplyError};
use crate::block::{Block, BlockHeader, Checkpoint, CheckpointSignature, StoredBlock, StoredRecord};
use crate::cache::{LogTop, RecentSmtNodes, RecentStates};
use crate::codec;
use crate::hash::{Hash32, StorageError};
use crate::ids::{Gtin, SubjectId};
use crate::kv::{Backend, Batch, Cf, PointInTime, Staged, Stager};
use crate::merkle::{self, LogNodeStore};
use crate::org::{Genesis, LedgerId, OrgId};
use crate::record::{RecordId, SignedRecord};
use crate::smt::{self, SmtNode, SmtNodeStore, SmtProof};
use crate::snapshot::{SnapshotError, SnapshotReader, SnapshotWriter};
use crate::state::{StateKey, StateValue, SubjectState};
use crate::view::{Head, Issuance, LedgerView, RangeBucket, RangeIssuance, Receipt, WriteSet};

/// Version of the on-disk layout, kept under `meta/format`.
/// Format 2 keeps a block's accepted records by id (format 1 kept them twice), and
/// receipts of rejections only.
pub const STORE_FORMAT: u32 = 2;
/// Key (under `meta`) of the replication layer's opaque metadata.
const REPLICATION_META_KEY: &[u8] = b"replication";
/// Key (under `meta`) present while a snapshot install is under way: a store holding it
/// refuses to open (see [`Store::install_staged`]).
const INSTALLING_KEY: &[u8] = b"installing";
/// Bytes of keys and values in one batch written by a snapshot install (the deletes of the
/// old copy): what it holds in memory at once, whatever the ledger's size.
pub const SNAPSHOT_BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest page a paged query returns.
pub const PAGE_MAX: u32 = 1_000;
pub use crate::cache::{LOG_CACHE_NODES_MAX, SMT_CACHE_NODES_MAX, STATE_CACHE_ENTRIES_MAX};

mod verify;
pub use verify::CheckTimes;

/// Store failures: the backend, corrupt data, or a ledger that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("store does not verify: {0}")]
    Integrity(String),
    #[error("store holds ledger {found:?} (genesis {found_genesis}), not {expected:?} (genesis {expected_genesis})")]
    WrongLedger { found: String, found_genesis: String, expected: String, expected_genesis: String },
    #[error("store is empty: create it from a genesis first")]
    Empty,
    #[error(
        "store format {found}, this build reads format {expected}: rebuild the node's data (wipe it and let it catch up from its peers)"
    )]
    Format { found: String, expected: u32 },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(
        "a snapshot install into this store was interrupted, so it holds part of a ledger: wipe the node's data and let it catch up from its peers"
    )]
    InstallInterrupted,
}

fn corrupt(what: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt { what: what.into(), reason: reason.to_string() }
}

/// Units of a lot held by one organisation in one status (see [`Store::recall_impact`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holding {
    pub custodian: OrgId,
    pub status: crate::state::Status,
    pub units: u64,
}

/// How much to check when opening a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Check every column family the node serves against the head: the chain of headers
    /// and blocks, the Merkle log re-derived from every record, every state entry, index,
    /// receipt, checkpoint signature, state-map node and state value (module `verify`).
    /// Linear in the size of the ledger, streaming: memory is bounded by a page and a block.
    Full,
    /// Check the head against the latest header and the stored roots against the nodes
    /// under them: O(log n).
    Quick,
}

/// When a block's batch reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every block (and checkpoint signature) is synced before the store returns: the
    /// store is the only copy.
    Synced,
    /// Blocks applied with replication metadata ([`Store::apply_block_with_meta`]) and
    /// checkpoint signatures are written without waiting for the disk. For a store behind a
    /// synced replicated log (the node's Raft log, synced before any entry is applied): a
    /// power failure may lose the last blocks, and the replication metadata written in the
    /// same batches says which, so they are applied again from the log — as etcd applies
    /// its WAL to a backend it commits lazily. A killed process loses nothing.
    LogBacked,
}

/// Options for [`Store::open`].
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    pub verification: Verification,
    pub durability: Durability,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { verification: Verification::Full, durability: Durability::Synced }
    }
}

/// A ledger on a backend.
pub struct Store<B: Backend> {
    backend: B,
    prefix: Vec<u8>,
    head: Head,
    log_top: LogTop,
    smt_recent: RecentSmtNodes,
    states_recent: RecentStates,
    durability: Durability,
    /// What the last full check (on open, or after a snapshot install) took.
    last_full_check: Option<CheckTimes>,
}

fn ledger_prefix(id: &LedgerId) -> Vec<u8> {
    let mut p = vec![id.as_str().len() as u8];
    p.extend_from_slice(id.as_str().as_bytes());
    p
}

/// A length-prefixed string, so prefixes of one name never match another name.
fn lenpref(s: &str) -> Vec<u8> {
    let mut v = len16(s).to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// The length prefix of [`lenpref`].
fn len16(s: &str) -> [u8; 2] {
    (s.len() as u16).to_be_bytes()
}

impl<B: Backend> Store<B> {
    /// Creates a ledger from `genesis` on an empty backend, or opens the one already there
    /// if it was made from the same genesis.
    pub fn create(backend: B, genesis: &Genesis, opts: OpenOptions) -> Result<Store<B>, StoreError> {
        let prefix = ledger_prefix(&genesis.ledger_id);
        refuse_interrupted_install(&backend, &prefix)?;
        if backend.get(Cf::Meta, &[prefix.as_slice(), b"head"].concat())?.is_some() {
            let store = Store::open(backend, &genesis.ledger_id, opts)?;
            let stored = store.genesis_hash()?;
            if stored != genesis.hash() {
                return Err(StoreError::WrongLedger {
                    found: genesis.ledger_id.to_string(),
                    found_genesis: stored.to_hex(),
                    expected: genesis.ledger_id.to_string(),
                    expected_genesis: genesis.hash().to_hex(),
                });
            }
            return Ok(store);
        }
        let mem = NoNodes;
        let ws = apply::genesis_writes(&mem, genesis)?;
        let head = ws.head.clone().expect("genesis writes set the head");
        let mut store = Store::with_caches_empty(backend, prefix, head, opts.durability);
        let mut batch = store.batch_for(&ws);
        batch.put(Cf::Meta, store.k(b"genesis"), codec::encode(genesis));
        batch.put(Cf::Meta, store.k(b"format"), STORE_FORMAT.to_be_bytes().to_vec());
        store.backend.write(batch)?;
        store.states_recent.extend(ws.states);
        store.smt_recent.extend(ws.smt_nodes);
        Ok(store)
    }

    fn with_caches_empty(backend: B, prefix: Vec<u8>, head: Head, durability: Durability) -> Store<B> {
        Store {
            backend,
            prefix,
            head,
            log_top: LogTop::default(),
            smt_recent: RecentSmtNodes::default(),
            states_recent: RecentStates::default(),
            durability,
            last_full_check: None,
        }
    }

    /// Opens an existing ledger and checks it verifies; refuses it with the reason if not.
    pub fn open(backend: B, ledger: &LedgerId, opts: OpenOptions) -> Result<Store<B>, StoreError> {
        let prefix = ledger_prefix(ledger);
        refuse_interrupted_install(&backend, &prefix)?;
        let head_bytes = backend.get(Cf::Meta, &[prefix.as_slice(), b"head"].concat())?.ok_or(StoreError::Empty)?;
        let head: Head = codec::decode("head", &head_bytes).map_err(|e| corrupt("head", e))?;
        let format = backend.get(Cf::Meta, &[prefix.as_slice(), b"format"].concat())?;
        let format = format.as_deref().and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
        if format != Some(STORE_FORMAT) {
            let found = format.map(|f| f.to_string()).unwrap_or_else(|| "missing".into());
            return Err(StoreError::Format { found, expected: STORE_FORMAT });
        }
        let mut store = Store::with_caches_empty(backend, prefix, head, opts.durability);
        store.last_full_check = store.verify(opts.verification)?;
        store.load_caches()?;
        Ok(store)
    }

    /// Fills the in-memory caches ([`crate::cache`]) once the backend has verified: the upper
    /// levels of the log. The state-map and state caches start empty and fill as blocks
    /// commit.
    fn load_caches(&mut self) -> Result<(), StoreError> {
        self.smt_recent = RecentSmtNodes::default();
        self.states_recent = RecentStates::default();
        if let Some(v) = self.get_decoded(Cf::States, &codec::encode(&StateKey::Validators), "state")? {
            self.states_recent.pin_validators(v);
        }
        let size = self.head.log_size;
        let max_nodes = self.log_top.max_nodes();
        let min_level = LogTop::min_level_for(size, max_nodes);
        let mut levels = Vec::new();
        for level in min_level..64 {
            let count = size >> level;
            if count == 0 {
                break;
            }
            let p = self.k(&[level]);
            let mut nodes: Vec<Hash32> = Vec::with_capacity(count as usize);
            let mut start = p.clone();
            'scan: loop {
                let page = self.backend.scan(Cf::LogNodes, &p, &start, 4096)?;
                let Some((last, _)) = page.last().cloned() else { break };
                for (k, v) in page {
                    // Keep the prefix of the level that has no gap; reads past it go to the
                    // backend, which reports a missing node as before.
                    let index = k[p.len()..].try_into().ok().map(u64::from_be_bytes);
                    if index != Some(nodes.len() as u64) || nodes.len() as u64 >= count {
                        break 'scan;
                    }
                    nodes.push(hash_from(&v, "log node")?);
                }
                start = [last.as_slice(), &[0u8]].concat();
            }
            levels.push(nodes);
        }
        self.log_top = LogTop::new(max_nodes, min_level, levels);
        Ok(())
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The backend, for reading. Writing to it directly would bypass the store's caches
    /// (module `cache`): the store must be reopened after such a write.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn k(&self, rest: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), rest].concat()
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        match self.backend.get(cf, &self.k(key))? {
            None => Ok(None),
            Some(b) => codec::decode(what, &b).map(Some).map_err(|e| corrupt(what, e)),
        }
    }

    pub fn genesis(&self) -> Result<Genesis, StoreError> {
        self.get_decoded(Cf::Meta, b"genesis", "genesis")?.ok_or_else(|| corrupt("genesis", "missing"))
    }

    pub fn genesis_hash(&self) -> Result<Hash32, StoreError> {
        Ok(self.genesis()?.hash())
    }

    /// Applies a block and commits its writes atomically. Returns the header and receipts.
    pub fn apply_block(&mut self, block: &Block) -> Result<(BlockHeader, Vec<Receipt>), StoreError> {
        self.apply_and_commit(block, None)
    }

    /// Like [`Store::apply_block`], and stores `replication_meta` (an opaque blob of the
    /// replication layer, e.g. the last applied Raft log id) in the same atomic batch, so a
    /// crash can never separate the two.
    pub fn apply_block_with_meta(
        &mut self,
        block: &Block,
        replication_meta: &[u8],
    ) -> Result<(BlockHeader, Vec<Receipt>), StoreError> {
        self.apply_and_commit(block, Some(replication_meta))
    }

    fn apply_and_commit(
        &mut self,
        block: &Block,
        replication_meta: Option<&[u8]>,
    ) -> Result<(BlockHeader, Vec<Receipt>), StoreError> {
        let ws = apply::apply_block(self, block)?;
        let mut batch = self.batch_for(&ws);
        if let Some(m) = replication_meta {
            batch.put(Cf::Meta, self.k(REPLICATION_META_KEY), m.to_vec());
            batch = self.replayable(batch);
        }
        self.backend.write(batch)?;
        // Committed: the caches take what the block wrote, by move.
        let WriteSet { header, head, receipts, states, log_nodes, smt_nodes, .. } = ws;
        let head = head.expect("apply sets the head");
        self.log_top.extend(&log_nodes, head.log_size);
        self.smt_recent.extend(smt_nodes);
        self.states_recent.extend(states);
        self.head = head;
        Ok((header.expect("apply sets the header"), receipts))
    }

    /// `batch` as this store writes what can be made again from elsewhere (a synced log,
    /// the other validators): unsynced when [`Durability::LogBacked`].
    fn replayable(&self, batch: Batch) -> Batch {
        match self.durability {
            Durability::Synced => batch,
            Durability::LogBacked => batch.without_sync(),
        }
    }

    /// Stores the replication layer's opaque metadata on its own.
    pub fn save_replication_meta(&self, replication_meta: &[u8]) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.put(Cf::Meta, self.k(REPLICATION_META_KEY), replication_meta.to_vec());
        self.backend.write(b)?;
        Ok(())
    }

    /// The replication metadata last stored, if any.
    pub fn replication_meta(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.backend.get(Cf::Meta, &self.k(REPLICATION_META_KEY))?)
    }

    /// The ledger as it is now, to export as a snapshot stream (module [`crate::snapshot`],
    /// what a new or far-behind node installs) while this store goes on taking blocks: the
    /// store is held only while the view is taken (on RocksDB a checkpoint: hard links and a
    /// copy of the write-ahead log since the last flush, whatever the ledger's size; run
    /// [`Store::prepare_snapshot_view`] first, without the store, and the copy is short).
    /// The view's head and replication metadata are those of the data in it. See
    /// [`SnapshotView::export_to`].
    pub fn snapshot_view(&self) -> Result<SnapshotView<B::View>, StoreError>
    where
        B: PointInTime,
    {
        Ok(SnapshotView {
            backend: self.backend.point_in_time()?,
            prefix: self.prefix.clone(),
            head: self.head.clone(),
        })
    }

    /// The slow part of [`Store::snapshot_view`], to run first while blocks go on being
    /// applied: the caller holds the store only to get it, not to run it (on RocksDB it
    /// flushes the memtables, seconds at a million records, so the write-ahead log the view
    /// copies is short).
    pub fn prepare_snapshot_view(&self) -> crate::kv::PrepareView
    where
        B: PointInTime,
    {
        self.backend.prepare_view()
    }

    /// Opens a store on `backend` holding the snapshot read from `input` (replacing
    /// whatever copy of `ledger` it held) plus `replication_meta`, as
    /// [`Store::install_snapshot_from`] does.
    pub fn import_snapshot_from(
        backend: B,
        ledger: &LedgerId,
        input: &mut dyn std::io::Read,
        replication_meta: &[u8],
    ) -> Result<Store<B>, StoreError> {
        ingest_snapshot(&backend, SnapshotStager::new(&backend, ledger)?.stage(input)?, replication_meta)?;
        Store::open(backend, ledger, OpenOptions::default())
    }

    /// Replaces this ledger with the snapshot stream read from `input` (made by
    /// [`SnapshotView::export_to`] on some node) and stores `replication_meta` with it,
    /// then checks it in full: [`Store::snapshot_stager`], then [`Store::install_staged`].
    pub fn install_snapshot_from(
        &mut self,
        input: &mut dyn std::io::Read,
        replication_meta: &[u8],
    ) -> Result<(), StoreError> {
        let staged = self.snapshot_stager()?.stage(input)?;
        self.install_staged(staged, replication_meta)
    }

    /// A stager of snapshot streams of this ledger: it reads a stream and writes it apart
    /// from the store ([`SnapshotStager::stage`]), on any thread, while the store goes on
    /// serving and applying; [`Store::install_staged`] then makes it the ledger.
    pub fn snapshot_stager(&self) -> Result<SnapshotStager, StoreError> {
        SnapshotStager::new(&self.backend, &self.head.ledger_id)
    }

    /// Replaces this ledger with a staged snapshot and stores `replication_meta` with it,
    /// then checks it in full: a snapshot whose data do not match its own roots is refused.
    /// Checking those roots against a complete checkpoint is
    /// [`Store::verify_against_checkpoint`].
    ///
    /// The staged load is ingested ([`Backend::ingest`]: on RocksDB, sorted table files),
    /// not atomically: an install marker goes down first, with the old head removed; the
    /// head, the replication metadata and the removal of the marker go in the last batch,
    /// after the ingest. A crash or a failure in between leaves a store that refuses to open
    /// ([`StoreError::InstallInterrupted`]) rather than a part of a ledger. On a refusal
    /// the store must not serve: the caller stops or installs another snapshot. (A stream
    /// that is cut short or altered is refused earlier, by the stager, and changes nothing.)
    pub fn install_staged(&mut self, staged: StagedSnapshot, replication_meta: &[u8]) -> Result<(), StoreError> {
        if staged.ledger != self.head.ledger_id {
            return Err(StoreError::Snapshot(SnapshotError::WrongLedger {
                found: staged.ledger.as_str().to_string(),
                expected: self.head.ledger_id.as_str().to_string(),
            }));
        }
        self.log_top = LogTop::empty(self.log_top.max_nodes());
        self.smt_recent = RecentSmtNodes::default();
        self.states_recent = RecentStates::default();
        ingest_snapshot(&self.backend, staged, replication_meta)?;
        let head_bytes = self.backend.get(Cf::Meta, &self.k(b"head"))?.ok_or(StoreError::Empty)?;
        self.head = codec::decode("head", &head_bytes).map_err(|e| corrupt("head", e))?;
        self.last_full_check = self.verify(Verification::Full)?;
        self.load_caches()
    }

    /// Checks that this ledger extends `checkpoint`: the checkpoint has a quorum of
    /// `validators`, its header is the stored header at its height, and every later header
    /// links to it by `prev_hash` up to the head. What a node runs after installing a
    /// snapshot, before it serves anything.
    pub fn verify_against_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        validators: &crate::org::ValidatorSet,
    ) -> Result<(), StoreError> {
        let fail = |m: String| Err(StoreError::Integrity(m));
        if let Err(e) = checkpoint.verify(&self.head.ledger_id, validators) {
            return fail(format!("checkpoint at height {}: {e}", checkpoint.header.height));
        }
        let h = checkpoint.header.height;
        if h > self.head.height {
            return fail(format!("checkpoint at height {h} is past the head {}", self.head.height));
        }
        match self.header(h)? {
            Some(stored) if stored == checkpoint.header => {}
            _ => return fail(format!("stored header at height {h} differs from the checkpoint's")),
        }
        let mut prev = checkpoint.header.hash();
        for height in h + 1..=self.head.height {
            let Some(next) = self.header(height)? else { return fail(format!("header {height} is missing")) };
            if next.prev_hash != prev {
                return fail(format!("header {height} does not link to header {}", height - 1));
            }
            prev = next.hash();
        }
        if prev != self.head.header_hash {
            return fail("the head does not match the last header".into());
        }
        Ok(())
    }

    /// Turns a write set into one batch (the on-disk layout is in docs/ledger.md). Keys go in
    /// as parts (the ledger prefix, then the rest) so that nothing is concatenated twice.
    fn batch_for(&self, ws: &WriteSet) -> Batch {
        let p = self.prefix.as_slice();
        let mut b = Batch::default();
        if let Some(h) = &ws.head {
            b.put_parts(Cf::Meta, &[p, b"head"], &[&codec::encode(h)]);
        }
        if let Some(h) = &ws.header {
            b.put_parts(Cf::Headers, &[p, &h.height.to_be_bytes()], &[&codec::encode(h)]);
        }
        if let (Some(h), Some(bytes)) = (&ws.header, &ws.block_bytes) {
            b.put_parts(Cf::Blocks, &[p, &h.height.to_be_bytes()], &[bytes]);
        }
        for a in &ws.accepted {
            // Canonical (log index, signed record): the record's own bytes after its version
            // byte, behind the version byte and the index.
            let index = codec::encode(&a.log_index);
            b.put_parts(Cf::Records, &[p, a.id.as_bytes()], &[&index, codec::as_field(&a.bytes)]);
            b.put_parts(Cf::Positions, &[p, &a.log_index.to_be_bytes()], &[a.id.as_bytes()]);
        }
        for r in &ws.receipts {
            // Only rejections: an accepted record's receipt is its row in `records` (see
            // `Store::receipt`). A duplicate's rejection never replaces the original's.
            match r.outcome {
                crate::view::Outcome::Accepted { .. } => continue,
                crate::view::Outcome::Rejected { code: apply::RejectCode::Duplicate, .. } => continue,
                crate::view::Outcome::Rejected { .. } => {}
            }
            b.put_parts(Cf::Receipts, &[p, r.record_id.as_bytes()], &[&codec::encode(r)]);
        }
        for (level, index, h) in &ws.log_nodes {
            b.put_parts(Cf::LogNodes, &[p, &[*level], &index.to_be_bytes()], &[h.as_bytes()]);
        }
        for (h, node) in &ws.smt_nodes {
            b.put_parts(Cf::SmtNodes, &[p, h.as_bytes()], &[&node.encode_array()]);
        }
        for s in &ws.states {
            b.put_parts(Cf::States, &[p, &s.key_bytes], &[&s.value_bytes]);
            b.put_parts(Cf::StateValues, &[p, s.value_hash.as_bytes()], &[&s.value_bytes]);
        }
        for (subject, seq, id) in &ws.subject_records {
            let subject = subject.to_string();
            b.put_parts(
                Cf::SubjectRecords,
                &[p, &len16(&subject), subject.as_bytes(), &seq.to_be_bytes()],
                &[id.as_bytes()],
            );
        }
        for (org, index, id) in &ws.org_records {
            let org = org.as_str();
            b.put_parts(Cf::OrgRecords, &[p, &len16(org), org.as_bytes(), &index.to_be_bytes()], &[id.as_bytes()]);
        }
        for (code, iss) in &ws.listed_codes {
            b.put_parts(Cf::ListedCodes, &[p, code.to_string().as_bytes()], &[&codec::encode(iss)]);
        }
        for r in &ws.ranges {
            let bucket = range_bucket_key(&r.gtin, &RangeBucket::of_range(&r.range));
            b.put_parts(Cf::Ranges, &[p, &bucket, &codec::encode(&r.range)], &[&codec::encode(r)]);
        }
        for (lot, item) in &ws.lot_items {
            let lot = lot.to_string();
            b.put_parts(Cf::LotItems, &[p, &len16(&lot), lot.as_bytes(), item.to_string().as_bytes()], &[]);
        }
        for (org, s) in &ws.holdings_remove {
            let org = org.as_str();
            b.delete_parts(Cf::Holdings, &[p, &len16(org), org.as_bytes(), s.to_string().as_bytes()]);
        }
        for (org, s) in &ws.holdings_add {
            let org = org.as_str();
            b.put_parts(Cf::Holdings, &[p, &len16(org), org.as_bytes(), s.to_string().as_bytes()], &[]);
        }
        b
    }

    // ---- queries -------------------------------------------------------------------

    pub fn header(&self, height: u64) -> Result<Option<BlockHeader>, StoreError> {
        self.get_decoded(Cf::Headers, &height.to_be_bytes(), "header")
    }

    /// The block at `height` as it was applied, rejected records included.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let what = || format!("block {height}");
        let Some(bytes) = self.backend.get(Cf::Blocks, &self.k(&height.to_be_bytes()))? else {
            return Ok(None);
        };
        let stored: StoredBlock = codec::decode("block", &bytes).map_err(|e| corrupt(what(), e))?;
        let mut records = Vec::with_capacity(stored.records.len());
        for r in stored.records {
            records.push(match r {
                StoredRecord::Logged(id) => {
                    self.record(&id)?.ok_or_else(|| corrupt(what(), format!("record {id} is not in the log")))?.1
                }
                StoredRecord::Inline(b) => SignedRecord::from_bytes(&b).map_err(|e| corrupt(what(), e))?,
            });
        }
        Ok(Some(Block { height: stored.height, time_ms: stored.time_ms, proposer: stored.proposer, records }))
    }

    /// An accepted record and its log index.
    pub fn record(&self, id: &RecordId) -> Result<Option<(u64, SignedRecord)>, StoreError> {
        self.get_decoded(Cf::Records, id.as_bytes(), "record")
    }

    pub fn record_id_at(&self, log_index: u64) -> Result<Option<RecordId>, StoreError> {
        match self.backend.get(Cf::Positions, &self.k(&log_index.to_be_bytes()))? {
            None => Ok(None),
            Some(b) => Ok(Some(hash_from(&b, "position")?)),
        }
    }

    /// The latest receipt of a record: accepted, with the block that logged it, if the log
    /// holds it; else its last rejection, if any. Accepted receipts are not stored apart:
    /// the record's row gives its log index, and the headers' log sizes give the block.
    pub fn receipt(&self, id: &RecordId) -> Result<Option<Receipt>, StoreError> {
        if let Some(log_index) = LedgerView::record_position(self, id)? {
            let height = self.height_logging(log_index)?;
            return Ok(Some(Receipt { record_id: *id, height, outcome: crate::view::Outcome::Accepted { log_index } }));
        }
        self.get_decoded(Cf::Receipts, id.as_bytes(), "receipt")
    }

    /// The height of the block that appended log entry `index`: the first header whose log
    /// size is past it, by binary search over the headers (O(log height) reads).
    fn height_logging(&self, index: u64) -> Result<u64, StoreError> {
        if index >= self.head.log_size {
            return Err(corrupt("records", format!("log index {index} is past the log size {}", self.head.log_size)));
        }
        // The answer lies in [lo, hi]: the head's log is past `index`, genesis (0) logs nothing.
        let (mut lo, mut hi) = (1, self.head.height);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let header = self.header(mid)?.ok_or_else(|| corrupt("headers", format!("header {mid} is missing")))?;
            if header.log_size > index {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    pub fn state_value(&self, key: &StateKey) -> Result<Option<StateValue>, StoreError> {
        if let Some(v) = self.states_recent.get(key) {
            return Ok(Some(v.clone()));
        }
        self.get_decoded(Cf::States, &codec::encode(key), "state")
    }

    pub fn subject_state(&self, id: &SubjectId) -> Result<Option<SubjectState>, StoreError> {
        Ok(match self.state_value(&StateKey::Subject(id.clone()))? {
            Some(StateValue::Subject(s)) => Some(s),
            _ => None,
        })
    }

    /// A state value by its hash, as it was at any past root.
    pub fn state_value_by_hash(&self, h: &Hash32) -> Result<Option<StateValue>, StoreError> {
        self.get_decoded(Cf::StateValues, h.as_bytes(), "state value")
    }

    /// The value of `key` in the state map with root `root`, with its proof.
    pub fn state_at(&self, root: &Hash32, key: &StateKey) -> Result<(Option<StateValue>, SmtProof), StoreError> {
        let proof = smt::prove(self, *root, &key.map_key()).map_err(|e| corrupt("state map", e))?;
        let value = match &proof.leaf {
            Some((k, vh)) if *k == key.map_key() => {
                Some(self.state_value_by_hash(vh)?.ok_or_else(|| corrupt("state value", format!("{vh} missing")))?)
            }
            _ => None,
        };
        Ok((value, proof))
    }

    /// Record ids of a subject's chain, from sequence number `from`, at most `limit`.
    pub fn subject_record_ids(&self, id: &SubjectId, from: u64, limit: u32) -> Result<Vec<RecordId>, StoreError> {
        let p = self.k(&lenpref(&id.to_string()));
        let start = [p.as_slice(), &from.to_be_bytes()].concat();
        self.backend
            .scan(Cf::SubjectRecords, &p, &start, limit.min(PAGE_MAX) as usize)?
            .into_iter()
            .map(|(_, v)| hash_from(&v, "subject record"))
            .collect()
    }

    /// Log indexes and ids of an organisation's records, from log index `from`.
    pub fn org_record_ids(&self, org: &OrgId, from: u64, limit: u32) -> Result<Vec<(u64, RecordId)>, StoreError> {
        let p = self.k(&lenpref(org.as_str()));
        let start = [p.as_slice(), &from.to_be_bytes()].concat();
        self.backend
            .scan(Cf::OrgRecords, &p, &start, limit.min(PAGE_MAX) as usize)?
            .into_iter()
            .map(|(k, v)| {
                let idx = k[k.len() - 8..]
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt("org record key", "short"))?;
                Ok((idx, hash_from(&v, "org record")?))
            })
            .collect()
    }

    /// Items of a lot that have entries of their own, after `after` (exclusive), paged.
    pub fn lot_items(
        &self,
        lot: &SubjectId,
        after: Option<&SubjectId>,
        limit: u32,
    ) -> Result<Vec<SubjectId>, StoreError> {
        self.names_under(Cf::LotItems, &lot.to_string(), after, limit)
    }

    /// Subjects an organisation holds in its own name (lots, detached items, units).
    pub fn holdings(&self, org: &OrgId, after: Option<&SubjectId>, limit: u32) -> Result<Vec<SubjectId>, StoreError> {
        self.names_under(Cf::Holdings, org.as_str(), after, limit)
    }

    fn names_under(
        &self,
        cf: Cf,
        owner: &str,
        after: Option<&SubjectId>,
        limit: u32,
    ) -> Result<Vec<SubjectId>, StoreError> {
        let p = self.k(&lenpref(owner));
        let mut start = p.clone();
        if let Some(a) = after {
            start.extend_from_slice(a.to_string().as_bytes());
            start.push(0);
        }
        self.backend
            .scan(cf, &p, &start, limit.min(PAGE_MAX) as usize)?
            .into_iter()
            .map(|(k, _)| {
                let s = std::str::from_utf8(&k[p.len()..]).map_err(|e| corrupt("index key", e))?;
                s.parse::<SubjectId>().map_err(|e| corrupt("index key", e))
            })
            .collect()
    }

    /// Who holds the units of a lot now, and how many each: the lot's custodian holds the
    /// units that never left the lot; items with custody of their own count for their
    /// custodian. Sold units count under the seller with `sold`. O(items with entries).
    pub fn recall_impact(&self, lot: &SubjectId) -> Result<Vec<Holding>, StoreError> {
        let Some(lot_state) = self.subject_state(lot)? else {
            return Err(StoreError::NotFound(format!("lot {lot}")));
        };
        let mut by: std::collections::BTreeMap<(OrgId, crate::state::Status), u64> = Default::default();
        if lot_state.units > 0 {
            *by.entry((lot_state.custodian.clone(), lot_state.status())).or_default() += lot_state.units;
        }
        let mut after: Option<SubjectId> = None;
        loop {
            let page = self.lot_items(lot, after.as_ref(), PAGE_MAX)?;
            let Some(last) = page.last().cloned() else { break };
            for item in page {
                let st = self
                    .subject_state(&item)?
                    .ok_or_else(|| corrupt("lot items index", format!("{item} has no state")))?;
                if st.detached {
                    // A recall or hold of the lot covers the item too.
                    let effective = SubjectState { regulatory: st.regulatory.max(lot_state.regulatory), ..st };
                    *by.entry((effective.custodian.clone(), effective.status())).or_default() += 1;
                }
            }
            after = Some(last);
        }
        Ok(by.into_iter().map(|((custodian, status), units)| Holding { custodian, status, units }).collect())
    }

    /// Where a code was issued (list or range), if it was.
    pub fn issuance(&self, code: &SubjectId) -> Result<Option<Issuance>, StoreError> {
        if let Some(i) = self.listed_code(code)? {
            return Ok(Some(i));
        }
        if let SubjectId::Item { gtin, serial } = code {
            let bucket = RangeBucket::of_serial(serial.as_str());
            return Ok(self
                .bucket_ranges(gtin, &bucket)?
                .into_iter()
                .find(|r| r.range.contains(serial))
                .map(|r| r.issuance));
        }
        Ok(None)
    }

    pub fn inclusion_proof(&self, log_index: u64, log_size: u64) -> Result<Vec<Hash32>, StoreError> {
        merkle::inclusion_proof(self, log_index, log_size).map_err(|e| corrupt("merkle log", e))
    }

    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash32>, StoreError> {
        merkle::consistency_proof(self, old_size, new_size).map_err(|e| corrupt("merkle log", e))
    }

    // ---- checkpoints ---------------------------------------------------------------

    /// Stores a validator's signature on the header at `height` (not checked here: the
    /// caller verifies it against the validator's key first).
    pub fn put_checkpoint_signature(&self, height: u64, sig: &CheckpointSignature) -> Result<(), StoreError> {
        let mut b = Batch::default();
        let key = [height.to_be_bytes().as_slice(), sig.node_id.as_str().as_bytes()].concat();
        b.put(Cf::CheckpointSigs, self.k(&key), codec::encode(sig));
        // Gathered again from the validators if a power failure loses it.
        self.backend.write(self.replayable(b))?;
        Ok(())
    }

    /// The header at `height` with every signature gathered for it.
    pub fn checkpoint(&self, height: u64) -> Result<Option<Checkpoint>, StoreError> {
        let Some(header) = self.header(height)? else { return Ok(None) };
        let p = self.k(&height.to_be_bytes());
        let signatures = self
            .backend
            .scan(Cf::CheckpointSigs, &p, &p, 1024)?
            .into_iter()
            .map(|(_, v)| codec::decode("checkpoint signature", &v).map_err(|e| corrupt("checkpoint signature", e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Checkpoint { header, signatures }))
    }

    // ---- integrity -----------------------------------------------------------------

    /// What the last full check of this store (on open, or after a snapshot install) took,
    /// step by step; `None` if it was opened with [`Verification::Quick`].
    pub fn last_full_check(&self) -> Option<&CheckTimes> {
        self.last_full_check.as_ref()
    }

    /// Checks the stored ledger against its own head; see [`Verification`]. Reads the
    /// database itself, never the in-memory caches. Returns how long each step of a full
    /// check took (`None` for a quick one).
    pub fn verify(&self, level: Verification) -> Result<Option<CheckTimes>, StoreError> {
        let head = &self.head;
        let fail = |m: String| Err(StoreError::Integrity(m));
        if head.height > 0 {
            let Some(h) = self.header(head.height)? else {
                return fail(format!("header {} of the head is missing", head.height));
            };
            if h.hash() != head.header_hash
                || h.log_root != head.log_root
                || h.state_root != head.state_root
                || h.log_size != head.log_size
            {
                return fail(format!("header {} does not match the head", head.height));
            }
        }
        let root = merkle::root_at(&OnDisk(self), head.log_size)
            .map_err(|e| StoreError::Integrity(format!("merkle log: {e}")))?;
        if root != head.log_root {
            return fail(format!("log root from stored nodes is {root}, head says {}", head.log_root));
        }
        if head.state_root != Hash32::ZERO {
            match OnDisk(self).smt_node(&head.state_root)? {
                Some(n) if n.hash() == head.state_root => {}
                Some(_) => return fail(format!("state-map root node {} does not hash to its key", head.state_root)),
                None => return fail(format!("state-map root node {} is missing", head.state_root)),
            }
        }
        if level == Verification::Quick {
            return Ok(None);
        }
        self.verify_full().map(Some)
    }
}

/// Refuses a store whose last snapshot install did not finish.
fn refuse_interrupted_install<B: Backend>(backend: &B, prefix: &[u8]) -> Result<(), StoreError> {
    match backend.get(Cf::Meta, &[prefix, INSTALLING_KEY].concat())? {
        Some(_) => Err(StoreError::InstallInterrupted),
        None => Ok(()),
    }
}

/// The ledger as it was when [`Store::snapshot_view`] took it.
pub struct SnapshotView<V: Backend> {
    backend: V,
    prefix: Vec<u8>,
    head: Head,
}

impl<V: Backend> SnapshotView<V> {
    /// The head of the ledger in the view.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The replication metadata stored with the blocks in the view (see
    /// [`Store::apply_block_with_meta`]), if any: read from the view, where it was written
    /// in the same batch as the data, so it names exactly the blocks the view holds.
    pub fn replication_meta(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let key = [self.prefix.as_slice(), REPLICATION_META_KEY].concat();
        Ok(self.backend.get(Cf::Meta, &key)?)
    }

    /// Writes every entry of the ledger in the view to `out` as a snapshot stream, row by
    /// row through one cursor per column family ([`Backend::rows`]), in the order the
    /// stream requires (column families in the order of [`Cf::ALL`], keys increasing: the
    /// backend's scan order), so memory stays bounded whatever the ledger's size. Returns
    /// the bytes written.
    pub fn export_to(&self, out: &mut dyn std::io::Write) -> Result<u64, StoreError> {
        let mut w = SnapshotWriter::start(out, &self.head.ledger_id)?;
        let prefix = self.prefix.as_slice();
        let key = |rest: &[u8]| [prefix, rest].concat();
        let skip = [key(REPLICATION_META_KEY), key(INSTALLING_KEY)];
        for cf in Cf::ALL {
            let mut rows = self.backend.rows(cf, prefix)?;
            while let Some((k, v)) = rows.next_row()? {
                // The installing node writes its own replication metadata.
                if cf == Cf::Meta && skip.iter().any(|s| s == k) {
                    continue;
                }
                w.entry(cf, &k[prefix.len()..], v)?;
            }
        }
        Ok(w.finish()?)
    }
}

/// Bytes of entries in one part handed to the stager.
const LOAD_PART_BYTES: usize = 4 * 1024 * 1024;
/// Parts read ahead of the stager, at most: what staging holds in memory beyond the
/// stager's own buffers.
const LOAD_PARTS_QUEUED: usize = 4;

/// Reads snapshot streams of one ledger into loads staged apart from its store (see
/// [`Store::snapshot_stager`]).
pub struct SnapshotStager {
    ledger: LedgerId,
    stager: Box<dyn Stager>,
}

/// A snapshot stream read whole, its hash checked, and written apart from the store,
/// waiting for [`Store::install_staged`]. Dropped, it leaves nothing behind.
pub struct StagedSnapshot {
    ledger: LedgerId,
    /// The stream's head entry, written last by the install.
    head: Vec<u8>,
    load: Staged,
}

impl SnapshotStager {
    fn new<B: Backend>(backend: &B, ledger: &LedgerId) -> Result<SnapshotStager, StoreError> {
        Ok(SnapshotStager { ledger: ledger.clone(), stager: backend.stager()? })
    }

    /// Reads the whole stream from `input`, refusing one that is cut short, altered, out of
    /// order or of another ledger, and stages its entries. Two stages, one thread each:
    /// this one reads, decodes and hashes the stream; the stager writes (on RocksDB, the
    /// table files). Changes nothing in the store.
    pub fn stage(self, input: &mut dyn std::io::Read) -> Result<StagedSnapshot, StoreError> {
        let SnapshotStager { ledger, stager } = self;
        let mut reader = SnapshotReader::start(input, &ledger)?;
        let prefix = ledger_prefix(&ledger);
        let [head_key, installing_key, meta_key] = install_keys(&prefix);
        let (head, load) = std::thread::scope(|scope| -> Result<(Vec<u8>, Staged), StoreError> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(LOAD_PARTS_QUEUED);
            let stage = scope.spawn(move || stager.stage(&mut rx.into_iter()));
            let read = (|| -> Result<Vec<u8>, StoreError> {
                let mut head = None;
                let mut batch = Batch::default();
                let (mut k, mut rest, mut v) = (prefix.clone(), Vec::new(), Vec::new());
                while let Some(cf) = reader.next_into(&mut rest, &mut v)? {
                    k.truncate(prefix.len());
                    k.extend_from_slice(&rest);
                    if cf == Cf::Meta && k == head_key {
                        head = Some(v.clone());
                    } else if cf == Cf::Meta && (k == installing_key || k == meta_key) {
                        // Never exported; the installer's own are written by the install.
                    } else {
                        batch.put_parts(cf, &[&k], &[&v]);
                        if batch.bytes() >= LOAD_PART_BYTES && tx.send(std::mem::take(&mut batch)).is_err() {
                            // The stager failed; its error is the one to report.
                            return Ok(Vec::new());
                        }
                    }
                }
                let head = head.ok_or_else(|| corrupt("snapshot", "no head"))?;
                let _ = tx.send(batch);
                Ok(head)
            })();
            // Closing the channel ends the stager's parts, whatever the reader met.
            drop(tx);
            let staged = stage.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            // The reader's error first: a refused stream drops what was staged of it.
            let head = read?;
            Ok((head, staged?))
        })?;
        Ok(StagedSnapshot { ledger, head, load })
    }
}

/// The `meta` keys under `prefix` a snapshot install treats apart: the head, the install
/// marker and the replication metadata.
fn install_keys(prefix: &[u8]) -> [Vec<u8>; 3] {
    [b"head".as_slice(), INSTALLING_KEY, REPLICATION_META_KEY].map(|k| [prefix, k].concat())
}

/// Replaces every entry of the staged snapshot's ledger on `backend` with the staged
/// load, the head last (see [`Store::install_staged`]).
fn ingest_snapshot<B: Backend>(backend: &B, staged: StagedSnapshot, replication_meta: &[u8]) -> Result<(), StoreError> {
    let StagedSnapshot { ledger, head, load } = staged;
    let prefix = ledger_prefix(&ledger);
    let [head_key, installing_key, meta_key] = install_keys(&prefix);

    let mut batch = Batch::default();
    batch.put(Cf::Meta, installing_key.clone(), Vec::new());
    batch.delete(Cf::Meta, head_key.clone());
    backend.write(batch)?;

    // Deletes and the ingest go unsynced; until the last batch lands, the marker refuses
    // the store whatever of them reached the disk.
    let mut batch = Batch::default();
    for cf in Cf::ALL {
        let mut rows = backend.rows(cf, &prefix)?;
        while let Some((k, _)) = rows.next_row()? {
            if cf != Cf::Meta || k != installing_key {
                batch.delete_parts(cf, &[k]);
            }
            if batch.bytes() >= SNAPSHOT_BATCH_BYTES_MAX {
                backend.write(std::mem::take(&mut batch).without_sync())?;
            }
        }
    }
    backend.write(batch.without_sync())?;
    backend.ingest(load)?;

    let mut batch = Batch::default();
    batch.put(Cf::Meta, head_key, head);
    batch.put(Cf::Meta, meta_key, replication_meta.to_vec());
    batch.delete(Cf::Meta, installing_key);
    backend.write(batch)?;
    Ok(())
}

/// Key prefix of a range bucket: gtin14, serial length, stem length, stem.
fn range_bucket_key(gtin: &Gtin, bucket: &RangeBucket) -> Vec<u8> {
    let mut k = gtin.as_str().as_bytes().to_vec();
    k.push(bucket.serial_len);
    k.extend_from_slice(&lenpref(&bucket.stem));
    k
}

/// The log index in a row of the records column family. The row is canonical `(log index,
/// record)`: the version byte, then the index. Reading just that avoids decoding the record on
/// the hot duplicate check.
fn position_in_row(id: &RecordId, row: &[u8]) -> Result<u64, StorageError> {
    let index: [u8; 8] = row
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StorageError(format!("record {id}: value of {} bytes is too short", row.len())))?;
    Ok(u64::from_be_bytes(index))
}

fn log_key(level: u8, index: u64) -> Vec<u8> {
    let mut k = vec![level];
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn hash_from(b: &[u8], what: &str) -> Result<Hash32, StoreError> {
    let a: [u8; 32] = b.try_into().map_err(|_| corrupt(what, format!("expected 32 bytes, got {}", b.len())))?;
    Ok(Hash32(a))
}

/// An empty node store, for building the genesis state map.
struct NoNodes;

impl LogNodeStore for NoNodes {
    fn log_node(&self, _: u8, _: u64) -> Result<Option<Hash32>, StorageError> {
        Ok(None)
    }
}

impl SmtNodeStore for NoNodes {
    fn smt_node(&self, _: &Hash32) -> Result<Option<SmtNode>, StorageError> {
        Ok(None)
    }
}

/// The store's nodes as the backend holds them, past the caches: what the integrity check
/// reads, so that it checks the database itself.
struct OnDisk<'a, B: Backend>(&'a Store<B>);

impl<B: Backend> LogNodeStore for OnDisk<'_, B> {
    fn log_node(&self, level: u8, index: u64) -> Result<Option<Hash32>, StorageError> {
        let s = self.0;
        match s.backend.get(Cf::LogNodes, &s.k(&log_key(level, index)))? {
            None => Ok(None),
            Some(b) => hash_from(&b, "log node").map(Some).map_err(|e| StorageError(e.to_string())),
        }
    }
}

impl<B: Backend> SmtNodeStore for OnDisk<'_, B> {
    fn smt_node(&self, hash: &Hash32) -> Result<Option<SmtNode>, StorageError> {
        let s = self.0;
        match s.backend.get(Cf::SmtNodes, &s.k(hash.as_bytes()))? {
            None => Ok(None),
            Some(b) => SmtNode::decode(&b).map(Some).map_err(|e| StorageError(format!("state-map node {hash}: {e}"))),
        }
    }
}

impl<B: Backend> LogNodeStore for Store<B> {
    fn log_node(&self, level: u8, index: u64) -> Result<Option<Hash32>, StorageError> {
        match self.log_top.get(level, index) {
            Some(h) => Ok(Some(h)),
            None => OnDisk(self).log_node(level, index),
        }
    }

    /// The cached upper levels from memory, the rest in one batched read.
    fn log_nodes(&self, nodes: &[(u8, u64)]) -> Result<Vec<Option<Hash32>>, StorageError> {
        let mut out: Vec<Option<Hash32>> = nodes.iter().map(|&(level, index)| self.log_top.get(level, index)).collect();
        let (at, keys): (Vec<usize>, Vec<Vec<u8>>) = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| out[*i].is_none())
            .map(|(i, &(level, index))| (i, self.k(&log_key(level, index))))
            .unzip();
        if keys.is_empty() {
            return Ok(out);
        }
        let got = self.backend.multi_get(Cf::LogNodes, &keys)?;
        if got.len() != keys.len() {
            return Err(StorageError(format!("asked the backend for {} log nodes, got {}", keys.len(), got.len())));
        }
        for (i, v) in at.into_iter().zip(got) {
            if let Some(b) = v {
                out[i] = Some(hash_from(&b, "log node").map_err(|e| StorageError(e.to_string()))?);
            }
        }
        Ok(out)
    }
}

impl<B: Backend> SmtNodeStore for Store<B> {
    fn smt_node(&self, hash: &Hash32) -> Result<Option<SmtNode>, StorageError> {
        match self.smt_recent.get(hash) {
            Some(node) => Ok(Some(node.clone())),
            None => OnDisk(self).smt_node(hash),
        }
    }
}

impl<B: Backend> LedgerView for Store<B> {
    fn head(&self) -> Result<Head, StorageError> {
        Ok(self.head.clone())
    }

    fn state(&self, key: &StateKey) -> Result<Option<StateValue>, StorageError> {
        self.state_value(key).map_err(|e| StorageError(e.to_string()))
    }

    fn record_position(&self, id: &RecordId) -> Result<Option<u64>, StorageError> {
        let v = self.backend.get(Cf::Records, &self.k(id.as_bytes()))?;
        v.map(|v| position_in_row(id, &v)).transpose()
    }

    /// One batched read. The rows read back are those of records that are in the asking
    /// block too (same bytes), so together they are no larger than the block.
    fn record_positions(&self, ids: &[RecordId]) -> Result<Vec<Option<u64>>, StorageError> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| self.k(id.as_bytes())).collect();
        let rows = self.backend.multi_get(Cf::Records, &keys)?;
        if rows.len() != ids.len() {
            return Err(StorageError(format!("asked the backend for {} records, got {}", ids.len(), rows.len())));
        }
        ids.iter().zip(rows).map(|(id, v)| v.map(|v| position_in_row(id, &v)).transpose()).collect()
    }

    fn listed_code(&self, code: &SubjectId) -> Result<Option<Issuance>, StorageError> {
        self.get_decoded(Cf::ListedCodes, code.to_string().as_bytes(), "issuance")
            .map_err(|e| StorageError(e.to_string()))
    }

    fn listed_serials_with_prefix(
        &self,
        gtin: &Gtin,
        encoded_serial_prefix: &str,
    ) -> Result<Vec<SubjectId>, StorageError> {
        let p = self.k(format!("01/{}/21/{encoded_serial_prefix}", gtin.as_str()).as_bytes());
        let mut out = Vec::new();
        let mut start = p.clone();
        loop {
            let page = self.backend.scan(Cf::ListedCodes, &p, &start, 4096)?;
            let Some((last, _)) = page.last().cloned() else { break };
            for (k, _) in page {
                let s = std::str::from_utf8(&k[self.prefix.len()..])
                    .map_err(|e| StorageError(format!("listed code key: {e}")))?;
                out.push(s.parse().map_err(|e| StorageError(format!("listed code key {s:?}: {e}")))?);
            }
            start = [last.as_slice(), &[0u8]].concat();
        }
        Ok(out)
    }

    fn bucket_ranges(&self, gtin: &Gtin, bucket: &RangeBucket) -> Result<Vec<RangeIssuance>, StorageError> {
        let p = self.k(&range_bucket_key(gtin, bucket));
        self.backend
            .scan(Cf::Ranges, &p, &p, usize::MAX)?
            .into_iter()
            .map(|(_, v)| codec::decode("range issuance", &v).map_err(|e| StorageError(e.to_string())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MemLogStore;
    use crate::testkit::{Fixture, T0_MS};

    /// A store on memory with `blocks` more blocks of `per_block` issuances each.
    fn grow(fx: &Fixture, store: &mut Store<crate::kv::MemBackend>, blocks: u64, per_block: u64) {
        for _ in 0..blocks {
            let h = store.head().height + 1;
            let t = T0_MS + 1_000 * h;
            let recs = (0..per_block).map(|i| fx.sign("nutri", t, fx.issue_range(&format!("B{h}X{i}"), 10))).collect();
            let (_, receipts) = store.apply_block(&fx.block(h, t, recs)).unwrap();
            assert!(receipts.iter().all(|r| matches!(r.outcome, crate::view::Outcome::Accepted { .. })));
        }
    }

    /// The log as the stored records say it is, built without any cache.
    fn reference(store: &Store<crate::kv::MemBackend>) -> MemLogStore {
        let size = store.head().log_size;
        let leaves: Vec<Hash32> =
            (0..size).map(|i| merkle::leaf_hash(store.record_id_at(i).unwrap().unwrap().as_bytes())).collect();
        let mut mem = MemLogStore::new();
        mem.apply(&merkle::append(&mem, 0, &leaves).unwrap());
        mem
    }

    fn assert_serves_the_log(store: &Store<crate::kv::MemBackend>, sizes: &[u64]) {
        let mem = reference(store);
        let size = store.head().log_size;
        for level in 0..10u8 {
            for index in 0..=(size >> level) {
                assert_eq!(store.log_node(level, index).unwrap(), mem.log_node(level, index).unwrap());
            }
        }
        for &n in sizes {
            assert_eq!(merkle::root_at(store, n).unwrap(), merkle::root_at(&mem, n).unwrap(), "root at {n}");
            for i in 0..n {
                assert_eq!(store.inclusion_proof(i, n).unwrap(), merkle::inclusion_proof(&mem, i, n).unwrap());
            }
            for old in 0..=n {
                assert_eq!(store.consistency_proof(old, n).unwrap(), merkle::consistency_proof(&mem, old, n).unwrap());
            }
        }
    }

    #[test]
    fn the_log_cache_serves_what_the_stored_nodes_say() {
        let fx = Fixture::new();
        let mut store = fx.mem_store();
        // A bound of 40 hashes: at 300 leaves the cache holds levels 4 and up, and reads
        // below go to the backend, one batch per proof.
        store.log_top = LogTop::empty(40);
        grow(&fx, &mut store, 12, 25);
        assert_serves_the_log(&store, &[1, 2, 3, 16, 17, 100, 255, 256, 257, 299, 300]);
        // Loaded from the backend, as on open.
        store.load_caches().unwrap();
        assert_serves_the_log(&store, &[5, 64, 200, 300]);
        // Grown past what the bound allowed for the old size: lower levels are dropped.
        grow(&fx, &mut store, 9, 25);
        assert_eq!(store.head().log_size, 525);
        assert_serves_the_log(&store, &[300, 511, 512, 513, 525]);
        // The default bound holds everything of so small a log.
        let mut whole = fx.mem_store();
        grow(&fx, &mut whole, 3, 30);
        assert_eq!(
            whole.log_top.get(0, 89),
            whole.backend.get(Cf::LogNodes, &whole.k(&log_key(0, 89))).unwrap().map(|b| hash_from(&b, "t").unwrap())
        );
        assert_serves_the_log(&whole, &[1, 45, 90]);
    }

    #[test]
    fn the_integrity_check_reads_the_database_not_the_caches() {
        let fx = Fixture::new();
        let mut store = fx.mem_store();
        grow(&fx, &mut store, 2, 4);
        store.verify(Verification::Full).unwrap();
        // Behind the store's back: the level-3 node over leaves 0..8, which the root is folded
        // from and which the log cache holds.
        let key = store.k(&log_key(3, 0));
        let good = store.log_top.get(3, 0).expect("cached");
        let mut b = Batch::default();
        b.put(Cf::LogNodes, key.clone(), vec![7; 32]);
        store.backend.write(b).unwrap();
        let e = store.verify(Verification::Quick).unwrap_err();
        assert!(e.to_string().contains("log root"), "{e}");
        let mut b = Batch::default();
        b.put(Cf::LogNodes, key, good.as_bytes().to_vec());
        store.backend.write(b).unwrap();
        store.verify(Verification::Quick).unwrap();
        // Likewise the state-map root, which the state-map cache holds.
        let root = store.head().state_root;
        assert!(store.smt_recent.get(&root).is_some());
        let mut b = Batch::default();
        b.delete(Cf::SmtNodes, store.k(root.as_bytes()));
        store.backend.write(b).unwrap();
        let e = store.verify(Verification::Quick).unwrap_err();
        assert!(e.to_string().contains("state-map root node") && e.to_string().contains("missing"), "{e}");
    }

    /// A ledger with rows in every column family: a range and a serial list issued, an item
    /// inspected (its own state, in its lot's index) and one shipped (detached: a holding of
    /// its own), a rejected record (a kept receipt), three more blocks, and every validator's
    /// signature on header 2.
    fn rich(fx: &Fixture) -> (Store<crate::kv::MemBackend>, RecordId) {
        use crate::record::{CodeSet, RecordBody, Ship};
        let mut store = fx.mem_store();
        let t = T0_MS + 1_000;
        let mut listed = fx.issue_range("S", 1);
        if let RecordBody::IssueCodes(ic) = &mut listed {
            let serials = ["S-1", "S-2"].map(|s| crate::ids::Serial::parse(s).expect("serial"));
            ic.codes = CodeSet::Serials(serials.to_vec());
        }
        store
            .apply_block(&fx.block(
                1,
                t,
                vec![fx.sign("nutri", t, fx.issue_range("A", 10)), fx.sign("nutri", t, listed)],
            ))
            .unwrap();
        let inspection = fx.passed_inspection(vec![fx.item("A", 3)], 1);
        let ship = RecordBody::Ship(Ship {
            to: fx.org_id("importer"),
            subjects: vec![fx.item("A", 4)],
            location: "Melbourne".into(),
        });
        let again = fx.sign_nonce("nutri", t + 1, 1, fx.issue_range("A", 10));
        let rejected = again.id();
        let block =
            fx.block(2, t + 1, vec![fx.sign("ccic-au", t + 1, inspection), fx.sign("nutri", t + 1, ship), again]);
        let (header, receipts) = store.apply_block(&block).unwrap();
        let accepted = receipts.iter().map(|r| matches!(r.outcome, crate::view::Outcome::Accepted { .. }));
        assert_eq!(accepted.collect::<Vec<_>>(), vec![true, true, false], "{receipts:?}");
        for (node, key) in &fx.validator_keys {
            store.put_checkpoint_signature(2, &header.sign(node.clone(), key)).unwrap();
        }
        grow(fx, &mut store, 3, 2);
        store.verify(Verification::Full).unwrap();
        (store, rejected)
    }

    fn first_key(store: &Store<crate::kv::MemBackend>, cf: Cf, skip: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let rows = store.backend.scan(cf, &store.prefix, &store.prefix, usize::MAX).unwrap();
        rows.into_iter().map(|(k, _)| k).find(|k| !skip(k)).unwrap_or_else(|| panic!("no row in {}", cf.name()))
    }

    /// One byte of the value flipped (the last byte counted from the end by `from_end`).
    fn flip(store: &Store<crate::kv::MemBackend>, cf: Cf, key: &[u8], from_end: usize) -> Option<Vec<u8>> {
        let mut v = store.backend.get(cf, key).unwrap().unwrap_or_else(|| panic!("{} has no such row", cf.name()));
        let n = v.len();
        v[n - from_end] ^= 1;
        Some(v)
    }

    #[test]
    fn every_column_family_is_checked_on_open_and_an_edit_is_named() {
        let fx = Fixture::new();
        // An edit of one row: the column family, its key, the new value (none: deleted), and
        // what the refusal must say.
        type Edit = (Cf, Vec<u8>, Option<Vec<u8>>, Vec<String>);
        // What is edited, and how, given the store and the id of its rejected record.
        type Case = (&'static str, Box<dyn Fn(&Store<crate::kv::MemBackend>, &RecordId) -> Edit>);
        let cases: Vec<Case> = vec![
            (
                "the genesis",
                Box::new(|s, _| {
                    let k = s.k(b"genesis");
                    let mut g = s.genesis().unwrap();
                    g.genesis_time_ms += 1;
                    (
                        Cf::Meta,
                        k,
                        Some(codec::encode(&g)),
                        vec!["headers: header 1: does not link to the genesis (meta)".into()],
                    )
                }),
            ),
            (
                "a header below the head: its log root",
                Box::new(|s, _| {
                    let k = s.k(&2u64.to_be_bytes());
                    (Cf::Headers, k.clone(), flip(s, Cf::Headers, &k, 33), vec!["headers: header 2: log root".into()])
                }),
            ),
            (
                "a header below the head: its receipts hash",
                Box::new(|s, _| {
                    let k = s.k(&3u64.to_be_bytes());
                    let mut h = s.header(3).unwrap().unwrap();
                    h.receipts_hash = Hash32([9; 32]);
                    (
                        Cf::Headers,
                        k,
                        Some(codec::encode(&h)),
                        vec!["headers: header 4: does not link to header 3".into()],
                    )
                }),
            ),
            (
                "a block",
                Box::new(|s, _| {
                    let k = s.k(&2u64.to_be_bytes());
                    (
                        Cf::Blocks,
                        k.clone(),
                        flip(s, Cf::Blocks, &k, 1),
                        vec!["blocks: block 2: its record ids do not hash".into()],
                    )
                }),
            ),
            (
                "a record",
                Box::new(|s, _| {
                    let id = s.record_id_at(2).unwrap().unwrap();
                    let k = s.k(id.as_bytes());
                    let want = format!("records: record at position 2 does not hash to its id {id}");
                    (Cf::Records, k.clone(), flip(s, Cf::Records, &k, 9), vec![want])
                }),
            ),
            (
                "a position",
                Box::new(|s, _| {
                    let other = s.record_id_at(4).unwrap().unwrap();
                    let want = vec!["log_nodes: node (0, 3)".into(), format!("position 3 names record {other}")];
                    (Cf::Positions, s.k(&3u64.to_be_bytes()), Some(other.as_bytes().to_vec()), want)
                }),
            ),
            (
                "a log node",
                Box::new(|s, _| {
                    let k = s.k(&log_key(1, 1));
                    let want = vec!["log_nodes: node (1, 1) is".into(), "the records at positions 2..4".into()];
                    (Cf::LogNodes, k.clone(), flip(s, Cf::LogNodes, &k, 1), want)
                }),
            ),
            (
                "a kept rejection, of an earlier block",
                Box::new(|s, rejected| {
                    let k = s.k(rejected.as_bytes());
                    let mut r = s.receipt(rejected).unwrap().unwrap();
                    r.height = 1;
                    let want =
                        format!("receipts: receipt of record {rejected} is of block 1, but block 2 rejected it since");
                    (Cf::Receipts, k, Some(codec::encode(&r)), vec![want])
                }),
            ),
            (
                "a kept rejection, of a later block",
                Box::new(|s, rejected| {
                    let k = s.k(rejected.as_bytes());
                    let mut r = s.receipt(rejected).unwrap().unwrap();
                    r.height = 4;
                    let want = format!("receipts: receipt of record {rejected} is of block 4, which did not reject it");
                    (Cf::Receipts, k, Some(codec::encode(&r)), vec![want])
                }),
            ),
            (
                "a state",
                Box::new(|s, _| {
                    let k = s.k(&codec::encode(&StateKey::Subject(lot_a())));
                    let want = vec!["states: state entry Subject(".into(), "does not match the state root".into()];
                    (Cf::States, k.clone(), flip(s, Cf::States, &k, 1), want)
                }),
            ),
            (
                "a state entry, gone (the state map holds one more)",
                Box::new(|s, _| {
                    let k = s.k(&codec::encode(&StateKey::Validators));
                    (Cf::States, k, None, vec!["states: state map holds ".into(), " entries, the store ".into()])
                }),
            ),
            (
                "a state value",
                Box::new(|s, _| {
                    let k = first_key(s, Cf::StateValues, |_| false);
                    let want = format!("state_values: value under {}", hex::encode(&k[s.prefix.len()..]));
                    (Cf::StateValues, k.clone(), flip(s, Cf::StateValues, &k, 1), vec![want])
                }),
            ),
            (
                "a state-map node under no current root",
                Box::new(|s, _| {
                    let root = s.k(s.head.state_root.as_bytes());
                    let k = first_key(s, Cf::SmtNodes, |k| *k == root);
                    let want = format!("smt_nodes: value under {}", hex::encode(&k[s.prefix.len()..]));
                    (Cf::SmtNodes, k.clone(), flip(s, Cf::SmtNodes, &k, 1), vec![want])
                }),
            ),
            (
                "a subject's chain",
                Box::new(|s, _| {
                    let lot = lot_a().to_string();
                    let k = s.k(&[lenpref(&lot).as_slice(), &0u64.to_be_bytes()].concat());
                    let want = format!("subject_records: {lot}: 1 entries chaining to");
                    (Cf::SubjectRecords, k.clone(), flip(s, Cf::SubjectRecords, &k, 1), vec![want])
                }),
            ),
            (
                "an organisation's record",
                Box::new(|s, _| {
                    let k = s.k(&[lenpref("nutri").as_slice(), &0u64.to_be_bytes()].concat());
                    let want = "org_records: entry (nutri, 0) is not record".to_string();
                    (Cf::OrgRecords, k.clone(), flip(s, Cf::OrgRecords, &k, 1), vec![want])
                }),
            ),
            (
                "a listed code",
                Box::new(|s, _| {
                    let k = first_key(s, Cf::ListedCodes, |_| false);
                    let want = "listed_codes: code 01/".to_string();
                    (
                        Cf::ListedCodes,
                        k.clone(),
                        flip(s, Cf::ListedCodes, &k, 1),
                        vec![want, "/21/S-1 is not the issuance".into()],
                    )
                }),
            ),
            (
                "an organisation's record that no record makes",
                Box::new(|s, _| {
                    let k = s.k(&[lenpref("nutri").as_slice(), &99u64.to_be_bytes()].concat());
                    let id = s.record_id_at(0).unwrap().unwrap();
                    let want = "org_records: entry (nutri, 99) is made by no record".to_string();
                    (Cf::OrgRecords, k, Some(id.as_bytes().to_vec()), vec![want])
                }),
            ),
            (
                "a listed code that no record issued",
                Box::new(|s, _| {
                    let k = first_key(s, Cf::ListedCodes, |_| false);
                    let value = s.backend.get(Cf::ListedCodes, &k).unwrap();
                    let code = "01/09312345000012/21/S-3";
                    let want = format!("listed_codes: entry {code} is made by no record");
                    (Cf::ListedCodes, s.k(code.as_bytes()), value, vec![want])
                }),
            ),
            (
                "a serial range",
                Box::new(|s, _| {
                    let k = first_key(s, Cf::Ranges, |_| false);
                    (Cf::Ranges, k.clone(), flip(s, Cf::Ranges, &k, 1), vec!["ranges: range SerialRange".into()])
                }),
            ),
            (
                "a lot's item, gone",
                Box::new(|s, _| {
                    let lot = lot_a().to_string();
                    let item = crate::testkit::gtin(crate::testkit::NUTRI_PREFIX, 1);
                    let item = SubjectId::item(item, crate::ids::Serial::parse("A-000003").unwrap()).to_string();
                    let k = s.k(&[lenpref(&lot).as_slice(), item.as_bytes()].concat());
                    (Cf::LotItems, k, None, vec![format!("lot_items: ({lot}, {item}) is missing")])
                }),
            ),
            (
                "a holding that is not one",
                Box::new(|s, _| {
                    let item = crate::testkit::gtin(crate::testkit::NUTRI_PREFIX, 1);
                    let item = SubjectId::item(item, crate::ids::Serial::parse("A-000004").unwrap()).to_string();
                    let k = s.k(&[lenpref("importer").as_slice(), item.as_bytes()].concat());
                    (
                        Cf::Holdings,
                        k,
                        Some(vec![]),
                        vec![format!("holdings: (importer, {item}): the state of {item} says nutri")],
                    )
                }),
            ),
            (
                "a checkpoint signature",
                Box::new(|s, _| {
                    let k = first_key(s, Cf::CheckpointSigs, |_| false);
                    let want = vec!["checkpoint_sigs: signature of".into(), "on header 2: does not verify".into()];
                    (Cf::CheckpointSigs, k.clone(), flip(s, Cf::CheckpointSigs, &k, 1), want)
                }),
            ),
        ];
        let mut covered = std::collections::BTreeSet::new();
        for (what, edit) in &cases {
            let (store, rejected) = rich(&fx);
            let (cf, key, value, want) = edit(&store, &rejected);
            covered.insert(cf);
            let mut b = Batch::default();
            match value {
                Some(v) => b.put(cf, key, v),
                None => b.delete(cf, key),
            }
            store.backend.write(b).unwrap();
            let e = store.verify(Verification::Full).expect_err(what).to_string();
            println!("{what}: {e}");
            assert!(e.starts_with("store does not verify: "), "{what}: {e}");
            for w in &want {
                assert!(e.contains(w.as_str()), "{what}: {e:?} does not say {w:?}");
            }
        }
        assert_eq!(covered.into_iter().collect::<Vec<_>>(), Cf::ALL.to_vec(), "a column family without a case");
    }

    /// Lot `A` of [`rich`].
    fn lot_a() -> SubjectId {
        let gtin = crate::testkit::gtin(crate::testkit::NUTRI_PREFIX, 1);
        SubjectId::lot_of(gtin, crate::ids::Lot::parse("A").expect("lot"))
    }

    #[test]
    fn rows_built_from_record_bytes_are_the_canonical_encodings() {
        let fx = Fixture::new();
        let t = T0_MS + 1_000;
        let mut gov = fx.sign("samr", t, fx.issue_range("G", 1));
        let reg = fx.member("customs-pingtan");
        gov.approve(fx.ledger(), reg.id.clone(), reg.key_id.clone(), &reg.key);
        let plain = fx.sign("nutri", t, fx.issue_range("P", 3));
        for rec in [&plain, &gov] {
            let bytes = rec.to_bytes();
            assert_eq!(
                rec.signing_message_from(fx.ledger(), &bytes),
                crate::record::signing_message(fx.ledger(), &rec.record)
            );
            let mut row = codec::encode(&7u64);
            row.extend_from_slice(codec::as_field(&bytes));
            assert_eq!(row, codec::encode(&(7u64, rec)));
        }
    }

    #[test]
    fn a_store_of_another_format_is_refused_with_both_versions() {
        let fx = Fixture::new();
        let store = fx.mem_store();
        let mut b = Batch::default();
        b.put(Cf::Meta, store.k(b"format"), 1u32.to_be_bytes().to_vec());
        store.backend.write(b).unwrap();
        let Store { backend, .. } = store;
        match Store::open(backend, &fx.genesis.ledger_id, OpenOptions::default()) {
            Err(e @ StoreError::Format { .. }) => {
                assert!(e.to_string().starts_with("store format 1, this build reads format 2"), "{e}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a store of format 1"),
        }
    }

    #[test]
    fn a_stored_block_reads_back_whole_with_its_rejected_records() {
        let fx = Fixture::new();
        let mut store = fx.mem_store();
        let t = T0_MS + 1_000;
        let first = fx.sign("nutri", t, fx.issue_range("P", 3));
        store.apply_block(&fx.block(1, t, vec![first.clone()])).unwrap();
        let accepted = fx.sign("nutri", t + 1, fx.issue_range("Q", 3));
        // The same codes again, in a record of its own: rejected, so the log lacks it.
        let issued_twice = fx.sign("nutri", t + 1, fx.issue_range("P", 3));
        let block = fx.block(2, t + 1, vec![accepted.clone(), issued_twice, accepted, first]);
        let (_, receipts) = store.apply_block(&block).unwrap();
        let kinds: Vec<bool> =
            receipts.iter().map(|r| matches!(r.outcome, crate::view::Outcome::Accepted { .. })).collect();
        assert_eq!(kinds, vec![true, false, false, false], "{receipts:?}");
        assert_eq!(store.block(2).unwrap(), Some(block.clone()));
        assert_eq!(store.block(3).unwrap(), None);

        // Receipts: the accepted one and the rejection as apply gave them; a duplicate's
        // id answers with its original's receipt, from the block that logged it.
        assert_eq!(store.receipt(&receipts[0].record_id).unwrap().as_ref(), Some(&receipts[0]));
        assert_eq!(store.receipt(&receipts[1].record_id).unwrap().as_ref(), Some(&receipts[1]));
        assert_eq!(store.receipt(&receipts[2].record_id).unwrap().as_ref(), Some(&receipts[0]));
        let original = store.receipt(&receipts[3].record_id).unwrap().expect("the first block's record");
        assert_eq!((original.height, &original.outcome), (1, &crate::view::Outcome::Accepted { log_index: 0 }));
        assert_eq!(store.receipt(&Hash32([7; 32])).unwrap(), None);
    }

    #[test]
    fn accepted_receipts_find_their_block_among_many() {
        let fx = Fixture::new();
        let mut store = fx.mem_store();
        let mut expected = Vec::new();
        for h in 1..=37u64 {
            let t = T0_MS + 1_000 * h;
            // Blocks of 0 to 4 records, so that log sizes and heights part ways.
            let recs: Vec<_> =
                (0..h % 5).map(|i| fx.sign("nutri", t, fx.issue_range(&format!("R{h}X{i}"), 2))).collect();
            let (_, receipts) = store.apply_block(&fx.block(h, t, recs)).unwrap();
            expected.extend(receipts);
        }
        for r in &expected {
            assert_eq!(store.receipt(&r.record_id).unwrap().as_ref(), Some(r));
        }
    }

    /// A writer that keeps no bytes: it counts them and the largest single write.
    #[derive(Default)]
    struct Counting {
        bytes: u64,
        writes: u64,
        largest: usize,
    }

    impl std::io::Write for Counting {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len() as u64;
            self.writes += 1;
            self.largest = self.largest.max(buf.len());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A store grown by `blocks` blocks of `per_block` records, and its snapshot stream.
    fn grown_and_exported(fx: &Fixture, blocks: u64, per_block: u64) -> (Store<crate::kv::MemBackend>, Vec<u8>) {
        let mut store = fx.mem_store();
        grow(fx, &mut store, blocks, per_block);
        let snap = exported(&store);
        (store, snap)
    }

    fn exported(store: &Store<crate::kv::MemBackend>) -> Vec<u8> {
        let mut out = Vec::new();
        store.snapshot_view().unwrap().export_to(&mut out).unwrap();
        out
    }

    #[test]
    fn a_snapshot_stream_round_trips_and_replaces_what_was_there() {
        let fx = Fixture::new();
        let (mut source, snap) = grown_and_exported(&fx, 12, 5);

        let mut target = fx.mem_store();
        grow(&fx, &mut target, 3, 2); // an older, different copy: every entry of it goes
        target.install_snapshot_from(&mut &snap[..], b"raft").unwrap();
        assert_eq!(target.head(), source.head());
        assert_eq!(target.replication_meta().unwrap().as_deref(), Some(&b"raft"[..]));
        assert_eq!(exported(&target), snap, "the installed ledger exports the same stream");
        // And it goes on applying from there like the source.
        grow(&fx, &mut target, 1, 3);
        grow(&fx, &mut source, 1, 3);
        assert_eq!(target.head(), source.head());
    }

    #[test]
    fn a_truncated_or_altered_snapshot_is_refused_and_changes_nothing() {
        let fx = Fixture::new();
        let (_, snap) = grown_and_exported(&fx, 6, 4);
        let mut flipped = snap.clone();
        flipped[snap.len() / 2] ^= 0x01;
        let cases: [(&str, &[u8]); 3] =
            [("truncated", &snap[..snap.len() - 1]), ("cut in half", &snap[..snap.len() / 2]), ("flipped", &flipped)];
        for (what, bad) in cases {
            let mut store = fx.mem_store();
            grow(&fx, &mut store, 1, 2);
            let before = store.head().clone();
            let e = store.install_snapshot_from(&mut &bad[..], b"raft").unwrap_err();
            assert!(matches!(e, StoreError::Snapshot(_)), "{what}: {e}");
            // Refused while staging, before the store was touched: it opens as it was.
            assert_eq!(store.head(), &before, "{what}");
            let Store { backend, .. } = store;
            let store = Store::open(backend, fx.ledger(), OpenOptions::default()).expect(what);
            assert_eq!(store.head(), &before, "{what}");
        }
        let backend = crate::kv::MemBackend::default();
        let e = Store::create(backend, &fx.genesis, OpenOptions::default()).and_then(|mut s| {
            s.install_snapshot_from(&mut &snap[..snap.len() - 40], b"")?;
            Ok(s)
        });
        assert!(e.err().unwrap().to_string().contains("truncated at byte"));
    }

    /// A backend whose ingest fails, as a full disk would, after the install removed the
    /// old ledger.
    struct FailingIngest(crate::kv::MemBackend);

    impl Backend for FailingIngest {
        fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            self.0.get(cf, key)
        }
        fn scan(&self, cf: Cf, prefix: &[u8], start: &[u8], limit: usize) -> Result<crate::kv::Entries, StorageError> {
            self.0.scan(cf, prefix, start, limit)
        }
        fn write(&self, batch: Batch) -> Result<(), StorageError> {
            self.0.write(batch)
        }
        fn ingest(&self, _staged: Staged) -> Result<(), StorageError> {
            Err(StorageError("no space left on device".into()))
        }
    }

    #[test]
    fn an_install_that_fails_once_the_old_ledger_is_gone_leaves_a_store_that_will_not_open() {
        let fx = Fixture::new();
        let (_, snap) = grown_and_exported(&fx, 3, 2);
        let mut store = Store::create(FailingIngest(Default::default()), &fx.genesis, OpenOptions::default()).unwrap();
        let e = store.install_snapshot_from(&mut &snap[..], b"raft").unwrap_err();
        assert!(e.to_string().contains("no space left on device"), "{e}");
        let Store { backend, .. } = store;
        let e = Store::open(backend.0, fx.ledger(), OpenOptions::default()).err();
        assert_eq!(e, Some(StoreError::InstallInterrupted));
    }

    #[test]
    fn a_snapshot_staged_on_another_thread_while_the_store_applies_is_installed_whole() {
        let fx = Fixture::new();
        let (source, snap) = grown_and_exported(&fx, 6, 4);
        let mut target = fx.mem_store();
        let stager = target.snapshot_stager().unwrap();
        let staging = std::thread::spawn(move || stager.stage(&mut &snap[..]));
        grow(&fx, &mut target, 2, 3);
        let staged = staging.join().unwrap().unwrap();
        assert_eq!(target.head().height, 2, "staging changed nothing in the store");
        target.install_staged(staged, b"raft").unwrap();
        assert_eq!(target.head(), source.head());
        assert_eq!(target.replication_meta().unwrap().as_deref(), Some(&b"raft"[..]));
    }

    #[test]
    fn export_writes_through_without_holding_the_snapshot() {
        let fx = Fixture::new();
        let mut store = fx.mem_store();
        grow(&fx, &mut store, 40, 25);
        let mut out = Counting::default();
        let bytes = store.snapshot_view().unwrap().export_to(&mut out).unwrap();
        assert_eq!(bytes, out.bytes);
        // The stream reached the writer in many pieces no larger than the buffer, so no
        // copy of it was built first.
        assert!(out.bytes > 4 * crate::snapshot::SNAPSHOT_BUFFER_BYTES as u64, "{} bytes", out.bytes);
        assert!(out.largest <= crate::snapshot::SNAPSHOT_BUFFER_BYTES, "a write of {} bytes", out.largest);
        assert!(out.writes >= out.bytes / crate::snapshot::SNAPSHOT_BUFFER_BYTES as u64);
    }
}
