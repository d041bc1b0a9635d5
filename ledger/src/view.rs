//! What apply reads, and what it writes: the boundary between the pure core and storage.
//!
//! [`LedgerView`] is the read side of a ledger at one height; [`crate::store::Store`]
//! implements it over RocksDB or memory. [`WriteSet`] is everything one block changes,
//! produced by [`crate::apply::apply_block`] and written atomically by the store; it carries
//! the canonical bytes apply computed (records, block, states), so the store encodes
//! nothing again.

use serde::{Deserialize, Serialize};

use crate::block::BlockHeader;
use crate::hash::{Hash32, StorageError};
use crate::ids::{Gtin, SerialRange, SubjectId};
use crate::merkle::LogNodeStore;
use crate::org::{LedgerId, OrgId};
use crate::record::RecordId;
use crate::smt::{SmtNode, SmtNodeStore};
use crate::state::{StateKey, StateValue, StateWrite};

/// The latest applied block, as a store remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub ledger_id: LedgerId,
    pub height: u64,
    /// Hash of the latest header; at height 0, the genesis hash.
    pub header_hash: Hash32,
    pub time_ms: u64,
    pub log_size: u64,
    pub log_root: Hash32,
    pub state_root: Hash32,
    /// The window between record and block times, from genesis.
    pub record_time_window_ms: u64,
    /// Regulators that must sign a governance record, from genesis.
    pub governance_quorum: u32,
}

/// Where an issued code came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issuance {
    pub lot: SubjectId,
    pub record: RecordId,
}

/// Where serial ranges are filed: by serial length and *stem* (the prefix with its trailing
/// digits removed). A serial `s` can be in range `P`+`W` digits only if `|s| = |P| + W` and
/// `s` and `P` have the same stem, so overlap and membership checks only ever look at one
/// bucket instead of every range of a GTIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeBucket {
    pub serial_len: u8,
    pub stem: String,
}

impl RangeBucket {
    fn stem_of(s: &str) -> String {
        s.trim_end_matches(|c: char| c.is_ascii_digit()).to_string()
    }

    /// The bucket of every serial of `range`.
    pub fn of_range(range: &SerialRange) -> RangeBucket {
        RangeBucket {
            serial_len: (range.prefix.len() + range.width as usize) as u8,
            stem: Self::stem_of(&range.prefix),
        }
    }

    /// The bucket a serial would be filed under.
    pub fn of_serial(serial: &str) -> RangeBucket {
        RangeBucket { serial_len: serial.len() as u8, stem: Self::stem_of(serial) }
    }
}

/// A serial range issued under a GTIN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeIssuance {
    pub gtin: Gtin,
    pub range: SerialRange,
    pub issuance: Issuance,
}

/// Read access to a ledger at its current head. Everything apply needs to decide.
pub trait LedgerView: LogNodeStore + SmtNodeStore {
    fn head(&self) -> Result<Head, StorageError>;
    fn state(&self, key: &StateKey) -> Result<Option<StateValue>, StorageError>;
    /// Log index of an accepted record.
    fn record_position(&self, id: &RecordId) -> Result<Option<u64>, StorageError>;
    /// [`LedgerView::record_position`] of several records, in the order asked: apply asks
    /// for every record of a block at once, and a store may answer faster in one call.
    fn record_positions(&self, ids: &[RecordId]) -> Result<Vec<Option<u64>>, StorageError> {
        ids.iter().map(|id| self.record_position(id)).collect()
    }
    /// A code issued by a list (GS1 serial list or another scheme), by canonical subject.
    fn listed_code(&self, code: &SubjectId) -> Result<Option<Issuance>, StorageError>;
    /// Listed GS1 serials of `gtin` whose canonical subject string starts with
    /// `01/{gtin}/21/{encoded_serial_prefix}`.
    fn listed_serials_with_prefix(
        &self,
        gtin: &Gtin,
        encoded_serial_prefix: &str,
    ) -> Result<Vec<SubjectId>, StorageError>;
    /// The serial ranges issued under `gtin` in one bucket (see [`RangeBucket`]): the only
    /// ranges that can share a serial with a range or serial of that bucket.
    fn bucket_ranges(&self, gtin: &Gtin, bucket: &RangeBucket) -> Result<Vec<RangeIssuance>, StorageError>;
}

/// A receipt's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted { log_index: u64 },
    Rejected { code: crate::apply::RejectCode, message: String },
}

/// What became of one submitted record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub record_id: RecordId,
    pub height: u64,
    pub outcome: Outcome,
}

/// One accepted record and where it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedRecord {
    pub id: RecordId,
    pub log_index: u64,
    /// The signed record's canonical bytes (what `id` hashes), as the store keeps them.
    pub bytes: Vec<u8>,
    /// Subjects whose chains the record joined, in order.
    pub subjects: Vec<SubjectId>,
}

/// Everything one block changes. Written in one atomic, synced batch.
#[derive(Clone, Debug, Default)]
pub struct WriteSet {
    pub header: Option<BlockHeader>,
    /// The block as the store keeps it: records the log holds by id, the others inline.
    pub block_bytes: Option<Vec<u8>>,
    pub head: Option<Head>,
    pub accepted: Vec<AcceptedRecord>,
    pub receipts: Vec<Receipt>,
    /// Final values of every state entry the block changed, in key order.
    pub states: Vec<StateWrite>,
    pub log_nodes: Vec<(u8, u64, Hash32)>,
    pub smt_nodes: Vec<(Hash32, SmtNode)>,
    /// (subject, sequence number in its chain, record).
    pub subject_records: Vec<(SubjectId, u64, RecordId)>,
    /// (author, log index, record).
    pub org_records: Vec<(OrgId, u64, RecordId)>,
    pub listed_codes: Vec<(SubjectId, Issuance)>,
    pub ranges: Vec<RangeIssuance>,
    /// (lot, item) for items that got an entry of their own.
    pub lot_items: Vec<(SubjectId, SubjectId)>,
    /// (custodian, subject) pairs to add to and remove from the holdings index.
    pub holdings_add: Vec<(OrgId, SubjectId)>,
    pub holdings_remove: Vec<(OrgId, SubjectId)>,
}
