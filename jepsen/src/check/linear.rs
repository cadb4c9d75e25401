//! Linearizability of a key-partitioned register (Jepsen's "independent" register workload).
//!
//! Each key is an independent register that starts absent (`null`) and supports `read`,
//! `write` and `cas`. A history is linearizable iff every key's sub-history is, so each key is
//! checked on its own with the Wing–Gong–Lowe search: walk a linked list of call and return
//! entries in real-time order, linearise any operation whose call comes before the first
//! pending return, and backtrack when a return is reached whose operation could not be placed.
//! Lowe's memoisation of (set of linearised operations, register value) keeps the search from
//! re-exploring configurations it has already shown to be dead ends.
//!
//! How completions are read:
//! - `ok`: the operation took effect between its invocation and its completion;
//! - `fail`: it certainly did not take effect, so it is dropped (a failed `cas` included);
//! - `info` or never completed: it may have taken effect at any point after its invocation, or
//!   never. Such a write or cas has an infinite return time and is never forced into the
//!   order; such a read tells nothing and is dropped.
//!
//! Times are history indices (invocation index as call time, completion index as return
//! time): a history is in real-time order, so A precedes B iff A completed before B was
//! invoked.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::history::{pairs, Op, Pair, Process, Type};

/// A key whose sub-history is not linearizable (or is malformed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFailure {
    pub key: u64,
    /// Operations of this key that entered the check.
    pub ops: usize,
    /// The operation no linearisation reaches, with its history indices, and what the search
    /// saw at the furthest point it got to.
    pub reason: String,
}

/// The outcome of [`check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// True iff no key failed. Keys in `unchecked` do not count against it: they are neither
    /// shown linearizable nor shown not to be, and are reported there for the caller to judge.
    pub valid: bool,
    /// Distinct keys touched by register operations.
    pub keys: usize,
    /// Operations that entered the check, over all keys (failed ops and unknown reads are not
    /// counted: they are dropped before the search).
    pub ops: usize,
    /// Keys shown not linearizable, in key order.
    pub failures: Vec<KeyFailure>,
    /// Keys whose search exceeded `max_states` configurations, in key order.
    pub unchecked: Vec<u64>,
}

/// Checks every key of a register history for linearizability.
///
/// Operations other than `read`, `write` and `cas`, nemesis events, and invocations whose
/// value is not `[key, _]` with an integer key are ignored. A register operation on a
/// readable key whose argument or result has the wrong shape fails its key.
///
/// `max_states` bounds, per key, the number of distinct configurations the search may
/// explore; a key that needs more goes to [`Report::unchecked`].
pub fn check(history: &[Op], max_states: usize) -> Report {
    let mut keys: BTreeMap<u64, KeyOps> = BTreeMap::new();
    for pair in pairs(history) {
        let Some((key, contribution)) = classify(&pair) else {
            continue;
        };
        let entry = keys.entry(key).or_default();
        match contribution {
            Contribution::Skip => {}
            Contribution::Op(op) => entry.ops.push(op),
            Contribution::Malformed(why) => entry.malformed.push(why),
        }
    }

    let mut report = Report {
        valid: true,
        keys: keys.len(),
        ops: 0,
        failures: Vec::new(),
        unchecked: Vec::new(),
    };
    for (key, k) in keys {
        report.ops += k.ops.len();
        if let Some(first) = k.malformed.first() {
            let more = k.malformed.len() - 1;
            let reason = if more == 0 {
                first.clone()
            } else {
                format!("{first} (and {more} more malformed ops)")
            };
            report.failures.push(KeyFailure {
                key,
                ops: k.ops.len(),
                reason,
            });
            continue;
        }
        match search(&k.ops, max_states) {
            Outcome::Linearizable => {}
            Outcome::TooLarge => report.unchecked.push(key),
            Outcome::NotLinearizable(reason) => report.failures.push(KeyFailure {
                key,
                ops: k.ops.len(),
                reason,
            }),
        }
    }
    report.valid = report.failures.is_empty();
    report
}

/// What a register operation does, with the values it needs for a model step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Saw this value (`None`: the key was absent).
    Read(Option<i64>),
    Write(i64),
    /// Succeeded: the register held the first value and now holds the second.
    Cas(i64, i64),
}

/// One operation of a key's sub-history, as the search sees it.
#[derive(Clone, Debug)]
struct RegOp {
    kind: Kind,
    /// Invocation index.
    call: usize,
    /// Completion index; `None` for an operation that may take effect any time after `call`.
    ret: Option<usize>,
    /// How a human finds it in the history.
    label: String,
}

/// The register operations of one key.
#[derive(Default)]
struct KeyOps {
    ops: Vec<RegOp>,
    malformed: Vec<String>,
}

/// What one invocation contributes to its key.
enum Contribution {
    /// Certainly had no effect, or had none that can be observed (`fail`, unknown read).
    Skip,
    Op(RegOp),
    Malformed(String),
}

/// Reads a pair as a register operation; `None` if it is not one (another workload's op, or
/// no integer key to file it under).
fn classify(pair: &Pair<'_>) -> Option<(u64, Contribution)> {
    let inv = pair.invoke;
    if inv.process == Process::Nemesis {
        return None;
    }
    let f = inv.f.as_str();
    if !matches!(f, "read" | "write" | "cas") {
        return None;
    }
    let (key, arg) = split(&inv.value)?;
    let outcome = pair.outcome();
    if outcome == Type::Fail {
        return Some((key, Contribution::Skip));
    }
    let ok = outcome == Type::Ok;
    let end = match pair.complete {
        Some(c) => format!("{} at index {}", type_name(c.kind), c.index),
        None => "never completed".to_string(),
    };
    let malformed = |shown: &Value| {
        Contribution::Malformed(format!(
            "malformed {f} {shown} (process {}, invoked at index {}, {end})",
            process_name(inv.process),
            inv.index
        ))
    };
    let (kind, shown) = match f {
        "read" => {
            if !ok {
                return Some((key, Contribution::Skip));
            }
            let c = pair.complete?;
            match split(&c.value) {
                Some((k, v)) if k == key && (v.is_null() || v.as_i64().is_some()) => {
                    (Kind::Read(v.as_i64()), &c.value)
                }
                _ => return Some((key, malformed(&c.value))),
            }
        }
        "write" => match arg.as_i64() {
            Some(v) => (Kind::Write(v), &inv.value),
            None => return Some((key, malformed(&inv.value))),
        },
        _ => {
            let pair_of_ints = match arg.as_array().map(Vec::as_slice) {
                Some([e, n]) => e.as_i64().zip(n.as_i64()),
                _ => None,
            };
            match pair_of_ints {
                Some((e, n)) => (Kind::Cas(e, n), &inv.value),
                None => return Some((key, malformed(&inv.value))),
            }
        }
    };
    let ret = if ok {
        pair.complete.map(|c| c.index)
    } else {
        None
    };
    let label = format!(
        "{f} {shown} (process {}, invoked at index {}, {end})",
        process_name(inv.process),
        inv.index
    );
    Some((
        key,
        Contribution::Op(RegOp {
            kind,
            call: inv.index,
            ret,
            label,
        }),
    ))
}

/// Splits `[key, v]`; `None` unless it has exactly that shape with a non-negative integer key.
fn split(value: &Value) -> Option<(u64, &Value)> {
    match value.as_array()?.as_slice() {
        [k, v] => Some((k.as_u64()?, v)),
        _ => None,
    }
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Invoke => "invoke",
        Type::Ok => "ok",
        Type::Fail => "fail",
        Type::Info => "info",
    }
}

fn process_name(p: Process) -> String {
    match p {
        Process::Client(n) => n.to_string(),
        Process::Nemesis => "nemesis".to_string(),
    }
}

fn show_state(state: Option<i64>) -> String {
    state.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// The register's transition: the state after `kind`, or `None` if `kind` cannot happen in
/// `state`.
fn step(state: Option<i64>, kind: Kind) -> Option<Option<i64>> {
    match kind {
        Kind::Read(v) => (state == v).then_some(state),
        Kind::Write(v) => Some(Some(v)),
        Kind::Cas(expected, new) => (state == Some(expected)).then_some(Some(new)),
    }
}

/// End of the entry list.
const NIL: usize = usize::MAX;
/// The list's sentinel node; real entries are nodes `1..`.
const HEAD: usize = 0;

/// The WGL entry list as index arrays: a call entry per operation and a return entry per
/// operation with a finite return, sorted by time, doubly linked so that an operation's
/// entries can be lifted out and put back in O(1).
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation of each node.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// Each node's time (for the head: 0, unused).
    time: Vec<usize>,
    /// For a call node, its operation's return node, or `NIL` if its return is infinite.
    ret_node: Vec<usize>,
}

impl Entries {
    fn new(ops: &[RegOp]) -> Entries {
        let mut events: Vec<(usize, usize, bool)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, i, true));
            if let Some(r) = op.ret {
                events.push((r, i, false));
            }
        }
        events.sort_by_key(|&(t, _, _)| t);

        let nodes = events.len() + 1;
        let mut list = Entries {
            next: (1..=nodes)
                .map(|n| if n < nodes { n } else { NIL })
                .collect(),
            prev: (0..nodes)
                .map(|n| if n == 0 { NIL } else { n - 1 })
                .collect(),
            op: vec![NIL; nodes],
            is_call: vec![false; nodes],
            time: vec![0; nodes],
            ret_node: vec![NIL; nodes],
        };
        let mut call_node = vec![NIL; ops.len()];
        for (k, &(t, o, is_call)) in events.iter().enumerate() {
            let node = k + 1;
            list.op[node] = o;
            list.is_call[node] = is_call;
            list.time[node] = t;
            if is_call {
                call_node[o] = node;
            }
        }
        for (k, &(_, o, is_call)) in events.iter().enumerate() {
            if !is_call {
                list.ret_node[call_node[o]] = k + 1;
            }
        }
        list
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Undoes `unlink(x)`; valid while later unlinks have been undone first.
    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }

    /// Takes an operation's entries out of the list, given its call node.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let r = self.ret_node[call];
        if r != NIL {
            self.unlink(r);
        }
    }

    /// Puts back what `lift(call)` took out (in reverse order, so links restore exactly).
    fn unlift(&mut self, call: usize) {
        let r = self.ret_node[call];
        if r != NIL {
            self.relink(r);
        }
        self.relink(call);
    }

    /// The operations whose call nodes lie between the head and `node`.
    fn calls_before(&self, node: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut n = self.next[HEAD];
        while n != node && n != NIL {
            if self.is_call[n] {
                out.push(self.op[n]);
            }
            n = self.next[n];
        }
        out
    }
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1u64 << (i % 64);
}

fn clear_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1u64 << (i % 64));
}

/// Seen configurations: for each set of linearised operations, the register values reached.
type Cache = HashMap<Vec<u64>, Vec<Option<i64>>>;

/// Records a configuration; true if it had not been seen.
fn remember(cache: &mut Cache, bits: &[u64], state: Option<i64>) -> bool {
    match cache.get_mut(bits) {
        Some(states) if states.contains(&state) => false,
        Some(states) => {
            states.push(state);
            true
        }
        None => {
            cache.insert(bits.to_vec(), vec![state]);
            true
        }
    }
}

enum Outcome {
    Linearizable,
    NotLinearizable(String),
    TooLarge,
}

/// The deepest dead end of a failed search: the return entry it could not get past.
struct Furthest {
    ret: usize,
    op: usize,
    state: Option<i64>,
    /// Operations that could have gone next there.
    candidates: Vec<usize>,
}

/// How many candidate operations a failure reason lists.
const SHOWN: usize = 8;

/// Searches for a linearisation of one key's operations (WGL with Lowe's memoisation).
///
/// Operations with an infinite return never get a return entry, so they are never forced:
/// the search succeeds as soon as every operation with a finite return is linearised.
fn search(ops: &[RegOp], max_states: usize) -> Outcome {
    let mut list = Entries::new(ops);
    let finite = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut done = 0usize;
    let mut bits = vec![0u64; ops.len().div_ceil(64)];
    let mut state: Option<i64> = None;
    // Each lifted call node with the register value before it.
    let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
    let mut cache = Cache::new();
    let mut configs = 0usize;
    let mut furthest: Option<Furthest> = None;
    let mut entry = list.next[HEAD];

    while done < finite {
        // While a finite operation is unlinearised its return entry is in the list, after
        // every call the walk passes, so the walk cannot run off the end.
        if entry == NIL {
            // Cannot happen (see above); if it ever did, the search proved nothing.
            return Outcome::TooLarge;
        }
        let o = list.op[entry];
        if list.is_call[entry] {
            if let Some(after) = step(state, ops[o].kind) {
                set_bit(&mut bits, o);
                if remember(&mut cache, &bits, after) {
                    configs += 1;
                    if configs > max_states {
                        return Outcome::TooLarge;
                    }
                    stack.push((entry, state));
                    state = after;
                    list.lift(entry);
                    if ops[o].ret.is_some() {
                        done += 1;
                    }
                    entry = list.next[HEAD];
                    continue;
                }
                clear_bit(&mut bits, o);
            }
            entry = list.next[entry];
        } else {
            // `o` returns here unlinearised: this configuration is a dead end.
            let ret = list.time[entry];
            let further = match &furthest {
                None => true,
                Some(f) => ret > f.ret,
            };
            if further {
                furthest = Some(Furthest {
                    ret,
                    op: o,
                    state,
                    candidates: list.calls_before(entry),
                });
            }
            let Some((call, before)) = stack.pop() else {
                let f = furthest
                    .as_ref()
                    .expect("recorded at this dead end or an earlier one");
                return Outcome::NotLinearizable(explain(ops, f));
            };
            let lo = list.op[call];
            list.unlift(call);
            clear_bit(&mut bits, lo);
            if ops[lo].ret.is_some() {
                done -= 1;
            }
            state = before;
            entry = list.next[call];
        }
    }
    Outcome::Linearizable
}

/// A failure reason naming the operation no linearisation reaches and the furthest state.
fn explain(ops: &[RegOp], f: &Furthest) -> String {
    let shown: Vec<&str> = f
        .candidates
        .iter()
        .take(SHOWN)
        .map(|&i| ops[i].label.as_str())
        .collect();
    let more = f.candidates.len().saturating_sub(SHOWN);
    let tail = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} cannot be linearised: no order of the operations before it reaches its completion. \
         At the furthest point the search reached, the register held {} and the operations \
         that could go next were: {}{}",
        ops[f.op].label,
        show_state(f.state),
        shown.join("; "),
        tail
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: usize = 5_000_000;

    /// Builds a history, numbering events in the order they are added.
    #[derive(Default)]
    struct H(Vec<Op>);

    impl H {
        fn ev(&mut self, p: u64, kind: Type, f: &str, value: Value) -> usize {
            let index = self.0.len();
            self.0.push(Op {
                index,
                kind,
                process: Process::Client(p),
                f: f.into(),
                value,
                time: index as u64,
                node: None,
                error: None,
            });
            index
        }
        fn inv(&mut self, p: u64, f: &str, value: Value) -> usize {
            self.ev(p, Type::Invoke, f, value)
        }
        fn ok(&mut self, p: u64, f: &str, value: Value) -> usize {
            self.ev(p, Type::Ok, f, value)
        }
        /// A whole operation that completes `ok` before anything else happens.
        fn seq(&mut self, p: u64, f: &str, arg: Value, result: Value) -> usize {
            let i = self.inv(p, f, arg);
            self.ok(p, f, result);
            i
        }
        fn write(&mut self, p: u64, k: u64, v: i64) -> usize {
            self.seq(p, "write", json!([k, v]), json!([k, v]))
        }
        fn read(&mut self, p: u64, k: u64, v: Value) -> usize {
            self.seq(p, "read", json!([k, null]), json!([k, v]))
        }
        fn check(&self) -> Report {
            check(&self.0, LIMIT)
        }
    }

    fn assert_valid(r: &Report) {
        assert!(r.valid, "{r:?}");
        assert!(r.failures.is_empty() && r.unchecked.is_empty(), "{r:?}");
    }

    fn assert_invalid(r: &Report) -> &KeyFailure {
        assert!(!r.valid, "{r:?}");
        assert_eq!(r.failures.len(), 1, "{r:?}");
        &r.failures[0]
    }

    #[test]
    fn sequential_history_is_valid() {
        let mut h = H::default();
        h.read(0, 0, json!(null));
        h.write(0, 0, 1);
        h.ev(9, Type::Info, "add", json!(5)); // another workload's op: ignored
        h.0.push(Op {
            index: h.0.len(),
            kind: Type::Info,
            process: Process::Nemesis,
            f: "kill".into(),
            value: json!([0, 7]),
            time: 0,
            node: None,
            error: None,
        });
        h.read(1, 0, json!(1));
        h.seq(0, "cas", json!([0, [1, 2]]), json!([0, [1, 2]]));
        h.read(1, 0, json!(2));
        let r = h.check();
        assert_valid(&r);
        assert_eq!((r.keys, r.ops), (1, 5));
    }

    #[test]
    fn concurrent_write_and_read_linearise_either_way() {
        for seen in [json!(null), json!(1)] {
            let mut h = H::default();
            h.inv(0, "write", json!([0, 1]));
            h.inv(1, "read", json!([0, null]));
            h.ok(1, "read", json!([0, seen]));
            h.ok(0, "write", json!([0, 1]));
            assert_valid(&h.check());
        }
    }

    #[test]
    fn stale_read_is_invalid() {
        let mut h = H::default();
        h.write(0, 0, 1);
        h.write(0, 0, 2);
        let r = h.read(1, 0, json!(1));
        let report = h.check();
        let f = assert_invalid(&report);
        assert_eq!(f.key, 0);
        assert!(
            f.reason
                .starts_with(&format!("read [0,1] (process 1, invoked at index {r}")),
            "{}",
            f.reason
        );
        assert!(f.reason.contains("register held 2"), "{}", f.reason);
    }

    #[test]
    fn read_of_never_written_value_is_invalid() {
        let mut h = H::default();
        h.read(0, 0, json!(5));
        let report = h.check();
        let f = assert_invalid(&report);
        assert!(f.reason.contains("register held null"), "{}", f.reason);

        // Absent again after a write is just as wrong.
        let mut h = H::default();
        h.write(0, 0, 1);
        h.read(0, 0, json!(null));
        assert_invalid(&h.check());
    }

    #[test]
    fn cas_semantics() {
        // A successful cas moves the register; a failed one is dropped.
        let mut h = H::default();
        h.write(0, 0, 1);
        h.seq(0, "cas", json!([0, [1, 2]]), json!([0, [1, 2]]));
        h.inv(1, "cas", json!([0, [5, 6]]));
        h.ev(1, Type::Fail, "cas", json!([0, [5, 6]]));
        h.read(1, 0, json!(2));
        assert_valid(&h.check());

        // A cas that succeeded against a value the register did not hold.
        let mut h = H::default();
        h.write(0, 0, 2);
        h.seq(0, "cas", json!([0, [5, 6]]), json!([0, [5, 6]]));
        assert_invalid(&h.check());

        // A cas on an absent key cannot succeed.
        let mut h = H::default();
        h.seq(0, "cas", json!([0, [0, 1]]), json!([0, [0, 1]]));
        assert_invalid(&h.check());

        // A read after a successful cas must not see the old value.
        let mut h = H::default();
        h.write(0, 0, 1);
        h.seq(0, "cas", json!([0, [1, 2]]), json!([0, [1, 2]]));
        h.read(0, 0, json!(1));
        assert_invalid(&h.check());

        // An unknown cas that could never apply is not forced.
        let mut h = H::default();
        h.write(0, 0, 1);
        h.inv(1, "cas", json!([0, [7, 8]]));
        h.ev(1, Type::Info, "cas", json!([0, [7, 8]]));
        h.read(2, 0, json!(1));
        assert_valid(&h.check());
    }

    #[test]
    fn info_writes_may_or_may_not_happen() {
        // Observed long after it timed out.
        let mut h = H::default();
        h.write(0, 0, 1);
        h.inv(1, "write", json!([0, 2]));
        h.ev(1, Type::Info, "write", json!([0, 2]));
        h.read(2, 0, json!(1));
        h.read(2, 0, json!(2));
        assert_valid(&h.check());

        // Never observed.
        let mut h = H::default();
        h.write(0, 0, 1);
        h.inv(1, "write", json!([0, 2]));
        h.ev(1, Type::Info, "write", json!([0, 2]));
        h.read(2, 0, json!(1));
        assert_valid(&h.check());

        // Never completed, observed.
        let mut h = H::default();
        h.inv(1, "write", json!([0, 3]));
        h.read(2, 0, json!(3));
        assert_valid(&h.check());

        // But it happens at most once: once seen, the value it replaced cannot come back.
        let mut h = H::default();
        h.write(0, 0, 1);
        h.inv(1, "write", json!([0, 2]));
        h.ev(1, Type::Info, "write", json!([0, 2]));
        h.read(2, 0, json!(2));
        h.read(2, 0, json!(1));
        assert_invalid(&h.check());

        // An unknown read tells nothing, whatever it carries.
        let mut h = H::default();
        h.inv(1, "read", json!([0, null]));
        h.ev(1, Type::Info, "read", json!([0, 42]));
        assert_valid(&h.check());
    }

    #[test]
    fn failed_write_never_happened() {
        let mut h = H::default();
        h.inv(0, "write", json!([0, 3]));
        h.ev(0, Type::Fail, "write", json!([0, 3]));
        h.read(1, 0, json!(3));
        assert_invalid(&h.check());
    }

    #[test]
    fn only_the_bad_key_fails() {
        let mut h = H::default();
        h.write(0, 1, 10);
        h.write(0, 2, 20);
        h.write(1, 2, 21);
        h.read(1, 1, json!(10));
        h.read(0, 2, json!(20));
        let report = h.check();
        let f = assert_invalid(&report);
        assert_eq!(f.key, 2);
        assert_eq!(f.ops, 3);
        assert_eq!((report.keys, report.ops), (2, 5));
    }

    #[test]
    fn search_bound_reports_unchecked_not_failed() {
        let mut h = H::default();
        h.write(0, 4, 1);
        h.read(0, 4, json!(1));
        let r = check(&h.0, 1);
        assert!(r.valid && r.failures.is_empty(), "{r:?}");
        assert_eq!(r.unchecked, vec![4]);
    }

    #[test]
    fn malformed_ops_fail_their_key() {
        let mut h = H::default();
        h.seq(0, "write", json!([0, "x"]), json!([0, "x"]));
        let report = h.check();
        let f = assert_invalid(&report);
        assert!(f.reason.starts_with("malformed write"), "{}", f.reason);
    }

    /// xorshift64: enough randomness for histories, reproducible from the seed.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
    }

    /// An operation in flight: its function, invocation value, and, once it has taken
    /// effect, its completion (`None`: a cas whose precondition did not hold).
    struct InFlight {
        f: &'static str,
        arg: Value,
        effect: Option<Option<Value>>,
    }

    /// Three clients on two keys of a real register; each op takes effect atomically at a
    /// random point between its invocation and completion. Some ops end `info` (taken effect
    /// or not) and their client is replaced; some are left pending at the end.
    fn simulate(seed: u64, steps: usize) -> Vec<Op> {
        let mut rng = Rng::new(seed);
        let mut h = H::default();
        let mut reg: [Option<i64>; 2] = [None, None];
        let mut fresh = 1i64;
        let mut ids: [u64; 3] = [0, 1, 2];
        let mut next_id = 3u64;
        let mut slots: [Option<InFlight>; 3] = [None, None, None];
        for _ in 0..steps {
            let s = rng.below(3) as usize;
            let p = ids[s];
            match slots[s].take() {
                None => {
                    let k = rng.below(2);
                    let (f, arg) = match rng.below(3) {
                        0 => ("read", json!([k, null])),
                        1 => {
                            fresh += 1;
                            ("write", json!([k, fresh]))
                        }
                        _ => {
                            let expected = match (rng.below(2), reg[k as usize]) {
                                (0, Some(v)) => v,
                                _ => rng.below(fresh as u64 + 1) as i64,
                            };
                            fresh += 1;
                            ("cas", json!([k, [expected, fresh]]))
                        }
                    };
                    h.inv(p, f, arg.clone());
                    slots[s] = Some(InFlight {
                        f,
                        arg,
                        effect: None,
                    });
                }
                Some(op) if op.effect.is_none() && rng.below(20) == 0 => {
                    // Times out before taking effect.
                    h.ev(p, Type::Info, op.f, op.arg);
                    ids[s] = next_id;
                    next_id += 1;
                }
                Some(mut op) if op.effect.is_none() => {
                    let k = op.arg[0].as_u64().unwrap() as usize;
                    let result = match op.f {
                        "read" => Some(json!([k, reg[k]])),
                        "write" => {
                            reg[k] = op.arg[1].as_i64();
                            Some(op.arg.clone())
                        }
                        _ => {
                            let (e, n) = (op.arg[1][0].as_i64(), op.arg[1][1].as_i64());
                            if reg[k] == e {
                                reg[k] = n;
                                Some(op.arg.clone())
                            } else {
                                None
                            }
                        }
                    };
                    op.effect = Some(result);
                    slots[s] = Some(op);
                }
                Some(op) => {
                    if rng.below(20) == 0 {
                        // Times out after taking effect.
                        h.ev(p, Type::Info, op.f, op.arg);
                        ids[s] = next_id;
                        next_id += 1;
                    } else {
                        match op.effect.flatten() {
                            Some(v) => h.ok(p, op.f, v),
                            None => h.ev(p, Type::Fail, op.f, op.arg),
                        };
                    }
                }
            }
        }
        h.0
    }

    #[test]
    fn simulated_histories_are_valid_until_a_read_is_corrupted() {
        for seed in 1..=30u64 {
            let mut history = simulate(seed, 240);
            let report = check(&history, LIMIT);
            assert_valid(&report);

            // Corrupt an ok read in the middle to a value no write ever wrote.
            let reads: Vec<usize> = history
                .iter()
                .filter(|o| o.kind == Type::Ok && o.f == "read")
                .map(|o| o.index)
                .collect();
            assert!(!reads.is_empty(), "seed {seed}: no ok read");
            let at = reads[reads.len() / 2];
            let key = history[at].value[0].as_u64().unwrap();
            history[at].value = json!([key, -1]);
            let report = check(&history, LIMIT);
            assert!(report.unchecked.is_empty(), "seed {seed}: {report:?}");
            let f = assert_invalid(&report);
            assert_eq!(f.key, key, "seed {seed}");
            assert!(
                f.reason.starts_with(&format!("read [{key},-1] ")),
                "seed {seed}: {}",
                f.reason
            );
        }
    }
}
