//! The full integrity check a store runs on open ([`super::Verification::Full`]): every column
//! family the node serves is read from the backend itself, past the caches, and checked
//! against what the head commits to, so that a value edited on disk while the node was down
//! stops it at start with the column family and the key that did not verify.
//!
//! Each column family is read once, in key order, a page at a time; memory stays bounded by
//! a page and a block (at most [`crate::block::BLOCK_RECORDS_MAX`] log entries) however
//! large the ledger, and the work is linear in its size (plus a state-map lookup per state
//! entry). What is checked, in order:
//!
//! 1. *Content-addressed nodes and values*: every state-map node (`smt_nodes`) and state
//!    value (`state_values`) hashes to its key, so that any root, past or present, serves
//!    what it committed to.
//! 2. *The chain*: headers 1 to the head (`headers`), each linked to the one before by its
//!    hash (header 1 to the genesis, `meta`), heights contiguous, times and log sizes
//!    non-decreasing; the Merkle log re-derived from the record ids at every position
//!    (`positions`), its root compared with each header's log root at that header's log
//!    size, and every perfect-subtree node the records give compared with the stored one
//!    (`log_nodes`); each header's state-map root node present; each block (`blocks`) of
//!    its header's height, time and proposer, its record ids hashing to the header's records
//!    hash, holding the records its header logs, its other records logged before it
//!    (duplicates) or not at all (rejected, kept inline).
//! 3. *Records* (`records`): each decodes, hashes to its id, and sits at the position that
//!    names it; the organisation index (`org_records`), listed codes (`listed_codes`) and
//!    serial ranges (`ranges`) hold exactly the entries the records make.
//! 4. *States* (`states`): each entry in the state map under the head's root, and nothing
//!    else there; each subject's chain (`subject_records`) of exactly its record count,
//!    folding to its chain hash; the holdings (`holdings`) and lot-items (`lot_items`)
//!    indexes exactly as the states say.
//! 5. *Receipts* (`receipts`): each a rejection of a record its block holds inline, the
//!    latest one.
//! 6. *Checkpoint signatures* (`checkpoint_sigs`): each over the stored header at its height,
//!    by the node its key names, verifying with that validator's key (from the validator set
//!    at that height, else the current one).
//!
//! Not checked, because only a replay of every block could: that the states and indexes
//! are what applying the blocks gives (they are checked against the state root and the
//! records, which the headers commit to), and the code and message of a kept rejection (a
//! header's receipts hash covers all of its block's receipts, of which the store keeps only
//! the last rejection of each record).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{OnDisk, Store, StoreError, hash_from, lenpref, position_in_row, range_bucket_key};
use crate::apply::{self, RejectCode};
use crate::block::{BLOCK_RECORDS_MAX, BlockHeader, CheckpointSignature, StoredBlock, StoredRecord};
use crate::codec;
use crate::hash::Hash32;
use crate::ids::SubjectId;
use crate::kv::{Backend, Cf, Rows};
use crate::merkle::{self, LogNodeStore};
use crate::org::ValidatorSet;
use crate::record::{CodeSet, RecordBody, RecordId, SignedRecord};
use crate::smt::{self, SmtNode, SmtNodeStore};
use crate::state::{StateKey, StateValue, SubjectState, chain_link};
use crate::view::{Issuance, Outcome, RangeBucket, RangeIssuance, Receipt};

/// Rows per page of the small column families.
const PAGE_ROWS: usize = 4096;
/// Rows per page of the records: up to [`crate::record::RECORD_BYTES_MAX`] each, so fewer.
const RECORD_PAGE_ROWS: usize = 512;
/// Levels of the Merkle log (a u64 size has at most 64 set bits).
const LOG_LEVELS: usize = 64;

/// What did not verify, as the store's error: the column family, then where and what.
fn bad(cf: Cf, what: impl std::fmt::Display) -> StoreError {
    StoreError::Integrity(format!("{}: {what}", cf.name()))
}

/// Reads up to `n` rows, handing each to `f`; returns how many it read (fewer than `n` only
/// at the end, 0 past it). For the steps that look up what a page of rows names in one
/// batched read.
fn read_page(
    rows: &mut dyn Rows,
    n: usize,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<usize, StoreError> {
    for read in 0..n {
        let Some((k, v)) = rows.next_row()? else { return Ok(read) };
        f(k, v)?;
    }
    Ok(n)
}

/// The big-endian u64 that ends a key.
fn u64_at_end(key: &[u8]) -> Option<u64> {
    key.len().checked_sub(8).and_then(|at| key[at..].try_into().ok()).map(u64::from_be_bytes)
}

/// `(owner, rest)` of an index key after the ledger prefix: a length-prefixed owner name.
fn split_owner(rest: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let owner = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    Some((owner, &rest[2 + len..]))
}

/// The right edge of the Merkle log as it is re-derived: the perfect subtree at each level
/// whose bit is set in the size. All [`merkle::append`] reads.
struct Frontier {
    size: u64,
    nodes: [Option<Hash32>; LOG_LEVELS],
}

impl LogNodeStore for Frontier {
    fn log_node(&self, level: u8, index: u64) -> Result<Option<Hash32>, crate::hash::StorageError> {
        let l = level as usize;
        let top = self.size >> level;
        Ok(if l < LOG_LEVELS && top & 1 == 1 && index == top - 1 { self.nodes[l] } else { None })
    }
}

/// The log re-derived from the record ids in position order, compared node by node with
/// the stored nodes, which are read level by level in key order alongside.
struct LogCheck<'a> {
    frontier: Frontier,
    levels: Vec<Box<dyn Rows + 'a>>,
    /// Length of a node's key: the ledger prefix, the level, the index.
    key_len: usize,
}

impl<'a> LogCheck<'a> {
    fn new<B: Backend>(store: &'a Store<B>) -> Result<Self, StoreError> {
        let levels = (0..LOG_LEVELS as u8)
            .map(|l| store.backend.rows(Cf::LogNodes, &store.k(&[l])))
            .collect::<Result<_, _>>()?;
        let frontier = Frontier { size: 0, nodes: [None; LOG_LEVELS] };
        Ok(LogCheck { frontier, levels, key_len: store.prefix.len() + 1 + 8 })
    }

    /// Appends the leaves of `ids` and returns the root at the new size.
    fn append(&mut self, ids: &[RecordId]) -> Result<Hash32, StoreError> {
        let leaves: Vec<Hash32> = ids.iter().map(|id| merkle::leaf_hash(id.as_bytes())).collect();
        let app = merkle::append(&self.frontier, self.frontier.size, &leaves)
            .map_err(|e| bad(Cf::LogNodes, format!("re-deriving the log: {e}")))?;
        let size = app.new_size;
        for &(level, index, hash) in &app.nodes {
            let got = match self.levels[level as usize].next_row()? {
                Some((k, v)) if k.len() == self.key_len && u64_at_end(k) == Some(index) => {
                    hash_from(v, "log node").map_err(|e| bad(Cf::LogNodes, format!("({level}, {index}): {e}")))?
                }
                _ => return Err(bad(Cf::LogNodes, format!("node ({level}, {index}) is missing"))),
            };
            if got != hash {
                // A leaf is one position's record id: either may be the edited value.
                let from = index << level;
                let leaf = from.checked_sub(self.frontier.size).and_then(|i| ids.get(i as usize));
                let source = match leaf {
                    Some(id) if level == 0 => format!("position {from} names record {id}, whose leaf is {hash}"),
                    _ => format!("the records at positions {from}..{} give {hash}", (index + 1) << level),
                };
                return Err(bad(Cf::LogNodes, format!("node ({level}, {index}) is {got}; {source}")));
            }
            if size >> level & 1 == 1 && index == (size >> level) - 1 {
                self.frontier.nodes[level as usize] = Some(hash);
            }
        }
        for (l, node) in self.frontier.nodes.iter_mut().enumerate() {
            if size >> l & 1 == 0 {
                *node = None;
            }
        }
        self.frontier.size = size;
        Ok(app.new_root)
    }

    /// No stored node is left past the log.
    fn finish(mut self) -> Result<(), StoreError> {
        for (level, cursor) in self.levels.iter_mut().enumerate() {
            if let Some((k, _)) = cursor.next_row()? {
                let index = u64_at_end(k).map(|i| i.to_string()).unwrap_or_else(|| hex::encode(k));
                return Err(bad(
                    Cf::LogNodes,
                    format!("node ({level}, {index}) is past the log size {}", self.frontier.size),
                ));
            }
        }
        Ok(())
    }
}

/// A multiset of rows as its size and the XOR of a hash of each (key and value), so that
/// what one pass expects a column family to hold and what a scan of it finds compare
/// without either being kept in memory. Against edits and decay, not against a forger: one
/// who can write the disk can rewrite the head too.
#[derive(Default, Clone, PartialEq, Eq)]
struct Fingerprint {
    count: u64,
    xor: [u8; 32],
}

impl Fingerprint {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        let mut h = blake3::Hasher::new();
        h.update(&(key.len() as u64).to_be_bytes());
        h.update(key);
        h.update(value);
        for (a, b) in self.xor.iter_mut().zip(h.finalize().as_bytes()) {
            *a ^= b;
        }
        self.count += 1;
    }
}

/// The column families whose rows the records make, in the order they are compared.
const MADE_BY_RECORDS: [Cf; 4] = [Cf::Positions, Cf::OrgRecords, Cf::ListedCodes, Cf::Ranges];

/// The rows the records make, one fingerprint per column family of [`MADE_BY_RECORDS`].
type Made = [Fingerprint; 4];

/// Checkpoint signatures checked as one ed25519 batch (crate::sigbatch), a few times
/// faster than one at a time; a failed batch is checked one by one to name the bad one.
#[derive(Default)]
struct SignatureBatch {
    /// (node, height) of each signature, for the error.
    signers: Vec<(String, u64)>,
    messages: Vec<Vec<u8>>,
    signatures: Vec<ed25519_dalek::Signature>,
    keys: Vec<ed25519_dalek::VerifyingKey>,
}

impl SignatureBatch {
    fn push(
        &mut self,
        node: String,
        height: u64,
        message: Vec<u8>,
        signature: ed25519_dalek::Signature,
        key: ed25519_dalek::VerifyingKey,
    ) {
        self.signers.push((node, height));
        self.messages.push(message);
        self.signatures.push(signature);
        self.keys.push(key);
    }

    /// Checks the signatures gathered and empties the batch.
    fn check(&mut self) -> Result<(), StoreError> {
        let batch = std::mem::take(self);
        let messages: Vec<&[u8]> = batch.messages.iter().map(Vec::as_slice).collect();
        let good = crate::sigbatch::verify_each(&messages, &batch.signatures, &batch.keys);
        match good.iter().position(|g| !g) {
            None => Ok(()),
            Some(i) => {
                let (node, height) = &batch.signers[i];
                let m = format!("signature of {node} on header {height}: does not verify with the validator's key");
                Err(bad(Cf::CheckpointSigs, m))
            }
        }
    }
}

/// How long each step of a full check took, in the module docs' order, for the log: a node
/// that starts or installs a snapshot serves nothing until the check is done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckTimes {
    /// (step, time spent in it). The two halves run side by side, so the steps add up to
    /// more than [`CheckTimes::total`].
    pub steps: Vec<(&'static str, Duration)>,
    /// From the start of the check to its end.
    pub total: Duration,
}

impl std::fmt::Display for CheckTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} s:", self.total.as_secs_f64())?;
        for (name, took) in &self.steps {
            write!(f, " {name} {:.2} s;", took.as_secs_f64())?;
        }
        Ok(())
    }
}

/// The steps of one half of the check, run one after the other, each timed.
struct Half {
    /// (step in the module's order, its error), once one failed.
    failed: Option<(u8, StoreError)>,
    steps: Vec<(u8, &'static str, Duration)>,
}

impl Half {
    fn new() -> Self {
        Half { failed: None, steps: Vec::new() }
    }

    /// Runs a step unless one before it failed; returns its value.
    fn step<T>(&mut self, at: u8, name: &'static str, f: impl FnOnce() -> Result<T, StoreError>) -> Option<T> {
        if self.failed.is_some() {
            return None;
        }
        let started = Instant::now();
        let r = f();
        self.steps.push((at, name, started.elapsed()));
        r.map_err(|e| self.failed = Some((at, e))).ok()
    }
}

impl<B: Backend> Store<B> {
    /// Everything [`Verification::Full`] adds to the quick check; see the module doc.
    /// The steps in two halves that read different column families, the second on a
    /// thread of its own: a node that installed a snapshot serves nothing until this check
    /// is done. The error is the one the steps, run one after the other in the order of the
    /// module docs, would have met first: each half stops at its first failure, and the
    /// earlier step of the two wins.
    pub(super) fn verify_full(&self) -> Result<CheckTimes, StoreError> {
        let started = Instant::now();
        let (chain, indexes) = std::thread::scope(|scope| {
            let indexes = scope.spawn(|| {
                let mut h = Half::new();
                h.step(0, "content-addressed", || self.verify_content_addressed());
                h.step(4, "states", || self.verify_states());
                h.step(5, "subject chains", || self.verify_subject_records());
                h.step(6, "holdings", || self.verify_owner_index(Cf::Holdings));
                h.step(7, "lot items", || self.verify_owner_index(Cf::LotItems));
                h
            });
            let mut h = Half::new();
            let rejections = h.step(1, "chain", || self.verify_chain());
            let made = h.step(2, "records", || self.verify_records(&[]));
            if let Some(made) = made {
                h.step(3, "record indexes", || self.verify_made_by_records(&made));
            }
            if let Some(rejections) = rejections {
                h.step(8, "receipts", || self.verify_receipts(&rejections));
            }
            h.step(9, "checkpoint signatures", || self.verify_checkpoint_signatures());
            let indexes = indexes.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (h, indexes)
        });
        let first = [chain.failed, indexes.failed].into_iter().flatten().min_by_key(|(at, _)| *at);
        if let Some((_, e)) = first {
            return Err(e);
        }
        let mut steps: Vec<_> = chain.steps.into_iter().chain(indexes.steps).collect();
        steps.sort_by_key(|(at, ..)| *at);
        Ok(CheckTimes {
            steps: steps.into_iter().map(|(_, name, took)| (name, took)).collect(),
            total: started.elapsed(),
        })
    }

    fn verify_chain(&self) -> Result<Fingerprint, StoreError> {
        let head = &self.head;
        let genesis = self.genesis().map_err(|e| bad(Cf::Meta, format!("genesis: {e}")))?;
        let mut prev_hash = genesis.hash();
        let mut prev_time = genesis.genesis_time_ms;
        let p = self.prefix.len();
        let mut headers = self.backend.rows(Cf::Headers, &self.prefix)?;
        let mut positions = self.backend.rows(Cf::Positions, &self.prefix)?;
        let mut log = LogCheck::new(self)?;
        let mut rejections = Fingerprint::default();
        for height in 1..=head.height {
            let v = match headers.next_row()? {
                Some((k, v)) if k.len() == p + 8 && u64_at_end(k) == Some(height) => v,
                _ => return Err(bad(Cf::Headers, format!("header {height} is missing"))),
            };
            let header: BlockHeader = codec::decode("header", v)
                .map_err(|e| bad(Cf::Headers, format!("header {height} does not decode: {e}")))?;
            let at = |what: String| bad(Cf::Headers, format!("header {height}: {what}"));
            if header.height != height || header.ledger_id != head.ledger_id {
                return Err(at(format!("says height {} of ledger {}", header.height, header.ledger_id)));
            }
            if header.prev_hash != prev_hash && height == 1 {
                return Err(at(format!(
                    "does not link to the genesis (meta): prev hash {}, the genesis hashes to {prev_hash}",
                    header.prev_hash
                )));
            }
            if header.prev_hash != prev_hash {
                return Err(at(format!(
                    "does not link to header {}: prev hash {}, header {} hashes to {prev_hash}",
                    height - 1,
                    header.prev_hash,
                    height - 1
                )));
            }
            if header.time_ms < prev_time {
                return Err(at(format!("time {} ms is before the previous block's {prev_time} ms", header.time_ms)));
            }
            let from = log.frontier.size;
            if header.log_size < from || header.log_size - from > BLOCK_RECORDS_MAX as u64 {
                return Err(at(format!(
                    "log size {} after {from}: a block logs 0 to {BLOCK_RECORDS_MAX}",
                    header.log_size
                )));
            }
            let mut ids = Vec::with_capacity((header.log_size - from) as usize);
            for i in from..header.log_size {
                match positions.next_row()? {
                    Some((k, v)) if k.len() == p + 8 && u64_at_end(k) == Some(i) => ids
                        .push(hash_from(v, "position").map_err(|e| bad(Cf::Positions, format!("position {i}: {e}")))?),
                    _ => return Err(bad(Cf::Positions, format!("log position {i} has no record"))),
                }
            }
            let root = log.append(&ids)?;
            if root != header.log_root {
                return Err(at(format!(
                    "log root {}, the records at positions 0..{} give {root}",
                    header.log_root, header.log_size
                )));
            }
            if header.state_root != Hash32::ZERO && OnDisk(self).smt_node(&header.state_root)?.is_none() {
                return Err(at(format!("state-map root node {} is missing", header.state_root)));
            }
            self.verify_block(&header, from, &ids, &mut rejections)?;
            prev_hash = header.hash();
            prev_time = header.time_ms;
        }
        if prev_hash != head.header_hash || log.frontier.size != head.log_size {
            return Err(bad(
                Cf::Meta,
                format!("the head (height {}, log size {}) is not the last header's", head.height, head.log_size),
            ));
        }
        if let Some((k, _)) = headers.next_row()? {
            return Err(bad(Cf::Headers, format!("header {} is past the head {}", height_of(k), head.height)));
        }
        let past = self.k(&(head.height + 1).to_be_bytes());
        if let Some((k, _)) = self.backend.scan(Cf::Blocks, &self.prefix, &past, 1)?.pop() {
            return Err(bad(Cf::Blocks, format!("block {} is past the head {}", height_of(&k), head.height)));
        }
        if let Some((k, _)) = positions.next_row()? {
            return Err(bad(
                Cf::Positions,
                format!("position {} is past the log size {}", height_of(k), head.log_size),
            ));
        }
        log.finish()?;
        Ok(rejections)
    }

    /// The block at `header`'s height against the header: `ids` are the records at the
    /// positions the header logs, from `from` on. Rejected records (inline) whose stored
    /// receipt is of this block go into `rejections`.
    fn verify_block(
        &self,
        header: &BlockHeader,
        from: u64,
        ids: &[RecordId],
        rejections: &mut Fingerprint,
    ) -> Result<(), StoreError> {
        let height = header.height;
        let at = |what: String| bad(Cf::Blocks, format!("block {height}: {what}"));
        let Some(bytes) = self.backend.get(Cf::Blocks, &self.k(&height.to_be_bytes()))? else {
            return Err(bad(Cf::Blocks, format!("block {height} is missing")));
        };
        let block: StoredBlock = codec::decode("block", &bytes)
            .map_err(|e| bad(Cf::Blocks, format!("block {height} does not decode: {e}")))?;
        if block.height != height || block.time_ms != header.time_ms || block.proposer != header.proposer {
            return Err(at("its height, time or proposer is not its header's".into()));
        }
        let mut all = Vec::with_capacity(block.records.len());
        let mut next = 0usize;
        let mut logged_before = Vec::new();
        let mut inline = Vec::new();
        for r in &block.records {
            match r {
                StoredRecord::Logged(id) => {
                    all.push(*id);
                    if ids.get(next) == Some(id) {
                        next += 1;
                    } else {
                        logged_before.push(*id);
                    }
                }
                StoredRecord::Inline(b) => {
                    let id = SignedRecord::id_of_bytes(b);
                    all.push(id);
                    inline.push(id);
                }
            }
        }
        if apply::records_hash(&all) != header.records_hash {
            return Err(at(format!("its record ids do not hash to its header's records hash {}", header.records_hash)));
        }
        if let Some(id) = ids.get(next) {
            return Err(at(format!(
                "does not hold record {id}, which its header logs at position {}",
                from + next as u64
            )));
        }
        // A logged record the block did not log is a duplicate: logged earlier in the block or
        // before it. A record kept inline was rejected: the log did not hold it then.
        let here: HashSet<&RecordId> = ids.iter().collect();
        logged_before.retain(|id| !here.contains(id));
        let mut seen = HashSet::new();
        inline.retain(|id| seen.insert(*id));
        if logged_before.is_empty() && inline.is_empty() {
            return Ok(());
        }
        let asked: Vec<RecordId> = logged_before.iter().chain(&inline).copied().collect();
        let keys: Vec<Vec<u8>> = asked.iter().map(|id| self.k(id.as_bytes())).collect();
        let rows = self.backend.multi_get(Cf::Records, &keys)?;
        for (i, (id, row)) in asked.iter().zip(&rows).enumerate() {
            let position = row.as_deref().map(|r| position_in_row(id, r)).transpose()?;
            if i < logged_before.len() {
                if position.is_none_or(|p| p >= from) {
                    return Err(at(format!(
                        "record {id} is kept as logged before the block, the log has it at {position:?}"
                    )));
                }
            } else if position.is_some_and(|p| p < header.log_size) {
                return Err(at(format!("record {id} is kept as rejected, the log has it at {position:?}")));
            }
        }
        let keys: Vec<Vec<u8>> = inline.iter().map(|id| self.k(id.as_bytes())).collect();
        for (id, v) in inline.iter().zip(self.backend.multi_get(Cf::Receipts, &keys)?) {
            let Some(v) = v else { continue };
            let r: Receipt = codec::decode("receipt", &v)
                .map_err(|e| bad(Cf::Receipts, format!("receipt of record {id} does not decode: {e}")))?;
            if r.height == height {
                rejections.add(id.as_bytes(), &height.to_be_bytes());
            } else if r.height < height {
                return Err(bad(
                    Cf::Receipts,
                    format!("receipt of record {id} is of block {}, but block {height} rejected it since", r.height),
                ));
            }
        }
        Ok(())
    }

    /// Every record; returns the rows it makes in [`MADE_BY_RECORDS`]. Those of `look_up`
    /// are also read, each where the record says it is, to name the first that differs
    /// (random reads: only once a fingerprint has differed).
    fn verify_records(&self, look_up: &[Cf]) -> Result<Made, StoreError> {
        let head = &self.head;
        let p = self.prefix.len();
        let mut made = Made::default();
        let mut cursor = self.backend.rows(Cf::Records, &self.prefix)?;
        let mut count = 0u64;
        loop {
            // (position, id), (org key, id), (code key, issuance), (range key, range issuance)
            // of a page of records, looked up together.
            let mut placed: Vec<(u64, RecordId)> = Vec::new();
            let mut by_org: Vec<(Vec<u8>, String, u64, RecordId)> = Vec::new();
            let mut codes: Vec<(Vec<u8>, SubjectId, Issuance)> = Vec::new();
            let mut ranges: Vec<(Vec<u8>, RangeIssuance)> = Vec::new();
            let read = read_page(&mut *cursor, RECORD_PAGE_ROWS, |k, v| {
                let id = hash_from(&k[p..], "record id").map_err(|e| bad(Cf::Records, format!("key: {e}")))?;
                let i = position_in_row(&id, v).map_err(|e| bad(Cf::Records, e))?;
                let (index, rec): (u64, SignedRecord) = codec::decode("record", v)
                    .map_err(|e| bad(Cf::Records, format!("record {id} at position {i} does not decode: {e}")))?;
                // The row is the version byte, the index, then the signed record's bytes after
                // its own version byte: its id is hashed from those, not encoded again.
                if SignedRecord::id_of_bytes(&[&v[..1], &v[9..]].concat()) != id {
                    return Err(bad(Cf::Records, format!("record at position {index} does not hash to its id {id}")));
                }
                if index >= head.log_size {
                    return Err(bad(
                        Cf::Records,
                        format!("record {id} says position {index}, past the log size {}", head.log_size),
                    ));
                }
                count += 1;
                made[0].add(&self.k(&index.to_be_bytes()), id.as_bytes());
                if look_up.contains(&Cf::Positions) {
                    placed.push((index, id));
                }
                let author = rec.record.author.as_str();
                let key = self.k(&[lenpref(author).as_slice(), &index.to_be_bytes()].concat());
                made[1].add(&key, id.as_bytes());
                if look_up.contains(&Cf::OrgRecords) {
                    by_org.push((key, author.to_string(), index, id));
                }
                if let RecordBody::IssueCodes(ic) = &rec.record.body {
                    let lot = SubjectId::lot_of(ic.product.gtin.clone(), ic.lot.clone());
                    let issuance = Issuance { lot, record: id };
                    let mut listed = |code: SubjectId| {
                        let key = self.k(code.to_string().as_bytes());
                        made[2].add(&key, &codec::encode(&issuance));
                        if look_up.contains(&Cf::ListedCodes) {
                            codes.push((key, code, issuance.clone()));
                        }
                    };
                    match &ic.codes {
                        CodeSet::Range(range) => {
                            let bucket = range_bucket_key(&ic.product.gtin, &RangeBucket::of_range(range));
                            let key = self.k(&[bucket.as_slice(), &codec::encode(range)].concat());
                            let gtin = ic.product.gtin.clone();
                            let r = RangeIssuance { gtin, range: range.clone(), issuance: issuance.clone() };
                            made[3].add(&key, &codec::encode(&r));
                            if look_up.contains(&Cf::Ranges) {
                                ranges.push((key, r));
                            }
                        }
                        CodeSet::Serials(serials) => {
                            for s in serials {
                                listed(SubjectId::item(ic.product.gtin.clone(), s.clone()));
                            }
                        }
                        CodeSet::Codes(list) => list.iter().cloned().for_each(&mut listed),
                    }
                }
                Ok(())
            })?;
            if read == 0 {
                break;
            }
            if look_up.is_empty() {
                continue;
            }
            let keys: Vec<Vec<u8>> = placed.iter().map(|(i, _)| self.k(&i.to_be_bytes())).collect();
            for ((index, id), got) in placed.iter().zip(self.backend.multi_get(Cf::Positions, &keys)?) {
                if got.as_deref() != Some(id.as_bytes().as_slice()) {
                    let names = got.map(|g| hex::encode(&g)).unwrap_or_else(|| "nothing".into());
                    return Err(bad(
                        Cf::Positions,
                        format!("position {index} names {names}, record {id} says it is there"),
                    ));
                }
            }
            let keys: Vec<Vec<u8>> = by_org.iter().map(|(k, ..)| k.clone()).collect();
            for ((_, org, index, id), got) in by_org.iter().zip(self.backend.multi_get(Cf::OrgRecords, &keys)?) {
                if got.as_deref() != Some(id.as_bytes().as_slice()) {
                    return Err(bad(
                        Cf::OrgRecords,
                        format!("entry ({org}, {index}) is not record {id}, which {org} wrote"),
                    ));
                }
            }
            let keys: Vec<Vec<u8>> = codes.iter().map(|(k, ..)| k.clone()).collect();
            for ((_, code, issuance), got) in codes.iter().zip(self.backend.multi_get(Cf::ListedCodes, &keys)?) {
                let got: Option<Issuance> = got.and_then(|g| codec::decode("issuance", &g).ok());
                if got.as_ref() != Some(issuance) {
                    return Err(bad(
                        Cf::ListedCodes,
                        format!(
                            "code {code} is not the issuance of lot {} by record {}",
                            issuance.lot, issuance.record
                        ),
                    ));
                }
            }
            let keys: Vec<Vec<u8>> = ranges.iter().map(|(k, _)| k.clone()).collect();
            for ((_, range), got) in ranges.iter().zip(self.backend.multi_get(Cf::Ranges, &keys)?) {
                let got: Option<RangeIssuance> = got.and_then(|g| codec::decode("range issuance", &g).ok());
                if got.as_ref() != Some(range) {
                    return Err(bad(
                        Cf::Ranges,
                        format!(
                            "range {:?} of {} is not the issuance by record {}",
                            range.range, range.gtin, range.issuance.record
                        ),
                    ));
                }
            }
        }
        // Each record named its own position, so distinct records hold distinct positions.
        if count != head.log_size {
            return Err(bad(Cf::Records, format!("{count} records, the log holds {}", head.log_size)));
        }
        Ok(made)
    }

    /// Each column family of [`MADE_BY_RECORDS`] holds exactly the rows the records make,
    /// compared by fingerprint in one scan. When one differs, the records are read again
    /// looking up each row they make, to name a wrong or missing one, then the column family
    /// is read again for a row no record makes.
    fn verify_made_by_records(&self, made: &Made) -> Result<(), StoreError> {
        for (cf, want) in MADE_BY_RECORDS.into_iter().zip(made) {
            let mut cursor = self.backend.rows(cf, &self.prefix)?;
            let mut found = Fingerprint::default();
            while let Some((k, v)) = cursor.next_row()? {
                found.add(k, v);
            }
            if found != *want {
                self.verify_records(&[cf])?;
                self.find_extra(cf)?;
                return Err(bad(cf, format!("{} entries, the records make {}", found.count, want.count)));
            }
        }
        Ok(())
    }

    /// The first entry of `cf` (an index the records make) that no record makes.
    fn find_extra(&self, cf: Cf) -> Result<(), StoreError> {
        let p = self.prefix.len();
        let record = |id: Option<RecordId>| id.and_then(|id| self.record(&id).ok().flatten());
        let mut cursor = self.backend.rows(cf, &self.prefix)?;
        while let Some((k, v)) = cursor.next_row()? {
            let rest = &k[p..];
            let made = match cf {
                Cf::OrgRecords => match (split_owner(rest), record(hash_from(v, "id").ok())) {
                    (Some((org, at)), Some((index, r))) => {
                        at.len() == 8 && u64_at_end(at) == Some(index) && r.record.author.as_str() == org
                    }
                    _ => false,
                },
                Cf::ListedCodes => {
                    let code = std::str::from_utf8(rest).ok().and_then(|s| s.parse::<SubjectId>().ok());
                    let issuance: Option<Issuance> = codec::decode("issuance", v).ok();
                    match (code, issuance.as_ref().and_then(|i| record(Some(i.record)))) {
                        (Some(code), Some((_, r))) => match &r.record.body {
                            RecordBody::IssueCodes(ic) => {
                                let gtin = &ic.product.gtin;
                                let issued = match &ic.codes {
                                    CodeSet::Serials(s) => {
                                        s.iter().any(|s| SubjectId::item(gtin.clone(), s.clone()) == code)
                                    }
                                    CodeSet::Codes(c) => c.contains(&code),
                                    CodeSet::Range(_) => false,
                                };
                                issued
                                    && issuance
                                        .is_some_and(|i| i.lot == SubjectId::lot_of(gtin.clone(), ic.lot.clone()))
                            }
                            _ => false,
                        },
                        _ => false,
                    }
                }
                Cf::Ranges => {
                    let ri: Option<RangeIssuance> = codec::decode("range issuance", v).ok();
                    match (ri.as_ref(), ri.as_ref().and_then(|ri| record(Some(ri.issuance.record)))) {
                        (Some(ri), Some((_, r))) => matches!(&r.record.body,
                            RecordBody::IssueCodes(ic) if ic.product.gtin == ri.gtin
                                && matches!(&ic.codes, CodeSet::Range(x) if *x == ri.range)),
                        _ => false,
                    }
                }
                // Positions: the chain pass found them contiguous, the lookup each one.
                _ => true,
            };
            if !made {
                let name = match (cf, split_owner(rest)) {
                    (Cf::OrgRecords, Some((org, at))) => format!("({org}, {})", height_of(at)),
                    (Cf::ListedCodes, _) => String::from_utf8_lossy(rest).into_owned(),
                    _ => hex::encode(rest),
                };
                return Err(bad(cf, format!("entry {name} is made by no record")));
            }
        }
        Ok(())
    }

    /// Every state entry must be in the state map under the head's root with its hash, and
    /// the map must hold no other entries. Each subject's last chain entry, holding and lot
    /// membership must be in their indexes (the other way is [`Store::verify_owner_index`]
    /// and [`Store::verify_subject_records`]).
    ///
    /// The map and the entries are compared by fingerprint: one walk of the map's nodes,
    /// one scan of the entries. When they differ, the entries are read again, each looked up
    /// in the map, to name the first that is not there.
    fn verify_states(&self) -> Result<(), StoreError> {
        let root = self.head.state_root;
        let mut in_map = Fingerprint::default();
        smt::for_each_leaf(&OnDisk(self), root, |key, value_hash| in_map.add(key.as_bytes(), value_hash.as_bytes()))
            .map_err(|e| bad(Cf::SmtNodes, e))?;
        let stored = self.scan_states(false)?;
        if stored == in_map {
            return Ok(());
        }
        self.scan_states(true)?;
        Err(bad(Cf::States, format!("state map holds {} entries, the store {}", in_map.count, stored.count)))
    }

    /// Reads every state entry, checks that its subject's indexes hold it (see
    /// [`Store::verify_states`]), and returns the fingerprint of (map key, value hash) of
    /// each; with `look_up`, also looks each one up in the state map.
    fn scan_states(&self, look_up: bool) -> Result<Fingerprint, StoreError> {
        let root = self.head.state_root;
        let p = self.prefix.len();
        let mut cursor = self.backend.rows(Cf::States, &self.prefix)?;
        let mut stored = Fingerprint::default();
        loop {
            // The index entries a page of states needs, looked up together.
            let mut wanted: Vec<(Cf, Vec<u8>, String)> = Vec::new();
            let read = read_page(&mut *cursor, PAGE_ROWS, |k, v| {
                let key: StateKey = codec::decode("state key", &k[p..]).map_err(|e| bad(Cf::States, e))?;
                let value: StateValue =
                    codec::decode("state value", v).map_err(|e| bad(Cf::States, format!("{key:?}: {e}")))?;
                let (map_key, value_hash) = (key.map_key(), value.value_hash());
                stored.add(map_key.as_bytes(), value_hash.as_bytes());
                if look_up {
                    let in_map = smt::get(&OnDisk(self), root, &map_key).map_err(|e| bad(Cf::SmtNodes, e))?;
                    if in_map != Some(value_hash) {
                        return Err(bad(
                            Cf::States,
                            format!("state entry {key:?} does not match the state root {root}"),
                        ));
                    }
                }
                if let (StateKey::Subject(sid), StateValue::Subject(s)) = (&key, &value) {
                    let name = sid.to_string();
                    if s.record_count > 0 {
                        let k = [lenpref(&name).as_slice(), &(s.record_count - 1).to_be_bytes()].concat();
                        let what = format!(
                            "{name}: entry {} is missing, its state counts {}",
                            s.record_count - 1,
                            s.record_count
                        );
                        wanted.push((Cf::SubjectRecords, self.k(&k), what));
                    }
                    if let Some(holder) = holder(s) {
                        let k = [lenpref(holder.as_str()).as_slice(), name.as_bytes()].concat();
                        wanted.push((
                            Cf::Holdings,
                            self.k(&k),
                            format!("({holder}, {name}) is missing: {holder} holds {name}"),
                        ));
                    }
                    if let Some(lot) = &s.lot {
                        let k = [lenpref(&lot.to_string()).as_slice(), name.as_bytes()].concat();
                        wanted.push((
                            Cf::LotItems,
                            self.k(&k),
                            format!("({lot}, {name}) is missing: {name} is of lot {lot}"),
                        ));
                    }
                }
                Ok(())
            })?;
            if read == 0 {
                break;
            }
            for cf in [Cf::SubjectRecords, Cf::Holdings, Cf::LotItems] {
                let (keys, whats): (Vec<Vec<u8>>, Vec<&String>) =
                    wanted.iter().filter(|(c, ..)| *c == cf).map(|(_, k, w)| (k.clone(), w)).unzip();
                for (got, what) in self.backend.multi_get(cf, &keys)?.into_iter().zip(whats) {
                    if got.is_none() {
                        return Err(bad(cf, what));
                    }
                }
            }
        }
        Ok(stored)
    }

    /// The stored state of a subject, if it has one.
    fn subject_states(&self, subjects: &[SubjectId]) -> Result<Vec<Option<SubjectState>>, StoreError> {
        let keys: Vec<Vec<u8>> =
            subjects.iter().map(|s| self.k(&codec::encode(&StateKey::Subject(s.clone())))).collect();
        self.backend
            .multi_get(Cf::States, &keys)?
            .into_iter()
            .map(|v| match v.map(|v| codec::decode::<StateValue>("state value", &v)) {
                Some(Ok(StateValue::Subject(s))) => Ok(Some(s)),
                Some(Err(e)) => Err(bad(Cf::States, e)),
                _ => Ok(None),
            })
            .collect()
    }

    /// Each subject's chain: entries numbered from 0 without a gap, as many as its state
    /// counts, folding to its state's chain hash (which the state root commits to).
    fn verify_subject_records(&self) -> Result<(), StoreError> {
        let p = self.prefix.len();
        let mut cursor = self.backend.rows(Cf::SubjectRecords, &self.prefix)?;
        // The subject being read: its name, entries so far and their chain.
        let mut current: Option<(String, u64, Hash32)> = None;
        let close = |chain: Option<(String, u64, Hash32)>| -> Result<(), StoreError> {
            let Some((name, n, hash)) = chain else { return Ok(()) };
            let sid: SubjectId =
                name.parse().map_err(|e| bad(Cf::SubjectRecords, format!("subject {name:?} in a key: {e}")))?;
            let state = self.subject_states(std::slice::from_ref(&sid))?.pop().flatten();
            match state {
                Some(s) if s.record_count == n && s.chain == hash => Ok(()),
                Some(s) => Err(bad(
                    Cf::SubjectRecords,
                    format!(
                        "{name}: {n} entries chaining to {hash}, its state says {} records chaining to {}",
                        s.record_count, s.chain
                    ),
                )),
                None => Err(bad(Cf::SubjectRecords, format!("{name}: {n} entries, and no state"))),
            }
        };
        while let Some((k, v)) = cursor.next_row()? {
            let (name, seq) = match split_owner(&k[p..]) {
                Some((name, rest)) if rest.len() == 8 => (name.to_string(), u64_at_end(rest).unwrap_or(u64::MAX)),
                _ => return Err(bad(Cf::SubjectRecords, format!("key {} is no (subject, number)", hex::encode(k)))),
            };
            let id =
                hash_from(v, "record id").map_err(|e| bad(Cf::SubjectRecords, format!("{name}: entry {seq}: {e}")))?;
            let (n, chain) = match current.take() {
                Some((cur, n, chain)) if cur == name => (n, chain),
                other => {
                    close(other)?;
                    (0, Hash32::ZERO)
                }
            };
            if seq != n {
                return Err(bad(Cf::SubjectRecords, format!("{name}: entry {n} is missing (next is {seq})")));
            }
            current = Some((name, n + 1, chain_link(&chain, &id)));
        }
        close(current)
    }

    /// Each entry of the holdings or lot-items index, (owner, subject), against the
    /// subject's state: its holder, or its lot.
    fn verify_owner_index(&self, cf: Cf) -> Result<(), StoreError> {
        let p = self.prefix.len();
        let mut cursor = self.backend.rows(cf, &self.prefix)?;
        loop {
            // A page of entries, whose states are read together.
            let mut entries = Vec::new();
            let read = read_page(&mut *cursor, PAGE_ROWS, |k, _| {
                let parsed = split_owner(&k[p..]).and_then(|(owner, rest)| {
                    let sid = std::str::from_utf8(rest).ok()?.parse::<SubjectId>().ok()?;
                    Some((owner.to_string(), sid))
                });
                let Some(e) = parsed else {
                    return Err(bad(cf, format!("key {} is no (owner, subject)", hex::encode(k))));
                };
                entries.push(e);
                Ok(())
            })?;
            if read == 0 {
                break;
            }
            let subjects: Vec<SubjectId> = entries.iter().map(|(_, s)| s.clone()).collect();
            for ((owner, sid), state) in entries.iter().zip(self.subject_states(&subjects)?) {
                let says = match (&state, cf) {
                    (Some(s), Cf::Holdings) => holder(s).map(|h| h.to_string()),
                    (Some(s), _) => s.lot.as_ref().map(|l| l.to_string()),
                    (None, _) => None,
                };
                if says.as_deref() != Some(owner.as_str()) {
                    let says = says.unwrap_or_else(|| "none".into());
                    return Err(bad(cf, format!("({owner}, {sid}): the state of {sid} says {says}")));
                }
            }
        }
        Ok(())
    }

    /// Each stored receipt is a rejection the blocks vouch for (see [`Store::verify_block`]).
    fn verify_receipts(&self, vouched: &Fingerprint) -> Result<(), StoreError> {
        let p = self.prefix.len();
        let mut cursor = self.backend.rows(Cf::Receipts, &self.prefix)?;
        let mut stored = Fingerprint::default();
        while let Some((k, v)) = cursor.next_row()? {
            let id = hash_from(&k[p..], "record id").map_err(|e| bad(Cf::Receipts, format!("key: {e}")))?;
            let r: Receipt = codec::decode("receipt", v)
                .map_err(|e| bad(Cf::Receipts, format!("receipt of record {id} does not decode: {e}")))?;
            let kept = matches!(&r.outcome, Outcome::Rejected { code, .. } if *code != RejectCode::Duplicate);
            if r.record_id != id || !kept || r.height == 0 || r.height > self.head.height {
                return Err(bad(
                    Cf::Receipts,
                    format!(
                        "receipt of record {id} is for record {} at height {}, {:?}",
                        r.record_id, r.height, r.outcome
                    ),
                ));
            }
            stored.add(id.as_bytes(), &r.height.to_be_bytes());
        }
        if stored == *vouched {
            return Ok(());
        }
        // Which one: the first whose block does not hold it rejected (a block read each).
        let mut cursor = self.backend.rows(Cf::Receipts, &self.prefix)?;
        while let Some((k, v)) = cursor.next_row()? {
            let id = hash_from(&k[p..], "record id")?;
            let r: Receipt = codec::decode("receipt", v).map_err(|e| bad(Cf::Receipts, e))?;
            let block = self.backend.get(Cf::Blocks, &self.k(&r.height.to_be_bytes()))?;
            let block: Option<StoredBlock> = block.and_then(|b| codec::decode("block", &b).ok());
            let holds = block.is_some_and(|b| {
                b.records.iter().any(|s| matches!(s, StoredRecord::Inline(b) if SignedRecord::id_of_bytes(b) == id))
            });
            if !holds {
                return Err(bad(
                    Cf::Receipts,
                    format!("receipt of record {id} is of block {}, which did not reject it", r.height),
                ));
            }
        }
        Err(bad(Cf::Receipts, format!("{} receipts, the blocks vouch for {}", stored.count, vouched.count)))
    }

    /// Each checkpoint signature: over the stored header at its height, by the node its key
    /// names, with that validator's key at that height (or, for a validator added since, its
    /// key now). A signer in neither set is kept unchecked: the node took it from a
    /// validator of the set it had then, and a client's [`crate::block::Checkpoint::verify`]
    /// ignores signers outside its trusted set.
    fn verify_checkpoint_signatures(&self) -> Result<(), StoreError> {
        let p = self.prefix.len();
        let mut cursor = self.backend.rows(Cf::CheckpointSigs, &self.prefix)?;
        let now = self.validators_at(self.head.state_root)?;
        // The signing message and validator set of the height last read: signatures come by
        // height.
        let mut at: Option<(u64, Vec<u8>, ValidatorSet)> = None;
        let mut batch = SignatureBatch::default();
        while let Some((k, v)) = cursor.next_row()? {
            let rest = &k[p..];
            let Some(height) = rest.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                return Err(bad(Cf::CheckpointSigs, format!("key {} is no (height, node)", hex::encode(k))));
            };
            let node = String::from_utf8_lossy(&rest[8..]).into_owned();
            let what = |m: &str| bad(Cf::CheckpointSigs, format!("signature of {node} on header {height}: {m}"));
            let sig: CheckpointSignature =
                codec::decode("checkpoint signature", v).map_err(|e| what(&format!("does not decode: {e}")))?;
            if sig.node_id.as_str() != node {
                return Err(what(&format!("is signed by {}", sig.node_id)));
            }
            let (message, set) = match &at {
                Some((h, message, set)) if *h == height => (message, set),
                _ => {
                    let Some(header) = self.header(height).ok().flatten() else {
                        return Err(what("there is no such header"));
                    };
                    let set = self.validators_at(header.state_root)?;
                    let (_, message, set) = at.insert((height, header.signing_message(), set));
                    (&*message, &*set)
                }
            };
            let signature = sig.signature.to_dalek();
            let keys: Vec<_> = [set.get(&sig.node_id), now.get(&sig.node_id)]
                .into_iter()
                .flatten()
                .map(|v| v.public_key.verifying_key())
                .collect();
            match keys.as_slice() {
                [] => {}
                [key] => batch.push(node.clone(), height, message.clone(), signature, *key),
                [a, b] if a == b => batch.push(node.clone(), height, message.clone(), signature, *a),
                _ => {
                    if !keys.iter().any(|key| key.verify_strict(message, &signature).is_ok()) {
                        return Err(what("does not verify with the validator's key"));
                    }
                }
            }
            if batch.keys.len() >= PAGE_ROWS {
                batch.check()?;
            }
        }
        batch.check()
    }

    /// The validator set in the state map with root `root`.
    fn validators_at(&self, root: Hash32) -> Result<ValidatorSet, StoreError> {
        let key = StateKey::Validators.map_key();
        let Some(vh) = smt::get(&OnDisk(self), root, &key).map_err(|e| bad(Cf::SmtNodes, e))? else {
            return Ok(ValidatorSet::default());
        };
        match self.state_value_by_hash(&vh)? {
            Some(StateValue::Validators(set)) => Ok(set),
            _ => Err(bad(Cf::StateValues, format!("the validator set {vh} of state root {root} is missing"))),
        }
    }

    /// Every state-map node and every state value hashes to its key: a past state root
    /// serves what it committed to.
    fn verify_content_addressed(&self) -> Result<(), StoreError> {
        let p = self.prefix.len();
        for cf in [Cf::SmtNodes, Cf::StateValues] {
            let mut cursor = self.backend.rows(cf, &self.prefix)?;
            while let Some((k, v)) = cursor.next_row()? {
                let key = hash_from(&k[p..], "hash").map_err(|e| bad(cf, format!("key: {e}")))?;
                let hash = match cf {
                    Cf::SmtNodes => SmtNode::decode(v)
                        .map(|n| n.hash())
                        .map_err(|e| bad(cf, format!("node {key} does not decode: {e}")))?,
                    _ => StateValue::value_hash_of(v),
                };
                if hash != key {
                    return Err(bad(cf, format!("value under {key} hashes to {hash}")));
                }
            }
        }
        Ok(())
    }
}

/// Who holds a subject in its own name (the holdings index), as apply decides it.
fn holder(s: &SubjectState) -> Option<&crate::org::OrgId> {
    (s.detached || s.lot.is_none()).then_some(&s.custodian)
}

/// The height (or log index) that ends a key, for messages.
fn height_of(key: &[u8]) -> String {
    u64_at_end(key).map(|h| h.to_string()).unwrap_or_else(|| hex::encode(key))
}
