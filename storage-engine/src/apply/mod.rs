//! `Engine::apply_entry`: the deterministic state transition. One Raft log entry — a batch of
//! envelopes — becomes one atomic RocksDB write batch together with its applied record, so a
//! crash leaves all of an entry or none of it. Inside the entry each envelope is applied under
//! its own savepoint: a failed check undoes that envelope alone and returns `Outcome::Failed`.
//!
//! Before its operation, an envelope is checked for repeats (a request id seen in the last
//! [`REQUEST_WINDOW_MS`] of leader time answers its first outcome again) and its actor is
//! authorised against the committed state. Each service's operations live in their own module.

mod audit;
mod auth;
mod cluster;
mod documents;
mod projects;
mod relations;
mod schema;
mod storage;
mod store;
mod transactions;
pub(crate) mod txn;
mod usage;

pub(crate) use documents::{staged_document, staged_documents};

use crate::engine::{encode, Engine, StorageError};
use crate::keys;
use model::change::Change;
use model::command::{Actor, Batch, Client, Envelope, Op, RequestId, StorageOp, COMMAND_VERSION};
use model::msg;
use model::{ApiKey, Error, ErrorCode, Outcome};
use txn::{Txn, META};

/// How long (in leader time, the envelopes' `at`) a request id is remembered. A proposal is
/// retried for at most the request timeout (seconds), so a minute leaves a wide margin.
pub const REQUEST_WINDOW_MS: i64 = 60_000;
/// Expired request ids forgotten per envelope applied: more than one, so the table shrinks
/// after a burst, and bounded, so no apply does unbounded work.
const PRUNE_PER_ENVELOPE: usize = 4;

pub(crate) type R<T> = Result<T, Failure>;

/// Why an apply stopped: a deterministic user error, or the disk failing under us.
#[derive(Debug)]
pub(crate) enum Failure {
    User(Error),
    Storage(StorageError),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::User(e)
    }
}
impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Failure::Storage(e)
    }
}
impl From<rocksdb::Error> for Failure {
    fn from(e: rocksdb::Error) -> Self {
        Failure::Storage(e.into())
    }
}

pub(crate) fn err(code: ErrorCode, msg: impl Into<model::error::Message>) -> Failure {
    Failure::User(Error::new(code, msg))
}

/// Test-only fault points (`--features fault-points`), chosen by `BASALT_FAULT`; never
/// compiled into the shipped binary:
/// - `apply-mid-entry`: the process dies after the first envelope of a multi-envelope entry
///   has been applied (in the overlay), before the entry is written;
/// - `diverge`: every entry this node applies also writes a stray key, so its state differs
///   from its peers' (what `basalt cluster check` must catch).
#[cfg(feature = "fault-points")]
fn fault(point: &str) -> bool {
    std::env::var("BASALT_FAULT").is_ok_and(|f| f == point)
}

impl Engine {
    /// Applies one log entry: `batch` (absent for entries that carry no command) and the Raft
    /// layer's applied record, all in one write. Answers each envelope's outcome and the
    /// documents each envelope changed, in order (for realtime).
    pub fn apply_entry(
        &self,
        batch: Option<&Batch>,
        index: u64,
        applied: &[u8],
    ) -> Result<(Vec<Outcome>, Vec<Vec<Change>>), StorageError> {
        let mut txn = Txn::new(self);
        let mut clock = last_at(&txn)?;
        let mut outcomes = Vec::new();
        let mut changes = Vec::new();
        for (n, env) in batch
            .map(|b| b.0.as_slice())
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            #[cfg(feature = "fault-points")]
            if n == 1 && fault("apply-mid-entry") {
                eprintln!("fault point apply-mid-entry: exiting");
                std::process::exit(137);
            }
            let _ = n;
            outcomes.push(apply_envelope(&mut txn, env, &mut clock)?);
            changes.push(txn.end_envelope());
        }
        #[cfg(feature = "fault-points")]
        if fault("diverge") {
            txn.put(
                META,
                b"\0fault-diverge".to_vec(),
                index.to_be_bytes().to_vec(),
            );
        }
        usage::flush(&mut txn).map_err(storage_only)?;
        txn.put(META, keys::LAST_AT.to_vec(), clock.to_be_bytes().to_vec());
        txn.put(META, keys::APPLIED.to_vec(), applied.to_vec());
        txn.put(
            META,
            keys::APPLIED_INDEX.to_vec(),
            index.to_be_bytes().to_vec(),
        );
        self.write(txn.into_batch())?;
        Ok((outcomes, changes))
    }
}

fn last_at(txn: &Txn) -> Result<i64, StorageError> {
    match txn.get(META, keys::LAST_AT) {
        Ok(Some(b)) => {
            Ok(i64::from_be_bytes(b.as_slice().try_into().map_err(
                |_| crate::engine::corrupt(keys::LAST_AT, "not 8 bytes"),
            )?))
        }
        Ok(None) => Ok(i64::MIN),
        Err(Failure::Storage(e)) => Err(e),
        Err(Failure::User(e)) => Err(crate::engine::corrupt(keys::LAST_AT, e.message)),
    }
}

fn apply_envelope(txn: &mut Txn, env: &Envelope, clock: &mut i64) -> Result<Outcome, StorageError> {
    if env.version != COMMAND_VERSION {
        // Skipping it would make this replica diverge: stop applying instead.
        return Err(StorageError::UnsupportedCommand {
            version: env.version,
        });
    }
    let at = env.at.max(*clock);
    *clock = at;
    txn.now = at;
    if audited(env).is_ok_and(|(op, _)| usage::reads_totals(op)) {
        usage::flush(txn).map_err(storage_only)?;
    }
    let sp = txn.savepoint();
    let result = match first_outcome(txn, env.request_id) {
        Ok(Some(first)) => return Ok(first),
        Ok(None) => audited(env).and_then(|(op, client)| {
            let caller = authorize(txn, env, op, at)?;
            let removed = usage::before(txn, &env.project, op)?;
            let out = dispatch(txn, env, op, &caller, at)?;
            if let Some(client) = client {
                audit::record(txn, env, op, client, at)?;
            }
            usage::account(txn, &env.project, op, removed, at)?;
            Ok(out)
        }),
        Err(e) => Err(e),
    };
    let outcome = match result {
        Ok(o) => o,
        Err(Failure::User(e)) => {
            txn.rollback(sp);
            Outcome::Failed(e)
        }
        Err(Failure::Storage(e)) => return Err(e),
    };
    txn.release(sp);
    remember(txn, env.request_id, at, &outcome);
    forget_expired(txn, at).map_err(|f| match f {
        Failure::Storage(e) => e,
        Failure::User(e) => crate::engine::corrupt(keys::REQUEST_AT, e.message),
    })?;
    Ok(outcome)
}

/// A failure of work that checks nothing a user sent (bookkeeping): only the disk can fail it.
fn storage_only(f: Failure) -> StorageError {
    match f {
        Failure::Storage(e) => e,
        Failure::User(e) => crate::engine::corrupt(keys::APPLIED, e.message),
    }
}

fn request_key(id: RequestId) -> Vec<u8> {
    let mut k = keys::REQUEST.to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

fn request_at_key(at: i64, id: RequestId) -> Vec<u8> {
    let mut k = keys::REQUEST_AT.to_vec();
    k.extend_from_slice(&keys::time_bytes(at));
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// The outcome a request id got the first time, if it was applied within the window.
fn first_outcome(txn: &Txn, id: RequestId) -> R<Option<Outcome>> {
    Ok(txn
        .get_as::<(i64, Outcome)>(META, &request_key(id))?
        .map(|(_, o)| o))
}

fn remember(txn: &mut Txn, id: RequestId, at: i64, outcome: &Outcome) {
    txn.put(META, request_key(id), encode(&(at, outcome)));
    txn.put(META, request_at_key(at, id), Vec::new());
}

/// Forgets a few request ids older than the window.
fn forget_expired(txn: &mut Txn, at: i64) -> R<()> {
    let horizon = keys::time_bytes(at.saturating_sub(REQUEST_WINDOW_MS));
    for (k, _) in txn.scan_limit(META, keys::REQUEST_AT, PRUNE_PER_ENVELOPE)? {
        let rest = &k[keys::REQUEST_AT.len()..];
        if rest.len() != 24 || rest[..8] >= horizon[..] {
            break;
        }
        let mut id = keys::REQUEST.to_vec();
        id.extend_from_slice(&rest[8..]);
        txn.del(META, id);
        txn.del(META, k);
    }
    Ok(())
}

/// Who an envelope acts as, once its actor has been checked: a key or the operator, which
/// permissions do not bind, or a user (or a guest) holding `roles`.
pub(crate) enum Caller {
    Privileged,
    Roles {
        user: Option<String>,
        /// The session the user acts through (empty for a JWT made without one).
        session: Option<String>,
        roles: Vec<String>,
    },
}

pub(super) fn unauthorized() -> Failure {
    err(
        ErrorCode::UserUnauthorized,
        "The current user is not authorized to perform the requested action.",
    )
}

/// Checks the actor against the committed state: a key exists in this project, has not
/// expired at `at`, and holds one of the scopes the operation needs; a user's session exists,
/// is theirs, has not expired, and the user is not blocked. Projects, keys, the cluster and
/// schemas are for keys (and the operator) alone.
fn authorize(txn: &Txn, env: &Envelope, op: &Op, at: i64) -> R<Caller> {
    let (id, scopes) = match &env.actor {
        Actor::Operator => return Ok(Caller::Privileged),
        Actor::Key { id, scopes } => (id, scopes),
        Actor::User { .. } | Actor::Guest
            if matches!(
                op,
                Op::Projects(_)
                    | Op::Usage(_)
                    | Op::Keys(_)
                    | Op::Cluster(_)
                    | Op::Schema(_)
                    | Op::Platforms(_)
                    | Op::Storage(StorageOp::InitKey { .. })
            ) =>
        {
            return Err(unauthorized())
        }
        Actor::User { id, session } => {
            let user = auth::check_session(txn, &env.project, id, session, at)?;
            auth::check_factors(txn, &env.project, &user, session, op)?;
            let teams = auth::team_roles(txn, &env.project, id)?;
            return Ok(Caller::Roles {
                roles: model::auth::roles(Some(&user), &teams),
                user: Some(user.id),
                session: Some(session.clone()),
            });
        }
        Actor::Guest => {
            return Ok(Caller::Roles {
                user: None,
                session: None,
                roles: model::auth::roles(None, &[]),
            })
        }
    };
    if matches!(
        op,
        Op::Projects(_)
            | Op::Usage(_)
            | Op::Keys(_)
            | Op::Cluster(_)
            | Op::Platforms(_)
            | Op::Storage(StorageOp::InitKey { .. })
    ) {
        return Err(unauthorized());
    }
    let key: ApiKey = txn
        .get_as(META, &keys::meta(&env.project, keys::KEY, &[id]))?
        .ok_or_else(unauthorized)?;
    if key.expire.is_some_and(|e| e <= at) {
        return Err(err(
            ErrorCode::ProjectKeyExpired,
            "The project key has expired. Please generate a new key using the Appwrite console.",
        ));
    }
    if !scopes.iter().any(|s| key.scopes.contains(s)) {
        return Err(err(
            ErrorCode::GeneralUnauthorizedScope,
            msg!(
                "app.{}@service.localhost (role: applications) missing scopes ({})",
                env.project,
                serde_json::to_string(scopes).unwrap_or_default()
            ),
        ));
    }
    Ok(Caller::Privileged)
}

/// The operation an envelope carries, and where its request came from if it is audited.
fn audited(env: &Envelope) -> R<(&Op, Option<&Client>)> {
    match &env.op {
        Op::Audited { op, .. } if matches!(**op, Op::Audited { .. }) => Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "An audited operation is one operation.",
        )),
        Op::Audited { op, client } => Ok((op, Some(client))),
        op => Ok((op, None)),
    }
}

fn dispatch(txn: &mut Txn, env: &Envelope, op: &Op, caller: &Caller, at: i64) -> R<Outcome> {
    let project = env.project.as_str();
    match op {
        Op::Projects(op) => projects::apply_project(txn, project, op, at),
        Op::Keys(op) => projects::apply_key(txn, project, op, at),
        Op::Schema(op) => schema::apply(txn, project, op, at),
        Op::Documents(op) => documents::apply(txn, project, caller, op, at),
        Op::Transactions(op) => transactions::apply(txn, project, caller, op, at),
        Op::Cluster(op) => cluster::apply(txn, op, at),
        Op::Auth(op) => auth::apply(txn, project, caller, op, at),
        Op::Platforms(op) => projects::apply_platform(txn, project, op, at),
        Op::Storage(op) => storage::apply(txn, project, caller, op, at),
        Op::Usage(op) => usage::apply(txn, project, op, at),
        // `audited` unwrapped it.
        Op::Audited { .. } => Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "An audited operation is one operation.",
        )),
    }
}

/// Runs `read` over the state as it would be after `staged` (a pending transaction's
/// operations, stamped `now`), in the overlay only: nothing is written.
pub(crate) fn staged_read<T>(
    mut txn: Txn,
    project: &str,
    staged: &[model::DocTarget],
    now: i64,
    read: impl FnOnce(&Txn) -> R<T>,
) -> Result<T, Error> {
    let result = documents::apply_doc_ops(&mut txn, project, &Caller::Privileged, staged, now)
        .and_then(|_| read(&txn));
    match result {
        Ok(v) => Ok(v),
        Err(Failure::User(e)) => Err(e),
        Err(Failure::Storage(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
