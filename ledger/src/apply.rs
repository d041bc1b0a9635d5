//! Deterministic apply: `(ledger view, block) -> (write set, header, receipts)`.
//!
//! Architecture invariant: nothing here reads a clock, draws randomness or does IO
//! beyond the [`LedgerView`] it is handed. Time is the block's time. Every node runs the
//! same code over the same view and block and gets the same bytes out.
//!
//! Records are applied in block order, each against the state left by the ones before
//! it. A record either passes every rule and is appended to the Merkle log and to the
//! chain of every subject it affects, or it is rejected with a stable [`RejectCode`] and
//! a message naming the offending value, and changes nothing: each record works on a
//! scratch copy of the block's overlay that is merged only on acceptance.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::block::{BLOCK_RECORDS_MAX, Block, BlockHeader, StoredBlock, StoredRecord};
use crate::codec::{self, Domain};
use crate::hash::{Hash32, StorageError};
use crate::ids::{Gtin, SerialRange, SubjectId};
use crate::merkle::{self, LogNodeStore};
use crate::org::{LedgerId, OrgId, OrgKey, Organisation, PublicKey, Role, ValidatorSet};
use crate::record::{CodeSet, GovernanceAction, RecordBody, RecordId, RegulatoryKind, SignedRecord, signing_message};
use crate::smt::{self, SmtNodeStore};
use crate::state::{Regulatory, StateKey, StateValue, StateWrite, SubjectState};
use crate::view::{AcceptedRecord, Head, Issuance, LedgerView, Outcome, RangeBucket, RangeIssuance, Receipt, WriteSet};

/// Most children one logistic unit may hold.
pub const UNIT_CHILDREN_MAX: usize = 10_000;

/// Why a record was rejected. The numbers are stable: clients and receipts keep them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u16)]
pub enum RejectCode {
    /// The record's form is invalid (sizes, texts, dates, lists).
    Malformed = 1,
    /// The author's or an approver's signature does not verify.
    BadSignature = 2,
    /// The author or a named organisation is unknown.
    UnknownOrganisation = 3,
    /// The key id is unknown, revoked, or not valid at the record's time.
    KeyNotValid = 4,
    /// The author lacks the role the record needs.
    RoleNotAllowed = 5,
    /// A producer issued outside its code prefixes.
    PrefixNotAllowed = 6,
    /// A code was issued before.
    AlreadyIssued = 7,
    /// A named subject is unknown (never issued or packed).
    UnknownSubject = 8,
    /// The author is not the subject's current custodian (or the lot's issuer).
    NotCustodian = 9,
    /// The author is not the recipient the shipment named.
    NotRecipient = 10,
    /// The subject is held by a regulator.
    SubjectHeld = 11,
    /// The subject is recalled.
    SubjectRecalled = 12,
    /// The subject is in transit, or not in transit when it must be.
    WrongTransitState = 13,
    /// The subject was sold.
    SubjectSold = 14,
    /// The inspection standard is outside the body's scope.
    OutOfScope = 15,
    /// Governance approvals from too few distinct regulators.
    QuorumNotMet = 16,
    /// The record's time is outside the window around the block time.
    TimeOutOfWindow = 17,
    /// The record was applied before.
    Duplicate = 18,
    /// The change conflicts with existing state (exists already, packed elsewhere ...).
    Conflict = 19,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Malformed => "malformed",
            RejectCode::BadSignature => "bad_signature",
            RejectCode::UnknownOrganisation => "unknown_organisation",
            RejectCode::KeyNotValid => "key_not_valid",
            RejectCode::RoleNotAllowed => "role_not_allowed",
            RejectCode::PrefixNotAllowed => "prefix_not_allowed",
            RejectCode::AlreadyIssued => "already_issued",
            RejectCode::UnknownSubject => "unknown_subject",
            RejectCode::NotCustodian => "not_custodian",
            RejectCode::NotRecipient => "not_recipient",
            RejectCode::SubjectHeld => "subject_held",
            RejectCode::SubjectRecalled => "subject_recalled",
            RejectCode::WrongTransitState => "wrong_transit_state",
            RejectCode::SubjectSold => "subject_sold",
            RejectCode::OutOfScope => "out_of_scope",
            RejectCode::QuorumNotMet => "quorum_not_met",
            RejectCode::TimeOutOfWindow => "time_out_of_window",
            RejectCode::Duplicate => "duplicate",
            RejectCode::Conflict => "conflict",
        }
    }
}

/// A record's rejection: the code and a message naming the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
}

fn reject<T>(code: RejectCode, message: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError::Reject(Rejection { code, message: message.into() }))
}

/// Inside apply: a rejection of one record, or a storage failure that aborts the block.
enum RuleError {
    Reject(Rejection),
    Storage(StorageError),
}

impl From<StorageError> for RuleError {
    fn from(e: StorageError) -> Self {
        RuleError::Storage(e)
    }
}

/// Why a whole block cannot be applied (as opposed to a record being rejected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("block height {got}, expected {expected}")]
    Height { got: u64, expected: u64 },
    #[error("block time {got} ms is before the previous block's {prev} ms")]
    TimeWentBack { got: u64, prev: u64 },
    #[error("block has {got} records, at most {BLOCK_RECORDS_MAX}")]
    TooManyRecords { got: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("merkle log: {0}")]
    Log(String),
    #[error("state map: {0}")]
    StateMap(String),
}

/// The view as one block sees it: state entries read once and kept for the rest of the
/// block, so an author's organisation (decoded with all its keys) or a subject named by
/// several records, or read again for the holdings index, costs one read and one decode.
/// The view does not change while a block applies, so a kept answer is still the answer;
/// what the block itself changes lives in the [`Overlay`] above this cache, never in it.
/// Bounded by the block: at most one entry per state key the block's records read.
struct BlockReads<'v, V> {
    view: &'v V,
    states: RefCell<BTreeMap<StateKey, Option<StateValue>>>,
}

impl<'v, V: LedgerView> BlockReads<'v, V> {
    fn new(view: &'v V) -> Self {
        BlockReads { view, states: RefCell::new(BTreeMap::new()) }
    }
}

impl<V: LedgerView> LogNodeStore for BlockReads<'_, V> {
    fn log_node(&self, level: u8, index: u64) -> Result<Option<Hash32>, StorageError> {
        self.view.log_node(level, index)
    }

    fn log_nodes(&self, nodes: &[(u8, u64)]) -> Result<Vec<Option<Hash32>>, StorageError> {
        self.view.log_nodes(nodes)
    }
}

impl<V: LedgerView> SmtNodeStore for BlockReads<'_, V> {
    fn smt_node(&self, hash: &Hash32) -> Result<Option<smt::SmtNode>, StorageError> {
        self.view.smt_node(hash)
    }
}

impl<V: LedgerView> LedgerView for BlockReads<'_, V> {
    fn head(&self) -> Result<Head, StorageError> {
        self.view.head()
    }

    fn state(&self, key: &StateKey) -> Result<Option<StateValue>, StorageError> {
        if let Some(v) = self.states.borrow().get(key) {
            return Ok(v.clone());
        }
        let v = self.view.state(key)?;
        self.states.borrow_mut().insert(key.clone(), v.clone());
        Ok(v)
    }

    fn record_position(&self, id: &RecordId) -> Result<Option<u64>, StorageError> {
        self.view.record_position(id)
    }

    fn record_positions(&self, ids: &[RecordId]) -> Result<Vec<Option<u64>>, StorageError> {
        self.view.record_positions(ids)
    }

    fn listed_code(&self, code: &SubjectId) -> Result<Option<Issuance>, StorageError> {
        self.view.listed_code(code)
    }

    fn listed_serials_with_prefix(
        &self,
        gtin: &Gtin,
        encoded_serial_prefix: &str,
    ) -> Result<Vec<SubjectId>, StorageError> {
        self.view.listed_serials_with_prefix(gtin, encoded_serial_prefix)
    }

    fn bucket_ranges(&self, gtin: &Gtin, bucket: &RangeBucket) -> Result<Vec<RangeIssuance>, StorageError> {
        self.view.bucket_ranges(gtin, bucket)
    }
}

/// The block's changes so far, over the view: later records see earlier ones.
#[derive(Clone, Default)]
struct Overlay {
    states: BTreeMap<StateKey, StateValue>,
    listed: BTreeMap<SubjectId, Issuance>,
    ranges: Vec<RangeIssuance>,
    accepted_ids: BTreeSet<RecordId>,
    lot_items: Vec<(SubjectId, SubjectId)>,
}

/// One record's changes, merged into the overlay only if the record is accepted.
struct Scratch<'a, V: LedgerView> {
    view: &'a V,
    base: &'a Overlay,
    ov: Overlay,
    /// Subjects whose chain gets this record, in first-touch order.
    touched: Vec<SubjectId>,
}

impl<'a, V: LedgerView> Scratch<'a, V> {
    fn state(&self, key: &StateKey) -> Result<Option<StateValue>, StorageError> {
        if let Some(v) = self.ov.states.get(key).or_else(|| self.base.states.get(key)) {
            return Ok(Some(v.clone()));
        }
        self.view.state(key)
    }

    fn org(&self, id: &OrgId) -> Result<Option<Organisation>, StorageError> {
        Ok(match self.state(&StateKey::Org(id.clone()))? {
            Some(StateValue::Org(o)) => Some(o),
            _ => None,
        })
    }

    fn validators(&self) -> Result<ValidatorSet, StorageError> {
        Ok(match self.state(&StateKey::Validators)? {
            Some(StateValue::Validators(v)) => v,
            _ => ValidatorSet::default(),
        })
    }

    fn put_org(&mut self, org: Organisation) {
        self.ov.states.insert(StateKey::Org(org.id.clone()), StateValue::Org(org));
    }

    fn entry(&self, id: &SubjectId) -> Result<Option<SubjectState>, StorageError> {
        Ok(match self.state(&StateKey::Subject(id.clone()))? {
            Some(StateValue::Subject(s)) => Some(s),
            _ => None,
        })
    }

    fn put(&mut self, id: &SubjectId, s: SubjectState) {
        self.ov.states.insert(StateKey::Subject(id.clone()), StateValue::Subject(s));
    }

    fn issuance(&self, code: &SubjectId) -> Result<Option<Issuance>, StorageError> {
        if let Some(i) = self.ov.listed.get(code).or_else(|| self.base.listed.get(code)) {
            return Ok(Some(i.clone()));
        }
        if let Some(i) = self.view.listed_code(code)? {
            return Ok(Some(i));
        }
        if let SubjectId::Item { gtin, serial } = code {
            let mut ranges = self.view.bucket_ranges(gtin, &RangeBucket::of_serial(serial.as_str()))?;
            ranges.extend(self.base.ranges.iter().chain(&self.ov.ranges).filter(|r| &r.gtin == gtin).cloned());
            if let Some(r) = ranges.into_iter().find(|r| r.range.contains(serial)) {
                return Ok(Some(r.issuance));
            }
        }
        Ok(None)
    }

    /// A subject's state, giving an issued item with no entry of its own a fresh one that
    /// follows its lot. Unknown subjects are rejected.
    fn subject(&mut self, id: &SubjectId) -> Result<SubjectState, RuleError> {
        if let Some(s) = self.entry(id)? {
            return Ok(s);
        }
        let Some(iss) = self.issuance(id)? else {
            return reject(RejectCode::UnknownSubject, format!("subject {id} is unknown: never issued or packed"));
        };
        let lot = self
            .entry(&iss.lot)?
            .ok_or_else(|| StorageError(format!("issued code {id} points at lot {} which has no state", iss.lot)))?;
        let s = SubjectState {
            custodian: lot.custodian.clone(),
            in_transit_to: lot.in_transit_to.clone(),
            sold: lot.sold,
            regulatory: Regulatory::Clear,
            customs_cleared: false,
            lot: Some(iss.lot.clone()),
            parent: None,
            units: 1,
            origin: lot.origin.clone(),
            record_count: 0,
            chain: Hash32::ZERO,
            detached: false,
        };
        self.ov.lot_items.push((iss.lot.clone(), id.clone()));
        self.put(id, s.clone());
        Ok(s)
    }

    /// Custody of `s`: its own if detached (or not an item), otherwise its lot's.
    fn custody_of(&self, s: &SubjectState) -> Result<SubjectState, StorageError> {
        if s.detached || s.lot.is_none() {
            return Ok(s.clone());
        }
        let lot_id = s.lot.as_ref().expect("checked above");
        let lot = self.entry(lot_id)?.ok_or_else(|| StorageError(format!("lot {lot_id} has no state")))?;
        let mut c = s.clone();
        c.custodian = lot.custodian;
        c.in_transit_to = lot.in_transit_to;
        c.sold = lot.sold;
        Ok(c)
    }

    /// The strictest regulatory standing of the subject, its lot and its logistic unit.
    fn regulatory_of(&self, s: &SubjectState) -> Result<Regulatory, StorageError> {
        let mut r = s.regulatory;
        for up in [&s.lot, &s.parent].into_iter().flatten() {
            if let Some(u) = self.entry(up)? {
                r = r.max(u.regulatory);
            }
        }
        Ok(r)
    }

    /// Gives an item its own custody, taking it out of its lot's pool of units.
    fn detach(&mut self, id: &SubjectId, s: &mut SubjectState) -> Result<(), RuleError> {
        if s.detached || s.lot.is_none() {
            return Ok(());
        }
        let c = self.custody_of(s)?;
        let lot_id = s.lot.clone().expect("checked above");
        let mut lot = self.entry(&lot_id)?.ok_or_else(|| StorageError(format!("lot {lot_id} has no state")))?;
        lot.units = lot.units.saturating_sub(1);
        self.put(&lot_id, lot);
        s.custodian = c.custodian;
        s.in_transit_to = c.in_transit_to;
        s.sold = c.sold;
        s.detached = true;
        self.put(id, s.clone());
        Ok(())
    }

    /// Puts the record into the subject's chain (done once the record is accepted).
    fn touch(&mut self, id: &SubjectId) -> Result<(), StorageError> {
        if self.touched.contains(id) {
            return Ok(());
        }
        let key = StateKey::Subject(id.clone());
        if !self.ov.states.contains_key(&key) {
            let v = self.state(&key)?.ok_or_else(|| StorageError(format!("touched subject {id} has no state")))?;
            self.ov.states.insert(key, v);
        }
        self.touched.push(id.clone());
        Ok(())
    }

    fn role(&self, author: &Organisation, role: Role, what: &str) -> Result<(), RuleError> {
        if !author.has_role(role) {
            return reject(
                RejectCode::RoleNotAllowed,
                format!("{} is not a {} and may not {what}", author.id, role.as_str()),
            );
        }
        Ok(())
    }

    /// Checks the author may move `s` now: custodian, not in transit, not sold, not held
    /// or recalled, not packed in a logistic unit (move the unit instead).
    fn check_movable(&self, id: &SubjectId, s: &SubjectState, author: &OrgId, verb: &str) -> Result<(), RuleError> {
        let c = self.custody_of(s)?;
        if &c.custodian != author {
            return reject(
                RejectCode::NotCustodian,
                format!("{author} may not {verb} {id}: its custodian is {}", c.custodian),
            );
        }
        match self.regulatory_of(s)? {
            Regulatory::Held => return reject(RejectCode::SubjectHeld, format!("{id} is held by a regulator")),
            Regulatory::Recalled => return reject(RejectCode::SubjectRecalled, format!("{id} is recalled")),
            Regulatory::Clear => {}
        }
        if c.sold {
            return reject(RejectCode::SubjectSold, format!("{id} was sold"));
        }
        if let Some(to) = &c.in_transit_to {
            return reject(RejectCode::WrongTransitState, format!("{id} is in transit to {to}"));
        }
        if let Some(p) = &s.parent {
            return reject(RejectCode::Conflict, format!("{id} is packed in {p}: {verb} the logistic unit instead"));
        }
        Ok(())
    }

    /// Children of a logistic unit, in a stable order.
    fn children_of(&self, sscc: &SubjectId) -> Result<Vec<SubjectId>, StorageError> {
        Ok(match self.state(&StateKey::Contents(sscc.clone()))? {
            Some(StateValue::Contents(c)) => c,
            _ => vec![],
        })
    }
}

/// Applies `block` on top of `view`. Pure: same inputs, same output, on every node.
pub fn apply_block<V: LedgerView>(view: &V, block: &Block) -> Result<WriteSet, ApplyError> {
    let view = &BlockReads::new(view);
    let head = view.head()?;
    if block.height != head.height + 1 {
        return Err(ApplyError::Height { got: block.height, expected: head.height + 1 });
    }
    if block.time_ms < head.time_ms {
        return Err(ApplyError::TimeWentBack { got: block.time_ms, prev: head.time_ms });
    }
    if block.records.len() > BLOCK_RECORDS_MAX {
        return Err(ApplyError::TooManyRecords { got: block.records.len() });
    }

    // Each record is encoded once, for its id, its size check, its signing message, the
    // block's bytes and its row.
    let mut encoded: Vec<Vec<u8>> = block.records.iter().map(SignedRecord::to_bytes).collect();
    let ids: Vec<RecordId> = encoded.iter().map(|b| SignedRecord::id_of_bytes(b)).collect();
    let sig_ok = verify_signatures(view, &head.ledger_id, &block.records, &encoded)?;
    let in_view: Vec<bool> = view.record_positions(&ids)?.iter().map(Option::is_some).collect();

    let mut ov = Overlay::default();
    let mut ws = WriteSet::default();
    let mut leaves = Vec::new();
    let mut log_size = head.log_size;
    let mut stored = Vec::with_capacity(block.records.len());
    for (i, rec) in block.records.iter().enumerate() {
        let id = ids[i];
        let mut scratch = Scratch { view, base: &ov, ov: Overlay::default(), touched: vec![] };
        let meta = RecordMeta { id, encoded_len: encoded[i].len(), sig: sig_ok[i], in_view: in_view[i] };
        let result = check_and_apply(&mut scratch, &head, block, rec, &meta);
        let outcome = match result {
            Ok(()) => {
                let Scratch { ov: mut merged, touched, .. } = scratch;
                // Every touched subject's chain gets this record; `touch` put each one in
                // the scratch overlay.
                for sid in &touched {
                    let key = StateKey::Subject(sid.clone());
                    let Some(StateValue::Subject(st)) = merged.states.get_mut(&key) else {
                        unreachable!("touch() puts every touched subject into the overlay");
                    };
                    ws.subject_records.push((sid.clone(), st.record_count, id));
                    st.push_record(&id);
                }
                let subjects = touched;
                let log_index = log_size;
                log_size += 1;
                leaves.push(merkle::leaf_hash(id.as_bytes()));
                ws.org_records.push((rec.record.author.clone(), log_index, id));
                ws.listed_codes.extend(merged.listed.iter().map(|(k, v)| (k.clone(), v.clone())));
                ws.ranges.extend(merged.ranges.iter().cloned());
                ws.lot_items.extend(merged.lot_items.iter().cloned());
                ov.states.extend(merged.states);
                ov.listed.extend(merged.listed);
                ov.ranges.extend(merged.ranges);
                ov.accepted_ids.insert(id);
                ws.accepted.push(AcceptedRecord { id, log_index, bytes: std::mem::take(&mut encoded[i]), subjects });
                Outcome::Accepted { log_index }
            }
            Err(RuleError::Reject(r)) => Outcome::Rejected { code: r.code, message: r.message },
            Err(RuleError::Storage(e)) => return Err(ApplyError::Storage(e)),
        };
        // The log holds it (now, earlier in the block, or in an earlier block) or not.
        let logged = in_view[i] || ov.accepted_ids.contains(&id);
        stored.push(if logged {
            StoredRecord::Logged(id)
        } else {
            StoredRecord::Inline(std::mem::take(&mut encoded[i]))
        });
        ws.receipts.push(Receipt { record_id: id, height: block.height, outcome });
    }

    // Holdings index: compare each changed subject's custodian with the stored one.
    for (key, value) in &ov.states {
        let (StateKey::Subject(sid), StateValue::Subject(new)) = (key, value) else { continue };
        let old = match view.state(key)? {
            Some(StateValue::Subject(s)) => Some(s),
            _ => None,
        };
        let holder = |s: &SubjectState| (s.detached || s.lot.is_none()).then(|| s.custodian.clone());
        let (before, after) = (old.as_ref().and_then(holder), holder(new));
        if before != after {
            if let Some(b) = before {
                ws.holdings_remove.push((b, sid.clone()));
            }
            if let Some(a) = after {
                ws.holdings_add.push((a, sid.clone()));
            }
        }
    }

    let log = merkle::append(view, head.log_size, &leaves).map_err(|e| ApplyError::Log(e.to_string()))?;
    let states: Vec<StateWrite> = ov.states.into_iter().map(|(k, v)| StateWrite::new(k, v)).collect();
    let changes: Vec<(Hash32, Hash32)> = states.iter().map(|s| (s.map_key, s.value_hash)).collect();
    let smt = smt::update(view, head.state_root, &changes).map_err(|e| ApplyError::StateMap(e.to_string()))?;

    let header = BlockHeader {
        ledger_id: head.ledger_id.clone(),
        height: block.height,
        prev_hash: head.header_hash,
        time_ms: block.time_ms,
        proposer: block.proposer.clone(),
        records_hash: records_hash(&ids),
        receipts_hash: receipts_hash(&ws.receipts),
        log_size: log.new_size,
        log_root: log.new_root,
        state_root: smt.new_root,
    };
    ws.head = Some(Head {
        height: block.height,
        header_hash: header.hash(),
        time_ms: block.time_ms,
        log_size: log.new_size,
        log_root: log.new_root,
        state_root: smt.new_root,
        ..head
    });
    ws.states = states;
    ws.log_nodes = log.nodes;
    ws.smt_nodes = smt.nodes;
    ws.header = Some(header);
    let block =
        StoredBlock { height: block.height, time_ms: block.time_ms, proposer: block.proposer.clone(), records: stored };
    ws.block_bytes = Some(codec::encode(&block));
    Ok(ws)
}

/// The records hash of a header: over the ids of all the block's records, in order.
pub fn records_hash(ids: &[RecordId]) -> Hash32 {
    let parts: Vec<&[u8]> = ids.iter().map(|i| i.as_bytes().as_slice()).collect();
    codec::domain_hash_parts(Domain::BlockRecords, &parts)
}

/// The receipts hash of a header: over the canonical bytes of the receipts, in order.
pub fn receipts_hash(receipts: &[Receipt]) -> Hash32 {
    codec::domain_hash(Domain::BlockRecords, &codec::encode(receipts))
}

/// Verifies the authors' signatures of a block in one batch, falling back to one at a
/// time to find the bad ones; a signature this node verified already (when the record was
/// submitted to it, [`crate::sigbatch::VERIFIED`]) is taken as good. A record whose key is not in the view yet (added earlier in
/// the same block) is marked unverified here and checked during apply.
fn verify_signatures<V: LedgerView>(
    view: &V,
    ledger: &LedgerId,
    records: &[SignedRecord],
    encoded: &[Vec<u8>],
) -> Result<Vec<SigCheck>, StorageError> {
    let mut out = vec![SigCheck::Later; records.len()];
    let mut idx = Vec::new();
    let mut msgs = Vec::new();
    let mut sigs = Vec::new();
    let mut keys = Vec::new();
    let mut orgs: HashMap<OrgId, Option<Organisation>> = HashMap::new();
    // Decompressing a key costs about as much as a quarter of a verification; most blocks
    // carry many records of few keys.
    let mut points: HashMap<PublicKey, VerifyingKey> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if !orgs.contains_key(&r.record.author) {
            let o = match view.state(&StateKey::Org(r.record.author.clone()))? {
                Some(StateValue::Org(o)) => Some(o),
                _ => None,
            };
            orgs.insert(r.record.author.clone(), o);
        }
        let org = orgs.get(&r.record.author).and_then(Option::as_ref);
        if let Some(k) = org.and_then(|o| o.key(&r.record.key_id)) {
            let key = *points.entry(k.public_key).or_insert_with(|| k.public_key.verifying_key());
            let msg = r.signing_message_from(ledger, &encoded[i]);
            let sig = r.signature.to_dalek();
            // Checked by this node when it was submitted here or forwarded to the leader.
            if crate::sigbatch::VERIFIED.knows(&key, &msg, &sig) {
                out[i] = SigCheck::Good;
                continue;
            }
            idx.push(i);
            msgs.push(msg);
            sigs.push(sig);
            keys.push(key);
        }
    }
    let msg_refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    for (i, ok) in idx.into_iter().zip(crate::sigbatch::verify_each(&msg_refs, &sigs, &keys)) {
        out[i] = if ok { SigCheck::Good } else { SigCheck::Bad };
    }
    Ok(out)
}

fn verify_one(key: &VerifyingKey, msg: &[u8], sig: &Signature) -> bool {
    key.verify_strict(msg, sig).is_ok()
}

/// What apply knows of a record before its rules run, from block-wide passes.
struct RecordMeta {
    id: RecordId,
    /// Length of its canonical bytes.
    encoded_len: usize,
    sig: SigCheck,
    /// Whether the view holds it already (an earlier block applied it).
    in_view: bool,
}

/// The batch check's verdict on one record's author signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SigCheck {
    Good,
    Bad,
    /// The key was not known at the start of the block; check during apply.
    Later,
}

/// The author's key at this point, if it may sign now.
fn author_key<V: LedgerView>(s: &Scratch<'_, V>, rec: &SignedRecord) -> Result<(Organisation, OrgKey), RuleError> {
    let r = &rec.record;
    let Some(org) = s.org(&r.author)? else {
        return reject(RejectCode::UnknownOrganisation, format!("author {} is not a known organisation", r.author));
    };
    let Some(key) = org.key(&r.key_id).cloned() else {
        return reject(RejectCode::KeyNotValid, format!("{} has no key {}", r.author, r.key_id));
    };
    if let Some(why) = key.refusal(&r.author, r.time_ms) {
        return reject(RejectCode::KeyNotValid, why);
    }
    Ok((org, key))
}

fn check_and_apply<V: LedgerView>(
    s: &mut Scratch<'_, V>,
    head: &Head,
    block: &Block,
    rec: &SignedRecord,
    meta: &RecordMeta,
) -> Result<(), RuleError> {
    let id = &meta.id;
    if let Err(e) = rec.validate_form_sized(meta.encoded_len) {
        return reject(RejectCode::Malformed, e.to_string());
    }
    if meta.in_view || s.base.accepted_ids.contains(id) {
        return reject(RejectCode::Duplicate, format!("record {id} was applied before"));
    }
    let r = &rec.record;
    let window = head.record_time_window_ms;
    if r.time_ms.abs_diff(block.time_ms) > window {
        return reject(
            RejectCode::TimeOutOfWindow,
            format!("record time {} ms is more than {window} ms from block time {} ms", r.time_ms, block.time_ms),
        );
    }
    let (author, key) = author_key(s, rec)?;
    let sig_good = match meta.sig {
        SigCheck::Good => true,
        SigCheck::Bad => false,
        SigCheck::Later => rec.verify_author(&head.ledger_id, &key.public_key),
    };
    if !sig_good {
        return reject(
            RejectCode::BadSignature,
            format!("signature of {} with key {} does not verify", r.author, r.key_id),
        );
    }

    match &r.body {
        RecordBody::IssueCodes(ic) => {
            s.role(&author, Role::Producer, "issue codes")?;
            let lot_id = SubjectId::lot_of(ic.product.gtin.clone(), ic.lot.clone());
            let issuance = Issuance { lot: lot_id.clone(), record: *id };
            match &ic.codes {
                CodeSet::Range(range) => {
                    check_gs1_prefix(&author, &ic.product.gtin)?;
                    check_range_free(s, &ic.product.gtin, range)?;
                    s.ov.ranges.push(RangeIssuance { gtin: ic.product.gtin.clone(), range: range.clone(), issuance });
                }
                CodeSet::Serials(serials) => {
                    check_gs1_prefix(&author, &ic.product.gtin)?;
                    for serial in serials {
                        let item = SubjectId::item(ic.product.gtin.clone(), serial.clone());
                        if let Some(prev) = s.issuance(&item)? {
                            return reject(
                                RejectCode::AlreadyIssued,
                                format!("{item} was issued before in lot {}", prev.lot),
                            );
                        }
                        s.ov.listed.insert(item, issuance.clone());
                    }
                }
                CodeSet::Codes(codes) => {
                    for code in codes {
                        check_scheme_prefix(&author, code)?;
                        if let Some(prev) = s.issuance(code)? {
                            return reject(
                                RejectCode::AlreadyIssued,
                                format!("{code} was issued before in lot {}", prev.lot),
                            );
                        }
                        if s.entry(code)?.is_some() {
                            return reject(RejectCode::AlreadyIssued, format!("{code} is already on the ledger"));
                        }
                        s.ov.listed.insert(code.clone(), issuance.clone());
                    }
                }
            }
            let lot = match s.entry(&lot_id)? {
                Some(mut lot) => {
                    if lot.origin != r.author {
                        return reject(
                            RejectCode::Conflict,
                            format!("lot {lot_id} belongs to {}, not {}", lot.origin, r.author),
                        );
                    }
                    lot.units += ic.codes.count();
                    lot
                }
                None => new_state(&r.author, ic.codes.count()),
            };
            s.put(&lot_id, lot);
            s.touch(&lot_id)?;
        }
        RecordBody::CertifyConformity(c) => {
            s.role(&author, Role::Producer, "certify conformity")?;
            let lot_id = SubjectId::lot_of(c.gtin.clone(), c.lot.clone());
            let lot = s.subject(&lot_id)?;
            if lot.origin != r.author {
                return reject(
                    RejectCode::NotCustodian,
                    format!("{} may not certify lot {lot_id}: it was issued by {}", r.author, lot.origin),
                );
            }
            s.put(&lot_id, lot);
            s.touch(&lot_id)?;
        }
        RecordBody::Inspection(rep) => {
            s.role(&author, Role::InspectionBody, "report inspections")?;
            if !author.inspection_scope.iter().any(|sc| rep.standard.starts_with(sc.as_str())) {
                return reject(
                    RejectCode::OutOfScope,
                    format!("standard {:?} is outside the inspection scope of {}", rep.standard, r.author),
                );
            }
            for sid in &rep.subjects {
                // Into the scratch overlay now, as `touch` would, without reading it again.
                let st = s.subject(sid)?;
                s.put(sid, st);
                s.touch(sid)?;
            }
        }
        RecordBody::Ship(sh) => {
            if s.org(&sh.to)?.is_none() {
                return reject(
                    RejectCode::UnknownOrganisation,
                    format!("recipient {} is not a known organisation", sh.to),
                );
            }
            for sid in &sh.subjects {
                let mut st = s.subject(sid)?;
                s.check_movable(sid, &st, &r.author, "ship")?;
                s.detach(sid, &mut st)?;
                st.in_transit_to = Some(sh.to.clone());
                s.put(sid, st);
                s.touch(sid)?;
                for child in s.children_of(sid)? {
                    let mut cs = s.subject(&child)?;
                    cs.in_transit_to = Some(sh.to.clone());
                    s.put(&child, cs);
                    s.touch(&child)?;
                }
            }
        }
        RecordBody::Receive(rc) => {
            for sid in &rc.subjects {
                let mut st = s.subject(sid)?;
                if let Some(p) = &st.parent {
                    return reject(RejectCode::Conflict, format!("{sid} is packed in {p}: receive the logistic unit"));
                }
                let c = s.custody_of(&st)?;
                if c.in_transit_to.as_ref() != Some(&r.author) {
                    let why = match &c.in_transit_to {
                        Some(to) => format!("{sid} was shipped to {to}, not {}", r.author),
                        None => format!("{sid} is not in transit"),
                    };
                    let code = if c.in_transit_to.is_some() {
                        RejectCode::NotRecipient
                    } else {
                        RejectCode::WrongTransitState
                    };
                    return reject(code, why);
                }
                if c.custodian != rc.from {
                    return reject(
                        RejectCode::NotCustodian,
                        format!("{sid} was shipped by {}, not {}", c.custodian, rc.from),
                    );
                }
                s.detach(sid, &mut st)?;
                st.custodian = r.author.clone();
                st.in_transit_to = None;
                s.put(sid, st);
                s.touch(sid)?;
                for child in s.children_of(sid)? {
                    let mut cs = s.subject(&child)?;
                    cs.custodian = r.author.clone();
                    cs.in_transit_to = None;
                    s.put(&child, cs);
                    s.touch(&child)?;
                }
            }
        }
        RecordBody::Aggregate(ag) => {
            let parent = SubjectId::LogisticUnit { sscc: ag.parent.clone() };
            let mut unit = match s.entry(&parent)? {
                Some(u) => {
                    s.check_movable(&parent, &u, &r.author, "pack into")?;
                    u
                }
                None => new_state(&r.author, 0),
            };
            let mut contents = s.children_of(&parent)?;
            if contents.len() + ag.children.len() > UNIT_CHILDREN_MAX {
                return reject(
                    RejectCode::Conflict,
                    format!("{parent} would hold more than {UNIT_CHILDREN_MAX} children"),
                );
            }
            for child in &ag.children {
                let mut cs = s.subject(child)?;
                s.check_movable(child, &cs, &r.author, "pack")?;
                s.detach(child, &mut cs)?;
                cs.parent = Some(parent.clone());
                s.put(child, cs);
                s.touch(child)?;
                contents.push(child.clone());
            }
            unit.units = contents.len() as u64;
            s.put(&parent, unit);
            s.ov.states.insert(StateKey::Contents(parent.clone()), StateValue::Contents(contents));
            s.touch(&parent)?;
        }
        RecordBody::Disaggregate(ag) => {
            let parent = SubjectId::LogisticUnit { sscc: ag.parent.clone() };
            let mut unit = s.subject(&parent)?;
            let c = s.custody_of(&unit)?;
            if c.custodian != r.author {
                return reject(
                    RejectCode::NotCustodian,
                    format!("{} may not unpack {parent}: its custodian is {}", r.author, c.custodian),
                );
            }
            if let Some(to) = &c.in_transit_to {
                return reject(RejectCode::WrongTransitState, format!("{parent} is in transit to {to}"));
            }
            let mut contents = s.children_of(&parent)?;
            for child in &ag.children {
                let Some(pos) = contents.iter().position(|c| c == child) else {
                    return reject(RejectCode::Conflict, format!("{child} is not packed in {parent}"));
                };
                contents.remove(pos);
                let mut cs = s.subject(child)?;
                cs.parent = None;
                s.put(child, cs);
                s.touch(child)?;
            }
            unit.units = contents.len() as u64;
            s.put(&parent, unit);
            s.ov.states.insert(StateKey::Contents(parent.clone()), StateValue::Contents(contents));
            s.touch(&parent)?;
        }
        RecordBody::Sell(sl) => {
            for sid in &sl.subjects {
                let mut st = s.subject(sid)?;
                s.check_movable(sid, &st, &r.author, "sell")?;
                s.detach(sid, &mut st)?;
                st.sold = true;
                s.put(sid, st);
                s.touch(sid)?;
            }
        }
        RecordBody::Regulatory(ra) => {
            s.role(&author, Role::Regulator, "take regulatory action")?;
            for sid in &ra.subjects {
                let mut st = s.subject(sid)?;
                let effective = s.regulatory_of(&st)?;
                match ra.action {
                    RegulatoryKind::Hold => {
                        if effective == Regulatory::Recalled {
                            return reject(
                                RejectCode::SubjectRecalled,
                                format!("{sid} is recalled; a hold adds nothing"),
                            );
                        }
                        st.regulatory = Regulatory::Held;
                    }
                    RegulatoryKind::Release => {
                        if st.regulatory != Regulatory::Held {
                            return reject(
                                RejectCode::Conflict,
                                format!(
                                    "{sid} is not held itself (it is {:?}); only a hold can be released",
                                    st.regulatory
                                ),
                            );
                        }
                        st.regulatory = Regulatory::Clear;
                    }
                    RegulatoryKind::Recall => st.regulatory = Regulatory::Recalled,
                    RegulatoryKind::CustomsClearance => {
                        match effective {
                            Regulatory::Held => {
                                return reject(
                                    RejectCode::SubjectHeld,
                                    format!("{sid} is held; it cannot clear customs"),
                                );
                            }
                            Regulatory::Recalled => {
                                return reject(
                                    RejectCode::SubjectRecalled,
                                    format!("{sid} is recalled; it cannot clear customs"),
                                );
                            }
                            Regulatory::Clear => {}
                        }
                        st.customs_cleared = true;
                    }
                }
                s.put(sid, st);
                s.touch(sid)?;
            }
        }
        RecordBody::Governance(action) => {
            s.role(&author, Role::Regulator, "propose governance changes")?;
            check_quorum(s, head, rec)?;
            apply_governance(s, block, action)?;
        }
    }
    Ok(())
}

fn new_state(owner: &OrgId, units: u64) -> SubjectState {
    SubjectState {
        custodian: owner.clone(),
        in_transit_to: None,
        sold: false,
        regulatory: Regulatory::Clear,
        customs_cleared: false,
        lot: None,
        parent: None,
        units,
        origin: owner.clone(),
        record_count: 0,
        chain: Hash32::ZERO,
        detached: true,
    }
}

fn check_gs1_prefix(author: &Organisation, gtin: &Gtin) -> Result<(), RuleError> {
    let ok = author.code_prefixes.iter().any(|p| p.scheme == "gs1" && gtin.company_prefix_matches(&p.prefix));
    if !ok {
        return reject(
            RejectCode::PrefixNotAllowed,
            format!("gtin {} is not under a GS1 company prefix of {}", gtin.as_str(), author.id),
        );
    }
    Ok(())
}

/// The scheme name and code body of a non-GS1 code, for prefix checks.
fn scheme_of(code: &SubjectId) -> (String, String) {
    match code {
        SubjectId::Ecode(c) => ("ecode".into(), c.to_string()),
        SubjectId::Ccc(c) => ("ccc".into(), c.to_string()),
        SubjectId::Custom { scheme, code } => (scheme.to_string(), code.to_string()),
        other => ("gs1".into(), other.to_string()),
    }
}

fn check_scheme_prefix(author: &Organisation, code: &SubjectId) -> Result<(), RuleError> {
    let (scheme, body) = scheme_of(code);
    if !author.code_prefixes.iter().any(|p| p.scheme == scheme && body.starts_with(&p.prefix)) {
        return reject(RejectCode::PrefixNotAllowed, format!("{code} is not under a {scheme} prefix of {}", author.id));
    }
    Ok(())
}

/// A new serial range may share no serial with an earlier range or listed serial.
fn check_range_free<V: LedgerView>(s: &Scratch<'_, V>, gtin: &Gtin, range: &SerialRange) -> Result<(), RuleError> {
    let mut ranges = s.view.bucket_ranges(gtin, &RangeBucket::of_range(range))?;
    ranges.extend(s.base.ranges.iter().chain(&s.ov.ranges).filter(|r| &r.gtin == gtin).cloned());
    if let Some(r) = ranges.iter().find(|r| r.range.overlaps(range)) {
        return reject(
            RejectCode::AlreadyIssued,
            format!("serial range {} overlaps a range issued before in lot {}", describe_range(range), r.issuance.lot),
        );
    }
    let encoded_prefix = SubjectId::encode_component(&range.prefix);
    let mut listed = s.view.listed_serials_with_prefix(gtin, &encoded_prefix)?;
    listed.extend(s.base.listed.keys().cloned());
    for item in listed {
        if let SubjectId::Item { gtin: g, serial } = &item
            && g == gtin
            && range.contains(serial)
        {
            return reject(
                RejectCode::AlreadyIssued,
                format!("serial range {} contains {item}, issued before", describe_range(range)),
            );
        }
    }
    Ok(())
}

fn describe_range(r: &SerialRange) -> String {
    match (r.serial_at(0), r.last()) {
        (Some(a), Some(b)) => format!("{a}..{b} ({} serials)", r.count),
        _ => format!("{:?}", r),
    }
}

/// Governance needs the author and approvers to be distinct regulators, each with a valid
/// key and signature, numbering at least the genesis quorum.
fn check_quorum<V: LedgerView>(s: &Scratch<'_, V>, head: &Head, rec: &SignedRecord) -> Result<(), RuleError> {
    let mut signers = BTreeSet::from([rec.record.author.clone()]);
    let msg = signing_message(&head.ledger_id, &rec.record);
    for a in &rec.approvals {
        let Some(org) = s.org(&a.org)? else {
            return reject(RejectCode::UnknownOrganisation, format!("approver {} is not a known organisation", a.org));
        };
        if !org.has_role(Role::Regulator) {
            return reject(RejectCode::RoleNotAllowed, format!("approver {} is not a regulator", a.org));
        }
        let Some(key) = org.key(&a.key_id).filter(|k| k.revoked_at_ms.is_none() && k.valid_at(rec.record.time_ms))
        else {
            return reject(RejectCode::KeyNotValid, format!("approver {} has no valid key {}", a.org, a.key_id));
        };
        if !verify_one(&key.public_key.verifying_key(), &msg, &a.signature.to_dalek()) {
            return reject(
                RejectCode::BadSignature,
                format!("approval of {} with key {} does not verify", a.org, a.key_id),
            );
        }
        if !signers.insert(a.org.clone()) {
            return reject(RejectCode::Malformed, format!("{} approves twice", a.org));
        }
    }
    let got = signers.len() as u32;
    if got < head.governance_quorum {
        return reject(
            RejectCode::QuorumNotMet,
            format!("{got} distinct regulators signed, governance needs {}", head.governance_quorum),
        );
    }
    Ok(())
}

fn apply_governance<V: LedgerView>(
    s: &mut Scratch<'_, V>,
    block: &Block,
    action: &GovernanceAction,
) -> Result<(), RuleError> {
    match action {
        GovernanceAction::AddOrganisation(o) => {
            if s.org(&o.id)?.is_some() {
                return reject(RejectCode::Conflict, format!("organisation {} exists already", o.id));
            }
            s.put_org(o.clone());
        }
        GovernanceAction::UpdateOrganisation(o) => {
            let Some(cur) = s.org(&o.id)? else {
                return reject(RejectCode::UnknownOrganisation, format!("organisation {} does not exist", o.id));
            };
            s.put_org(Organisation { keys: cur.keys, ..o.clone() });
        }
        GovernanceAction::AddKey { org, key } => {
            let Some(mut cur) = s.org(org)? else {
                return reject(RejectCode::UnknownOrganisation, format!("organisation {org} does not exist"));
            };
            if cur.key(&key.key_id).is_some() {
                return reject(RejectCode::Conflict, format!("{org} already has a key {}", key.key_id));
            }
            if cur.keys.len() >= crate::org::ORG_KEYS_MAX {
                return reject(RejectCode::Conflict, format!("{org} already holds {} keys", cur.keys.len()));
            }
            cur.keys.push(OrgKey { revoked_at_ms: None, ..key.clone() });
            s.put_org(cur);
        }
        GovernanceAction::RevokeKey { org, key_id } => {
            let Some(mut cur) = s.org(org)? else {
                return reject(RejectCode::UnknownOrganisation, format!("organisation {org} does not exist"));
            };
            let Some(k) = cur.keys.iter_mut().find(|k| &k.key_id == key_id) else {
                return reject(RejectCode::KeyNotValid, format!("{org} has no key {key_id}"));
            };
            if k.revoked_at_ms.is_some() {
                return reject(RejectCode::Conflict, format!("key {key_id} of {org} is revoked already"));
            }
            k.revoked_at_ms = Some(block.time_ms);
            s.put_org(cur);
        }
        GovernanceAction::AddValidator(v) => {
            if s.org(&v.org)?.is_none() {
                return reject(
                    RejectCode::UnknownOrganisation,
                    format!("validator's organisation {} does not exist", v.org),
                );
            }
            let mut set = s.validators()?;
            if set.validators.iter().any(|x| x.node_id == v.node_id || x.public_key == v.public_key) {
                return reject(
                    RejectCode::Conflict,
                    format!("validator {} or its key is already in the set", v.node_id),
                );
            }
            set.validators.push(v.clone());
            s.ov.states.insert(StateKey::Validators, StateValue::Validators(set));
        }
        GovernanceAction::RemoveValidator { node_id } => {
            let mut set = s.validators()?;
            let Some(pos) = set.validators.iter().position(|x| &x.node_id == node_id) else {
                return reject(RejectCode::Conflict, format!("{node_id} is not a validator"));
            };
            if set.validators.len() == 1 {
                return reject(RejectCode::Conflict, format!("{node_id} is the last validator"));
            }
            set.validators.remove(pos);
            s.ov.states.insert(StateKey::Validators, StateValue::Validators(set));
        }
    }
    Ok(())
}

/// The state a ledger starts from: genesis organisations and validators in the state map.
pub fn genesis_writes<S: LogNodeStore + SmtNodeStore>(
    store: &S,
    genesis: &crate::org::Genesis,
) -> Result<WriteSet, ApplyError> {
    let mut states: Vec<StateWrite> = genesis
        .organisations
        .iter()
        .map(|o| StateWrite::new(StateKey::Org(o.id.clone()), StateValue::Org(o.clone())))
        .collect();
    states.push(StateWrite::new(StateKey::Validators, StateValue::Validators(genesis.validator_set())));
    let changes: Vec<(Hash32, Hash32)> = states.iter().map(|s| (s.map_key, s.value_hash)).collect();
    let smt = smt::update(store, Hash32::ZERO, &changes).map_err(|e| ApplyError::StateMap(e.to_string()))?;
    Ok(WriteSet {
        head: Some(Head {
            ledger_id: genesis.ledger_id.clone(),
            height: 0,
            header_hash: genesis.hash(),
            time_ms: genesis.genesis_time_ms,
            log_size: 0,
            log_root: merkle::empty_root(),
            state_root: smt.new_root,
            record_time_window_ms: genesis.record_time_window_ms,
            governance_quorum: genesis.governance.quorum,
        }),
        states,
        smt_nodes: smt.nodes,
        ..WriteSet::default()
    })
}
