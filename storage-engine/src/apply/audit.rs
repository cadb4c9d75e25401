//! The databases' audit trail (`model::audit`): an audited envelope that succeeded leaves one
//! entry, under the resource it changed, in its own apply. A resource keeps its newest
//! `MAX_PER_RESOURCE` entries (counted by its index's count key, so the check is one read),
//! and each audited write removes a few entries past the retention.

use super::documents::{insert_new, write_document};
use super::store::load_document;
use super::txn::{Txn, INDEX};
use super::{Failure, R};
use crate::keys;
use model::audit::{self, Entry};
use model::command::{Actor, Client, DocOp, DocumentsOp, Envelope, Op, RangeChange, SchemaOp};
use model::schema::Order;
use model::Value;

/// Writes the entry `op` leaves, if it is one the trail records.
pub(super) fn record(txn: &mut Txn, env: &Envelope, op: &Op, client: &Client, at: i64) -> R<()> {
    let Some((resource, event)) = event(op, client.one_row) else {
        return Ok(());
    };
    let (user_id, mode, user_type) = match &env.actor {
        Actor::Operator => ("", "admin", "console"),
        Actor::Key { .. } => ("", "admin", "keys"),
        Actor::User { id, .. } => (id.as_str(), "default", "user"),
        Actor::Guest => ("", "default", "guest"),
    };
    let entry = Entry {
        resource,
        event: event.to_string(),
        user_id: user_id.to_string(),
        mode: mode.to_string(),
        user_type: user_type.to_string(),
        ip: client.ip.chars().take(45).collect(),
        user_agent: client.user_agent.chars().take(1024).collect(),
        created_at: at,
    };
    let project = env.project.as_str();
    let coll = audit::collection();
    let id = env.request_id.to_string();
    if load_document(txn, project, coll, &id)?.is_some() {
        return Ok(());
    }
    prune(txn, project, at)?;
    let mut prefix = keys::index_prefix(project, &coll.database, &coll.id, "_key_resource");
    let count = keys::count_key(&prefix, &{
        let mut v = Vec::new();
        keys::encode_value(&mut v, &Value::Str(entry.resource.clone()), Order::Asc);
        v
    });
    let held = txn
        .get(INDEX, &count)?
        .and_then(|v| keys::parse_count(&v))
        .unwrap_or(0);
    if held >= audit::MAX_PER_RESOURCE {
        keys::encode_value(&mut prefix, &Value::Str(entry.resource.clone()), Order::Asc);
        if let Some((k, v)) = txn.scan_limit(INDEX, &prefix, 1)?.into_iter().next() {
            let (_, old) = keys::parse_entry_value(&v)
                .ok_or_else(|| Failure::Storage(crate::engine::corrupt(&k, "index entry")))?;
            let old = String::from_utf8_lossy(old).into_owned();
            if let Some(old) = load_document(txn, project, coll, &old)? {
                write_document(txn, project, coll, Some(&old), None)?;
            }
        }
    }
    insert_new(txn, project, coll, id, Vec::new(), entry.data(), at)
}

/// The resource an operation changes and the event it is, in the Databases service's names;
/// `None` for what the trail leaves out (background jobs, transactions, other services).
/// `one_row`: a write of the last of its rows, the others nested in it.
pub(super) fn event(op: &Op, one_row: bool) -> Option<(String, &'static str)> {
    let db = |d: &str| audit::resource(d, None, None);
    let coll = |d: &str, c: &str| audit::resource(d, Some(c), None);
    Some(match op {
        Op::Schema(s) => match s {
            SchemaOp::CreateDatabase { database } => (db(&database.id), "database.create"),
            SchemaOp::UpdateDatabase { id, .. } => (db(id), "database.update"),
            SchemaOp::DeleteDatabase { id } => (db(id), "database.delete"),
            SchemaOp::CreateCollection { collection } => (
                coll(&collection.database, &collection.id),
                "collection.create",
            ),
            SchemaOp::UpdateCollection { database, id, .. } => {
                (coll(database, id), "collection.update")
            }
            SchemaOp::DeleteCollection { database, id } => {
                (coll(database, id), "collection.delete")
            }
            SchemaOp::CreateAttribute {
                database,
                collection,
                ..
            }
            | SchemaOp::CreateRelationship {
                database,
                collection,
                ..
            } => (coll(database, collection), "attribute.create"),
            SchemaOp::UpdateAttribute {
                database,
                collection,
                ..
            }
            | SchemaOp::UpdateRelationship {
                database,
                collection,
                ..
            } => (coll(database, collection), "attribute.update"),
            SchemaOp::DeleteAttribute {
                database,
                collection,
                ..
            } => (coll(database, collection), "attribute.delete"),
            SchemaOp::CreateIndex {
                database,
                collection,
                ..
            } => (coll(database, collection), "index.create"),
            SchemaOp::DeleteIndex {
                database,
                collection,
                ..
            } => (coll(database, collection), "index.delete"),
            SchemaOp::BuildIndex { .. } | SchemaOp::Reshape { .. } => return None,
        },
        Op::Documents(DocumentsOp::Write { ops }) => match ops.as_slice() {
            [one] => {
                let (id, event) = match &one.op {
                    DocOp::Create { id, .. } => (id, "document.create"),
                    DocOp::Upsert { id, .. } => (id, "document.upsert"),
                    DocOp::Operate {
                        id, upsert: true, ..
                    } => (id, "document.upsert"),
                    DocOp::Update { id, .. }
                    | DocOp::Increment { id, .. }
                    | DocOp::Operate { id, .. } => (id, "document.update"),
                    DocOp::Delete { id } => (id, "document.delete"),
                    DocOp::UpdateWhere { .. } | DocOp::OperateWhere { .. } => {
                        return Some((coll(&one.database, &one.collection), "documents.update"))
                    }
                    DocOp::DeleteWhere { .. } => {
                        return Some((coll(&one.database, &one.collection), "documents.delete"))
                    }
                };
                (
                    audit::resource(&one.database, Some(&one.collection), Some(id)),
                    event,
                )
            }
            // A row with the related rows nested in it: the row's (it is the last).
            [.., last] if one_row => {
                return event(
                    &Op::Documents(DocumentsOp::Write {
                        ops: vec![last.clone()],
                    }),
                    false,
                )
            }
            [first, ..] => {
                let all = |f: fn(&DocOp) -> bool| ops.iter().all(|t| f(&t.op));
                let event = if all(|o| matches!(o, DocOp::Create { .. })) {
                    "documents.create"
                } else if all(|o| matches!(o, DocOp::Delete { .. })) {
                    "documents.delete"
                } else if all(|o| {
                    matches!(
                        o,
                        DocOp::Upsert { .. } | DocOp::Operate { upsert: true, .. }
                    )
                }) {
                    "documents.upsert"
                } else {
                    "documents.update"
                };
                (coll(&first.database, &first.collection), event)
            }
            [] => return None,
        },
        Op::Documents(
            DocumentsOp::Range {
                database,
                collection,
                change,
                ..
            }
            | DocumentsOp::Listed {
                database,
                collection,
                change,
                ..
            },
        ) => (
            coll(database, collection),
            match change {
                RangeChange::Delete => "documents.delete",
                RangeChange::Update { .. } | RangeChange::Operate { .. } => "documents.update",
            },
        ),
        _ => return None,
    })
}

/// Removes a few of the project's entries older than the retention (oldest first).
fn prune(txn: &mut Txn, project: &str, at: i64) -> R<()> {
    let coll = audit::collection();
    let horizon = at.saturating_sub(audit::RETENTION_MS);
    let prefix = keys::index_prefix(project, &coll.database, &coll.id, keys::SEQ_INDEX);
    for (k, v) in txn.scan_limit(INDEX, &prefix, audit::PRUNE_PER_WRITE)? {
        let (_, id) = keys::parse_entry_value(&v)
            .ok_or_else(|| Failure::Storage(crate::engine::corrupt(&k, "index entry")))?;
        let id = String::from_utf8_lossy(id).into_owned();
        match load_document(txn, project, coll, &id)? {
            Some(old) if old.created_at < horizon => {
                write_document(txn, project, coll, Some(&old), None)?;
            }
            _ => break,
        }
    }
    Ok(())
}
