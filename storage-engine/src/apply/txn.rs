//! `Txn`: the write overlay one log entry is applied in. Reads see the entry's earlier writes;
//! savepoints let one envelope (or one part of it) be undone without touching the others; at
//! the end the whole overlay becomes one RocksDB write batch.

use super::{Failure, R};
use crate::engine::{decode, Engine, CFS};
use crate::keys;
use rocksdb::{Direction, IteratorMode, ReadOptions, SnapshotWithThreadMode, WriteBatch, DB};
use std::collections::BTreeMap;

pub(crate) const META: usize = 0;
pub(crate) const DOCS: usize = 1;
pub(crate) const INDEX: usize = 2;

type Key = (usize, Vec<u8>);

/// One undoable change, recorded as it is made.
enum Undo {
    /// The overlay held `prev` under `key` before (`None`: nothing).
    Write {
        key: Key,
        prev: Option<Option<Vec<u8>>>,
    },
    /// A range delete was pushed.
    RangeDelete,
    /// A change was recorded for realtime.
    Change,
}

/// A point to roll back to. Savepoints nest.
#[derive(Clone, Copy)]
pub(crate) struct Savepoint(usize);

pub(crate) struct Txn<'a> {
    pub(crate) eng: &'a Engine,
    /// Reads go to this snapshot instead of the live database (staged reads of a view).
    snap: Option<&'a SnapshotWithThreadMode<'a, DB>>,
    writes: BTreeMap<Key, Option<Vec<u8>>>,
    range_deletes: Vec<(usize, Vec<u8>)>,
    /// The documents changed so far, in order, for realtime (undone with their writes).
    changes: Vec<model::change::Change>,
    /// The leader time of the envelope being applied (stamped on its changes).
    pub(crate) now: i64,
    undo: Vec<Undo>,
    /// Usage the entry has counted, not yet written (`usage::flush`).
    pub(super) usage: super::usage::Pending,
}

impl<'a> Txn<'a> {
    pub(crate) fn new(eng: &'a Engine) -> Self {
        Txn {
            eng,
            snap: None,
            writes: BTreeMap::new(),
            range_deletes: Vec::new(),
            changes: Vec::new(),
            now: 0,
            undo: Vec::new(),
            usage: Default::default(),
        }
    }

    /// An overlay over a snapshot (nothing it holds is ever written).
    pub(crate) fn over(eng: &'a Engine, snap: &'a SnapshotWithThreadMode<'a, DB>) -> Self {
        Txn {
            snap: Some(snap),
            ..Txn::new(eng)
        }
    }

    fn opts(&self) -> ReadOptions {
        let mut o = ReadOptions::default();
        if let Some(s) = self.snap {
            o.set_snapshot(s);
        }
        o
    }

    pub(crate) fn savepoint(&self) -> Savepoint {
        Savepoint(self.undo.len())
    }

    /// Undoes every change made since `sp`.
    pub(crate) fn rollback(&mut self, sp: Savepoint) {
        while self.undo.len() > sp.0 {
            match self.undo.pop() {
                Some(Undo::Write { key, prev }) => match prev {
                    Some(v) => {
                        self.writes.insert(key, v);
                    }
                    None => {
                        self.writes.remove(&key);
                    }
                },
                Some(Undo::RangeDelete) => {
                    self.range_deletes.pop();
                }
                Some(Undo::Change) => {
                    self.changes.pop();
                }
                None => break,
            }
        }
    }

    /// Keeps the changes since `sp`. Releasing the outermost savepoint forgets the undo record.
    pub(crate) fn release(&mut self, sp: Savepoint) {
        if sp.0 == 0 {
            self.undo.clear();
        }
    }

    fn range_deleted(&self, cf: usize, key: &[u8]) -> bool {
        self.range_deletes
            .iter()
            .any(|(c, p)| *c == cf && key.starts_with(p))
    }

    pub(crate) fn get(&self, cf: usize, key: &[u8]) -> R<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(&(cf, key.to_vec())) {
            return Ok(v.clone());
        }
        if self.range_deleted(cf, key) {
            return Ok(None);
        }
        Ok(self
            .eng
            .db
            .get_cf_opt(self.eng.cf(CFS[cf]), key, &self.opts())?)
    }

    pub(crate) fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        cf: usize,
        key: &[u8],
    ) -> R<Option<T>> {
        match self.get(cf, key)? {
            Some(bytes) => Ok(Some(decode(key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn set(&mut self, cf: usize, key: Vec<u8>, value: Option<Vec<u8>>) {
        let k = (cf, key);
        let prev = self.writes.insert(k.clone(), value);
        self.undo.push(Undo::Write { key: k, prev });
    }

    pub(crate) fn put(&mut self, cf: usize, key: Vec<u8>, value: Vec<u8>) {
        self.set(cf, key, Some(value));
    }

    pub(crate) fn del(&mut self, cf: usize, key: Vec<u8>) {
        self.set(cf, key, None);
    }

    pub(crate) fn delete_prefix(&mut self, cf: usize, prefix: Vec<u8>) {
        let doomed: Vec<Key> = self
            .writes
            .range((cf, prefix.clone())..)
            .take_while(|((c, k), _)| *c == cf && k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            let prev = self.writes.remove(&key);
            self.undo.push(Undo::Write { key, prev });
        }
        self.range_deletes.push((cf, prefix));
        self.undo.push(Undo::RangeDelete);
    }

    /// Records a document change for realtime; a rollback past it forgets it.
    pub(crate) fn record(&mut self, change: model::change::Change) {
        self.changes.push(change);
        self.undo.push(Undo::Change);
    }

    /// The changes the envelope being applied has recorded so far.
    pub(crate) fn pending_changes(&self) -> &[model::change::Change] {
        &self.changes
    }

    /// Ends an envelope: it can no longer be rolled back (the undo record is dropped), and
    /// the changes it recorded are answered, one per document (`coalesce`).
    pub(crate) fn end_envelope(&mut self) -> Vec<model::change::Change> {
        self.undo.clear();
        model::change::coalesce(std::mem::take(&mut self.changes))
    }

    /// Live keys/values under `prefix` in key order, the overlay merged over the database,
    /// at most `limit` of them.
    pub(crate) fn scan_limit(
        &self,
        cf: usize,
        prefix: &[u8],
        limit: usize,
    ) -> R<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_from(cf, prefix, prefix, limit)
    }

    /// Like `scan_limit`, starting at `from` (a key under `prefix`).
    pub(crate) fn scan_from(
        &self,
        cf: usize,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> R<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut db_iter = self
            .eng
            .db
            .iterator_cf_opt(
                self.eng.cf(CFS[cf]),
                self.opts(),
                IteratorMode::From(from, Direction::Forward),
            )
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .filter(|item| {
                item.as_ref()
                    .map_or(true, |(k, _)| !self.range_deleted(cf, k))
            })
            .peekable();
        let mut over = self
            .writes
            .range((cf, from.to_vec())..)
            .take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
            .map(|((_, k), v)| (k, v))
            .peekable();
        while out.len() < limit {
            let db_next = match db_iter.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => {
                    if let Some(Err(e)) = db_iter.next() {
                        return Err(Failure::from(e));
                    }
                    continue;
                }
                None => None,
            };
            let over_next = over.peek().map(|(k, _)| (*k).clone());
            match (db_next, over_next) {
                (None, None) => break,
                (Some(d), Some(o)) if o <= d => {
                    if o == d {
                        db_iter.next();
                    }
                    if let Some((k, Some(v))) = over.next() {
                        out.push((k.clone(), v.clone()));
                    }
                }
                (None, Some(_)) => {
                    if let Some((k, Some(v))) = over.next() {
                        out.push((k.clone(), v.clone()));
                    }
                }
                (Some(_), _) => {
                    if let Some(Ok(kv)) = db_iter.next() {
                        out.push(kv);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every live key/value under `prefix`; applies scan with a limit (`scan_limit`).
    #[cfg(test)]
    pub(crate) fn scan(&self, cf: usize, prefix: &[u8]) -> R<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_limit(cf, prefix, usize::MAX)
    }

    pub(crate) fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (cf, prefix) in &self.range_deletes {
            batch.delete_range_cf(
                self.eng.cf(CFS[*cf]),
                prefix.as_slice(),
                keys::prefix_end(prefix).as_slice(),
            );
        }
        for ((cf, k), v) in self.writes {
            match v {
                Some(v) => batch.put_cf(self.eng.cf(CFS[cf]), k, v),
                None => batch.delete_cf(self.eng.cf(CFS[cf]), k),
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let eng = Engine::open(dir.path()).unwrap();
        (dir, eng)
    }

    fn keys_of(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<String> {
        rows.into_iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                )
            })
            .collect()
    }

    #[test]
    fn savepoints_undo_writes_and_range_deletes_in_order() {
        let (_d, eng) = open();
        let mut base = Txn::new(&eng);
        base.put(META, b"a/1".to_vec(), b"x".to_vec());
        base.put(META, b"a/2".to_vec(), b"y".to_vec());
        eng.write(base.into_batch()).unwrap();

        let mut t = Txn::new(&eng);
        let outer = t.savepoint();
        t.put(META, b"a/3".to_vec(), b"z".to_vec());
        let inner = t.savepoint();
        t.put(META, b"a/1".to_vec(), b"changed".to_vec());
        t.delete_prefix(META, b"a/".to_vec());
        t.put(META, b"a/9".to_vec(), b"new".to_vec());
        assert_eq!(keys_of(t.scan(META, b"a/").unwrap()), ["a/9=new"]);
        t.rollback(inner);
        assert_eq!(
            keys_of(t.scan(META, b"a/").unwrap()),
            ["a/1=x", "a/2=y", "a/3=z"]
        );
        t.rollback(outer);
        assert_eq!(keys_of(t.scan(META, b"a/").unwrap()), ["a/1=x", "a/2=y"]);
    }

    #[test]
    fn scan_limit_merges_overlay_and_database() {
        let (_d, eng) = open();
        let mut base = Txn::new(&eng);
        for k in ["p/1", "p/3", "p/5", "q/1"] {
            base.put(DOCS, k.as_bytes().to_vec(), b"db".to_vec());
        }
        eng.write(base.into_batch()).unwrap();
        let mut t = Txn::new(&eng);
        t.put(DOCS, b"p/2".to_vec(), b"ov".to_vec());
        t.put(DOCS, b"p/3".to_vec(), b"ov".to_vec());
        t.del(DOCS, b"p/5".to_vec());
        assert_eq!(
            keys_of(t.scan(DOCS, b"p/").unwrap()),
            ["p/1=db", "p/2=ov", "p/3=ov"]
        );
        assert_eq!(
            keys_of(t.scan_limit(DOCS, b"p/", 2).unwrap()),
            ["p/1=db", "p/2=ov"]
        );
    }
}
