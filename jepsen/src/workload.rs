//! The workloads: what each client process does, over the HTTP API, and which checker reads
//! the history it leaves.
//!
//! - `register`: per-key reads, writes (upsert) and compare-and-set (a bulk update filtered on
//!   the id and the expected value: one log entry, `total` 1 if it matched), checked for
//!   linearizability key by key.
//! - `bank`: transfers between accounts in transactions (a bounded decrement and an
//!   increment, committed together), and reads of every account, which must sum to the total.
//! - `set`: inserts of unique elements as rows with server-made ids, so an insert applied twice
//!   shows up as a duplicate; a final read finds every acknowledged one.
//! - `counter`: increments and reads of one counter, bounded by what was acknowledged and
//!   what was attempted.
//! - `list-append`: transactions appending to several lists at once, and reads of several
//!   lists in one query, checked Elle-style for G0/G1/G2 cycles. A list is an integer array
//!   column of its key's row; an append is an upsert whose value is the `arrayAppend`
//!   operator, computed when the commit applies.

use crate::api::{create_table, query, rows_path, Api, Reply, DB};
use crate::check;
use crate::history::{Op, Type};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// An operation's completion: its type, its value (a read's result), why it failed.
pub type Completion = (Type, Value, Option<String>);

pub trait Workload: Send + Sync {
    fn name(&self) -> &'static str;
    /// Makes its tables and initial rows (before any fault).
    fn setup<'a>(&'a self, api: &'a Api) -> BoxFuture<'a, anyhow::Result<()>>;
    /// The next operation: (f, value).
    fn generate(&self, rng: &mut StdRng) -> (&'static str, Value);
    /// Performs it through node `node`.
    fn invoke<'a>(
        &'a self,
        api: &'a Api,
        node: u64,
        f: &'a str,
        value: &'a Value,
    ) -> BoxFuture<'a, Completion>;
    /// Operations run once the faults are healed (final reads), retried until they succeed.
    fn final_ops(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
    /// The verdict on its history: a JSON object with at least `valid`.
    fn check(&self, history: &[Op]) -> Value;
}

/// A write's completion from a reply.
fn written(reply: Reply, value: &Value) -> Completion {
    match reply {
        Reply::Ok(_) => (Type::Ok, value.clone(), None),
        Reply::Fail(_, e) => (Type::Fail, value.clone(), Some(e)),
        Reply::Unknown(e) => (Type::Info, value.clone(), Some(e)),
    }
}

/// Why a transaction never reached its commit (so certainly had no effect): the error, still
/// marked `connect`/`unknown` when the cluster could not answer, for the availability figures.
fn not_begun(step: &str, reply: Reply) -> String {
    match reply {
        Reply::Ok(_) => format!("{step}: unexpected answer"),
        Reply::Fail(0, e) => format!("{e} (at {step})"),
        Reply::Fail(_, e) => format!("{step}: {e}"),
        Reply::Unknown(e) => format!("unknown: {e} (at {step})"),
    }
}

/// A read has no effect: one that did not answer simply failed (its error says it was
/// unknown, for the availability figures).
fn unread(reply: Reply, value: &Value) -> Completion {
    match reply {
        Reply::Ok(_) => unreachable!("handled by the caller"),
        Reply::Fail(_, e) => (Type::Fail, value.clone(), Some(e)),
        Reply::Unknown(e) => (Type::Fail, value.clone(), Some(format!("unknown: {e}"))),
    }
}

pub fn all() -> Vec<Box<dyn Workload>> {
    vec![
        Box::new(Register::default()),
        Box::new(Bank),
        Box::new(Set::default()),
        Box::new(Counter),
        Box::new(ListAppend::default()),
    ]
}

pub const NAMES: &[&str] = &["register", "bank", "set", "counter", "list-append"];

// ---------------------------------------------------------------------------------- register

/// Keys are used a few at a time, about `OPS_PER_KEY` operations each, so the per-key
/// linearizability search stays small however long the run.
#[derive(Default)]
pub struct Register {
    ops: AtomicU64,
}

const REGISTER: &str = "register";
const OPS_PER_KEY: u64 = 60;
const KEYS_AT_ONCE: u64 = 3;

impl Workload for Register {
    fn name(&self) -> &'static str {
        REGISTER
    }

    fn setup<'a>(&'a self, api: &'a Api) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(create_table(api, REGISTER, &["value"]))
    }

    fn generate(&self, rng: &mut StdRng) -> (&'static str, Value) {
        let n = self.ops.fetch_add(1, Ordering::Relaxed);
        let key = n / (OPS_PER_KEY * KEYS_AT_ONCE) * KEYS_AT_ONCE + rng.gen_range(0..KEYS_AT_ONCE);
        match rng.gen_range(0..4) {
            0 | 1 => ("read", json!([key, null])),
            2 => ("write", json!([key, rng.gen_range(0..5)])),
            _ => (
                "cas",
                json!([key, [rng.gen_range(0..5), rng.gen_range(0..5)]]),
            ),
        }
    }

    fn invoke<'a>(
        &'a self,
        api: &'a Api,
        node: u64,
        f: &'a str,
        value: &'a Value,
    ) -> BoxFuture<'a, Completion> {
        Box::pin(async move {
            let key = value[0].as_u64().unwrap_or(0);
            let row = format!("{}/r{key}", rows_path(REGISTER));
            match f {
                "read" => match api.get(node, &row).await {
                    Reply::Ok(v) => (Type::Ok, json!([key, v["value"]]), None),
                    // The row is absent (not the table, the database or the route).
                    Reply::Fail(404, t) if t == "row_not_found" || t == "document_not_found" => {
                        (Type::Ok, json!([key, null]), None)
                    }
                    other => unread(other, value),
                },
                "write" => written(
                    api.put(node, &row, json!({ "data": { "value": value[1] } }))
                        .await,
                    value,
                ),
                _ => {
                    let (old, new) = (&value[1][0], &value[1][1]);
                    let body = json!({
                        "data": { "value": new },
                        "queries": [
                            query("equal", Some("$id"), json!([format!("r{key}")])),
                            query("equal", Some("value"), json!([old])),
                        ],
                    });
                    match api.patch(node, &rows_path(REGISTER), body).await {
                        Reply::Ok(v) if v["total"] == 1 => (Type::Ok, value.clone(), None),
                        Reply::Ok(v) if v["total"] == 0 => {
                            (Type::Fail, value.clone(), Some("no match".into()))
                        }
                        Reply::Ok(v) => (
                            Type::Info,
                            value.clone(),
                            Some(format!("unexpected total {}", v["total"])),
                        ),
                        other => written(other, value),
                    }
                }
            }
        })
    }

    fn check(&self, history: &[Op]) -> Value {
        let r = check::linear::check(history, 2_000_000);
        // A run in which nothing was written or read proves nothing.
        let done = |f: &str| {
            crate::history::pairs(history)
                .iter()
                .filter(|p| p.invoke.f == f && p.outcome() == Type::Ok)
                .count()
        };
        let (writes, reads) = (done("write"), done("read"));
        json!({
            // A key too large to search is not a pass.
            "valid": r.valid && r.unchecked.is_empty() && writes > 0 && reads > 0,
            "ok-writes": writes,
            "ok-reads": reads,
            "keys": r.keys,
            "ops": r.ops,
            "unchecked-keys": r.unchecked,
            "failures": r.failures.iter().map(|f| json!({
                "key": f.key, "ops": f.ops, "reason": f.reason,
            })).collect::<Vec<_>>(),
        })
    }
}

// -------------------------------------------------------------------------------------- bank

pub struct Bank;

const BANK: &str = "accounts";
pub const ACCOUNTS: u64 = 5;
pub const BALANCE: i64 = 100;

impl Workload for Bank {
    fn name(&self) -> &'static str {
        "bank"
    }

    fn setup<'a>(&'a self, api: &'a Api) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            create_table(api, BANK, &["balance"]).await?;
            let rows: Vec<Value> = (0..ACCOUNTS)
                .map(|a| json!({ "$id": format!("a{a}"), "balance": BALANCE }))
                .collect();
            api.setup(
                reqwest::Method::POST,
                &rows_path(BANK),
                json!({ "rows": rows }),
            )
            .await?;
            Ok(())
        })
    }

    fn generate(&self, rng: &mut StdRng) -> (&'static str, Value) {
        if rng.gen_bool(0.4) {
            ("read", Value::Null)
        } else {
            let from = rng.gen_range(0..ACCOUNTS);
            let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
            (
                "transfer",
                json!({ "from": from, "to": to, "amount": rng.gen_range(1..=5) }),
            )
        }
    }

    fn invoke<'a>(
        &'a self,
        api: &'a Api,
        node: u64,
        f: &'a str,
        value: &'a Value,
    ) -> BoxFuture<'a, Completion> {
        Box::pin(async move {
            if f == "read" {
                let path = format!(
                    "{}?queries[]={}",
                    rows_path(BANK),
                    percent(&query("limit", None, json!([100])))
                );
                return match api.get(node, &path).await {
                    Reply::Ok(v) => {
                        let mut out = serde_json::Map::new();
                        for r in v["rows"].as_array().into_iter().flatten() {
                            if let Some(id) = r["$id"].as_str() {
                                out.insert(id.to_string(), r["balance"].clone());
                            }
                        }
                        (Type::Ok, Value::Object(out), None)
                    }
                    other => unread(other, value),
                };
            }
            transfer(api, node, value).await
        })
    }

    fn final_ops(&self) -> Vec<(&'static str, Value)> {
        vec![("read", Value::Null)]
    }

    fn check(&self, history: &[Op]) -> Value {
        check::bank(history, ACCOUNTS, BALANCE * ACCOUNTS as i64)
    }
}

/// A transfer: a transaction staging a decrement bounded at zero and an increment, then
/// committed.
async fn transfer(api: &Api, node: u64, value: &Value) -> Completion {
    let op = |action: &str, account: &Value, bound: Value| {
        let mut data = json!({ "column": "balance", "value": value["amount"] });
        if !bound.is_null() {
            data["min"] = bound;
        }
        json!({
            "action": action, "databaseId": DB, "tableId": BANK,
            "rowId": format!("a{account}"), "data": data,
        })
    };
    let ops = vec![
        op("decrement", &value["from"], json!(0)),
        op("increment", &value["to"], Value::Null),
    ];
    in_transaction(api, node, value, ops).await
}

/// Runs `operations` in one transaction: begin, stage, commit. Only the commit has an effect,
/// so it is the one step whose outcome may be unknown; a transaction that never reached it
/// certainly did nothing (it expires unused).
async fn in_transaction(api: &Api, node: u64, value: &Value, operations: Vec<Value>) -> Completion {
    let tx = match api
        .post(node, "/tablesdb/transactions", json!({ "ttl": 60 }))
        .await
    {
        Reply::Ok(t) => t["$id"].as_str().unwrap_or_default().to_string(),
        other => return (Type::Fail, value.clone(), Some(not_begun("begin", other))),
    };
    let staged = api
        .post(
            node,
            &format!("/tablesdb/transactions/{tx}/operations"),
            json!({ "operations": operations }),
        )
        .await;
    if !matches!(staged, Reply::Ok(_)) {
        return (Type::Fail, value.clone(), Some(not_begun("stage", staged)));
    }
    let committed = api
        .patch(
            node,
            &format!("/tablesdb/transactions/{tx}"),
            json!({ "commit": true }),
        )
        .await;
    written(committed, value)
}

/// A query parameter's value, percent-encoded.
fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// --------------------------------------------------------------------------------------- set

#[derive(Default)]
pub struct Set {
    next: AtomicU64,
}

const SET: &str = "elements";

impl Workload for Set {
    fn name(&self) -> &'static str {
        "set"
    }

    fn setup<'a>(&'a self, api: &'a Api) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(create_table(api, SET, &["v"]))
    }

    fn generate(&self, _rng: &mut StdRng) -> (&'static str, Value) {
        ("add", json!(self.next.fetch_add(1, Ordering::Relaxed)))
    }

    fn invoke<'a>(
        &'a self,
        api: &'a Api,
        node: u64,
        f: &'a str,
        value: &'a Value,
    ) -> BoxFuture<'a, Completion> {
        Box::pin(async move {
            if f == "add" {
                let body = json!({ "rowId": "unique()", "data": { "v": value } });
                return written(api.post(node, &rows_path(SET), body).await, value);
            }
            // The final read: every row, page by page in id order.
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = vec![
                    query("limit", None, json!([1000])),
                    query("orderAsc", Some("$id"), json!([])),
                ];
                if let Some(c) = &cursor {
                    q.push(query("cursorAfter", None, json!([c])));
                }
                let qs: Vec<String> = q
                    .iter()
                    .map(|q| format!("queries[]={}", percent(q)))
                    .collect();
                let path = format!("{}?{}", rows_path(SET), qs.join("&"));
                match api.get(node, &path).await {
                    Reply::Ok(v) => {
                        let rows = v["rows"].as_array().cloned().unwrap_or_default();
                        all.extend(rows.iter().map(|r| r["v"].clone()));
                        match rows.last().and_then(|r| r["$id"].as_str()) {
                            Some(id) if rows.len() == 1000 => cursor = Some(id.to_string()),
                            _ => break,
                        }
                    }
                    other => return unread(other, value),
                }
            }
            (Type::Ok, Value::Array(all), None)
        })
    }

    fn final_ops(&self) -> Vec<(&'static str, Value)> {
        vec![("read", Value::Null)]
    }

    fn check(&self, history: &[Op]) -> Value {
        check::set(history)
    }
}

// ----------------------------------------------------------------------------------- counter

pub struct Counter;

const COUNTER: &str = "counters";

impl Workload for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn setup<'a>(&'a self, api: &'a Api) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            create_table(api, COUNTER, &["n"]).await?;
            api.setup(
                reqwest::Method::POST,
                &rows_path(COUNTER),
                json!({ "rowId": "c", "data": { "n": 0 } }),
            )
            .await?;
            Ok(())
        })
    }

    fn generate(&self, rng: &mut StdRng) -> (&'static str, Value) {
        if rng.gen_bool(0.3) {
            ("read", Value::Null)
        } else {
            ("add", json!(rng.gen_range(1..=5)))
        }
    }

    fn invoke<'a>(
        &'a self,
        api: &'a Api,
        node: u64,
        f: &'a str,
        value: &'a Value,
    ) -> BoxFuture<'a, Completion> {
        Box::pin(async move {
            let row = format!("{}/c", rows_path(COUNTER));
            if f == "add" {
                let body = json!({ "value": value });
                return written(
                    api.patch(node, &format!("{row}/n/increment"), body).await,
                    value,
                );
            }
            match api.get(node, &row).await {
                Reply::Ok(v) => (Type::Ok, v["n"].clone(), None),
                other => unread(other, value),
            }
        })
    }

    fn final_ops(&self) -> Vec<(&'static str, Value)> {
        vec![("read", Value::Null)]
    }

    fn check(&self, history: &[Op]) -> Value {
        check::counter(history)
    }
}

// ------------------------------------------------------------------------------- list-append

/// Transactions are either appends (1 to 3, committed together in one transaction) or reads
/// (of 1 to 3 lists, one query: one snapshot). A few keys are in use at a time, each getting
/// about `APPENDS_PER_KEY` elements, so lists stay short.
#[derive(Default)]
pub struct ListAppend {
    ops: AtomicU64,
    next: AtomicU64,
}

const LISTS: &str = "lists";
const APPENDS_PER_KEY: u64 = 30;
const LIST_KEYS_AT_ONCE: u64 = 5;

impl Workload for ListAppend {
    fn name(&self) -> &'static str {
        "list-append"
    }

    fn setup<'a>(&'a self, api: &'a Api) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            create_table(api, LISTS, &[]).await?;
            api.setup(
                reqwest::Method::POST,
                &format!("/tablesdb/{DB}/tables/{LISTS}/columns/integer"),
                json!({ "key": "v", "required": false, "array": true }),
            )
            .await?;
            Ok(())
        })
    }

    fn generate(&self, rng: &mut StdRng) -> (&'static str, Value) {
        let n = self.ops.fetch_add(1, Ordering::Relaxed);
        // Half the operations append, so a key sees about twice APPENDS_PER_KEY operations.
        let base = n / (2 * APPENDS_PER_KEY * LIST_KEYS_AT_ONCE) * LIST_KEYS_AT_ONCE;
        let read = rng.gen_bool(0.5);
        let mops: Vec<Value> = (0..rng.gen_range(1..=3))
            .map(|_| {
                let k = base + rng.gen_range(0..LIST_KEYS_AT_ONCE);
                if read {
                    json!(["r", k, null])
                } else {
                    json!(["append", k, self.next.fetch_add(1, Ordering::Relaxed)])
                }
            })
            .collect();
        ("txn", Value::Array(mops))
    }

    fn invoke<'a>(
        &'a self,
        api: &'a Api,
        node: u64,
        _f: &'a str,
        value: &'a Value,
    ) -> BoxFuture<'a, Completion> {
        Box::pin(async move {
            let mops = value.as_array().cloned().unwrap_or_default();
            if mops.first().is_some_and(|m| m[0] == "r") {
                read_lists(api, node, value, &mops).await
            } else {
                append_lists(api, node, value, &mops).await
            }
        })
    }

    fn check(&self, history: &[Op]) -> Value {
        let r = check::elle::check(history);
        json!({
            "valid": r.valid,
            "txns": r.txns,
            "committed": r.committed,
            "counts": r.counts,
            "anomalies": r.anomalies.iter().map(|a| json!({
                "kind": a.kind, "explanation": a.explanation, "txns": a.txns,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A list's row id.
fn list_row(key: &Value) -> String {
    format!("k{key}")
}

/// Reads every list the transaction names in one query (one snapshot of the state).
async fn read_lists(api: &Api, node: u64, value: &Value, mops: &[Value]) -> Completion {
    let ids: Vec<String> = mops.iter().map(|m| list_row(&m[1])).collect();
    let q = [
        query("equal", Some("$id"), json!(ids)),
        query("limit", None, json!([100])),
    ];
    let qs: Vec<String> = q
        .iter()
        .map(|q| format!("queries[]={}", percent(q)))
        .collect();
    let path = format!("{}?{}", rows_path(LISTS), qs.join("&"));
    match api.get(node, &path).await {
        Reply::Ok(v) => {
            let rows = v["rows"].as_array().cloned().unwrap_or_default();
            let done: Vec<Value> = mops
                .iter()
                .map(|m| {
                    let id = list_row(&m[1]);
                    let list = rows
                        .iter()
                        .find(|r| r["$id"] == id.as_str())
                        .and_then(|r| r["v"].as_array().cloned())
                        .unwrap_or_default();
                    json!(["r", m[1], list])
                })
                .collect();
            (Type::Ok, Value::Array(done), None)
        }
        other => unread(other, value),
    }
}

/// Appends every element in one transaction: per element an upsert of its list's row whose
/// value is the `arrayAppend` operator (as the SDKs send it), committed together.
async fn append_lists(api: &Api, node: u64, value: &Value, mops: &[Value]) -> Completion {
    let ops: Vec<Value> = mops
        .iter()
        .map(|m| {
            let append = json!({ "method": "arrayAppend", "values": [m[2]] }).to_string();
            json!({
                "action": "upsert", "databaseId": DB, "tableId": LISTS,
                "rowId": list_row(&m[1]),
                "data": { "v": append },
            })
        })
        .collect();
    in_transaction(api, node, value, ops).await
}
