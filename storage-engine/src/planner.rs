//! The query planner: picks one index whose leading columns the query's top-level filters
//! constrain (equality prefix, then at most one range), or a fulltext index for `search`,
//! or falls back to scanning the collection in `$sequence` order. Index results are only
//! candidates: the executor re-checks every filter on the documents it fetches.

use crate::keys::{self, SEQ_INDEX};
use model::query::{CmpOp, Filter, Spec};
use model::schema::{AttrKind, Collection, IndexKind, IndexStatus, Order};
use model::Value;

/// Which index to read and which key ranges of it (`[start, end)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub index: String,
    pub ranges: Vec<KeyRange>,
    /// Direct primary-key lookups (`equal("$id", …)`), instead of index ranges.
    pub ids: Vec<String>,
    /// Human-readable, for the debug log and for tests.
    pub describe: String,
}

impl Plan {
    pub fn is_scan(&self) -> bool {
        self.index == SEQ_INDEX
    }
}

const MAX_POINTS: usize = 1000;

/// `[start, end)` in the index column family.
type KeyRange = (Vec<u8>, Vec<u8>);

fn kind_of(coll: &Collection, attr: &str) -> Option<(AttrKind, bool)> {
    match attr {
        "$id" => Some((AttrKind::String, false)),
        "$createdAt" | "$updatedAt" => Some((AttrKind::Datetime, false)),
        "$sequence" => Some((AttrKind::Integer, false)),
        a => coll.attribute(a).map(|a| (a.kind, a.array)),
    }
}

/// The value as the index stores it for an attribute of `kind`, if it can be stored at all.
fn index_value(kind: AttrKind, v: &Value) -> Option<Value> {
    match (kind, v) {
        (AttrKind::Integer | AttrKind::Bigint, Value::Int(_)) => Some(v.clone()),
        (AttrKind::Integer | AttrKind::Bigint, Value::Float(f))
            if f.fract() == 0.0 && f.abs() < 9.007e15 =>
        {
            Some(Value::Int(*f as i64))
        }
        (AttrKind::Float, Value::Int(i)) => Some(Value::Float(*i as f64)),
        (AttrKind::Float, Value::Float(_)) => Some(v.clone()),
        (AttrKind::Boolean, Value::Bool(_)) => Some(v.clone()),
        (k, Value::Str(_)) if k.is_string() || k == AttrKind::Datetime => Some(v.clone()),
        _ => None,
    }
}

fn encoded(prefix: &[u8], v: &Value, order: Order) -> Vec<u8> {
    let mut k = prefix.to_vec();
    keys::encode_value(&mut k, v, order);
    k
}

/// Equality values a top-level filter pins `attr` to, if any.
fn equality<'a>(filters: &'a [Filter], attr: &str, array: bool) -> Option<&'a [Value]> {
    filters.iter().find_map(|f| match f {
        Filter::Cmp {
            attr: a,
            op: CmpOp::Equal,
            values,
        } if a == attr && !array => Some(values.as_slice()),
        Filter::Cmp {
            attr: a,
            op: CmpOp::Contains,
            values,
        } if a == attr && array => Some(values.as_slice()),
        _ => None,
    })
}

/// A key range for one range filter on an ascending column, under `prefix`.
fn range(
    filters: &[Filter],
    attr: &str,
    kind: AttrKind,
    prefix: &[u8],
) -> Option<(KeyRange, String)> {
    let null_end = keys::prefix_end(&encoded(prefix, &Value::Null, Order::Asc));
    let all_end = keys::prefix_end(prefix);
    for f in filters {
        match f {
            Filter::Cmp {
                attr: a,
                op,
                values,
            } if a == attr && values.len() == 1 => {
                let v = index_value(kind, &values[0]);
                let r = match (op, v) {
                    (CmpOp::GreaterThan, Some(v)) => (
                        keys::prefix_end(&encoded(prefix, &v, Order::Asc)),
                        all_end.clone(),
                    ),
                    (CmpOp::GreaterThanEqual, Some(v)) => {
                        (encoded(prefix, &v, Order::Asc), all_end.clone())
                    }
                    (CmpOp::LessThan, Some(v)) => {
                        (null_end.clone(), encoded(prefix, &v, Order::Asc))
                    }
                    (CmpOp::LessThanEqual, Some(v)) => (
                        null_end.clone(),
                        keys::prefix_end(&encoded(prefix, &v, Order::Asc)),
                    ),
                    (CmpOp::StartsWith, Some(Value::Str(s))) => {
                        let mut p = prefix.to_vec();
                        keys::encode_str_prefix(&mut p, &s);
                        let end = keys::prefix_end(&p);
                        (p, end)
                    }
                    _ => continue,
                };
                return Some((r, format!("range on {attr}")));
            }
            Filter::Between {
                attr: a,
                lo,
                hi,
                negate: false,
            } if a == attr => {
                let (Some(lo), Some(hi)) = (index_value(kind, lo), index_value(kind, hi)) else {
                    continue;
                };
                let r = (
                    encoded(prefix, &lo, Order::Asc),
                    keys::prefix_end(&encoded(prefix, &hi, Order::Asc)),
                );
                return Some((r, format!("range on {attr}")));
            }
            _ => {}
        }
    }
    None
}

/// Chooses how to find the candidates of `spec` in `coll`.
pub fn plan(project: &str, coll: &Collection, spec: &Spec) -> Plan {
    let filters = &spec.filters;
    // `equal("$id", …)` is a primary-key lookup: nothing is cheaper.
    for f in filters {
        if let Filter::Cmp {
            attr,
            op: CmpOp::Equal,
            values,
        } = f
        {
            if attr == "$id" && values.len() <= MAX_POINTS {
                let ids: Vec<String> = values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                return Plan {
                    index: "$id".to_string(),
                    ranges: Vec::new(),
                    describe: format!("primary key lookup ({} ids)", ids.len()),
                    ids,
                };
            }
        }
    }
    // Fulltext first: `search` cannot be answered by a scan-cheap index otherwise.
    for f in filters {
        if let Filter::Cmp {
            attr,
            op: CmpOp::Search,
            values,
        } = f
        {
            if let Some(index) = coll.indexes.iter().find(|i| {
                i.status == IndexStatus::Available
                    && i.kind == IndexKind::Fulltext
                    && i.attributes.len() == 1
                    && i.attributes[0] == *attr
            }) {
                let ip = keys::index_prefix(project, &coll.database, &coll.id, &index.key);
                let mut ranges = Vec::new();
                for v in values {
                    let toks = model::query::tokens(v.as_str().unwrap_or(""));
                    for (i, t) in toks.iter().enumerate() {
                        let mut k = ip.clone();
                        keys::encode_token(&mut k, t, i + 1 == toks.len());
                        let end = keys::prefix_end(&k);
                        ranges.push((k, end));
                    }
                }
                return Plan {
                    index: index.key.clone(),
                    describe: format!(
                        "fulltext index {} ({} token ranges)",
                        index.key,
                        ranges.len()
                    ),
                    ranges,
                    ids: Vec::new(),
                };
            }
        }
    }
    let mut best: Option<(u32, Plan)> = None;
    for index in coll
        .indexes
        .iter()
        .filter(|i| i.kind != IndexKind::Fulltext && i.status == IndexStatus::Available)
    {
        let ip = keys::index_prefix(project, &coll.database, &coll.id, &index.key);
        let mut prefixes = vec![ip];
        let mut eq_cols = 0;
        let mut usable = true;
        let mut range_used = None;
        for (pos, attr) in index.attributes.iter().enumerate() {
            let Some((kind, array)) = kind_of(coll, attr) else {
                usable = false;
                break;
            };
            let order = index.orders.get(pos).copied().unwrap_or(Order::Asc);
            if let Some(values) = equality(filters, attr, array) {
                let vals: Option<Vec<Value>> =
                    values.iter().map(|v| index_value(kind, v)).collect();
                let Some(vals) = vals else {
                    usable = eq_cols > 0;
                    break;
                };
                if prefixes.len().saturating_mul(vals.len()) > MAX_POINTS {
                    break;
                }
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| vals.iter().map(move |v| encoded(p, v, order)))
                    .collect();
                eq_cols += 1;
                continue;
            }
            if order == Order::Asc && !array {
                let ranges: Vec<_> = prefixes
                    .iter()
                    .filter_map(|p| range(filters, attr, kind, p))
                    .collect();
                if ranges.len() == prefixes.len() && !ranges.is_empty() {
                    range_used = Some(ranges);
                }
            }
            break;
        }
        if !usable || (eq_cols == 0 && range_used.is_none()) {
            continue;
        }
        let full_unique = index.kind == IndexKind::Unique && eq_cols == index.attributes.len();
        let score = if full_unique {
            1000
        } else {
            eq_cols as u32 * 10 + u32::from(range_used.is_some()) * 5
        };
        let (ranges, describe) = match range_used {
            Some(r) => {
                let what = r[0].1.clone();
                (
                    r.into_iter().map(|(r, _)| r).collect::<Vec<_>>(),
                    format!("index {} ({} equality columns, {what})", index.key, eq_cols),
                )
            }
            None => (
                prefixes
                    .iter()
                    .map(|p| {
                        // A fully pinned unique key is stored without the document id suffix.
                        let end = keys::prefix_end(p);
                        (p.clone(), end)
                    })
                    .collect(),
                format!("index {} ({} equality columns)", index.key, eq_cols),
            ),
        };
        let candidate = Plan {
            index: index.key.clone(),
            ranges,
            ids: Vec::new(),
            describe,
        };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, candidate));
        }
    }
    match best {
        Some((_, p)) => p,
        None => {
            let ip = keys::index_prefix(project, &coll.database, &coll.id, SEQ_INDEX);
            let end = keys::prefix_end(&ip);
            Plan {
                index: SEQ_INDEX.to_string(),
                ranges: vec![(ip, end)],
                ids: Vec::new(),
                describe: "full scan in $sequence order".to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::schema::{Attribute, Index};

    fn coll() -> Collection {
        let attr = |key: &str, kind| Attribute {
            size: Some(100),
            ..Attribute::new(key, kind, 0)
        };
        let index = |key: &str, kind, attrs: &[&str]| Index {
            key: key.into(),
            kind,
            attributes: attrs.iter().map(|s| s.to_string()).collect(),
            orders: vec![],
            lengths: vec![],
            status: Default::default(),
            created_at: 0,
            updated_at: 0,
        };
        Collection {
            id: "c".into(),
            database: "d".into(),
            name: "c".into(),
            enabled: true,
            permissions: vec![],
            document_security: false,
            attributes: vec![
                attr("name", AttrKind::String),
                attr("age", AttrKind::Integer),
                attr("city", AttrKind::String),
                attr("bio", AttrKind::String),
            ],
            indexes: vec![
                index("by_age", IndexKind::Key, &["age"]),
                index("by_city_age", IndexKind::Key, &["city", "age"]),
                index("by_name", IndexKind::Unique, &["name"]),
                index("bio_ft", IndexKind::Fulltext, &["bio"]),
            ],
            reshapes: vec![],
            created_at: 0,
            updated_at: 0,
        }
    }

    fn check(queries: &[&str], expect_index: &str) {
        let c = coll();
        let mut spec =
            Spec::parse(&queries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        spec.validate(&c).unwrap();
        let p = plan("p", &c, &spec);
        assert_eq!(p.index, expect_index, "{queries:?}: {}", p.describe);
    }

    #[test]
    fn chooses_indexes() {
        check(&[], SEQ_INDEX);
        check(
            &[r#"{"method":"equal","attribute":"age","values":[3]}"#],
            "by_age",
        );
        check(
            &[r#"{"method":"greaterThan","attribute":"age","values":[3]}"#],
            "by_age",
        );
        check(
            &[r#"{"method":"equal","attribute":"name","values":["x"]}"#],
            "by_name",
        );
        check(
            &[
                r#"{"method":"equal","attribute":"city","values":["Oslo"]}"#,
                r#"{"method":"between","attribute":"age","values":[1,5]}"#,
            ],
            "by_city_age",
        );
        check(
            &[r#"{"method":"search","attribute":"bio","values":["rust"]}"#],
            "bio_ft",
        );
        check(
            &[r#"{"method":"startsWith","attribute":"bio","values":["x"]}"#],
            SEQ_INDEX,
        );
        check(
            &[
                r#"{"method":"or","values":[{"method":"equal","attribute":"age","values":[1]},{"method":"equal","attribute":"age","values":[2]}]}"#,
            ],
            SEQ_INDEX,
        );
        // 2.5 can never equal an integer column value, so the index cannot answer it.
        check(
            &[r#"{"method":"equal","attribute":"age","values":[2.5]}"#],
            SEQ_INDEX,
        );
    }
}
