//! Document (row) writes: create, upsert, update, delete, increment, bulk by query — each
//! keeping every index of its collection in step.

use super::store::{
    all_documents, attribute_not_found, count_rows, load_collection, load_document,
    put_index_entries, remove_index_entries, seq_key, sequence_run,
};
use super::txn::{Txn, DOCS, INDEX, META};
use super::{err, Caller, Failure, R};
use crate::engine::encode;
use crate::keys;
use crate::validate;
use model::change::{Action, Change};
use model::command::{Data, DocOp, DocTarget, DocumentsOp, Ops, RangeChange};
use model::msg;
use model::schema::{AttrKind, Collection, Document};
use model::{Error, ErrorCode, Outcome, Value};
use std::collections::BTreeMap;

/// Documents a range chunk looks at, at most (matching or not): the bound on its work.
pub const RANGE_SCAN: usize = 2000;
/// Documents one `DocumentsOp::Listed` chunk may name, at most.
pub const LISTED_MAX: usize = 1000;

pub(super) fn apply(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    op: &DocumentsOp,
    at: i64,
) -> R<Outcome> {
    if !matches!(op, DocumentsOp::Write { .. }) && !matches!(caller, Caller::Privileged) {
        // Changes by query are for keys, as in Appwrite.
        return Err(unauthorized());
    }
    match op {
        DocumentsOp::Write { ops } => Ok(Outcome::Documents(apply_doc_ops(
            txn, project, caller, ops, at,
        )?)),
        DocumentsOp::Range {
            database,
            collection,
            spec,
            change,
            after,
            max,
        } => {
            let coll = load_collection(txn, project, database, collection)?;
            if !coll.relations.is_empty() {
                return Err(bulk_with_relationships());
            }
            let mut spec = spec.clone();
            spec.validate(&coll)?;
            let seen = sequence_run(txn, project, &coll, *after, RANGE_SCAN)?;
            let mut documents = Vec::new();
            let mut last = *after;
            let mut full = false;
            for (seq, id) in &seen {
                last = *seq;
                let Some(old) = load_document(txn, project, &coll, id)? else {
                    continue;
                };
                if !spec.matches(&old) {
                    continue;
                }
                documents.push(range_change(txn, project, &coll, old, change, at)?);
                if documents.len() >= (*max).max(1) as usize {
                    full = true;
                    break;
                }
            }
            let next = match full || seen.len() >= RANGE_SCAN {
                true => Some(last),
                false => None,
            };
            Ok(Outcome::Range { documents, next })
        }
        DocumentsOp::Listed {
            database,
            collection,
            spec,
            ids,
            change,
        } => {
            if ids.len() > LISTED_MAX {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    msg!("At most {} documents per chunk.", LISTED_MAX),
                ));
            }
            let coll = load_collection(txn, project, database, collection)?;
            if !coll.relations.is_empty() {
                return Err(bulk_with_relationships());
            }
            let mut spec = spec.clone();
            spec.validate(&coll)?;
            let mut documents = Vec::new();
            for id in ids {
                let Some(old) = load_document(txn, project, &coll, id)? else {
                    continue;
                };
                if !spec.matches(&old) {
                    continue;
                }
                documents.push(range_change(txn, project, &coll, old, change, at)?);
            }
            Ok(Outcome::Range {
                documents,
                next: None,
            })
        }
    }
}

/// Applies a bulk change to one document it picked; answers the document as it is now (a
/// deleted one as it was).
fn range_change(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    old: Document,
    change: &RangeChange,
    at: i64,
) -> R<Document> {
    match change {
        RangeChange::Update { data } => range_change(
            txn,
            project,
            coll,
            old,
            &RangeChange::Operate {
                data: data.clone(),
                ops: Ops::new(),
            },
            at,
        ),
        RangeChange::Operate { data, ops } => {
            let doc = updated(coll, &old, data, ops, &None, at)?;
            write_document(txn, project, coll, Some(&old), Some(&doc))?;
            Ok(doc)
        }
        RangeChange::Delete => {
            write_document(txn, project, coll, Some(&old), None)?;
            Ok(old)
        }
    }
}

pub(crate) fn staged_document(
    txn: &Txn,
    project: &str,
    coll: &Collection,
    id: &str,
) -> R<Option<Document>> {
    load_document(txn, project, coll, id)
}

pub(crate) fn staged_documents(txn: &Txn, project: &str, coll: &Collection) -> R<Vec<Document>> {
    all_documents(txn, project, coll)
}

/// Writes a new document of a system collection, made at `at` with the collection's next
/// sequence.
pub(super) fn insert_new(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    id: String,
    permissions: Vec<String>,
    data: model::command::Data,
    at: i64,
) -> R<()> {
    let doc = Document {
        id,
        sequence: next_sequence(txn, project, coll)?,
        created_at: at,
        updated_at: at,
        permissions,
        data,
    };
    write_document(txn, project, coll, None, Some(&doc))
}

/// Replaces `old` with `new` (either may be absent), keeping every index in step, and records
/// the change for realtime.
pub(super) fn write_document(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    old: Option<&Document>,
    new: Option<&Document>,
) -> R<()> {
    let action = match (old, new) {
        (None, _) => Action::Create,
        (Some(_), Some(_)) => Action::Update,
        (Some(_), None) => Action::Delete,
    };
    write_as(txn, project, coll, old, new, action)
}

/// `write_document`, recording the change as `action` (an upsert says so).
fn write_as(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    old: Option<&Document>,
    new: Option<&Document>,
    action: Action,
) -> R<()> {
    if old.is_none() && new.is_none() {
        return Ok(());
    }
    let key = |id: &str| keys::doc(project, &coll.database, &coll.id, id);
    let encoded = new.map(encode);
    let (enabled, tablesdb, stored_bytes) = match coll.database.as_str() {
        model::auth::DB => (true, false, 0),
        model::storage::DB => (coll.enabled, false, 0),
        _ => {
            let db = super::store::load_database(txn, project, &coll.database)?;
            // The stored value, not the document as loaded (loading settles it).
            let before = match old {
                Some(o) => txn.get(DOCS, &key(&o.id))?.map_or(0, |v| v.len()),
                None => 0,
            };
            let after = encoded.as_ref().map_or(0, Vec::len);
            (
                coll.enabled && db.enabled,
                db.kind == "tablesdb",
                after as i64 - before as i64,
            )
        }
    };
    txn.record(Change {
        project: project.to_string(),
        database: coll.database.clone(),
        collection: coll.id.clone(),
        action,
        old: old.cloned(),
        new: new.cloned(),
        collection_permissions: coll.permissions.clone(),
        document_security: coll.document_security,
        enabled,
        tablesdb,
        at: txn.now,
        stored_bytes,
    });
    // A failed index holds nothing and enforces nothing; the built-in read-roles index is
    // always kept.
    let internal = coll.relation_indexes();
    let live = || {
        coll.indexes
            .iter()
            .filter(|i| !i.status.is_failed())
            .chain(std::iter::once(model::schema::read_index()))
            .chain(internal.iter())
    };
    if let Some(old) = old {
        for index in live() {
            remove_index_entries(txn, project, coll, index, old)?;
        }
        txn.del(INDEX, seq_key(project, coll, old.sequence));
    }
    match (new, encoded) {
        (Some(new), Some(encoded)) => {
            for index in live() {
                put_index_entries(txn, project, coll, index, new)?;
            }
            txn.put(
                INDEX,
                seq_key(project, coll, new.sequence),
                keys::entry_value(new.sequence, &new.id),
            );
            txn.put(DOCS, key(&new.id), encoded);
        }
        _ => {
            if let Some(old) = old {
                txn.del(DOCS, key(&old.id));
            }
        }
    }
    match (old, new) {
        (None, Some(_)) => count_rows(txn, project, coll, 1),
        (Some(_), None) => count_rows(txn, project, coll, -1),
        _ => Ok(()),
    }
}

/// Changes by query do not follow relationships (as in Appwrite, which refuses them there).
fn bulk_with_relationships() -> Failure {
    err(
        ErrorCode::GeneralBadRequest,
        "Bulk operations are not supported for collections with relationship attributes",
    )
}

fn document_not_found(id: &str) -> Failure {
    err(
        ErrorCode::DocumentNotFound,
        msg!(
            "Document with the requested ID '{}' could not be found.",
            id
        ),
    )
}

pub(super) fn next_sequence(txn: &mut Txn, project: &str, coll: &Collection) -> R<u64> {
    let k = keys::meta(project, keys::SEQUENCE, &[&coll.database, &coll.id]);
    let cur: u64 = txn.get_as(META, &k)?.unwrap_or(0);
    txn.put(META, k, encode(&(cur + 1)));
    Ok(cur + 1)
}

pub(super) fn apply_doc_ops(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    ops: &[DocTarget],
    now: i64,
) -> R<Vec<Document>> {
    let mut out = Vec::new();
    let mut schemas: BTreeMap<(String, String), Collection> = BTreeMap::new();
    for t in ops {
        let key = (t.database.clone(), t.collection.clone());
        if !schemas.contains_key(&key) {
            let c = load_collection(txn, project, &t.database, &t.collection)?;
            // A disabled database or table does not exist for users and guests (as the API
            // answers; checked here against the committed state too).
            if let Caller::Roles { .. } = caller {
                let d = super::store::load_database(txn, project, &t.database)?;
                if !d.enabled || !c.enabled {
                    return Err(err(
                        ErrorCode::CollectionNotFound,
                        msg!(
                            "Collection with the requested ID '{}' could not be found.",
                            t.collection
                        ),
                    ));
                }
            }
            schemas.insert(key.clone(), c);
        }
        let coll = schemas[&key].clone();
        doc_op(txn, project, caller, &coll, &t.op, now, &mut out)?;
    }
    Ok(out)
}

fn unauthorized() -> Failure {
    err(
        ErrorCode::UserUnauthorized,
        "The current user is not authorized to perform the requested action.",
    )
}

/// May `caller` do `action` on `doc` of `coll` (see `Collection::grants`)?
fn may(caller: &Caller, coll: &Collection, doc: Option<&Document>, action: &str) -> bool {
    match caller {
        Caller::Privileged => true,
        Caller::Roles { roles, .. } => coll.grants(doc, action, roles),
    }
}

fn require(caller: &Caller, coll: &Collection, doc: Option<&Document>, action: &str) -> R<()> {
    match may(caller, coll, doc, action) {
        true => Ok(()),
        false => Err(unauthorized()),
    }
}

/// A create needs the collection's `create` for one of the caller's roles; refused in
/// Appwrite's (its database library's) words.
fn may_create(caller: &Caller, coll: &Collection) -> R<()> {
    let Caller::Roles { roles, .. } = caller else {
        return Ok(());
    };
    if coll.grants(None, "create", roles) {
        return Ok(());
    }
    let given: Vec<&str> = model::permission::granted(&coll.permissions, "create").collect();
    let quoted = |v: &[&str]| serde_json::to_string(v).unwrap_or_default();
    let message = match given.last() {
        None => msg!("No permissions provided for action 'create'"),
        Some(last) => msg!(
            "Missing \"create\" permission for role \"{}\". Only \"{}\" scopes are allowed and \"{}\" was given.",
            last,
            quoted(&roles.iter().map(String::as_str).collect::<Vec<_>>()),
            quoted(&given)
        ),
    };
    Err(err(ErrorCode::UserUnauthorized, message))
}

/// A caller that is not a key may only grant roles it holds.
pub(super) fn check_grants(caller: &Caller, permissions: &Option<Vec<String>>) -> R<()> {
    let (Caller::Roles { roles, .. }, Some(perms)) = (caller, permissions) else {
        return Ok(());
    };
    for p in perms {
        let held = model::permission::Permission::parse(p)
            .map(|p| roles.contains(&p.role))
            .unwrap_or(false);
        if !held {
            return Err(err(
                ErrorCode::UserUnauthorized,
                msg!("Permissions must be one of: ({})", roles.join(", ")),
            ));
        }
    }
    Ok(())
}

/// The permissions a new row gets: those given, or, when a user creates it without any,
/// read, update and delete for that user alone (as Appwrite).
pub(super) fn initial_permissions(caller: &Caller, given: &Option<Vec<String>>) -> Vec<String> {
    match (given, caller) {
        (Some(p), _) => p.clone(),
        (
            None,
            Caller::Roles {
                user: Some(user), ..
            },
        ) => ["read", "update", "delete"]
            .iter()
            .map(|a| format!("{a}(\"user:{user}\")"))
            .collect(),
        (None, _) => Vec::new(),
    }
}

fn doc_op(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    coll: &Collection,
    op: &DocOp,
    now: i64,
    out: &mut Vec<Document>,
) -> R<()> {
    match op {
        DocOp::Create {
            id,
            data,
            permissions,
        } => out.push(create(
            txn,
            project,
            caller,
            coll,
            (id, data, &Ops::new(), permissions),
            now,
            Action::Create,
        )?),
        DocOp::Upsert {
            id,
            data,
            permissions,
        }
        | DocOp::Update {
            id,
            data,
            permissions,
        } => out.push(update(
            txn,
            project,
            caller,
            coll,
            (id, data, &Ops::new(), permissions),
            now,
            matches!(op, DocOp::Upsert { .. }),
        )?),
        DocOp::Operate {
            id,
            data,
            ops,
            permissions,
            upsert,
        } => out.push(update(
            txn,
            project,
            caller,
            coll,
            (id, data, ops, permissions),
            now,
            *upsert,
        )?),
        DocOp::Delete { id } => {
            let old =
                load_document(txn, project, coll, id)?.ok_or_else(|| document_not_found(id))?;
            require(caller, coll, Some(&old), "delete")?;
            let mut deleting = std::collections::BTreeSet::new();
            let w = super::relations::Writer {
                project,
                caller,
                at: now,
            };
            super::relations::before_delete(txn, w, coll, &old, &mut deleting)?;
            // The related rows' changes may have come back to this row (a two-way link).
            let old = load_document(txn, project, coll, id)?.unwrap_or(old);
            write_document(txn, project, coll, Some(&old), None)?;
            out.push(old);
        }
        DocOp::Increment {
            id,
            attr,
            by,
            bound,
        } => {
            let old =
                load_document(txn, project, coll, id)?.ok_or_else(|| document_not_found(id))?;
            require(caller, coll, Some(&old), "update")?;
            let a = coll
                .attribute(attr)
                .ok_or_else(|| attribute_not_found(attr))?;
            if a.array
                || !matches!(
                    a.kind,
                    AttrKind::Integer | AttrKind::Bigint | AttrKind::Float
                )
            {
                return Err(err(
                    ErrorCode::AttributeTypeInvalid,
                    msg!("Attribute \"{}\" is not a number", attr),
                ));
            }
            let current = old.get(attr);
            let next = match (a.kind, &current, by) {
                (
                    AttrKind::Integer | AttrKind::Bigint,
                    Value::Int(_) | Value::Null,
                    Value::Int(b),
                ) => {
                    let c = if let Value::Int(c) = current { c } else { 0 };
                    Value::Int(c.checked_add(*b).ok_or_else(|| {
                        err(
                            ErrorCode::AttributeValueInvalid,
                            msg!("Attribute \"{}\" would overflow.", attr),
                        )
                    })?)
                }
                _ => Value::Float(current.as_f64().unwrap_or(0.0) + by.as_f64().unwrap_or(0.0)),
            };
            if let Some(b) = bound {
                let up = by.as_f64().unwrap_or(0.0) >= 0.0;
                let over = if up {
                    next.total_cmp(b) == std::cmp::Ordering::Greater
                } else {
                    next.total_cmp(b) == std::cmp::Ordering::Less
                };
                if over {
                    let which = if up { "maximum" } else { "minimum" };
                    return Err(err(
                        ErrorCode::AttributeLimitExceeded,
                        msg!(
                            "Attribute \"{}\" has reached the {} value of {}",
                            attr,
                            which,
                            b.to_json()
                        ),
                    ));
                }
            }
            let patch: Data = [(attr.clone(), next)].into_iter().collect();
            let doc = updated(coll, &old, &patch, &Ops::new(), &None, now)?;
            write_document(txn, project, coll, Some(&old), Some(&doc))?;
            out.push(doc);
        }
        DocOp::UpdateWhere { .. } | DocOp::OperateWhere { .. } | DocOp::DeleteWhere { .. }
            if !matches!(caller, Caller::Privileged) =>
        {
            return Err(unauthorized());
        }
        DocOp::UpdateWhere { .. } | DocOp::OperateWhere { .. } | DocOp::DeleteWhere { .. }
            if !coll.relations.is_empty() =>
        {
            return Err(bulk_with_relationships());
        }
        DocOp::UpdateWhere { spec, data } => {
            for old in select(txn, project, coll, spec)? {
                let doc = updated(coll, &old, data, &Ops::new(), &None, now)?;
                write_document(txn, project, coll, Some(&old), Some(&doc))?;
                out.push(doc);
            }
        }
        DocOp::OperateWhere { spec, data, ops } => {
            for old in select(txn, project, coll, spec)? {
                let doc = updated(coll, &old, data, ops, &None, now)?;
                write_document(txn, project, coll, Some(&old), Some(&doc))?;
                out.push(doc);
            }
        }
        DocOp::DeleteWhere { spec } => {
            for old in select(txn, project, coll, spec)? {
                write_document(txn, project, coll, Some(&old), None)?;
                out.push(old);
            }
        }
    }
    Ok(())
}

/// A row write's fields: id, values, operators, permissions.
type Fields<'a> = (&'a String, &'a Data, &'a Ops, &'a Option<Vec<String>>);

/// Updates a document, or, for an upsert, creates it when there is none.
fn update(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    coll: &Collection,
    fields: Fields,
    now: i64,
    upsert: bool,
) -> R<Document> {
    let (id, data, ops, permissions) = fields;
    let Some(old) = load_document(txn, project, coll, id)? else {
        return match upsert {
            true => create(txn, project, caller, coll, fields, now, Action::Upsert),
            false => Err(document_not_found(id)),
        };
    };
    require(caller, coll, Some(&old), "update")?;
    check_grants(caller, permissions)?;
    let mut data = data.clone();
    let links = super::relations::take_links(coll, &mut data)?;
    let doc = updated(coll, &old, &data, ops, permissions, now)?;
    let action = match upsert {
        true => Action::Upsert,
        false => Action::Update,
    };
    write_as(txn, project, coll, Some(&old), Some(&doc), action)?;
    let w = super::relations::Writer {
        project,
        caller,
        at: now,
    };
    super::relations::link(txn, w, coll, Some(&old), &doc, &links)?;
    Ok(doc)
}

/// Creates a document (by a create, or an upsert that found none), recorded as `action`.
/// Operators (an upsert's) start from the columns' defaults.
fn create(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    coll: &Collection,
    (id, data, ops, permissions): Fields,
    now: i64,
    action: Action,
) -> R<Document> {
    check_grants(caller, permissions)?;
    may_create(caller, coll)?;
    if load_document(txn, project, coll, id)?.is_some() {
        return Err(err(
            ErrorCode::DocumentAlreadyExists,
            msg!("Document with the requested ID '{}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID.", id),
        ));
    }
    let mut data = operated(coll, None, data, ops, now)?;
    let links = super::relations::take_links(coll, &mut data)?;
    let data = validate::new_document(coll, &data)?;
    let doc = Document {
        id: id.clone(),
        sequence: next_sequence(txn, project, coll)?,
        created_at: now,
        updated_at: now,
        permissions: initial_permissions(caller, permissions),
        data,
    };
    write_as(txn, project, coll, None, Some(&doc), action)?;
    let w = super::relations::Writer {
        project,
        caller,
        at: now,
    };
    super::relations::link(txn, w, coll, None, &doc, &links)?;
    Ok(doc)
}

fn updated(
    coll: &Collection,
    old: &Document,
    data: &Data,
    ops: &Ops,
    permissions: &Option<Vec<String>>,
    now: i64,
) -> R<Document> {
    let mut doc = old.clone();
    let patch = operated(coll, Some(&old.data), data, ops, now)?;
    doc.data = validate::update_document(coll, &old.data, &patch)?;
    if let Some(p) = permissions {
        doc.permissions = p.clone();
    }
    doc.updated_at = now;
    Ok(doc)
}

/// `data` with the operators' results added: each computed from the column's value in
/// `existing` (`None`: a row being created, whose operators start from the defaults). The
/// results are then checked like any written value.
fn operated(
    coll: &Collection,
    existing: Option<&Data>,
    data: &Data,
    ops: &Ops,
    now: i64,
) -> R<Data> {
    if ops.is_empty() {
        return Ok(data.clone());
    }
    let mut out = data.clone();
    for (key, op) in ops {
        let attr = coll
            .attribute(key)
            .ok_or_else(|| Error::structure(msg!("Unknown attribute: \"{}\"", key)))?;
        let current = existing.map(|d| d.get(key).unwrap_or(&Value::Null));
        let value = op.apply(attr, current, now).map_err(Error::structure)?;
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// The documents a bulk operation targets: filters, order, cursor, offset and limit.
fn select(
    txn: &Txn,
    project: &str,
    coll: &Collection,
    spec: &model::query::Spec,
) -> R<Vec<Document>> {
    let mut spec = spec.clone();
    spec.validate(coll)?;
    let mut docs: Vec<Document> = all_documents(txn, project, coll)?
        .into_iter()
        .filter(|d| spec.matches(d))
        .collect();
    docs.sort_by(|a, b| spec.compare(a, b));
    let docs = crate::read::paginate::<Failure>(docs, &spec, |id| {
        load_document(txn, project, coll, id).ok().flatten()
    })?;
    Ok(docs)
}
