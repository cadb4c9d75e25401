//! The disk layer of the Raft log: its own RocksDB instance, every write fsynced before it
//! returns. The Raft crate owns the meaning of the bytes; this only stores them in order.

use crate::engine::StorageError;
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use std::path::Path;
use std::sync::Arc;

const CF_LOG: &str = "log";
const CF_STATE: &str = "state";

#[derive(Clone)]
pub struct LogDb {
    db: Arc<DB>,
}

impl LogDb {
    pub fn open(path: &Path) -> Result<LogDb, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_LOG, CF_STATE].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(LogDb { db: Arc::new(db) })
    }

    /// RocksDB's key figures for the log (`engine::rocks_figures`).
    pub fn figures(&self) -> Vec<(&'static str, u64)> {
        crate::engine::rocks_figures(&self.db, &[CF_LOG, CF_STATE])
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family opened at start")
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut o = WriteOptions::default();
        o.set_sync(true);
        self.db.write_opt(batch, &o)?;
        Ok(())
    }

    /// Appends entries `(index, bytes)` and fsyncs before returning.
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = (u64, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (index, bytes) in entries {
            batch.put_cf(self.cf(CF_LOG), index.to_be_bytes(), bytes);
        }
        self.write_synced(batch)
    }

    /// Entries with `start <= index < end`, in order.
    pub fn range(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        let from = start.to_be_bytes();
        for item in self.db.iterator_cf(
            self.cf(CF_LOG),
            IteratorMode::From(&from, Direction::Forward),
        ) {
            let (k, v) = item?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| crate::engine::corrupt(&k, "log key"))?,
            );
            if index >= end {
                break;
            }
            out.push((index, v.to_vec()));
        }
        Ok(out)
    }

    /// The last entry, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        match self
            .db
            .iterator_cf(self.cf(CF_LOG), IteratorMode::End)
            .next()
        {
            Some(item) => {
                let (k, v) = item?;
                let index = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| crate::engine::corrupt(&k, "log key"))?,
                );
                Ok(Some((index, v.to_vec())))
            }
            None => Ok(None),
        }
    }

    /// Deletes entries with `index >= from`.
    pub fn truncate_from(&self, from: u64) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), from.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(self.cf(CF_LOG), u64::MAX.to_be_bytes());
        self.write_synced(batch)
    }

    /// Deletes entries with `index <= upto`, recording `state_key = state_value` in the same batch.
    pub fn purge_upto(
        &self,
        upto: u64,
        state_key: &str,
        state_value: Vec<u8>,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_STATE), state_key, state_value);
        batch.delete_range_cf(
            self.cf(CF_LOG),
            0u64.to_be_bytes(),
            (upto + 1).to_be_bytes(),
        );
        self.write_synced(batch)
    }

    pub fn put_state(&self, key: &str, value: Vec<u8>, sync: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_STATE), key, value);
        if sync {
            self.write_synced(batch)
        } else {
            self.db.write(batch)?;
            Ok(())
        }
    }

    pub fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(CF_STATE), key)?)
    }
}
