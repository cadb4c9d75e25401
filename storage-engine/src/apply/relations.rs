//! Relationships between collections: the attributes of both ends (schema), the links a row
//! write makes or breaks on the related rows, and what deleting a row does to its related
//! rows (`onDelete`) — all inside the same log entry as the write itself, so a link is never
//! half made.
//!
//! Where a link is kept follows `Relationship::stored`: a single reference is the related
//! row's id in the row's data; a `manyToMany` parent keeps the list of related ids. The
//! other end is found through the stored end's internal index (`Collection::relation_indexes`).

use super::documents::write_document;
use super::schema::{add_attribute, refuse_in_flux, reshape};
use super::store::{attribute_not_found, load_collection, load_document, save_collection};
use super::txn::{Txn, INDEX};
use super::{err, Caller, Failure, R};
use crate::keys;
use model::command::Data;
use model::msg;
use model::schema::{
    AttrKind, Attribute, Collection, Document, OnDelete, RelationType, Relationship, Reshape, Side,
};
use model::{Error, ErrorCode, Outcome, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Rows one write may touch through its relationships (links made or broken, rows deleted by
/// a cascade), at most: the bound on its work.
pub const MAX_RELATED: usize = 5_000;

fn already_exists(key: &str) -> Failure {
    err(
        ErrorCode::AttributeAlreadyExists,
        msg!("Attribute with the requested key '{}' already exists. Attribute keys must be unique, try again with a different key.", key),
    )
}

/// The name of an end's internal index: fixed at creation (`at` and the key then), so a later
/// rename of the key keeps it.
fn index_name(key: &str, at: i64) -> String {
    format!("$rel{at}:{key}")
}

/// `CreateRelationship`: the attribute `key` on `collection` and its twin on the related
/// collection (hidden from clients when one-way).
pub(super) fn create(
    txn: &mut Txn,
    project: &str,
    database: &str,
    collection: &str,
    key: &str,
    rel: &Relationship,
    at: i64,
) -> R<Outcome> {
    let mut parent = load_collection(txn, project, database, collection)?;
    if rel.related == parent.id {
        return Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "A relationship between a collection and itself is not supported.",
        ));
    }
    let mut child = load_collection(txn, project, database, &rel.related)?;
    let clash = |c: &Collection, k: &str| {
        c.attribute(k).is_some() || c.relations.keys().any(|r| r.eq_ignore_ascii_case(k))
    };
    if clash(&parent, key) {
        return Err(already_exists(key));
    }
    if clash(&child, &rel.two_way_key) {
        return Err(already_exists(&rel.two_way_key));
    }
    for other in parent.relations.values() {
        if other.related != child.id {
            continue;
        }
        if other.two_way_key.eq_ignore_ascii_case(&rel.two_way_key) {
            return Err(already_exists(&rel.two_way_key));
        }
        if other.kind == RelationType::ManyToMany && rel.kind == RelationType::ManyToMany {
            return Err(err(
                ErrorCode::AttributeAlreadyExists,
                "Creating more than one \"manyToMany\" relationship on the same collection is currently not permitted.",
            ));
        }
    }
    let parent_end = Relationship {
        side: Side::Parent,
        index: None,
        ..rel.clone()
    };
    let parent_end = Relationship {
        index: parent_end.stored().then(|| index_name(key, at)),
        ..parent_end
    };
    let child_end = Relationship {
        related: parent.id.clone(),
        two_way_key: key.to_string(),
        side: Side::Child,
        index: None,
        ..rel.clone()
    };
    let child_end = Relationship {
        index: child_end.stored().then(|| index_name(&rel.two_way_key, at)),
        ..child_end
    };
    let attr = Attribute::new(key, AttrKind::Relationship, at);
    add_attribute(&mut parent, attr.clone())?;
    add_attribute(
        &mut child,
        Attribute::new(&rel.two_way_key, AttrKind::Relationship, at),
    )?;
    parent.relations.insert(key.to_string(), parent_end);
    child.relations.insert(rel.two_way_key.clone(), child_end);
    parent.updated_at = at;
    child.updated_at = at;
    save_collection(txn, project, &parent);
    save_collection(txn, project, &child);
    Ok(Outcome::Attribute(attr))
}

/// `UpdateRelationship`: `onDelete` of both ends, and a new key for this one.
pub(super) fn update(
    txn: &mut Txn,
    project: &str,
    (database, collection, key): (&str, &str, &str),
    on_delete: Option<OnDelete>,
    new_key: Option<&String>,
    at: i64,
) -> R<Outcome> {
    let mut coll = load_collection(txn, project, database, collection)?;
    let Some(mut rel) = coll.relation(key).filter(|r| r.visible()).cloned() else {
        return Err(attribute_not_found(key));
    };
    let mut other = load_collection(txn, project, database, &rel.related)?;
    let mut twin = other.relation(&rel.two_way_key).cloned();
    if let Some(od) = on_delete {
        rel.on_delete = od;
        if let Some(t) = &mut twin {
            t.on_delete = od;
        }
    }
    let mut key = key.to_string();
    if let Some(nk) = new_key.filter(|k| **k != key) {
        if coll.attribute(nk).is_some()
            || coll
                .relations
                .keys()
                .any(|r| *r != key && r.eq_ignore_ascii_case(nk))
        {
            return Err(already_exists(nk));
        }
        refuse_in_flux(&coll, nk)?;
        coll.relations.remove(&key);
        if let Some(a) = coll.attributes.iter_mut().find(|a| a.key == key) {
            a.key = nk.clone();
        }
        if rel.stored() {
            let rename = Reshape::Rename {
                from: key.clone(),
                to: nk.clone(),
            };
            reshape(txn, project, &mut coll, rename)?;
        }
        if let Some(t) = &mut twin {
            t.two_way_key = nk.clone();
        }
        key = nk.clone();
    }
    let attr = coll
        .attributes
        .iter_mut()
        .find(|a| a.key == key)
        .ok_or_else(|| attribute_not_found(&key))?;
    attr.updated_at = at;
    let attr = attr.clone();
    coll.relations.insert(key, rel.clone());
    coll.updated_at = at;
    if let Some(t) = twin {
        other.relations.insert(rel.two_way_key.clone(), t);
        other.updated_at = at;
        save_collection(txn, project, &other);
    }
    save_collection(txn, project, &coll);
    Ok(Outcome::Attribute(attr))
}

/// Removes one end of a relationship from `coll` (not saved): its attribute, its stored
/// values (by a reshape) and its internal index.
fn drop_end(txn: &mut Txn, project: &str, coll: &mut Collection, key: &str) -> R<()> {
    coll.attributes.retain(|a| a.key != key);
    if let Some(end) = coll.relations.remove(key) {
        if end.stored() {
            reshape(
                txn,
                project,
                coll,
                Reshape::Drop {
                    key: key.to_string(),
                },
            )?;
        }
        if let Some(ix) = &end.index {
            txn.delete_prefix(
                INDEX,
                keys::index_prefix(project, &coll.database, &coll.id, ix),
            );
        }
    }
    Ok(())
}

/// Deletes relationship attribute `key` of `coll` and its twin (`coll` is saved by the
/// caller; the related collection here).
pub(super) fn delete_attribute(
    txn: &mut Txn,
    project: &str,
    coll: &mut Collection,
    key: &str,
) -> R<()> {
    let Some(rel) = coll.relation(key).cloned() else {
        return Ok(());
    };
    drop_end(txn, project, coll, key)?;
    if rel.related != coll.id {
        if let Ok(mut other) = load_collection(txn, project, &coll.database, &rel.related) {
            drop_end(txn, project, &mut other, &rel.two_way_key)?;
            save_collection(txn, project, &other);
        }
    }
    Ok(())
}

/// Before `coll` is deleted: its relationships' twins go from the related collections.
pub(super) fn forget_collection(txn: &mut Txn, project: &str, coll: &Collection) -> R<()> {
    for rel in coll.relations.values() {
        if rel.related == coll.id {
            continue;
        }
        if let Ok(mut other) = load_collection(txn, project, &coll.database, &rel.related) {
            drop_end(txn, project, &mut other, &rel.two_way_key)?;
            save_collection(txn, project, &other);
        }
    }
    Ok(())
}

// ---- rows ----

/// A relationship value a write gives: the related row, or the related rows.
#[derive(Clone, Debug)]
pub(super) enum Link {
    One(Option<String>),
    Many(Vec<String>),
}

fn value_invalid(m: impl Into<model::error::Message>) -> Failure {
    err(ErrorCode::RelationshipValueInvalid, m)
}

fn related_id(v: &Value) -> R<String> {
    match v {
        Value::Str(s) if model::id::is_valid(s) => Ok(s.clone()),
        Value::Str(_) => Err(value_invalid(
            "Invalid relationship value. A document ID must contain at most 36 chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char.",
        )),
        _ => Err(value_invalid(
            "Relationship value must be an object, document ID string, or associative array",
        )),
    }
}

/// Takes the relationship values out of a write's `data`: those of ends the row itself keeps
/// go back in as stored (the related id, or list of ids); every one is answered as a link to
/// make. Checked as Appwrite checks them.
pub(super) fn take_links(coll: &Collection, data: &mut Data) -> R<Vec<(String, Link)>> {
    let mut links = Vec::new();
    for (key, rel) in &coll.relations {
        let Some(v) = data.remove(key) else {
            continue;
        };
        if !rel.visible() {
            return Err(Failure::User(Error::structure(msg!(
                "Unknown attribute: \"{}\"",
                key
            ))));
        }
        let link = match (rel.many(), &v) {
            (true, Value::Array(items)) => {
                let mut ids = Vec::new();
                for i in items {
                    let id = related_id(i)?;
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                Link::Many(ids)
            }
            // `null` leaves a manyToMany list as it is (an empty list clears it).
            (true, Value::Null) if rel.kind == RelationType::ManyToMany => continue,
            (true, Value::Null) => {
                return Err(value_invalid("Invalid relationship value. Must be either an array of documents or document IDs, NULL given."))
            }
            (true, _) => {
                return Err(value_invalid("Invalid relationship value. Must be either an array of documents or document IDs, document ID given."))
            }
            (false, Value::Array(_)) => {
                return Err(value_invalid("Invalid relationship value. Must be either a document ID or a document, array given."))
            }
            (false, Value::Null) => Link::One(None),
            (false, v) => Link::One(Some(related_id(v)?)),
        };
        if rel.stored() {
            let stored = match &link {
                Link::One(id) => id.clone().map(Value::Str).unwrap_or(Value::Null),
                Link::Many(ids) => Value::Array(ids.iter().cloned().map(Value::Str).collect()),
            };
            data.insert(key.clone(), stored);
        }
        links.push((key.clone(), link));
    }
    Ok(links)
}

/// The rows of `other` whose end `end_key` refers to `id` (through that end's internal
/// index), at most `MAX_RELATED`.
fn referring(
    txn: &Txn,
    project: &str,
    other: &Collection,
    end_key: &str,
    id: &str,
) -> R<Vec<Document>> {
    let Some(ix) = other.relation(end_key).and_then(|e| e.index.clone()) else {
        return Ok(Vec::new());
    };
    let mut prefix = keys::index_prefix(project, &other.database, &other.id, &ix);
    keys::encode_value(&mut prefix, &Value::Str(id.to_string()), model::Order::Asc);
    let entries = txn.scan_limit(INDEX, &prefix, MAX_RELATED + 1)?;
    if entries.len() > MAX_RELATED {
        return Err(too_many());
    }
    let mut out = Vec::new();
    for (k, v) in entries {
        let (_, rid) = keys::parse_entry_value(&v)
            .ok_or_else(|| Failure::Storage(crate::engine::corrupt(&k, "index entry")))?;
        let rid = String::from_utf8_lossy(rid).into_owned();
        if let Some(d) = load_document(txn, project, other, &rid)? {
            out.push(d);
        }
    }
    Ok(out)
}

fn too_many() -> Failure {
    err(
        ErrorCode::RelationshipValueInvalid,
        msg!(
            "A write may change at most {} related documents.",
            MAX_RELATED
        ),
    )
}

/// The rows related to `doc` through its end `key` of `coll`: the ones it refers to, or the
/// ones that refer to it.
pub(super) fn related_rows(
    txn: &Txn,
    project: &str,
    coll: &Collection,
    other: &Collection,
    key: &str,
    doc: &Document,
) -> R<Vec<Document>> {
    let Some(rel) = coll.relation(key) else {
        return Ok(Vec::new());
    };
    if rel.stored() {
        let mut out = Vec::new();
        for id in doc.related_ids(key) {
            if let Some(d) = load_document(txn, project, other, &id)? {
                out.push(d);
            }
        }
        return Ok(out);
    }
    referring(txn, project, other, &rel.two_way_key, &doc.id)
}

/// Who makes a write's links, in which project, at what time: what every related row it
/// changes is changed by.
#[derive(Clone, Copy)]
pub(super) struct Writer<'a> {
    pub project: &'a str,
    pub caller: &'a Caller,
    pub at: i64,
}

/// May `caller` update `doc` of `coll`?
fn require_update(caller: &Caller, coll: &Collection, doc: &Document) -> R<()> {
    match caller {
        Caller::Privileged => Ok(()),
        Caller::Roles { roles, .. } if coll.grants(Some(doc), "update", roles) => Ok(()),
        Caller::Roles { .. } => Err(super::unauthorized()),
    }
}

/// Sets end `key` of related row `row` (in `other`) to refer to `id` or not: a single
/// reference is set or cleared (cleared only where it still refers to `id`); a list gains or
/// loses `id`.
fn set_reference(
    txn: &mut Txn,
    w: Writer,
    other: &Collection,
    row: &Document,
    key: &str,
    id: &str,
    refer: bool,
) -> R<()> {
    let Some(end) = other.relation(key) else {
        return Ok(());
    };
    let now = row.data.get(key).cloned().unwrap_or(Value::Null);
    let next = match (end.many(), refer) {
        (false, true) => Value::Str(id.to_string()),
        (false, false) if now.as_str() == Some(id) => Value::Null,
        (false, false) => return Ok(()),
        (true, _) => {
            let mut ids = row.related_ids(key);
            let had = ids.iter().any(|i| i == id);
            match (refer, had) {
                (true, false) => ids.push(id.to_string()),
                (false, true) => ids.retain(|i| i != id),
                _ => return Ok(()),
            }
            Value::Array(ids.into_iter().map(Value::Str).collect())
        }
    };
    if next == now {
        return Ok(());
    }
    require_update(w.caller, other, row)?;
    let mut new = row.clone();
    new.data.insert(key.to_string(), next);
    new.updated_at = w.at;
    write_document(txn, w.project, other, Some(row), Some(&new))
}

/// Makes the links a write of row `doc` (of `coll`, as `old` was before it) gave: the
/// related rows' own references follow, and a `oneToOne` stays one to one.
pub(super) fn link(
    txn: &mut Txn,
    w: Writer,
    coll: &Collection,
    old: Option<&Document>,
    doc: &Document,
    links: &[(String, Link)],
) -> R<()> {
    let project = w.project;
    let mut touched = 0usize;
    for (key, link) in links {
        let Some(rel) = coll.relation(key).cloned() else {
            continue;
        };
        let other = load_collection(txn, project, &coll.database, &rel.related)?;
        let twin_key = rel.two_way_key.as_str();
        let twin_stored = other.relation(twin_key).is_some_and(Relationship::stored);
        match (rel.stored(), link) {
            (true, Link::One(target)) => {
                let before = old.map(|o| o.related_ids(key)).unwrap_or_default();
                if rel.kind == RelationType::OneToOne {
                    if let Some(t) = target {
                        // One to one: no other row of this collection may refer to it.
                        let taken = referring(txn, project, coll, key, t)?
                            .into_iter()
                            .any(|d| d.id != doc.id);
                        let partner = load_document(txn, project, &other, t)?;
                        let partner_taken = twin_stored
                            && partner.as_ref().is_some_and(|p| {
                                p.data
                                    .get(twin_key)
                                    .and_then(Value::as_str)
                                    .is_some_and(|x| x != doc.id)
                            });
                        if taken || partner_taken {
                            return Err(err(
                                ErrorCode::DocumentAlreadyExists,
                                msg!("Document with the requested ID '{}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID.", doc.id),
                            ));
                        }
                        if let (true, Some(p)) = (twin_stored, partner) {
                            set_reference(txn, w, &other, &p, twin_key, &doc.id, true)?;
                            touched += 1;
                        }
                    }
                    if twin_stored {
                        for gone in before.iter().filter(|b| Some(*b) != target.as_ref()) {
                            if let Some(p) = load_document(txn, project, &other, gone)? {
                                set_reference(txn, w, &other, &p, twin_key, &doc.id, false)?;
                                touched += 1;
                            }
                        }
                    }
                }
            }
            // A manyToMany parent's list is the row's own data; the children find it by index.
            (true, Link::Many(_)) => {}
            (false, link) => {
                let want: Vec<String> = match link {
                    Link::Many(ids) => ids.clone(),
                    Link::One(id) => id.iter().cloned().collect(),
                };
                let current = referring(txn, project, &other, twin_key, &doc.id)?;
                for row in &current {
                    if !want.contains(&row.id) {
                        set_reference(txn, w, &other, row, twin_key, &doc.id, false)?;
                        touched += 1;
                    }
                }
                for id in &want {
                    if current.iter().any(|r| r.id == *id) {
                        continue;
                    }
                    // A row that is not there is passed over, as Appwrite does.
                    if let Some(row) = load_document(txn, project, &other, id)? {
                        set_reference(txn, w, &other, &row, twin_key, &doc.id, true)?;
                        touched += 1;
                    }
                }
            }
        }
        if touched > MAX_RELATED {
            return Err(too_many());
        }
    }
    Ok(())
}

/// What deleting `doc` of `coll` does to its related rows, by each end's `onDelete`: refused
/// while an end that owns related rows has any (`restrict`), the related rows' references
/// cleared (`setNull`, and `restrict` where nothing is owned), or the related rows deleted
/// too (`cascade`, recursively; each needs `delete` for a user). `deleting` holds the rows
/// this delete already covers, `(collection, id)`.
pub(super) fn before_delete(
    txn: &mut Txn,
    w: Writer,
    coll: &Collection,
    doc: &Document,
    deleting: &mut BTreeSet<(String, String)>,
) -> R<()> {
    let (project, caller) = (w.project, w.caller);
    deleting.insert((coll.id.clone(), doc.id.clone()));
    let mut others: BTreeMap<String, Collection> = BTreeMap::new();
    for (key, rel) in &coll.relations {
        if !others.contains_key(&rel.related) {
            let o = load_collection(txn, project, &coll.database, &rel.related)?;
            others.insert(rel.related.clone(), o);
        }
        let other = &others[&rel.related];
        let rows = related_rows(txn, project, coll, other, key, doc)?;
        let rows: Vec<Document> = rows
            .into_iter()
            .filter(|r| !deleting.contains(&(other.id.clone(), r.id.clone())))
            .collect();
        if rows.is_empty() {
            continue;
        }
        if deleting.len() + rows.len() > MAX_RELATED {
            return Err(too_many());
        }
        let owns = matches!(
            (rel.kind, rel.side),
            (RelationType::OneToOne, Side::Parent)
                | (RelationType::OneToMany, Side::Parent)
                | (RelationType::ManyToMany, Side::Parent)
                | (RelationType::ManyToOne, Side::Child)
        );
        match rel.on_delete {
            OnDelete::Restrict if owns => {
                return Err(err(
                    ErrorCode::DocumentDeleteRestricted,
                    "Document cannot be deleted because it is referenced by another document.",
                ))
            }
            OnDelete::Cascade => {
                for row in rows {
                    if deleting.contains(&(other.id.clone(), row.id.clone())) {
                        continue;
                    }
                    if let Caller::Roles { roles, .. } = caller {
                        if !other.grants(Some(&row), "delete", roles) {
                            return Err(super::unauthorized());
                        }
                    }
                    before_delete(txn, w, other, &row, deleting)?;
                    // The row may have changed through the cascade below it.
                    if let Some(now) = load_document(txn, project, other, &row.id)? {
                        write_document(txn, project, other, Some(&now), None)?;
                    }
                }
            }
            _ => {
                // Their references to this row go; a reference this row keeps goes with it.
                if other
                    .relation(&rel.two_way_key)
                    .is_some_and(Relationship::stored)
                {
                    for row in rows {
                        let w = Writer {
                            caller: &Caller::Privileged,
                            ..w
                        };
                        set_reference(txn, w, other, &row, &rel.two_way_key, &doc.id, false)?;
                    }
                }
            }
        }
    }
    Ok(())
}
