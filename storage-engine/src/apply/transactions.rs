//! Transactions: operations staged through Raft, invisible until a commit applies them all in
//! one entry (or none, marking the transaction failed).
//!
//! A key's transactions are the project's. A user's are the user's alone (as Appwrite gives
//! them `read/update/delete("user:ID")`): another user is told it does not exist; a key may
//! still see, stage in, commit or delete it. What a user stages is tried at once with the
//! user's roles (so a row they may not write is refused when staged) and again, for real,
//! when committed, with the roles the user has then. A user keeps at most
//! `MAX_USER_TRANSACTIONS`; finished and expired ones are cleared when they make another.

use super::documents::{apply_doc_ops, initial_permissions};
use super::projects::require_project;
use super::store::load_collection;
use super::txn::{Txn, META};
use super::{err, unauthorized, Caller, Failure, R};
use crate::engine::{decode, encode};
use crate::keys;
use model::command::{DocOp, TransactionOp};
use model::msg;
use model::schema::{Transaction, TransactionStatus};
use model::{Error, ErrorCode, Outcome};

pub const MAX_TRANSACTION_OPERATIONS: usize = 100;
/// Transactions one user may hold at once.
pub const MAX_USER_TRANSACTIONS: usize = 20;
/// The most a user's transaction may weigh, its staged operations encoded (each stage
/// rewrites it whole).
pub const MAX_USER_TRANSACTION_BYTES: usize = 1 << 20;

pub(super) fn apply(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    op: &TransactionOp,
    at: i64,
) -> R<Outcome> {
    let user = match caller {
        Caller::Privileged => None,
        Caller::Roles { user: Some(u), .. } => Some(u.as_str()),
        // A guest's transaction would be no one's to use or clear.
        Caller::Roles { user: None, .. } => return Err(unauthorized()),
    };
    if let (
        Some(u),
        TransactionOp::Stage { id, .. }
        | TransactionOp::Commit { id }
        | TransactionOp::Rollback { id }
        | TransactionOp::Delete { id },
    ) = (user, op)
    {
        if owner(txn, project, id)?.as_deref() != Some(u) {
            return Err(not_found(id));
        }
    }
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
            if let Some(u) = user {
                let held = clear_finished(txn, project, u, at)?;
                if held >= MAX_USER_TRANSACTIONS {
                    return Err(err(
                        ErrorCode::TransactionLimitExceeded,
                        msg!("A user may hold at most {} open transactions. Commit, roll back or delete one first.", MAX_USER_TRANSACTIONS),
                    ));
                }
                txn.put(
                    META,
                    keys::meta(project, keys::TRANSACTION_OWNER, &[id]),
                    encode(&u.to_string()),
                );
                txn.put(
                    META,
                    keys::meta(project, keys::USER_TRANSACTION, &[u, id]),
                    encode(id),
                );
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
            // A row a user stages without permissions gets theirs now, as it will when
            // committed, so that the transaction's own reads show it to them.
            t.operations.extend(ops.iter().cloned().map(|mut o| {
                if let DocOp::Create {
                    permissions: p @ None,
                    ..
                } = &mut o.op
                {
                    *p = user.map(|_| initial_permissions(caller, &None));
                }
                o
            }));
            t.updated_at = at;
            let bytes = encode(&t);
            if user.is_some() {
                if bytes.len() > MAX_USER_TRANSACTION_BYTES {
                    return Err(err(
                        ErrorCode::TransactionLimitExceeded,
                        msg!(
                            "A transaction of a user may hold at most {} bytes of staged operations.",
                            MAX_USER_TRANSACTION_BYTES
                        ),
                    ));
                }
                // Bulk changes are a key's (as outside transactions); the rest is tried now
                // with the user's roles, on top of what is staged, and undone.
                if ops.iter().any(|o| {
                    matches!(
                        o.op,
                        DocOp::UpdateWhere { .. }
                            | DocOp::OperateWhere { .. }
                            | DocOp::DeleteWhere { .. }
                    )
                }) {
                    return Err(unauthorized());
                }
                let sp = txn.savepoint();
                let tried = apply_doc_ops(txn, project, caller, &t.operations, at);
                txn.rollback(sp);
                tried?;
            }
            txn.put(META, keys::meta(project, keys::TRANSACTION, &[id]), bytes);
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
            remove(txn, project, id)?;
            Ok(Outcome::Done)
        }
    }
}

/// The user who made transaction `id` (none for a key's).
fn owner(txn: &Txn, project: &str, id: &str) -> R<Option<String>> {
    txn.get_as(META, &keys::meta(project, keys::TRANSACTION_OWNER, &[id]))
}

fn not_found(id: &str) -> Failure {
    err(
        ErrorCode::TransactionNotFound,
        msg!(
            "Transaction with the requested ID '{}' could not be found.",
            id
        ),
    )
}

/// Removes transaction `id` and its owner's records.
fn remove(txn: &mut Txn, project: &str, id: &str) -> R<()> {
    if let Some(u) = owner(txn, project, id)? {
        txn.del(META, keys::meta(project, keys::USER_TRANSACTION, &[&u, id]));
        txn.del(META, keys::meta(project, keys::TRANSACTION_OWNER, &[id]));
    }
    txn.del(META, keys::meta(project, keys::TRANSACTION, &[id]));
    Ok(())
}

/// The ids of `user`'s transactions (at most `MAX_USER_TRANSACTIONS`, which Create keeps).
fn user_transactions(txn: &Txn, project: &str, user: &str) -> R<Vec<String>> {
    let prefix = keys::meta_prefix(project, keys::USER_TRANSACTION, &[user]);
    txn.scan_limit(META, &prefix, MAX_USER_TRANSACTIONS + 1)?
        .into_iter()
        .map(|(k, v)| Ok(decode::<String>(&k, &v)?))
        .collect()
}

/// Clears `user`'s committed, failed and expired transactions; how many remain.
fn clear_finished(txn: &mut Txn, project: &str, user: &str, now: i64) -> R<usize> {
    let mut held = 0;
    for id in user_transactions(txn, project, user)? {
        let t: Option<model::Transaction> =
            txn.get_as(META, &keys::meta(project, keys::TRANSACTION, &[&id]))?;
        match t {
            Some(t) if t.status == TransactionStatus::Pending && now < t.expires_at => held += 1,
            _ => remove(txn, project, &id)?,
        }
    }
    Ok(held)
}

/// Removes every transaction of `user` (the user is being deleted: a new user given the same
/// id inherits none).
pub(super) fn purge_user(txn: &mut Txn, project: &str, user: &str) -> R<()> {
    for id in user_transactions(txn, project, user)? {
        remove(txn, project, &id)?;
    }
    Ok(())
}

fn load_transaction(txn: &Txn, project: &str, id: &str) -> R<model::Transaction> {
    txn.get_as(META, &keys::meta(project, keys::TRANSACTION, &[id]))?
        .ok_or_else(|| not_found(id))
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
