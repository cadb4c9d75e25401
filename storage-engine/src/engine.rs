//! Opening the state database and the raw operations apply, reads and snapshots share.

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_DOCS: &str = "docs";
pub(crate) const CF_INDEX: &str = "index";
pub(crate) const CFS: [&str; 3] = [CF_META, CF_DOCS, CF_INDEX];

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record under {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A log entry written by a newer Basalt: this node must be upgraded before it can apply it.
    #[error("command format version {version} is newer than this node understands")]
    UnsupportedCommand { version: u16 },
    /// A data directory whose key layout this build does not read (written by another build).
    #[error("the state in this data directory uses key layout {found}, this build reads layout {wanted}: start from an empty data directory (or a backup of this build)")]
    StateFormat { found: String, wanted: u32 },
}

impl From<StorageError> for model::Error {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage failure");
        model::Error::new(model::ErrorCode::GeneralServerError, "Server Error")
    }
}

pub(crate) fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StorageError> {
    bincode::deserialize(bytes).map_err(|e| corrupt(key, e))
}

/// A stored document of `coll`, settled to the collection's current layout (attributes
/// renamed or deleted since it was written). Every read of a document goes through here.
pub(crate) fn decode_document(
    coll: &model::schema::Collection,
    key: &[u8],
    bytes: &[u8],
) -> Result<model::schema::Document, StorageError> {
    let mut doc: model::schema::Document = decode(key, bytes)?;
    coll.settle(&mut doc.data);
    Ok(doc)
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain data structs to a Vec cannot fail.
    bincode::serialize(v).expect("bincode serialisation of plain data")
}

/// The state machine's database.
#[derive(Clone)]
pub struct Engine {
    pub(crate) db: Arc<DB>,
    path: PathBuf,
    scan_budget: usize,
}

/// The state's block cache (uncompressed blocks of every column family).
const BLOCK_CACHE_BYTES: usize = 256 << 20;

/// Rows a read may examine when no index decides its filter, unless configured otherwise
/// (`basalt serve --scan-budget`).
pub const DEFAULT_SCAN_BUDGET: usize = 100_000;

/// Rows an apply may examine for a bulk change by query with an order, offset or cursor, or a
/// read inside a transaction. A constant, not a setting: every replica must decide alike.
pub const APPLY_SCAN_BUDGET: usize = 100_000;

/// Appwrite's answer to a query that would examine more than its budget.
pub(crate) fn scan_budget_exceeded() -> model::Error {
    model::Error::new(
        model::ErrorCode::DatabaseTimeout,
        "Database timed out. Try adjusting your queries or adding an index.",
    )
}

/// SHA-256 over every key and value of every column family of `db`, in order (reading with
/// `opts()`), in one pass: of everything, and of the data alone (leaving out the cluster's
/// bookkeeping, `keys::is_bookkeeping`).
pub(crate) fn digests_db(
    db: &DB,
    opts: impl Fn() -> rocksdb::ReadOptions,
) -> Result<(String, String), StorageError> {
    use sha2::{Digest, Sha256};
    let (mut all, mut data) = (Sha256::new(), Sha256::new());
    for (i, name) in CFS.iter().enumerate() {
        let cf = db
            .cf_handle(name)
            .ok_or_else(|| corrupt(name.as_bytes(), "missing column family"))?;
        all.update([i as u8]);
        data.update([i as u8]);
        for item in db.iterator_cf_opt(cf, opts(), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let bookkeeping = *name == CF_META && crate::keys::is_bookkeeping(&k);
            for h in std::iter::once(&mut all).chain((!bookkeeping).then_some(&mut data)) {
                h.update((k.len() as u64).to_be_bytes());
                h.update(&k);
                h.update((v.len() as u64).to_be_bytes());
                h.update(&v);
            }
        }
    }
    Ok((hex::encode(all.finalize()), hex::encode(data.finalize())))
}

/// RocksDB's key figures for one database, by the name `/metrics` gives them: those of each
/// column family summed over `cfs`, those of the whole database (running jobs, the block
/// cache shared by every family) once.
pub(crate) fn rocks_figures(db: &DB, cfs: &[&str]) -> Vec<(&'static str, u64)> {
    const PER_FAMILY: [(&str, &str); 5] = [
        ("rocksdb.estimate-num-keys", "keys"),
        ("rocksdb.total-sst-files-size", "sst_bytes"),
        ("rocksdb.live-sst-files-size", "live_sst_bytes"),
        ("rocksdb.cur-size-all-mem-tables", "memtable_bytes"),
        (
            "rocksdb.estimate-pending-compaction-bytes",
            "pending_compaction_bytes",
        ),
    ];
    const WHOLE: [(&str, &str); 4] = [
        ("rocksdb.num-running-compactions", "running_compactions"),
        ("rocksdb.num-running-flushes", "running_flushes"),
        ("rocksdb.block-cache-usage", "block_cache_bytes"),
        ("rocksdb.block-cache-capacity", "block_cache_capacity_bytes"),
    ];
    let handles: Vec<&ColumnFamily> = cfs.iter().filter_map(|n| db.cf_handle(n)).collect();
    let value = |cf: &ColumnFamily, prop: &str| {
        db.property_int_value_cf(cf, prop)
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let mut out = Vec::with_capacity(PER_FAMILY.len() + WHOLE.len());
    for (prop, name) in PER_FAMILY {
        out.push((name, handles.iter().map(|cf| value(cf, prop)).sum()));
    }
    for (prop, name) in WHOLE {
        out.push((
            name,
            handles.iter().map(|cf| value(cf, prop)).max().unwrap_or(0),
        ));
    }
    out
}

impl Engine {
    /// RocksDB's key figures for the state (`rocks_figures`).
    pub fn figures(&self) -> Vec<(&'static str, u64)> {
        rocks_figures(&self.db, &CFS)
    }

    pub fn open(path: &Path) -> Result<Engine, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        // One block cache for every column family: index ranges and the rows of a page stay
        // decompressed in memory instead of being re-read and re-checked per query. Bloom
        // filters spare point reads (rows by id, unique checks, index counts) the files
        // without the key. Filters stay with their table readers, outside the cache: a
        // large file's whole-file filter is bigger than a cache shard and would be read
        // back from disk on every lookup.
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let cfs = CFS.iter().map(|name| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let eng = Engine {
            db: Arc::new(db),
            path: path.to_path_buf(),
            scan_budget: DEFAULT_SCAN_BUDGET,
        };
        eng.check_format()?;
        Ok(eng)
    }

    /// Refuses a state written with another key layout; stamps an empty one with ours. A
    /// state whose snapshot install was interrupted is left to the install, which brings the
    /// snapshot's own record.
    fn check_format(&self) -> Result<(), StorageError> {
        use crate::keys::{FORMAT, STATE_FORMAT};
        let meta = self.cf(CF_META);
        if self.interrupted_install()?.is_some() {
            return Ok(());
        }
        match self.db.get_cf(meta, FORMAT)? {
            Some(v) if v.as_slice() == STATE_FORMAT.to_be_bytes() => Ok(()),
            Some(v) => Err(StorageError::StateFormat {
                found: match <[u8; 4]>::try_from(v.as_slice()) {
                    Ok(b) => u32::from_be_bytes(b).to_string(),
                    Err(_) => "unknown".to_string(),
                },
                wanted: STATE_FORMAT,
            }),
            None => {
                let empty = CFS.iter().all(|name| {
                    self.db
                        .iterator_cf(self.cf(name), rocksdb::IteratorMode::Start)
                        .next()
                        .is_none()
                });
                if !empty {
                    return Err(StorageError::StateFormat {
                        found: "1".to_string(),
                        wanted: STATE_FORMAT,
                    });
                }
                self.db.put_cf(meta, FORMAT, STATE_FORMAT.to_be_bytes())?;
                Ok(())
            }
        }
    }

    /// Sets how many rows a read may examine before it answers `database_timeout`.
    pub fn with_scan_budget(mut self, rows: usize) -> Engine {
        self.scan_budget = rows.max(1);
        self
    }

    pub(crate) fn scan_budget(&self) -> usize {
        self.scan_budget
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // The column families are created at open; a missing one is a programming error.
        self.db
            .cf_handle(name)
            .expect("column family opened at start")
    }

    pub(crate) fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        // Not synced: the Raft log is the durable record and is fsynced before acknowledging;
        // after a crash, entries past the persisted applied index are applied again.
        let opts = WriteOptions::default();
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// The opaque applied-state record the Raft layer stores with every apply.
    pub fn applied_meta(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(CF_META), crate::keys::APPLIED)?)
    }

    /// Records what the state covers (after a snapshot install).
    pub fn set_applied(&self, index: u64, meta: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), crate::keys::APPLIED, meta);
        batch.put_cf(
            self.cf(CF_META),
            crate::keys::APPLIED_INDEX,
            index.to_be_bytes(),
        );
        self.write(batch)
    }

    /// Writes a durable RocksDB checkpoint of the whole state into `dir` (hard links).
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }
}
