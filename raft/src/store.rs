//! Openraft storage: the log store over `LogDb` (fsync before an append is reported
//! durable) and the state machine over the storage `Engine` (applied state written in the
//! same batch as each command; snapshots are RocksDB checkpoints).

use crate::{NodeInfo, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use storage_engine::{Engine, LogDb};

type SErr = StorageError<u64>;

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> SErr {
    StorageIOError::read(io_err(e)).into()
}

fn write_err(e: impl std::fmt::Display) -> SErr {
    StorageIOError::write(io_err(e)).into()
}

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: LogDb,
}

impl LogStore {
    pub fn new(db: LogDb) -> Self {
        LogStore { db }
    }

    fn state<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SErr> {
        match self.db.get_state(key).map_err(read_err)? {
            Some(b) => bincode::deserialize(&b).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x + 1,
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        let db = self.db.clone();
        let rows = off_runtime(move || db.range(start, end)).map_err(read_err)?;
        rows.into_iter()
            .map(|(_, b)| bincode::deserialize(&b).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let last_purged: Option<LogId<u64>> = self.state(LAST_PURGED)?;
        let last = match self.db.last().map_err(read_err)? {
            Some((_, b)) => Some(
                bincode::deserialize::<Entry<TypeConfig>>(&b)
                    .map_err(read_err)?
                    .log_id,
            ),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SErr> {
        // Durable before returning: a forgotten vote allows two votes in one term.
        let bytes = bincode::serialize(vote).map_err(write_err)?;
        let db = self.db.clone();
        off_runtime(move || db.put_state(VOTE, bytes, true)).map_err(write_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SErr> {
        self.state(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SErr> {
        let bytes = bincode::serialize(&committed).map_err(write_err)?;
        self.db
            .put_state(COMMITTED, bytes, false)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SErr> {
        Ok(self.state::<Option<LogId<u64>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            rows.push((e.log_id.index, bincode::serialize(&e).map_err(write_err)?));
        }
        let db = self.db.clone();
        // fsync off the async threads; the entries are durable when the callback fires.
        let res = off_runtime(move || db.append(rows));
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(write_err(msg))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        self.db.truncate_from(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let bytes = bincode::serialize(&log_id).map_err(write_err)?;
        let db = self.db.clone();
        off_runtime(move || db.purge_upto(log_id.index, LAST_PURGED, bytes)).map_err(write_err)
    }
}

/// What the state machine has applied: persisted with every apply.
type Applied = (Option<LogId<u64>>, StoredMembership<u64, NodeInfo>);

type Meta = SnapshotMeta<u64, NodeInfo>;

struct SmState {
    applied: Applied,
    /// The current snapshot: what it covers, and its data file's name in the snapshot dir.
    current: Option<(Meta, String)>,
    /// The file a snapshot from the leader is being received into.
    receiving: Option<PathBuf>,
}

/// A replica consistency check (`ClusterOp::Check`) as this node sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckState {
    /// Applied at this index; the digest of the state there is being computed.
    Computing {
        index: u64,
    },
    Done {
        index: u64,
        digest: String,
        /// Of the data alone (`View::data_digest`).
        data_digest: String,
    },
    Failed {
        index: u64,
        reason: String,
    },
}

/// Runs blocking work (an entry's apply, a log append: RocksDB writes, fsync) with this worker thread handed
/// over to it (`block_in_place`): the runtime's other tasks move to another thread meanwhile.
/// Not `spawn_blocking`: a task queued there when the runtime shuts down is cancelled before it
/// starts, and openraft logs the cancelled write as a storage error (CI, a SIGTERM racing the
/// state machine worker's next command).
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Counts one apply under way for as long as it lives.
struct Applying(Arc<AtomicUsize>);

impl Applying {
    fn new(count: &Arc<AtomicUsize>) -> Applying {
        count.fetch_add(1, Ordering::AcqRel);
        Applying(count.clone())
    }
}

impl Drop for Applying {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Checks remembered per node (oldest forgotten first).
const CHECKS_KEPT: usize = 16;

#[derive(Clone)]
pub struct StateMachine {
    engine: Engine,
    dir: PathBuf,
    state: Arc<Mutex<SmState>>,
    /// Makes file names unique (seeded from the clock, so they stay unique across restarts).
    counter: Arc<AtomicU64>,
    /// Held while the current snapshot is replaced or opened.
    files: Arc<Mutex<()>>,
    /// Consistency checks by request id, in the order they were applied.
    checks: Arc<Mutex<Vec<(model::RequestId, CheckState)>>>,
    /// Applies under way: a node shutting down waits for them, so the runtime never goes away
    /// under one (its blocking task cancelled, logged by openraft as a storage error).
    applying: Arc<AtomicUsize>,
    /// Where what each applied entry changed goes (realtime), if anywhere.
    feed: Option<Arc<dyn model::change::Feed>>,
}

/// `(SnapshotMeta, data file name)` of the current snapshot, replaced atomically.
const CURRENT_META: &str = "current.meta";
/// Where SST files are built while a snapshot is installed.
const INSTALL_WORK: &str = "install-work";

impl StateMachine {
    /// Opens the state machine over `engine`. An install that a crash interrupted is finished
    /// first (from the received file it names); files no snapshot refers to are removed.
    pub fn open(
        engine: Engine,
        snapshot_dir: PathBuf,
        feed: Option<Arc<dyn model::change::Feed>>,
    ) -> Result<Self, SErr> {
        std::fs::create_dir_all(&snapshot_dir).map_err(write_err)?;
        let resumed = engine.interrupted_install().map_err(read_err)?;
        if let Some(file) = &resumed {
            tracing::warn!(file = %file.display(), "finishing a snapshot install a crash interrupted");
            engine
                .install_snapshot(file, &snapshot_dir.join(INSTALL_WORK))
                .map_err(write_err)?;
        }
        let applied: Applied = match engine.applied_meta().map_err(read_err)? {
            Some(b) => bincode::deserialize(&b).map_err(read_err)?,
            None => (None, StoredMembership::default()),
        };
        let current: Option<(Meta, String)> = match std::fs::read(snapshot_dir.join(CURRENT_META)) {
            Ok(b) => Some(bincode::deserialize(&b).map_err(read_err)?),
            Err(_) => None,
        };
        // Leftovers of builds, receptions and replaced snapshots.
        for entry in std::fs::read_dir(&snapshot_dir)
            .map_err(read_err)?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = name == CURRENT_META || current.as_ref().is_some_and(|(_, f)| *f == name);
            if !keep {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(StateMachine {
            engine,
            dir: snapshot_dir,
            state: Arc::new(Mutex::new(SmState {
                applied,
                current,
                receiving: None,
            })),
            counter: Arc::new(AtomicU64::new(seed)),
            files: Arc::new(Mutex::new(())),
            checks: Arc::new(Mutex::new(Vec::new())),
            applying: Arc::new(AtomicUsize::new(0)),
            feed,
        })
    }

    /// Where a consistency check stands on this node, if it has applied it.
    pub fn check(&self, id: model::RequestId) -> Option<CheckState> {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, s)| s.clone())
    }

    /// Starts computing the digest of the state as of `index` (called while applying it:
    /// the view is taken before the next entry is applied).
    fn start_check(&self, id: model::RequestId, index: u64) {
        {
            let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
            if checks.iter().any(|(c, _)| *c == id) {
                return;
            }
            if checks.len() >= CHECKS_KEPT {
                checks.remove(0);
            }
            checks.push((id, CheckState::Computing { index }));
        }
        let view = self.engine.view();
        let checks = self.checks.clone();
        std::thread::spawn(move || {
            let state = match view.and_then(|v| v.digests()) {
                Ok((digest, data_digest)) => CheckState::Done {
                    index,
                    digest,
                    data_digest,
                },
                Err(e) => CheckState::Failed {
                    index,
                    reason: e.to_string(),
                },
            };
            let mut checks = checks.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = checks.iter_mut().find(|(c, _)| *c == id) {
                slot.1 = state;
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmState> {
        // A poisoned lock only means another thread panicked mid-update of plain values.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn applied_index(&self) -> Option<u64> {
        self.lock().applied.0.map(|l| l.index)
    }

    /// Applies under way now.
    pub fn applying(&self) -> usize {
        self.applying.load(Ordering::Acquire)
    }

    /// The last membership applied here: the last committed one this node knows of.
    pub fn applied_membership(&self) -> openraft::Membership<u64, NodeInfo> {
        self.lock().applied.1.membership().clone()
    }

    /// Writes a snapshot of the state as it is now into a file — a RocksDB checkpoint (hard
    /// links), streamed out record by record — and makes it the current snapshot.
    fn build_now(&self) -> Result<Snapshot<TypeConfig>, SErr> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let checkpoint = self.dir.join(format!("building-{n}"));
        self.engine.checkpoint(&checkpoint).map_err(write_err)?;
        let name = format!("snap-{n}.data");
        let path = self.dir.join(&name);
        let mut file = std::fs::File::create(&path).map_err(write_err)?;
        let applied = Engine::export_checkpoint(&checkpoint, &mut file).map_err(read_err)?;
        file.sync_all().map_err(write_err)?;
        std::fs::remove_dir_all(&checkpoint).map_err(write_err)?;
        let (last_log_id, membership): Applied = match applied {
            Some(b) => bincode::deserialize(&b).map_err(read_err)?,
            None => (None, StoredMembership::default()),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: membership,
            snapshot_id: format!(
                "{}-{}-{n}",
                last_log_id.map(|l| l.leader_id.term).unwrap_or(0),
                last_log_id.map(|l| l.index).unwrap_or(0)
            ),
        };
        let (meta, name) = self.promote(meta, name)?;
        let file = std::fs::File::open(self.dir.join(&name)).map_err(read_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }

    /// Makes the snapshot in data file `name` current, unless the current one covers more of
    /// the log (then `name` is dropped and the current one answered). The switch is one
    /// fsynced rename of the meta file; the replaced data file is removed after it.
    fn promote(&self, meta: Meta, name: String) -> Result<(Meta, String), SErr> {
        let _files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.lock().current.clone();
        if let Some((cur, cur_name)) = current {
            if cur.last_log_id > meta.last_log_id {
                let _ = std::fs::remove_file(self.dir.join(&name));
                return Ok((cur, cur_name));
            }
        }
        let bytes = bincode::serialize(&(&meta, &name)).map_err(write_err)?;
        let tmp = self.dir.join("current.meta.tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(write_err)?;
            std::io::Write::write_all(&mut f, &bytes).map_err(write_err)?;
            f.sync_all().map_err(write_err)?;
        }
        std::fs::rename(&tmp, self.dir.join(CURRENT_META)).map_err(write_err)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
        let old = self.lock().current.replace((meta.clone(), name.clone()));
        if let Some((_, old_name)) = old {
            if old_name != name {
                // A reader that opened it keeps reading it (the inode lives while open).
                let _ = std::fs::remove_file(self.dir.join(old_name));
            }
        }
        Ok((meta, name))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.build_now())
            .await
            .map_err(write_err)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<Applied, SErr> {
        Ok(self.lock().applied.clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<model::Outcome>>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let me = self.clone();
        let _applying = Applying::new(&self.applying);
        off_runtime(move || {
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                let mut applied = me.lock().applied.clone();
                applied.0 = Some(e.log_id);
                if let EntryPayload::Membership(m) = &e.payload {
                    applied.1 = StoredMembership::new(Some(e.log_id), m.clone());
                }
                let meta = bincode::serialize(&applied).map_err(write_err)?;
                let index = e.log_id.index;
                let batch = match &e.payload {
                    EntryPayload::Normal(batch) => Some(batch),
                    EntryPayload::Blank | EntryPayload::Membership(_) => None,
                };
                let started = std::time::Instant::now();
                let (outcomes, changes) = me
                    .engine
                    .apply_entry(batch, index, &meta)
                    .map_err(write_err)?;
                metrics::histogram!("basalt_raft_apply_seconds")
                    .record(started.elapsed().as_secs_f64());
                me.lock().applied = applied;
                if let Some(feed) = &me.feed {
                    feed.applied(model::change::Applied {
                        index,
                        envelopes: changes,
                    });
                }
                for (env, outcome) in batch
                    .map(|b| b.0.as_slice())
                    .unwrap_or(&[])
                    .iter()
                    .zip(&outcomes)
                {
                    let check =
                        matches!(env.op, model::Op::Cluster(model::command::ClusterOp::Check));
                    if check && !matches!(outcome, model::Outcome::Failed(_)) {
                        me.start_check(env.request_id, index);
                    }
                }
                out.push(outcomes);
            }
            Ok(out)
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SErr> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("incoming-{n}.data"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(write_err)?;
        let abandoned = self.lock().receiving.replace(path);
        if let Some(old) = abandoned {
            let _ = std::fs::remove_file(old);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        // Everything received is on disk before the install depends on it.
        tokio::io::AsyncWriteExt::flush(&mut *snapshot)
            .await
            .map_err(write_err)?;
        snapshot.sync_all().await.map_err(write_err)?;
        drop(snapshot);
        let received = self
            .lock()
            .receiving
            .take()
            .ok_or_else(|| write_err("no snapshot is being received"))?;
        tracing::info!(snapshot = %meta.snapshot_id, "installing a snapshot from the leader");
        let me = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            me.engine
                .install_snapshot(&received, &me.dir.join(INSTALL_WORK))
                .map_err(write_err)?;
            let applied: Applied = (meta.last_log_id, meta.last_membership.clone());
            let bytes = bincode::serialize(&applied).map_err(write_err)?;
            let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
            me.engine.set_applied(index, &bytes).map_err(write_err)?;
            me.lock().applied = applied;
            if let Some(feed) = &me.feed {
                feed.skipped(index);
            }
            // The received file is a snapshot as it stands: keep it as the current one.
            let n = me.counter.fetch_add(1, Ordering::SeqCst);
            let name = format!("snap-{n}.data");
            std::fs::rename(&received, me.dir.join(&name)).map_err(write_err)?;
            me.promote(meta, name).map(|_| ())
        })
        .await
        .map_err(write_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        // The meta and its file are read together, while nothing replaces them.
        let (meta, file) = {
            let _files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let Some((meta, name)) = self.lock().current.clone() else {
                return Ok(None);
            };
            let file = std::fs::File::open(self.dir.join(name)).map_err(read_err)?;
            (meta, file)
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::command::{DocumentsOp, ProjectOp, SchemaOp};
    use model::schema::{AttrKind, Attribute, Collection, Database};
    use model::{Actor, Batch, DocOp, DocTarget, Envelope, Op, RequestId, Value};
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, Membership};

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64, envs: Option<Vec<Envelope>>) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: match envs {
                Some(e) => EntryPayload::Normal(Batch(e)),
                None => EntryPayload::Blank,
            },
        }
    }

    fn op(n: u128, at: i64, op: Op) -> Envelope {
        Envelope {
            at,
            ..Envelope::new("p", RequestId(n), Actor::Operator, op)
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn log_store_round_trips_purge_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::new(LogDb::open(dir.path()).unwrap());
            store
                .blocking_append((1..=10).map(|i| entry(1, i, None)))
                .await
                .unwrap();
            store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
            store.purge(log_id(1, 5)).await.unwrap();
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
            assert_eq!(state.last_log_id, Some(log_id(1, 10)));
            store.truncate(log_id(1, 8)).await.unwrap();
            let got = store.try_get_log_entries(0..100).await.unwrap();
            assert_eq!(
                got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
                vec![6, 7]
            );
        }
        let mut reopened = LogStore::new(LogDb::open(dir.path()).unwrap());
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_log_id, Some(log_id(1, 7)));
        assert_eq!(
            reopened.read_vote().await.unwrap(),
            Some(Vote::new_committed(1, 1))
        );
        reopened.purge(log_id(1, 7)).await.unwrap();
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(
            state.last_log_id,
            Some(log_id(1, 7)),
            "an empty log reports its last purged id"
        );
    }

    fn create_row(n: u128, at: i64, id: &str, i: i64) -> Envelope {
        op(
            n,
            at,
            Op::Documents(DocumentsOp::Write {
                ops: vec![DocTarget {
                    database: "d".into(),
                    collection: "c".into(),
                    op: DocOp::Create {
                        id: id.into(),
                        data: [
                            ("name".to_string(), Value::Str(format!("n{i}"))),
                            ("n".to_string(), Value::Int(i)),
                        ]
                        .into_iter()
                        .collect(),
                        permissions: None,
                    },
                }],
            }),
        )
    }

    /// Setup, 50 rows, and a failing create: one envelope per entry.
    fn commands() -> Vec<Envelope> {
        let attr = |key: &str, kind| Attribute {
            size: Some(32),
            ..Attribute::new(key, kind, 5)
        };
        let mut cmds = vec![
            op(1, 1, Op::Projects(ProjectOp::Create { name: "p".into() })),
            op(
                2,
                2,
                Op::Schema(SchemaOp::CreateDatabase {
                    database: Database {
                        id: "d".into(),
                        name: "d".into(),
                        enabled: true,
                        kind: "tablesdb".into(),
                        created_at: 2,
                        updated_at: 2,
                    },
                }),
            ),
            op(
                3,
                3,
                Op::Schema(SchemaOp::CreateCollection {
                    collection: Collection {
                        id: "c".into(),
                        database: "d".into(),
                        name: "c".into(),
                        enabled: true,
                        permissions: vec![],
                        document_security: false,
                        attributes: vec![
                            attr("name", AttrKind::String),
                            attr("n", AttrKind::Integer),
                        ],
                        indexes: vec![],
                        reshapes: vec![],
                        relations: Default::default(),
                        created_at: 3,
                        updated_at: 3,
                    },
                }),
            ),
        ];
        for i in 0..50i64 {
            cmds.push(create_row(100 + i as u128, 10 + i, &format!("r{i}"), i));
        }
        // A failing command is part of the log too, and must change nothing anywhere.
        cmds.push(create_row(999, 99, "r1", 1));
        cmds
    }

    fn digest(sm: &StateMachine) -> String {
        sm.engine.view().unwrap().digest().unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replicas_applying_the_same_log_are_byte_identical_and_snapshots_install() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let open = |d: &tempfile::TempDir| {
            let engine = Engine::open(&d.path().join("state")).unwrap();
            StateMachine::open(engine, d.path().join("snapshots"), None).unwrap()
        };
        let (mut a, mut b) = (open(&dirs[0]), open(&dirs[1]));
        let membership = Membership::new(vec![[1u64].into_iter().collect()], ());
        let mut entries = vec![Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Membership(membership),
        }];
        for (i, c) in commands().into_iter().enumerate() {
            entries.push(entry(1, i as u64 + 2, Some(vec![c])));
        }
        let out_a = a.apply(entries.clone()).await.unwrap();
        let out_b = b.apply(entries.clone()).await.unwrap();
        assert_eq!(out_a, out_b);
        assert_eq!(out_a.len(), entries.len());
        assert!(
            matches!(out_a.last().map(|o| o.as_slice()), Some([model::Outcome::Failed(e)]) if e.code == model::ErrorCode::DocumentAlreadyExists)
        );
        let (ea, eb) = (digest(&a), digest(&b));
        assert_eq!(ea, eb, "two replicas diverged");

        // A snapshot of A installed into a fresh state machine reproduces A exactly.
        let snap = a
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, entries.len() as u64)));
        let fresh_dir = tempfile::tempdir().unwrap();
        let mut c = open(&fresh_dir);
        // As openraft does: receive into the file the state machine gives, then install.
        let mut rx = c.begin_receiving_snapshot().await.unwrap();
        let mut sent = snap.snapshot;
        tokio::io::copy(&mut *sent, &mut *rx).await.unwrap();
        c.install_snapshot(&snap.meta, rx).await.unwrap();
        let (applied, membership) = c.applied_state().await.unwrap();
        assert_eq!(applied, snap.meta.last_log_id);
        assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(digest(&c), ea);
        let current = c
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("installed snapshot is current");
        assert_eq!(current.meta.last_log_id, snap.meta.last_log_id);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_is_one_entry_with_an_outcome_per_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("state")).unwrap();
        let mut sm = StateMachine::open(engine, dir.path().join("snapshots"), None).unwrap();
        let mut cmds = commands();
        let dup = cmds.pop().unwrap(); // creates r1 again: fails
        let first_doc = cmds.remove(3); // creates r0
        let setup: Vec<_> = cmds
            .drain(..3)
            .enumerate()
            .map(|(i, c)| entry(1, i as u64 + 1, Some(vec![c])))
            .collect();
        sm.apply(setup).await.unwrap();
        let batch = vec![first_doc, cmds.remove(0), dup];
        let out = sm.apply(vec![entry(1, 4, Some(batch))]).await.unwrap();
        let [outcomes] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(matches!(&outcomes[0], model::Outcome::Documents(d) if d[0].id == "r0"));
        assert!(matches!(&outcomes[1], model::Outcome::Documents(d) if d[0].id == "r1"));
        assert!(
            matches!(&outcomes[2], model::Outcome::Failed(e) if e.code == model::ErrorCode::DocumentAlreadyExists)
        );
        assert_eq!(sm.applied_index(), Some(4));
    }

    #[test]
    fn wire_messages_survive_bincode() {
        let membership = Membership::new(vec![[1u64, 2].into_iter().collect()], ());
        let req = openraft::raft::AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(3, 9)),
            entries: vec![
                Entry {
                    log_id: log_id(3, 10),
                    payload: EntryPayload::Membership(membership),
                },
                entry(3, 11, commands().pop().map(|e| vec![e])),
                entry(3, 12, None),
            ],
            leader_commit: Some(log_id(3, 9)),
        };
        let bytes = bincode::serialize(&req).unwrap();
        let back: openraft::raft::AppendEntriesRequest<TypeConfig> =
            bincode::deserialize(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{req:?}"));
    }
}
