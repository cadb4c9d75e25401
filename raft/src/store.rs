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
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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
        let rows = tokio::task::spawn_blocking(move || db.range(start, end))
            .await
            .map_err(read_err)?
            .map_err(read_err)?;
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
        tokio::task::spawn_blocking(move || db.put_state(VOTE, bytes, true))
            .await
            .map_err(write_err)?
            .map_err(write_err)
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
        let res = tokio::task::spawn_blocking(move || db.append(rows))
            .await
            .map_err(write_err)?;
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
        let bytes = bincode::serialize(&Some(log_id)).map_err(write_err)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.purge_upto(log_id.index, LAST_PURGED, bytes))
            .await
            .map_err(write_err)?
            .map_err(write_err)
    }
}

/// What the state machine has applied: persisted with every apply.
type Applied = (Option<LogId<u64>>, StoredMembership<u64, NodeInfo>);

struct SmState {
    applied: Applied,
    current: Option<SnapshotMeta<u64, NodeInfo>>,
}

#[derive(Clone)]
pub struct StateMachine {
    engine: Engine,
    dir: PathBuf,
    state: Arc<Mutex<SmState>>,
    counter: Arc<AtomicU64>,
}

const CURRENT_META: &str = "current.meta";
const CURRENT_DIR: &str = "current";

impl StateMachine {
    pub fn open(engine: Engine, snapshot_dir: PathBuf) -> Result<Self, SErr> {
        std::fs::create_dir_all(&snapshot_dir).map_err(write_err)?;
        let applied: Applied = match engine.applied_meta().map_err(read_err)? {
            Some(b) => bincode::deserialize(&b).map_err(read_err)?,
            None => (None, StoredMembership::default()),
        };
        let current = match std::fs::read(snapshot_dir.join(CURRENT_META)) {
            Ok(b) => Some(bincode::deserialize(&b).map_err(read_err)?),
            Err(_) => None,
        };
        Ok(StateMachine {
            engine,
            dir: snapshot_dir,
            state: Arc::new(Mutex::new(SmState { applied, current })),
            counter: Arc::new(AtomicU64::new(0)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmState> {
        // A poisoned lock only means another thread panicked mid-update of plain values.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn applied_index(&self) -> Option<u64> {
        self.lock().applied.0.map(|l| l.index)
    }

    /// Takes a checkpoint and records it as the current snapshot.
    fn checkpoint_now(&self) -> Result<Snapshot<TypeConfig>, SErr> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let tmp = self.dir.join(format!("building-{n}"));
        self.engine.checkpoint(&tmp).map_err(write_err)?;
        let (blob, applied) = Engine::export_checkpoint(&tmp).map_err(read_err)?;
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
        let current = self.dir.join(CURRENT_DIR);
        if current.exists() {
            std::fs::remove_dir_all(&current).map_err(write_err)?;
        }
        std::fs::rename(&tmp, &current).map_err(write_err)?;
        let meta_bytes = bincode::serialize(&meta).map_err(write_err)?;
        let meta_tmp = self.dir.join("current.meta.tmp");
        std::fs::write(&meta_tmp, meta_bytes).map_err(write_err)?;
        std::fs::rename(&meta_tmp, self.dir.join(CURRENT_META)).map_err(write_err)?;
        self.lock().current = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(blob)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.checkpoint_now())
            .await
            .map_err(write_err)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<Applied, SErr> {
        Ok(self.lock().applied.clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<model::Outcome>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                let mut applied = me.lock().applied.clone();
                applied.0 = Some(e.log_id);
                if let EntryPayload::Membership(m) = &e.payload {
                    applied.1 = StoredMembership::new(Some(e.log_id), m.clone());
                }
                let meta = bincode::serialize(&applied).map_err(write_err)?;
                let outcome = match &e.payload {
                    EntryPayload::Normal(cmd) => me.engine.apply(cmd, &meta).map_err(write_err)?,
                    EntryPayload::Blank | EntryPayload::Membership(_) => {
                        me.engine.set_applied_meta(&meta).map_err(write_err)?;
                        model::Outcome::Done
                    }
                };
                me.lock().applied = applied;
                out.push(outcome);
            }
            Ok(out)
        })
        .await
        .map_err(write_err)?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let blob = snapshot.into_inner();
        let me = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            me.engine.import(&blob).map_err(write_err)?;
            let applied: Applied = (meta.last_log_id, meta.last_membership.clone());
            let bytes = bincode::serialize(&applied).map_err(write_err)?;
            me.engine.set_applied_meta(&bytes).map_err(write_err)?;
            me.lock().applied = applied;
            me.checkpoint_now().map(|_| ())
        })
        .await
        .map_err(write_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let Some(meta) = self.lock().current.clone() else {
            return Ok(None);
        };
        let dir = self.dir.join(CURRENT_DIR);
        let (blob, _) = tokio::task::spawn_blocking(move || Engine::export_checkpoint(&dir))
            .await
            .map_err(read_err)?
            .map_err(read_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(blob)),
        }))
    }
}
