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
/// the operation. Adds `pending` (from `before`) and writes the counters.
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
        }
        Op::Schema(SchemaOp::DeleteDatabase { id }) => {
            txn.delete_prefix(META, keys::meta_prefix(project, keys::USAGE_TOTAL, &[id]));
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
        let size = |d: &Option<model::Document>| {
            d.as_ref()
                .map_or(0, |d| bincode::serialized_size(d).unwrap_or(0) as i64)
        };
        tally.add_down(db, coll, Metric::Storage, size(&c.new) - size(&c.old));
    }
    if tally.0.is_empty() {
        return Ok(());
    }
    for ((scope, metric), n) in std::mem::take(&mut tally.0) {
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
    prune(txn, project, at)
}

/// `UsageOp`: counts a node reports.
pub(super) fn apply(txn: &mut Txn, project: &str, op: &UsageOp) -> R<Outcome> {
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

/// Removes a few of the project's counters older than their period keeps them.
fn prune(txn: &mut Txn, project: &str, at: i64) -> R<()> {
    for period in Period::ALL {
        let prefix = keys::meta_prefix(project, keys::USAGE, &[period.tag()]);
        let horizon = format!("{:012}", period.bucket(at) - period.retention_secs());
        for (k, _) in txn.scan_limit(META, &prefix, usage::PRUNE_PER_WRITE)? {
            let bucket = &k[prefix.len()..];
            if bucket.len() < 12 || bucket[..12] >= *horizon.as_bytes() {
                break;
            }
            txn.del(META, k);
        }
    }
    Ok(())
}
