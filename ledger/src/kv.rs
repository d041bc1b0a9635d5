//! The key-value backends under the store: RocksDB on disk, a sorted map in memory.
//!
//! The store's key layout and indexes are written once, over [`Backend`]; tests of the
//! pure parts use [`MemBackend`] and need no disk. Writes come as one [`Batch`], applied
//! atomically (RocksDB: one WriteBatch, synced unless [`Batch::without_sync`]).
//!
//! Two paths serve snapshots, whose size is the whole ledger: [`PointInTime`] gives a
//! read-only copy of the backend as it was at one moment (RocksDB: a checkpoint of hard
//! links, opened read-only), so an export streams from it while blocks go on landing in the
//! backend; [`Backend::stager`] writes a sorted stream of entries apart from the backend,
//! on any thread, and [`Backend::ingest`] makes it part of the backend later (RocksDB: table
//! files written beside the database and ingested whole, past the write-ahead log and
//! memtables).

use std::collections::BTreeMap;
#[cfg(feature = "rocksdb")]
use std::path::{Path, PathBuf};
use std::sync::RwLock;
#[cfg(feature = "rocksdb")]
use std::sync::atomic::{AtomicU64, Ordering};

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

    /// Position in [`Cf::ALL`]: how a snapshot stream names the column family.
    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn from_index(index: u8) -> Option<Cf> {
        Cf::ALL.get(usize::from(index)).copied()
    }

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

/// One atomic group of writes, applied in the order added. Keys and values are copied into
/// one buffer, and a key can be given in parts (the ledger prefix, then the rest), so a
/// block's ten thousand rows cost a few allocations instead of several each.
#[derive(Default, Debug)]
pub struct Batch {
    data: Vec<u8>,
    ops: Vec<Op>,
    /// Written without waiting for the disk (see [`Batch::without_sync`]).
    unsynced: bool,
}

/// One write: where its key and value (none for a delete) sit in the batch's buffer.
#[derive(Clone, Copy, Debug)]
struct Op {
    cf: Cf,
    key: (usize, usize),
    value: Option<(usize, usize)>,
}

impl Batch {
    /// Lets the backend return before the batch reaches the disk. The write is still atomic
    /// and survives the process being killed (it is in the operating system's hands); a power
    /// failure may lose it, and then every later batch with it (RocksDB recovers a prefix of
    /// its write-ahead log). Only for writes that can be made again from a synced source —
    /// the replicated node's blocks, which its Raft log holds.
    pub fn without_sync(mut self) -> Batch {
        self.unsynced = true;
        self
    }

    /// Whether the backend must sync this batch before returning.
    pub fn synced(&self) -> bool {
        !self.unsynced
    }

    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.put_parts(cf, &[&key], &[&value]);
    }

    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.delete_parts(cf, &[&key]);
    }

    /// Puts the key made of `key` and the value made of `value`, each concatenated in order.
    pub fn put_parts(&mut self, cf: Cf, key: &[&[u8]], value: &[&[u8]]) {
        let key = self.append(key);
        let value = Some(self.append(value));
        self.ops.push(Op { cf, key, value });
    }

    /// Deletes the key made of `key` concatenated in order.
    pub fn delete_parts(&mut self, cf: Cf, key: &[&[u8]]) {
        let key = self.append(key);
        self.ops.push(Op { cf, key, value: None });
    }

    fn append(&mut self, parts: &[&[u8]]) -> (usize, usize) {
        let start = self.data.len();
        for p in parts {
            self.data.extend_from_slice(p);
        }
        (start, self.data.len() - start)
    }

    fn slice(&self, (start, len): (usize, usize)) -> &[u8] {
        &self.data[start..start + len]
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes in the order added: column family, key, and the value (`None` deletes).
    pub fn iter(&self) -> impl Iterator<Item = (Cf, &[u8], Option<&[u8]>)> {
        self.ops.iter().map(|op| (op.cf, self.slice(op.key), op.value.map(|v| self.slice(v))))
    }

    /// Bytes of all keys and values.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// A sorted key-value store with column families and atomic batches.
pub trait Backend: Send + Sync {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Several keys of one column family, answered in the order asked.
    fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        keys.iter().map(|k| self.get(cf, k)).collect()
    }
    /// Entries whose key starts with `prefix`, in key order, starting at `start` (which
    /// must itself start with `prefix`), at most `limit` of them: a page of a query. A
    /// column family read whole goes through [`Backend::rows`].
    fn scan(&self, cf: Cf, prefix: &[u8], start: &[u8], limit: usize) -> Result<Entries, StorageError>;
    fn write(&self, batch: Batch) -> Result<(), StorageError>;

    /// Every entry whose key starts with `prefix`, in key order, through one cursor that
    /// lends each row until the next: for reading column families whole (the full check,
    /// a snapshot's export) without copying every row out. By default, pages of
    /// [`Backend::scan`].
    fn rows<'a>(&'a self, cf: Cf, prefix: &[u8]) -> Result<Box<dyn Rows + 'a>, StorageError> {
        Ok(Box::new(PagedRows {
            backend: self,
            cf,
            next_start: Some(prefix.to_vec()),
            prefix: prefix.to_vec(),
            page: Vec::new().into_iter(),
            current: None,
        }))
    }

    /// A stager for a large load of entries in order (column families in the order of
    /// [`Cf::ALL`], keys strictly increasing within each): it writes them apart from the
    /// backend, on a thread of the caller's, into a [`Staged`] load that
    /// [`Backend::ingest`] makes part of the backend later. By default it holds the
    /// entries in memory.
    fn stager(&self) -> Result<Box<dyn Stager>, StorageError> {
        Ok(Box::new(MemStager))
    }

    /// Makes a staged load part of the backend. Not atomic, and not synced until it
    /// returns: the caller guards it (the store's install marker). By default, the
    /// batches written unsynced, the last one synced.
    fn ingest(&self, staged: Staged) -> Result<(), StorageError> {
        write_staged_batches(self, staged)
    }
}

/// A key and its value, borrowed from a [`Rows`].
pub type Row<'a> = (&'a [u8], &'a [u8]);

/// A cursor over rows in key order (see [`Backend::rows`]).
pub trait Rows {
    /// The next row, borrowed until the next call; `None` at the end.
    fn next_row(&mut self) -> Result<Option<Row<'_>>, StorageError>;
}

/// Rows of the default [`Backend::rows`]: the scan a page at a time.
struct PagedRows<'a, B: Backend + ?Sized> {
    backend: &'a B,
    cf: Cf,
    prefix: Vec<u8>,
    /// Where the next page starts; `None` once a short page said there is no more.
    next_start: Option<Vec<u8>>,
    page: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    /// The row lent out last.
    current: Option<(Vec<u8>, Vec<u8>)>,
}

/// Rows per page of [`PagedRows`].
const PAGED_ROWS: usize = 1024;

impl<B: Backend + ?Sized> Rows for PagedRows<'_, B> {
    fn next_row(&mut self) -> Result<Option<Row<'_>>, StorageError> {
        loop {
            if let Some(row) = self.page.next() {
                let (k, v) = self.current.insert(row);
                return Ok(Some((k, v)));
            }
            let Some(start) = self.next_start.take() else { return Ok(None) };
            let page = self.backend.scan(self.cf, &self.prefix, &start, PAGED_ROWS)?;
            if page.len() == PAGED_ROWS
                && let Some((last, _)) = page.last()
            {
                self.next_start = Some([last.as_slice(), &[0u8]].concat());
            }
            self.page = page.into_iter();
        }
    }
}

/// Writes a load into the store ([`Stager::stage`]) apart from it: on any thread, while
/// the store goes on serving and applying. Nothing reaches the store until
/// [`Backend::ingest`].
pub trait Stager: Send {
    /// Stages `parts`: batches of puts, column families in the order of [`Cf::ALL`] and
    /// keys strictly increasing within each (a backend may refuse any other order).
    fn stage(self: Box<Self>, parts: &mut dyn Iterator<Item = Batch>) -> Result<Staged, StorageError>;
}

/// A load written by a [`Stager`] and not yet part of a store. Dropped, it leaves
/// nothing behind (RocksDB: its table files are removed).
pub struct Staged(StagedLoad);

enum StagedLoad {
    /// The default stager's: the batches as given.
    Batches(Vec<Batch>),
    /// RocksDB's: sorted table files in a directory of their own.
    #[cfg(feature = "rocksdb")]
    Files(TableFiles),
}

/// The default [`Stager`]: keeps the batches.
struct MemStager;

impl Stager for MemStager {
    fn stage(self: Box<Self>, parts: &mut dyn Iterator<Item = Batch>) -> Result<Staged, StorageError> {
        Ok(Staged(StagedLoad::Batches(parts.collect())))
    }
}

/// The default [`Backend::ingest`], for a load the default stager staged.
fn write_staged_batches<B: Backend + ?Sized>(backend: &B, staged: Staged) -> Result<(), StorageError> {
    let batches = match staged.0 {
        StagedLoad::Batches(batches) => batches,
        #[cfg(feature = "rocksdb")]
        StagedLoad::Files(files) => {
            return Err(StorageError(format!(
                "the table files in {} can only be ingested by RocksDB",
                files.dir.display()
            )));
        }
    };
    let last = batches.len().saturating_sub(1);
    for (i, batch) in batches.into_iter().enumerate() {
        backend.write(if i == last { batch } else { batch.without_sync() })?;
    }
    Ok(())
}

/// The slow part of taking a [`PointInTime`] view, done ahead of it and apart from the
/// backend's borrow: see [`PointInTime::prepare_view`].
pub type PrepareView = Box<dyn FnOnce() -> Result<(), StorageError> + Send>;

/// A backend that can give a read-only copy of itself as it is now, which later writes do not
/// change: a snapshot is exported from it while the backend goes on taking blocks.
pub trait PointInTime: Backend {
    type View: Backend + 'static;
    /// The copy. It costs what the backend needs to freeze its state (RocksDB: hard links,
    /// and a copy of the write-ahead log written since the last flush), not a copy of the
    /// data; the memory backend copies, being for tests.
    fn point_in_time(&self) -> Result<Self::View, StorageError>;

    /// Work that makes the next [`PointInTime::point_in_time`] quick, to run first on any
    /// thread while writes go on (the caller need not hold the backend, nor whatever lock
    /// guards it): on RocksDB, flushing the memtables, so that the write-ahead log the
    /// checkpoint copies holds only what was written since. It changes no data; a view is
    /// just as correct without it.
    fn prepare_view(&self) -> PrepareView;
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
        let rows = m.range((cf, start.to_vec())..).take_while(|((c, k), _)| *c == cf && k.starts_with(prefix));
        Ok(rows.take(limit).map(|((_, k), v)| (k.clone(), v.clone())).collect())
    }

    fn write(&self, batch: Batch) -> Result<(), StorageError> {
        let mut m = self.cfs.write().map_err(|_| StorageError("memory backend lock poisoned".into()))?;
        for (cf, k, v) in batch.iter() {
            match v {
                Some(v) => m.insert((cf, k.to_vec()), v.to_vec()),
                None => m.remove(&(cf, k.to_vec())),
            };
        }
        Ok(())
    }
}

impl PointInTime for MemBackend {
    type View = MemBackend;

    fn point_in_time(&self) -> Result<MemBackend, StorageError> {
        let m = self.cfs.read().map_err(|_| StorageError("memory backend lock poisoned".into()))?;
        Ok(MemBackend { cfs: RwLock::new(m.clone()) })
    }

    fn prepare_view(&self) -> PrepareView {
        Box::new(|| Ok(()))
    }
}

/// RocksDB backend: one column family per [`Cf`], atomic batches (synced unless marked). Behind the
/// `rocksdb` feature (on by default), so the fuzz targets build without the C++ library.
#[cfg(feature = "rocksdb")]
pub struct RocksBackend {
    /// Shared only with [`PointInTime::prepare_view`]'s flush.
    db: std::sync::Arc<rocksdb::DB>,
    path: PathBuf,
    /// Options of each column family, in the order of [`Cf::ALL`]: also what a bulk load
    /// writes its table files with.
    cf_opts: Vec<rocksdb::Options>,
    /// Number of the next point-in-time view's or staged load's directory.
    next_dir: AtomicU64,
}

/// Directory inside the database's where point-in-time views (checkpoints) live while a
/// snapshot is exported from them. RocksDB ignores it; leftovers are removed on open.
#[cfg(feature = "rocksdb")]
const VIEWS_DIR: &str = "snapshot-views";
/// Directory inside the database's where staged loads write their table files (a
/// directory each) before they are ingested; each removed after its load, all on open.
#[cfg(feature = "rocksdb")]
const INGEST_DIR: &str = "snapshot-ingest";
/// Largest table file a staged load writes before it starts the next: bounds the writer's
/// index and filter in memory.
#[cfg(feature = "rocksdb")]
pub const INGEST_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Block cache of an open database, shared by all its column families (see
/// `RocksBackend::cf_options`). The store keeps its own caches of what apply reads most
/// (module `cache`); this one holds table blocks.
#[cfg(feature = "rocksdb")]
pub const BLOCK_CACHE_BYTES: usize = 256 * 1024 * 1024;
/// RocksDB hands the operating system each this many bytes of a file it writes — the
/// write-ahead log and every table file a flush or compaction makes — to write back at
/// once (`bytes_per_sync`, `wal_bytes_per_sync`). The ledger's batches are not synced
/// (the Raft log is), so without it their log and a flush's table of 50–60 MB stay dirty
/// in memory until one large write-back or sync, and every synced Raft append on the same
/// disk waits behind it: 160–240 ms at half of the peak, on all nodes of a one-machine
/// network at once.
#[cfg(feature = "rocksdb")]
pub const WRITE_BACK_EVERY_BYTES: u64 = 1024 * 1024;

/// `log_size_for_flush` of a checkpoint: a write-ahead log of any size is copied rather than
/// flushed (see [`RocksBackend`]'s [`PointInTime`]).
#[cfg(feature = "rocksdb")]
const CHECKPOINT_NEVER_FLUSHES: u64 = u64::MAX;

#[cfg(feature = "rocksdb")]
fn rerr(what: &str, e: rocksdb::Error) -> StorageError {
    StorageError(format!("rocksdb {what}: {e}"))
}

/// A RocksDB error reading column family `cf`: a corrupt table file names its file, and
/// this names what it holds.
#[cfg(feature = "rocksdb")]
fn rerr_in(what: &str, cf: Cf, e: rocksdb::Error) -> StorageError {
    StorageError(format!("rocksdb {what} in {}: {e}", cf.name()))
}

#[cfg(feature = "rocksdb")]
fn ioerr(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError(format!("{what} {}: {e}", path.display()))
}

#[cfg(feature = "rocksdb")]
fn remove_dir_if_present(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ioerr("remove", path, e)),
        _ => Ok(()),
    }
}

/// What a RocksDB database in `dir` that has lost its `CURRENT` (the file naming the live
/// MANIFEST) holds, for an error: its MANIFESTs by name, and a count of its table files and
/// write-ahead logs. Empty when there is a `CURRENT`, or when there is nothing to lose.
///
/// RocksDB with `create_if_missing` takes a directory without `CURRENT` for a new database:
/// it writes an empty `MANIFEST-000001` and a `CURRENT` naming it over the old files, and
/// the next open finds an empty store (it refuses the first time only if a write-ahead log
/// is left). A ledger must refuse instead.
#[cfg(feature = "rocksdb")]
fn database_without_current(dir: &Path) -> Result<Vec<String>, StorageError> {
    if dir.join("CURRENT").exists() {
        return Ok(Vec::new());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ioerr("read", dir, e)),
    };
    let (mut manifests, mut others) = (Vec::new(), 0);
    for entry in entries {
        let name = entry.map_err(|e| ioerr("read", dir, e))?.file_name().to_string_lossy().into_owned();
        if name.starts_with("MANIFEST-") {
            manifests.push(name);
        } else if name.ends_with(".sst") || name.ends_with(".log") {
            others += 1;
        }
    }
    manifests.sort();
    if others > 0 {
        manifests.push(format!("{others} table and log files"));
    }
    Ok(manifests)
}

#[cfg(feature = "rocksdb")]
impl RocksBackend {
    /// Opens the ledger's database in `path`, or creates one where there was none. A
    /// database that lost its `CURRENT` file is refused, naming what it holds, and left as
    /// it was.
    pub fn open(path: &Path) -> Result<RocksBackend, StorageError> {
        let orphans = database_without_current(path)?;
        if !orphans.is_empty() {
            return Err(StorageError(format!(
                "rocksdb open {}: it holds a database ({}) but no CURRENT file, which names its live \
                 MANIFEST: the file was lost. Refusing to create a new, empty database over it; restore \
                 CURRENT, or start afresh (a node: remove its whole data directory, not this store \
                 alone, and it catches up from its peers)",
                path.display(),
                orphans.join(", "),
            )));
        }
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_bytes_per_sync(WRITE_BACK_EVERY_BYTES);
        opts.set_wal_bytes_per_sync(WRITE_BACK_EVERY_BYTES);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs =
            Cf::ALL.iter().map(|c| rocksdb::ColumnFamilyDescriptor::new(c.name(), Self::cf_options(*c, Some(&cache))));
        let db = rocksdb::DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|e| StorageError(format!("rocksdb open {}: {e}", path.display())))?;
        // Views and loads live only as long as the process that made them.
        for dir in [VIEWS_DIR, INGEST_DIR] {
            remove_dir_if_present(&path.join(dir))?;
        }
        Ok(RocksBackend::with_db(db, path, Some(&cache)))
    }

    /// Opens the checkpoint at `path` read-only, without a block cache: it is read once,
    /// in order, by a snapshot export.
    fn open_read_only(path: &Path) -> Result<RocksBackend, StorageError> {
        let mut opts = rocksdb::Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = Cf::ALL.iter().map(|c| rocksdb::ColumnFamilyDescriptor::new(c.name(), Self::cf_options(*c, None)));
        let db = rocksdb::DB::open_cf_descriptors_read_only(&opts, path, cfs, false)
            .map_err(|e| StorageError(format!("rocksdb open {} read-only: {e}", path.display())))?;
        Ok(RocksBackend::with_db(db, path, None))
    }

    fn with_db(db: rocksdb::DB, path: &Path, cache: Option<&rocksdb::Cache>) -> RocksBackend {
        RocksBackend {
            db: std::sync::Arc::new(db),
            path: path.to_path_buf(),
            cf_opts: Cf::ALL.iter().map(|c| Self::cf_options(*c, cache)).collect(),
            next_dir: AtomicU64::new(0),
        }
    }

    /// Options of a column family. Bloom filters let a lookup of an absent key skip the
    /// search: in every table file, and in the memtable of the records, where apply looks up
    /// every record id of a block (the duplicate check) and almost all are absent. Elsewhere
    /// a memtable filter would cost each insert more than it saves. Filters change how files
    /// are read, not what they hold: a store written without them opens with them and the
    /// other way round.
    ///
    /// The block cache is `cache`, shared by every column family, or none at all. Left
    /// unset, RocksDB gives each column family a 32 MiB cache of its own — 17 of them, up to
    /// 544 MiB, which the full check (on open, and after each snapshot install) fills, as
    /// it reads every column family whole.
    fn cf_options(cf: Cf, cache: Option<&rocksdb::Cache>) -> rocksdb::Options {
        let mut table = rocksdb::BlockBasedOptions::default();
        match cache {
            Some(cache) => table.set_block_cache(cache),
            None => table.disable_cache(),
        }
        table.set_bloom_filter(10.0, false);
        let mut opts = rocksdb::Options::default();
        opts.set_block_based_table_factory(&table);
        if cf == Cf::Records {
            opts.set_memtable_prefix_bloom_ratio(0.02);
            opts.set_memtable_whole_key_filtering(true);
        }
        opts
    }

    fn cf(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db.cf_handle(cf.name()).ok_or_else(|| StorageError(format!("column family {} missing", cf.name())))
    }
}

#[cfg(feature = "rocksdb")]
impl Backend for RocksBackend {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(|e| rerr_in("get", cf, e))
    }

    /// One batched lookup: RocksDB takes its references to the memtables and files once and
    /// reads each data block once for all the keys in it.
    fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.db
            .batched_multi_get_cf(self.cf(cf)?, keys, false)
            .into_iter()
            .map(|r| r.map(|v| v.map(|v| v.to_vec())).map_err(|e| rerr_in("multi get", cf, e)))
            .collect()
    }

    fn scan(&self, cf: Cf, prefix: &[u8], start: &[u8], limit: usize) -> Result<Entries, StorageError> {
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf)?, mode) {
            let (k, v) = item.map_err(|e| rerr_in("scan", cf, e))?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// One RocksDB iterator, bounded above by the prefix's end, whose rows are read in
    /// place. The blocks it reads do not go into the block cache: a column family read whole
    /// would only push out what queries use.
    fn rows<'a>(&'a self, cf: Cf, prefix: &[u8]) -> Result<Box<dyn Rows + 'a>, StorageError> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.fill_cache(false);
        if let Some(end) = prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf)?, opts);
        it.seek(prefix);
        Ok(Box::new(RocksRows { it, cf, prefix: prefix.to_vec(), started: false }))
    }

    fn write(&self, batch: Batch) -> Result<(), StorageError> {
        // In key order within each column family, the memtable's skip list inserts each key
        // near the one before instead of searching for it from its top level: a block's rows
        // go in about a third faster, which is more than the sort costs. The sort is stable,
        // so ops on one key keep their order and the batch means the same.
        let mut order: Vec<Op> = batch.ops.clone();
        order.sort_by(|a, b| a.cf.cmp(&b.cf).then_with(|| batch.slice(a.key).cmp(batch.slice(b.key))));
        let mut wb = rocksdb::WriteBatch::with_capacity_bytes(batch.bytes() + 16 * batch.len());
        let mut handle: Option<(Cf, &rocksdb::ColumnFamily)> = None;
        for op in &order {
            let h = match handle {
                Some((c, h)) if c == op.cf => h,
                _ => {
                    let h = self.cf(op.cf)?;
                    handle = Some((op.cf, h));
                    h
                }
            };
            match op.value {
                Some(v) => wb.put_cf(h, batch.slice(op.key), batch.slice(v)),
                None => wb.delete_cf(h, batch.slice(op.key)),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(batch.synced());
        self.db.write_opt(wb, &wo).map_err(|e| rerr("write", e))
    }

    /// Table files written in a directory of their own beside the database: no write-ahead
    /// log, no memtable, no compaction of the load through the levels.
    fn stager(&self) -> Result<Box<dyn Stager>, StorageError> {
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(RocksStager { opts: self.cf_opts.clone(), dir: self.path.join(INGEST_DIR).join(n.to_string()) }))
    }

    /// The staged table files ingested whole, each column family's at once.
    ///
    /// Each column family is first flushed and compacted whole, so that what the caller
    /// just deleted (a snapshot install deletes the ledger it replaces, at least a genesis)
    /// is gone from the levels: an ingested file that overlaps nothing goes to the bottom
    /// level, where it stays. One that overlaps even a few rows or tombstones goes to level
    /// 0, and RocksDB then rewrites the whole load in a compaction (measured: 7.1 s for the
    /// 765 MB of state-map nodes of a million-record ledger, while the node was checking
    /// it). RocksDB syncs the files and its manifest before it returns.
    fn ingest(&self, staged: Staged) -> Result<(), StorageError> {
        let files = match staged.0 {
            StagedLoad::Files(files) => files,
            batches => return write_staged_batches(self, Staged(batches)),
        };
        // Forced: a file of tombstones alone would otherwise be moved down as it is, and
        // still overlap the load.
        let mut compact = rocksdb::CompactOptions::default();
        compact.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for cf in Cf::ALL {
            let handle = self.cf(cf)?;
            self.db.flush_cf(handle).map_err(|e| rerr("flush before a bulk load", e))?;
            self.db.compact_range_cf_opt(handle, None::<&[u8]>, None::<&[u8]>, &compact);
        }
        let mut opts = rocksdb::IngestExternalFileOptions::default();
        opts.set_move_files(true);
        for cf in Cf::ALL {
            let paths: Vec<&PathBuf> = files.files.iter().filter(|(c, _)| *c == cf).map(|(_, p)| p).collect();
            if !paths.is_empty() {
                self.db
                    .ingest_external_file_cf_opts(self.cf(cf)?, &opts, paths)
                    .map_err(|e| rerr(&format!("ingest into {}", cf.name()), e))?;
            }
        }
        Ok(())
    }
}

/// A [`Stager`] of RocksDB table files (see [`RocksBackend::stager`]).
#[cfg(feature = "rocksdb")]
struct RocksStager {
    /// The options of each column family, which its table files are written with.
    opts: Vec<rocksdb::Options>,
    dir: PathBuf,
}

/// Table files staged for [`RocksBackend::ingest`], in the order written; their
/// directory goes when they do.
#[cfg(feature = "rocksdb")]
struct TableFiles {
    dir: PathBuf,
    files: Vec<(Cf, PathBuf)>,
}

#[cfg(feature = "rocksdb")]
impl Drop for TableFiles {
    fn drop(&mut self) {
        // Ingested files were moved out; what is left is a refused or abandoned load. A
        // failure leaves a directory the next open removes.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The table file being written: its writer, column family and path.
#[cfg(feature = "rocksdb")]
type OpenTable<'a> = (rocksdb::SstFileWriter<'a>, Cf, PathBuf);

/// Finishes the table file being written, if any, and lists it.
#[cfg(feature = "rocksdb")]
fn close_table(table: Option<OpenTable<'_>>, files: &mut Vec<(Cf, PathBuf)>) -> Result<(), StorageError> {
    if let Some((mut writer, cf, path)) = table {
        writer.finish().map_err(|e| rerr("finish table file", e))?;
        files.push((cf, path));
    }
    Ok(())
}

#[cfg(feature = "rocksdb")]
impl Stager for RocksStager {
    fn stage(self: Box<Self>, parts: &mut dyn Iterator<Item = Batch>) -> Result<Staged, StorageError> {
        let RocksStager { opts, dir } = *self;
        // New: numbered by this open, and the directory of loads was emptied when it opened.
        std::fs::create_dir_all(&dir).map_err(|e| ioerr("create", &dir, e))?;
        let mut staged = TableFiles { dir, files: Vec::new() };
        let mut table: Option<OpenTable<'_>> = None;
        for batch in parts {
            for (cf, key, value) in batch.iter() {
                if table.as_ref().is_some_and(|(_, at, _)| *at != cf) {
                    close_table(table.take(), &mut staged.files)?;
                }
                if table.is_none() {
                    let path = staged.dir.join(format!("{:08}.sst", staged.files.len()));
                    let writer = rocksdb::SstFileWriter::create(&opts[usize::from(cf.index())]);
                    writer.open(&path).map_err(|e| rerr("open table file", e))?;
                    table = Some((writer, cf, path));
                }
                let (writer, ..) = table.as_mut().expect("a table file was just opened");
                writer
                    .put(key, value.unwrap_or_default())
                    .map_err(|e| rerr(&format!("table file of {}", cf.name()), e))?;
                if writer.file_size() >= INGEST_FILE_BYTES_MAX {
                    close_table(table.take(), &mut staged.files)?;
                }
            }
        }
        close_table(table, &mut staged.files)?;
        Ok(Staged(StagedLoad::Files(staged)))
    }
}

/// The first key past every key that starts with `prefix`; `None` if there is none (the
/// prefix is empty or all 0xff).
#[cfg(feature = "rocksdb")]
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Rows of [`RocksBackend::rows`].
#[cfg(feature = "rocksdb")]
struct RocksRows<'a> {
    it: rocksdb::DBRawIteratorWithThreadMode<'a, rocksdb::DB>,
    cf: Cf,
    prefix: Vec<u8>,
    /// Whether a row was lent: the iterator stands on it and moves on at the next call.
    started: bool,
}

#[cfg(feature = "rocksdb")]
impl Rows for RocksRows<'_> {
    fn next_row(&mut self) -> Result<Option<Row<'_>>, StorageError> {
        if self.started && self.it.valid() {
            self.it.next();
        }
        self.started = true;
        match (self.it.key(), self.it.value()) {
            (Some(k), Some(v)) if k.starts_with(&self.prefix) => Ok(Some((k, v))),
            _ => self.it.status().map(|()| None).map_err(|e| rerr_in("scan", self.cf, e)),
        }
    }
}

/// A RocksDB checkpoint opened read-only (see [`PointInTime`]); its directory goes when it
/// is dropped.
#[cfg(feature = "rocksdb")]
pub struct RocksView {
    /// Opened on first use, not when the checkpoint is taken: opening reads every table
    /// file's index and filter, which need not happen under whatever lock guarded the
    /// checkpoint. Emptied while dropping: the database closes before its files go.
    backend: std::sync::OnceLock<RocksBackend>,
    dir: PathBuf,
}

#[cfg(feature = "rocksdb")]
impl RocksView {
    fn backend(&self) -> Result<&RocksBackend, StorageError> {
        if let Some(backend) = self.backend.get() {
            return Ok(backend);
        }
        let opened = RocksBackend::open_read_only(&self.dir)?;
        // Two threads may race to open it; one copy is kept and the other closed.
        Ok(self.backend.get_or_init(|| opened))
    }
}

#[cfg(feature = "rocksdb")]
impl Drop for RocksView {
    fn drop(&mut self) {
        self.backend.take();
        // A failure leaves a directory the next open removes.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(feature = "rocksdb")]
impl Backend for RocksView {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.backend()?.get(cf, key)
    }

    fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.backend()?.multi_get(cf, keys)
    }

    fn scan(&self, cf: Cf, prefix: &[u8], start: &[u8], limit: usize) -> Result<Entries, StorageError> {
        self.backend()?.scan(cf, prefix, start, limit)
    }

    fn rows<'a>(&'a self, cf: Cf, prefix: &[u8]) -> Result<Box<dyn Rows + 'a>, StorageError> {
        self.backend()?.rows(cf, prefix)
    }

    fn write(&self, _batch: Batch) -> Result<(), StorageError> {
        Err(StorageError(format!("the point-in-time view {} is read-only", self.dir.display())))
    }

    fn stager(&self) -> Result<Box<dyn Stager>, StorageError> {
        Err(StorageError(format!("the point-in-time view {} is read-only", self.dir.display())))
    }

    fn ingest(&self, _staged: Staged) -> Result<(), StorageError> {
        Err(StorageError(format!("the point-in-time view {} is read-only", self.dir.display())))
    }
}

/// A checkpoint: RocksDB hard-links the table files into a new directory and copies the
/// write-ahead log written since the memtables were last flushed, which the view replays
/// into memory as it opens. So the view costs a few megabytes of copy, not a copy of the
/// data nor a flush, and the table files it holds stay on disk until it is dropped even if
/// compaction replaces them meanwhile.
///
/// It does not flush: the caller holds whatever keeps writes out while the view is taken
/// (the node: its store's lock, which every apply waits for), and a flush then would run on
/// RocksDB's background threads, at the lowest CPU priority, while the foreground that
/// needs the lock keeps the cores busy. Under steady load at half of the peak that made
/// 0.27–0.55 s of applies wait (docs/performance.md, session 13).
/// [`PointInTime::prepare_view`] still flushes, with no lock held, so the log to copy is
/// short.
#[cfg(feature = "rocksdb")]
impl PointInTime for RocksBackend {
    type View = RocksView;

    fn point_in_time(&self) -> Result<RocksView, StorageError> {
        let views = self.path.join(VIEWS_DIR);
        std::fs::create_dir_all(&views).map_err(|e| ioerr("create", &views, e))?;
        let dir = views.join(self.next_dir.fetch_add(1, Ordering::Relaxed).to_string());
        // From here the directory is the view's to remove, whatever fails.
        let view = RocksView { backend: std::sync::OnceLock::new(), dir };
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| rerr("checkpoint", e))?;
        checkpoint
            .create_checkpoint_with_log_size(&view.dir, CHECKPOINT_NEVER_FLUSHES)
            .map_err(|e| rerr("checkpoint", e))?;
        Ok(view)
    }

    fn prepare_view(&self) -> PrepareView {
        let db = self.db.clone();
        Box::new(move || {
            let cfs = Cf::ALL
                .iter()
                .map(|c| {
                    db.cf_handle(c.name()).ok_or_else(|| StorageError(format!("column family {} missing", c.name())))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut opts = rocksdb::FlushOptions::default();
            opts.set_wait(true);
            db.flush_cfs_opt(&cfs, &opts).map_err(|e| rerr("flush", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "rocksdb")]
    fn a_database_that_lost_its_current_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let db = RocksBackend::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        batch.put(Cf::Meta, b"k".to_vec(), b"v".to_vec());
        db.write(batch).unwrap();
        drop(db);
        let current = std::fs::read(dir.path().join("CURRENT")).unwrap();
        std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
        let listing = |d: &Path| {
            let mut names: Vec<String> =
                std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        };
        let before = listing(dir.path());
        let e = RocksBackend::open(dir.path()).err().expect("refused").to_string();
        assert!(e.contains("no CURRENT file") && e.contains("MANIFEST-"), "{e}");
        assert_eq!(listing(dir.path()), before, "the refusal wrote to the directory");
        // Put back, it opens with what it held.
        std::fs::write(dir.path().join("CURRENT"), current).unwrap();
        let db = RocksBackend::open(dir.path()).unwrap();
        assert_eq!(db.get(Cf::Meta, b"k").unwrap().as_deref(), Some(&b"v"[..]));
        // A directory that never held a database is created as before.
        drop(RocksBackend::open(&dir.path().join("new")).unwrap());
    }

    #[test]
    #[cfg(feature = "rocksdb")]
    fn the_database_writes_back_its_files_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        drop(RocksBackend::open(dir.path()).unwrap());
        // Every OPTIONS file RocksDB wrote as it opened holds the settings in force.
        let options: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert!(!options.is_empty());
        for setting in ["bytes_per_sync", "wal_bytes_per_sync"].map(|s| format!("{s}={WRITE_BACK_EVERY_BYTES}")) {
            assert!(options.iter().all(|o| o.lines().any(|l| l.trim() == setting)), "{setting} missing");
        }
    }

    #[test]
    #[cfg(feature = "rocksdb")]
    fn a_view_holds_what_was_not_flushed_and_taking_it_flushes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rocks = RocksBackend::open(dir.path()).unwrap();
        let put = |key: &[u8], value: &[u8]| {
            let mut batch = Batch::default();
            batch.put(Cf::Records, key.to_vec(), value.to_vec());
            rocks.write(batch.without_sync()).unwrap();
        };
        put(b"before", b"1");
        let view = rocks.point_in_time().unwrap();
        put(b"after", b"2");
        // The write before the view is only in the memtable and its log: the view replays it.
        assert!(rocks.db.live_files().unwrap().is_empty(), "the checkpoint flushed the memtables");
        assert_eq!(view.get(Cf::Records, b"before").unwrap(), Some(b"1".to_vec()));
        assert_eq!(view.get(Cf::Records, b"after").unwrap(), None);
        assert_eq!(rocks.get(Cf::Records, b"after").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn a_column_family_index_names_its_place_in_all() {
        for (i, cf) in Cf::ALL.iter().enumerate() {
            assert_eq!(usize::from(cf.index()), i);
            assert_eq!(Cf::from_index(cf.index()), Some(*cf));
        }
        assert_eq!(Cf::from_index(Cf::ALL.len() as u8), None);
    }

    /// Every row `rows` lends under each of several prefixes, as owned pairs.
    fn all_rows(backend: &dyn Backend) -> Vec<Entries> {
        let mut out = Vec::new();
        for prefix in [&b"r"[..], b"", b"\xff", b"\xff\xff", b"s"] {
            let mut rows = backend.rows(Cf::Blocks, prefix).unwrap();
            let mut got = Vec::new();
            while let Some((k, v)) = rows.next_row().unwrap() {
                got.push((k.to_vec(), v.to_vec()));
            }
            assert_eq!(rows.next_row().unwrap(), None, "the end stays the end");
            let scanned = backend.scan(Cf::Blocks, prefix, prefix, usize::MAX).unwrap();
            assert_eq!(got, scanned, "rows under {prefix:?} are the scan's");
            out.push(got);
        }
        // Pages of a scan: from a start inside the prefix, at most `limit`.
        let start = [&b"r"[..], &5u16.to_be_bytes()].concat();
        for limit in [0, 7, 10_000] {
            let page = backend.scan(Cf::Blocks, b"r", &start, limit).unwrap();
            assert_eq!(page.len(), limit.min(PAGED_ROWS * 2), "a page of {limit} from the 6th row");
            assert!(page.iter().all(|(k, _)| k.starts_with(b"r") && *k >= start));
            out.push(page);
        }
        out
    }

    /// More rows under `r` than a page of the default cursor, keys of 0xff bytes at the end
    /// of the key space (no key is past them), rows around them and in another column
    /// family.
    fn rows_rows() -> Batch {
        let mut batch = Batch::default();
        for i in 0..(PAGED_ROWS as u16 * 2 + 5) {
            batch.put(Cf::Blocks, [&b"r"[..], &i.to_be_bytes()].concat(), i.to_le_bytes().to_vec());
        }
        for k in [&b"q"[..], b"s", b"\xfe", b"\xff", b"\xff\x01", b"\xff\xff", b"\xff\xff\x00"] {
            batch.put(Cf::Blocks, k.to_vec(), k.to_vec());
        }
        batch.put(Cf::Headers, b"r0".to_vec(), vec![0]);
        batch
    }

    #[test]
    fn rows_lend_every_entry_under_a_prefix_in_order_the_same_on_every_backend() {
        let mem = MemBackend::default();
        mem.write(rows_rows()).unwrap();
        let in_memory = all_rows(&mem);
        assert_eq!(in_memory[0].len(), PAGED_ROWS * 2 + 5);
        assert_eq!(in_memory[1].len(), PAGED_ROWS * 2 + 5 + 7, "the empty prefix is the whole column family");
        assert_eq!(in_memory[2].len(), 4);
        assert_eq!(in_memory[3].len(), 2);
        assert_eq!(in_memory[4].len(), 1);
        #[cfg(feature = "rocksdb")]
        {
            let dir = tempfile::tempdir().unwrap();
            let rocks = RocksBackend::open(dir.path()).unwrap();
            rocks.write(rows_rows()).unwrap();
            assert_eq!(all_rows(&rocks), in_memory, "RocksDB and memory backends lend alike");
        }
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn a_staged_load_over_deleted_rows_lands_in_the_bottom_level() {
        let dir = tempfile::tempdir().unwrap();
        let rocks = RocksBackend::open(dir.path()).unwrap();
        // Rows among the keys the load will bring, written then deleted, as a snapshot
        // install deletes the genesis it replaces.
        for delete in [false, true] {
            let mut batch = Batch::default();
            for k in (0..1_000u32).step_by(100).map(|i| i.to_be_bytes().to_vec()) {
                if delete { batch.delete(Cf::SmtNodes, k) } else { batch.put(Cf::SmtNodes, k, vec![1]) }
            }
            rocks.write(batch).unwrap();
        }
        let mut batch = Batch::default();
        for i in 0..1_000u32 {
            batch.put(Cf::SmtNodes, i.to_be_bytes().to_vec(), vec![2]);
        }
        let staged = rocks.stager().unwrap().stage(&mut std::iter::once(batch)).unwrap();
        rocks.ingest(staged).unwrap();
        let cf = rocks.cf(Cf::SmtNodes).unwrap();
        let level = |l: u32| rocks.db.property_int_value_cf(cf, &format!("rocksdb.num-files-at-level{l}")).unwrap();
        assert_eq!(level(0), Some(0), "nothing in level 0 to compact");
        assert_eq!(level(6), Some(1), "the loaded file went to the bottom level");
        let rows = rocks.scan(Cf::SmtNodes, b"", b"", usize::MAX).unwrap();
        assert_eq!(rows.len(), 1_000);
        assert!(rows.iter().all(|(_, v)| v == &[2]));
        assert_eq!(std::fs::read_dir(dir.path().join(INGEST_DIR)).unwrap().count(), 0, "the load's directory went");
    }

    /// Parts of a load over three column families, in order.
    fn load_parts() -> Vec<Batch> {
        [Cf::Meta, Cf::Records, Cf::SmtNodes]
            .into_iter()
            .map(|cf| {
                let mut batch = Batch::default();
                for i in 0..300u32 {
                    batch.put(cf, i.to_be_bytes().to_vec(), format!("{}-{i}", cf.name()).into_bytes());
                }
                batch
            })
            .collect()
    }

    #[test]
    fn a_load_staged_on_another_thread_changes_nothing_until_ingested_and_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let rocks = RocksBackend::open(dir.path()).unwrap();
        let mem = MemBackend::default();
        let backends: [&dyn Backend; 2] = [&rocks, &mem];
        for backend in backends {
            let stage = |backend: &dyn Backend| {
                let stager = backend.stager().unwrap();
                std::thread::spawn(move || stager.stage(&mut load_parts().into_iter()).unwrap()).join().unwrap()
            };
            let abandoned = stage(backend);
            let staged = stage(backend);
            for cf in [Cf::Meta, Cf::Records, Cf::SmtNodes] {
                assert!(backend.scan(cf, b"", b"", 1).unwrap().is_empty(), "nothing lands before the ingest");
            }
            drop(abandoned);
            backend.ingest(staged).unwrap();
            for (cf, batch) in [Cf::Meta, Cf::Records, Cf::SmtNodes].into_iter().zip(load_parts()) {
                let want: Vec<_> = batch.iter().map(|(_, k, v)| (k.to_vec(), v.unwrap().to_vec())).collect();
                assert_eq!(backend.scan(cf, b"", b"", usize::MAX).unwrap(), want, "{}", cf.name());
            }
        }
        assert_eq!(std::fs::read_dir(dir.path().join(INGEST_DIR)).unwrap().count(), 0, "both loads' directories went");
        let staged = rocks.stager().unwrap().stage(&mut load_parts().into_iter()).unwrap();
        let e = mem.ingest(staged).unwrap_err();
        assert!(e.0.contains("can only be ingested by RocksDB"), "{e}");
        let view = rocks.point_in_time().unwrap();
        assert!(view.stager().is_err() && view.ingest(Staged(StagedLoad::Batches(load_parts()))).is_err());
    }
}
