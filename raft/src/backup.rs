//! Online backups (`basalt backup`): the whole state at one applied index, from the node asked,
//! while writes go on. After a read barrier (so it holds every write acknowledged before it was
//! asked for), the node takes a RocksDB checkpoint of its state — hard links, taken in an
//! instant, consistent because each entry is applied in one atomic batch — and streams it out
//! with the file chunks (blobs) it names, fetched from peers if this node lacks one.
//!
//! The stream is a sequence of frames, `tag: u8, len: u64 BE, payload`:
//! `H` a JSON header (`format`, `applied`, `digest` — the data digest, `node`, `blobs`,
//! `estimated_bytes`), `S` a piece of the state in the snapshot record format, `B` a blob (its
//! 64-character name, then its bytes), and `E` a JSON trailer (`state_bytes`, `blobs`,
//! `blob_bytes`). A stream without its trailer was cut short.

use crate::node::RaftNode;
use crate::ReplicationError;
use bytes::Bytes;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use storage_engine::Engine;
use tokio::sync::mpsc;

pub const HEADER: u8 = b'H';
pub const STATE: u8 = b'S';
pub const BLOB: u8 = b'B';
pub const END: u8 = b'E';
/// The stream's format, in its header.
pub const FORMAT: u64 = 1;
/// State bytes per `S` frame.
const STATE_FRAME: usize = 1 << 20;

/// One frame, encoded.
pub fn frame(tag: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The stream's items: frames, or why it stopped.
pub type Stream = mpsc::Receiver<Result<Bytes, String>>;

/// Writes the state as `S` frames into the stream, from a blocking thread.
struct StateFrames {
    tx: mpsc::Sender<Result<Bytes, String>>,
    buf: Vec<u8>,
    sent: u64,
}

impl StateFrames {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.sent += self.buf.len() as u64;
        let f = frame(STATE, &self.buf);
        self.buf.clear();
        self.tx
            .blocking_send(Ok(f))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl Write for StateFrames {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= STATE_FRAME {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Removes a backup's checkpoint directory however the backup ends.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, dir = %self.0.display(), "backup: removing its checkpoint");
            }
        }
    }
}

/// Sends an error down the stream and logs it.
async fn fail(tx: &mpsc::Sender<Result<Bytes, String>>, e: String) {
    tracing::warn!(error = %e, "backup failed");
    let _ = tx.send(Err(e)).await;
}

impl RaftNode {
    /// Starts a backup (see the module's documentation): after the read barrier, answers the
    /// stream at once; the checkpoint, its summary and the export follow on it (a large state
    /// takes longer to hash than a request may wait for its answer).
    pub async fn backup(self: &Arc<Self>) -> Result<Stream, ReplicationError> {
        self.read_barrier().await?;
        // Everything acknowledged before the backup was asked for is applied here by now.
        let floor = self.applied_index().unwrap_or(0);
        let (tx, rx) = mpsc::channel(4);
        let node = self.clone();
        tokio::spawn(async move {
            let scratch = Scratch(
                node.snapshots_dir()
                    .join(format!("backup-{:016x}", rand_suffix())),
            );
            let (engine, dir) = (node.engine().clone(), scratch.0.clone());
            let blobs = node.blob_store();
            // The checkpoint, and at once a hard link to each blob it names that this node
            // holds: a file deleted meanwhile cannot take its bytes away from the backup.
            let taken = tokio::task::spawn_blocking(move || {
                engine
                    .checkpoint(&dir.join("state"))
                    .map_err(|e| e.to_string())?;
                let summary =
                    Engine::summarize_checkpoint(&dir.join("state")).map_err(|e| e.to_string())?;
                std::fs::create_dir_all(dir.join("blobs")).map_err(|e| e.to_string())?;
                for name in &summary.blobs {
                    let _ = blobs.link_into(name, &dir.join("blobs").join(name));
                }
                Ok::<_, String>(summary)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            let summary = match taken {
                Ok(s) if s.applied < floor => {
                    return fail(&tx, format!("the checkpoint is at entry {} but entry {floor} was acknowledged before the backup (was a snapshot being installed?); try again", s.applied)).await;
                }
                Ok(s) => s,
                Err(e) => return fail(&tx, format!("taking the checkpoint: {e}")).await,
            };
            tracing::info!(
                applied = summary.applied,
                blobs = summary.blobs.len(),
                "backup: checkpoint taken"
            );
            let header = json!({
                "format": FORMAT,
                "applied": summary.applied,
                "digest": summary.digest,
                "node": node.id,
                "blobs": summary.blobs.len(),
                "estimated_bytes": summary.estimated_bytes,
            });
            if tx
                .send(Ok(frame(HEADER, header.to_string().as_bytes())))
                .await
                .is_err()
            {
                return;
            }
            let (state_tx, state_dir) = (tx.clone(), scratch.0.join("state"));
            let exported = tokio::task::spawn_blocking(move || {
                let mut out = StateFrames {
                    tx: state_tx,
                    buf: Vec::with_capacity(STATE_FRAME + 4096),
                    sent: 0,
                };
                Engine::export_checkpoint(&state_dir, &mut out)
                    .map_err(|e| e.to_string())
                    .and_then(|_| out.flush().map_err(|e| e.to_string()))
                    .map(|()| out.sent)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            let state_bytes = match exported {
                Ok(n) => n,
                Err(e) => return fail(&tx, format!("exporting the state: {e}")).await,
            };
            let mut blob_bytes = 0u64;
            for name in &summary.blobs {
                let linked = scratch.0.join("blobs").join(name);
                let data = match tokio::fs::read(&linked).await {
                    Ok(d) if crate::blobs::digest(&d) == *name => Bytes::from(d),
                    // Not held here (or damaged): a peer's copy.
                    _ => match node.get_blob(name.clone()).await {
                        Ok(d) => d,
                        Err(e) => return fail(&tx, format!("blob {name}: {e}")).await,
                    },
                };
                blob_bytes += data.len() as u64;
                let mut payload = Vec::with_capacity(name.len() + data.len());
                payload.extend_from_slice(name.as_bytes());
                payload.extend_from_slice(&data);
                if tx.send(Ok(frame(BLOB, &payload))).await.is_err() {
                    return;
                }
            }
            let end = json!({
                "state_bytes": state_bytes,
                "blobs": summary.blobs.len(),
                "blob_bytes": blob_bytes,
            });
            let _ = tx.send(Ok(frame(END, end.to_string().as_bytes()))).await;
            tracing::info!(
                applied = summary.applied,
                state_bytes,
                blob_bytes,
                "backup: sent"
            );
        });
        Ok(rx)
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::node::wall_clock_ms() as u64);
    h.finish()
}
