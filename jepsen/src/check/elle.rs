//! Transactional isolation of a list-append history, in the manner of Elle (Kingsbury &
//! Alvaro, "Elle: Inferring Isolation Anomalies from Experimental Observations").
//!
//! Each operation is a transaction, `f = "txn"`, whose value is a list of micro-operations:
//! `["append", key, v]` or `["r", key, list]` (keys and values are integers; `list` is `null`
//! on invocation and the list read on an `ok` completion). Every appended value is unique per
//! key, so a value read names the transaction that appended it, and because a key's value is
//! the list of everything appended to it, the longest read of a key shows the order in which
//! its appends took effect (its version order) — every other read must be a prefix of it.
//!
//! How completions are read:
//! - `ok`: the transaction committed; its reads are known.
//! - `fail`: it certainly did not commit; reading one of its appends is an aborted read (G1a).
//! - `info` or never completed: unknown. Its reads are unknown; it counts as committed only if
//!   some read observed one of its appends.
//!
//! Checks, each reported under its name:
//! - `duplicate-elements`: a read list holding a value more than once;
//! - `incompatible-order`: a read of a key that is not a prefix of the longest read of it;
//! - `G1a`: a read observing an append of a failed transaction;
//! - `G1b`: a read ending in a value that its writer followed with another append to the key;
//! - `internal`: a read inconsistent with the transaction's own earlier read and appends;
//! - `garbage-read`: a read observing a value no transaction appended;
//! - `malformed`: a transaction whose value has not the shape above (it cannot be checked);
//! - cycles in the dependency graph over committed transactions: `G0` (write-write edges
//!   only), `G1c` (write-write and write-read, at least one write-read), `G-single` (exactly
//!   one read-write anti-dependency), `G2` (more than one).
//!
//! The graph has three kinds of edges, inferred per key from the version order; keys with
//! duplicate elements or incompatible reads are left out of it (their version order is not
//! known):
//! - `ww`: A appended element i and B element i+1 (B's append directly followed A's);
//! - `wr`: B read a list ending in A's append;
//! - `rw`: A read a list ending at element i (or the empty list) and B appended element i+1
//!   (A did not see B's append, so A precedes B).
//!
//! Real-time edges are not used, so this checks serializability, not strict serializability.
//! Transactions are named `T<n>` in explanations, `n` being the history index of their
//! invocation, which is also what [`Anomaly::txns`] lists.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::history::{pairs, Op, Type};

/// At most this many anomalies of each kind are listed; [`Report::counts`] counts them all.
const MAX_REPORTED_PER_KIND: usize = 10;

/// Edges a search for a cycle with exactly one anti-dependency may examine, over the whole
/// check. That search runs a breadth-first search per anti-dependency target, which could be
/// quadratic in a huge strongly connected component; past the budget, the shortest cycle of
/// any kind is reported instead (still classified by the edges it actually has).
const SINGLE_RW_SEARCH_BUDGET: u64 = 20_000_000;

/// One anomaly found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// `G0`, `G1a`, `G1b`, `G1c`, `G-single`, `G2`, `duplicate-elements`,
    /// `incompatible-order`, `internal`, `garbage-read` or `malformed`.
    pub kind: String,
    /// What was seen, naming transactions as `T<invocation index>`.
    pub explanation: String,
    /// The transactions involved (their invocations' history indices); for a cycle, in cycle
    /// order, each depending on the one before and the first on the last.
    pub txns: Vec<usize>,
}

/// The outcome of [`check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// True iff no anomaly was found.
    pub valid: bool,
    /// Transactions in the history (invocations with `f = "txn"`).
    pub txns: usize,
    /// Transactions taken as committed: the `ok` ones and the unknown ones whose appends were
    /// observed.
    pub committed: usize,
    /// Anomalies found, at most 10 of each kind, grouped by check.
    pub anomalies: Vec<Anomaly>,
    /// Number of anomalies found of each kind, reported or not.
    pub counts: BTreeMap<String, usize>,
}

/// Checks a list-append history; see the module documentation for what is checked.
///
/// Operations other than `txn` and nemesis events are ignored.
pub fn check(history: &[Op]) -> Report {
    let mut found = Found::default();
    let txns = parse_txns(history, &mut found);
    let writers = index_writers(&txns);

    check_internal(&txns, &mut found);
    check_reads(&txns, &writers, &mut found);
    let orders = version_orders(&txns, &mut found);

    let committed = committed_txns(&txns);
    let graph = build_graph(&txns, &writers, &committed, &orders);
    find_cycles(&graph, &txns, &mut found);

    Report {
        valid: found.anomalies.is_empty(),
        txns: txns.len(),
        committed: committed.iter().filter(|&&c| c).count(),
        anomalies: found.anomalies,
        counts: found.counts,
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// What is known of a transaction's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Fail,
    /// `info` or never completed.
    Info,
}

/// One micro-operation. A read's list is `None` when unknown (not an `ok` transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mop {
    Append(i64, i64),
    Read(i64, Option<Vec<i64>>),
}

/// A transaction as the checker sees it.
struct Txn {
    /// History index of the invocation: the name used in reports.
    index: usize,
    status: Status,
    mops: Vec<Mop>,
    /// The values appended to each key, in the transaction's order.
    appends: BTreeMap<i64, Vec<i64>>,
}

/// Collects anomalies, listing at most [`MAX_REPORTED_PER_KIND`] per kind.
#[derive(Default)]
struct Found {
    anomalies: Vec<Anomaly>,
    counts: BTreeMap<String, usize>,
}

impl Found {
    /// Counts an anomaly, and lists it (building its explanation only then) if its kind has
    /// room left.
    fn add(&mut self, kind: &str, txns: Vec<usize>, explain: impl FnOnce() -> String) {
        let count = {
            let c = self.counts.entry(kind.to_string()).or_insert(0);
            *c += 1;
            *c
        };
        if count <= MAX_REPORTED_PER_KIND {
            self.anomalies.push(Anomaly {
                kind: kind.to_string(),
                explanation: explain(),
                txns,
            });
        }
    }
}

/// Pairs the history's `txn` invocations with their completions. An `ok` transaction's
/// micro-ops come from its completion (which carries the reads); others' from the invocation,
/// with reads unknown.
fn parse_txns(history: &[Op], found: &mut Found) -> Vec<Txn> {
    let mut txns = Vec::new();
    for pair in pairs(history) {
        if pair.invoke.f != "txn" {
            continue;
        }
        let index = pair.invoke.index;
        let status = match pair.outcome() {
            Type::Ok => Status::Ok,
            Type::Fail => Status::Fail,
            Type::Info | Type::Invoke => Status::Info,
        };
        let parsed = match (status, pair.complete) {
            (Status::Ok, Some(done)) => parse_mops(&done.value)
                .map(|m| (m, true))
                .map_err(|e| format!("T{index} completed ok but its value cannot be read: {e}")),
            _ => parse_mops(&pair.invoke.value)
                .map(|m| (m, false))
                .map_err(|e| format!("T{index}'s invocation cannot be read: {e}")),
        };
        let (mut mops, reads_known) = match parsed {
            Ok(parsed) => parsed,
            Err(why) => {
                found.add("malformed", vec![index], || why);
                // What the invocation says, if anything: its appends stand.
                (parse_mops(&pair.invoke.value).unwrap_or_default(), false)
            }
        };
        if !reads_known {
            for mop in &mut mops {
                if let Mop::Read(_, list) = mop {
                    *list = None;
                }
            }
        }
        let mut appends: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for mop in &mops {
            if let Mop::Append(k, v) = mop {
                appends.entry(*k).or_default().push(*v);
            }
        }
        txns.push(Txn {
            index,
            status,
            mops,
            appends,
        });
    }
    txns
}

/// Reads a transaction's value: an array of micro-ops.
fn parse_mops(value: &Value) -> Result<Vec<Mop>, String> {
    let mops = value
        .as_array()
        .ok_or_else(|| format!("{value} is not a list of micro-operations"))?;
    mops.iter().map(parse_mop).collect()
}

/// Reads `["append", key, v]` or `["r", key, null | [v, ...]]`.
fn parse_mop(mop: &Value) -> Result<Mop, String> {
    let parts = mop
        .as_array()
        .filter(|p| p.len() == 3)
        .ok_or_else(|| format!("micro-op {mop} is not [f, key, value]"))?;
    let key = parts[1]
        .as_i64()
        .ok_or_else(|| format!("micro-op {mop} has a non-integer key"))?;
    match parts[0].as_str() {
        Some("append") => parts[2]
            .as_i64()
            .map(|v| Mop::Append(key, v))
            .ok_or_else(|| format!("micro-op {mop} appends a non-integer")),
        Some("r") => match &parts[2] {
            Value::Null => Ok(Mop::Read(key, None)),
            Value::Array(xs) => xs
                .iter()
                .map(|x| x.as_i64())
                .collect::<Option<Vec<i64>>>()
                .map(|list| Mop::Read(key, Some(list)))
                .ok_or_else(|| format!("micro-op {mop} read a non-integer")),
            _ => Err(format!("micro-op {mop} read something other than a list")),
        },
        _ => Err(format!("micro-op {mop} is neither an append nor a read")),
    }
}

/// Who appended each (key, value). Values are unique per key, so this is a function; should
/// a value be appended twice anyway, the first transaction to append it is kept.
fn index_writers(txns: &[Txn]) -> HashMap<(i64, i64), usize> {
    let mut writers = HashMap::new();
    for (id, t) in txns.iter().enumerate() {
        for (&k, values) in &t.appends {
            for &v in values {
                writers.entry((k, v)).or_insert(id);
            }
        }
    }
    writers
}

/// Every known read: (transaction position, key, list). Only `ok` transactions have any.
fn known_reads(txns: &[Txn]) -> impl Iterator<Item = (usize, i64, &[i64])> + '_ {
    txns.iter().enumerate().flat_map(|(id, t)| {
        t.mops.iter().filter_map(move |mop| match mop {
            Mop::Read(k, Some(list)) => Some((id, *k, list.as_slice())),
            _ => None,
        })
    })
}

/// Which transactions committed: the `ok` ones, and the unknown ones some read observed.
fn committed_txns(txns: &[Txn]) -> Vec<bool> {
    let observed: HashSet<(i64, i64)> = known_reads(txns)
        .flat_map(|(_, k, list)| list.iter().map(move |&v| (k, v)))
        .collect();
    txns.iter()
        .map(|t| match t.status {
            Status::Ok => true,
            Status::Fail => false,
            Status::Info => t
                .appends
                .iter()
                .any(|(&k, values)| values.iter().any(|&v| observed.contains(&(k, v)))),
        })
        .collect()
}

/// A list for an explanation, elided in the middle when long.
fn show(list: &[i64]) -> String {
    const EDGE: usize = 4;
    if list.len() <= 2 * EDGE + 2 {
        return format!("{list:?}");
    }
    let head: Vec<String> = list[..EDGE].iter().map(|v| v.to_string()).collect();
    let tail: Vec<String> = list[list.len() - EDGE..]
        .iter()
        .map(|v| v.to_string())
        .collect();
    format!(
        "[{}, … {} more …, {}]",
        head.join(", "),
        list.len() - 2 * EDGE,
        tail.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// Checks on single reads

/// Each read of an `ok` transaction must agree with the same transaction's earlier operations
/// on the key: after an earlier read `p` and appends `a` since, it must be exactly `p ++ a`;
/// with no earlier read, it must end with the appends made so far.
fn check_internal(txns: &[Txn], found: &mut Found) {
    for t in txns.iter().filter(|t| t.status == Status::Ok) {
        // Per key: the last list this txn read (if known) and what it appended since.
        let mut state: HashMap<i64, (Option<&[i64]>, Vec<i64>)> = HashMap::new();
        for mop in &t.mops {
            match mop {
                Mop::Append(k, v) => state.entry(*k).or_default().1.push(*v),
                Mop::Read(k, Some(list)) => {
                    let (prior, appended) = state.entry(*k).or_default();
                    let consistent = match *prior {
                        Some(p) => {
                            list.len() == p.len() + appended.len()
                                && list.starts_with(p)
                                && list.ends_with(appended)
                        }
                        None => list.ends_with(appended),
                    };
                    if !consistent {
                        let (i, k) = (t.index, *k);
                        let prior_read: Option<&[i64]> = *prior;
                        let appended_now: &[i64] = appended;
                        found.add("internal", vec![i], || match prior_read {
                            Some(p) if appended_now.is_empty() => format!(
                                "T{i} read key {k} as {} and then as {}, with no append of its \
                                 own in between",
                                show(p),
                                show(list)
                            ),
                            Some(p) => {
                                let expected: Vec<i64> =
                                    p.iter().chain(appended_now).copied().collect();
                                format!(
                                    "T{i} read key {k} as {}, appended {}, then read {}; \
                                     expected {}",
                                    show(p),
                                    show(appended_now),
                                    show(list),
                                    show(&expected)
                                )
                            }
                            None => format!(
                                "T{i} appended {} to key {k} and then read it as {}, which does \
                                 not end with those appends",
                                show(appended_now),
                                show(list)
                            ),
                        });
                    }
                    *prior = Some(list.as_slice());
                    appended.clear();
                }
                Mop::Read(_, None) => {}
            }
        }
    }
}

/// Per read: duplicate elements, values of failed transactions (G1a), values nobody appended,
/// and a last value its writer went on to follow with another append to the key (G1b).
fn check_reads(txns: &[Txn], writers: &HashMap<(i64, i64), usize>, found: &mut Found) {
    for (r, k, list) in known_reads(txns) {
        let ri = txns[r].index;
        let mut distinct = HashSet::new();
        let mut dups = Vec::new();
        let mut garbage = Vec::new();
        let mut aborted: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
        for &v in list {
            if !distinct.insert(v) {
                dups.push(v);
                continue;
            }
            match writers.get(&(k, v)) {
                None => garbage.push(v),
                Some(&w) if txns[w].status == Status::Fail => aborted.entry(w).or_default().push(v),
                Some(_) => {}
            }
        }
        if !dups.is_empty() {
            dups.sort_unstable();
            dups.dedup();
            found.add("duplicate-elements", vec![ri], || {
                format!(
                    "T{ri} read key {k} as {}, which holds {} more than once",
                    show(list),
                    show(&dups)
                )
            });
        }
        if !garbage.is_empty() {
            found.add("garbage-read", vec![ri], || {
                format!(
                    "T{ri} read key {k} as {}, including {}, which no transaction appended",
                    show(list),
                    show(&garbage)
                )
            });
        }
        for (w, values) in &aborted {
            let wi = txns[*w].index;
            found.add("G1a", vec![ri, wi], || {
                format!(
                    "aborted read: T{ri} read key {k} as {}, including {} appended by T{wi}, \
                     which failed",
                    show(list),
                    show(values)
                )
            });
        }
        let Some(&last) = list.last() else { continue };
        let Some(&w) = writers.get(&(k, last)) else {
            continue;
        };
        if w == r || txns[w].status == Status::Fail {
            continue;
        }
        let own = txns[w].appends.get(&k).map_or(&[] as &[i64], Vec::as_slice);
        if own.len() > 1 && own.last() != Some(&last) {
            let wi = txns[w].index;
            found.add("G1b", vec![ri, wi], || {
                format!(
                    "intermediate read: T{ri} read key {k} as {}, ending in {last}, but T{wi} \
                     appended {} to key {k}, so {last} was not its final append there",
                    show(list),
                    show(own)
                )
            });
        }
    }
}

/// The version order of each key: its longest read, provided every other read of the key is
/// a prefix of it (else `incompatible-order`) and it holds no value twice. Keys failing either
/// are left out.
fn version_orders(txns: &[Txn], found: &mut Found) -> BTreeMap<i64, Vec<i64>> {
    let mut by_key: BTreeMap<i64, Vec<(usize, &[i64])>> = BTreeMap::new();
    for (r, k, list) in known_reads(txns) {
        by_key.entry(k).or_default().push((r, list));
    }
    let mut orders = BTreeMap::new();
    for (k, reads) in by_key {
        // The first of the longest reads (reads is never empty).
        let (lr, longest) =
            reads.iter().copied().fold(
                reads[0],
                |best, x| if x.1.len() > best.1.len() { x } else { best },
            );
        let mut clean = true;
        for &(r, list) in &reads {
            if longest.starts_with(list) {
                continue;
            }
            clean = false;
            // list is no longer than longest and not a prefix of it, so it is non-empty and
            // differs from it within its own length.
            let at = list
                .iter()
                .zip(longest)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let (ri, li) = (txns[r].index, txns[lr].index);
            found.add("incompatible-order", vec![ri, li], || {
                format!(
                    "T{ri} read key {k} as {} and T{li} as {}; they differ at position {at} \
                     ({} vs {}), so neither is a prefix of the other and no single order of \
                     appends explains both",
                    show(list),
                    show(longest),
                    list[at],
                    longest[at]
                )
            });
        }
        let mut seen = HashSet::new();
        if clean && longest.iter().all(|v| seen.insert(*v)) {
            orders.insert(k, longest.to_vec());
        }
    }
    orders
}

// ---------------------------------------------------------------------------------------------
// Dependency graph

/// A kind of dependency edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dep {
    Ww = 0,
    Wr = 1,
    Rw = 2,
}

const WW: u8 = 1 << Dep::Ww as u8;
const WR: u8 = 1 << Dep::Wr as u8;
const RW: u8 = 1 << Dep::Rw as u8;

impl Dep {
    /// From the weakest (the one to prefer when naming a cycle's edge) to the strongest.
    const ALL: [Dep; 3] = [Dep::Ww, Dep::Wr, Dep::Rw];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn name(self) -> &'static str {
        match self {
            Dep::Ww => "ww",
            Dep::Wr => "wr",
            Dep::Rw => "rw",
        }
    }
}

/// The dependencies from one transaction to another.
#[derive(Clone, Copy, Default)]
struct Edge {
    /// Bits of the kinds present ([`Dep::bit`]).
    mask: u8,
    /// For each kind present, a key that gave it.
    keys: [i64; 3],
}

/// Dependencies between committed transactions; nodes are positions in the transaction list.
struct Graph {
    /// Successors of each node, ascending.
    adj: Vec<Vec<usize>>,
    edges: BTreeMap<(usize, usize), Edge>,
}

/// Infers ww, wr and rw edges from each key's version order (see the module documentation).
/// Edges join distinct committed transactions only.
fn build_graph(
    txns: &[Txn],
    writers: &HashMap<(i64, i64), usize>,
    committed: &[bool],
    orders: &BTreeMap<i64, Vec<i64>>,
) -> Graph {
    let mut edges: BTreeMap<(usize, usize), Edge> = BTreeMap::new();
    let mut add = |from: usize, to: usize, dep: Dep, key: i64| {
        if from == to || !committed[from] || !committed[to] {
            return;
        }
        let e = edges.entry((from, to)).or_default();
        if e.mask & dep.bit() == 0 {
            e.mask |= dep.bit();
            e.keys[dep as usize] = key;
        }
    };
    let writer = |k: i64, v: i64| writers.get(&(k, v)).copied();

    for (&k, order) in orders {
        for step in order.windows(2) {
            if let (Some(a), Some(b)) = (writer(k, step[0]), writer(k, step[1])) {
                add(a, b, Dep::Ww, k);
            }
        }
    }
    for (r, k, list) in known_reads(txns) {
        let Some(order) = orders.get(&k) else {
            continue;
        };
        if let Some(w) = list.last().and_then(|&v| writer(k, v)) {
            add(w, r, Dep::Wr, k);
        }
        if let Some(w) = order.get(list.len()).and_then(|&v| writer(k, v)) {
            add(r, w, Dep::Rw, k);
        }
    }

    let mut adj = vec![Vec::new(); txns.len()];
    for &(from, to) in edges.keys() {
        adj[from].push(to);
    }
    Graph { adj, edges }
}

/// Reports one cycle per non-trivial strongly connected component: the first found of a
/// ww-only cycle, a ww/wr cycle, a cycle with a single rw edge, and otherwise the shortest
/// cycle through the component's first node.
fn find_cycles(graph: &Graph, txns: &[Txn], found: &mut Found) {
    let mut budget = SINGLE_RW_SEARCH_BUDGET;
    for mut scc in tarjan(&graph.adj) {
        if scc.len() < 2 {
            continue;
        }
        scc.sort_unstable();
        let cycle = cycle_in(graph, &scc, &mut budget);
        let steps = label(graph, &cycle);
        let kind = classify(&steps);
        let names: Vec<usize> = steps.iter().map(|s| txns[s.0].index).collect();
        found.add(kind, names, || explain_cycle(kind, &steps, txns));
    }
}

/// A cycle (nodes in order, each with an edge to the next and the last to the first) inside
/// a strongly connected component of at least two nodes, using the weakest edges that allow
/// one.
fn cycle_in(graph: &Graph, scc: &[usize], budget: &mut u64) -> Vec<usize> {
    let local: HashMap<usize, usize> = scc.iter().enumerate().map(|(i, &g)| (g, i)).collect();
    // The component's subgraph, in local numbering, restricted to edges with kinds in `mask`.
    let sub = |mask: u8| -> Vec<Vec<usize>> {
        scc.iter()
            .map(|&u| {
                graph.adj[u]
                    .iter()
                    .filter_map(|v| {
                        let &lv = local.get(v)?;
                        (graph.edges[&(u, *v)].mask & mask != 0).then_some(lv)
                    })
                    .collect::<Vec<usize>>()
            })
            .collect()
    };
    let global = |cycle: Vec<usize>| -> Vec<usize> { cycle.into_iter().map(|i| scc[i]).collect() };

    for mask in [WW, WW | WR] {
        if let Some(cycle) = any_cycle(&sub(mask)) {
            return global(cycle);
        }
    }
    if let Some(cycle) = single_rw_cycle(&sub(WW | WR), &sub(RW), budget) {
        return global(cycle);
    }
    let mut unlimited = u64::MAX;
    let cycle = shortest_cycle(&sub(WW | WR | RW), 0, &mut unlimited)
        .expect("every node of a strongly connected component lies on a cycle");
    global(cycle)
}

/// Some short cycle of a graph, if it has one: the shortest through the least node of its
/// first non-trivial strongly connected component.
fn any_cycle(adj: &[Vec<usize>]) -> Option<Vec<usize>> {
    let comp = tarjan(adj).into_iter().find(|c| c.len() > 1)?;
    let start = *comp.iter().min()?;
    let mut unlimited = u64::MAX;
    shortest_cycle(adj, start, &mut unlimited)
}

/// A cycle made of one rw edge `a -> b` and a ww/wr path back from `b` to `a` (`lo` holds the
/// ww/wr edges, `rw` the rw ones), as the nodes from `b` to `a`. `None` if there is none or
/// the search budget ran out.
fn single_rw_cycle(lo: &[Vec<usize>], rw: &[Vec<usize>], budget: &mut u64) -> Option<Vec<usize>> {
    let mut sources: Vec<Vec<usize>> = vec![Vec::new(); rw.len()];
    for (a, targets) in rw.iter().enumerate() {
        for &b in targets {
            sources[b].push(a);
        }
    }
    // One search per rw target serves all the rw edges into it.
    for (b, from) in sources.iter().enumerate() {
        if from.is_empty() {
            continue;
        }
        let prev = bfs_tree(lo, b, budget)?;
        let best = from
            .iter()
            .filter_map(|&a| path_to(&prev, b, a))
            .min_by_key(|path| path.len());
        if best.is_some() {
            return best;
        }
    }
    None
}

/// Marks a node not (yet) reached in [`bfs_tree`].
const UNREACHED: usize = usize::MAX;

/// Breadth-first search from `src`: each reached node's predecessor on a shortest path
/// ([`UNREACHED`] otherwise). `src` itself counts as reached only through a cycle back to it.
/// `None` if more than `budget` edges would be examined (the budget is spent either way).
fn bfs_tree(adj: &[Vec<usize>], src: usize, budget: &mut u64) -> Option<Vec<usize>> {
    let mut prev = vec![UNREACHED; adj.len()];
    let mut queue = VecDeque::from([src]);
    while let Some(u) = queue.pop_front() {
        for &v in &adj[u] {
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            if prev[v] == UNREACHED {
                prev[v] = u;
                if v != src {
                    queue.push_back(v);
                }
            }
        }
    }
    Some(prev)
}

/// The path `[src, ..., dst]` (at least one edge) found by [`bfs_tree`] from `src`.
fn path_to(prev: &[usize], src: usize, dst: usize) -> Option<Vec<usize>> {
    if prev[dst] == UNREACHED {
        return None;
    }
    let mut path = vec![dst];
    let mut at = prev[dst];
    while at != src {
        path.push(at);
        at = prev[at];
    }
    path.push(src);
    path.reverse();
    Some(path)
}

/// The shortest cycle through `start`, as its nodes from `start` on.
fn shortest_cycle(adj: &[Vec<usize>], start: usize, budget: &mut u64) -> Option<Vec<usize>> {
    let prev = bfs_tree(adj, start, budget)?;
    let mut path = path_to(&prev, start, start)?;
    path.pop(); // `start` again
    Some(path)
}

/// Strongly connected components (Tarjan), iteratively so deep graphs cannot overflow the
/// stack. Components come out in reverse topological order.
fn tarjan(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let n = adj.len();
    let mut order = vec![UNVISITED; n]; // discovery number
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut sccs = Vec::new();
    let mut next = 0;
    // The simulated call stack: (node, position of the next successor to visit).
    let mut calls: Vec<(usize, usize)> = Vec::new();

    for root in 0..n {
        if order[root] != UNVISITED {
            continue;
        }
        order[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));

        while let Some(frame) = calls.last_mut() {
            let v = frame.0;
            if frame.1 < adj[v].len() {
                let w = adj[v][frame.1];
                frame.1 += 1;
                if order[w] == UNVISITED {
                    order[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
                continue;
            }
            // All of v's successors are done: return from v.
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == order[v] {
                let mut comp = Vec::new();
                loop {
                    let w = stack.pop().expect("v is on the stack");
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                sccs.push(comp);
            }
        }
    }
    sccs
}

/// Names each step of a cycle: (node, weakest dependency to the next node, a key giving it).
fn label(graph: &Graph, cycle: &[usize]) -> Vec<(usize, Dep, i64)> {
    (0..cycle.len())
        .map(|i| {
            let (from, to) = (cycle[i], cycle[(i + 1) % cycle.len()]);
            let edge = graph.edges[&(from, to)];
            let dep = Dep::ALL
                .into_iter()
                .find(|d| edge.mask & d.bit() != 0)
                .expect("an edge has at least one kind");
            (from, dep, edge.keys[dep as usize])
        })
        .collect()
}

/// Adya's name for a cycle with these edges.
fn classify(steps: &[(usize, Dep, i64)]) -> &'static str {
    let count = |dep: Dep| steps.iter().filter(|s| s.1 == dep).count();
    match (count(Dep::Rw), count(Dep::Wr)) {
        (0, 0) => "G0",
        (0, _) => "G1c",
        (1, _) => "G-single",
        _ => "G2",
    }
}

/// A cycle as `T1 -ww(key 3)-> T2 -rw(key 4)-> T1`, with what it means.
fn explain_cycle(kind: &str, steps: &[(usize, Dep, i64)], txns: &[Txn]) -> String {
    let mut chain = String::new();
    for &(t, dep, key) in steps {
        chain.push_str(&format!("T{} -{}(key {key})-> ", txns[t].index, dep.name()));
    }
    chain.push_str(&format!("T{}", txns[steps[0].0].index));
    let meaning = match kind {
        "G0" => "a cycle of write-write dependencies alone (write cycle)",
        "G1c" => "a cycle of write-write and write-read dependencies (circular information flow)",
        "G-single" => "a cycle with exactly one read-write anti-dependency (read skew)",
        _ => "a cycle with several read-write anti-dependencies (e.g. write skew)",
    };
    format!(
        "{kind}: {chain} is {meaning}, so no serial order of these transactions exists. \
         A -ww-> B: B's append to the key came right after A's; A -wr-> B: B read the key \
         ending in A's append; A -rw-> B: A read the key without B's next append"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Process;
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

    /// Appends a transaction run by a fresh process: its invocation (reads nulled), then,
    /// unless `outcome` is `None`, its completion (the micro-ops as given when `ok`, the
    /// invocation's value otherwise). Returns the invocation's index.
    fn txn(h: &mut Vec<Op>, outcome: Option<Type>, mops: Value) -> usize {
        let invoke_value = Value::Array(
            mops.as_array()
                .expect("micro-ops")
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    if m[0] == "r" {
                        m[2] = Value::Null;
                    }
                    m
                })
                .collect(),
        );
        let process = Process::Client(h.len() as u64);
        let index = h.len();
        h.push(op(
            index,
            Type::Invoke,
            process,
            "txn",
            invoke_value.clone(),
        ));
        if let Some(kind) = outcome {
            let value = if kind == Type::Ok { mops } else { invoke_value };
            h.push(op(h.len(), kind, process, "txn", value));
        }
        index
    }

    const OK: Option<Type> = Some(Type::Ok);

    /// The anomaly kinds found, with their counts.
    fn kinds(r: &Report) -> Vec<(&str, usize)> {
        r.counts.iter().map(|(k, &n)| (k.as_str(), n)).collect()
    }

    #[test]
    fn a_serial_history_is_valid() {
        let mut h = Vec::new();
        txn(&mut h, OK, json!([["append", 1, 1], ["append", 2, 1]]));
        txn(
            &mut h,
            OK,
            json!([["r", 1, [1]], ["append", 1, 2], ["r", 1, [1, 2]]]),
        );
        txn(
            &mut h,
            OK,
            json!([["r", 1, [1, 2]], ["r", 2, [1]], ["r", 3, []]]),
        );
        txn(&mut h, Some(Type::Fail), json!([["append", 3, 9]]));
        let r = check(&h);
        assert!(r.valid, "{:?}", r.anomalies);
        assert_eq!((r.txns, r.committed), (4, 3));
    }

    #[test]
    fn duplicate_elements() {
        let mut h = Vec::new();
        txn(&mut h, OK, json!([["append", 1, 1]]));
        let t2 = txn(&mut h, OK, json!([["r", 1, [1, 1]]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("duplicate-elements", 1)]);
        assert_eq!(r.anomalies[0].txns, vec![t2]);
        assert!(!r.valid);
    }

    #[test]
    fn incompatible_order() {
        let mut h = Vec::new();
        txn(&mut h, OK, json!([["append", 1, 1]]));
        txn(&mut h, OK, json!([["append", 1, 2]]));
        let t3 = txn(&mut h, OK, json!([["r", 1, [1, 2]]]));
        let t4 = txn(&mut h, OK, json!([["r", 1, [2]]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("incompatible-order", 1)]);
        assert_eq!(r.anomalies[0].txns, vec![t4, t3]);
    }

    #[test]
    fn aborted_read() {
        let mut h = Vec::new();
        let t1 = txn(&mut h, Some(Type::Fail), json!([["append", 1, 1]]));
        let t2 = txn(&mut h, OK, json!([["r", 1, [1]]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("G1a", 1)]);
        assert_eq!(r.anomalies[0].txns, vec![t2, t1]);
        assert_eq!(r.committed, 1);
    }

    #[test]
    fn intermediate_read() {
        let mut h = Vec::new();
        let t1 = txn(&mut h, OK, json!([["append", 1, 1], ["append", 1, 2]]));
        let t2 = txn(&mut h, OK, json!([["r", 1, [1]]]));
        let t3 = txn(&mut h, OK, json!([["r", 1, [1, 2]]]));
        let r = check(&h);
        assert_eq!(r.counts.get("G1b"), Some(&1));
        let g1b = r.anomalies.iter().find(|a| a.kind == "G1b").unwrap();
        assert_eq!(g1b.txns, vec![t2, t1]);
        // t2 saw t1's first append but not its second: that is also a G-single cycle.
        assert_eq!(r.counts.get("G-single"), Some(&1));
        assert!(!r.anomalies.iter().any(|a| a.txns.contains(&t3)));
    }

    #[test]
    fn internal_inconsistency() {
        let mut h = Vec::new();
        let t1 = txn(&mut h, OK, json!([["append", 1, 1], ["r", 1, []]]));
        txn(
            &mut h,
            OK,
            json!([["r", 2, []], ["append", 2, 5], ["r", 2, [5]]]),
        );
        let t3 = txn(
            &mut h,
            OK,
            json!([["r", 3, []], ["append", 3, 7], ["r", 3, [6, 7]]]),
        );
        let r = check(&h);
        assert_eq!(r.counts.get("internal"), Some(&2));
        let internal: Vec<&Vec<usize>> = r
            .anomalies
            .iter()
            .filter(|a| a.kind == "internal")
            .map(|a| &a.txns)
            .collect();
        assert_eq!(internal, vec![&vec![t1], &vec![t3]]);
    }

    #[test]
    fn g0_write_cycle() {
        let mut h = Vec::new();
        let t1 = txn(&mut h, OK, json!([["append", 1, 1], ["append", 2, 1]]));
        let t2 = txn(&mut h, OK, json!([["append", 1, 2], ["append", 2, 2]]));
        txn(&mut h, OK, json!([["r", 1, [1, 2]], ["r", 2, [2, 1]]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("G0", 1)]);
        let mut cycle = r.anomalies[0].txns.clone();
        cycle.sort_unstable();
        assert_eq!(cycle, vec![t1, t2]);
    }

    #[test]
    fn g1c_cycle_of_ww_and_wr() {
        let mut h = Vec::new();
        let t1 = txn(&mut h, OK, json!([["append", 1, 1], ["r", 2, [1]]]));
        let t2 = txn(&mut h, OK, json!([["append", 1, 2], ["append", 2, 1]]));
        txn(&mut h, OK, json!([["r", 1, [1, 2]]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("G1c", 1)]);
        assert_eq!(r.anomalies[0].txns, vec![t1, t2]);
        assert!(r.anomalies[0].explanation.contains("-ww(key 1)->"));
        assert!(r.anomalies[0].explanation.contains("-wr(key 2)->"));
    }

    #[test]
    fn g_single_read_skew() {
        // t2 sees t1's append to key 2 but not its append to key 1.
        let mut h = Vec::new();
        let t1 = txn(&mut h, OK, json!([["append", 1, 1], ["append", 2, 1]]));
        let t2 = txn(&mut h, OK, json!([["r", 1, []], ["r", 2, [1]]]));
        txn(&mut h, OK, json!([["r", 1, [1]]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("G-single", 1)]);
        assert_eq!(r.anomalies[0].txns, vec![t1, t2]);
    }

    #[test]
    fn g2_write_skew() {
        // Each reads the key the other appends to as empty, yet both appends happened.
        let mut h = Vec::new();
        txn(&mut h, OK, json!([["r", 1, []], ["append", 2, 1]]));
        txn(&mut h, OK, json!([["r", 2, []], ["append", 1, 1]]));
        txn(&mut h, OK, json!([["r", 1, [1]], ["r", 2, [1]]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("G2", 1)]);
        assert_eq!(r.anomalies[0].txns.len(), 2);
    }

    #[test]
    fn observed_unknown_txns_count_as_committed() {
        let mut h = Vec::new();
        txn(
            &mut h,
            Some(Type::Info),
            json!([["append", 1, 1], ["r", 2, [5]]]),
        );
        txn(&mut h, None, json!([["append", 1, 9]]));
        txn(&mut h, OK, json!([["r", 1, [1]]]));
        let r = check(&h);
        assert!(r.valid, "{:?}", r.anomalies);
        assert_eq!((r.txns, r.committed), (3, 2));

        // An unknown transaction takes part in cycles like a committed one.
        let mut h = Vec::new();
        let t1 = txn(&mut h, None, json!([["append", 1, 1], ["append", 2, 1]]));
        let t2 = txn(&mut h, OK, json!([["append", 1, 2], ["append", 2, 2]]));
        txn(&mut h, OK, json!([["r", 1, [1, 2]], ["r", 2, [2, 1]]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("G0", 1)]);
        let mut cycle = r.anomalies[0].txns.clone();
        cycle.sort_unstable();
        assert_eq!(cycle, vec![t1, t2]);
    }

    #[test]
    fn anomalies_are_capped_per_kind_but_all_counted() {
        let mut h = Vec::new();
        txn(&mut h, OK, json!([["append", 1, 1]]));
        for _ in 0..15 {
            txn(&mut h, OK, json!([["r", 1, [1, 1]]]));
        }
        let r = check(&h);
        assert_eq!(r.counts.get("duplicate-elements"), Some(&15));
        assert_eq!(r.anomalies.len(), MAX_REPORTED_PER_KIND);
    }

    #[test]
    fn malformed_values_are_reported() {
        let mut h = Vec::new();
        txn(&mut h, OK, json!([["put", 1, 1]]));
        let r = check(&h);
        assert_eq!(kinds(&r), vec![("malformed", 1)]);
        assert_eq!(r.txns, 1);
    }

    /// xorshift64: enough randomness for a test, no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Concurrent clients against a serial store: each transaction takes effect atomically at
    /// its completion (ok, and some info), or not at all (fail, other info, never completed).
    #[test]
    fn random_serial_histories_are_valid() {
        for seed in 1..=6u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut store: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            let mut next_value = 1i64;
            let mut h: Vec<Op> = Vec::new();
            const SLOTS: usize = 4;
            let mut processes: Vec<u64> = (0..SLOTS as u64).collect();
            let mut next_process = SLOTS as u64;
            let mut in_flight: Vec<Option<Value>> = vec![None; SLOTS];

            for step in 0..3000 {
                if step % 250 == 0 {
                    h.push(op(
                        h.len(),
                        Type::Info,
                        Process::Nemesis,
                        "kill",
                        json!(null),
                    ));
                }
                let s = rng.below(SLOTS as u64) as usize;
                let process = Process::Client(processes[s]);
                let Some(invoked) = in_flight[s].take() else {
                    let n = 1 + rng.below(4);
                    let mops: Vec<Value> = (0..n)
                        .map(|_| {
                            let k = rng.below(5) as i64;
                            if rng.below(2) == 0 {
                                next_value += 1;
                                json!(["append", k, next_value])
                            } else {
                                json!(["r", k, null])
                            }
                        })
                        .collect();
                    let value = Value::Array(mops);
                    h.push(op(h.len(), Type::Invoke, process, "txn", value.clone()));
                    in_flight[s] = Some(value);
                    continue;
                };
                let (kind, applied) = match rng.below(10) {
                    0 => (Type::Fail, false),
                    1 => (Type::Info, rng.below(2) == 0),
                    _ => (Type::Ok, true),
                };
                let mut done = invoked.clone();
                if applied {
                    for m in done.as_array_mut().expect("micro-ops") {
                        let k = m[1].as_i64().expect("key");
                        let list = store.entry(k).or_default();
                        if m[0] == "append" {
                            list.push(m[2].as_i64().expect("value"));
                        } else {
                            m[2] = json!(list.clone());
                        }
                    }
                }
                let value = if kind == Type::Ok { done } else { invoked };
                h.push(op(h.len(), kind, process, "txn", value));
                if kind == Type::Info {
                    processes[s] = next_process;
                    next_process += 1;
                }
            }

            let r = check(&h);
            assert!(r.valid, "seed {seed}: {:?}", r.anomalies);
            assert!(
                r.committed > 100 && r.committed <= r.txns,
                "seed {seed}: {r:?}"
            );
        }
    }
}
