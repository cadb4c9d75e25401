//! The query planner. It picks one index and the key ranges of it that hold the candidates:
//! an index whose leading columns the top-level filters pin (equality prefix, then at most one
//! range), a fulltext index for `search`, primary-key lookups for `equal("$id", …)`, or the
//! built-in `$sequence` index. It says which filters those ranges decide exactly (the
//! executor checks the others on the rows it fetches), and whether the index's key order is
//! the query's order, so the executor can stream the ranges and stop after one page.
//!
//! Among indexes it prefers the one that decides the most filters, then the one that also
//! serves the order; an index that only serves the order is used when no index serves the
//! filters. Where the runs of pinned values an index would read keep counts, the executor
//! lets those counts break a tie (`plan_counted`): a user's list filtered on a
//! column that half the table shares reads the user's `$read` runs instead, when they are
//! far smaller. A plan never changes a result, only its cost.

use crate::keys::{self, SEQ_INDEX};
use model::query::{CmpOp, Filter, Spec};
use model::schema::{AttrKind, Collection, IndexKind, IndexStatus, Order};
use model::Value;

/// Which index to read, which key ranges of it, and what the executor may rely on.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub index: String,
    pub ranges: Vec<KeyRange>,
    /// Direct primary-key lookups (`equal("$id", …)`), instead of index ranges.
    pub ids: Vec<String>,
    /// Positions in `spec.filters` of the filters the ranges decide exactly.
    pub decided: Vec<usize>,
    /// The index columns after the equality prefix, in key order: the executor reads group
    /// values and cursor positions out of them.
    pub columns: Vec<(String, Order)>,
    /// A unique index: an entry whose values are all non-null has no sequence suffix.
    pub unique: bool,
    /// One document may have several entries (an array column, a fulltext index).
    pub multi: bool,
    /// How the index order serves the query order, if it does.
    pub order: Option<Served>,
    /// Human-readable, for the debug log and for tests.
    pub describe: String,
}

/// `[start, end)` in the index column family; the first `fixed` bytes are the same for every
/// key of the range (index prefix and pinned values).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub fixed: usize,
    /// The key of the count of this range's documents, when the range is exactly a run of
    /// pinned values (`keys::count_key`).
    pub count: Option<Vec<u8>>,
}

/// Entries come out in query order when each range is read `reverse`d or not, grouped by the
/// first `group` columns, each group in `$sequence` order (descending if `seq_desc`). When
/// `full`, a group is one whole tuple of values, whose entries already lie in sequence order
/// in the index; otherwise the executor sorts each group's entries by sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub reverse: bool,
    pub group: usize,
    pub full: bool,
    pub seq_desc: bool,
}

impl Plan {
    pub fn is_scan(&self) -> bool {
        self.index == SEQ_INDEX
    }

    /// Do the ranges alone decide every filter of `spec`?
    pub fn exact(&self, spec: &Spec) -> bool {
        self.ids.is_empty() && self.decided.len() == spec.filters.len()
    }
}

const MAX_POINTS: usize = 1000;

/// `[start, end)` of one range filter.
type Bounds = (Vec<u8>, Vec<u8>);

fn kind_of(coll: &Collection, attr: &str) -> Option<(AttrKind, bool)> {
    match attr {
        "$id" => Some((AttrKind::String, false)),
        "$createdAt" | "$updatedAt" => Some((AttrKind::Datetime, false)),
        "$sequence" => Some((AttrKind::Integer, false)),
        model::schema::READ_ROLES => Some((AttrKind::String, true)),
        // A relationship's stored end: the related id, or a manyToMany parent's list of them.
        a if coll.relation(a).is_some() => {
            Some((AttrKind::String, coll.relation(a).is_some_and(|r| r.many())))
        }
        a => coll.attribute(a).map(|a| (a.kind, a.array)),
    }
}

/// The value as the index stores it for an attribute of `kind`, if it can be stored at all
/// (and so compared exactly by its bytes).
fn index_value(kind: AttrKind, v: &Value) -> Option<Value> {
    match (kind, v) {
        (AttrKind::Integer | AttrKind::Bigint, Value::Int(_)) => Some(v.clone()),
        // -0.0 is not loosely equal to 0 (floats compare by `total_cmp`), so no integer
        // key stands for it.
        (AttrKind::Integer | AttrKind::Bigint, Value::Float(f))
            if f.fract() == 0.0 && f.abs() < 9.007e15 && !(*f == 0.0 && f.is_sign_negative()) =>
        {
            Some(Value::Int(*f as i64))
        }
        (AttrKind::Float, Value::Int(i)) if i.unsigned_abs() < (1 << 53) => {
            Some(Value::Float(*i as f64))
        }
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

/// The values an `or` of equalities on one attribute accepts (`or(equal(a,1), equal(a,2))`
/// is `equal(a,[1,2])`).
fn or_values<'a>(f: &'a Filter, attr: &str, op: CmpOp, out: &mut Vec<&'a Value>) -> bool {
    match f {
        Filter::Or(fs) => !fs.is_empty() && fs.iter().all(|f| or_values(f, attr, op, out)),
        Filter::Cmp {
            attr: a,
            op: o,
            values,
        } if a == attr && *o == op => {
            out.extend(values.iter());
            true
        }
        _ => false,
    }
}

/// The first top-level filter not yet `used` that pins `attr` to a set of values: its
/// position and the values.
fn equality<'a>(
    filters: &'a [Filter],
    used: &[usize],
    attr: &str,
    array: bool,
) -> Option<(usize, Vec<&'a Value>)> {
    let op = if array { CmpOp::Contains } else { CmpOp::Equal };
    filters.iter().enumerate().find_map(|(i, f)| {
        if used.contains(&i) {
            return None;
        }
        let mut values = Vec::new();
        (matches!(f, Filter::Cmp { .. } | Filter::Or(_)) && or_values(f, attr, op, &mut values))
            .then_some((i, values))
    })
}

/// A key range for one range filter on an ascending column, under `prefix`: the filter's
/// position and the range.
fn range(
    filters: &[Filter],
    used: &[usize],
    attr: &str,
    kind: AttrKind,
    prefix: &[u8],
) -> Option<(usize, Bounds)> {
    let null_end = keys::prefix_end(&encoded(prefix, &Value::Null, Order::Asc));
    let all_end = keys::prefix_end(prefix);
    for (i, f) in filters.iter().enumerate() {
        if used.contains(&i) {
            continue;
        }
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
                return Some((i, r));
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
                return Some((i, r));
            }
            _ => {}
        }
    }
    None
}

/// The query's orders without a trailing `$sequence` order, and the direction of the
/// `$sequence` tie-break (ascending unless the query orders by `$sequence` last). `None` if
/// the orders name `$sequence` or `$id` elsewhere: no index but the primary keys has those.
fn split_orders(spec: &Spec) -> Option<(&[(String, Order)], bool)> {
    if spec.random.is_some() {
        // A shuffle: no index holds that order.
        return None;
    }
    let (orders, seq_desc) = match spec.orders.split_last() {
        Some(((attr, order), rest)) if attr == "$sequence" => (rest, *order == Order::Desc),
        _ => (spec.orders.as_slice(), false),
    };
    let named = |a: &str| orders.iter().any(|(attr, _)| attr == a);
    (!named("$sequence") && !named("$id")).then_some((orders, seq_desc))
}

/// How an index whose remaining columns are `columns` serves the query order.
fn serves(spec: &Spec, columns: &[(String, Order, bool)]) -> Option<Served> {
    let (orders, seq_desc) = split_orders(spec)?;
    if orders.len() > columns.len() {
        return None;
    }
    let mut reverse = None;
    for ((attr, order), (col, col_order, array)) in orders.iter().zip(columns) {
        if attr != col || *array {
            return None;
        }
        let flipped = order != col_order;
        if *reverse.get_or_insert(flipped) != flipped {
            return None;
        }
    }
    let full = orders.len() == columns.len();
    Some(Served {
        // With no orders, read in the direction the sequence order goes.
        reverse: reverse.unwrap_or(full && seq_desc),
        group: orders.len(),
        full,
        seq_desc,
    })
}

/// How much a served order is worth: streaming whole tuples beats sorting groups, which beats
/// sorting the whole range by sequence.
fn order_rank(served: Option<Served>) -> u32 {
    match served {
        Some(s) if s.full => 3,
        Some(s) if s.group > 0 => 2,
        Some(_) => 1,
        None => 0,
    }
}

/// How to find the candidates of `spec` in `coll`, by the static choice alone (the executor
/// always has counts: `plan_counted`).
#[cfg(test)]
pub fn plan(project: &str, coll: &Collection, spec: &Spec) -> Plan {
    choose(project, coll, spec, None)
}

/// The sum of the stored counts under some count keys.
pub type Counts<'a> = &'a dyn Fn(&[&[u8]]) -> u64;

/// How much cheaper (in entries read) a counted plan must be to overrule the static choice:
/// counts say nothing of a streamed plan stopping after one page, so only a clear win counts.
const COUNTED_WIN: u64 = 4;

/// Chooses how to find the candidates of `spec` in `coll`, with `count` (the sum of stored
/// counts under some count keys) to break ties between plans that read counted runs only
/// (`tie_by_counts`).
pub fn plan_counted(project: &str, coll: &Collection, spec: &Spec, count: Counts) -> Plan {
    choose(project, coll, spec, Some(count))
}

/// The count keys of every range of `p`, when each range is a counted run.
fn counted(p: &Plan) -> Option<Vec<&[u8]>> {
    if p.ranges.is_empty() || !p.ids.is_empty() {
        return None;
    }
    p.ranges.iter().map(|r| r.count.as_deref()).collect()
}

fn choose(project: &str, coll: &Collection, spec: &Spec, count: Option<Counts>) -> Plan {
    let filters = &spec.filters;
    // `equal("$id", …)` is a primary-key lookup: nothing is cheaper.
    for (i, f) in filters.iter().enumerate() {
        if let Filter::Cmp {
            attr,
            op: CmpOp::Equal,
            values,
        } = f
        {
            if attr == "$id" && values.len() <= MAX_POINTS {
                let mut ids: Vec<String> = values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                ids.sort();
                ids.dedup();
                return Plan {
                    index: "$id".to_string(),
                    ranges: Vec::new(),
                    describe: format!("primary key lookup ({} ids)", ids.len()),
                    ids,
                    decided: vec![i],
                    columns: Vec::new(),
                    unique: true,
                    multi: false,
                    order: None,
                };
            }
        }
    }
    // Fulltext first: `search` cannot be answered by a scan-cheap index otherwise. The token
    // ranges hold candidates; the executor checks the search itself on each.
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
                        ranges.push(KeyRange {
                            fixed: ip.len(),
                            start: k,
                            end,
                            count: None,
                        });
                    }
                }
                // Only the sequence order is served: by sorting each token range.
                let order = split_orders(spec)
                    .filter(|(orders, _)| orders.is_empty())
                    .map(|(_, seq_desc)| Served {
                        reverse: false,
                        group: 0,
                        full: false,
                        seq_desc,
                    });
                return Plan {
                    index: index.key.clone(),
                    describe: format!(
                        "fulltext index {} ({} token ranges)",
                        index.key,
                        ranges.len()
                    ),
                    ranges: dedup(ranges),
                    ids: Vec::new(),
                    decided: Vec::new(),
                    columns: Vec::new(),
                    unique: false,
                    multi: true,
                    order,
                };
            }
        }
    }
    let mut candidates: Vec<((u32, u32), Plan)> = Vec::new();
    for index in coll
        .indexes
        .iter()
        .filter(|i| {
            !matches!(i.kind, IndexKind::Fulltext | IndexKind::Spatial)
                && i.status == IndexStatus::Available
        })
        .chain(std::iter::once(model::schema::read_index()))
        .chain(coll.relation_indexes().iter())
    {
        let ip = keys::index_prefix(project, &coll.database, &coll.id, &index.key);
        let mut prefixes = vec![ip.clone()];
        let mut decided = Vec::new();
        let mut eq_cols = 0;
        let mut usable = true;
        let mut range_used = None;
        let mut multi = false;
        let mut cols = Vec::new();
        for (pos, attr) in index.attributes.iter().enumerate() {
            let Some((kind, array)) = kind_of(coll, attr) else {
                usable = false;
                break;
            };
            multi |= array;
            let order = index.orders.get(pos).copied().unwrap_or(Order::Asc);
            cols.push((attr.clone(), order, array, kind));
        }
        if !usable {
            continue;
        }
        for (attr, order, array, kind) in &cols {
            let kind = *kind;
            if let Some((at, values)) = equality(filters, &decided, attr, *array) {
                // A value the column can never hold matches nothing through this index; the
                // filter stays for the executor (it matches nothing there either).
                let vals: Option<Vec<Value>> =
                    values.iter().map(|v| index_value(kind, v)).collect();
                let Some(mut vals) = vals else {
                    break;
                };
                vals.sort_by(|a, b| a.total_cmp(b));
                vals.dedup_by(|a, b| a.loose_eq(b));
                if prefixes.len().saturating_mul(vals.len()) > MAX_POINTS {
                    break;
                }
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| vals.iter().map(move |v| encoded(p, v, *order)))
                    .collect();
                decided.push(at);
                eq_cols += 1;
                continue;
            }
            if *order == Order::Asc && !array {
                let ranges: Vec<_> = prefixes
                    .iter()
                    .filter_map(|p| range(filters, &decided, attr, kind, p))
                    .collect();
                if ranges.len() == prefixes.len() && !ranges.is_empty() {
                    decided.push(ranges[0].0);
                    range_used = Some(ranges.into_iter().map(|(_, r)| r).collect::<Vec<_>>());
                }
            }
            break;
        }
        let columns: Vec<(String, Order, bool)> = cols[eq_cols..]
            .iter()
            .map(|(a, o, arr, _)| (a.clone(), *o, *arr))
            .collect();
        let served = serves(spec, &columns);
        let full_unique = index.kind == IndexKind::Unique && eq_cols == index.attributes.len();
        let filter_score = if full_unique {
            1000
        } else {
            eq_cols as u32 * 10 + u32::from(range_used.is_some()) * 5
        };
        // An index that decides no filter is worth reading only for its order, and only when
        // that order needs no sorting of the whole index.
        let rank = order_rank(served);
        if filter_score == 0 && rank < 2 {
            continue;
        }
        let ranges: Vec<KeyRange> = match range_used {
            Some(r) => prefixes
                .iter()
                .zip(r)
                .map(|(p, (start, end))| KeyRange {
                    fixed: p.len(),
                    start,
                    end,
                    count: None,
                })
                .collect(),
            // The whole index, for its order: its entries, not the counts before them.
            None if eq_cols == 0 => vec![KeyRange {
                fixed: ip.len(),
                start: [ip.as_slice(), &[keys::COUNT_TAG + 1]].concat(),
                end: keys::prefix_end(&ip),
                count: None,
            }],
            None => prefixes
                .iter()
                .map(|p| KeyRange {
                    fixed: p.len(),
                    start: p.clone(),
                    end: keys::prefix_end(p),
                    count: Some(keys::count_key(&ip, &p[ip.len()..])),
                })
                .collect(),
        };
        let describe = format!(
            "index {} ({} equality columns{}{}, {} ranges)",
            index.key,
            eq_cols,
            if decided.len() > eq_cols {
                ", a range"
            } else {
                ""
            },
            match served {
                Some(s) if s.full => ", streams the order",
                Some(s) if s.group > 0 => ", sorts groups by sequence",
                Some(_) => ", sorts by sequence",
                None => ", sorts rows",
            },
            ranges.len()
        );
        let candidate = Plan {
            index: index.key.clone(),
            ranges: dedup(ranges),
            ids: Vec::new(),
            decided,
            columns: columns.into_iter().map(|(a, o, _)| (a, o)).collect(),
            unique: index.kind == IndexKind::Unique,
            multi,
            order: served,
            describe,
        };
        candidates.push(((filter_score, rank), candidate));
    }
    // The first of the best scores: index order breaks a static tie, counts may break it again.
    let mut best: Option<usize> = None;
    for (i, (score, _)) in candidates.iter().enumerate() {
        if best.is_none_or(|b| *score > candidates[b].0) {
            best = Some(i);
        }
    }
    if let (Some(count), Some(b)) = (count, best) {
        best = Some(tie_by_counts(&mut candidates, b, count));
    }
    let scan = || {
        let ip = keys::index_prefix(project, &coll.database, &coll.id, SEQ_INDEX);
        let end = keys::prefix_end(&ip);
        let order = serves(spec, &[]);
        Plan {
            index: SEQ_INDEX.to_string(),
            ranges: vec![KeyRange {
                fixed: ip.len(),
                start: ip,
                end,
                count: None,
            }],
            ids: Vec::new(),
            decided: Vec::new(),
            columns: Vec::new(),
            unique: false,
            multi: false,
            order,
            describe: match order {
                Some(_) => "full scan in $sequence order, streamed",
                None => "full scan in $sequence order, sorts rows",
            }
            .to_string(),
        }
    };
    let best = best.map(|b| candidates.swap_remove(b));
    if matches!(best, Some(((0, _), _)) | None) {
        if let Some(p) = spatial(project, coll, spec) {
            return p;
        }
    }
    match best {
        // The sequence order itself beats an index that decides nothing.
        Some(((0, _), _)) if serves(spec, &[]).is_some() => scan(),
        Some((_, p)) => p,
        None => scan(),
    }
}

/// A spatial index over the column of a spatial filter the grid can narrow (a relation that
/// needs the geometries to meet, or a distance below a bound), when no other index decides a
/// filter: the grid cells that cover the query's box, at every level; candidates only (the
/// executor checks the relation on each).
fn spatial(project: &str, coll: &Collection, spec: &Spec) -> Option<Plan> {
    use model::spatial::{DistanceCmp, Relation};
    spec.filters.iter().find_map(|f| {
        let Filter::Spatial {
            attr,
            relation,
            geometry,
            negate: false,
        } = f
        else {
            return None;
        };
        let grow = match relation {
            Relation::Distance {
                cmp: DistanceCmp::Equal | DistanceCmp::LessThan,
                distance,
                meters,
            } => Some((distance.max(0.0), *meters)),
            Relation::Distance { .. } => return None,
            _ => None,
        };
        let index = coll.indexes.iter().find(|i| {
            i.kind == IndexKind::Spatial
                && i.status == IndexStatus::Available
                && i.attributes.first() == Some(attr)
        })?;
        let area = crate::cells::query_box(&model::spatial::geometry(geometry)?, grow)?;
        let ip = keys::index_prefix(project, &coll.database, &coll.id, &index.key);
        let mut ranges = Vec::new();
        for level in 0..=crate::cells::MAX_LEVEL {
            for (start, end) in crate::cells::cover(&area, level) {
                ranges.push(KeyRange {
                    fixed: ip.len() + 1,
                    start: keys::cell_key(&ip, level, start),
                    end: keys::cell_key(&ip, level, end),
                    count: None,
                });
            }
        }
        Some(Plan {
            index: index.key.clone(),
            describe: format!("spatial index {} ({} cell runs)", index.key, ranges.len()),
            ranges,
            ids: Vec::new(),
            decided: Vec::new(),
            columns: Vec::new(),
            unique: false,
            multi: true,
            order: None,
        })
    })
}

/// Among the plans scoring the same as `candidates[best]` (as many filters decided, the
/// order served as well: a plan that streams one page is not traded for one that sorts every
/// match), the one whose counted runs hold the fewest entries, if under a quarter of the
/// static choice's; else `best`. A unique lookup (score 1000) is never second-guessed.
fn tie_by_counts(candidates: &mut [((u32, u32), Plan)], best: usize, count: Counts) -> usize {
    let (score, chosen) = &candidates[best];
    if !(1..1000).contains(&score.0) {
        return best;
    }
    let Some(mine) = counted(chosen) else {
        return best;
    };
    let base = count(&mine);
    let mut pick: Option<(u64, usize)> = None;
    for (i, (s, alt)) in candidates.iter().enumerate() {
        if i == best || s != score {
            continue;
        }
        let Some(keys) = counted(alt) else {
            continue;
        };
        let n = count(&keys);
        if n.saturating_mul(COUNTED_WIN) < base && pick.is_none_or(|(m, _)| n < m) {
            pick = Some((n, i));
        }
    }
    let Some((n, i)) = pick else {
        return best;
    };
    let p = &mut candidates[i].1;
    p.describe = format!("{} (chosen by counts: {n} entries, not {base})", p.describe);
    i
}

/// Ranges in key order, each once (`equal("a", [1, 1])` reads one range).
fn dedup(mut ranges: Vec<KeyRange>) -> Vec<KeyRange> {
    ranges.sort_by(|a, b| a.start.cmp(&b.start).then(a.end.cmp(&b.end)));
    ranges.dedup();
    ranges
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
            relations: Default::default(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn plan_of(queries: &[&str]) -> Plan {
        let c = coll();
        let mut spec =
            Spec::parse(&queries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        spec.validate(&c).unwrap();
        plan("p", &c, &spec)
    }

    #[test]
    fn says_how_the_index_order_serves_the_query_order() {
        let served = |q: &[&str]| plan_of(q).order;
        let city = r#"{"method":"equal","attribute":"city","values":["Oslo","Rome"]}"#;
        // No order: the sequence order of each city's whole range, which has an age column
        // between the city and the sequence, so each range is sorted by sequence.
        assert_eq!(
            served(&[city]),
            Some(Served {
                reverse: false,
                group: 0,
                full: false,
                seq_desc: false
            })
        );
        // Ordered by age descending on an ascending column: read backwards, each age's
        // entries still by sequence ascending (Appwrite's tie order).
        let p = plan_of(&[city, r#"{"method":"orderDesc","attribute":"age"}"#]);
        assert_eq!(
            p.order,
            Some(Served {
                reverse: true,
                group: 1,
                full: true,
                seq_desc: false
            })
        );
        assert_eq!(p.ranges.len(), 2);
        assert_eq!(p.decided, vec![0]);
        // `$sequence` last sets the tie direction; `$id` is no index's order.
        let p = plan_of(&[
            r#"{"method":"orderAsc","attribute":"age"}"#,
            r#"{"method":"orderDesc","attribute":"$sequence"}"#,
        ]);
        assert_eq!(
            (p.index.as_str(), p.order.map(|s| s.seq_desc)),
            ("by_age", Some(true))
        );
        assert_eq!(
            served(&[r#"{"method":"orderAsc","attribute":"$id"}"#]),
            None
        );
        assert_eq!(
            served(&[r#"{"method":"orderDesc","attribute":"$sequence"}"#]),
            Some(Served {
                reverse: true,
                group: 0,
                full: true,
                seq_desc: true
            })
        );
        // A filter the ranges do not decide stays for the executor.
        let p = plan_of(&[
            r#"{"method":"equal","attribute":"age","values":[3]}"#,
            r#"{"method":"startsWith","attribute":"city","values":["O"]}"#,
        ]);
        assert_eq!((p.index.as_str(), p.decided.clone()), ("by_age", vec![0]));
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
        // An `or` of equalities on one column is an `in`: two ranges of the index.
        check(
            &[
                r#"{"method":"or","values":[{"method":"equal","attribute":"age","values":[1]},{"method":"equal","attribute":"age","values":[2]}]}"#,
            ],
            "by_age",
        );
        check(
            &[
                r#"{"method":"or","values":[{"method":"equal","attribute":"age","values":[1]},{"method":"equal","attribute":"city","values":["x"]}]}"#,
            ],
            SEQ_INDEX,
        );
        // An index that decides no filter is still read for its order.
        check(&[r#"{"method":"orderDesc","attribute":"age"}"#], "by_age");
        // The index that serves both the filter and the order wins over one that serves the
        // filter alone.
        check(
            &[
                r#"{"method":"equal","attribute":"city","values":["Oslo"]}"#,
                r#"{"method":"orderAsc","attribute":"age"}"#,
            ],
            "by_city_age",
        );
        // 2.5 can never equal an integer column value, so the index cannot answer it.
        check(
            &[r#"{"method":"equal","attribute":"age","values":[2.5]}"#],
            SEQ_INDEX,
        );
    }

    #[test]
    fn stored_counts_overrule_a_close_call_only_by_a_clear_margin() {
        let c = coll();
        let mut spec =
            Spec::parse(&[r#"{"method":"equal","attribute":"age","values":[30]}"#.to_string()])
                .unwrap();
        spec.validate(&c).unwrap();
        spec.filters.push(Filter::readable_by([
            "any".to_string(),
            "user:u".to_string(),
        ]));
        // Statically a tie (one equality column each, both in sequence order): the first
        // index, the age's.
        assert_eq!(plan("p", &c, &spec).index, "by_age");
        let read_prefix = keys::index_prefix("p", "d", "c", model::schema::READ_ROLES);
        let by = |age: u64, read: u64| {
            let read_prefix = read_prefix.clone();
            move |ks: &[&[u8]]| -> u64 {
                ks.iter()
                    .map(|k| match k.starts_with(&read_prefix) {
                        true => read,
                        false => age,
                    })
                    .sum()
            }
        };
        // The user's two role runs hold 2 × 10 entries, the age's 1,000: the roles win.
        let p = plan_counted("p", &c, &spec, &by(1000, 10));
        assert_eq!(p.index, model::schema::READ_ROLES, "{}", p.describe);
        assert_eq!(p.ranges.len(), 2);
        assert!(
            p.describe
                .contains("chosen by counts: 20 entries, not 1000"),
            "{}",
            p.describe
        );
        // 2 × 200 = 400 is not under a quarter of 1,000: the static choice stays.
        assert_eq!(plan_counted("p", &c, &spec, &by(1000, 200)).index, "by_age");
        // Nor is a plan that streams the order traded for one that would sort every match:
        // statically the user's runs win over the city's (an age column sits between the
        // city and the sequence), and tiny city counts do not change that.
        let mut city =
            Spec::parse(
                &[r#"{"method":"equal","attribute":"city","values":["Oslo"]}"#.to_string()],
            )
            .unwrap();
        city.validate(&c).unwrap();
        city.filters.push(Filter::readable_by(["any".to_string()]));
        assert_eq!(plan("p", &c, &city).index, model::schema::READ_ROLES);
        assert_eq!(
            plan_counted("p", &c, &city, &by(1, 1000)).index,
            model::schema::READ_ROLES
        );
        // A unique lookup is never second-guessed.
        let mut unique =
            Spec::parse(&[r#"{"method":"equal","attribute":"name","values":["Ann"]}"#.to_string()])
                .unwrap();
        unique.validate(&c).unwrap();
        unique
            .filters
            .push(Filter::readable_by(["any".to_string()]));
        assert_eq!(
            plan_counted("p", &c, &unique, &by(1000, 0)).index,
            "by_name"
        );
    }
}
