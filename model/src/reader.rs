//! Read access to the replicated state, as the API layer sees it. Implemented by the storage
//! engine; only reads, so nothing holding a `&dyn StateReader` can bypass the Raft log.

use crate::command::DocTarget;
use crate::error::Result;
use crate::query::Spec;
use crate::schema::{ApiKey, Collection, Database, Document, Project, Transaction};

/// One page of a query and the total number of matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub documents: Vec<Document>,
    pub total: u64,
}

pub trait StateReader: Send + Sync {
    fn project(&self, id: &str) -> Result<Option<Project>>;
    fn list_projects(&self) -> Result<Vec<Project>>;
    fn key_by_secret_sha256(&self, sha: &str) -> Result<Option<ApiKey>>;
    fn list_keys(&self, project: &str) -> Result<Vec<ApiKey>>;
    fn database(&self, project: &str, id: &str) -> Result<Option<Database>>;
    fn list_databases(&self, project: &str) -> Result<Vec<Database>>;
    fn collection(&self, project: &str, db: &str, id: &str) -> Result<Option<Collection>>;
    fn list_collections(&self, project: &str, db: &str) -> Result<Vec<Collection>>;
    fn document(&self, project: &str, coll: &Collection, id: &str) -> Result<Option<Document>>;
    /// Runs a validated query spec; uses an index when one fits.
    fn find(&self, project: &str, coll: &Collection, spec: &Spec) -> Result<Page>;
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
}
