//! Shared domain types for Basalt: ids, values, schema, documents, queries, permissions,
//! the replicated `Command` and its `Outcome`, and Appwrite's error codes.
//!
//! **Invariant:** nothing here reads a clock or a random source; every type that travels in
//! the Raft log serialises without `deserialize_any` (bincode-safe).

pub mod audit;
pub mod auth;
pub mod change;
pub mod command;
pub mod error;
pub mod id;
pub mod nesting;
pub mod operator;
pub mod permission;
pub mod query;
pub mod reader;
pub mod schema;
pub mod spatial;
pub mod storage;
pub mod time;
pub mod usage;
pub mod value;

pub use command::{Actor, Batch, DocOp, DocTarget, Envelope, Op, Outcome, RequestId};
pub use error::{Error, ErrorCode};
pub use schema::{
    ApiKey, AttrKind, Attribute, Collection, Database, Document, Index, IndexKind, Order, Project,
    Transaction,
};
pub use value::Value;
