//! Histories in Jepsen's shape: every client operation is an `invoke` followed by its
//! completion, `ok` (it happened), `fail` (it certainly did not) or `info` (unknown: a timeout,
//! a dropped connection). A process whose operation ended `info` is never reused, so each
//! process has at most one operation in flight, and an `info` op may take effect at any time
//! after its invocation, or never.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// Who performed an operation: a client process (a number, as Jepsen's) or the nemesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Client(u64),
    Nemesis,
}

impl Serialize for Process {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(n) => s.serialize_u64(*n),
            Process::Nemesis => s.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(Process::Client)
                .ok_or_else(|| serde::de::Error::custom("process must be a non-negative integer")),
            Value::String(s) if s == "nemesis" => Ok(Process::Nemesis),
            other => Err(serde::de::Error::custom(format!("bad process {other}"))),
        }
    }
}

/// One event of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history (0, 1, 2, ...).
    pub index: usize,
    #[serde(rename = "type")]
    pub kind: Type,
    pub process: Process,
    /// The function: `read`, `write`, `cas`, `add`, `transfer`, `txn`, ... or a nemesis's.
    pub f: String,
    /// The argument on `invoke`; the result on `ok` (e.g. the value read).
    pub value: Value,
    /// Nanoseconds since the run started.
    pub time: u64,
    /// The node the client talked to (1-based), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// Why an operation failed or is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An invocation paired with its completion (`None`: still pending when the history ended,
/// which counts as `info`).
#[derive(Clone, Debug)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    pub complete: Option<&'a Op>,
}

impl Pair<'_> {
    /// The completion's type, `Info` for an operation that never completed.
    pub fn outcome(&self) -> Type {
        self.complete.map_or(Type::Info, |c| c.kind)
    }
}

/// Pairs each client invocation with the next completion of the same process, in history
/// order. Nemesis events are skipped.
pub fn pairs(history: &[Op]) -> Vec<Pair<'_>> {
    let mut open: std::collections::HashMap<Process, usize> = Default::default();
    let mut out: Vec<Pair<'_>> = Vec::new();
    for op in history {
        if op.process == Process::Nemesis {
            continue;
        }
        match op.kind {
            Type::Invoke => {
                open.insert(op.process, out.len());
                out.push(Pair {
                    invoke: op,
                    complete: None,
                });
            }
            _ => {
                if let Some(i) = open.remove(&op.process) {
                    out[i].complete = Some(op);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(index: usize, kind: Type, process: Process, f: &str, value: Value) -> Op {
        Op {
            index,
            kind,
            process,
            f: f.into(),
            value,
            time: index as u64,
            node: None,
            error: None,
        }
    }

    #[test]
    fn processes_serialize_as_jepsen_does() {
        let a = op(0, Type::Invoke, Process::Client(3), "read", json!(null));
        let s = serde_json::to_string(&a).unwrap();
        assert!(
            s.contains(r#""type":"invoke""#) && s.contains(r#""process":3"#),
            "{s}"
        );
        let n = op(1, Type::Info, Process::Nemesis, "kill", json!([1]));
        let back: Op = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn pairs_follow_each_process() {
        let h = vec![
            op(0, Type::Invoke, Process::Client(0), "write", json!(1)),
            op(1, Type::Invoke, Process::Client(1), "read", json!(null)),
            op(2, Type::Info, Process::Nemesis, "kill", json!(null)),
            op(3, Type::Ok, Process::Client(1), "read", json!(0)),
            op(4, Type::Invoke, Process::Client(2), "write", json!(2)),
            op(5, Type::Ok, Process::Client(0), "write", json!(1)),
        ];
        let p = pairs(&h);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].complete.unwrap().index, 5);
        assert_eq!(p[1].complete.unwrap().index, 3);
        assert!(p[2].complete.is_none());
        assert_eq!(p[2].outcome(), Type::Info);
    }
}
