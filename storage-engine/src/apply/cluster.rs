//! The cluster's own records: join tokens and admitted/retired nodes (see `ClusterOp`).

use super::txn::{Txn, META};
use super::{err, R};
use crate::engine::encode;
use crate::keys;
use model::command::{ClusterOp, TokenUse};
use model::schema::{JoinTokenRecord, NodeRecord, RootKeyRecord};
use model::{msg, ErrorCode, Outcome};

fn forbidden(m: impl Into<model::error::Message>) -> super::Failure {
    err(ErrorCode::GeneralAccessForbidden, m)
}

pub(super) fn apply(txn: &mut Txn, op: &ClusterOp, at: i64) -> R<Outcome> {
    match op {
        ClusterOp::Check => Ok(Outcome::Done),
        ClusterOp::IssueToken {
            id,
            secret_sha256,
            expires,
        } => {
            let k = keys::join_token(id);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::GeneralBadRequest,
                    "a join token with this id exists",
                ));
            }
            let record = JoinTokenRecord {
                secret_sha256: secret_sha256.clone(),
                issued_at: at,
                expires: *expires,
                used_by: None,
            };
            txn.put(META, k, encode(&record));
            Ok(Outcome::Done)
        }
        ClusterOp::Admit {
            node,
            key_sha256,
            token,
        } => {
            let k = keys::cluster_node(*node);
            let known: Option<NodeRecord> = txn.get_as(META, &k)?;
            if known.as_ref().is_some_and(|r| r.retired_at.is_some()) {
                return Err(forbidden(msg!(
                    "node {} was removed from this cluster and cannot join again; node ids are never reused: join with a new --node-id",
                    node
                )));
            }
            if known.as_ref().is_some_and(|r| &r.key_sha256 != key_sha256) {
                return Err(forbidden(msg!(
                    "node {} is already admitted with another key; node ids are never reused: join with a new --node-id",
                    node
                )));
            }
            if let Some(t) = token {
                redeem(txn, t, *node, at)?;
            }
            let record = NodeRecord {
                key_sha256: key_sha256.clone(),
                admitted_at: known.map_or(at, |r| r.admitted_at),
                retired_at: None,
            };
            txn.put(META, k, encode(&record));
            Ok(Outcome::Done)
        }
        ClusterOp::SetPlacement(policy) => {
            if let Some(problem) = policy.problem() {
                return Err(err(ErrorCode::GeneralArgumentInvalid, problem));
            }
            txn.put(META, keys::PLACEMENT.to_vec(), encode(policy));
            Ok(Outcome::Done)
        }
        ClusterOp::SetZone { node, zone } => {
            if !zone.is_empty() && !model::schema::valid_region(zone) {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "a zone name is 1-64 of a-z, A-Z, 0-9, '.', '_' and '-'",
                ));
            }
            let k = keys::cluster_zone(*node);
            if zone.is_empty() {
                txn.del(META, k);
            } else {
                txn.put(META, k, zone.as_bytes().to_vec());
            }
            Ok(Outcome::Done)
        }
        ClusterOp::SetRootKey { sha256, initial } => {
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "the root key digest is not 64 hex digits",
                ));
            }
            if *initial && txn.get(META, keys::ROOT_KEY)?.is_some() {
                return Ok(Outcome::Done);
            }
            let record = RootKeyRecord {
                sha256: sha256.to_ascii_lowercase(),
                removed_since: false,
            };
            txn.put(META, keys::ROOT_KEY.to_vec(), encode(&record));
            Ok(Outcome::Done)
        }
        ClusterOp::Retire { node } => {
            let k = keys::cluster_node(*node);
            let known: Option<NodeRecord> = txn.get_as(META, &k)?;
            let record = NodeRecord {
                key_sha256: known
                    .as_ref()
                    .map_or(String::new(), |r| r.key_sha256.clone()),
                admitted_at: known.as_ref().map_or(at, |r| r.admitted_at),
                retired_at: Some(known.and_then(|r| r.retired_at).unwrap_or(at)),
            };
            txn.put(META, k, encode(&record));
            if let Some(mut root) = txn.get_as::<RootKeyRecord>(META, keys::ROOT_KEY)? {
                root.removed_since = true;
                txn.put(META, keys::ROOT_KEY.to_vec(), encode(&root));
            }
            Ok(Outcome::Done)
        }
    }
}

/// Consumes join token `t` for `node`: it must exist, match, be unused and unexpired at `at`.
fn redeem(txn: &mut Txn, t: &TokenUse, node: u64, at: i64) -> R<()> {
    let k = keys::join_token(&t.id);
    let invalid = || forbidden("the join token is not valid for this cluster");
    let mut record: JoinTokenRecord = txn.get_as(META, &k)?.ok_or_else(invalid)?;
    // Both are digests of secrets: comparing them leaks nothing about a secret.
    if record.secret_sha256 != t.secret_sha256 {
        return Err(invalid());
    }
    // Used by this same node: a retry whose first answer was lost (the key must still match,
    // which `Admit` checks).
    if let Some(by) = record.used_by.filter(|by| *by != node) {
        return Err(forbidden(msg!(
            "the join token was already used (by node {}); tokens work once",
            by
        )));
    }
    if at >= record.expires {
        return Err(forbidden("the join token has expired"));
    }
    record.used_by = Some(node);
    txn.put(META, k, encode(&record));
    Ok(())
}
