//! Key encoding. Every key starts with its project, then database, then collection, so a
//! project (or a database) is one contiguous range — the unit a future multi-Raft split moves.
//!
//! Components are ids (`[a-zA-Z0-9._-]`, never `0x00`) separated by `0x00`. Index values use
//! an order-preserving, prefix-free encoding, bit-inverted for descending columns.

use model::schema::Order;
use model::Value;

pub const SEP: u8 = 0;

/// `a\0b\0c…` for id components.
pub fn join(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// `a\0b\0…\0` — the prefix of everything under these components.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut out = join(parts);
    out.push(SEP);
    out
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF; prefix.len() + 1]
}

// Meta keyspace. A project's records are `project \0 tag \0 …`, so one project is one
// contiguous range of every column family. Cluster-wide records start with `\0`, which no
// project id can (ids start with an ASCII letter or digit).
pub const PROJECT: &str = "P";
pub const KEY: &str = "K";
pub const KEY_HASH: &str = "H";
pub const DATABASE: &str = "D";
pub const COLLECTION: &str = "C";
pub const SEQUENCE: &str = "S";
/// A collection's pending reshapes (`Collection::reshapes`), when it has any.
pub const RESHAPES: &str = "R";
/// A collection's relationships (`Collection::relations`), when it has any.
pub const RELATIONS: &str = "L";
pub const TRANSACTION: &str = "T";
/// The user who made a transaction (`[tx]` → user id); keys' transactions have none.
pub const TRANSACTION_OWNER: &str = "W";
/// A user's transactions (`[user, tx]` → tx id), so a user's own are found without a scan
/// of the project's.
pub const USER_TRANSACTION: &str = "U";
/// A project's client platforms.
pub const PLATFORM: &str = "F";
/// The secret a project's JWTs are signed with.
pub const JWT_SECRET: &str = "J";
/// A project's auth settings (`model::auth::AuthSettings`).
pub const AUTH_SETTINGS: &str = "A";

/// A file's chunk: `[bucket, file, index as 20 decimal digits]` → `model::storage::ChunkRef`.
pub const FILE_CHUNK: &str = "B";
/// The key a project's encrypted chunks are sealed under (`StorageOp::InitKey`).
pub const STORAGE_KEY: &str = "E";

/// `[bucket, file, index]` of a file chunk's meta record, in index order.
pub fn file_chunk(project: &str, bucket: &str, file: &str, index: u64) -> Vec<u8> {
    meta(
        project,
        FILE_CHUNK,
        &[bucket, file, &format!("{index:020}")],
    )
}

/// `\0blob\0<sha256 hex>` → how many file chunks name that blob (8 big-endian bytes), over
/// every project: a node reclaims a blob's bytes once none does.
pub const BLOB_REFS: &[u8] = b"\0blob\0";

pub fn blob_refs(blob: &str) -> Vec<u8> {
    let mut k = BLOB_REFS.to_vec();
    k.extend_from_slice(blob.as_bytes());
    k
}

/// The Raft layer's opaque applied-state record.
pub const APPLIED: &[u8] = b"\0applied";
/// The applied log index, as 8 big-endian bytes (written with `APPLIED`).
pub const APPLIED_INDEX: &[u8] = b"\0applied-index";
/// The largest envelope `at` applied so far (8 big-endian bytes): time never goes back.
pub const LAST_AT: &[u8] = b"\0last-at";
/// `\0projects\0<id>`: the list of projects.
pub const PROJECTS: &[u8] = b"\0projects\0";
/// `\0jobs\0<project>\0<db>\0<coll>\0<name>` → how far a collection's background job has
/// come (the last `$sequence` done, 8 big-endian bytes). `<name>` is the key of the index being
/// built, or `RESHAPE_JOB` for the rewrite of documents after attributes were renamed or
/// deleted.
pub const JOBS: &[u8] = b"\0jobs\0";
/// `\0req\0<request id>` → the first outcome of that request.
pub const REQUEST: &[u8] = b"\0req\0";
/// Admitted and retired nodes, by id (big-endian): `NodeRecord`.
pub const NODES: &[u8] = b"\0node\0";
/// The cluster's root key digest (`ClusterOp::SetRootKey`).
pub const ROOT_KEY: &[u8] = b"\0root-key";
/// The placement policy (`ClusterOp::SetPlacement`).
pub const PLACEMENT: &[u8] = b"\0placement";
/// Each node's zone, by id (big-endian): the zone's name (`ClusterOp::SetZone`).
pub const ZONES: &[u8] = b"\0zone\0";

pub fn cluster_zone(id: u64) -> Vec<u8> {
    let mut k = ZONES.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}
/// Join tokens, by id: `JoinTokenRecord`.
pub const JOIN_TOKENS: &[u8] = b"\0token\0";

pub fn cluster_node(id: u64) -> Vec<u8> {
    let mut k = NODES.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn join_token(id: &str) -> Vec<u8> {
    let mut k = JOIN_TOKENS.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}
/// `\0mail\0<due><id>` → `model::auth::Mail`: the outbox, in the order its emails are due.
pub const OUTBOX: &[u8] = b"\0mail\0";
/// A project's meta record: how many of its emails the outbox holds (8 big-endian bytes).
pub const OUTBOX_COUNT: &str = "O";

pub fn outbox(due: i64, id: &str) -> Vec<u8> {
    let mut k = OUTBOX.to_vec();
    k.extend_from_slice(&time_bytes(due));
    k.extend_from_slice(id.as_bytes());
    k
}

/// `\0req-at\0<at><request id>`: request ids in the order they expire.
pub const REQUEST_AT: &[u8] = b"\0req-at\0";

/// Whether a meta key is the cluster's own bookkeeping rather than the data it holds: what
/// Raft applied last, the requests it has answered, its nodes, join tokens, root key, placement and zones. A
/// backup's digest leaves these out (`View::data_digest`), so a cluster restored from it —
/// which has a Raft history, nodes and requests of its own — still shows the same data.
pub fn is_bookkeeping(key: &[u8]) -> bool {
    key == APPLIED
        || key == APPLIED_INDEX
        || key == LAST_AT
        || key == ROOT_KEY
        || key == PLACEMENT
        || key.starts_with(ZONES)
        || key.starts_with(REQUEST)
        || key.starts_with(REQUEST_AT)
        || key.starts_with(NODES)
        || key.starts_with(JOIN_TOKENS)
}

/// A project's meta record: `project\0tag\0rest…`.
pub fn meta(project: &str, tag: &str, rest: &[&str]) -> Vec<u8> {
    let mut parts = Vec::with_capacity(rest.len() + 2);
    parts.push(project);
    parts.push(tag);
    parts.extend_from_slice(rest);
    join(&parts)
}

/// The prefix of a project's meta records under `tag` and `rest`.
pub fn meta_prefix(project: &str, tag: &str, rest: &[&str]) -> Vec<u8> {
    let mut k = meta(project, tag, rest);
    k.push(SEP);
    k
}

/// Usage counters (`model::usage`): `project \0 G \0 period \0 bucket \0 db \0 coll \0
/// metric`, the bucket's start as 12 decimal digits so a period's oldest buckets come first
/// (retention prunes from the front); running totals (`model::usage::keeps_total`) are
/// `project \0 g \0 db \0 coll \0 metric`. Values are 8-byte signed big-endian numbers.
pub const USAGE: &str = "G";
pub const USAGE_TOTAL: &str = "g";

pub fn usage_series(
    project: &str,
    period: model::usage::Period,
    bucket: i64,
    scope: &model::usage::Scope,
    metric: model::usage::Metric,
) -> Vec<u8> {
    let (db, coll) = scope.parts();
    let bucket = format!("{bucket:012}");
    meta(
        project,
        USAGE,
        &[period.tag(), &bucket, db, coll, metric.tag()],
    )
}

pub fn usage_total(
    project: &str,
    scope: &model::usage::Scope,
    metric: model::usage::Metric,
) -> Vec<u8> {
    let (db, coll) = scope.parts();
    meta(project, USAGE_TOTAL, &[db, coll, metric.tag()])
}

/// Order-preserving bytes of a timestamp (epoch ms).
pub fn time_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// The built-in index on `$sequence` that gives the default order.
pub const SEQ_INDEX: &str = "$seq";

/// Key of a document: `project\0db\0coll\0id`.
pub fn doc(project: &str, db: &str, coll: &str, id: &str) -> Vec<u8> {
    join(&[project, db, coll, id])
}

/// Prefix of one index's entries: `project\0db\0coll\0index\0`.
pub fn index_prefix(project: &str, db: &str, coll: &str, index: &str) -> Vec<u8> {
    prefix(&[project, db, coll, index])
}

const NULL: u8 = 0x01;
const FALSE: u8 = 0x02;
const TRUE: u8 = 0x03;
const INT: u8 = 0x04;
const FLOAT: u8 = 0x05;
const STR: u8 = 0x06;

/// Appends the order-preserving encoding of `v` (scalars only; arrays index per element).
pub fn encode_value(out: &mut Vec<u8>, v: &Value, order: Order) {
    let start = out.len();
    match v {
        Value::Null | Value::Array(_) => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Int(i) => {
            out.push(INT);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Float(f) => {
            out.push(FLOAT);
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::Str(s) => {
            out.push(STR);
            escape_str(out, s);
            out.extend_from_slice(&[0, 0]);
        }
    }
    if order == Order::Desc {
        for b in &mut out[start..] {
            *b = !*b;
        }
    }
}

fn escape_str(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// The ascending encoding of every string starting with `s` begins with these bytes.
pub fn encode_str_prefix(out: &mut Vec<u8>, s: &str) {
    out.push(STR);
    escape_str(out, s);
}

/// Encodes a string for a fulltext token or a prefix of one (no terminator when `prefix`).
pub fn encode_token(out: &mut Vec<u8>, token: &str, prefix: bool) {
    out.extend_from_slice(token.as_bytes());
    if !prefix {
        out.push(SEP);
    }
}

/// A spatial index's key of grid cell `code` of `level` (`cells`), under the index's prefix:
/// the level is stored plus one, so no entry starts with the count tag.
pub fn cell_key(index_prefix: &[u8], level: u8, code: u64) -> Vec<u8> {
    let mut k = index_prefix.to_vec();
    k.push(level + 1);
    k.extend_from_slice(&code.to_be_bytes());
    k
}

pub fn seq_bytes(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The value of every index entry: the document's `$sequence` (8 big-endian bytes), then its
/// id. Entry keys end with the sequence too (except a unique index's fully non-null tuples,
/// which are stored bare so the tuple itself is the uniqueness check), so the entries of
/// equal values lie in `$sequence` order: Appwrite's tie order.
pub fn entry_value(seq: u64, id: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + id.len());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(id.as_bytes());
    v
}

/// `(sequence, id)` of an index entry's value.
pub fn parse_entry_value(v: &[u8]) -> Option<(u64, &[u8])> {
    let seq = <[u8; 8]>::try_from(v.get(..8)?).ok()?;
    Some((u64::from_be_bytes(seq), &v[8..]))
}

/// The length of the value encoded at the start of `bytes` (as `encode_value` wrote it for a
/// column of this order), or `None` if the bytes do not start with a whole value.
pub fn value_len(bytes: &[u8], order: Order) -> Option<usize> {
    let flip = |b: u8| if order == Order::Desc { !b } else { b };
    match flip(*bytes.first()?) {
        NULL | FALSE | TRUE => Some(1),
        INT | FLOAT => (bytes.len() >= 9).then_some(9),
        STR => {
            let mut i = 1;
            loop {
                let b = flip(*bytes.get(i)?);
                if b == 0 {
                    match flip(*bytes.get(i + 1)?) {
                        0 => return Some(i + 2),
                        0xFF => i += 2,
                        _ => return None,
                    }
                } else {
                    i += 1;
                }
            }
        }
        _ => None,
    }
}

/// How many documents hold a run of leading values in an index: `index prefix, 0x00, the
/// encoded values` → a count (8 big-endian bytes). Entries start with a value tag (never
/// 0x00), so counts sit before every entry of their index and no range of values holds one.
pub fn count_key(index_prefix: &[u8], values: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(index_prefix.len() + 1 + values.len());
    k.extend_from_slice(index_prefix);
    k.push(COUNT_TAG);
    k.extend_from_slice(values);
    k
}

pub const COUNT_TAG: u8 = 0;

/// The number a count key holds.
pub fn parse_count(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

/// How many rows a collection holds (8 big-endian bytes), kept in the index keyspace under a
/// name no index can have, so it goes with its collection.
pub fn rows_count(project: &str, db: &str, coll: &str) -> Vec<u8> {
    index_prefix(project, db, coll, "$rows")
}

/// The version of the state's key layout this build reads and writes (`\0format`: 3 since
/// index entries end with the sequence and indexes and collections keep counts, 4 since every
/// collection keeps the built-in `$read` index); a data directory written with another layout
/// is refused at open rather than misread.
pub const STATE_FORMAT: u32 = 4;
pub const FORMAT: &[u8] = b"\0format";

/// The job name of a collection's document rewrite (no index key can start with `$`).
pub const RESHAPE_JOB: &str = "$reshape";

/// The record of one background job of a collection: an index build (`name` is the index
/// key) or its document rewrite (`RESHAPE_JOB`).
pub fn job(project: &str, db: &str, coll: &str, name: &str) -> Vec<u8> {
    let mut k = JOBS.to_vec();
    k.extend_from_slice(&join(&[project, db, coll, name]));
    k
}

/// The prefix of every job record under `parts` (project, then database, …).
pub fn jobs_under(parts: &[&str]) -> Vec<u8> {
    let mut k = JOBS.to_vec();
    k.extend_from_slice(&prefix(parts));
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value, order: Order) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(&mut out, v, order);
        out
    }

    #[test]
    fn value_encoding_preserves_order() {
        let vals = [
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Int(-5),
            Value::Int(0),
            Value::Int(7),
            Value::Int(i64::MAX),
        ];
        for w in vals.windows(2) {
            assert!(enc(&w[0], Order::Asc) < enc(&w[1], Order::Asc), "{w:?}");
            assert!(enc(&w[0], Order::Desc) > enc(&w[1], Order::Desc), "{w:?}");
        }
        let floats = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-9,
            3.25,
            f64::INFINITY,
        ];
        for w in floats.windows(2) {
            assert!(enc(&Value::Float(w[0]), Order::Asc) <= enc(&Value::Float(w[1]), Order::Asc));
        }
        let strs = ["", "\0", "\0\0", "a", "a\0", "ab", "b", "é"];
        for w in strs.windows(2) {
            let (a, b) = (Value::Str(w[0].into()), Value::Str(w[1].into()));
            assert!(enc(&a, Order::Asc) < enc(&b, Order::Asc), "{w:?}");
            assert!(enc(&a, Order::Desc) > enc(&b, Order::Desc), "{w:?}");
        }
        // Prefix-free: a value followed by more key bytes still sorts by value first.
        let mut a = enc(&Value::Str("a".into()), Order::Asc);
        a.extend_from_slice(b"zzzz");
        let b = enc(&Value::Str("ab".into()), Order::Asc);
        assert!(a < b);
    }

    #[test]
    fn value_lengths_are_read_back_in_either_order() {
        let vals = [
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(2.5),
            Value::Str(String::new()),
            Value::Str("a\0b\0\0".into()),
            Value::Str("\u{ff}é".into()),
        ];
        for order in [Order::Asc, Order::Desc] {
            for v in &vals {
                let mut k = enc(v, order);
                let len = k.len();
                k.extend_from_slice(&[0, 0, 7]);
                assert_eq!(value_len(&k, order), Some(len), "{v:?} {order:?}");
            }
        }
        assert_eq!(value_len(&[STR, b'a'], Order::Asc), None);
        assert_eq!(value_len(&[], Order::Asc), None);
        let v = entry_value(9, "doc");
        assert_eq!(parse_entry_value(&v), Some((9, &b"doc"[..])));
    }

    #[test]
    fn prefixes() {
        assert_eq!(join(&["p", "d", "c"]), b"p\0d\0c");
        assert_eq!(prefix(&["p", "d"]), b"p\0d\0");
        assert_eq!(prefix_end(b"p\0d\0"), b"p\0d\x01");
        assert_eq!(prefix_end(&[1, 0xFF]), vec![2]);
        // Document keys of one collection never fall under a sibling whose id extends it.
        let c1 = prefix(&["p", "d", "c"]);
        let other = doc("p", "d", "c2", "x");
        assert!(!other.starts_with(&c1));
    }
}
