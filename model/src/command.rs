//! The replicated state machine's input (`Command`) and output (`Outcome`).
//!
//! A command carries everything non-deterministic — ids, timestamps, hashes — computed by the
//! proposer; applying it on any node gives the same outcome and the same bytes on disk.

use crate::error::Error;
use crate::query::Spec;
use crate::schema::{
    ApiKey, Attribute, Collection, Database, Document, Index, Project, Transaction,
};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Data = BTreeMap<String, Value>;

/// One document operation. Several of them in one command apply all-or-nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DocOp {
    Create {
        id: String,
        data: Data,
        permissions: Option<Vec<String>>,
    },
    /// Create, or replace the given fields of an existing document.
    Upsert {
        id: String,
        data: Data,
        permissions: Option<Vec<String>>,
    },
    /// Partial update: only the given fields change.
    Update {
        id: String,
        data: Data,
        permissions: Option<Vec<String>>,
    },
    Delete {
        id: String,
    },
    /// Adds `by` (negative to decrement); `bound` is the max (increment) or min (decrement).
    Increment {
        id: String,
        attr: String,
        by: Value,
        bound: Option<Value>,
    },
    UpdateWhere {
        spec: Spec,
        data: Data,
    },
    DeleteWhere {
        spec: Spec,
    },
}

/// A document operation and the collection it targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocTarget {
    pub database: String,
    pub collection: String,
    pub op: DocOp,
}

/// Fields of an attribute that `PATCH …/attributes/{type}/{key}` may change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttributePatch {
    pub required: Option<bool>,
    /// `Some(Value::Null)` clears the default.
    pub default: Option<Value>,
    pub size: Option<u64>,
    pub min: Option<Value>,
    pub max: Option<Value>,
    pub elements: Option<Vec<String>>,
    pub new_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateProject {
        project: Project,
    },
    CreateKey {
        key: ApiKey,
    },
    DeleteKey {
        project: String,
        id: String,
    },
    CreateDatabase {
        project: String,
        database: Database,
    },
    UpdateDatabase {
        project: String,
        id: String,
        name: Option<String>,
        enabled: Option<bool>,
        now: i64,
    },
    DeleteDatabase {
        project: String,
        id: String,
    },
    CreateCollection {
        project: String,
        collection: Collection,
    },
    UpdateCollection {
        project: String,
        database: String,
        id: String,
        name: Option<String>,
        permissions: Option<Vec<String>>,
        document_security: Option<bool>,
        enabled: Option<bool>,
        now: i64,
    },
    DeleteCollection {
        project: String,
        database: String,
        id: String,
    },
    CreateAttribute {
        project: String,
        database: String,
        collection: String,
        attribute: Attribute,
    },
    UpdateAttribute {
        project: String,
        database: String,
        collection: String,
        key: String,
        kind: crate::schema::AttrKind,
        patch: AttributePatch,
        now: i64,
    },
    DeleteAttribute {
        project: String,
        database: String,
        collection: String,
        key: String,
        now: i64,
    },
    CreateIndex {
        project: String,
        database: String,
        collection: String,
        index: Index,
    },
    DeleteIndex {
        project: String,
        database: String,
        collection: String,
        key: String,
        now: i64,
    },
    /// Document writes, applied all-or-nothing.
    Documents {
        project: String,
        ops: Vec<DocTarget>,
        now: i64,
    },
    CreateTransaction {
        project: String,
        transaction: Transaction,
    },
    StageOperations {
        project: String,
        id: String,
        ops: Vec<DocTarget>,
        now: i64,
    },
    /// Applies every staged operation atomically, or none with the first failure.
    CommitTransaction {
        project: String,
        id: String,
        now: i64,
    },
    RollbackTransaction {
        project: String,
        id: String,
        now: i64,
    },
    DeleteTransaction {
        project: String,
        id: String,
    },
    /// Independent commands proposed together (group commit): one log entry and one fsync,
    /// each command applied on its own with its own outcome.
    Batch(Vec<Command>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Project(Project),
    Key(ApiKey),
    Database(Database),
    Collection(Collection),
    Attribute(Attribute),
    Index(Index),
    Documents(Vec<Document>),
    Transaction(Transaction),
    Failed(Error),
    /// The outcomes of a `Command::Batch`, in order.
    Batch(Vec<Outcome>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_bincode() {
        let cmd = Command::Documents {
            project: "p".into(),
            now: 5,
            ops: vec![DocTarget {
                database: "d".into(),
                collection: "c".into(),
                op: DocOp::UpdateWhere {
                    spec: Spec::parse(&[
                        r#"{"method":"equal","attribute":"a","values":[1,"x",null,[true]]}"#.into(),
                        r#"{"method":"limit","values":[3]}"#.into(),
                    ])
                    .unwrap(),
                    data: [("a".to_string(), Value::Float(1.5))].into_iter().collect(),
                },
            }],
        };
        let bytes = bincode::serialize(&cmd).unwrap();
        assert_eq!(bincode::deserialize::<Command>(&bytes).unwrap(), cmd);
    }
}
