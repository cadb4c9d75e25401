//! Usage counters (`model::usage`), kept in the apply of what they count.
//!
//! Keys in `keys::usage_series` and `keys::usage_total`.

use super::txn::{Txn, INDEX, META};
use super::{err, R};
use crate::keys;
use model::change::Action;
use model::command::{Op, SchemaOp, UsageOp, MAX_READ_COUNTS};
use model::usage::{self, Metric, Period, Scope};
use model::{ErrorCode, Outcome};
use std::collections::BTreeMap;

/// What one envelope adds to each counter.
#[derive(Default)]
pub(super) struct Tally(BTreeMap<(Scope, Metric), i64>);

impl Tally {
    fn add(&mut self, scope: Scope, metric: Metric, n: i64) {
        if n != 0 {
            *self.0.entry((scope, metric)).or_default() += n;
        }
    }

    /// Adds `n` at the project, the database and (with `coll`) the collection.
    fn add_down(&mut self, db: &str, coll: Option<&str>, metric: Metric, n: i64) {
        self.add(Scope::Project, metric, n);
        self.add(Scope::Database(db.to_string()), metric, n);
        if let Some(c) = coll {
            self.add(Scope::Collection(db.to_string(), c.to_string()), metric, n);
        }
    }
}

/// The tallies of the entry being applied, by project and hour (with the time of the first
/// envelope counted in that hour): added up envelope by envelope and written once, at the end
/// of the entry (`flush`), so the counters a batch of writes shares are read and written once.
#[derive(Default)]
pub(super) struct Pending(BTreeMap<(String, i64), (Tally, i64)>);

impl Pending {
    fn add(&mut self, project: &str, tally: Tally, at: i64) {
        if tally.0.is_empty() {
            return;
        }
        let key = (project.to_string(), Period::Hour.bucket(at));
        let (sum, _) = self.0.entry(key).or_insert_with(|| (Tally::default(), at));
        for (k, n) in tally.0 {
            *sum.0.entry(k).or_default() += n;
        }
    }
}

/// Writes what the entry has counted so far: at its end, and before an operation that reads
/// the running totals (a delete of a collection or a database).
pub(super) fn flush(txn: &mut Txn) -> R<()> {
    for ((project, _), (tally, at)) in std::mem::take(&mut txn.usage.0) {
        write(txn, &project, tally, at)?;
    }
    Ok(())
}

/// Whether `op` reads the running totals (so what is pending must be written first).
pub(super) fn reads_totals(op: &Op) -> bool {
    matches!(
        op,
        Op::Schema(SchemaOp::DeleteCollection { .. } | SchemaOp::DeleteDatabase { .. })
    )
}

/// What a schema operation about to be applied will remove (counted before it goes).
pub(super) fn before(txn: &Txn, project: &str, op: &Op) -> R<Tally> {
    let mut t = Tally::default();
    match op {
        Op::Schema(SchemaOp::DeleteCollection { database, id }) => {
            if txn
                .get(
                    META,
                    &keys::meta(project, keys::COLLECTION, &[database, id]),
                )?
                .is_none()
            {
                return Ok(t);
            }
            t.add_down(database, None, Metric::Collections, -1);
            t.add_down(
                database,
                None,
                Metric::Documents,
                -rows(txn, project, database, id)?,
            );
            let scope = Scope::Collection(database.clone(), id.clone());
            let bytes = total(txn, project, &scope, Metric::Storage)?;
            t.add_down(database, None, Metric::Storage, -bytes);
        }
        Op::Schema(SchemaOp::DeleteDatabase { id }) => {
            if txn
                .get(META, &keys::meta(project, keys::DATABASE, &[id]))?
                .is_none()
            {
                return Ok(t);
            }
            let db = Scope::Database(id.clone());
            t.add(Scope::Project, Metric::Databases, -1);
            for m in [Metric::Collections, Metric::Documents, Metric::Storage] {
                t.add(Scope::Project, m, -total(txn, project, &db, m)?);
            }
        }
        _ => {}
    }
    Ok(t)
}

/// Counts what the envelope just applied did: rows written, made and removed, and the bytes
/// of row data, from its recorded changes; databases and collections made and removed from
/// the operation. Adds `tally` (from `before`) to what the entry has counted (`Pending`); the
/// last fallible step of an envelope, so a failed one leaves nothing counted.
pub(super) fn account(txn: &mut Txn, project: &str, op: &Op, mut tally: Tally, at: i64) -> R<()> {
    match op {
        Op::Schema(SchemaOp::CreateDatabase { .. }) => {
            tally.add(Scope::Project, Metric::Databases, 1);
        }
        Op::Schema(SchemaOp::CreateCollection { collection }) => {
            tally.add_down(&collection.database, None, Metric::Collections, 1);
        }
        Op::Schema(SchemaOp::DeleteCollection { database, id }) => {
            txn.delete_prefix(
                META,
                keys::meta_prefix(project, keys::USAGE_TOTAL, &[database, id]),
            );
            forget_current(
                txn,
                project,
                &Scope::Collection(database.clone(), id.clone()),
                at,
            );
        }
        Op::Schema(SchemaOp::DeleteDatabase { id }) => {
            txn.delete_prefix(META, keys::meta_prefix(project, keys::USAGE_TOTAL, &[id]));
            forget_current(txn, project, &Scope::Database(id.clone()), at);
        }
        _ => {}
    }
    for c in txn.pending_changes() {
        if c.database == model::auth::DB || c.database == model::storage::DB {
            continue;
        }
        let (db, coll) = (c.database.as_str(), Some(c.collection.as_str()));
        tally.add_down(db, None, Metric::Writes, 1);
        let made = match (&c.old, &c.new, c.action) {
            (None, Some(_), _) => 1,
            (Some(_), None, Action::Delete) => -1,
            _ => 0,
        };
        tally.add_down(db, coll, Metric::Documents, made);
        tally.add_down(db, coll, Metric::Storage, c.stored_bytes);
    }
    txn.usage.add(project, tally, at);
    Ok(())
}

/// Removes a deleted scope's counters of the current hour and day, so one made again with
/// its id starts from nothing (the routes show earlier buckets, which ended before it was
/// made, as 0).
fn forget_current(txn: &mut Txn, project: &str, scope: &Scope, at: i64) {
    for period in Period::ALL {
        for metric in Metric::ALL {
            txn.del(
                META,
                keys::usage_series(project, period, period.bucket(at), scope, metric),
            );
        }
    }
}

/// A rewrite of stored rows that records no change (a reshape after a column was renamed or
/// deleted): the bytes it freed or took.
pub(super) fn rewritten(
    txn: &mut Txn,
    project: &str,
    db: &str,
    coll: &str,
    bytes: i64,
    at: i64,
) -> R<()> {
    let mut tally = Tally::default();
    tally.add_down(db, Some(coll), Metric::Storage, bytes);
    write(txn, project, tally, at)
}

/// Adds a tally to its counters (and running totals), then prunes expired ones.
fn write(txn: &mut Txn, project: &str, tally: Tally, at: i64) -> R<()> {
    if tally.0.is_empty() {
        return Ok(());
    }
    // Each counter may be a new key (per period): prune at least as many as may have come.
    let budget = tally.0.len() + usage::PRUNE_PER_WRITE;
    for ((scope, metric), n) in tally.0 {
        for period in Period::ALL {
            add(
                txn,
                keys::usage_series(project, period, period.bucket(at), &scope, metric),
                n,
            )?;
        }
        if usage::keeps_total(&scope, metric) {
            add(txn, keys::usage_total(project, &scope, metric), n)?;
        }
    }
    prune(txn, project, at, budget)
}

/// `UsageOp`: counts a node reports.
pub(super) fn apply(txn: &mut Txn, project: &str, op: &UsageOp, at: i64) -> R<Outcome> {
    match op {
        UsageOp::Reads { counts } => {
            if counts.len() > MAX_READ_COUNTS {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "Too many read counts in one report.",
                ));
            }
            for c in counts {
                if c.database.is_empty() || c.database.len() > 255 {
                    continue;
                }
                let n = i64::try_from(c.reads).unwrap_or(i64::MAX);
                let at = c.hour.saturating_mul(1000);
                for scope in [Scope::Project, Scope::Database(c.database.clone())] {
                    for period in Period::ALL {
                        let k = keys::usage_series(
                            project,
                            period,
                            period.bucket(at),
                            &scope,
                            Metric::Reads,
                        );
                        add(txn, k, n)?;
                    }
                }
            }
            prune(txn, project, at, 2 * counts.len() + usage::PRUNE_PER_WRITE)?;
            Ok(Outcome::Done)
        }
    }
}

fn add(txn: &mut Txn, key: Vec<u8>, n: i64) -> R<()> {
    let now = txn.get(META, &key)?.map_or(0, |v| usage::decode(&v));
    txn.put(META, key, now.saturating_add(n).to_be_bytes().to_vec());
    Ok(())
}

fn total(txn: &Txn, project: &str, scope: &Scope, metric: Metric) -> R<i64> {
    Ok(txn
        .get(META, &keys::usage_total(project, scope, metric))?
        .map_or(0, |v| usage::decode(&v)))
}

fn rows(txn: &Txn, project: &str, db: &str, coll: &str) -> R<i64> {
    Ok(txn
        .get(INDEX, &keys::rows_count(project, db, coll))?
        .and_then(|v| keys::parse_count(&v))
        .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)))
}

/// Removes up to `budget` of the project's counters of each period older than the period
/// keeps them.
fn prune(txn: &mut Txn, project: &str, at: i64, budget: usize) -> R<()> {
    for period in Period::ALL {
        let prefix = keys::meta_prefix(project, keys::USAGE, &[period.tag()]);
        let horizon = format!("{:012}", period.bucket(at) - period.retention_secs());
        for (k, _) in txn.scan_limit(META, &prefix, budget)? {
            let bucket = &k[prefix.len()..];
            if bucket.len() < 12 || bucket[..12] >= *horizon.as_bytes() {
                break;
            }
            txn.del(META, k);
        }
    }
    Ok(())
}
