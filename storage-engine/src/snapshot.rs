//! Snapshots as files: a state is written out as a stream of records — column family, key,
//! value, in key order — and read back the same way, so building, sending and installing a
//! snapshot takes memory bounded by a buffer, not by the data.
//!
//! Record: `cf: u8, key_len: u32 BE, key, value_len: u32 BE, value`. Installing turns the
//! stream into SST files (one run per column family, split every `SST_BYTES`) and ingests
//! them after deleting everything else; a marker record makes it crash-safe (see
//! `Engine::install_snapshot`).

use crate::engine::{corrupt, Engine, StorageError, CFS, CF_META};
use crate::keys;
use rocksdb::{IteratorMode, Options, SstFileWriter, WriteBatch, WriteOptions, DB};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// An SST file is closed and a new one started after this many bytes of keys and values.
const SST_BYTES: u64 = 64 << 20;
/// Records longer than this are refused as corrupt (no key or value comes near it).
const MAX_RECORD: u32 = 256 << 20;

/// Present while a snapshot install is under way: the file it installs from. A node that
/// finds it at start-up finishes the install before anything else.
pub const INSTALLING: &[u8] = b"\0installing";

/// What a backup holds, read from the checkpoint it is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSummary {
    /// The last log entry applied to it.
    pub applied: u64,
    /// `View::data_digest` of it.
    pub digest: String,
    /// The blobs (file chunks) its files name.
    pub blobs: Vec<String>,
    /// About how many bytes its records take (RocksDB's estimate of the live data).
    pub estimated_bytes: u64,
}

impl Engine {
    /// Reads a checkpoint (made by `checkpoint`) for a backup: what it covers, its data
    /// digest, the blobs it names.
    pub fn summarize_checkpoint(dir: &Path) -> Result<CheckpointSummary, StorageError> {
        let db = DB::open_cf_for_read_only(&Options::default(), dir, CFS, false)?;
        let meta = db
            .cf_handle(CF_META)
            .ok_or_else(|| corrupt(CF_META.as_bytes(), "missing column family"))?;
        if db.get_cf(meta, INSTALLING)?.is_some() {
            return Err(corrupt(
                INSTALLING,
                "taken while a snapshot was being installed (a partial state)",
            ));
        }
        let applied = match db.get_cf(meta, keys::APPLIED_INDEX)? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| corrupt(keys::APPLIED_INDEX, "not 8 bytes"))?,
            ),
            None => 0,
        };
        let digest = crate::engine::digests_db(&db, rocksdb::ReadOptions::default)?.1;
        let mut blobs = Vec::new();
        for item in db.iterator_cf(
            meta,
            IteratorMode::From(keys::BLOB_REFS, rocksdb::Direction::Forward),
        ) {
            let (k, _) = item?;
            let Some(name) = k.strip_prefix(keys::BLOB_REFS) else {
                break;
            };
            blobs.push(String::from_utf8_lossy(name).into_owned());
        }
        let mut estimated_bytes = 0;
        for name in CFS {
            if let Some(cf) = db.cf_handle(name) {
                estimated_bytes += db
                    .property_int_value_cf(cf, "rocksdb.estimate-live-data-size")?
                    .unwrap_or(0);
            }
        }
        Ok(CheckpointSummary {
            applied,
            digest,
            blobs,
            estimated_bytes,
        })
    }

    /// Seeds a new node's state from a backup's snapshot `file` (`basalt restore`): installs
    /// it, then forgets what bound it to the old cluster — its Raft position and membership,
    /// its nodes, join tokens and root key — so the node that starts on it begins a cluster of its own,
    /// holding the data. Answers the data digest of the result.
    pub fn restore_backup(&self, file: &Path, work: &Path) -> Result<String, StorageError> {
        self.install_snapshot(file, work)?;
        let meta = self.cf(CF_META);
        let mut batch = WriteBatch::default();
        batch.delete_cf(meta, keys::APPLIED);
        batch.delete_cf(meta, keys::APPLIED_INDEX);
        // The new cluster's root key is the one its first node is started with.
        batch.delete_cf(meta, keys::ROOT_KEY);
        for prefix in [keys::NODES, keys::JOIN_TOKENS] {
            batch.delete_range_cf(meta, prefix, &keys::prefix_end(prefix));
        }
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync)?;
        self.view()?.data_digest()
    }

    /// Writes the state of the checkpoint in `dir` to `out` as snapshot records, and returns
    /// the applied-state record inside it (what the snapshot covers).
    pub fn export_checkpoint(
        dir: &Path,
        out: &mut impl Write,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let db = DB::open_cf_for_read_only(&Options::default(), dir, CFS, false)?;
        let applied = match db.cf_handle(CF_META) {
            Some(cf) => db.get_cf(cf, keys::APPLIED)?,
            None => None,
        };
        let mut out = BufWriter::with_capacity(1 << 20, out);
        for (i, name) in CFS.iter().enumerate() {
            let cf = db
                .cf_handle(name)
                .ok_or_else(|| corrupt(name.as_bytes(), "missing column family"))?;
            for item in db.iterator_cf(cf, IteratorMode::Start) {
                let (k, v) = item?;
                out.write_all(&[i as u8])?;
                out.write_all(&(k.len() as u32).to_be_bytes())?;
                out.write_all(&k)?;
                out.write_all(&(v.len() as u32).to_be_bytes())?;
                out.write_all(&v)?;
            }
        }
        out.flush()?;
        Ok(applied)
    }

    /// Replaces the whole state with the snapshot in `file` (which must be durable already),
    /// crash-safely. The stream is first turned into SST files in `work` — a corrupt stream is
    /// refused there, with the state untouched. Then a marker naming `file` is written, the
    /// state replaced, and the marker removed; a node restarted with the marker present runs
    /// the install again (`interrupted_install`).
    pub fn install_snapshot(&self, file: &Path, work: &Path) -> Result<(), StorageError> {
        let ssts = build_ssts(file, work)?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_META),
            INSTALLING,
            file.as_os_str().as_encoded_bytes(),
        );
        self.db.write_opt(batch, &sync)?;
        self.replace_with(ssts)?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_META), INSTALLING);
        self.db.write_opt(batch, &sync)?;
        std::fs::remove_dir_all(work)?;
        Ok(())
    }

    /// The file of an install that a crash interrupted, if any.
    pub fn interrupted_install(&self) -> Result<Option<PathBuf>, StorageError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), INSTALLING)?
            .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned())))
    }

    /// Deletes everything in the state but the install marker, then ingests `ssts` (per
    /// column family). Ingested files take sequence numbers newer than the range deletions.
    fn replace_with(&self, ssts: Vec<Vec<PathBuf>>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let end = [0xFFu8; 64];
        for name in CFS {
            let cf = self.cf(name);
            if name == CF_META {
                let mut after = INSTALLING.to_vec();
                after.push(0);
                batch.delete_range_cf(cf, [].as_slice(), INSTALLING);
                batch.delete_range_cf(cf, after.as_slice(), end.as_slice());
            } else {
                batch.delete_range_cf(cf, [].as_slice(), end.as_slice());
            }
        }
        self.db.write(batch)?;
        for (name, files) in CFS.iter().zip(ssts) {
            if !files.is_empty() {
                self.db.ingest_external_file_cf(self.cf(name), files)?;
            }
        }
        Ok(())
    }
}

/// Turns a snapshot stream into SST files in `work` (emptied first), one run per column
/// family, split every `SST_BYTES`. Keys must arrive in order (the SST writer refuses others).
fn build_ssts(file: &Path, work: &Path) -> Result<Vec<Vec<PathBuf>>, StorageError> {
    if work.exists() {
        std::fs::remove_dir_all(work)?;
    }
    std::fs::create_dir_all(work)?;
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let mut files: Vec<Vec<PathBuf>> = vec![Vec::new(); CFS.len()];
    let mut writer: Option<(usize, SstFileWriter)> = None;
    let mut written = 0u64;
    let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut last_cf = 0usize;
    while let Some((cf, k, v)) = read_record(&mut input)? {
        if cf < last_cf {
            return Err(corrupt(b"snapshot", "column families out of order"));
        }
        last_cf = cf;
        let rotate = match &writer {
            Some((c, _)) => *c != cf || written >= SST_BYTES,
            None => true,
        };
        if rotate {
            if let Some((_, mut w)) = writer.take() {
                w.finish()?;
            }
            let path = work.join(format!("{cf}-{}.sst", files[cf].len()));
            let w = SstFileWriter::create(&opts);
            w.open(&path)?;
            files[cf].push(path);
            writer = Some((cf, w));
            written = 0;
        }
        if let Some((_, w)) = writer.as_mut() {
            w.put(&k, &v)?;
            written += (k.len() + v.len()) as u64;
        }
    }
    if let Some((_, mut w)) = writer.take() {
        w.finish()?;
    }
    Ok(files)
}

/// One snapshot record: column family index, key, value.
type Record = (usize, Vec<u8>, Vec<u8>);

/// The next record of a snapshot stream; `None` at its clean end.
fn read_record(r: &mut impl Read) -> Result<Option<Record>, StorageError> {
    let mut cf = [0u8; 1];
    match r.read_exact(&mut cf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let cf = cf[0] as usize;
    if cf >= CFS.len() {
        return Err(corrupt(b"snapshot", "bad column family"));
    }
    let chunk = |r: &mut dyn Read| -> Result<Vec<u8>, StorageError> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)
            .map_err(|_| corrupt(b"snapshot", "truncated"))?;
        let len = u32::from_be_bytes(len);
        if len > MAX_RECORD {
            return Err(corrupt(b"snapshot", "record too long"));
        }
        let mut buf = vec![0u8; len as usize];
        r.read_exact(&mut buf)
            .map_err(|_| corrupt(b"snapshot", "truncated"))?;
        Ok(buf)
    };
    let k = chunk(r)?;
    let v = chunk(r)?;
    Ok(Some((cf, k, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(eng: &Engine, n: usize) {
        let mut batch = WriteBatch::default();
        for i in 0..n {
            batch.put_cf(
                eng.cf(crate::engine::CF_DOCS),
                format!("p\0d\0c\0{i:08}"),
                vec![7u8; 100],
            );
            batch.put_cf(
                eng.cf(crate::engine::CF_INDEX),
                format!("p\0d\0c\0$seq\0{i:08}"),
                b"x",
            );
        }
        batch.put_cf(eng.cf(CF_META), keys::APPLIED, b"applied-record");
        eng.write(batch).unwrap();
    }

    #[test]
    fn a_backup_restores_the_data_without_the_old_clusters_bookkeeping() {
        let d = tempfile::tempdir().unwrap();
        let src = Engine::open(&d.path().join("a")).unwrap();
        fill(&src, 300);
        let mut batch = WriteBatch::default();
        let meta = src.cf(CF_META);
        batch.put_cf(meta, keys::APPLIED_INDEX, 42u64.to_be_bytes());
        batch.put_cf(meta, keys::cluster_node(3), b"node three");
        batch.put_cf(meta, keys::join_token("t1"), b"a token");
        batch.put_cf(meta, keys::blob_refs(&"ab".repeat(32)), 1u64.to_be_bytes());
        src.write(batch).unwrap();
        let (all, data) = src.view().unwrap().digests().unwrap();
        assert_ne!(all, data);

        src.checkpoint(&d.path().join("cp")).unwrap();
        let summary = Engine::summarize_checkpoint(&d.path().join("cp")).unwrap();
        assert_eq!(summary.applied, 42);
        assert_eq!(summary.digest, data);
        assert_eq!(summary.blobs, vec!["ab".repeat(32)]);
        assert!(summary.estimated_bytes > 0);

        let snap = d.path().join("snap.data");
        Engine::export_checkpoint(
            &d.path().join("cp"),
            &mut std::fs::File::create(&snap).unwrap(),
        )
        .unwrap();
        let dst = Engine::open(&d.path().join("b")).unwrap();
        assert_eq!(
            dst.restore_backup(&snap, &d.path().join("work")).unwrap(),
            data
        );
        let v = dst.view().unwrap();
        assert_eq!(v.data_digest().unwrap(), data);
        // Nothing of the old cluster's Raft position, nodes or tokens is left.
        for key in [
            keys::APPLIED.to_vec(),
            keys::APPLIED_INDEX.to_vec(),
            keys::cluster_node(3),
            keys::join_token("t1"),
        ] {
            assert_eq!(dst.db.get_cf(dst.cf(CF_META), &key).unwrap(), None);
        }
        // Bookkeeping written later (a new cluster's) leaves the data digest as it was.
        let mut batch = WriteBatch::default();
        batch.put_cf(dst.cf(CF_META), keys::APPLIED_INDEX, 7u64.to_be_bytes());
        batch.put_cf(dst.cf(CF_META), keys::cluster_node(1), b"new node");
        dst.write(batch).unwrap();
        assert_eq!(dst.view().unwrap().data_digest().unwrap(), data);
    }

    #[test]
    fn a_snapshot_file_installs_an_identical_state_over_any_previous_one() {
        let d = tempfile::tempdir().unwrap();
        let src = Engine::open(&d.path().join("a")).unwrap();
        fill(&src, 5000);
        src.checkpoint(&d.path().join("cp")).unwrap();
        let snap = d.path().join("snap.data");
        let applied = Engine::export_checkpoint(
            &d.path().join("cp"),
            &mut std::fs::File::create(&snap).unwrap(),
        )
        .unwrap();
        assert_eq!(applied.as_deref(), Some(&b"applied-record"[..]));

        let dst = Engine::open(&d.path().join("b")).unwrap();
        let mut stale = WriteBatch::default();
        stale.put_cf(
            dst.cf(crate::engine::CF_DOCS),
            "zzz-stale",
            "gone after install",
        );
        dst.write(stale).unwrap();
        dst.install_snapshot(&snap, &d.path().join("work")).unwrap();
        assert_eq!(dst.interrupted_install().unwrap(), None);
        assert_eq!(
            src.view().unwrap().digest().unwrap(),
            dst.view().unwrap().digest().unwrap()
        );
        assert!(!d.path().join("work").exists());
    }

    #[test]
    fn a_state_with_another_key_layout_is_refused_at_open() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a");
        let eng = Engine::open(&path).unwrap();
        fill(&eng, 3);
        drop(eng);
        // Reopened as it was written: fine.
        let eng = Engine::open(&path).unwrap();
        // A layout from another build, or none on a state that has data: refused.
        eng.db
            .put_cf(eng.cf(CF_META), keys::FORMAT, 1u32.to_be_bytes())
            .unwrap();
        drop(eng);
        let err = Engine::open(&path).err().expect("refused");
        assert!(matches!(err, StorageError::StateFormat { .. }), "{err}");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, CFS).unwrap();
        db.delete_cf(db.cf_handle(CF_META).unwrap(), keys::FORMAT)
            .unwrap();
        drop(db);
        assert!(Engine::open(&path).is_err());
        // Unless an interrupted snapshot install will replace the state anyway.
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, CFS).unwrap();
        db.put_cf(db.cf_handle(CF_META).unwrap(), INSTALLING, b"snap.data")
            .unwrap();
        drop(db);
        assert!(Engine::open(&path).is_ok());
    }

    #[test]
    fn a_corrupt_stream_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let eng = Engine::open(&d.path().join("a")).unwrap();
        for bad in [
            vec![9u8, 0, 0, 0, 1, b'k', 0, 0, 0, 0], // unknown column family
            vec![1u8, 0, 0, 0, 5, b'k'],             // truncated key
            vec![1u8, 0xFF, 0xFF, 0xFF, 0xFF, b'k'], // absurd length
            [
                vec![1u8, 0, 0, 0, 1, b'b', 0, 0, 0, 0],
                vec![1u8, 0, 0, 0, 1, b'a', 0, 0, 0, 0],
            ]
            .concat(), // keys out of order
        ] {
            let f = d.path().join("bad.data");
            std::fs::write(&f, &bad).unwrap();
            assert!(
                eng.install_snapshot(&f, &d.path().join("work")).is_err(),
                "{bad:?}"
            );
            assert_eq!(
                eng.interrupted_install().unwrap(),
                None,
                "state touched: {bad:?}"
            );
        }
    }
}
