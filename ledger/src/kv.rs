//! The key-value backends under the store: RocksDB on disk, a sorted map in memory.
//!
//! The store's key layout and indexes are written once, over [`Backend`]; tests of the
//! pure parts use [`MemBackend`] and need no disk. Writes come as one [`Batch`], applied
//! atomically (RocksDB: one synced WriteBatch).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;

use crate::hash::StorageError;

/// The column families. Their names are part of the on-disk format (docs/ledger.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// Head, genesis hash, format version.
    Meta,
    /// height -> block (canonical bytes).
    Blocks,
    /// height -> block header.
    Headers,
    /// record id -> (log index, signed record).
    Records,
    /// log index -> record id.
    Positions,
    /// record id -> receipt (the latest for that id).
    Receipts,
    /// (level, index) -> hash of a perfect subtree of the Merkle log.
    LogNodes,
    /// node hash -> state-map node.
    SmtNodes,
    /// state key -> current state value.
    States,
    /// value hash -> state value, for reading the state at any past root.
    StateValues,
    /// (subject, sequence) -> record id.
    SubjectRecords,
    /// (organisation, log index) -> record id.
    OrgRecords,
    /// code -> issuance, for codes issued by a list.
    ListedCodes,
    /// (gtin, range start...) -> range issuance.
    Ranges,
    /// (lot, item) -> (), items of a lot that have entries of their own.
    LotItems,
    /// (custodian, subject) -> (), what each organisation holds.
    Holdings,
    /// (height, node id) -> checkpoint signature.
    CheckpointSigs,
}

impl Cf {
    pub const ALL: [Cf; 17] = [
        Cf::Meta,
        Cf::Blocks,
        Cf::Headers,
        Cf::Records,
        Cf::Positions,
        Cf::Receipts,
        Cf::LogNodes,
        Cf::SmtNodes,
        Cf::States,
        Cf::StateValues,
        Cf::SubjectRecords,
        Cf::OrgRecords,
        Cf::ListedCodes,
        Cf::Ranges,
        Cf::LotItems,
        Cf::Holdings,
        Cf::CheckpointSigs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Blocks => "blocks",
            Cf::Headers => "headers",
            Cf::Records => "records",
            Cf::Positions => "positions",
            Cf::Receipts => "receipts",
            Cf::LogNodes => "log_nodes",
            Cf::SmtNodes => "smt_nodes",
            Cf::States => "states",
            Cf::StateValues => "state_values",
            Cf::SubjectRecords => "subject_records",
            Cf::OrgRecords => "org_records",
            Cf::ListedCodes => "listed_codes",
            Cf::Ranges => "ranges",
            Cf::LotItems => "lot_items",
            Cf::Holdings => "holdings",
            Cf::CheckpointSigs => "checkpoint_sigs",
        }
    }
}

/// Key-value pairs returned by a scan, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One atomic group of writes.
#[derive(Default, Debug)]
pub struct Batch {
    pub ops: Vec<(Cf, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((cf, key, Some(value)));
    }
    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.ops.push((cf, key, None));
    }
}

/// A sorted key-value store with column families and atomic batches.
pub trait Backend: Send + Sync {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Entries whose key starts with `prefix`, in key order, starting at `start` (which
    /// must itself start with `prefix`), at most `limit` of them.
    fn scan(&self, cf: Cf, prefix: &[u8], start: &[u8], limit: usize) -> Result<Entries, StorageError>;
    fn write(&self, batch: Batch) -> Result<(), StorageError>;
}

/// In-memory backend for tests and tools.
#[derive(Default)]
#[allow(clippy::type_complexity)]
pub struct MemBackend {
    cfs: RwLock<BTreeMap<(Cf, Vec<u8>), Vec<u8>>>, // (column family, key) -> value
}

impl Backend for MemBackend {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let m = self.cfs.read().map_err(|_| StorageError("memory backend lock poisoned".into()))?;
        Ok(m.get(&(cf, key.to_vec())).cloned())
    }

    fn scan(&self, cf: Cf, prefix: &[u8], start: &[u8], limit: usize) -> Result<Entries, StorageError> {
        let m = self.cfs.read().map_err(|_| StorageError("memory backend lock poisoned".into()))?;
        Ok(m.range((cf, start.to_vec())..)
            .take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, batch: Batch) -> Result<(), StorageError> {
        let mut m = self.cfs.write().map_err(|_| StorageError("memory backend lock poisoned".into()))?;
        for (cf, k, v) in batch.ops {
            match v {
                Some(v) => m.insert((cf, k), v),
                None => m.remove(&(cf, k)),
            };
        }
        Ok(())
    }
}

/// RocksDB backend: one column family per [`Cf`], synced atomic batches.
pub struct RocksBackend {
    db: rocksdb::DB,
}

fn rerr(what: &str, e: rocksdb::Error) -> StorageError {
    StorageError(format!("rocksdb {what}: {e}"))
}

impl RocksBackend {
    pub fn open(path: &Path) -> Result<RocksBackend, StorageError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = Cf::ALL.iter().map(|c| rocksdb::ColumnFamilyDescriptor::new(c.name(), rocksdb::Options::default()));
        let db = rocksdb::DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|e| StorageError(format!("rocksdb open {}: {e}", path.display())))?;
        Ok(RocksBackend { db })
    }

    fn cf(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db.cf_handle(cf.name()).ok_or_else(|| StorageError(format!("column family {} missing", cf.name())))
    }
}

impl Backend for RocksBackend {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(|e| rerr("get", e))
    }

    fn scan(&self, cf: Cf, prefix: &[u8], start: &[u8], limit: usize) -> Result<Entries, StorageError> {
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf)?, mode) {
            let (k, v) = item.map_err(|e| rerr("scan", e))?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn write(&self, batch: Batch) -> Result<(), StorageError> {
        let mut wb = rocksdb::WriteBatch::default();
        for (cf, k, v) in batch.ops {
            let h = self.cf(cf)?;
            match v {
                Some(v) => wb.put_cf(h, k, v),
                None => wb.delete_cf(h, k),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo).map_err(|e| rerr("write", e))
    }
}
