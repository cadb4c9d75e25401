//! Records a history as it happens: every event gets the next index and the time since the
//! run started, under one lock, so the history's order is the real-time order.

use crate::history::{Op, Process, Type};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Instant;

pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn push(
        &self,
        kind: Type,
        process: Process,
        f: &str,
        value: Value,
        node: Option<u64>,
        error: Option<String>,
    ) {
        let mut ops = self.ops.lock().expect("recorder lock");
        let index = ops.len();
        ops.push(Op {
            index,
            kind,
            process,
            f: f.to_string(),
            value,
            time: self.start.elapsed().as_nanos() as u64,
            node,
            error,
        });
    }

    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().expect("recorder lock").clone()
    }
}
