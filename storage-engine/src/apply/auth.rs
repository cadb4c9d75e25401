//! End users and sessions (`model::auth`): documents of the project's system collections,
//! written through the same document path as rows, so their unique indexes (email, phone),
//! counts and queries are the rows' own.
//!
//! Who may do what is settled here, against the committed state: a guest may sign up and
//! sign in; a user may change only themself (never their status back to active, their labels
//! or their verification) and end only their own sessions; a key may do everything.

use super::documents::{next_sequence, write_document};
use super::projects::require_project;
use super::store::load_document;
use super::txn::{Txn, INDEX, META};
use super::{err, Caller, Failure, R};
use crate::keys;
use model::auth::{self, Session, User};
use model::command::{AuthOp, UserChange};
use model::schema::{Document, Order};
use model::{ErrorCode, Outcome, Value};

pub(super) fn apply(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    op: &AuthOp,
    at: i64,
) -> R<Outcome> {
    require_project(txn, project)?;
    permitted(caller, op)?;
    match op {
        AuthOp::CreateUser { user } => create_user(txn, project, user, at),
        AuthOp::UpdateUser { id, changes, proof } => {
            let out = update_user(txn, project, id, changes, proof.as_deref(), at)?;
            if changes.iter().any(|c| matches!(c, UserChange::Password(_))) {
                // A new password ends every other session (Appwrite's `invalidateSessions`,
                // on by default): all of them when a key changed it.
                let keep = match caller {
                    Caller::Roles { session, .. } => session.as_deref(),
                    Caller::Privileged => None,
                };
                for s in user_sessions(txn, project, id)? {
                    if Some(s.id.as_str()) != keep {
                        write_document(txn, project, auth::sessions(), Some(&s), None)?;
                    }
                }
            }
            Ok(out)
        }
        AuthOp::DeleteUser { id } => {
            let (doc, _) = load_user(txn, project, id)?;
            for s in user_sessions(txn, project, id)? {
                write_document(txn, project, auth::sessions(), Some(&s), None)?;
            }
            write_document(txn, project, auth::users(), Some(&doc), None)?;
            Ok(Outcome::Done)
        }
        AuthOp::CreateSession {
            session,
            proof,
            max,
            user,
        } => {
            if let Some(u) = user {
                create_user(txn, project, u, at)?;
            }
            create_session(txn, project, session, proof.as_deref(), *max, at)
        }
        AuthOp::ExtendSession { user, id, expire } => {
            let old = load_session(txn, project, user, id)?;
            let mut doc = old.clone();
            let mut s = Session::from_document(&old);
            s.expire = *expire;
            doc.data = s.data();
            doc.updated_at = at;
            write_document(txn, project, auth::sessions(), Some(&old), Some(&doc))?;
            Ok(Outcome::Session(Session::from_document(&doc)))
        }
        AuthOp::DeleteSession { user, id } => {
            let old = load_session(txn, project, user, id)?;
            write_document(txn, project, auth::sessions(), Some(&old), None)?;
            Ok(Outcome::Done)
        }
        AuthOp::DeleteSessions { user } => {
            load_user(txn, project, user)?;
            for s in user_sessions(txn, project, user)? {
                write_document(txn, project, auth::sessions(), Some(&s), None)?;
            }
            Ok(Outcome::Done)
        }
        AuthOp::InitJwtSecret { secret } => {
            let k = keys::meta(project, keys::JWT_SECRET, &[]);
            if txn.get(META, &k)?.is_none() {
                txn.put(META, k, secret.as_bytes().to_vec());
            }
            Ok(Outcome::Done)
        }
    }
}

fn unauthorized() -> Failure {
    err(
        ErrorCode::UserUnauthorized,
        "The current user is not authorized to perform the requested action.",
    )
}

/// What a caller that is not a key may ask for.
fn permitted(caller: &Caller, op: &AuthOp) -> R<()> {
    let me = match caller {
        Caller::Privileged => return Ok(()),
        Caller::Roles { user, .. } => user.as_deref(),
    };
    let ok = match (op, me) {
        (AuthOp::InitJwtSecret { .. }, _) => true,
        (AuthOp::CreateUser { .. } | AuthOp::CreateSession { .. }, None) => true,
        (AuthOp::UpdateUser { id, changes, .. }, Some(me)) => {
            id == me
                && !changes.iter().any(|c| {
                    matches!(
                        c,
                        UserChange::Status(true)
                            | UserChange::Labels(_)
                            | UserChange::EmailVerification(_)
                            | UserChange::PhoneVerification(_)
                    )
                })
        }
        (
            AuthOp::ExtendSession { user, .. }
            | AuthOp::DeleteSession { user, .. }
            | AuthOp::DeleteSessions { user },
            Some(me),
        ) => user == me,
        _ => false,
    };
    match ok {
        true => Ok(()),
        false => Err(unauthorized()),
    }
}

pub(super) fn user_not_found() -> Failure {
    err(
        ErrorCode::UserNotFound,
        "User with the requested ID could not be found.",
    )
}

fn session_not_found() -> Failure {
    err(
        ErrorCode::UserSessionNotFound,
        "The current user session could not be found.",
    )
}

fn invalid_credentials() -> Failure {
    err(
        ErrorCode::UserInvalidCredentials,
        "Invalid credentials. Please check the email and password.",
    )
}

pub(super) fn load_user(txn: &Txn, project: &str, id: &str) -> R<(Document, User)> {
    let doc = load_document(txn, project, auth::users(), id)?.ok_or_else(user_not_found)?;
    let user = User::from_document(&doc);
    Ok((doc, user))
}

fn load_session(txn: &Txn, project: &str, user: &str, id: &str) -> R<Document> {
    let doc = load_document(txn, project, auth::sessions(), id)?.ok_or_else(session_not_found)?;
    match Session::from_document(&doc).user_id == user {
        true => Ok(doc),
        false => Err(session_not_found()),
    }
}

/// A user's sessions, oldest first (there are at most `MAX_SESSIONS` and a few).
fn user_sessions(txn: &Txn, project: &str, user: &str) -> R<Vec<Document>> {
    let coll = auth::sessions();
    let mut prefix = keys::index_prefix(project, &coll.database, &coll.id, "_key_user");
    keys::encode_value(&mut prefix, &Value::Str(user.to_string()), Order::Asc);
    let mut out = Vec::new();
    for (k, v) in txn.scan_limit(INDEX, &prefix, 1000)? {
        let (_, id) = keys::parse_entry_value(&v)
            .ok_or_else(|| Failure::Storage(crate::engine::corrupt(&k, "index entry")))?;
        if let Some(d) = load_document(txn, project, coll, &String::from_utf8_lossy(id))? {
            out.push(d);
        }
    }
    Ok(out)
}

/// A unique-index refusal on a user, in the words of the field that collided.
fn taken(f: Failure, code: ErrorCode) -> Failure {
    match f {
        Failure::User(e) if e.code == ErrorCode::DocumentUniqueViolation => match code {
            // An email or phone is also a messaging target, which is what Appwrite finds
            // taken first.
            ErrorCode::UserTargetAlreadyExists => {
                err(code, "A target with the same ID already exists.")
            }
            _ => err(
                ErrorCode::UserAlreadyExists,
                "A user with the same id, email, or phone already exists in this project.",
            ),
        },
        other => other,
    }
}

fn create_user(txn: &mut Txn, project: &str, user: &User, at: i64) -> R<Outcome> {
    let coll = auth::users();
    if load_document(txn, project, coll, &user.id)?.is_some() {
        return Err(err(
            ErrorCode::UserAlreadyExists,
            "A user with the same id, email, or phone already exists in this project.",
        ));
    }
    let mut u = user.clone();
    u.created_at = at;
    u.updated_at = at;
    u.registration = at;
    u.password_update = u.password.as_ref().map(|_| at);
    u.accessed_at = Some(at);
    let doc = Document {
        id: u.id.clone(),
        sequence: next_sequence(txn, project, coll)?,
        created_at: at,
        updated_at: at,
        permissions: Vec::new(),
        data: u.data(),
    };
    write_document(txn, project, coll, None, Some(&doc))
        .map_err(|f| taken(f, ErrorCode::UserAlreadyExists))?;
    Ok(Outcome::User(u))
}

fn update_user(
    txn: &mut Txn,
    project: &str,
    id: &str,
    changes: &[UserChange],
    proof: Option<&str>,
    at: i64,
) -> R<Outcome> {
    let (old, mut u) = load_user(txn, project, id)?;
    if proof.is_some_and(|p| p != u.credential_proof()) {
        return Err(invalid_credentials());
    }
    let mut collision = ErrorCode::UserAlreadyExists;
    for change in changes {
        apply_change(&mut u, change, &mut collision, at);
    }
    u.updated_at = at;
    let mut doc = old.clone();
    doc.data = u.data();
    doc.updated_at = at;
    write_document(txn, project, auth::users(), Some(&old), Some(&doc))
        .map_err(|f| taken(f, collision))?;
    Ok(Outcome::User(u))
}

fn apply_change(u: &mut User, change: &UserChange, collision: &mut ErrorCode, at: i64) {
    match change {
        UserChange::Name(n) => u.name = n.clone(),
        UserChange::Email(e) => {
            if *e != u.email {
                u.email_verification = false;
            }
            u.email = e.clone();
            *collision = ErrorCode::UserTargetAlreadyExists;
        }
        UserChange::Phone(p) => {
            if *p != u.phone {
                u.phone_verification = false;
            }
            u.phone = p.clone();
            *collision = ErrorCode::UserTargetAlreadyExists;
        }
        UserChange::Password(c) => {
            u.password = c.clone();
            u.password_update = Some(at);
        }
        UserChange::Status(s) => u.status = *s,
        UserChange::Labels(l) => u.labels = l.clone(),
        UserChange::Prefs(p) => u.prefs = p.clone(),
        UserChange::EmailVerification(v) => u.email_verification = *v,
        UserChange::PhoneVerification(v) => u.phone_verification = *v,
        UserChange::Mfa(m) => u.mfa = *m,
    }
}

fn create_session(
    txn: &mut Txn,
    project: &str,
    session: &Session,
    proof: Option<&str>,
    max: u32,
    at: i64,
) -> R<Outcome> {
    let (_, user) = load_user(txn, project, &session.user_id)?;
    if !user.status {
        return Err(err(
            ErrorCode::UserBlocked,
            "The current user has been blocked.",
        ));
    }
    if proof.is_some_and(|p| p != user.credential_proof()) {
        return Err(invalid_credentials());
    }
    let coll = auth::sessions();
    if load_document(txn, project, coll, &session.id)?.is_some() {
        return Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "Session with the requested ID already exists.",
        ));
    }
    // The oldest sessions end so that the user holds at most `max` with this one.
    let held = user_sessions(txn, project, &session.user_id)?;
    let keep = (max.max(1) as usize).saturating_sub(1);
    for old in held.iter().take(held.len().saturating_sub(keep)) {
        write_document(txn, project, coll, Some(old), None)?;
    }
    let mut s = session.clone();
    s.created_at = at;
    s.updated_at = at;
    let doc = Document {
        id: s.id.clone(),
        sequence: next_sequence(txn, project, coll)?,
        created_at: at,
        updated_at: at,
        permissions: Vec::new(),
        data: s.data(),
    };
    write_document(txn, project, coll, None, Some(&doc))?;
    Ok(Outcome::Session(s))
}

/// Checks an end user's session against the committed state at `at`: it exists, is theirs,
/// has not expired, and the user is not blocked. Answers the user. (An empty `session` is a
/// JWT made without one: only the user is checked.)
pub(super) fn check_session(
    txn: &Txn,
    project: &str,
    user: &str,
    session: &str,
    at: i64,
) -> R<User> {
    // A JWT made by a key without a session names none: it stands for the user alone.
    if !session.is_empty() {
        load_document(txn, project, auth::sessions(), session)?
            .map(|d| Session::from_document(&d))
            .filter(|s| s.user_id == user && s.expire > at)
            .ok_or_else(unauthorized)?;
    }
    let (_, u) = load_user(txn, project, user).map_err(|_| unauthorized())?;
    if !u.status {
        return Err(err(
            ErrorCode::UserBlocked,
            "The current user has been blocked.",
        ));
    }
    Ok(u)
}
