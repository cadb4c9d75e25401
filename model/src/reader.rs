//! Read access to the replicated state, as the API layer sees it: a view of one point in time
//! (one applied index), implemented by the storage engine's `View`. Only reads, so nothing
//! holding a `StateReader` can bypass the Raft log.

use crate::command::DocTarget;
use crate::error::Result;
use crate::query::Spec;
use crate::schema::{ApiKey, Collection, Database, Document, Project, Transaction};

/// How current a view must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the view was asked for (a read barrier:
    /// one quorum round trip). The default for every read.
    Linearizable,
    /// As this node has applied it, no barrier: for the fast checks a write makes before it
    /// is proposed (everything that matters is checked again when it is applied).
    Local,
}

/// One page of a query and the total number of matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub documents: Vec<Document>,
    pub total: u64,
}

pub trait StateReader: Send + Sync {
    /// The log index this view reflects: every read through it sees exactly that state.
    fn applied_index(&self) -> u64;
    fn project(&self, id: &str) -> Result<Option<Project>>;
    fn list_projects(&self) -> Result<Vec<Project>>;
    fn key(&self, project: &str, id: &str) -> Result<Option<ApiKey>>;
    fn key_by_secret_sha256(&self, project: &str, sha: &str) -> Result<Option<ApiKey>>;
    fn list_keys(&self, project: &str) -> Result<Vec<ApiKey>>;
    fn database(&self, project: &str, id: &str) -> Result<Option<Database>>;
    fn list_databases(&self, project: &str) -> Result<Vec<Database>>;
    fn collection(&self, project: &str, db: &str, id: &str) -> Result<Option<Collection>>;
    fn list_collections(&self, project: &str, db: &str) -> Result<Vec<Collection>>;
    fn document(&self, project: &str, coll: &Collection, id: &str) -> Result<Option<Document>>;
    /// Runs a validated query spec; uses an index when one fits. `total` asks for the
    /// number of matches (Appwrite counts at most 5,000); without it `Page::total` is 0.
    fn find(&self, project: &str, coll: &Collection, spec: &Spec, total: bool) -> Result<Page>;
    /// A document as a pending transaction sees it: its staged operations applied on top of
    /// the committed state, in memory only. `now` stamps the staged changes.
    fn document_staged(
        &self,
        project: &str,
        coll: &Collection,
        id: &str,
        staged: &[DocTarget],
        now: i64,
    ) -> Result<Option<Document>>;
    /// A query as a pending transaction sees it (a scan; staged changes are not indexed).
    fn find_staged(
        &self,
        project: &str,
        coll: &Collection,
        spec: &Spec,
        staged: &[DocTarget],
        now: i64,
    ) -> Result<Page>;
    fn transaction(&self, project: &str, id: &str) -> Result<Option<Transaction>>;
    fn list_transactions(&self, project: &str) -> Result<Vec<Transaction>>;
    /// The user who made transaction `id`; none for a key's.
    fn transaction_owner(&self, project: &str, id: &str) -> Result<Option<String>>;
    /// The transactions `user` made (a bounded number: the apply keeps at most 20).
    fn user_transactions(&self, project: &str, user: &str) -> Result<Vec<Transaction>>;
    fn list_platforms(&self, project: &str) -> Result<Vec<crate::schema::Platform>>;
    /// The secret the project's JWTs are signed with, once one was made.
    fn jwt_secret(&self, project: &str) -> Result<Option<String>>;
    /// The project's auth settings (the defaults until the operator changes one).
    fn auth_settings(&self, project: &str) -> Result<crate::auth::AuthSettings>;
    /// Up to `limit` chunks of a file, from chunk `from` on, in order (with their indexes).
    fn file_chunks(
        &self,
        project: &str,
        bucket: &str,
        file: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::storage::ChunkRef)>>;
    /// The key the project's encrypted chunks are sealed under, once one was made.
    fn storage_key(&self, project: &str) -> Result<Option<String>>;
    /// A usage counter (`crate::usage`) in each of `buckets` (bucket starts), 0 where none.
    fn usage_series(
        &self,
        project: &str,
        scope: &crate::usage::Scope,
        metric: crate::usage::Metric,
        period: crate::usage::Period,
        buckets: &[i64],
    ) -> Result<Vec<i64>>;
    /// The bytes of row data `scope` holds, as usage counts them.
    fn usage_storage(&self, project: &str, scope: &crate::usage::Scope) -> Result<i64>;
    /// How many rows a collection holds (exact, uncapped).
    fn rows(&self, project: &str, db: &str, coll: &str) -> Result<u64>;
}
