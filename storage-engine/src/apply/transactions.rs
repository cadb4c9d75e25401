//! Transactions: operations staged through Raft, invisible until a commit applies them all in
//! one entry (or none, marking the transaction failed).

use super::documents::apply_doc_ops;
use super::projects::require_project;
use super::store::load_collection;
use super::txn::{Txn, META};
use super::{err, Caller, Failure, R};
use crate::engine::encode;
use crate::keys;
use model::command::TransactionOp;
use model::msg;
use model::schema::{Transaction, TransactionStatus};
use model::{Error, ErrorCode, Outcome};

pub const MAX_TRANSACTION_OPERATIONS: usize = 100;

pub(super) fn apply(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    op: &TransactionOp,
    at: i64,
) -> R<Outcome> {
    match op {
        TransactionOp::Create { id, ttl_ms } => {
            require_project(txn, project)?;
            let k = keys::meta(project, keys::TRANSACTION, &[id]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::TransactionAlreadyExists,
                    msg!("Transaction with the requested ID '{}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID.", id),
                ));
            }
            let t = Transaction {
                id: id.clone(),
                status: TransactionStatus::Pending,
                operations: Vec::new(),
                expires_at: at.saturating_add(*ttl_ms),
                created_at: at,
                updated_at: at,
            };
            txn.put(META, k, encode(&t));
            Ok(Outcome::Transaction(t))
        }
        TransactionOp::Stage { id, ops } => {
            let mut t = pending_transaction(txn, project, id, at)?;
            if t.operations.len().saturating_add(ops.len()) > MAX_TRANSACTION_OPERATIONS {
                return Err(err(
                    ErrorCode::TransactionLimitExceeded,
                    msg!("Transaction already has {} operations, adding {} would exceed the maximum of {}", t.operations.len(), ops.len(), MAX_TRANSACTION_OPERATIONS),
                ));
            }
            for op in ops {
                load_collection(txn, project, &op.database, &op.collection)?;
            }
            t.operations.extend(ops.iter().cloned());
            t.updated_at = at;
            txn.put(
                META,
                keys::meta(project, keys::TRANSACTION, &[id]),
                encode(&t),
            );
            Ok(Outcome::Transaction(t))
        }
        TransactionOp::Commit { id } => {
            let mut t = pending_transaction(txn, project, id, at)?;
            let k = keys::meta(project, keys::TRANSACTION, &[id]);
            let ops = std::mem::take(&mut t.operations);
            t.updated_at = at;
            let sp = txn.savepoint();
            match apply_doc_ops(txn, project, caller, &ops, at) {
                Ok(_) => {
                    t.status = TransactionStatus::Committed;
                    t.operations = ops;
                    txn.put(META, k, encode(&t));
                    Ok(Outcome::Transaction(t))
                }
                Err(Failure::User(e)) => {
                    // Nothing of the transaction lands; only its status changes. That is a
                    // failed outcome whose change is kept, so it is not an `Err`.
                    txn.rollback(sp);
                    t.status = TransactionStatus::Failed;
                    t.operations = ops;
                    txn.put(META, k, encode(&t));
                    Ok(Outcome::Failed(Error::new(
                        ErrorCode::TransactionFailed,
                        msg!("The transaction has errored: {}", e.message),
                    )))
                }
                Err(other) => Err(other),
            }
        }
        TransactionOp::Rollback { id } => {
            let k = keys::meta(project, keys::TRANSACTION, &[id]);
            let mut t = load_transaction(txn, project, id)?;
            if t.status != TransactionStatus::Pending {
                return Err(err(
                    ErrorCode::TransactionNotReady,
                    "The transaction is not ready yet. Please try again later.",
                ));
            }
            t.status = TransactionStatus::Failed;
            t.updated_at = at;
            txn.put(META, k, encode(&t));
            Ok(Outcome::Transaction(t))
        }
        TransactionOp::Delete { id } => {
            load_transaction(txn, project, id)?;
            txn.del(META, keys::meta(project, keys::TRANSACTION, &[id]));
            Ok(Outcome::Done)
        }
    }
}

fn load_transaction(txn: &Txn, project: &str, id: &str) -> R<model::Transaction> {
    txn.get_as(META, &keys::meta(project, keys::TRANSACTION, &[id]))?
        .ok_or_else(|| {
            err(
                ErrorCode::TransactionNotFound,
                msg!(
                    "Transaction with the requested ID '{}' could not be found.",
                    id
                ),
            )
        })
}

fn pending_transaction(txn: &Txn, project: &str, id: &str, now: i64) -> R<model::Transaction> {
    let t = load_transaction(txn, project, id)?;
    if t.status != TransactionStatus::Pending {
        return Err(err(
            ErrorCode::TransactionNotReady,
            msg!(
                "The transaction is {} and can no longer change.",
                t.status.as_str()
            ),
        ));
    }
    if now >= t.expires_at {
        return Err(err(
            ErrorCode::TransactionExpired,
            "The transaction has expired. Please create a new transaction and try again.",
        ));
    }
    Ok(t)
}
