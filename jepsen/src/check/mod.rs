//! Checkers: each reads a workload's history and says whether it could have come from a
//! correct system, and if not, where it went wrong.

pub mod elle;
pub mod linear;

use crate::history::{pairs, Op, Type};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many examples of each kind of error in a verdict.
const EXAMPLES: usize = 10;

/// Bank: every successful read sees every account, none negative, summing to `total`.
pub fn bank(history: &[Op], accounts: u64, total: i64) -> Value {
    let (mut reads, mut bad) = (0usize, Vec::new());
    let mut bad_count = 0usize;
    for p in pairs(history) {
        if p.invoke.f != "read" || p.outcome() != Type::Ok {
            continue;
        }
        reads += 1;
        let value = &p.complete.expect("ok").value;
        let balances: Vec<Option<i64>> = value
            .as_object()
            .map(|m| m.values().map(Value::as_i64).collect())
            .unwrap_or_default();
        let sum: i64 = balances.iter().flatten().sum();
        let problem = if balances.len() as u64 != accounts {
            Some(format!("{} accounts, not {accounts}", balances.len()))
        } else if balances.iter().any(Option::is_none) {
            Some("a balance that is not an integer".into())
        } else if balances.iter().flatten().any(|b| *b < 0) {
            Some("a negative balance".into())
        } else if sum != total {
            Some(format!("total {sum}, not {total}"))
        } else {
            None
        };
        if let Some(why) = problem {
            bad_count += 1;
            if bad.len() < EXAMPLES {
                bad.push(json!({ "index": p.invoke.index, "problem": why, "read": value }));
            }
        }
    }
    let transfers = outcomes(history, "transfer");
    json!({
        "valid": bad_count == 0 && reads > 0,
        "reads": reads,
        "bad-reads": bad_count,
        "examples": bad,
        "transfers": transfers,
        "note": if reads == 0 { "no read succeeded" } else { "" },
    })
}

/// Counts of each outcome of the operations named `f`.
fn outcomes(history: &[Op], f: &str) -> Value {
    let mut c: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pairs(history).iter().filter(|p| p.invoke.f == f) {
        *c.entry(match p.outcome() {
            Type::Ok => "ok",
            Type::Fail => "fail",
            _ => "info",
        })
        .or_default() += 1;
    }
    json!(c)
}

/// Set: the last successful read holds every acknowledged element, nothing that was never
/// attempted or whose insert certainly failed, and nothing twice (an insert applied twice).
pub fn set(history: &[Op]) -> Value {
    let ps = pairs(history);
    let mut attempted = BTreeSet::new();
    let (mut acked, mut unsure) = (BTreeSet::new(), BTreeSet::new());
    for p in ps.iter().filter(|p| p.invoke.f == "add") {
        let Some(e) = p.invoke.value.as_i64() else {
            continue;
        };
        match p.outcome() {
            Type::Ok => {
                acked.insert(e);
            }
            Type::Info | Type::Invoke => {
                unsure.insert(e);
            }
            Type::Fail => continue,
        }
        attempted.insert(e);
    }
    let Some(read) = ps
        .iter()
        .rev()
        .find(|p| p.invoke.f == "read" && p.outcome() == Type::Ok)
    else {
        return json!({ "valid": false, "error": "no final read succeeded", "possible": attempted.len() });
    };
    let mut present: BTreeMap<i64, usize> = BTreeMap::new();
    let mut malformed = 0usize;
    for v in read
        .complete
        .expect("ok")
        .value
        .as_array()
        .into_iter()
        .flatten()
    {
        match v.as_i64() {
            Some(e) => *present.entry(e).or_default() += 1,
            None => malformed += 1,
        }
    }
    let lost: Vec<i64> = acked
        .iter()
        .filter(|e| !present.contains_key(e))
        .copied()
        .collect();
    let unexpected: Vec<i64> = present
        .keys()
        .filter(|e| !attempted.contains(e))
        .copied()
        .collect();
    let duplicated: Vec<i64> = present
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(e, _)| *e)
        .collect();
    let recovered = unsure.iter().filter(|e| present.contains_key(e)).count();
    json!({
        "valid": lost.is_empty()
            && unexpected.is_empty()
            && duplicated.is_empty()
            && malformed == 0
            && !acked.is_empty(),
        "possible": attempted.len(),
        "acknowledged": acked.len(),
        "unknown": unsure.len(),
        "recovered": recovered,
        "lost-count": lost.len(),
        "lost": lost.iter().take(EXAMPLES).collect::<Vec<_>>(),
        "unexpected-count": unexpected.len(),
        "unexpected": unexpected.iter().take(EXAMPLES).collect::<Vec<_>>(),
        "duplicated-count": duplicated.len(),
        "duplicated": duplicated.iter().take(EXAMPLES).collect::<Vec<_>>(),
        "malformed": malformed,
    })
}

/// Counter: each successful read is at least the sum of the increments acknowledged before
/// it began, and at most the sum of those attempted (not failed) before it ended; and, every
/// increment being positive, at least every read that completed before it began.
pub fn counter(history: &[Op]) -> Value {
    let ps = pairs(history);
    // (completion index, amount) of acknowledged adds; (invoke index, amount) of adds that
    // may have happened.
    let mut acked: Vec<(usize, i64)> = Vec::new();
    let mut possible: Vec<(usize, i64)> = Vec::new();
    for p in ps.iter().filter(|p| p.invoke.f == "add") {
        let by = p.invoke.value.as_i64().unwrap_or(0);
        match p.outcome() {
            Type::Ok => {
                acked.push((p.complete.expect("ok").index, by));
                possible.push((p.invoke.index, by));
            }
            Type::Fail => {}
            _ => possible.push((p.invoke.index, by)),
        }
    }
    let (mut reads, mut bad, mut bad_count, mut last) = (0usize, Vec::new(), 0usize, None);
    // (completion index, value) of the successful reads.
    let read_values: Vec<(usize, i64)> = ps
        .iter()
        .filter(|p| p.invoke.f == "read" && p.outcome() == Type::Ok)
        .filter_map(|p| Some((p.complete?.index, p.complete?.value.as_i64()?)))
        .collect();
    for p in ps
        .iter()
        .filter(|p| p.invoke.f == "read" && p.outcome() == Type::Ok)
    {
        reads += 1;
        let done = p.complete.expect("ok");
        let value = done.value.as_i64();
        let earlier = read_values
            .iter()
            .filter(|(i, _)| *i < p.invoke.index)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(i64::MIN);
        let lower: i64 = acked
            .iter()
            .filter(|(i, _)| *i < p.invoke.index)
            .map(|(_, b)| b)
            .sum::<i64>()
            .max(earlier);
        let upper: i64 = possible
            .iter()
            .filter(|(i, _)| *i < done.index)
            .map(|(_, b)| b)
            .sum();
        last = value;
        if !value.is_some_and(|v| lower <= v && v <= upper) {
            bad_count += 1;
            if bad.len() < EXAMPLES {
                bad.push(json!({ "index": p.invoke.index, "read": done.value, "lower": lower, "upper": upper }));
            }
        }
    }
    json!({
        "valid": bad_count == 0 && reads > 0 && !acked.is_empty(),
        "reads": reads,
        "bad-reads": bad_count,
        "examples": bad,
        "final": last,
        "acknowledged-sum": acked.iter().map(|(_, b)| b).sum::<i64>(),
        "attempted-sum": possible.iter().map(|(_, b)| b).sum::<i64>(),
        "adds": outcomes(history, "add"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Process;

    /// A history from (process, type, f, value) events, indexed in order.
    fn h(events: &[(u64, Type, &str, Value)]) -> Vec<Op> {
        events
            .iter()
            .enumerate()
            .map(|(i, (p, t, f, v))| Op {
                index: i,
                kind: *t,
                process: Process::Client(*p),
                f: f.to_string(),
                value: v.clone(),
                time: i as u64,
                node: None,
                error: None,
            })
            .collect()
    }
    use Type::*;

    #[test]
    fn bank_reads_must_sum_to_the_total() {
        let good = json!({"a0": 7, "a1": 3});
        let ok = h(&[(0, Invoke, "read", json!(null)), (0, Ok, "read", good)]);
        assert_eq!(bank(&ok, 2, 10)["valid"], true);
        let off = h(&[
            (0, Invoke, "read", json!(null)),
            (0, Ok, "read", json!({"a0": 8, "a1": 3})),
        ]);
        assert_eq!(bank(&off, 2, 10)["valid"], false);
        let negative = h(&[
            (0, Invoke, "read", json!(null)),
            (0, Ok, "read", json!({"a0": 11, "a1": -1})),
        ]);
        assert_eq!(bank(&negative, 2, 10)["valid"], false);
        let missing = h(&[
            (0, Invoke, "read", json!(null)),
            (0, Ok, "read", json!({"a0": 10})),
        ]);
        assert_eq!(bank(&missing, 2, 10)["valid"], false);
        // A failed read proves nothing either way; no read at all is not a pass.
        let none = h(&[
            (0, Invoke, "read", json!(null)),
            (0, Fail, "read", json!(null)),
        ]);
        assert_eq!(bank(&none, 2, 10)["valid"], false);
    }

    #[test]
    fn set_finds_lost_unexpected_and_duplicated_elements() {
        let run = |read: Value| {
            set(&h(&[
                (0, Invoke, "add", json!(1)),
                (0, Ok, "add", json!(1)),
                (1, Invoke, "add", json!(2)),
                (1, Info, "add", json!(2)),
                (2, Invoke, "add", json!(3)),
                (2, Fail, "add", json!(3)),
                (3, Invoke, "read", json!(null)),
                (3, Ok, "read", read),
            ]))
        };
        assert_eq!(run(json!([1]))["valid"], true);
        let r = run(json!([1, 2]));
        assert_eq!(
            (r["valid"].clone(), r["recovered"].clone()),
            (json!(true), json!(1))
        );
        assert_eq!(run(json!([2]))["lost"], json!([1]));
        assert_eq!(run(json!([1, 9]))["unexpected"], json!([9]));
        assert_eq!(
            run(json!([1, 3]))["unexpected"],
            json!([3]),
            "a failed insert took effect"
        );
        assert_eq!(run(json!([1, 1]))["duplicated"], json!([1]));
        assert_eq!(run(json!([1, 1]))["valid"], false);
    }

    #[test]
    fn counter_reads_are_bounded() {
        let hist = |read: i64| {
            h(&[
                (0, Invoke, "add", json!(2)),
                (0, Ok, "add", json!(2)),
                (1, Invoke, "add", json!(5)),
                (2, Invoke, "read", json!(null)),
                (2, Ok, "read", json!(read)),
                (1, Info, "add", json!(5)),
                (3, Invoke, "add", json!(100)),
                (3, Fail, "add", json!(100)),
            ])
        };
        assert_eq!(counter(&hist(2))["valid"], true);
        assert_eq!(counter(&hist(7))["valid"], true);
        assert_eq!(
            counter(&hist(1))["valid"],
            false,
            "an acknowledged add is missing"
        );
        assert_eq!(
            counter(&hist(8))["valid"],
            false,
            "more than was ever attempted"
        );
        assert_eq!(
            counter(&hist(107))["valid"],
            false,
            "a failed add took effect"
        );
    }

    #[test]
    fn counter_reads_never_go_back() {
        // Both reads are within the bounds alone, but the second began after the first
        // saw 7, and nothing decrements.
        let h = h(&[
            (0, Invoke, "add", json!(2)),
            (0, Ok, "add", json!(2)),
            (1, Invoke, "add", json!(5)),
            (2, Invoke, "read", json!(null)),
            (2, Ok, "read", json!(7)),
            (3, Invoke, "read", json!(null)),
            (3, Ok, "read", json!(2)),
            (1, Info, "add", json!(5)),
        ]);
        assert_eq!(counter(&h)["valid"], false);
        assert_eq!(counter(&h)["bad-reads"], 1);
    }
}
