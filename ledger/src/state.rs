//! The state the ledger keeps per subject and per organisation, and its place in the
//! authenticated state map.
//!
//! Each entry is a canonical value under a domain-separated key; the state map (see
//! [`crate::smt`]) commits to `value_hash(entry)` so an auditor holding a state root can
//! check one entry with a short proof. A subject's entry carries a hash chain over every
//! record that affected it: recomputing that chain from the records a server hands out
//! and matching it against the state map is what proves the server hid nothing.

use serde::{Deserialize, Serialize};

use crate::codec::{self, Domain};
use crate::hash::Hash32;
use crate::ids::SubjectId;
use crate::org::{OrgId, Organisation, ValidatorSet};
use crate::record::RecordId;

/// Regulatory standing of a subject. A recall is final; a hold can be released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regulatory {
    Clear,
    Held,
    Recalled,
}

/// Where a subject is in its life, as one word (derived from [`SubjectState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    InTransit,
    Held,
    Recalled,
    Sold,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::InTransit => "in_transit",
            Status::Held => "held",
            Status::Recalled => "recalled",
            Status::Sold => "sold",
        }
    }
}

/// What the ledger knows of one subject (a lot, an item with records of its own, a
/// logistic unit, a code of another scheme).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectState {
    /// Who holds it now.
    pub custodian: OrgId,
    /// Set while shipped and not yet received: the named recipient.
    pub in_transit_to: Option<OrgId>,
    pub sold: bool,
    pub regulatory: Regulatory,
    pub customs_cleared: bool,
    /// Items: the lot they were issued in. Lots: their issuer-side lot is themselves, so `None`.
    pub lot: Option<SubjectId>,
    /// The logistic unit it is packed in, if any.
    pub parent: Option<SubjectId>,
    /// Lots: units issued under the lot that have no entry of their own (they move with
    /// the lot). Logistic units: children packed in it. Items: 1.
    pub units: u64,
    /// The producer that issued it (lots and items) or packed it (logistic units).
    pub origin: OrgId,
    /// Number of records in the chain.
    pub record_count: u64,
    /// `chain_n = H(chain_{n-1} || record_id_n)`, `chain_0 = ZERO`.
    pub chain: Hash32,
    /// Items: whether custody is the item's own. An item that has records of its own
    /// (an inspection of that code, say) still moves with its lot until a custody record
    /// (ship, sell, pack) names it; then it leaves the lot's pool of units for good.
    /// Lots and logistic units: always true.
    pub detached: bool,
}

impl SubjectState {
    pub fn status(&self) -> Status {
        match self.regulatory {
            Regulatory::Recalled => Status::Recalled,
            Regulatory::Held => Status::Held,
            Regulatory::Clear if self.sold => Status::Sold,
            Regulatory::Clear if self.in_transit_to.is_some() => Status::InTransit,
            Regulatory::Clear => Status::Active,
        }
    }

    /// Appends a record to the subject's hash chain.
    pub fn push_record(&mut self, id: &RecordId) {
        self.chain = chain_link(&self.chain, id);
        self.record_count += 1;
    }
}

/// One link of a subject's hash chain.
pub fn chain_link(prev: &Hash32, id: &RecordId) -> Hash32 {
    codec::domain_hash_parts(Domain::SubjectChain, &[prev.as_bytes(), id.as_bytes()])
}

/// What the state map holds an entry for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StateKey {
    Subject(SubjectId),
    Org(OrgId),
    /// The current validator set (changed by governance).
    Validators,
    /// What a logistic unit holds, in packing order.
    Contents(SubjectId),
}

impl StateKey {
    /// The 32-byte key in the state map.
    pub fn map_key(&self) -> Hash32 {
        Self::map_key_of(&codec::encode(self))
    }

    /// [`StateKey::map_key`] of a key whose canonical bytes are `encoded`.
    pub(crate) fn map_key_of(encoded: &[u8]) -> Hash32 {
        codec::domain_hash(Domain::StateKey, encoded)
    }
}

/// A value in the state map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateValue {
    Subject(SubjectState),
    Org(Organisation),
    Validators(ValidatorSet),
    Contents(Vec<SubjectId>),
}

impl StateValue {
    pub fn value_hash(&self) -> Hash32 {
        Self::value_hash_of(&codec::encode(self))
    }

    /// [`StateValue::value_hash`] of a value whose canonical bytes are `encoded`.
    pub(crate) fn value_hash_of(encoded: &[u8]) -> Hash32 {
        codec::domain_hash(Domain::StateValue, encoded)
    }
}

/// A state entry a block wrote: its final value, with the canonical bytes and hashes apply
/// computed for the state map, so the store writes its rows without encoding it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateWrite {
    pub key: StateKey,
    pub value: StateValue,
    /// Canonical bytes of `key`: its row key in the states column family.
    pub key_bytes: Vec<u8>,
    /// Canonical bytes of `value`.
    pub value_bytes: Vec<u8>,
    /// `key.map_key()`.
    pub map_key: Hash32,
    /// `value.value_hash()`.
    pub value_hash: Hash32,
}

impl StateWrite {
    pub fn new(key: StateKey, value: StateValue) -> StateWrite {
        let key_bytes = codec::encode(&key);
        let value_bytes = codec::encode(&value);
        let map_key = StateKey::map_key_of(&key_bytes);
        let value_hash = StateValue::value_hash_of(&value_bytes);
        StateWrite { key, value, key_bytes, value_bytes, map_key, value_hash }
    }
}
