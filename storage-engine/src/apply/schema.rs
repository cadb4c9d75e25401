//! Databases, collections (tables), attributes (columns) and indexes.

use super::store::{
    attribute_not_found, load_collection, load_database, load_document, put_index_entries,
    save_collection, sequence_run,
};
use super::txn::{Txn, DOCS, INDEX, META};
use super::{err, projects::require_project, Failure, R};
use crate::engine::encode;
use crate::keys;
use crate::validate;
use model::command::{AttributePatch, SchemaOp};
use model::msg;
use model::schema::{AttrKind, Collection, Index, IndexKind, IndexStatus, Reshape};
use model::{ErrorCode, Outcome, Value};

pub const MAX_ATTRIBUTES: usize = 1000;
pub const MAX_INDEXES: usize = 64;
/// Documents an index build indexes per log entry.
pub const INDEX_BUILD_CHUNK: usize = 500;
/// Documents a reshape rewrites per log entry.
pub const RESHAPE_CHUNK: usize = 500;
const UNIQUE_BUILD_FAILED: &str =
    "Unique index cannot be created: existing documents have duplicate values.";

pub(super) fn apply(txn: &mut Txn, project: &str, op: &SchemaOp, at: i64) -> R<Outcome> {
    match op {
        SchemaOp::CreateDatabase { database } => {
            require_project(txn, project)?;
            let k = keys::meta(project, keys::DATABASE, &[&database.id]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::DatabaseAlreadyExists,
                    msg!("Database with the requested ID '{}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID.", database.id),
                ));
            }
            let database = model::Database {
                created_at: at,
                updated_at: at,
                ..database.clone()
            };
            txn.put(META, k, encode(&database));
            Ok(Outcome::Database(database))
        }
        SchemaOp::UpdateDatabase { id, name, enabled } => {
            let k = keys::meta(project, keys::DATABASE, &[id]);
            let mut db = load_database(txn, project, id)?;
            if let Some(n) = name {
                db.name = n.clone();
            }
            if let Some(e) = enabled {
                db.enabled = *e;
            }
            db.updated_at = at;
            txn.put(META, k, encode(&db));
            Ok(Outcome::Database(db))
        }
        SchemaOp::DeleteDatabase { id } => {
            load_database(txn, project, id)?;
            txn.del(META, keys::meta(project, keys::DATABASE, &[id]));
            txn.delete_prefix(META, keys::meta_prefix(project, keys::COLLECTION, &[id]));
            txn.delete_prefix(META, keys::meta_prefix(project, keys::RESHAPES, &[id]));
            txn.delete_prefix(META, keys::meta_prefix(project, keys::RELATIONS, &[id]));
            txn.delete_prefix(META, keys::meta_prefix(project, keys::SEQUENCE, &[id]));
            txn.delete_prefix(DOCS, keys::prefix(&[project, id]));
            txn.delete_prefix(INDEX, keys::prefix(&[project, id]));
            txn.delete_prefix(META, keys::jobs_under(&[project, id]));
            Ok(Outcome::Done)
        }
        SchemaOp::CreateCollection { collection } => {
            load_database(txn, project, &collection.database)?;
            let k = keys::meta(
                project,
                keys::COLLECTION,
                &[&collection.database, &collection.id],
            );
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::CollectionAlreadyExists,
                    msg!("A collection with the requested ID '{}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID.", collection.id),
                ));
            }
            let mut coll = Collection {
                attributes: Vec::new(),
                indexes: Vec::new(),
                created_at: at,
                updated_at: at,
                ..collection.clone()
            };
            for a in &collection.attributes {
                add_attribute(&mut coll, stamped_attribute(a, at))?;
            }
            for i in &collection.indexes {
                let i = stamped_index(i, at);
                check_index(&coll, &i)?;
                coll.indexes.push(i);
            }
            txn.put(META, k, encode(&coll));
            Ok(Outcome::Collection(coll))
        }
        SchemaOp::UpdateCollection {
            database,
            id,
            name,
            permissions,
            document_security,
            enabled,
        } => {
            let mut coll = load_collection(txn, project, database, id)?;
            if let Some(n) = name {
                coll.name = n.clone();
            }
            if let Some(p) = permissions {
                coll.permissions = p.clone();
            }
            if let Some(d) = document_security {
                coll.document_security = *d;
            }
            if let Some(e) = enabled {
                coll.enabled = *e;
            }
            coll.updated_at = at;
            save_collection(txn, project, &coll);
            Ok(Outcome::Collection(coll))
        }
        SchemaOp::DeleteCollection { database, id } => {
            let coll = load_collection(txn, project, database, id)?;
            super::relations::forget_collection(txn, project, &coll)?;
            txn.del(META, keys::meta(project, keys::RELATIONS, &[database, id]));
            txn.del(META, keys::meta(project, keys::COLLECTION, &[database, id]));
            txn.del(META, keys::meta(project, keys::RESHAPES, &[database, id]));
            txn.del(META, keys::meta(project, keys::SEQUENCE, &[database, id]));
            txn.delete_prefix(DOCS, keys::prefix(&[project, database, id]));
            txn.delete_prefix(INDEX, keys::prefix(&[project, database, id]));
            txn.delete_prefix(META, keys::jobs_under(&[project, database, id]));
            Ok(Outcome::Done)
        }
        SchemaOp::CreateAttribute {
            database,
            collection,
            attribute,
        } => {
            let mut coll = load_collection(txn, project, database, collection)?;
            let attribute = stamped_attribute(attribute, at);
            add_attribute(&mut coll, attribute.clone())?;
            coll.updated_at = at;
            save_collection(txn, project, &coll);
            Ok(Outcome::Attribute(attribute))
        }
        SchemaOp::UpdateAttribute {
            database,
            collection,
            key,
            kind,
            patch,
        } => {
            let coll = load_collection(txn, project, database, collection)?;
            let (coll, attr) = update_attribute(txn, project, coll, key, *kind, patch, at)?;
            save_collection(txn, project, &coll);
            Ok(Outcome::Attribute(attr))
        }
        SchemaOp::DeleteAttribute {
            database,
            collection,
            key,
        } => {
            let mut coll = load_collection(txn, project, database, collection)?;
            if coll.attribute(key).is_none() {
                return Err(attribute_not_found(key));
            }
            if let Some(i) = coll.indexes.iter().find(|i| i.attributes.contains(key)) {
                return Err(err(
                    ErrorCode::IndexDependency,
                    msg!("Attribute '{}' cannot be renamed or deleted. Please remove the associated index '{}' first.", key, i.key),
                ));
            }
            coll.updated_at = at;
            if coll.relation(key).is_some() {
                if !coll.relation(key).is_some_and(|r| r.visible()) {
                    return Err(attribute_not_found(key));
                }
                super::relations::delete_attribute(txn, project, &mut coll, key)?;
            } else {
                coll.attributes.retain(|a| a.key != *key);
                reshape(txn, project, &mut coll, Reshape::Drop { key: key.clone() })?;
            }
            save_collection(txn, project, &coll);
            Ok(Outcome::Done)
        }
        SchemaOp::CreateIndex {
            database,
            collection,
            index,
        } => {
            let mut coll = load_collection(txn, project, database, collection)?;
            let mut index = stamped_index(index, at);
            check_index(&coll, &index)?;
            // From now on every write keeps the index in step; the documents already there
            // are indexed by the build job, a chunk per log entry.
            let seq = keys::index_prefix(project, database, collection, keys::SEQ_INDEX);
            let empty = txn.scan_limit(INDEX, &seq, 1)?.is_empty();
            index.status = match empty {
                true => IndexStatus::Available,
                false => IndexStatus::Processing,
            };
            if !empty {
                let job = keys::job(project, database, collection, &index.key);
                txn.put(META, job, 0u64.to_be_bytes().to_vec());
            }
            coll.indexes.push(index.clone());
            coll.updated_at = at;
            save_collection(txn, project, &coll);
            Ok(Outcome::Index(index))
        }
        SchemaOp::DeleteIndex {
            database,
            collection,
            key,
        } => {
            let mut coll = load_collection(txn, project, database, collection)?;
            if coll.index(key).is_none() {
                return Err(err(
                    ErrorCode::IndexNotFound,
                    msg!("Index with the requested key '{}' could not be found.", key),
                ));
            }
            coll.indexes.retain(|i| i.key != *key);
            coll.updated_at = at;
            txn.delete_prefix(INDEX, keys::index_prefix(project, database, &coll.id, key));
            txn.del(META, keys::job(project, database, &coll.id, key));
            save_collection(txn, project, &coll);
            Ok(Outcome::Done)
        }
        SchemaOp::BuildIndex {
            database,
            collection,
            key,
        } => build_index(txn, project, database, collection, key, at),
        SchemaOp::Reshape {
            database,
            collection,
        } => reshape_chunk(txn, project, database, collection),
        SchemaOp::CreateRelationship {
            database,
            collection,
            key,
            relationship,
        } => super::relations::create(txn, project, database, collection, key, relationship, at),
        SchemaOp::UpdateRelationship {
            database,
            collection,
            key,
            on_delete,
            new_key,
        } => super::relations::update(
            txn,
            project,
            (database, collection, key),
            *on_delete,
            new_key.as_ref(),
            at,
        ),
    }
}

/// Records a rename or deletion of an attribute. Reads settle documents to the new layout
/// from this entry on; when the collection has documents, its rewrite job starts over from
/// the first one (documents it already rewrote have yet to see this change).
pub(super) fn reshape(
    txn: &mut Txn,
    project: &str,
    coll: &mut Collection,
    change: Reshape,
) -> R<()> {
    let seq = keys::index_prefix(project, &coll.database, &coll.id, keys::SEQ_INDEX);
    if txn.scan_limit(INDEX, &seq, 1)?.is_empty() {
        return Ok(());
    }
    coll.reshapes.push(change);
    let job = keys::job(project, &coll.database, &coll.id, keys::RESHAPE_JOB);
    txn.put(META, job, 0u64.to_be_bytes().to_vec());
    Ok(())
}

/// One chunk of a collection's document rewrite (see `SchemaOp::Reshape`). Only the stored
/// data changes: what reads answer, `$updatedAt` and index entries stay as they were (an
/// indexed attribute cannot be renamed or deleted).
fn reshape_chunk(txn: &mut Txn, project: &str, database: &str, collection: &str) -> R<Outcome> {
    let Some((job, after, mut coll)) =
        open_job(txn, project, database, collection, keys::RESHAPE_JOB)?
    else {
        return Ok(Outcome::Done);
    };
    let chunk = sequence_run(txn, project, &coll, after, RESHAPE_CHUNK)?;
    let mut bytes = 0i64;
    for (_, id) in &chunk {
        // Loading settles the document; storing it keeps the settled form.
        if let Some(doc) = load_document(txn, project, &coll, id)? {
            let key = keys::doc(project, database, collection, id);
            let before = txn.get(DOCS, &key)?.map_or(0, |v| v.len());
            let after = encode(&doc);
            bytes += after.len() as i64 - before as i64;
            txn.put(DOCS, key, after);
        }
    }
    super::usage::rewritten(txn, project, database, collection, bytes, txn.now)?;
    match chunk.last() {
        Some((last, _)) if chunk.len() >= RESHAPE_CHUNK => {
            txn.put(META, job, last.to_be_bytes().to_vec());
        }
        _ => {
            coll.reshapes.clear();
            txn.del(META, job);
            save_collection(txn, project, &coll);
        }
    }
    Ok(Outcome::Done)
}

/// A pending job of a collection: its record's key, how far it has come, and the collection.
/// `None` when there is nothing to do: no such job (a late chunk), or the collection is gone
/// (then the record goes too).
fn open_job(
    txn: &mut Txn,
    project: &str,
    database: &str,
    collection: &str,
    name: &str,
) -> R<Option<(Vec<u8>, u64, Collection)>> {
    let job = keys::job(project, database, collection, name);
    let Some(cursor) = txn.get(META, &job)? else {
        return Ok(None);
    };
    let coll = match load_collection(txn, project, database, collection) {
        Ok(c) => c,
        Err(Failure::User(_)) => {
            txn.del(META, job);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let bytes = <[u8; 8]>::try_from(cursor.as_slice())
        .map_err(|_| crate::engine::corrupt(&job, "background job cursor"))?;
    Ok(Some((job, u64::from_be_bytes(bytes), coll)))
}

/// A key that stored documents may still hold under an older layout cannot name a new
/// attribute until the rewrite is through.
pub(super) fn refuse_in_flux(coll: &Collection, key: &str) -> R<()> {
    match coll.in_flux(key) {
        true => Err(err(
            ErrorCode::AttributeAlreadyExists,
            msg!("Attribute with the requested key '{}' is still being removed from existing documents. Try again in a moment.", key),
        )),
        false => Ok(()),
    }
}

/// One chunk of an index build (see `SchemaOp::BuildIndex`). A build that is no longer
/// wanted (index or collection gone, already finished) is a no-op that drops its record.
fn build_index(
    txn: &mut Txn,
    project: &str,
    database: &str,
    collection: &str,
    key: &str,
    at: i64,
) -> R<Outcome> {
    let Some((job, after, mut coll)) = open_job(txn, project, database, collection, key)? else {
        return Ok(Outcome::Done);
    };
    let Some(pos) = coll
        .indexes
        .iter()
        .position(|i| i.key == key && i.status == IndexStatus::Processing)
    else {
        txn.del(META, job);
        return Ok(Outcome::Done);
    };
    let index = coll.indexes[pos].clone();
    let chunk = sequence_run(txn, project, &coll, after, INDEX_BUILD_CHUNK)?;
    let mut last = after;
    for (seq, id) in &chunk {
        last = *seq;
        let Some(doc) = load_document(txn, project, &coll, id)? else {
            continue;
        };
        match put_index_entries(txn, project, &coll, &index, &doc) {
            Ok(()) => {}
            Err(Failure::User(e)) if e.code == ErrorCode::DocumentUniqueViolation => {
                // The index cannot exist: it is kept, failed, with nothing in it.
                txn.delete_prefix(
                    INDEX,
                    keys::index_prefix(project, database, collection, key),
                );
                coll.indexes[pos].status = IndexStatus::Failed {
                    error: UNIQUE_BUILD_FAILED.to_string(),
                };
                coll.indexes[pos].updated_at = at;
                txn.del(META, job);
                save_collection(txn, project, &coll);
                return Ok(Outcome::Done);
            }
            Err(e) => return Err(e),
        }
    }
    if chunk.len() < INDEX_BUILD_CHUNK {
        coll.indexes[pos].status = IndexStatus::Available;
        coll.indexes[pos].updated_at = at;
        txn.del(META, job);
        save_collection(txn, project, &coll);
    } else {
        txn.put(META, job, last.to_be_bytes().to_vec());
    }
    Ok(Outcome::Done)
}

fn stamped_attribute(a: &model::Attribute, at: i64) -> model::Attribute {
    model::Attribute {
        created_at: at,
        updated_at: at,
        ..a.clone()
    }
}

fn stamped_index(i: &Index, at: i64) -> Index {
    Index {
        created_at: at,
        updated_at: at,
        ..i.clone()
    }
}

pub(super) fn add_attribute(coll: &mut Collection, attr: model::Attribute) -> R<()> {
    if coll.attribute(&attr.key).is_some() {
        return Err(err(
            ErrorCode::AttributeAlreadyExists,
            msg!("Attribute with the requested key '{}' already exists. Attribute keys must be unique, try again with a different key.", attr.key),
        ));
    }
    if coll.attributes.len() >= MAX_ATTRIBUTES {
        return Err(err(
            ErrorCode::AttributeLimitExceeded,
            msg!(
                "The maximum number or size of attributes for collection '{}' has been reached.",
                coll.id
            ),
        ));
    }
    refuse_in_flux(coll, &attr.key)?;
    validate::attribute(&attr)?;
    let attr = validate::settled_default(attr)?;
    coll.attributes.push(attr);
    Ok(())
}

fn update_attribute(
    txn: &mut Txn,
    project: &str,
    mut coll: Collection,
    key: &str,
    kind: AttrKind,
    patch: &AttributePatch,
    now: i64,
) -> R<(Collection, model::Attribute)> {
    let pos = coll
        .attributes
        .iter()
        .position(|a| a.key == key)
        .ok_or_else(|| attribute_not_found(key))?;
    let mut attr = coll.attributes[pos].clone();
    let same_family = attr.kind == kind
        || (attr.kind.is_string() && kind.is_string() && attr.kind.format() == kind.format());
    if !same_family {
        return Err(err(
            ErrorCode::AttributeTypeInvalid,
            msg!("The attribute '{}' type is invalid.", key),
        ));
    }
    if let Some(r) = patch.required {
        attr.required = r;
    }
    if let Some(d) = &patch.default {
        attr.default = if d.is_null() { None } else { Some(d.clone()) };
    }
    if let Some(s) = patch.size {
        let shrinks = attr.size.is_some_and(|old| s < old);
        attr.size = Some(s);
        if shrinks {
            refuse_longer(txn, project, &coll, &attr)?;
        }
    }
    if let Some(m) = &patch.min {
        attr.min = Some(m.clone());
    }
    if let Some(m) = &patch.max {
        attr.max = Some(m.clone());
    }
    if let Some(e) = &patch.elements {
        attr.elements = e.clone();
    }
    attr.updated_at = now;
    validate::attribute(&attr)?;
    let mut attr = validate::settled_default(attr)?;
    if let Some(new_key) = patch.new_key.as_ref().filter(|k| k.as_str() != key) {
        if coll.attribute(new_key).is_some() {
            return Err(err(
                ErrorCode::AttributeAlreadyExists,
                msg!("Attribute with the requested key '{}' already exists. Attribute keys must be unique, try again with a different key.", new_key),
            ));
        }
        if coll
            .indexes
            .iter()
            .any(|i| i.attributes.iter().any(|a| a == key))
        {
            return Err(err(
                ErrorCode::IndexDependency,
                msg!("Attribute '{}' cannot be renamed or deleted. Please remove the associated index first.", key),
            ));
        }
        refuse_in_flux(&coll, new_key)?;
        attr.key = new_key.clone();
        let rename = Reshape::Rename {
            from: key.to_string(),
            to: new_key.clone(),
        };
        reshape(txn, project, &mut coll, rename)?;
    }
    coll.attributes[pos] = attr.clone();
    coll.updated_at = now;
    Ok((coll, attr))
}

/// A string column shrinks only if every stored value fits the new size (as MariaDB's
/// `ALTER TABLE` refuses to truncate). Reads the table's rows a page at a time, at most the
/// apply scan budget of them (beyond: `database_timeout`, nothing changed).
fn refuse_longer(txn: &Txn, project: &str, coll: &Collection, attr: &model::Attribute) -> R<()> {
    const PAGE: usize = 1_000;
    let Some(max) = attr.max_len() else {
        return Ok(());
    };
    let longer = |v: &Value| v.as_str().is_some_and(|s| s.chars().count() as u64 > max);
    let prefix = super::store::doc_prefix(project, coll);
    let mut from = prefix.clone();
    let mut seen = 0usize;
    loop {
        let rows = txn.scan_from(DOCS, &prefix, &from, PAGE)?;
        for (k, v) in &rows {
            let doc = crate::engine::decode_document(coll, k, v)?;
            let too_long = match doc.get(&attr.key) {
                Value::Array(items) => items.iter().any(longer),
                v => longer(&v),
            };
            if too_long {
                return Err(err(
                    ErrorCode::AttributeInvalidResize,
                    "Existing data is too large for new size, truncate your existing data then try again.",
                ));
            }
        }
        seen += rows.len();
        if seen > crate::engine::APPLY_SCAN_BUDGET {
            return Err(Failure::User(crate::engine::scan_budget_exceeded()));
        }
        match rows.last() {
            Some((k, _)) if rows.len() == PAGE => {
                from = k.clone();
                from.push(0);
            }
            _ => return Ok(()),
        }
    }
}

fn check_index(coll: &Collection, index: &Index) -> R<()> {
    if coll.index(&index.key).is_some() {
        return Err(err(
            ErrorCode::IndexAlreadyExists,
            msg!(
                "Index with the requested key '{}' already exists. Try again with a different key.",
                index.key
            ),
        ));
    }
    if coll.indexes.len() >= MAX_INDEXES {
        return Err(err(
            ErrorCode::IndexLimitExceeded,
            msg!(
                "The maximum number of indexes for collection '{}' has been reached.",
                coll.id
            ),
        ));
    }
    if index.attributes.is_empty() || index.orders.len() > index.attributes.len() {
        return Err(err(
            ErrorCode::IndexInvalid,
            "Index invalid: attributes are required and orders may not outnumber them.",
        ));
    }
    let mut seen = Vec::new();
    for a in &index.attributes {
        if seen.contains(&a) {
            return Err(err(
                ErrorCode::IndexInvalid,
                msg!("Index invalid: duplicate attribute \"{}\".", a),
            ));
        }
        seen.push(a);
        let system = matches!(
            a.as_str(),
            "$id" | "$createdAt" | "$updatedAt" | "$sequence"
        );
        let attr = coll.attribute(a);
        if attr.is_none() && !system {
            return Err(err(
                ErrorCode::AttributeUnknown,
                msg!("The attribute '{}' required for the index could not be found. Please confirm all your attributes are in the available state.", a),
            ));
        }
        if index.kind == IndexKind::Fulltext && !attr.is_some_and(|a| a.kind.is_string()) {
            return Err(err(
                ErrorCode::IndexInvalid,
                msg!(
                    "Index invalid: fulltext indexes need string attributes, \"{}\" is not one.",
                    a
                ),
            ));
        }
    }
    if index.kind == IndexKind::Spatial {
        if index.attributes.len() != 1 {
            return Err(err(
                ErrorCode::IndexInvalid,
                "Spatial index must have exactly one attribute",
            ));
        }
        let a = &index.attributes[0];
        // A system attribute (`$id`, `$createdAt`, ...) is no spatial one either.
        let kind = match coll.attribute(a) {
            Some(attr) if attr.kind.shape().is_some() => None,
            Some(attr) => Some(attr.kind.wire_type()),
            None if a == "$sequence" => Some("integer"),
            None if a == "$createdAt" || a == "$updatedAt" => Some("datetime"),
            None => Some("string"),
        };
        if let Some(kind) = kind {
            return Err(err(
                ErrorCode::IndexInvalid,
                msg!("Spatial index can only be created on spatial attributes (point, linestring, polygon). Attribute \"{}\" is of type \"{}\"", a, kind),
            ));
        }
    } else if let Some(a) = index.attributes.iter().find(|a| {
        coll.attribute(a)
            .is_some_and(|attr| attr.kind.shape().is_some())
    }) {
        return Err(err(
            ErrorCode::IndexInvalid,
            msg!("Cannot create {} index on spatial attribute \"{}\". Spatial attributes require spatial indexes.", index.kind.as_str(), a),
        ));
    }
    if index.kind == IndexKind::Fulltext && index.attributes.len() != 1 {
        return Err(err(
            ErrorCode::IndexInvalid,
            "Index invalid: a fulltext index covers exactly one attribute.",
        ));
    }
    let arrays = index
        .attributes
        .iter()
        .filter(|a| coll.attribute(a).is_some_and(|a| a.array))
        .count();
    if arrays > 1 {
        return Err(err(
            ErrorCode::IndexInvalid,
            "Index invalid: at most one array attribute per index.",
        ));
    }
    Ok(())
}
