//! Related rows, loaded into a row's answer as Appwrite 1.8+ loads them: only where the
//! request selects them (`select(["author.*"])` for every column of the related rows,
//! `select(["author.name"])` for some), one level per dotted segment, three levels at most;
//! a single end as an object (or null), a list end as an array; the related rows' own
//! reference back to the row left out; and only rows the caller may read.

use crate::auth::Ctx;
use crate::common::Flavor;
use crate::error::ApiError;
use crate::render;
use model::query::{CmpOp, Filter, Spec};
use model::schema::{Collection, Document, Relationship};
use model::Value;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// Levels of rows an answer holds, the top one included (Appwrite's `RELATION_MAX_DEPTH`).
pub const MAX_DEPTH: usize = 3;
/// Related rows loaded for one end of one row, at most.
const MAX_RELATED: u64 = 5_000;

/// A selection split into this collection's own keys and, by relationship key, the paths
/// selected below it.
fn split(select: &[String]) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut own = Vec::new();
    let mut nested: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in select {
        match s.split_once('.') {
            Some((head, rest)) => nested
                .entry(head.to_string())
                .or_default()
                .push(rest.to_string()),
            None => own.push(s.clone()),
        }
    }
    (own, nested)
}

/// The rows related to `doc` through its end `key` (in `other`), as `ctx` may read
/// them: the ones it refers to, in its order, or the ones that refer to it.
fn related(
    ctx: &Ctx,
    other: &Collection,
    key: &str,
    rel: &Relationship,
    doc: &Document,
) -> Result<Vec<Document>, ApiError> {
    let rows = if rel.stored() {
        let ids = doc.related_ids(key);
        let mut out = Vec::new();
        for id in ids.iter().take(MAX_RELATED as usize) {
            if let Some(d) = ctx.view.document(&ctx.project, other, id)? {
                out.push(d);
            }
        }
        out
    } else {
        let twin_many = other
            .relation(&rel.two_way_key)
            .is_some_and(Relationship::many);
        let spec = Spec {
            filters: vec![Filter::Cmp {
                attr: rel.two_way_key.clone(),
                op: match twin_many {
                    true => CmpOp::Contains,
                    false => CmpOp::Equal,
                },
                values: vec![Value::Str(doc.id.clone())],
            }],
            limit: Some(MAX_RELATED),
            ..Spec::default()
        };
        ctx.view.find(&ctx.project, other, &spec, false)?.documents
    };
    Ok(match ctx.roles() {
        None => rows,
        Some(roles) => rows
            .into_iter()
            .filter(|r| other.grants(Some(r), "read", &roles))
            .collect(),
    })
}

/// What loading related rows for one answer keeps: who asks, in which vocabulary, and the
/// collections met so far (by id; `None` where one is gone).
struct Loader<'a> {
    ctx: &'a Ctx,
    f: Flavor,
    seen: BTreeMap<String, Option<Collection>>,
}

impl Loader<'_> {
    fn schema(&mut self, db: &str, id: &str) -> Result<Option<Collection>, ApiError> {
        if !self.seen.contains_key(id) {
            let c = self.ctx.view.collection(&self.ctx.project, db, id)?;
            self.seen.insert(id.to_string(), c);
        }
        Ok(self.seen.get(id).cloned().flatten())
    }

    /// `doc` of `coll` at `depth` (the row asked for is at 1), without the end `back` that
    /// led here, with what `select` asks for below it.
    fn render(
        &mut self,
        coll: &Collection,
        doc: &Document,
        select: Option<&[String]>,
        depth: usize,
        back: Option<&str>,
    ) -> Result<Json, ApiError> {
        let (own, nested) = select.map(split).unwrap_or_default();
        // Nothing of its own selected: all of it (as Appwrite reads `["author.*"]`).
        let outer = match own.is_empty() {
            true => None,
            false => Some(own.as_slice()),
        };
        let mut m = match render::document(doc, coll, self.f, outer) {
            Json::Object(m) => m,
            _ => Map::new(),
        };
        if let Some(b) = back {
            m.remove(b);
        }
        if depth >= MAX_DEPTH {
            // The deepest rows show no relationship at all.
            for key in coll.relations.keys() {
                m.remove(key);
            }
            return Ok(Json::Object(m));
        }
        for (key, paths) in nested {
            let Some(rel) = coll.relation(&key).filter(|r| r.visible()).cloned() else {
                continue;
            };
            let Some(other) = self.schema(&coll.database, &rel.related)? else {
                continue;
            };
            let sub: Vec<String> = paths.into_iter().filter(|p| p != "*").collect();
            let sub = match sub.is_empty() {
                true => None,
                false => Some(sub),
            };
            let rows = related(self.ctx, &other, &key, &rel, doc)?;
            let mut values = Vec::with_capacity(rows.len());
            for r in &rows {
                let back = Some(rel.two_way_key.as_str());
                values.push(self.render(&other, r, sub.as_deref(), depth + 1, back)?);
            }
            let value = match rel.many() {
                true => Json::Array(values),
                false => values.into_iter().next().unwrap_or(Json::Null),
            };
            m.insert(key, value);
        }
        Ok(Json::Object(m))
    }
}

/// Rows of `coll` as answered for `select`, their selected related rows loaded.
pub(crate) fn rows(
    ctx: &Ctx,
    f: Flavor,
    coll: &Collection,
    docs: &[Document],
    select: Option<&[String]>,
) -> Result<Vec<Json>, ApiError> {
    let loads = select.is_some_and(|s| s.iter().any(|x| x.contains('.')));
    if !loads {
        return Ok(docs
            .iter()
            .map(|d| render::document(d, coll, f, select))
            .collect());
    }
    let mut loader = Loader {
        ctx,
        f,
        seen: BTreeMap::new(),
    };
    docs.iter()
        .map(|d| loader.render(coll, d, select, 1, None))
        .collect()
}

/// Every visible relationship of `coll`, one level deep: what a write's answer loads.
pub(crate) fn everything(coll: &Collection) -> Option<Vec<String>> {
    let keys: Vec<String> = coll
        .relations
        .iter()
        .filter(|(_, r)| r.visible())
        .map(|(k, _)| format!("{k}.*"))
        .collect();
    match keys.is_empty() {
        true => None,
        false => Some(keys),
    }
}

/// Queries on related rows' fields (`equal("author.name", ["Ada"])`), taken out of a list's
/// filters before the rest are checked against the collection, by relationship key, each
/// with its path below the key (`name`). Only top-level filters: inside `and`/`or` a dotted
/// attribute stays and is refused as unknown, as Appwrite leaves them.
#[derive(Default)]
pub(crate) struct Across(Vec<(String, Vec<Filter>)>);

fn filter_attr(f: &mut Filter) -> Option<&mut String> {
    match f {
        Filter::Cmp { attr, .. }
        | Filter::Between { attr, .. }
        | Filter::Regex { attr, .. }
        | Filter::Spatial { attr, .. }
        | Filter::IsNull(attr)
        | Filter::IsNotNull(attr) => Some(attr),
        Filter::And(_) | Filter::Or(_) | Filter::Exists { .. } => None,
    }
}

pub(crate) fn take_across(c: &Collection, spec: &mut Spec) -> Across {
    let mut across = Across::default();
    let mut kept = Vec::new();
    for mut f in std::mem::take(&mut spec.filters) {
        let split = filter_attr(&mut f).and_then(|attr| {
            let (head, tail) = attr.split_once('.')?;
            c.relation(head).filter(|r| r.visible())?;
            let (head, tail) = (head.to_string(), tail.to_string());
            *attr = tail;
            Some(head)
        });
        match split {
            Some(head) => match across.0.iter_mut().find(|(k, _)| *k == head) {
                Some((_, fs)) => fs.push(f),
                None => across.0.push((head, vec![f])),
            },
            None => kept.push(f),
        }
    }
    spec.filters = kept;
    across
}

/// The filters on `c`'s own rows that the queries across relationships come to, as Appwrite
/// converts them (`convertRelationshipQueries`): the related rows matching them (those the
/// caller may read), then the rows referring to those (by the stored reference or list) or
/// referred to by them (a twin's stored reference or list, as `$id`s). `None` when no row
/// can match. Paths reach three levels with the row listed.
pub(crate) fn resolve_across(
    ctx: &Ctx,
    f: Flavor,
    c: &Collection,
    across: Across,
    depth: usize,
) -> Result<Option<Vec<Filter>>, ApiError> {
    let mut out = Vec::new();
    for (key, filters) in across.0 {
        let Some(rel) = c.relation(&key).cloned() else {
            continue;
        };
        let Some(other) = ctx
            .view
            .collection(&ctx.project, &c.database, &rel.related)?
        else {
            return Ok(None);
        };
        // A disabled table is not there for users and guests.
        if !other.enabled && !ctx.is_key() {
            return Ok(None);
        }
        let mut sub = Spec {
            filters,
            limit: Some(MAX_RELATED + 1),
            ..Spec::default()
        };
        let deeper = match depth + 1 < MAX_DEPTH {
            true => take_across(&other, &mut sub),
            false => Across::default(),
        };
        sub.validate(&other).map_err(|e| f.error(e))?;
        match resolve_across(ctx, f, &other, deeper, depth + 1)? {
            Some(more) => sub.filters.extend(more),
            None => return Ok(None),
        }
        if let Some(roles) = ctx.roles() {
            if !other.grants(None, "read", &roles) {
                if !other.document_security {
                    return Ok(None);
                }
                sub.filters.push(Filter::readable_by(roles));
            }
        }
        let rows = ctx.view.find(&ctx.project, &other, &sub, false)?.documents;
        if rows.len() as u64 > MAX_RELATED {
            return Err(f.error(model::Error::query(model::msg!(
                "Invalid query: More than {} related rows match the queries on \"{}\"; narrow them.",
                MAX_RELATED,
                key
            ))));
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let strs = |v: Vec<String>| v.into_iter().map(Value::Str).collect::<Vec<_>>();
        let ids: Vec<String> = rows.iter().map(|d| d.id.clone()).collect();
        out.push(match (rel.stored(), rel.many()) {
            // The row keeps the related id: rows referring to a match.
            (true, false) => Filter::Cmp {
                attr: key.clone(),
                op: CmpOp::Equal,
                values: strs(ids),
            },
            // The row keeps a list of related ids: rows listing a match.
            (true, true) => Filter::Cmp {
                attr: key.clone(),
                op: CmpOp::Contains,
                values: strs(ids),
            },
            // The related rows keep this row's id (or a list): the rows they name.
            (false, _) => {
                let mut parents: Vec<String> = Vec::new();
                for d in &rows {
                    parents.extend(d.related_ids(&rel.two_way_key));
                }
                parents.sort();
                parents.dedup();
                if parents.is_empty() {
                    return Ok(None);
                }
                Filter::Cmp {
                    attr: "$id".into(),
                    op: CmpOp::Equal,
                    values: strs(parents),
                }
            }
        });
    }
    Ok(Some(out))
}
