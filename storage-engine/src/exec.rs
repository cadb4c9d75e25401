//! The query executor. When the plan's index order is the query's order, it streams the
//! index ranges in that order (a k-way merge over several ranges), seeks straight to a
//! cursor, stops after `offset + limit` matches and decodes only the rows of the page, plus
//! the rows a filter the index does not decide must be checked on. Otherwise it collects the
//! candidates and sorts them. `total` counts at most `TOTAL_CAP` matches, as Appwrite does,
//! from index entries alone when the index decides every filter.

use crate::engine::{decode_document, scan_budget_exceeded, CF_DOCS, CF_INDEX};
use crate::keys;
use crate::planner::{self, KeyRange, Plan, Served};
use crate::read::{page_of, View};
use model::query::{Cursor, Spec, DEFAULT_LIMIT};
use model::reader::Page;
use model::schema::{Collection, Document, Order};
use model::Error;
use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, DB};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet, VecDeque};

type Result<T> = std::result::Result<T, Error>;

/// The most matches a `total` counts (Appwrite's `APP_LIMIT_COUNT`): a list never pays more
/// than this for its count, and reports at most this.
pub const TOTAL_CAP: u64 = 5000;

/// One index entry: the bytes of its group columns (after the range's fixed prefix), the
/// document's sequence and id.
struct Entry {
    sort: Vec<u8>,
    seq: u64,
    id: Vec<u8>,
}

/// Query order between two entries of one plan.
fn cmp(s: &Served, a: (&[u8], u64), b: (&[u8], u64)) -> Ordering {
    let o = a.0.cmp(b.0);
    let o = if s.reverse { o.reverse() } else { o };
    o.then_with(|| {
        let q = a.1.cmp(&b.1);
        if s.seq_desc {
            q.reverse()
        } else {
            q
        }
    })
}

/// Where a cursor's document sits in the index order.
struct CursorPos {
    sort: Vec<u8>,
    seq: u64,
    /// Its entries end with the sequence (all but a unique index's non-null tuples).
    suffixed: bool,
}

fn corrupt(key: &[u8], what: &str) -> Error {
    crate::engine::corrupt(key, what).into()
}

fn parse_value(k: &[u8], v: &[u8]) -> Result<(u64, Vec<u8>)> {
    keys::parse_entry_value(v)
        .map(|(seq, id)| (seq, id.to_vec()))
        .ok_or_else(|| corrupt(k, "index entry value"))
}

/// An iterator over one key range of the index, bounded to it.
fn raw<'a>(view: &'a View, r: &KeyRange) -> DBRawIteratorWithThreadMode<'a, DB> {
    let mut o = ReadOptions::default();
    o.set_iterate_lower_bound(r.start.clone());
    o.set_iterate_upper_bound(r.end.clone());
    view.snap.raw_iterator_cf_opt(view.cf(CF_INDEX), o)
}

/// One key range of the index, read in the plan's order.
struct Stream<'a> {
    it: DBRawIteratorWithThreadMode<'a, DB>,
    range: &'a KeyRange,
    columns: &'a [(String, Order)],
    s: Served,
    /// Entries of a sorted group, still to hand out.
    buf: VecDeque<Entry>,
    /// A whole-tuple group being walked against the range's direction (its sequence order
    /// runs the other way).
    in_group: Option<Vec<u8>>,
    /// The most entries one sorted group may hold.
    limit: usize,
}

impl<'a> Stream<'a> {
    fn new(view: &'a View, range: &'a KeyRange, plan: &'a Plan, s: Served, limit: usize) -> Self {
        Stream {
            it: raw(view, range),
            range,
            columns: &plan.columns,
            s,
            buf: VecDeque::new(),
            in_group: None,
            limit,
        }
    }

    /// The iterator's error, if a read failed.
    fn ok(&self) -> Result<()> {
        Ok(self
            .it
            .status()
            .map_err(crate::engine::StorageError::from)?)
    }

    fn flip(&self) -> bool {
        self.s.reverse != self.s.seq_desc
    }

    fn current(&self) -> Option<(&[u8], &[u8])> {
        let (k, v) = self.it.item()?;
        (k >= self.range.start.as_slice() && k < self.range.end.as_slice()).then_some((k, v))
    }

    fn outer_step(&mut self) {
        if self.s.reverse {
            self.it.prev()
        } else {
            self.it.next()
        }
    }

    fn inner_step(&mut self) {
        if self.s.reverse {
            self.it.next()
        } else {
            self.it.prev()
        }
    }

    /// To the first key `>= t`.
    fn seek_ge(&mut self, t: &[u8]) {
        if t < self.range.start.as_slice() {
            self.it.seek_to_first()
        } else {
            self.it.seek(t)
        }
    }

    /// To the last key `< t`.
    fn seek_lt(&mut self, t: &[u8]) {
        self.seek_le(t);
        if self.it.key().is_some_and(|k| k >= t) {
            self.it.prev();
        }
    }

    /// To the last key `<= t`.
    fn seek_le(&mut self, t: &[u8]) {
        if t >= self.range.end.as_slice() {
            self.it.seek_to_last();
        } else {
            self.it.seek_for_prev(t);
        }
    }

    /// The end of the group columns in `k`.
    fn group_len(&self, k: &[u8]) -> Result<usize> {
        let mut p = self.range.fixed;
        for (_, order) in &self.columns[..self.s.group] {
            p += k
                .get(p..)
                .and_then(|rest| keys::value_len(rest, *order))
                .ok_or_else(|| corrupt(k, "index key"))?;
        }
        Ok(p)
    }

    fn entry(&self, k: &[u8], v: &[u8]) -> Result<Entry> {
        let (seq, id) = parse_value(k, v)?;
        Ok(Entry {
            sort: k[self.range.fixed..self.group_len(k)?].to_vec(),
            seq,
            id,
        })
    }

    /// Puts the stream at its first entry, or at the first one that may come after `cursor`.
    fn position(&mut self, cursor: Option<&CursorPos>) {
        let Some(c) = cursor else {
            match self.s.reverse {
                true => self.it.seek_to_last(),
                false => self.it.seek_to_first(),
            }
            return;
        };
        let mut g = self.range.start[..self.range.fixed].to_vec();
        g.extend_from_slice(&c.sort);
        if self.s.full && c.suffixed {
            let mut at = g.clone();
            at.extend_from_slice(&keys::seq_bytes(c.seq));
            // Walking the cursor's group toward later sequences (or earlier) from it.
            let upward = self.s.reverse == self.flip();
            match upward {
                true => self.seek_ge(&at),
                false => self.seek_le(&at),
            }
            if self.flip() {
                self.in_group = Some(g);
            }
        } else if self.s.reverse {
            self.seek_lt(&keys::prefix_end(&g));
        } else {
            self.seek_ge(&g);
        }
    }

    fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Ok(Some(e));
            }
            if let Some(g) = self.in_group.take() {
                if let Some((k, v)) = self.current().filter(|(k, _)| k.starts_with(&g)) {
                    let e = self.entry(k, v)?;
                    self.inner_step();
                    self.in_group = Some(g);
                    return Ok(Some(e));
                }
                // The group ends where its keys do, not where a read failed.
                self.ok()?;
                match self.s.reverse {
                    true => self.seek_lt(&g),
                    false => self.seek_ge(&keys::prefix_end(&g)),
                }
                continue;
            }
            let Some((k, v)) = self.current() else {
                self.ok()?;
                return Ok(None);
            };
            if self.s.full && !self.flip() {
                let e = self.entry(k, v)?;
                self.outer_step();
                return Ok(Some(e));
            }
            let g = k[..self.group_len(k)?].to_vec();
            if self.s.full {
                match self.s.reverse {
                    true => self.seek_ge(&g),
                    false => self.seek_lt(&keys::prefix_end(&g)),
                }
                self.in_group = Some(g);
                continue;
            }
            let mut group = Vec::new();
            while let Some((k, v)) = self.current() {
                if !k.starts_with(&g) {
                    break;
                }
                group.push(self.entry(k, v)?);
                if group.len() > self.limit {
                    return Err(scan_budget_exceeded());
                }
                self.outer_step();
            }
            self.ok()?;
            match self.s.seq_desc {
                true => group.sort_by_key(|e| std::cmp::Reverse(e.seq)),
                false => group.sort_by_key(|e| e.seq),
            }
            self.buf = group.into();
        }
    }
}

/// The head of one stream in the merge: the max-heap's greatest is the earliest in query order.
struct Head {
    entry: Entry,
    from: usize,
    s: Served,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp(
            &self.s,
            (&other.entry.sort, other.entry.seq),
            (&self.entry.sort, self.entry.seq),
        )
        .then(other.from.cmp(&self.from))
    }
}

/// Every range of a plan, merged into one stream in query order, each document once.
struct Merge<'a> {
    streams: Vec<Stream<'a>>,
    heap: BinaryHeap<Head>,
    seen: HashSet<u64>,
}

impl<'a> Merge<'a> {
    fn new(mut streams: Vec<Stream<'a>>, s: Served, cursor: Option<&CursorPos>) -> Result<Self> {
        let mut heap = BinaryHeap::with_capacity(streams.len());
        for (from, st) in streams.iter_mut().enumerate() {
            st.position(cursor);
            if let Some(entry) = st.next()? {
                heap.push(Head { entry, from, s });
            }
        }
        Ok(Merge {
            streams,
            heap,
            seen: HashSet::new(),
        })
    }

    fn next(&mut self) -> Result<Option<Entry>> {
        while let Some(Head { entry, from, s }) = self.heap.pop() {
            if let Some(e) = self.streams[from].next()? {
                self.heap.push(Head { entry: e, from, s });
            }
            if self.seen.insert(entry.seq) {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
}

/// Reads documents by id from the view, in the order given; missing ones are skipped.
fn fetch(view: &View, project: &str, coll: &Collection, ids: &[Vec<u8>]) -> Result<Vec<Document>> {
    let prefix = keys::prefix(&[project, &coll.database, &coll.id]);
    let keys: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| [prefix.as_slice(), id].concat())
        .collect();
    let cf = view.cf(CF_DOCS);
    let results = view
        .engine
        .db
        .multi_get_cf_opt(keys.iter().map(|k| (cf, k.as_slice())), &view.opts());
    let mut out = Vec::with_capacity(ids.len());
    for (k, r) in keys.iter().zip(results) {
        if let Some(v) = r.map_err(crate::engine::StorageError::from)? {
            out.push(decode_document(coll, k, &v)?);
        }
    }
    Ok(out)
}

/// Rows examined to check filters the index does not decide, against the scan budget.
struct Budget {
    left: usize,
}

impl Budget {
    fn take(&mut self, n: usize) -> Result<()> {
        self.left = self.left.checked_sub(n).ok_or_else(scan_budget_exceeded)?;
        Ok(())
    }
}

/// The plan of `spec` on this view: the planner's, with the view's stored counts.
pub(crate) fn plan(view: &View, project: &str, coll: &Collection, spec: &Spec) -> Plan {
    let counts = |keys: &[&[u8]]| sum_counts(view, keys).unwrap_or(u64::MAX);
    planner::plan_counted(project, coll, spec, &counts)
}

/// Runs a validated query against one view.
pub(crate) fn find(
    view: &View,
    project: &str,
    coll: &Collection,
    spec: &Spec,
    want_total: bool,
) -> Result<Page> {
    let plan = plan(view, project, coll, spec);
    tracing::debug!(project, database = %coll.database, collection = %coll.id, plan = %plan.describe, "query plan");
    let mut budget = Budget {
        left: view.engine.scan_budget(),
    };
    match plan.order {
        Some(served) => {
            let (documents, seen_all) =
                streamed(view, project, coll, spec, &plan, served, &mut budget)?;
            let total = match (want_total, seen_all) {
                (false, _) => 0,
                // The page read every match already (a scan that found fewer than a page).
                (true, Some(n)) => n.min(TOTAL_CAP),
                (true, None) => count(view, project, coll, spec, &plan, &mut budget)?,
            };
            Ok(Page { documents, total })
        }
        None => collected(view, project, coll, spec, &plan, &mut budget),
    }
}

fn cursor_doc(view: &View, project: &str, coll: &Collection, id: &str) -> Result<Document> {
    use model::reader::StateReader;
    view.document(project, coll, id)?
        .ok_or_else(|| crate::read::cursor_not_found(id))
}

/// The page of a plan whose index order is the query's order, and the number of matches when
/// reading it met them all (no cursor, and the ranges ran out).
fn streamed(
    view: &View,
    project: &str,
    coll: &Collection,
    spec: &Spec,
    plan: &Plan,
    served: Served,
    budget: &mut Budget,
) -> Result<(Vec<Document>, Option<u64>)> {
    let limit = spec.limit.unwrap_or(DEFAULT_LIMIT).min(usize::MAX as u64) as usize;
    let offset = spec.offset.min(usize::MAX as u64) as usize;
    let want = offset.saturating_add(limit);
    let mut s = served;
    let (cursor, before) = match &spec.cursor {
        None => (None, false),
        Some(Cursor::After(id)) => (Some(cursor_doc(view, project, coll, id)?), false),
        Some(Cursor::Before(id)) => (Some(cursor_doc(view, project, coll, id)?), true),
    };
    if before {
        // The page closest to the cursor: read away from it, then turn the page around.
        s.reverse = !s.reverse;
        s.seq_desc = !s.seq_desc;
    }
    let pos = cursor.map(|c| {
        let mut sort = Vec::new();
        let mut non_null = true;
        for (attr, order) in &plan.columns[..s.group] {
            let v = c.get(attr);
            non_null &= !v.is_null();
            keys::encode_value(&mut sort, &v, *order);
        }
        CursorPos {
            sort,
            seq: c.sequence,
            suffixed: !(plan.unique && s.full && non_null),
        }
    });
    if want == 0 {
        return Ok((Vec::new(), None));
    }
    let streams = plan
        .ranges
        .iter()
        .map(|r| Stream::new(view, r, plan, s, budget.left))
        .collect();
    let mut merge = Merge::new(streams, s, pos.as_ref())?;
    let after = |e: &Entry| {
        pos.as_ref()
            .is_none_or(|c| cmp(&s, (&e.sort, e.seq), (&c.sort, c.seq)) == Ordering::Greater)
    };
    let mut matched = 0usize;
    let mut page = Vec::new();
    // Every match met, including those past the page (a batch may hold some).
    let mut found = 0u64;
    let mut exhausted = false;
    if plan.exact(spec) {
        let mut ids = Vec::new();
        while matched < want {
            let Some(e) = merge.next()? else {
                exhausted = true;
                break;
            };
            if !after(&e) {
                continue;
            }
            // Index keys are cheap, but a page is not unbounded work: an offset or limit
            // beyond the budget is refused like a scan.
            budget.take(1)?;
            if matched >= offset {
                ids.push(e.id);
            }
            matched += 1;
            found += 1;
        }
        page = fetch(view, project, coll, &ids)?;
    } else {
        while !exhausted && matched < want {
            let batch_len = (want - matched).clamp(32, 256);
            let mut ids = Vec::with_capacity(batch_len);
            while ids.len() < batch_len {
                let Some(e) = merge.next()? else {
                    exhausted = true;
                    break;
                };
                if after(&e) {
                    ids.push(e.id);
                }
            }
            budget.take(ids.len())?;
            for d in fetch(view, project, coll, &ids)? {
                if !spec.matches(&d) {
                    continue;
                }
                found += 1;
                if matched < want {
                    if matched >= offset {
                        page.push(d);
                    }
                    matched += 1;
                }
            }
        }
    }
    if before {
        page.reverse();
    }
    let seen_all = (exhausted && pos.is_none()).then_some(found);
    Ok((page, seen_all))
}

/// Reads counts (`keys::parse_count`) under `keys`, summed; absent ones are zero.
fn sum_counts(view: &View, keys: &[&[u8]]) -> Result<u64> {
    let cf = view.cf(CF_INDEX);
    let found = view
        .engine
        .db
        .multi_get_cf_opt(keys.iter().map(|k| (cf, *k)), &view.opts());
    let mut n = 0u64;
    for (k, v) in keys.iter().zip(found) {
        if let Some(v) = v.map_err(crate::engine::StorageError::from)? {
            n = n.saturating_add(keys::parse_count(&v).ok_or_else(|| corrupt(k, "count"))?);
        }
    }
    Ok(n)
}

/// The document id of every entry of the plan's ranges, in key order, each document once;
/// `f` answers whether to go on.
fn walk(view: &View, plan: &Plan, mut f: impl FnMut(Vec<u8>) -> Result<bool>) -> Result<()> {
    let mut seen = HashSet::new();
    for r in &plan.ranges {
        let mut it = raw(view, r);
        it.seek_to_first();
        while let Some((k, v)) = it.item() {
            let (seq, id) = parse_value(k, v)?;
            if (!plan.multi || seen.insert(seq)) && !f(id)? {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(crate::engine::StorageError::from)?;
    }
    Ok(())
}

/// How many documents match (at most `TOTAL_CAP`).
fn count(
    view: &View,
    project: &str,
    coll: &Collection,
    spec: &Spec,
    plan: &Plan,
    budget: &mut Budget,
) -> Result<u64> {
    // A collection keeps the number of its rows.
    if spec.filters.is_empty() {
        let k = keys::rows_count(project, &coll.database, &coll.id);
        return Ok(sum_counts(view, &[&k])?.min(TOTAL_CAP));
    }
    let exact = plan.exact(spec);
    // Runs of pinned values keep their own counts: a sum of at most a thousand reads (when
    // one document can be in several ranges, only for a single range).
    let counted: Option<Vec<&[u8]>> = plan.ranges.iter().map(|r| r.count.as_deref()).collect();
    if let Some(keys) = counted.filter(|_| exact && (!plan.multi || plan.ranges.len() == 1)) {
        return Ok(sum_counts(view, &keys)?.min(TOTAL_CAP));
    }
    let mut n = 0u64;
    if exact {
        // Index keys alone, up to the cap.
        walk(view, plan, |_| {
            n += 1;
            Ok(n < TOTAL_CAP)
        })?;
        return Ok(n.min(TOTAL_CAP));
    }
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut check = |batch: &mut Vec<Vec<u8>>, n: &mut u64| -> Result<()> {
        budget.take(batch.len())?;
        for d in fetch(view, project, coll, batch)? {
            if *n < TOTAL_CAP && spec.matches(&d) {
                *n += 1;
            }
        }
        batch.clear();
        Ok(())
    };
    walk(view, plan, |id| {
        batch.push(id);
        if batch.len() >= 256 {
            check(&mut batch, &mut n)?;
        }
        Ok(n < TOTAL_CAP)
    })?;
    if !batch.is_empty() && n < TOTAL_CAP {
        check(&mut batch, &mut n)?;
    }
    Ok(n.min(TOTAL_CAP))
}

/// A plan whose index order is not the query's: every candidate is read, filtered and sorted.
fn collected(
    view: &View,
    project: &str,
    coll: &Collection,
    spec: &Spec,
    plan: &Plan,
    budget: &mut Budget,
) -> Result<Page> {
    let mut ids: Vec<Vec<u8>> = plan.ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    walk(view, plan, |id| {
        budget.take(1)?;
        ids.push(id);
        Ok(true)
    })?;
    let docs = fetch(view, project, coll, &ids)?;
    page_of(docs, spec, |id| cursor_doc(view, project, coll, id).ok())
}
