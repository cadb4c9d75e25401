//! Appwrite queries: the JSON strings the SDKs' `Query.*` helpers build, parsed into a typed
//! form, validated against a collection's schema, and evaluated against documents.

use crate::error::{Error, Result};
use crate::msg;
use crate::schema::{AttrKind, Collection, Document, IndexKind, Order};
use crate::spatial::{self, DistanceCmp, Relation};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

pub const MAX_QUERIES: usize = 100;
pub const MAX_QUERY_LEN: usize = 4096;
pub const MAX_LIMIT: u64 = 5000;
/// Levels of `and`/`or` one query may nest.
pub const MAX_DEPTH: usize = 8;
pub const DEFAULT_LIMIT: u64 = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Equal,
    NotEqual,
    LessThan,
    LessThanEqual,
    GreaterThan,
    GreaterThanEqual,
    StartsWith,
    EndsWith,
    NotStartsWith,
    NotEndsWith,
    Contains,
    /// Every value is contained (array elements, or substrings).
    ContainsAll,
    NotContains,
    Search,
    NotSearch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Filter {
    Cmp {
        attr: String,
        op: CmpOp,
        values: Vec<Value>,
    },
    Between {
        attr: String,
        lo: Value,
        hi: Value,
        negate: bool,
    },
    IsNull(String),
    IsNotNull(String),
    And(#[serde(deserialize_with = "crate::nesting::nested")] Vec<Filter>),
    Or(#[serde(deserialize_with = "crate::nesting::nested")] Vec<Filter>),
    // Appended, never inserted: commands in the log carry the variant's index.
    /// `regex`: the value matches the pattern somewhere.
    Regex {
        attr: String,
        pattern: Pattern,
    },
    /// `exists` (`negate` false): at least one of the attributes holds a value; `notExists`:
    /// at least one of them holds none. A row of a table has every column, so "present" is
    /// "not null" here (Appwrite's schemaless adapters, the only ones that take these
    /// queries, test whether a field is in the document at all).
    Exists {
        attrs: Vec<String>,
        negate: bool,
    },
    /// A spatial relation between the column's geometry and `geometry` (the coordinates as
    /// sent); `negate` for the `not…` methods. Where the relation is undefined (MariaDB's
    /// NULL) neither matches.
    Spatial {
        attr: String,
        relation: Relation,
        geometry: Value,
        negate: bool,
    },
}

/// A `regex` pattern, compiled once. Matching is case-insensitive, as MariaDB's `REGEXP` is
/// under the case-insensitive collation Appwrite gives its tables, and runs in time linear in
/// the text (the `regex` crate has no backtracking), so no pattern can stall a list.
#[derive(Clone, Debug)]
pub struct Pattern(regex::Regex);

/// The largest compiled pattern a query may give, in bytes, and the most memory its lazy DFA
/// may take while matching: a short pattern such as `\w{1000}{1000}` compiles to far more.
const PATTERN_SIZE_LIMIT: usize = 256 << 10;
const PATTERN_DFA_LIMIT: usize = 1 << 20;

impl Pattern {
    /// A pattern a request gives, within the limits above.
    pub fn new(source: &str) -> std::result::Result<Pattern, regex::Error> {
        regex::RegexBuilder::new(source)
            .case_insensitive(true)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_DFA_LIMIT)
            .build()
            .map(Pattern)
    }

    /// A pattern read back (from the log, a remembered outcome): it passed `new` when it was
    /// given, so it is compiled under the crate's default limits (larger than ours), which a
    /// later change of ours cannot make refuse it.
    fn stored(source: &str) -> std::result::Result<Pattern, regex::Error> {
        regex::RegexBuilder::new(source)
            .case_insensitive(true)
            .dfa_size_limit(PATTERN_DFA_LIMIT)
            .build()
            .map(Pattern)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Pattern, D::Error> {
        let source = String::deserialize(d)?;
        Pattern::stored(&source).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Cursor {
    After(String),
    Before(String),
}

/// One parsed query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Query {
    Filter(Filter),
    Select(Vec<String>),
    OrderBy(String, Order),
    OrderRandom,
    Limit(u64),
    Offset(u64),
    Cursor(Cursor),
}

/// A list request, assembled from its queries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub filters: Vec<Filter>,
    pub select: Option<Vec<String>>,
    pub orders: Vec<(String, Order)>,
    pub limit: Option<u64>,
    pub offset: u64,
    pub cursor: Option<Cursor>,
    /// `orderRandom`: the seed of this request's shuffle, and how many of `orders` came before
    /// it (those still sort; the shuffle decides among their ties, so any order after it
    /// never does). Never carried in a command: a write that picks rows at random picks them
    /// where the request arrives, and a transaction refuses it (see `Spec::random_order`).
    #[serde(skip)]
    pub random: Option<(u64, usize)>,
}

fn invalid(msg: impl Into<crate::error::Message>) -> Error {
    Error::query(msg.into().prefixed("Invalid query: "))
}

impl Query {
    /// Parses one query string as the SDKs send it.
    pub fn parse(s: &str) -> Result<Query> {
        if s.len() > MAX_QUERY_LEN {
            return Err(invalid(msg!(
                "Query is longer than {} characters",
                MAX_QUERY_LEN
            )));
        }
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|_| invalid(msg!("Syntax error: {}", s)))?;
        Query::from_json(&v)
    }

    fn from_json(v: &serde_json::Value) -> Result<Query> {
        let obj = v
            .as_object()
            .ok_or_else(|| invalid("Query must be an object"))?;
        let method = obj
            .get("method")
            .and_then(|m| m.as_str())
            .ok_or_else(|| invalid("Query method is missing"))?;
        let attr = match obj.get("attribute") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("Query attribute must be a string")),
        };
        let raw_values: Vec<serde_json::Value> = match obj.get("values") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a.clone(),
            Some(other) => vec![other.clone()],
        };
        let values = || -> Result<Vec<Value>> {
            raw_values
                .iter()
                .map(|v| {
                    Value::from_json(v).ok_or_else(|| invalid(msg!("Invalid value for {}", method)))
                })
                .collect()
        };
        let need_attr = || -> Result<String> {
            if attr.is_empty() {
                Err(invalid(msg!("{} queries require an attribute", method)))
            } else {
                Ok(attr.clone())
            }
        };
        let cmp = |op: CmpOp| -> Result<Query> {
            let values = values()?;
            if values.is_empty() {
                return Err(invalid(msg!(
                    "{} queries require at least one value",
                    method
                )));
            }
            if values.len() > MAX_QUERIES {
                return Err(invalid(msg!(
                    "{} queries accept at most {} values",
                    method,
                    MAX_QUERIES
                )));
            }
            Ok(Query::Filter(Filter::Cmp {
                attr: need_attr()?,
                op,
                values,
            }))
        };
        let single_int = || -> Result<u64> {
            match raw_values.as_slice() {
                [n] => n
                    .as_u64()
                    .ok_or_else(|| invalid(msg!("{} must be a non-negative integer", method))),
                _ => Err(invalid(msg!("{} queries take exactly one value", method))),
            }
        };
        let nested = || -> Result<Vec<Filter>> {
            if raw_values.is_empty() {
                return Err(invalid(msg!("{} queries require nested queries", method)));
            }
            raw_values
                .iter()
                .map(|q| {
                    let q = match q {
                        serde_json::Value::String(s) => Query::parse(s)?,
                        other => Query::from_json(other)?,
                    };
                    match q {
                        Query::Filter(f) => Ok(f),
                        _ => Err(invalid(msg!("{} queries may only contain filters", method))),
                    }
                })
                .collect()
        };
        let between = |negate: bool| -> Result<Query> {
            let mut v = values()?;
            if v.len() != 2 {
                return Err(invalid(msg!("{} queries take exactly two values", method)));
            }
            let hi = v.pop().unwrap_or(Value::Null);
            let lo = v.pop().unwrap_or(Value::Null);
            Ok(Query::Filter(Filter::Between {
                attr: need_attr()?,
                lo,
                hi,
                negate,
            }))
        };
        let date_cmp = |field: &str, op: CmpOp| -> Result<Query> {
            let v = values()?;
            if v.len() != 1 {
                return Err(invalid(msg!("{} queries take exactly one value", method)));
            }
            Ok(Query::Filter(Filter::Cmp {
                attr: field.to_string(),
                op,
                values: v,
            }))
        };
        let date_between = |field: &str| -> Result<Query> {
            let mut v = values()?;
            if v.len() != 2 {
                return Err(invalid(msg!("{} queries take exactly two values", method)));
            }
            let hi = v.pop().unwrap_or(Value::Null);
            let lo = v.pop().unwrap_or(Value::Null);
            Ok(Query::Filter(Filter::Between {
                attr: field.to_string(),
                lo,
                hi,
                negate: false,
            }))
        };
        Ok(match method {
            "equal" => cmp(CmpOp::Equal)?,
            "notEqual" => cmp(CmpOp::NotEqual)?,
            "lessThan" => cmp(CmpOp::LessThan)?,
            "lessThanEqual" => cmp(CmpOp::LessThanEqual)?,
            "greaterThan" => cmp(CmpOp::GreaterThan)?,
            "greaterThanEqual" => cmp(CmpOp::GreaterThanEqual)?,
            "startsWith" => cmp(CmpOp::StartsWith)?,
            "endsWith" => cmp(CmpOp::EndsWith)?,
            "notStartsWith" => cmp(CmpOp::NotStartsWith)?,
            "notEndsWith" => cmp(CmpOp::NotEndsWith)?,
            "contains" | "containsAny" => cmp(CmpOp::Contains)?,
            "containsAll" => cmp(CmpOp::ContainsAll)?,
            "notContains" => cmp(CmpOp::NotContains)?,
            "search" => cmp(CmpOp::Search)?,
            "notSearch" => cmp(CmpOp::NotSearch)?,
            "between" => between(false)?,
            "notBetween" => between(true)?,
            "isNull" => Query::Filter(Filter::IsNull(need_attr()?)),
            "isNotNull" => Query::Filter(Filter::IsNotNull(need_attr()?)),
            "regex" => {
                let attr = need_attr()?;
                let source = match raw_values.as_slice() {
                    [serde_json::Value::String(s)] => s,
                    [_] => return Err(invalid("Regex queries require a string pattern.")),
                    _ => return Err(invalid("Regex queries require exactly one value.")),
                };
                let pattern = Pattern::new(source)
                    .map_err(|e| invalid(msg!("Invalid regular expression: {}", e)))?;
                Query::Filter(Filter::Regex { attr, pattern })
            }
            "exists" | "notExists" => {
                let mut attrs = Vec::new();
                for v in &raw_values {
                    match v.as_str() {
                        Some(s) if !s.is_empty() => attrs.push(s.to_string()),
                        _ => {
                            return Err(invalid(msg!("{} values must be attribute names", method)))
                        }
                    }
                }
                if attrs.is_empty() {
                    return Err(invalid(msg!(
                        "{} queries require at least one value.",
                        capitalized(method)
                    )));
                }
                if attrs.len() > MAX_QUERIES {
                    return Err(invalid(msg!(
                        "{} queries accept at most {} values",
                        method,
                        MAX_QUERIES
                    )));
                }
                Query::Filter(Filter::Exists {
                    attrs,
                    negate: method == "notExists",
                })
            }
            "intersects" | "notIntersects" | "crosses" | "notCrosses" | "overlaps"
            | "notOverlaps" | "touches" | "notTouches" => {
                let relation = match method
                    .trim_start_matches("not")
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "intersects" => Relation::Intersects,
                    "crosses" => Relation::Crosses,
                    "overlaps" => Relation::Overlaps,
                    _ => Relation::Touches,
                };
                let geometry = match values()?.as_slice() {
                    [] => {
                        return Err(invalid(msg!(
                            "{} queries require at least one value.",
                            capitalized(method)
                        )))
                    }
                    [g @ Value::Array(_)] => g.clone(),
                    _ => return Err(invalid("Spatial data must be an array")),
                };
                Query::Filter(Filter::Spatial {
                    attr: need_attr()?,
                    relation,
                    geometry,
                    negate: method.starts_with("not"),
                })
            }
            "distanceEqual" | "distanceNotEqual" | "distanceGreaterThan" | "distanceLessThan" => {
                let cmp = match method {
                    "distanceEqual" => DistanceCmp::Equal,
                    "distanceNotEqual" => DistanceCmp::NotEqual,
                    "distanceGreaterThan" => DistanceCmp::GreaterThan,
                    _ => DistanceCmp::LessThan,
                };
                let bad = || invalid("Distance query requires [[geometry, distance]] parameters");
                let values = values()?;
                let [Value::Array(parts)] = values.as_slice() else {
                    return Err(bad());
                };
                let (geometry, distance, meters) = match parts.as_slice() {
                    [g, d] => (g, d, false),
                    [g, d, Value::Bool(m)] => (g, d, *m),
                    _ => return Err(bad()),
                };
                let distance = distance
                    .as_f64()
                    .filter(|d| d.is_finite())
                    .ok_or_else(bad)?;
                if !matches!(geometry, Value::Array(_)) {
                    return Err(bad());
                }
                Query::Filter(Filter::Spatial {
                    attr: need_attr()?,
                    relation: Relation::Distance {
                        cmp,
                        distance,
                        meters,
                    },
                    geometry: geometry.clone(),
                    negate: false,
                })
            }
            // Appwrite takes it only on its schemaless adapters (arrays of objects); a column
            // here holds scalars or arrays of scalars.
            "elemMatch" => return Err(invalid("elemMatch is not supported by the database")),
            "and" | "or" => {
                let inner = nested()?;
                if inner.iter().any(|f| f.depth() >= MAX_DEPTH) {
                    return Err(invalid(msg!(
                        "{} queries may nest at most {} levels deep",
                        method,
                        MAX_DEPTH
                    )));
                }
                Query::Filter(match method {
                    "and" => Filter::And(inner),
                    _ => Filter::Or(inner),
                })
            }
            "createdBefore" => date_cmp("$createdAt", CmpOp::LessThan)?,
            "createdAfter" => date_cmp("$createdAt", CmpOp::GreaterThan)?,
            "createdBetween" => date_between("$createdAt")?,
            "updatedBefore" => date_cmp("$updatedAt", CmpOp::LessThan)?,
            "updatedAfter" => date_cmp("$updatedAt", CmpOp::GreaterThan)?,
            "updatedBetween" => date_between("$updatedAt")?,
            "select" => {
                let mut names = Vec::new();
                for v in &raw_values {
                    match v.as_str() {
                        Some(s) if !s.is_empty() => names.push(s.to_string()),
                        _ => return Err(invalid("select values must be attribute names")),
                    }
                }
                if names.is_empty() {
                    return Err(invalid("select queries require at least one attribute"));
                }
                Query::Select(names)
            }
            "orderAsc" => Query::OrderBy(attr_or_sequence(&attr), Order::Asc),
            "orderDesc" => Query::OrderBy(attr_or_sequence(&attr), Order::Desc),
            "orderRandom" => Query::OrderRandom,
            "limit" => {
                let n = single_int()?;
                if n > MAX_LIMIT {
                    return Err(invalid(msg!(
                        "Invalid limit: Value must be a valid range between 0 and {}",
                        MAX_LIMIT
                    )));
                }
                Query::Limit(n)
            }
            "offset" => Query::Offset(single_int()?),
            "cursorAfter" | "cursorBefore" => {
                let id = match raw_values.as_slice() {
                    [serde_json::Value::String(s)] if crate::id::is_valid(s) => s.clone(),
                    _ => {
                        return Err(invalid(
                            "Invalid cursor: Cursor must be a valid document ID",
                        ))
                    }
                };
                if method == "cursorAfter" {
                    Query::Cursor(Cursor::After(id))
                } else {
                    Query::Cursor(Cursor::Before(id))
                }
            }
            other => return Err(invalid(msg!("Query method not valid: {}", other))),
        })
    }
}

/// `exists` → `Exists`, as Appwrite words its messages.
fn capitalized(method: &str) -> String {
    let mut c = method.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A row's place in a shuffle: a bijective mix of the seed and its sequence (splitmix64's
/// finaliser), so two rows never tie and the order holds for the whole request.
fn shuffle_key(seed: u64, sequence: u64) -> u64 {
    let mut z = seed ^ sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn attr_or_sequence(attr: &str) -> String {
    if attr.is_empty() {
        "$sequence".to_string()
    } else {
        attr.to_string()
    }
}

impl Spec {
    /// The first `limit` documents whose `attr` equals `value`, in `$sequence` order.
    pub fn equal(attr: &str, value: &str, limit: u64) -> Spec {
        Spec {
            filters: vec![Filter::equal(attr, value)],
            limit: Some(limit),
            ..Spec::default()
        }
    }

    /// Parses the `queries[]` of a list request.
    pub fn parse(queries: &[String]) -> Result<Spec> {
        if queries.len() > MAX_QUERIES {
            return Err(Error::invalid(msg!(
                "Invalid `queries` param: Value must a valid array no longer than {} items",
                MAX_QUERIES
            )));
        }
        let mut spec = Spec::default();
        for q in queries {
            match Query::parse(q)? {
                Query::Filter(f) => spec.filters.push(f),
                Query::Select(s) => spec.select.get_or_insert_with(Vec::new).extend(s),
                Query::OrderBy(a, o) => spec.orders.push((a, o)),
                Query::OrderRandom => {
                    if spec.random.is_none() {
                        // Seeded by the caller (`Spec::shuffle`): nothing here draws randomness.
                        spec.random = Some((0, spec.orders.len()));
                    }
                }
                Query::Limit(n) => spec.limit = Some(n),
                Query::Offset(n) => spec.offset = n,
                Query::Cursor(c) => {
                    if spec.cursor.is_some() {
                        return Err(invalid("Cannot use multiple cursor queries"));
                    }
                    spec.cursor = Some(c)
                }
            }
        }
        if spec.random.is_some() && spec.cursor.is_some() {
            // A shuffle has no position to continue from.
            return Err(invalid(
                "Cursor queries cannot be combined with orderRandom",
            ));
        }
        Ok(spec)
    }

    /// Seeds this request's `orderRandom` shuffle, if it has one: each seed gives another
    /// order.
    pub fn shuffle(&mut self, seed: u64) {
        if let Some((s, _)) = &mut self.random {
            *s = seed;
        }
    }

    /// Refuses `orderRandom` where the rows would be picked while the log applies, on every
    /// replica alike (a transaction's staged bulk change): a shuffle there could not be the
    /// same everywhere.
    pub fn random_order(&self) -> Result<()> {
        match self.random {
            Some(_) => Err(invalid(
                "orderRandom cannot pick the rows of a change staged in a transaction",
            )),
            None => Ok(()),
        }
    }

    /// Checks every attribute the queries name against the schema and normalises values
    /// (datetimes to canonical UTC) so evaluation compares like with like.
    pub fn validate(&mut self, coll: &Collection) -> Result<()> {
        for f in &mut self.filters {
            validate_filter(f, coll)?;
        }
        for (attr, _) in &self.orders {
            if system_kind(attr).is_none() {
                let a = coll
                    .attribute(attr)
                    .ok_or_else(|| invalid(msg!("Attribute not found in schema: {}", attr)))?;
                if a.array {
                    return Err(invalid(msg!(
                        "Cannot order by attribute \"{}\" because it is an array",
                        attr
                    )));
                }
            }
        }
        if let Some(sel) = &self.select {
            for attr in sel {
                // `key.*` or `key.attr`: a relationship's related rows, loaded (their own
                // attributes are checked where they are loaded).
                if let Some((head, _)) = attr.split_once('.') {
                    if coll.relation(head).is_some_and(|r| r.visible()) {
                        continue;
                    }
                    return Err(invalid(msg!("Attribute not found in schema: {}", head)));
                }
                if coll.relation(attr).is_some() {
                    return Err(invalid(msg!("Cannot select attributes: {}", attr)));
                }
                if attr != "*"
                    && system_kind(attr).is_none()
                    && !is_meta(attr)
                    && coll.attribute(attr).is_none()
                {
                    return Err(invalid(msg!("Attribute not found in schema: {}", attr)));
                }
            }
        }
        Ok(())
    }

    /// Does `doc` pass every filter?
    pub fn matches(&self, doc: &Document) -> bool {
        self.filters.iter().all(|f| f.matches(doc))
    }

    /// Compares two documents in the requested order. Ties are broken as Appwrite breaks them:
    /// by `$sequence` **ascending**, whatever the direction of the orders before it (Appwrite
    /// appends `$sequence ASC` to every order that does not already name `$id` or `$sequence`,
    /// both of which are unique, so the appended order only ever decides exact ties).
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        let decisive = match self.random {
            Some((_, before)) => &self.orders[..before.min(self.orders.len())],
            None => &self.orders[..],
        };
        for (attr, order) in decisive {
            let o = a.get(attr).total_cmp(&b.get(attr));
            let o = match order {
                Order::Asc => o,
                Order::Desc => o.reverse(),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        if let Some((seed, _)) = self.random {
            return shuffle_key(seed, a.sequence).cmp(&shuffle_key(seed, b.sequence));
        }
        a.sequence.cmp(&b.sequence)
    }
}

fn is_meta(attr: &str) -> bool {
    matches!(
        attr,
        "$permissions" | "$collectionId" | "$tableId" | "$databaseId"
    )
}

/// The kind of a system attribute usable in filters and orders.
fn system_kind(attr: &str) -> Option<AttrKind> {
    match attr {
        "$id" => Some(AttrKind::String),
        "$sequence" => Some(AttrKind::Integer),
        "$createdAt" | "$updatedAt" => Some(AttrKind::Datetime),
        _ => None,
    }
}

/// `equal`, `contains` and their negations on a spatial column compare geometries: the
/// filter they become, if `f` is one of them.
fn spatial_cmp(f: &Filter, coll: &Collection) -> Result<Option<Filter>> {
    let Filter::Cmp { attr, op, values } = f else {
        return Ok(None);
    };
    if !spatial_attr(coll, attr) {
        return Ok(None);
    }
    let (relation, negate) = match op {
        CmpOp::Equal => (Relation::Equals, false),
        CmpOp::NotEqual => (Relation::Equals, true),
        CmpOp::Contains => (Relation::Contains, false),
        CmpOp::NotContains => (Relation::Contains, true),
        other => {
            return Err(invalid(msg!(
                "Cannot query {} on spatial attribute \"{}\"",
                op_name(*other),
                attr
            )))
        }
    };
    let geometry = match values.first() {
        Some(g @ Value::Array(_)) => g.clone(),
        _ => return Err(invalid("Spatial data must be an array")),
    };
    Ok(Some(Filter::Spatial {
        attr: attr.clone(),
        relation,
        geometry,
        negate,
    }))
}

fn validate_filter(f: &mut Filter, coll: &Collection) -> Result<()> {
    if let Some(spatial) = spatial_cmp(f, coll)? {
        *f = spatial;
    }
    match f {
        Filter::And(fs) | Filter::Or(fs) => {
            for f in fs {
                validate_filter(f, coll)?;
            }
            Ok(())
        }
        Filter::IsNull(attr) | Filter::IsNotNull(attr) => lookup(coll, attr).map(|_| ()),
        Filter::Exists { attrs, .. } => {
            for attr in attrs {
                lookup(coll, attr)?;
            }
            Ok(())
        }
        Filter::Regex { attr, .. } => {
            let (kind, array) = lookup(coll, attr)?;
            if array {
                return Err(invalid(msg!(
                    "Cannot query regex on attribute \"{}\" because it is an array.",
                    attr
                )));
            }
            if !kind.is_string() {
                return Err(invalid(msg!(
                    "Query value is invalid for attribute \"{}\"",
                    attr
                )));
            }
            Ok(())
        }
        Filter::Spatial {
            attr,
            relation,
            geometry,
            ..
        } => {
            let (kind, _) = lookup(coll, attr)?;
            let Some(shape) = kind.shape() else {
                return Err(invalid(msg!(
                    "Spatial query \"{}\" cannot be applied on non-spatial attribute: {}",
                    relation_name(relation),
                    attr
                )));
            };
            let g = spatial::geometry(geometry)
                .filter(spatial::in_range)
                .ok_or_else(|| invalid("Spatial data must be a valid geometry"))?;
            if let Relation::Distance { meters: true, .. } = relation {
                if !matches!(g, geo::Geometry::Point(_)) || shape != spatial::Shape::Point {
                    return Err(Error::query(msg!(
                        "Distance in meters is not supported between {} and {}",
                        shape.name(),
                        spatial::kind_name(&g)
                    )));
                }
            }
            Ok(())
        }
        Filter::Between { attr, .. } if spatial_attr(coll, attr) => Err(invalid(msg!(
            "Cannot query on spatial attribute \"{}\" with this method",
            attr
        ))),
        Filter::Between { attr, lo, hi, .. } => {
            let (kind, array) = lookup(coll, attr)?;
            if array {
                return Err(invalid(msg!(
                    "Cannot query between on attribute \"{}\" because it is an array.",
                    attr
                )));
            }
            normalize_value(lo, kind, attr)?;
            normalize_value(hi, kind, attr)
        }
        Filter::Cmp { attr, op, values } => {
            let (kind, array) = lookup(coll, attr)?;
            let array_ok = matches!(
                op,
                CmpOp::Contains | CmpOp::ContainsAll | CmpOp::NotContains
            );
            if array && !array_ok {
                return Err(invalid(msg!(
                    "Cannot query {} on attribute \"{}\" because it is an array.",
                    op_name(*op),
                    attr
                )));
            }
            match op {
                CmpOp::StartsWith
                | CmpOp::EndsWith
                | CmpOp::NotStartsWith
                | CmpOp::NotEndsWith
                | CmpOp::Search
                | CmpOp::NotSearch
                    if !kind.is_string() =>
                {
                    return Err(invalid(msg!("Cannot query {} on attribute \"{}\" because it is not a string.", op_name(*op), attr)))
                }
                CmpOp::Contains | CmpOp::ContainsAll | CmpOp::NotContains if !array && !kind.is_string() => {
                    return Err(invalid(msg!("Cannot query contains on attribute \"{}\" because it is not an array or string.", attr)))
                }
                CmpOp::Search | CmpOp::NotSearch => {
                    let indexed = coll.indexes.iter().any(|i| {
                        i.kind == IndexKind::Fulltext && i.attributes.len() == 1 && i.attributes[0] == *attr
                    });
                    if !indexed {
                        return Err(invalid(msg!("Searching by attribute \"{}\" requires a fulltext index.", attr)));
                    }
                }
                _ => {}
            }
            for v in values {
                normalize_value(v, kind, attr)?;
            }
            Ok(())
        }
    }
}

fn spatial_attr(coll: &Collection, attr: &str) -> bool {
    coll.attribute(attr)
        .is_some_and(|a| a.kind.shape().is_some())
}

fn relation_name(r: &Relation) -> &'static str {
    match r {
        Relation::Intersects => "intersects",
        Relation::Crosses => "crosses",
        Relation::Overlaps => "overlaps",
        Relation::Touches => "touches",
        Relation::Contains => "contains",
        Relation::Equals => "equal",
        Relation::Distance { .. } => "distance",
    }
}

fn lookup(coll: &Collection, attr: &str) -> Result<(AttrKind, bool)> {
    if let Some(k) = system_kind(attr) {
        return Ok((k, false));
    }
    if let Some(r) = coll.relation(attr) {
        // The related id, where the row keeps it; the other ends hold nothing to compare.
        return match r.shows_id() {
            true => Ok((AttrKind::String, false)),
            false if !r.visible() => Err(invalid(msg!("Attribute not found in schema: {}", attr))),
            false => Err(invalid("Cannot query on virtual relationship attribute")),
        };
    }
    coll.attribute(attr)
        .map(|a| (a.kind, a.array))
        .ok_or_else(|| invalid(msg!("Attribute not found in schema: {}", attr)))
}

fn normalize_value(v: &mut Value, kind: AttrKind, attr: &str) -> Result<()> {
    let bad = || invalid(msg!("Query value is invalid for attribute \"{}\"", attr));
    match (kind, &*v) {
        (_, Value::Null) => Ok(()),
        (
            AttrKind::Integer | AttrKind::Bigint | AttrKind::Float,
            Value::Int(_) | Value::Float(_),
        ) => Ok(()),
        (AttrKind::Boolean, Value::Bool(_)) => Ok(()),
        (AttrKind::Datetime, Value::Str(s)) => {
            *v = Value::Str(crate::time::normalize(s).ok_or_else(bad)?);
            Ok(())
        }
        (k, Value::Str(_)) if k.is_string() => Ok(()),
        _ => Err(bad()),
    }
}

fn op_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Equal => "equal",
        CmpOp::NotEqual => "notEqual",
        CmpOp::LessThan => "lessThan",
        CmpOp::LessThanEqual => "lessThanEqual",
        CmpOp::GreaterThan => "greaterThan",
        CmpOp::GreaterThanEqual => "greaterThanEqual",
        CmpOp::StartsWith => "startsWith",
        CmpOp::EndsWith => "endsWith",
        CmpOp::NotStartsWith => "notStartsWith",
        CmpOp::NotEndsWith => "notEndsWith",
        CmpOp::Contains => "contains",
        CmpOp::ContainsAll => "containsAll",
        CmpOp::NotContains => "notContains",
        CmpOp::Search => "search",
        CmpOp::NotSearch => "notSearch",
    }
}

/// Splits text into lower-case word tokens, as the fulltext index stores them.
pub fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
        .collect()
}

/// Fulltext match, with MariaDB boolean-mode semantics as Appwrite uses them: any word
/// matches, and the last word of the search also matches as a prefix.
pub fn search_matches(text: &str, search: &str) -> bool {
    let q = tokens(search);
    let doc = tokens(text);
    q.iter().enumerate().any(|(i, t)| {
        let prefix = i + 1 == q.len();
        doc.iter()
            .any(|d| d == t || (prefix && d.starts_with(t.as_str())))
    })
}

impl Filter {
    /// `attr` equals the string `value`.
    pub fn equal(attr: &str, value: &str) -> Filter {
        Filter::Cmp {
            attr: attr.to_string(),
            op: CmpOp::Equal,
            values: vec![Value::Str(value.to_string())],
        }
    }

    /// The rows whose own permissions let one of `roles` read them (the internal `$read`
    /// attribute, which the built-in read-roles index serves).
    pub fn readable_by(roles: impl IntoIterator<Item = String>) -> Filter {
        Filter::Cmp {
            attr: crate::schema::READ_ROLES.to_string(),
            op: CmpOp::Contains,
            values: roles.into_iter().map(Value::Str).collect(),
        }
    }

    /// Levels of `and`/`or`: 1 for a plain filter.
    pub fn depth(&self) -> usize {
        match self {
            Filter::And(fs) | Filter::Or(fs) => 1 + fs.iter().map(Filter::depth).max().unwrap_or(0),
            _ => 1,
        }
    }

    pub fn matches(&self, doc: &Document) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(doc)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(doc)),
            Filter::IsNull(a) => doc.get(a).is_null(),
            Filter::IsNotNull(a) => !doc.get(a).is_null(),
            Filter::Between {
                attr,
                lo,
                hi,
                negate,
            } => {
                let v = doc.get(attr);
                if v.is_null() {
                    return false;
                }
                let inside =
                    v.total_cmp(lo) != Ordering::Less && v.total_cmp(hi) != Ordering::Greater;
                inside != *negate
            }
            Filter::Cmp { attr, op, values } => {
                let v = doc.get(attr);
                if v.is_null() {
                    return false;
                }
                cmp_matches(&v, *op, values)
            }
            Filter::Regex { attr, pattern } => {
                doc.get(attr).as_str().is_some_and(|s| pattern.is_match(s))
            }
            Filter::Exists { attrs, negate } => {
                attrs.iter().any(|a| doc.get(a).is_null() == *negate)
            }
            Filter::Spatial {
                attr,
                relation,
                geometry,
                negate,
            } => {
                let (Some(column), Some(query)) = (
                    spatial::geometry(&doc.get(attr)),
                    spatial::geometry(geometry),
                ) else {
                    return false;
                };
                spatial::holds(*relation, &column, &query).is_some_and(|h| h != *negate)
            }
        }
    }
}

fn cmp_matches(v: &Value, op: CmpOp, values: &[Value]) -> bool {
    let any = |f: &dyn Fn(&Value) -> bool| values.iter().any(f);
    let s = v.as_str().unwrap_or("");
    match op {
        CmpOp::Equal => any(&|q| v.loose_eq(q)),
        CmpOp::NotEqual => !any(&|q| v.loose_eq(q)),
        CmpOp::LessThan => any(&|q| v.total_cmp(q) == Ordering::Less),
        CmpOp::LessThanEqual => any(&|q| v.total_cmp(q) != Ordering::Greater),
        CmpOp::GreaterThan => any(&|q| v.total_cmp(q) == Ordering::Greater),
        CmpOp::GreaterThanEqual => any(&|q| v.total_cmp(q) != Ordering::Less),
        CmpOp::StartsWith => any(&|q| q.as_str().is_some_and(|q| s.starts_with(q))),
        CmpOp::EndsWith => any(&|q| q.as_str().is_some_and(|q| s.ends_with(q))),
        CmpOp::NotStartsWith => !any(&|q| q.as_str().is_some_and(|q| s.starts_with(q))),
        CmpOp::NotEndsWith => !any(&|q| q.as_str().is_some_and(|q| s.ends_with(q))),
        CmpOp::Contains => contains(v, values),
        CmpOp::ContainsAll => values.iter().all(|q| contains(v, std::slice::from_ref(q))),
        CmpOp::NotContains => !contains(v, values),
        CmpOp::Search => any(&|q| q.as_str().is_some_and(|q| search_matches(s, q))),
        CmpOp::NotSearch => !any(&|q| q.as_str().is_some_and(|q| search_matches(s, q))),
    }
}

fn contains(v: &Value, values: &[Value]) -> bool {
    match v {
        Value::Array(items) => values.iter().any(|q| items.iter().any(|i| i.loose_eq(q))),
        Value::Str(s) => values
            .iter()
            .any(|q| q.as_str().is_some_and(|q| s.contains(q))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn doc(pairs: &[(&str, Value)]) -> Document {
        Document {
            id: "d1".into(),
            sequence: 7,
            created_at: 1767225600000,
            updated_at: 1767225600000,
            permissions: vec![],
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn check(query: &str, d: &Document, expect: bool) {
        let q = Query::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        match q {
            Query::Filter(f) => assert_eq!(f.matches(d), expect, "{query}"),
            other => panic!("{query} parsed to {other:?}"),
        }
    }

    #[test]
    fn filters() {
        let d = doc(&[
            ("name", Value::Str("Ada Lovelace".into())),
            ("age", Value::Int(36)),
            ("score", Value::Float(9.5)),
            (
                "tags",
                Value::Array(vec![Value::Str("math".into()), Value::Str("poet".into())]),
            ),
            ("gone", Value::Null),
        ]);
        check(
            r#"{"method":"equal","attribute":"name","values":["Ada Lovelace"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"equal","attribute":"name","values":["x","Ada Lovelace"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"notEqual","attribute":"name","values":["x"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"equal","attribute":"age","values":[36.0]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"lessThan","attribute":"age","values":[36]}"#,
            &d,
            false,
        );
        check(
            r#"{"method":"lessThanEqual","attribute":"age","values":[36]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"greaterThan","attribute":"score","values":[9]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"between","attribute":"age","values":[30,36]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"notBetween","attribute":"age","values":[30,36]}"#,
            &d,
            false,
        );
        check(
            r#"{"method":"startsWith","attribute":"name","values":["Ada"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"endsWith","attribute":"name","values":["lace"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"notStartsWith","attribute":"name","values":["Ada"]}"#,
            &d,
            false,
        );
        check(
            r#"{"method":"contains","attribute":"tags","values":["poet"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"contains","attribute":"name","values":["Love"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"notContains","attribute":"tags","values":["chess"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"search","attribute":"name","values":["lovel"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"search","attribute":"name","values":["love ada"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"search","attribute":"name","values":["love"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"search","attribute":"name","values":["byron"]}"#,
            &d,
            false,
        );
        check(r#"{"method":"isNull","attribute":"gone"}"#, &d, true);
        check(r#"{"method":"isNull","attribute":"missing"}"#, &d, true);
        check(r#"{"method":"isNotNull","attribute":"age"}"#, &d, true);
        check(
            r#"{"method":"equal","attribute":"gone","values":["x"]}"#,
            &d,
            false,
        );
        check(
            r#"{"method":"notEqual","attribute":"gone","values":["x"]}"#,
            &d,
            false,
        );
        check(
            r#"{"method":"or","values":[{"method":"equal","attribute":"age","values":[1]},{"method":"equal","attribute":"age","values":[36]}]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"and","values":[{"method":"equal","attribute":"age","values":[36]},{"method":"equal","attribute":"name","values":["x"]}]}"#,
            &d,
            false,
        );
        check(
            r#"{"method":"equal","attribute":"$id","values":["d1"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"createdBefore","values":["2026-01-02T00:00:00.000+00:00"]}"#,
            &d,
            true,
        );
    }

    #[test]
    fn regex_and_exists() {
        let d = doc(&[
            ("name", Value::Str("Ada Lovelace".into())),
            ("age", Value::Int(36)),
            ("gone", Value::Null),
        ]);
        check(
            r#"{"method":"regex","attribute":"name","values":["^ada"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"regex","attribute":"name","values":["lace$"]}"#,
            &d,
            true,
        );
        check(
            r#"{"method":"regex","attribute":"name","values":["^lace"]}"#,
            &d,
            false,
        );
        check(
            r#"{"method":"regex","attribute":"gone","values":[".*"]}"#,
            &d,
            false,
        );
        check(r#"{"method":"exists","values":["age"]}"#, &d, true);
        check(r#"{"method":"exists","values":["gone"]}"#, &d, false);
        check(r#"{"method":"exists","values":["gone","age"]}"#, &d, true);
        check(r#"{"method":"notExists","values":["gone"]}"#, &d, true);
        check(r#"{"method":"notExists","values":["age"]}"#, &d, false);
        check(
            r#"{"method":"notExists","values":["age","gone"]}"#,
            &d,
            true,
        );
        for bad in [
            r#"{"method":"regex","attribute":"name","values":["("]}"#,
            // Short, but compiles to megabytes.
            r#"{"method":"regex","attribute":"name","values":["\\w{100}{100}"]}"#,
            r#"{"method":"regex","attribute":"name","values":[]}"#,
            r#"{"method":"regex","attribute":"name","values":[1]}"#,
            r#"{"method":"exists","values":[]}"#,
            r#"{"method":"elemMatch","attribute":"a","values":[{"method":"equal","attribute":"b","values":[1]}]}"#,
        ] {
            assert!(Query::parse(bad).is_err(), "{bad} should fail");
        }
        // A pattern survives the log's encoding.
        let f = match Query::parse(r#"{"method":"regex","attribute":"name","values":["^A.a"]}"#)
            .unwrap()
        {
            Query::Filter(f) => f,
            q => panic!("{q:?}"),
        };
        let back: Filter = bincode::deserialize(&bincode::serialize(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        assert!(back.matches(&d));
    }

    static SEEDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    #[test]
    fn order_random_shuffles_ties_of_the_orders_before_it() {
        let rows: Vec<Document> = (0..64u64)
            .map(|i| {
                let mut d = doc(&[("g", Value::Int((i % 2) as i64))]);
                d.sequence = i;
                d
            })
            .collect();
        let sorted = |queries: &[&str]| {
            let raw: Vec<String> = queries.iter().map(|q| q.to_string()).collect();
            let mut spec = Spec::parse(&raw).unwrap();
            spec.shuffle(SEEDS.fetch_add(0x9E37_79B9, std::sync::atomic::Ordering::Relaxed));
            let mut v = rows.clone();
            v.sort_by(|a, b| spec.compare(a, b));
            v.iter().map(|d| d.sequence).collect::<Vec<_>>()
        };
        let shuffled = sorted(&[r#"{"method":"orderRandom"}"#]);
        let mut back = shuffled.clone();
        back.sort();
        assert_eq!(back, (0..64).collect::<Vec<_>>(), "a permutation");
        assert_ne!(shuffled, back, "64 rows in sequence order by chance");
        assert_ne!(
            shuffled,
            sorted(&[r#"{"method":"orderRandom"}"#]),
            "same seed twice"
        );
        // Orders before it still sort; those after it never decide.
        let grouped = sorted(&[
            r#"{"method":"orderAsc","attribute":"g"}"#,
            r#"{"method":"orderRandom"}"#,
            r#"{"method":"orderAsc","attribute":"$sequence"}"#,
        ]);
        assert!(grouped[..32].iter().all(|s| s % 2 == 0));
        assert!(grouped[32..].iter().all(|s| s % 2 == 1));
        assert_ne!(
            grouped[..32],
            (0..32).map(|i| i * 2).collect::<Vec<_>>()[..]
        );
        let with_cursor = Spec::parse(&[
            r#"{"method":"orderRandom"}"#.to_string(),
            r#"{"method":"cursorAfter","values":["abc"]}"#.to_string(),
        ]);
        assert!(with_cursor.is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let nest = |levels: usize| {
            let mut q = r#"{"method":"isNull","attribute":"a"}"#.to_string();
            for _ in 1..levels {
                q = format!(r#"{{"method":"and","values":[{q}]}}"#);
            }
            Query::parse(&q)
        };
        assert!(nest(MAX_DEPTH).is_ok());
        let e = nest(MAX_DEPTH + 1).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::GeneralQueryInvalid);
        assert!(nest(100).is_err());
    }

    #[test]
    fn parse_errors_and_spec() {
        for bad in [
            "not json",
            r#"{"method":"frobnicate","attribute":"a","values":[1]}"#,
            r#"{"method":"equal","values":[1]}"#,
            r#"{"method":"equal","attribute":"a","values":[]}"#,
            r#"{"method":"limit","values":[-1]}"#,
            r#"{"method":"limit","values":[100000]}"#,
            r#"{"method":"between","attribute":"a","values":[1]}"#,
            r#"{"method":"cursorAfter","values":["bad id!"]}"#,
            r#"{"method":"and","values":[{"method":"limit","values":[1]}]}"#,
        ] {
            assert!(Query::parse(bad).is_err(), "{bad} should fail");
        }
        let spec = Spec::parse(&[
            r#"{"method":"limit","values":[5]}"#.into(),
            r#"{"method":"offset","values":[2]}"#.into(),
            r#"{"method":"orderDesc","attribute":"age"}"#.into(),
            r#"{"method":"select","values":["name"]}"#.into(),
            r#"{"method":"cursorAfter","values":["abc"]}"#.into(),
        ])
        .unwrap();
        assert_eq!(spec.limit, Some(5));
        assert_eq!(spec.offset, 2);
        assert_eq!(spec.orders, vec![("age".to_string(), Order::Desc)]);
        assert_eq!(spec.select, Some(vec!["name".to_string()]));
        assert_eq!(spec.cursor, Some(Cursor::After("abc".into())));
    }

    #[test]
    fn tokens_and_search() {
        assert_eq!(
            tokens("Hello, World! x-y"),
            vec!["hello", "world", "x", "y"]
        );
        assert!(search_matches("The quick brown fox", "qui"));
        assert!(!search_matches("The quick brown fox", "qui dog"));
        assert!(search_matches("The quick brown fox", "dog fox"));
    }

    #[test]
    fn ties_go_by_sequence_ascending_whatever_the_order_direction() {
        let spec = |orders: &[&str]| {
            let raw: Vec<String> = orders.iter().map(|o| o.to_string()).collect();
            Spec::parse(&raw).unwrap()
        };
        let mut early = doc(&[("rating", Value::Int(5))]);
        early.sequence = 1;
        let mut late = doc(&[("rating", Value::Int(5))]);
        late.sequence = 2;
        let mut low = doc(&[("rating", Value::Int(1))]);
        low.sequence = 3;
        for orders in [
            vec![r#"{"method":"orderDesc","attribute":"rating"}"#],
            vec![r#"{"method":"orderAsc","attribute":"rating"}"#],
            vec![],
        ] {
            let s = spec(&orders);
            assert_eq!(s.compare(&early, &late), Ordering::Less, "{orders:?}");
            assert_eq!(s.compare(&late, &early), Ordering::Greater, "{orders:?}");
        }
        let desc = spec(&[r#"{"method":"orderDesc","attribute":"rating"}"#]);
        assert_eq!(desc.compare(&low, &early), Ordering::Greater);
        // An explicit `$sequence` order is the order itself.
        let by_seq = spec(&[r#"{"method":"orderDesc","attribute":"$sequence"}"#]);
        assert_eq!(by_seq.compare(&early, &late), Ordering::Greater);
    }
}
