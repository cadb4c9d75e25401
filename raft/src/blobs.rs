//! File bytes, beside the log: content-addressed blobs on each node's disk.
//!
//! A blob is one stored chunk of a file (at most [`MAX_BLOB`] bytes), named by the SHA-256
//! (hex) of its bytes and kept as one file, `blobs/<first two hex digits>/<name>`. A blob is
//! written to a temporary file, synced, then renamed into place, so a name always holds whole
//! bytes; every read checks them against the name, and a blob that fails the check is
//! dropped (and fetched again from a peer by the caller).
//!
//! The replicated state says which blobs are needed (`keys::blob_refs`); a node reclaims a
//! blob that no chunk names once it has not been written or asked to be written for
//! [`BlobStore::sweep`]'s grace period — long enough that an upload whose chunk is stored but
//! whose proposal has not committed yet never loses it. Putting a blob that exists refreshes
//! its time, under the same lock as the sweep's check, so a blob reused by a new upload
//! (same bytes) is never reclaimed under it.
//!
//! All of it is blocking file work: callers run it off the async runtime.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The largest blob: a 5 MiB chunk, compressed (zstd and gzip grow incompressible input by a
/// little) and sealed (nonce and tag), with room to spare.
pub const MAX_BLOB: usize = 6 << 20;

pub struct BlobStore {
    dir: PathBuf,
    /// Held while a blob's presence is decided: a put that finds it (and refreshes it) and a
    /// sweep that removes it never interleave.
    presence: Mutex<()>,
}

/// SHA-256 (hex) of `data`.
pub fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A blob name: 64 lower-case hex digits (and so a safe file name).
pub fn valid_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn bad_name(name: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{name:?} is not a blob name"),
    )
}

impl BlobStore {
    /// Opens (making it if need be) the blob directory, clearing temporary files a crash left.
    pub fn open(dir: &Path) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        for entry in std::fs::read_dir(dir.join("tmp"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(BlobStore {
            dir: dir.to_path_buf(),
            presence: Mutex::new(()),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(&name[..2]).join(name)
    }

    /// Stores `data` as blob `name`, durably; refused unless `name` is its digest. A blob
    /// already there whole is only refreshed.
    pub fn put(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        self.store(name, data, true)
    }

    /// `put`, for bytes whose digest the caller has just computed itself (not checked again).
    pub fn put_hashed(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        debug_assert_eq!(digest(data), name);
        self.store(name, data, false)
    }

    fn store(&self, name: &str, data: &[u8], verify: bool) -> std::io::Result<()> {
        if !valid_name(name) {
            return Err(bad_name(name));
        }
        if data.len() > MAX_BLOB || (verify && digest(data) != name) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the bytes given for blob {name} do not hash to it"),
            ));
        }
        let path = self.path(name);
        if self.refresh(&path, data.len())? {
            return Ok(());
        }
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{name}.{}", rand_suffix(&path, data.len() as u64)));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        if !parent.exists() {
            std::fs::create_dir_all(&parent)?;
            // The new shard's own entry must survive a power loss too.
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        {
            let _held = self.presence.lock().unwrap_or_else(|p| p.into_inner());
            std::fs::rename(&tmp, &path)?;
        }
        std::fs::File::open(&parent)?.sync_all()?;
        Ok(())
    }

    /// If blob `path` is there whole (its bytes hash to its name), makes it recent and answers
    /// true; a damaged copy answers false (and is replaced by the caller).
    fn refresh(&self, path: &Path, len: usize) -> std::io::Result<bool> {
        match std::fs::metadata(path) {
            Ok(m) if m.len() == len as u64 => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        match std::fs::read(path) {
            Ok(d) if Some(digest(&d)) == name => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        // Under the lock, so a sweep that has not removed it yet will see it recent.
        let _held = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::File::options().write(true).open(path) {
            Ok(f) => {
                f.set_modified(SystemTime::now())?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Blob `name`'s bytes, if this node holds them whole. Bytes that fail their check are
    /// removed (they are damaged; a peer's copy replaces them).
    pub fn get(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        if !valid_name(name) {
            return Err(bad_name(name));
        }
        let path = self.path(name);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if digest(&data) != name {
            tracing::warn!(
                blob = name,
                "a stored blob failed its checksum: dropped, to be fetched again from a peer"
            );
            let _held = self.presence.lock().unwrap_or_else(|p| p.into_inner());
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(data))
    }

    /// Hard-links blob `name` (if this node holds it) at `to`, on the same file system: the
    /// bytes stay while the link does, whatever the sweep does to the blob.
    pub fn link_into(&self, name: &str, to: &Path) -> std::io::Result<()> {
        if !valid_name(name) {
            return Err(bad_name(name));
        }
        let _held = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::hard_link(self.path(name), to)
    }

    /// Writes a probe file where blobs are written (durably, as a blob is), reads it back
    /// and removes it: whether this node can store file bytes now.
    pub fn probe(&self) -> std::io::Result<()> {
        let tmp = self.dir.join("tmp");
        let path = tmp.join(format!("probe.{}", rand_suffix(&tmp, 0)));
        let data = path.as_os_str().as_encoded_bytes().to_vec();
        let written = (|| {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&data)?;
            f.sync_all()?;
            if std::fs::read(&path)? != data {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the probe file read back differs from what was written",
                ));
            }
            Ok(())
        })();
        let removed = std::fs::remove_file(&path);
        written.and(removed)
    }

    pub fn has(&self, name: &str) -> bool {
        valid_name(name) && self.path(name).exists()
    }

    /// Removes every blob for which `needed` says no and that has not been put for `grace`;
    /// answers how many went and how many bytes.
    pub fn sweep(
        &self,
        needed: impl Fn(&str) -> bool,
        grace: Duration,
    ) -> std::io::Result<(u64, u64)> {
        let (mut count, mut bytes) = (0, 0);
        let now = SystemTime::now();
        for shard in std::fs::read_dir(&self.dir)? {
            let shard = shard?;
            if shard.file_name() == "tmp" || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !valid_name(&name) || needed(&name) {
                    continue;
                }
                let _held = self.presence.lock().unwrap_or_else(|p| p.into_inner());
                let Ok(meta) = entry.metadata() else { continue };
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if age >= grace && std::fs::remove_file(entry.path()).is_ok() {
                    count += 1;
                    bytes += meta.len();
                }
            }
        }
        Ok((count, bytes))
    }

    /// Blobs held and their bytes (for status).
    pub fn usage(&self) -> (u64, u64) {
        let (mut count, mut bytes) = (0, 0);
        let Ok(shards) = std::fs::read_dir(&self.dir) else {
            return (0, 0);
        };
        for shard in shards.flatten() {
            if shard.file_name() == "tmp" {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(m) = entry.metadata() {
                    count += 1;
                    bytes += m.len();
                }
            }
        }
        (count, bytes)
    }
}

/// A suffix that keeps concurrent writers of the same blob off each other's temporary file.
fn rand_suffix(path: &Path, len: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(path.as_os_str().as_encoded_bytes());
    h.write_u64(len);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_named_by_their_bytes_and_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"hello blob".to_vec();
        let name = digest(&data);
        assert!(store.put(&digest(b"other"), &data).is_err());
        assert!(store.put("../../etc/passwd", &data).is_err());
        store.put(&name, &data).unwrap();
        store.put(&name, &data).unwrap();
        assert_eq!(store.get(&name).unwrap(), Some(data.clone()));
        // Damaged bytes are not served, and are dropped.
        std::fs::write(store.path(&name), b"hello blub").unwrap();
        assert_eq!(store.get(&name).unwrap(), None);
        assert!(!store.has(&name));
    }

    #[test]
    fn a_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        store.probe().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        std::fs::remove_dir(dir.path().join("tmp")).unwrap();
        assert!(store.probe().is_err(), "no directory to write in");
    }

    #[test]
    fn sweeps_spare_needed_and_recent_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (a, b) = (b"a".to_vec(), b"b".to_vec());
        let (na, nb) = (digest(&a), digest(&b));
        store.put(&na, &a).unwrap();
        store.put(&nb, &b).unwrap();
        assert_eq!(
            store.sweep(|_| false, Duration::from_secs(3600)).unwrap(),
            (0, 0)
        );
        assert_eq!(
            store.sweep(|n| n == na, Duration::ZERO).unwrap(),
            (1, 1),
            "only the unneeded one"
        );
        assert!(store.has(&na) && !store.has(&nb));
    }
}
