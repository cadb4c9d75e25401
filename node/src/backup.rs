//! `basalt backup --to DIR` and `basalt restore --from DIR --data-dir NEW_DIR`.
//!
//! A backup directory holds `state.snapshot` (the state, in the snapshot record format),
//! `blobs/` (the file chunks it names, stored as a node stores them) and `manifest.json`,
//! written last: the applied index it was taken at, the data digest, the snapshot's size and
//! SHA-256, and the blobs. A directory without a manifest is an unfinished backup.
//!
//! Restoring is offline: it builds a new node's data directory holding that state, without the
//! old cluster's Raft history, nodes or join tokens; `basalt serve --data-dir NEW_DIR` (no
//! `--join`) then starts a new cluster from it, and other nodes join it as usual.

use anyhow::{anyhow, bail, ensure, Context, Result};
use raft::backup::{BLOB, END, FORMAT, HEADER, STATE};
use raft::blobs::BlobStore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

const MANIFEST: &str = "manifest.json";
const SNAPSHOT: &str = "state.snapshot";

/// The longest frame taken: a state piece holds at most one record past its megabyte (a record
/// is at most 256 MiB), a blob frame one chunk.
const MAX_FRAME: u64 = 260 << 20;
/// How long the stream may stay silent before the backup is given up.
const SILENCE: std::time::Duration = std::time::Duration::from_secs(300);

/// Splits the response's bytes into frames as they arrive.
struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// The next whole frame, if the bytes so far hold one; an error for a frame longer than
    /// any a node sends.
    fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let Some(len) = self.buf.get(1..9) else {
            return Ok(None);
        };
        let len = u64::from_be_bytes(len.try_into()?);
        ensure!(
            len <= MAX_FRAME,
            "a frame of {len} bytes: not a backup stream"
        );
        let end = 9 + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let tag = self.buf[0];
        let payload = self.buf[9..end].to_vec();
        self.buf.drain(..end);
        Ok(Some((tag, payload)))
    }
}

fn progress(estimate: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(estimate.max(1)),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {bytes} of about {total_bytes} ({bytes_per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// `basalt backup --to DIR`: streams the backup from `endpoint` into `dir` (new or empty).
pub async fn backup(endpoint: &str, root_key: &str, dir: &Path) -> Result<Value> {
    if dir.exists() {
        ensure!(
            std::fs::read_dir(dir)?.next().is_none(),
            "{} is not empty: a backup goes into a new or empty directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("blobs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let url = format!("{}/v1/cluster/backup", endpoint.trim_end_matches('/'));
    let started = std::time::Instant::now();
    let mut res = reqwest::Client::builder()
        .build()?
        .post(&url)
        .header("x-appwrite-project", "console")
        .header("x-appwrite-key", root_key)
        .send()
        .await
        .map_err(|e| anyhow!("{url}: {e}"))?;
    if !res.status().is_success() {
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        bail!(
            "{status}: {}",
            body["message"].as_str().unwrap_or("the backup was refused")
        );
    }
    let mut frames = Frames { buf: Vec::new() };
    let mut header: Option<Value> = None;
    let mut end: Option<Value> = None;
    let mut snapshot =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join(SNAPSHOT))?);
    let mut sha = Sha256::new();
    let blobs = BlobStore::open(&dir.join("blobs"))?;
    let (mut state_bytes, mut blob_count, mut blob_bytes) = (0u64, 0u64, 0u64);
    let mut bar = None;
    while let Some(chunk) = tokio::time::timeout(SILENCE, res.chunk())
        .await
        .map_err(|_| {
            anyhow!(
                "no data for {} s: the backup was given up",
                SILENCE.as_secs()
            )
        })?
        .context("receiving the backup")?
    {
        if let Some(b) = &bar {
            indicatif::ProgressBar::inc(b, chunk.len() as u64);
        }
        frames.buf.extend_from_slice(&chunk);
        while let Some((tag, payload)) = frames.next()? {
            ensure!(end.is_none(), "frames after the backup's end");
            match tag {
                HEADER => {
                    let h: Value = serde_json::from_slice(&payload)?;
                    ensure!(
                        h["format"].as_u64() == Some(FORMAT),
                        "a backup in format {} (this basalt reads {FORMAT})",
                        h["format"]
                    );
                    bar = Some(progress(h["estimated_bytes"].as_u64().unwrap_or(0)));
                    header = Some(h);
                }
                STATE => {
                    ensure!(header.is_some(), "state before the header");
                    sha.update(&payload);
                    snapshot.write_all(&payload)?;
                    state_bytes += payload.len() as u64;
                }
                BLOB => {
                    ensure!(payload.len() >= 64, "a blob frame without a name");
                    let name = std::str::from_utf8(&payload[..64])?;
                    // `put` checks the bytes against their name.
                    blobs
                        .put(name, &payload[64..])
                        .with_context(|| format!("storing blob {name}"))?;
                    blob_count += 1;
                    blob_bytes += (payload.len() - 64) as u64;
                }
                END => end = Some(serde_json::from_slice(&payload)?),
                other => bail!("an unknown frame {other:?} in the backup"),
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let header = header.ok_or_else(|| anyhow!("the backup stream had no header"))?;
    let end = end.ok_or_else(|| {
        anyhow!(
            "the backup stream was cut short (no end frame): the node may have failed; try again"
        )
    })?;
    ensure!(frames.buf.is_empty(), "bytes after the backup's end");
    ensure!(
        end["state_bytes"].as_u64() == Some(state_bytes)
            && end["blobs"].as_u64() == Some(blob_count)
            && end["blob_bytes"].as_u64() == Some(blob_bytes),
        "the backup's end frame ({end}) does not match what arrived ({state_bytes} state bytes, {blob_count} blobs, {blob_bytes} blob bytes)"
    );
    let file = snapshot.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    let manifest = json!({
        "format": FORMAT,
        "applied": header["applied"],
        "digest": header["digest"],
        "node": header["node"],
        "state_bytes": state_bytes,
        "state_sha256": hex::encode(sha.finalize()),
        "blobs": blob_count,
        "blob_bytes": blob_bytes,
        "taken": model::time::format_ms(chrono_now_ms()),
        "seconds": (seconds * 100.0).round() / 100.0,
    });
    write_synced(&dir.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(json!({
        "applied": manifest["applied"],
        "digest": manifest["digest"],
        "bytes": state_bytes + blob_bytes,
        "seconds": manifest["seconds"],
    }))
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `basalt restore --from DIR --data-dir NEW_DIR` (offline): checks the backup, installs its
/// state and blobs into a new data directory, and checks the result's digest against the
/// manifest's. It is built beside `NEW_DIR` and renamed into place once whole: a restore that
/// fails or is cut short leaves no data directory a node could start on.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Value> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(from.join(MANIFEST)).with_context(|| {
            format!(
                "{} has no {MANIFEST}: not a finished backup",
                from.display()
            )
        })?)?;
    ensure!(
        manifest["format"].as_u64() == Some(FORMAT),
        "a backup in format {} (this basalt reads {FORMAT})",
        manifest["format"]
    );
    if data_dir.exists() {
        ensure!(
            std::fs::read_dir(data_dir)?.next().is_none(),
            "{} is not empty: restore builds a new data directory",
            data_dir.display()
        );
    }
    let snapshot = from.join(SNAPSHOT);
    let mut sha = Sha256::new();
    let mut f = std::fs::File::open(&snapshot)?;
    let size = std::io::copy(&mut f, &mut sha)?;
    ensure!(
        Some(size) == manifest["state_bytes"].as_u64()
            && Some(hex::encode(sha.finalize()).as_str()) == manifest["state_sha256"].as_str(),
        "{} does not match the manifest (damaged or changed)",
        snapshot.display()
    );
    let name = data_dir
        .file_name()
        .ok_or_else(|| anyhow!("{} names no directory", data_dir.display()))?;
    let partial = data_dir.with_file_name(format!("{}.restoring", name.to_string_lossy()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing an earlier, unfinished {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))?;
    }
    let engine = storage_engine::Engine::open(&partial.join("state"))?;
    let digest = engine.restore_backup(&snapshot, &partial.join("restore-work"))?;
    drop(engine);
    ensure!(
        Some(digest.as_str()) == manifest["digest"].as_str(),
        "the restored state's digest {digest} is not the backup's {}",
        manifest["digest"]
    );
    // The backup's blobs are read as files, never through a blob store (which would remove a
    // damaged one from the backup itself).
    let target = BlobStore::open(&partial.join("blobs"))?;
    let mut blobs = 0u64;
    for shard in std::fs::read_dir(from.join("blobs"))?.flatten() {
        if shard.file_name() == "tmp" || !shard.path().is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(shard.path())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let data = std::fs::read(entry.path())?;
            ensure!(
                raft::blobs::digest(&data) == name,
                "blob {name} in the backup is damaged"
            );
            target.put(&name, &data)?;
            blobs += 1;
        }
    }
    ensure!(
        Some(blobs) == manifest["blobs"].as_u64(),
        "the backup holds {blobs} blobs, its manifest says {}",
        manifest["blobs"]
    );
    // The node started on it seeds a new cluster from it (`raft::RESTORED`).
    write_synced(
        &partial.join(raft::RESTORED),
        &serde_json::to_vec_pretty(&json!({
            "applied": manifest["applied"],
            "digest": digest,
            "taken": manifest["taken"],
        }))?,
    )?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, data_dir)
        .with_context(|| format!("moving the restored data into {}", data_dir.display()))?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(json!({
        "applied": manifest["applied"],
        "digest": digest,
        "blobs": blobs,
    }))
}
