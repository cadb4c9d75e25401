//! State access the services share: schema records, documents and their index entries.

use super::txn::{Txn, DOCS, INDEX, META};
use super::{err, Failure, R};
use crate::engine::{decode_document, encode};
use crate::keys;
use model::msg;
use model::schema::{Collection, Document, Index, IndexKind, Order};
use model::{ErrorCode, Value};

pub(super) fn load_database(txn: &Txn, project: &str, id: &str) -> R<model::Database> {
    txn.get_as(META, &keys::meta(project, keys::DATABASE, &[id]))?
        .ok_or_else(|| {
            err(
                ErrorCode::DatabaseNotFound,
                msg!(
                    "Database with the requested ID '{}' could not be found.",
                    id
                ),
            )
        })
}

pub(super) fn load_collection(txn: &Txn, project: &str, db: &str, id: &str) -> R<Collection> {
    load_database(txn, project, db)?;
    let mut coll: Collection = txn
        .get_as(META, &keys::meta(project, keys::COLLECTION, &[db, id]))?
        .ok_or_else(|| {
            err(
                ErrorCode::CollectionNotFound,
                msg!(
                    "Collection with the requested ID '{}' could not be found.",
                    id
                ),
            )
        })?;
    if let Some(r) = txn.get_as(META, &keys::meta(project, keys::RESHAPES, &[db, id]))? {
        coll.reshapes = r;
    }
    if let Some(r) = txn.get_as(META, &keys::meta(project, keys::RELATIONS, &[db, id]))? {
        coll.relations = r;
    }
    Ok(coll)
}

pub(super) fn save_collection(txn: &mut Txn, project: &str, coll: &Collection) {
    let at = [coll.database.as_str(), coll.id.as_str()];
    txn.put(
        META,
        keys::meta(project, keys::COLLECTION, &at),
        encode(coll),
    );
    let reshapes = keys::meta(project, keys::RESHAPES, &at);
    match coll.reshapes.is_empty() {
        true => txn.del(META, reshapes),
        false => txn.put(META, reshapes, encode(&coll.reshapes)),
    }
    let relations = keys::meta(project, keys::RELATIONS, &at);
    match coll.relations.is_empty() {
        true => txn.del(META, relations),
        false => txn.put(META, relations, encode(&coll.relations)),
    }
}

pub(super) fn attribute_not_found(key: &str) -> Failure {
    err(
        ErrorCode::AttributeNotFound,
        msg!(
            "Attribute with the requested key '{}' could not be found.",
            key
        ),
    )
}

pub(super) fn doc_prefix(project: &str, coll: &Collection) -> Vec<u8> {
    keys::prefix(&[project, &coll.database, &coll.id])
}

/// Every document of a collection, for the applies that must see them all (bulk changes by
/// query with an order, offset or cursor; reads inside a transaction): at most
/// `APPLY_SCAN_BUDGET` of them, or `database_timeout`.
pub(super) fn all_documents(txn: &Txn, project: &str, coll: &Collection) -> R<Vec<Document>> {
    let prefix = doc_prefix(project, coll);
    let budget = crate::engine::APPLY_SCAN_BUDGET;
    let rows = txn.scan_limit(DOCS, &prefix, budget + 1)?;
    if rows.len() > budget {
        return Err(Failure::User(crate::engine::scan_budget_exceeded()));
    }
    rows.into_iter()
        .map(|(k, v)| Ok(decode_document(coll, &k, &v)?))
        .collect()
}

/// What a document holds in one index: its entries (key, unique-checked), each valued
/// `keys::entry_value` (its sequence and id), and its count keys: for every number of leading
/// columns, each distinct run of values it holds there (`keys::count_key`; fulltext indexes
/// keep no counts).
struct IndexKeys {
    entries: Vec<(Vec<u8>, bool)>,
    counts: Vec<Vec<u8>>,
}

fn index_keys(project: &str, coll: &Collection, index: &Index, doc: &Document) -> IndexKeys {
    let prefix = keys::index_prefix(project, &coll.database, &coll.id, &index.key);
    if index.kind == IndexKind::Fulltext {
        let text = match doc.get(&index.attributes[0]) {
            Value::Str(s) => s,
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let mut toks = model::query::tokens(&text);
        toks.sort();
        toks.dedup();
        let entries = toks
            .into_iter()
            .map(|t| {
                let mut k = prefix.clone();
                keys::encode_token(&mut k, &t, false);
                k.extend_from_slice(&keys::seq_bytes(doc.sequence));
                (k, false)
            })
            .collect();
        return IndexKeys {
            entries,
            counts: Vec::new(),
        };
    }
    if index.kind == IndexKind::Spatial {
        // Filed under the grid cells its box spans (`cells`); no counts.
        let filed = model::spatial::geometry(&doc.get(&index.attributes[0]))
            .and_then(|g| crate::cells::cells_of(&g));
        let entries = filed
            .map(|(level, codes)| {
                codes
                    .into_iter()
                    .map(|c| {
                        let mut k = keys::cell_key(&prefix, level, c);
                        k.extend_from_slice(&keys::seq_bytes(doc.sequence));
                        (k, false)
                    })
                    .collect()
            })
            .unwrap_or_default();
        return IndexKeys {
            entries,
            counts: Vec::new(),
        };
    }
    let mut entries = Vec::new();
    let mut counts = Vec::new();
    for t in tuples(index, doc) {
        let unique = index.kind == IndexKind::Unique && t.iter().all(|v| !v.is_null());
        let mut values = Vec::new();
        for (i, v) in t.iter().enumerate() {
            let order = index.orders.get(i).copied().unwrap_or(Order::Asc);
            keys::encode_value(&mut values, v, order);
            counts.push(keys::count_key(&prefix, &values));
        }
        let mut k = [prefix.as_slice(), &values].concat();
        if !unique {
            k.extend_from_slice(&keys::seq_bytes(doc.sequence));
        }
        entries.push((k, unique));
    }
    counts.sort();
    counts.dedup();
    IndexKeys { entries, counts }
}

/// The value tuples a document holds in a (non-fulltext) index: one per combination of array
/// elements (at most one array attribute per index).
fn tuples(index: &Index, doc: &Document) -> Vec<Vec<Value>> {
    let mut tuples: Vec<Vec<Value>> = vec![Vec::new()];
    for a in &index.attributes {
        let values = match doc.get(a) {
            Value::Array(items) if items.is_empty() => vec![Value::Null],
            Value::Array(items) => {
                let mut items = items;
                items.sort_by(|x, y| x.total_cmp(y));
                items.dedup_by(|x, y| x.loose_eq(y));
                items
            }
            v => vec![v],
        };
        tuples = tuples
            .into_iter()
            .flat_map(|t| {
                values.iter().map(move |v| {
                    let mut t = t.clone();
                    t.push(v.clone());
                    t
                })
            })
            .collect();
    }
    tuples
}

/// Adds `delta` to each of a document's counts in an index; a count that reaches zero is
/// removed.
fn adjust_counts(txn: &mut Txn, held: &IndexKeys, delta: i64) -> R<()> {
    for k in &held.counts {
        bump(txn, k.clone(), delta)?;
    }
    Ok(())
}

/// Adds `delta` to the count under `k` (in the index keyspace); zero removes it.
fn bump(txn: &mut Txn, k: Vec<u8>, delta: i64) -> R<()> {
    let n = match txn.get(INDEX, &k)? {
        Some(v) => keys::parse_count(&v)
            .ok_or_else(|| Failure::Storage(crate::engine::corrupt(&k, "count")))?,
        None => 0,
    };
    match n.saturating_add_signed(delta) {
        0 => txn.del(INDEX, k),
        n => txn.put(INDEX, k, n.to_be_bytes().to_vec()),
    }
    Ok(())
}

/// Adds `delta` to the number of rows `coll` holds.
pub(super) fn count_rows(txn: &mut Txn, project: &str, coll: &Collection, delta: i64) -> R<()> {
    bump(
        txn,
        keys::rows_count(project, &coll.database, &coll.id),
        delta,
    )
}

/// Is this version of `doc` in `index` already? Its entries are written and removed together,
/// so the first one tells. (An index build meets rows that their own writes already indexed.)
fn indexed(txn: &Txn, doc: &Document, entries: &[(Vec<u8>, bool)]) -> R<bool> {
    match entries.first() {
        Some((k, _)) => owned_by(txn, k, doc),
        None => Ok(false),
    }
}

/// Does the entry under `k` belong to `doc`?
fn owned_by(txn: &Txn, k: &[u8], doc: &Document) -> R<bool> {
    Ok(txn
        .get(INDEX, k)?
        .and_then(|v| keys::parse_entry_value(&v).map(|(seq, _)| seq == doc.sequence))
        .unwrap_or(false))
}

/// Writes `doc`'s entries in `index` (checking unique ones) and, if they were not there yet,
/// counts it.
pub(super) fn put_index_entries(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    index: &Index,
    doc: &Document,
) -> R<()> {
    let held = index_keys(project, coll, index, doc);
    let fresh = !indexed(txn, doc, &held.entries)?;
    for (k, unique) in &held.entries {
        if *unique {
            if let Some(owner) = txn.get(INDEX, k)? {
                let owner = keys::parse_entry_value(&owner).map(|(_, id)| id);
                if owner != Some(doc.id.as_bytes()) {
                    return Err(err(
                        ErrorCode::DocumentUniqueViolation,
                        "Document with the requested unique attributes already exists.",
                    ));
                }
            }
        }
        txn.put(INDEX, k.clone(), keys::entry_value(doc.sequence, &doc.id));
    }
    match fresh {
        true => adjust_counts(txn, &held, 1),
        false => Ok(()),
    }
}

/// Removes `doc`'s entries from `index`, and its counts if it was there.
pub(super) fn remove_index_entries(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    index: &Index,
    doc: &Document,
) -> R<()> {
    let held = index_keys(project, coll, index, doc);
    let present = indexed(txn, doc, &held.entries)?;
    for (k, unique) in &held.entries {
        // A bare unique key may belong to another row (one written while this index was
        // being built, before the build reached this row): only this row's own goes.
        if *unique && !owned_by(txn, k, doc)? {
            continue;
        }
        txn.del(INDEX, k.clone());
    }
    match present {
        true => adjust_counts(txn, &held, -1),
        false => Ok(()),
    }
}

pub(super) fn load_document(
    txn: &Txn,
    project: &str,
    coll: &Collection,
    id: &str,
) -> R<Option<Document>> {
    let k = keys::doc(project, &coll.database, &coll.id, id);
    match txn.get(DOCS, &k)? {
        Some(v) => Ok(Some(decode_document(coll, &k, &v)?)),
        None => Ok(None),
    }
}

/// The `$seq` index entry of the document with sequence `seq`.
pub(super) fn seq_key(project: &str, coll: &Collection, seq: u64) -> Vec<u8> {
    let mut k = keys::index_prefix(project, &coll.database, &coll.id, keys::SEQ_INDEX);
    k.extend_from_slice(&keys::seq_bytes(seq));
    k
}

/// The next run of a collection's `$seq` index after sequence `after`: at most `limit`
/// entries, as (sequence, document id), in sequence order — the bounded unit of work of the
/// chunked jobs (index builds, bulk changes by query).
pub(super) fn sequence_run(
    txn: &Txn,
    project: &str,
    coll: &Collection,
    after: u64,
    limit: usize,
) -> R<Vec<(u64, String)>> {
    let prefix = keys::index_prefix(project, &coll.database, &coll.id, keys::SEQ_INDEX);
    let from = seq_key(project, coll, after.saturating_add(1));
    txn.scan_from(INDEX, &prefix, &from, limit)?
        .into_iter()
        .map(|(k, v)| {
            let (seq, id) = keys::parse_entry_value(&v)
                .ok_or_else(|| Failure::Storage(crate::engine::corrupt(&k, "index entry")))?;
            Ok((seq, String::from_utf8_lossy(id).into_owned()))
        })
        .collect()
}

/// Writes a meta record only if there is none yet (a secret made once: concurrent first uses
/// agree on whichever applied first).
pub(super) fn put_if_absent(txn: &mut Txn, key: Vec<u8>, value: &[u8]) -> R<()> {
    if txn.get(META, &key)?.is_none() {
        txn.put(META, key, value.to_vec());
    }
    Ok(())
}
