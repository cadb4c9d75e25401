//! Reads: a `View` — one RocksDB snapshot at a known applied index — is the `StateReader`
//! the API layer gets; and the query executor, which runs on it.

use crate::apply::txn::Txn;
use crate::engine::{decode, decode_document, Engine, StorageError, CF_DOCS, CF_INDEX, CF_META};
use crate::keys;
use crate::planner;
use model::msg;
use model::query::{Cursor, Spec, DEFAULT_LIMIT};
use model::reader::{Page, StateReader};
use model::schema::{ApiKey, Collection, Database, Document, Project, Transaction};
use model::{DocTarget, Error, ErrorCode};
use rocksdb::{Direction, IteratorMode, ReadOptions, SnapshotWithThreadMode, DB};

type Result<T> = std::result::Result<T, Error>;

/// Applies cursor, offset and limit to documents already filtered and sorted by `spec`.
pub(crate) fn paginate<E>(
    docs: Vec<Document>,
    spec: &Spec,
    cursor_doc: impl Fn(&str) -> Option<Document>,
) -> std::result::Result<Vec<Document>, E>
where
    E: From<Error>,
{
    paginate_with_limit(docs, spec, spec.limit, cursor_doc)
}

pub(crate) fn cursor_not_found(id: &str) -> Error {
    Error::new(
        ErrorCode::GeneralCursorNotFound,
        msg!("Document '{}' for the 'cursor' value not found.", id),
    )
}

pub(crate) fn paginate_with_limit<E>(
    docs: Vec<Document>,
    spec: &Spec,
    limit: Option<u64>,
    cursor_doc: impl Fn(&str) -> Option<Document>,
) -> std::result::Result<Vec<Document>, E>
where
    E: From<Error>,
{
    let offset = spec.offset as usize;
    let limit = limit.map(|l| l as usize).unwrap_or(usize::MAX);
    let out: Vec<Document> = match &spec.cursor {
        None => docs.into_iter().skip(offset).take(limit).collect(),
        Some(Cursor::After(id)) => {
            let c = cursor_doc(id).ok_or_else(|| E::from(cursor_not_found(id)))?;
            docs.into_iter()
                .filter(|d| spec.compare(d, &c) == std::cmp::Ordering::Greater)
                .skip(offset)
                .take(limit)
                .collect()
        }
        Some(Cursor::Before(id)) => {
            let c = cursor_doc(id).ok_or_else(|| E::from(cursor_not_found(id)))?;
            let before: Vec<Document> = docs
                .into_iter()
                .filter(|d| spec.compare(d, &c) == std::cmp::Ordering::Less)
                .collect();
            // The page closest to the cursor, still in query order.
            let end = before.len().saturating_sub(offset);
            let start = end.saturating_sub(limit);
            before[start..end].to_vec()
        }
    };
    Ok(out)
}

/// The page `spec` asks for out of candidate `docs` (filtered, sorted, then cursor, offset
/// and limit), and how many match (at most `TOTAL_CAP`).
pub(crate) fn page_of(
    docs: Vec<Document>,
    spec: &Spec,
    cursor_doc: impl Fn(&str) -> Option<Document>,
) -> Result<Page> {
    let mut docs: Vec<Document> = docs.into_iter().filter(|d| spec.matches(d)).collect();
    docs.sort_by(|a, b| spec.compare(a, b));
    let total = (docs.len() as u64).min(crate::exec::TOTAL_CAP);
    let limit = Some(spec.limit.unwrap_or(DEFAULT_LIMIT));
    let documents = paginate_with_limit::<Error>(docs, spec, limit, cursor_doc)?;
    Ok(Page { documents, total })
}

/// The state at one point in time: every read through a view sees the same applied index.
pub struct View {
    // Declared before `engine`, so it is dropped first: it borrows the database that
    // `engine` keeps alive (see `Engine::view`).
    pub(crate) snap: SnapshotWithThreadMode<'static, DB>,
    pub(crate) engine: Engine,
    applied: u64,
}

/// Meta records keyed by node id: the id, the key and the value of each.
type ByNode = Vec<(u64, Box<[u8]>, Box<[u8]>)>;

impl Engine {
    /// What the cluster records about node `id` (admitted with which key, retired), as
    /// applied now: checked on every node-to-node request, so a point read, not a view.
    pub fn cluster_node(
        &self,
        id: u64,
    ) -> std::result::Result<Option<model::schema::NodeRecord>, StorageError> {
        let key = keys::cluster_node(id);
        match self.db.get_cf(self.cf(CF_META), &key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Every node the cluster admitted and has not retired, with its pinned key.
    pub fn admitted_nodes(&self) -> std::result::Result<Vec<(u64, String)>, StorageError> {
        let mut out = Vec::new();
        for (id, k, v) in self.by_node(keys::NODES)? {
            let record: model::schema::NodeRecord = decode(&k, &v)?;
            if record.retired_at.is_none() {
                out.push((id, record.key_sha256));
            }
        }
        Ok(out)
    }

    /// The meta records under `prefix` that a node id (8 big-endian bytes) ends: each with its
    /// id, key and value.
    fn by_node(&self, prefix: &[u8]) -> std::result::Result<ByNode, StorageError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_META), prefix) {
            let (k, v) = item.map_err(StorageError::from)?;
            if !k.starts_with(prefix) {
                break;
            }
            if let Ok(id) = <[u8; 8]>::try_from(&k[prefix.len()..]) {
                out.push((u64::from_be_bytes(id), k, v));
            }
        }
        Ok(out)
    }

    /// Each node's zone, by node id (nodes that named one).
    pub fn cluster_zones(
        &self,
    ) -> std::result::Result<std::collections::BTreeMap<u64, String>, StorageError> {
        Ok(self
            .by_node(keys::ZONES)?
            .into_iter()
            .map(|(id, _, v)| (id, String::from_utf8_lossy(&v).into_owned()))
            .collect())
    }

    /// Whether any file chunk names `blob`, as applied now.
    pub fn blob_referenced(&self, blob: &str) -> std::result::Result<bool, StorageError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), keys::blob_refs(blob))?
            .is_some())
    }

    /// Up to `limit` blobs file chunks name, as applied now, in order, after `after`.
    pub fn referenced_blobs(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> std::result::Result<Vec<String>, StorageError> {
        let start = match after {
            Some(a) => {
                let mut k = keys::blob_refs(a);
                k.push(0);
                k
            }
            None => keys::BLOB_REFS.to_vec(),
        };
        let mut out = Vec::new();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_META), mode) {
            let (k, _) = item?;
            if !k.starts_with(keys::BLOB_REFS) || out.len() >= limit {
                break;
            }
            out.push(String::from_utf8_lossy(&k[keys::BLOB_REFS.len()..]).into_owned());
        }
        Ok(out)
    }

    /// A join token's record, as applied now.
    pub fn join_token(
        &self,
        id: &str,
    ) -> std::result::Result<Option<model::schema::JoinTokenRecord>, StorageError> {
        let key = keys::join_token(id);
        match self.db.get_cf(self.cf(CF_META), &key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The cluster's root key record, as applied now (`None` before the first node records it).
    pub fn cluster_root_key(
        &self,
    ) -> std::result::Result<Option<model::schema::RootKeyRecord>, StorageError> {
        match self.db.get_cf(self.cf(CF_META), keys::ROOT_KEY)? {
            Some(v) => Ok(Some(decode(keys::ROOT_KEY, &v)?)),
            None => Ok(None),
        }
    }

    /// The placement policy in force (the default, every region voting, if none was set).
    pub fn cluster_placement(&self) -> std::result::Result<model::schema::Placement, StorageError> {
        match self.db.get_cf(self.cf(CF_META), keys::PLACEMENT)? {
            Some(v) => decode(keys::PLACEMENT, &v),
            None => Ok(Default::default()),
        }
    }

    /// A view of the state as applied now.
    pub fn view(&self) -> std::result::Result<View, StorageError> {
        let snap = self.db.snapshot();
        // SAFETY: the snapshot borrows the `DB` inside `self.db`'s `Arc`, which lives on the
        // heap and never moves. The view keeps a clone of that `Arc` (in `engine`) and drops
        // the snapshot before it (field order), so the borrow never outlives the database.
        let snap: SnapshotWithThreadMode<'static, DB> = unsafe { std::mem::transmute(snap) };
        let applied = match snap.get_cf(self.cf(CF_META), keys::APPLIED_INDEX)? {
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| crate::engine::corrupt(keys::APPLIED_INDEX, "not 8 bytes"))?,
            ),
            None => 0,
        };
        Ok(View {
            snap,
            engine: self.clone(),
            applied,
        })
    }
}

impl View {
    pub(crate) fn opts(&self) -> ReadOptions {
        let mut o = ReadOptions::default();
        o.set_snapshot(&self.snap);
        o
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.engine.cf(name)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self
            .snap
            .get_cf(self.cf(CF_META), key)
            .map_err(StorageError::from)?
        {
            Some(v) => Ok(Some(decode(key, &v)?)),
            None => Ok(None),
        }
    }

    /// Fills in a collection's pending reshapes and its relationships, kept in records
    /// beside its own.
    fn load_reshapes(&self, project: &str, coll: &mut Collection) -> Result<()> {
        let at = [coll.database.as_str(), coll.id.as_str()];
        if let Some(r) = self.get_meta(&keys::meta(project, keys::RESHAPES, &at))? {
            coll.reshapes = r;
        }
        if let Some(r) = self.get_meta(&keys::meta(project, keys::RELATIONS, &at))? {
            coll.relations = r;
        }
        Ok(())
    }

    fn scan_meta<T: serde::de::DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.engine.db.iterator_cf_opt(
            self.cf(CF_META),
            self.opts(),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = item.map_err(StorageError::from)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Explains which plan a query would use (tests, diagnostics).
    pub fn explain(&self, project: &str, coll: &Collection, spec: &Spec) -> planner::Plan {
        crate::exec::plan(self, project, coll, spec)
    }
}

impl StateReader for View {
    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn project(&self, id: &str) -> Result<Option<Project>> {
        self.get_meta(&keys::meta(id, keys::PROJECT, &[]))
    }

    fn list_projects(&self) -> Result<Vec<Project>> {
        let mut out = Vec::new();
        for item in self.engine.db.iterator_cf_opt(
            self.cf(CF_META),
            self.opts(),
            IteratorMode::From(keys::PROJECTS, Direction::Forward),
        ) {
            let (k, _) = item.map_err(StorageError::from)?;
            let Some(id) = k.strip_prefix(keys::PROJECTS) else {
                break;
            };
            let id = String::from_utf8_lossy(id);
            if let Some(p) = self.project(&id)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    fn key(&self, project: &str, id: &str) -> Result<Option<ApiKey>> {
        self.get_meta(&keys::meta(project, keys::KEY, &[id]))
    }

    fn key_by_secret_sha256(&self, project: &str, sha: &str) -> Result<Option<ApiKey>> {
        let Some(id) = self
            .snap
            .get_cf(
                self.cf(CF_META),
                keys::meta(project, keys::KEY_HASH, &[sha]),
            )
            .map_err(StorageError::from)?
        else {
            return Ok(None);
        };
        self.key(project, &String::from_utf8_lossy(&id))
    }

    fn list_keys(&self, project: &str) -> Result<Vec<ApiKey>> {
        self.scan_meta(&keys::meta_prefix(project, keys::KEY, &[]))
    }

    fn database(&self, project: &str, id: &str) -> Result<Option<Database>> {
        self.get_meta(&keys::meta(project, keys::DATABASE, &[id]))
    }

    fn list_databases(&self, project: &str) -> Result<Vec<Database>> {
        let mut v: Vec<Database> =
            self.scan_meta(&keys::meta_prefix(project, keys::DATABASE, &[]))?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    fn collection(&self, project: &str, db: &str, id: &str) -> Result<Option<Collection>> {
        let Some(mut coll) =
            self.get_meta::<Collection>(&keys::meta(project, keys::COLLECTION, &[db, id]))?
        else {
            return Ok(None);
        };
        self.load_reshapes(project, &mut coll)?;
        Ok(Some(coll))
    }

    fn list_collections(&self, project: &str, db: &str) -> Result<Vec<Collection>> {
        let mut v: Vec<Collection> =
            self.scan_meta(&keys::meta_prefix(project, keys::COLLECTION, &[db]))?;
        for coll in &mut v {
            self.load_reshapes(project, coll)?;
        }
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    fn document(&self, project: &str, coll: &Collection, id: &str) -> Result<Option<Document>> {
        let k = keys::doc(project, &coll.database, &coll.id, id);
        match self
            .snap
            .get_cf(self.cf(CF_DOCS), &k)
            .map_err(StorageError::from)?
        {
            Some(v) => Ok(Some(decode_document(coll, &k, &v)?)),
            None => Ok(None),
        }
    }

    fn find(&self, project: &str, coll: &Collection, spec: &Spec, total: bool) -> Result<Page> {
        crate::exec::find(self, project, coll, spec, total)
    }

    fn document_staged(
        &self,
        project: &str,
        coll: &Collection,
        id: &str,
        staged: &[DocTarget],
        now: i64,
    ) -> Result<Option<Document>> {
        let txn = Txn::over(&self.engine, &self.snap);
        crate::apply::staged_read(txn, project, staged, now, |txn| {
            crate::apply::staged_document(txn, project, coll, id)
        })
    }

    fn find_staged(
        &self,
        project: &str,
        coll: &Collection,
        spec: &Spec,
        staged: &[DocTarget],
        now: i64,
    ) -> Result<Page> {
        let txn = Txn::over(&self.engine, &self.snap);
        let docs = crate::apply::staged_read(txn, project, staged, now, |txn| {
            crate::apply::staged_documents(txn, project, coll)
        })?;
        let docs: Vec<Document> = docs.into_iter().filter(|d| spec.matches(d)).collect();
        let by_id: std::collections::HashMap<String, Document> =
            docs.iter().map(|d| (d.id.clone(), d.clone())).collect();
        page_of(docs, spec, |id| by_id.get(id).cloned())
    }

    fn transaction(&self, project: &str, id: &str) -> Result<Option<Transaction>> {
        self.get_meta(&keys::meta(project, keys::TRANSACTION, &[id]))
    }

    fn list_platforms(&self, project: &str) -> Result<Vec<model::schema::Platform>> {
        let mut v: Vec<model::schema::Platform> =
            self.scan_meta(&keys::meta_prefix(project, keys::PLATFORM, &[]))?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    fn jwt_secret(&self, project: &str) -> Result<Option<String>> {
        Ok(self
            .snap
            .get_cf(self.cf(CF_META), keys::meta(project, keys::JWT_SECRET, &[]))
            .map_err(StorageError::from)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn auth_settings(&self, project: &str) -> Result<model::auth::AuthSettings> {
        Ok(self
            .get_meta(&keys::meta(project, keys::AUTH_SETTINGS, &[]))?
            .unwrap_or_default())
    }

    fn file_chunks(
        &self,
        project: &str,
        bucket: &str,
        file: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, model::storage::ChunkRef)>> {
        let prefix = keys::meta_prefix(project, keys::FILE_CHUNK, &[bucket, file]);
        let start = keys::file_chunk(project, bucket, file, from);
        let mut out = Vec::new();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.snap.iterator_cf(self.cf(CF_META), mode) {
            let (k, v) = item.map_err(StorageError::from)?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let index = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| crate::engine::corrupt(&k, "chunk index"))?;
            out.push((index, decode(&k, &v)?));
        }
        Ok(out)
    }

    fn storage_key(&self, project: &str) -> Result<Option<String>> {
        Ok(self
            .snap
            .get_cf(
                self.cf(CF_META),
                keys::meta(project, keys::STORAGE_KEY, &[]),
            )
            .map_err(StorageError::from)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn usage_series(
        &self,
        project: &str,
        scope: &model::usage::Scope,
        metric: model::usage::Metric,
        period: model::usage::Period,
        buckets: &[i64],
    ) -> Result<Vec<i64>> {
        let keys: Vec<Vec<u8>> = buckets
            .iter()
            .map(|b| keys::usage_series(project, period, *b, scope, metric))
            .collect();
        let cf = self.cf(CF_META);
        self.engine
            .db
            .multi_get_cf_opt(keys.iter().map(|k| (cf, k)), &self.opts())
            .into_iter()
            .map(|r| {
                r.map(|v| v.map_or(0, |v| model::usage::decode(&v)))
                    .map_err(|e| StorageError::from(e).into())
            })
            .collect()
    }

    fn usage_storage(&self, project: &str, scope: &model::usage::Scope) -> Result<i64> {
        Ok(self
            .snap
            .get_cf(
                self.cf(CF_META),
                keys::usage_total(project, scope, model::usage::Metric::Storage),
            )
            .map_err(StorageError::from)?
            .map_or(0, |v| model::usage::decode(&v)))
    }

    fn rows(&self, project: &str, db: &str, coll: &str) -> Result<u64> {
        Ok(self
            .snap
            .get_cf(self.cf(CF_INDEX), keys::rows_count(project, db, coll))
            .map_err(StorageError::from)?
            .and_then(|v| keys::parse_count(&v))
            .unwrap_or(0))
    }

    fn list_transactions(&self, project: &str) -> Result<Vec<Transaction>> {
        let mut v: Vec<Transaction> =
            self.scan_meta(&keys::meta_prefix(project, keys::TRANSACTION, &[]))?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    fn transaction_owner(&self, project: &str, id: &str) -> Result<Option<String>> {
        self.get_meta(&keys::meta(project, keys::TRANSACTION_OWNER, &[id]))
    }

    fn user_transactions(&self, project: &str, user: &str) -> Result<Vec<Transaction>> {
        let ids: Vec<String> =
            self.scan_meta(&keys::meta_prefix(project, keys::USER_TRANSACTION, &[user]))?;
        let mut v = Vec::with_capacity(ids.len());
        for id in ids {
            v.extend(self.transaction(project, &id)?);
        }
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }
}

/// A pending background job of one collection; its next chunk is `op()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub project: String,
    pub database: String,
    pub collection: String,
    /// The index being built, or `None` for the document rewrite after attributes were
    /// renamed or deleted.
    pub index: Option<String>,
}

impl Job {
    /// The command that does the job's next bounded chunk.
    pub fn op(&self) -> model::command::SchemaOp {
        use model::command::SchemaOp;
        let (database, collection) = (self.database.clone(), self.collection.clone());
        match &self.index {
            Some(key) => SchemaOp::BuildIndex {
                database,
                collection,
                key: key.clone(),
            },
            None => SchemaOp::Reshape {
                database,
                collection,
            },
        }
    }
}

impl View {
    /// Up to `limit` pending background jobs, in key order.
    pub fn jobs(&self, limit: usize) -> std::result::Result<Vec<Job>, StorageError> {
        let mut out = Vec::new();
        for item in self.engine.db.iterator_cf_opt(
            self.cf(CF_META),
            self.opts(),
            IteratorMode::From(keys::JOBS, Direction::Forward),
        ) {
            let (k, _) = item?;
            let Some(rest) = k.strip_prefix(keys::JOBS) else {
                break;
            };
            let parts: Vec<String> = rest
                .split(|b| *b == keys::SEP)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            if let [project, database, collection, name] = parts.as_slice() {
                out.push(Job {
                    project: project.clone(),
                    database: database.clone(),
                    collection: collection.clone(),
                    index: (name != keys::RESHAPE_JOB).then(|| name.clone()),
                });
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The first `limit` emails of the outbox, in the order they are due.
    pub fn outbox(
        &self,
        limit: usize,
    ) -> std::result::Result<Vec<model::auth::Mail>, StorageError> {
        let mut out = Vec::new();
        for item in self.engine.db.iterator_cf_opt(
            self.cf(CF_META),
            self.opts(),
            IteratorMode::From(keys::OUTBOX, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(keys::OUTBOX) || out.len() >= limit {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// SHA-256 over every key and value of every column family, in order: replicas at the
    /// same applied index must agree on it byte for byte (`basalt cluster check`). Reads the
    /// whole state once, streaming; memory stays constant.
    pub fn digest(&self) -> std::result::Result<String, StorageError> {
        Ok(self.digests()?.0)
    }

    /// The digest of the data alone, leaving out the cluster's bookkeeping
    /// (`keys::is_bookkeeping`): a backup's, and a cluster's restored from it, are the same.
    pub fn data_digest(&self) -> std::result::Result<String, StorageError> {
        Ok(self.digests()?.1)
    }

    /// `digest` and `data_digest`, in one pass over the state.
    pub fn digests(&self) -> std::result::Result<(String, String), StorageError> {
        crate::engine::digests_db(&self.engine.db, || self.opts())
    }
}
