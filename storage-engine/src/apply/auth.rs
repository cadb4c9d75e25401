//! End users and sessions (`model::auth`): documents of the project's system collections,
//! written through the same document path as rows, so their unique indexes (email, phone),
//! counts and queries are the rows' own.
//!
//! Who may do what is settled here, against the committed state: a guest may sign up and
//! sign in; a user may change only themself (never their status back to active, their labels
//! or their verification) and end only their own sessions; a key may do everything.

use super::documents::{insert_new, next_sequence, write_document};
use super::projects::require_project;
use super::store::load_document;
use super::txn::{Txn, INDEX, META};
use super::{err, unauthorized, Caller, Failure, R};
use crate::engine::{decode, encode};
use crate::keys;
use model::auth::{
    self, Authenticator, ChallengeCheck, Mail, MailKind, Membership, RecoveryCodes, Session, Team,
    Token, User,
};
use model::command::{AuthOp, TokenOwner, UserChange};
use model::msg;
use model::schema::{Document, Order};
use model::{ErrorCode, Outcome, Value};

pub(super) fn apply(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    op: &AuthOp,
    at: i64,
) -> R<Outcome> {
    if let AuthOp::Audited {
        op: inner,
        id,
        ip,
        user_agent,
    } = op
    {
        if matches!(**inner, AuthOp::Audited { .. }) {
            return Err(err(
                ErrorCode::GeneralArgumentInvalid,
                "An audited operation is one operation.",
            ));
        }
        let out = apply(txn, project, caller, inner, at)?;
        if let Some((user, event)) = audit_event(inner, &out) {
            let entry = auth::LogEntry {
                id: id.clone(),
                created_at: at,
                user_id: user,
                event: event.to_string(),
                mode: match caller {
                    Caller::Privileged => "admin".into(),
                    Caller::Roles { .. } => "default".into(),
                },
                ip: ip.chars().take(45).collect(),
                user_agent: user_agent.chars().take(1024).collect(),
            };
            write_log(txn, project, &entry, at)?;
        }
        return Ok(out);
    }
    permitted(caller, op)?;
    match op {
        // The outbox outlives a deleted project's other state: its emails still leave it.
        AuthOp::MailSent { .. } | AuthOp::MailRetry { .. } => {}
        _ => require_project(txn, project)?,
    }
    match op {
        AuthOp::CreateUser { user } => {
            let mut user = user.clone();
            if !matches!(caller, Caller::Privileged) {
                // A sign-up sets no status, labels or verification of its own.
                user.status = true;
                user.labels.clear();
                user.email_verification = false;
                user.phone_verification = false;
                user.mfa = false;
            }
            within_user_limit(txn, project, caller)?;
            create_user(txn, project, &user, at)
        }
        AuthOp::UpdateUser { id, changes, proof } => {
            if let Caller::Roles { .. } = caller {
                // A user changes its password, email or phone only with proof that it knows
                // its password (when it has one).
                let credential = changes.iter().any(|c| {
                    matches!(
                        c,
                        UserChange::Password(_) | UserChange::Email(_) | UserChange::Phone(_)
                    )
                });
                let (_, u) = load_user(txn, project, id)?;
                if credential && u.password.is_some() && proof.is_none() {
                    return Err(invalid_credentials());
                }
            }
            let before = load_user(txn, project, id)?.1.email;
            let out = update_user(txn, project, id, changes, proof.as_deref(), at)?;
            if matches!(&out, Outcome::User(u) if u.email != before) {
                forget_emailed_secrets(txn, project, id)?;
            }
            // Turning MFA on counts the factors the user has in the session that did it, so
            // the user is not locked out of it (as Appwrite).
            if let (
                Outcome::User(u),
                Caller::Roles {
                    session: Some(s), ..
                },
            ) = (&out, caller)
            {
                if changes.contains(&UserChange::Mfa(true)) && !s.is_empty() {
                    let f = u.factors();
                    let have = [(f.totp, "totp"), (f.email, "email"), (f.phone, "phone")];
                    for (_, factor) in have.iter().filter(|(yes, _)| *yes) {
                        add_factor(txn, project, id, s, factor, None, at)?;
                    }
                }
            }
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
            for m in by_index(
                txn,
                project,
                auth::memberships(),
                "_key_user",
                id,
                auth::MAX_MEMBERSHIPS,
            )? {
                remove_membership(txn, project, &m, at)?;
            }
            // Nothing the user held outlives it: a new user given the same id later inherits
            // no token, membership or log.
            for l in by_index(
                txn,
                project,
                auth::logs(),
                "_key_user",
                id,
                auth::MAX_LOGS + 1,
            )? {
                write_document(txn, project, auth::logs(), Some(&l), None)?;
            }
            for t in by_index(
                txn,
                project,
                auth::tokens(),
                "_key_user",
                id,
                auth::MAX_TOKENS,
            )? {
                write_document(txn, project, auth::tokens(), Some(&t), None)?;
            }
            super::transactions::purge_user(txn, project, id)?;
            write_document(txn, project, auth::users(), Some(&doc), None)?;
            Ok(Outcome::Done)
        }
        AuthOp::CreateSession {
            session,
            proof,
            max: _,
            user,
            rehash,
        } => {
            if let Some(u) = user {
                let mut u = (**u).clone();
                if !matches!(caller, Caller::Privileged) {
                    // An anonymous sign-in makes a plain user: no password, status or
                    // verification of its own.
                    u.password = None;
                    u.status = true;
                    u.labels.clear();
                    u.email_verification = false;
                    u.phone_verification = false;
                    u.mfa = false;
                }
                within_user_limit(txn, project, caller)?;
                create_user(txn, project, &u, at)?;
            }
            let factor = match proof {
                Some(_) => "password",
                None => "anonymous",
            };
            let session = proven(caller, session, factor);
            let out = create_session(txn, project, &session, proof.as_deref(), at)?;
            if let (Some(c), Some(_)) = (rehash, proof) {
                // The proof held (the session was made): the imported hash becomes ours.
                let (old, mut u) = load_user(txn, project, &session.user_id)?;
                u.password = Some((**c).clone());
                remember_password(txn, project, &mut u)?;
                u.updated_at = at;
                let mut doc = old.clone();
                doc.data = u.data();
                doc.updated_at = at;
                write_document(txn, project, auth::users(), Some(&old), Some(&doc))?;
            }
            Ok(out)
        }
        AuthOp::ExtendSession { user, id, .. } => {
            // As long as the project's sessions last, from now.
            let duration = super::projects::auth_settings(txn, project)?.duration_ms;
            let old = load_session(txn, project, user, id)?;
            let mut doc = old.clone();
            let mut s = Session::from_document(&old);
            s.expire = at.saturating_add(duration);
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
        AuthOp::CreateTeam { team, owner } => create_team(txn, project, caller, team, owner, at),
        AuthOp::UpdateTeam { id, name, prefs } => {
            let (old, mut team) = load_team(txn, project, caller, id, "update")?;
            if let Some(n) = name {
                team.name = n.clone();
            }
            if let Some(p) = prefs {
                team.prefs = p.clone();
            }
            team.updated_at = at;
            save_team(txn, project, &old, &team)?;
            Ok(Outcome::Team(team))
        }
        AuthOp::DeleteTeam { id } => {
            // The team goes in the first apply (checked against the caller's roles then);
            // its memberships follow in bounded chunks. Memberships of a team that no longer
            // exists grant nothing anyone may keep, so any later chunk purges them unchecked,
            // and the id cannot be taken again until they are gone.
            match load_document(txn, project, auth::teams(), id)? {
                Some(_) => {
                    let (old, _) = load_team(txn, project, caller, id, "delete")?;
                    write_document(txn, project, auth::teams(), Some(&old), None)?;
                }
                None if team_has_members(txn, project, id)? => {}
                None => return Err(team_not_found()),
            }
            let members = by_index(
                txn,
                project,
                auth::memberships(),
                "_key_team",
                id,
                auth::TEAM_DELETE_CHUNK + 1,
            )?;
            for m in members.iter().take(auth::TEAM_DELETE_CHUNK) {
                write_document(txn, project, auth::memberships(), Some(m), None)?;
            }
            match members.len() > auth::TEAM_DELETE_CHUNK {
                true => Ok(Outcome::Range {
                    documents: Vec::new(),
                    next: Some(0),
                }),
                false => Ok(Outcome::Done),
            }
        }
        AuthOp::CreateMembership { membership } => create_membership(txn, project, membership, at),
        AuthOp::UpdateMembership { team, id, roles } => {
            // A caller who cannot read the team learns nothing of its memberships.
            load_team(txn, project, caller, team, "read")?;
            let (old, mut m) = load_membership(txn, project, team, id)?;
            owner_of(caller, team)?;
            m.roles = roles.clone();
            m.updated_at = at;
            let mut doc = old.clone();
            doc.data = m.data();
            doc.updated_at = at;
            write_document(txn, project, auth::memberships(), Some(&old), Some(&doc))?;
            Ok(Outcome::Membership(m))
        }
        AuthOp::DeleteMembership { team, id } => {
            load_team(txn, project, caller, team, "read")?;
            let (old, m) = load_membership(txn, project, team, id)?;
            let own = matches!(caller, Caller::Roles { user: Some(u), .. } if *u == m.user_id);
            if !own {
                owner_of(caller, team)?;
            }
            remove_membership(txn, project, &old, at)?;
            Ok(Outcome::Done)
        }
        AuthOp::CreateToken { token } => {
            load_user(txn, project, &token.user_id)?;
            let t = store_token(txn, project, token, at)?;
            Ok(Outcome::Token(t))
        }
        AuthOp::TokenSession {
            secret_sha256,
            session,
        } => {
            let user = &session.user_id;
            match load_user(txn, project, user) {
                Err(Failure::User(_)) => return Err(invalid_token()),
                other => other?,
            };
            let held = by_index(
                txn,
                project,
                auth::tokens(),
                "_key_user",
                user,
                auth::MAX_TOKENS,
            )?;
            // Only sign-in tokens sign in (not a verification's or a recovery's).
            let used = held
                .iter()
                .find(|d| {
                    let t = Token::from_document(d);
                    t.expire > at
                        && t.secret_sha256 == *secret_sha256
                        && [
                            auth::TOKEN_GENERIC,
                            auth::TOKEN_MAGIC_URL,
                            auth::TOKEN_EMAIL_OTP,
                        ]
                        .contains(&t.kind.as_str())
                })
                .ok_or_else(invalid_token)?;
            let kind = Token::from_document(used).kind;
            write_document(txn, project, auth::tokens(), Some(used), None)?;
            let factor = match kind.as_str() {
                auth::TOKEN_GENERIC => "token",
                _ => "email",
            };
            let session = proven(caller, session, factor);
            let out = create_session(txn, project, &session, None, at)?;
            if kind != auth::TOKEN_GENERIC {
                // The secret arrived by email: the address is the user's.
                let change = [UserChange::EmailVerification(true)];
                update_user(txn, project, user, &change, None, at)?;
            }
            Ok(out)
        }
        AuthOp::EmailToken { owner, token, mail } => {
            let user = token_owner(txn, project, caller, owner, at)?;
            if let (MailKind::Verification, Caller::Roles { user: me, .. }) = (mail.kind, caller) {
                if me.as_deref() != Some(user.id.as_str()) {
                    return Err(unauthorized());
                }
            }
            // As Appwrite: a blocked user may not recover a password (nor sign in, which the
            // session's apply refuses).
            if mail.kind == MailKind::Recovery && !user.status {
                return Err(blocked());
            }
            if user.email.is_empty() {
                return Err(err(
                    ErrorCode::UserEmailNotFound,
                    "User email could not be found.",
                ));
            }
            if mail.kind == MailKind::Verification && user.email_verification {
                return Err(err(
                    ErrorCode::UserEmailAlreadyVerified,
                    "User email is already verified",
                ));
            }
            let ttl = match mail.kind {
                MailKind::EmailOtp => auth::OTP_TTL_MS,
                _ => auth::TOKEN_TTL_MS,
            };
            let secret = auth::mail_secret(&project_secret(txn, project)?, mail.kind, &token.id);
            let mut t = (**token).clone();
            t.user_id = user.id.clone();
            t.kind = mail.kind.token_kind().to_string();
            t.expire = at.saturating_add(ttl);
            t.secret_sha256 = auth::sha256_hex(&secret);
            let t = store_token(txn, project, &t, at)?;
            let mut m = (**mail).clone();
            m.secret_of = t.id.clone();
            m.expire = t.expire;
            enqueue(txn, project, &user, m, at)?;
            Ok(Outcome::Token(t))
        }
        AuthOp::RedeemToken {
            user,
            kind,
            secret_sha256,
            changes,
        } => {
            load_user(txn, project, user)?;
            let held = by_index(
                txn,
                project,
                auth::tokens(),
                "_key_user",
                user,
                auth::MAX_TOKENS,
            )?;
            let used = held
                .iter()
                .map(Token::from_document)
                .find(|t| t.expire > at && t.secret_sha256 == *secret_sha256 && t.kind == *kind)
                .ok_or_else(invalid_token)?;
            let doc =
                load_document(txn, project, auth::tokens(), &used.id)?.ok_or_else(invalid_token)?;
            write_document(txn, project, auth::tokens(), Some(&doc), None)?;
            update_user(txn, project, user, changes, None, at)?;
            if kind == auth::TOKEN_RECOVERY {
                // A recovered password ends every session (Appwrite's `invalidateSessions`).
                for s in user_sessions(txn, project, user)? {
                    write_document(txn, project, auth::sessions(), Some(&s), None)?;
                }
            }
            Ok(Outcome::Token(used))
        }
        AuthOp::Invite {
            membership,
            invitee,
            mail,
        } => invite(txn, project, caller, membership, invitee, mail, at),
        AuthOp::AcceptInvite {
            team,
            id,
            secret_sha256,
            session,
        } => {
            let (old, mut m) = load_membership(txn, project, team, id)?;
            if m.secret_sha256.is_empty() || m.secret_sha256 != *secret_sha256 {
                return Err(err(
                    ErrorCode::TeamInvalidSecret,
                    "The team invitation secret is invalid. Please request a new invitation and try again.",
                ));
            }
            let signed_in = match caller {
                Caller::Roles { user, .. } => user.as_ref(),
                Caller::Privileged => None,
            };
            if m.user_id != session.user_id || signed_in.is_some_and(|u| *u != m.user_id) {
                return Err(err(
                    ErrorCode::TeamInviteMismatch,
                    "The invite does not belong to the current user.",
                ));
            }
            if m.confirm {
                return Err(err(
                    ErrorCode::MembershipAlreadyConfirmed,
                    "Membership is already confirmed.",
                ));
            }
            m.confirm = true;
            m.joined = Some(at);
            m.updated_at = at;
            let mut doc = old.clone();
            doc.data = m.data();
            doc.updated_at = at;
            write_document(txn, project, auth::memberships(), Some(&old), Some(&doc))?;
            count_member(txn, project, team, 1, at)?;
            let change = [UserChange::EmailVerification(true)];
            update_user(txn, project, &m.user_id, &change, None, at)?;
            // A caller signed in already (as the invitee) keeps its session.
            match signed_in {
                Some(_) => Ok(Outcome::Membership(m)),
                None => {
                    let session = proven(caller, session, "email");
                    create_session(txn, project, &session, None, at)
                }
            }
        }
        AuthOp::CreateAuthenticator { user, seed } => {
            let (old, mut u) = load_user(txn, project, user)?;
            if u.totp.as_ref().is_some_and(|a| a.verified) {
                return Err(authenticator_verified());
            }
            u.totp = Some(Authenticator {
                seed: seed.clone(),
                verified: false,
            });
            save_user(txn, project, &old, &mut u, at)?;
            Ok(Outcome::User(u))
        }
        AuthOp::VerifyAuthenticator { user, otp_sha256 } => {
            let (old, mut u) = load_user(txn, project, user)?;
            let a = u.totp.clone().ok_or_else(authenticator_not_found)?;
            if a.verified {
                return Err(authenticator_verified());
            }
            let secret = auth::totp_secret(&project_secret(txn, project)?, user, &a.seed);
            if !auth::totp_matches(&secret, otp_sha256, at) {
                return Err(invalid_token());
            }
            u.totp = Some(Authenticator {
                verified: true,
                ..a
            });
            save_user(txn, project, &old, &mut u, at)?;
            if let Caller::Roles {
                session: Some(s), ..
            } = caller
            {
                if !s.is_empty() {
                    add_factor(txn, project, user, s, "totp", None, at)?;
                }
            }
            Ok(Outcome::User(u))
        }
        AuthOp::DeleteAuthenticator { user } => {
            recent_mfa(txn, project, caller, at)?;
            let (old, mut u) = load_user(txn, project, user)?;
            if u.totp.take().is_none() {
                return Err(authenticator_not_found());
            }
            save_user(txn, project, &old, &mut u, at)?;
            Ok(Outcome::Done)
        }
        AuthOp::RecoveryCodes {
            user,
            seed,
            regenerate,
        } => {
            if *regenerate {
                recent_mfa(txn, project, caller, at)?;
            }
            let (old, mut u) = load_user(txn, project, user)?;
            match (*regenerate, u.factors().recovery_code) {
                (false, true) => return Err(err(
                    ErrorCode::UserRecoveryCodesAlreadyExists,
                    "The current user already generated recovery codes and they can only be read once for security reasons.",
                )),
                (true, false) => return Err(recovery_codes_not_found()),
                _ => {}
            }
            u.recovery = Some(RecoveryCodes {
                seed: seed.clone(),
                used: 0,
            });
            save_user(txn, project, &old, &mut u, at)?;
            Ok(Outcome::User(u))
        }
        AuthOp::CreateChallenge {
            user,
            factor,
            token,
        } => {
            let (_, u) = load_user(txn, project, user)?;
            if !auth::CHALLENGE_FACTORS.contains(&factor.as_str()) {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "Invalid `factor` param: Value must be one of (email, phone, totp, recoveryCode)",
                ));
            }
            let mut t = (**token).clone();
            t.user_id = u.id.clone();
            t.kind = format!("{}{factor}", auth::CHALLENGE_PREFIX);
            t.expire = at.saturating_add(auth::OTP_TTL_MS);
            t.secret_sha256.clear();
            match factor.as_str() {
                "email" => {
                    if u.email.is_empty() {
                        return Err(err(
                            ErrorCode::UserEmailNotFound,
                            "User email could not be found.",
                        ));
                    }
                    if !u.email_verification {
                        return Err(err(
                            ErrorCode::UserEmailNotVerified,
                            "User email is not verified",
                        ));
                    }
                    let ps = project_secret(txn, project)?;
                    let code = auth::mail_secret(&ps, MailKind::MfaChallenge, &t.id);
                    t.secret_sha256 = auth::sha256_hex(&code);
                }
                "phone" => {
                    return Err(err(
                        ErrorCode::GeneralPhoneDisabled,
                        "Phone provider is not configured. Please check the _APP_SMS_PROVIDER environment variable of your Appwrite server.",
                    ))
                }
                _ => {}
            }
            let t = store_token(txn, project, &t, at)?;
            if factor == "email" {
                let mut m = Mail::new(
                    t.id.clone(),
                    MailKind::MfaChallenge,
                    String::new(),
                    String::new(),
                );
                m.secret_of = t.id.clone();
                m.expire = t.expire;
                enqueue(txn, project, &u, m, at)?;
            }
            Ok(Outcome::Token(t))
        }
        AuthOp::VerifyChallenge {
            user,
            challenge,
            otp_sha256,
        } => {
            let Caller::Roles {
                session: Some(session),
                ..
            } = caller
            else {
                return Err(unauthorized());
            };
            let (old, mut u) = load_user(txn, project, user)?;
            let doc = load_document(txn, project, auth::tokens(), challenge)?
                .ok_or_else(invalid_token)?;
            let t = Token::from_document(&doc);
            let ps = project_secret(txn, project)?;
            match auth::check_challenge(&ps, &u, &t, otp_sha256, at) {
                ChallengeCheck::Refused => return Err(invalid_token()),
                ChallengeCheck::Passed => {}
                ChallengeCheck::RecoveryCode(i) => {
                    if let Some(r) = u.recovery.as_mut() {
                        r.used |= 1 << i;
                    }
                    save_user(txn, project, &old, &mut u, at)?;
                }
            }
            write_document(txn, project, auth::tokens(), Some(&doc), None)?;
            let factor = t.kind.trim_start_matches(auth::CHALLENGE_PREFIX);
            let s = add_factor(txn, project, user, session, factor, Some(at), at)?;
            Ok(Outcome::Session(s))
        }
        // Taken apart above, before anything else.
        AuthOp::Audited { .. } => Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "An audited operation is one operation.",
        )),
        AuthOp::MailSent { due, id } => {
            let k = keys::outbox(*due, id);
            if let Some(bytes) = txn.get(META, &k)? {
                let m: Mail = decode(&k, &bytes)?;
                txn.del(META, k);
                let n = outbox_len(txn, &m.project)?;
                set_outbox_len(txn, &m.project, n.saturating_sub(1));
            }
            Ok(Outcome::Done)
        }
        AuthOp::MailRetry { due, id, next } => {
            let k = keys::outbox(*due, id);
            if let Some(bytes) = txn.get(META, &k)? {
                let mut m: Mail = decode(&k, &bytes)?;
                txn.del(META, k);
                m.attempts = m.attempts.saturating_add(1);
                m.due = *next;
                // Ids are unique in the queue, so the new key is free.
                txn.put(META, keys::outbox(m.due, &m.id), encode(&m));
            }
            Ok(Outcome::Done)
        }
        AuthOp::InitJwtSecret { secret } => {
            let k = keys::meta(project, keys::JWT_SECRET, &[]);
            super::store::put_if_absent(txn, k, secret.as_bytes())?;
            Ok(Outcome::Done)
        }
    }
}

/// What a caller that is not a key may ask for.
fn permitted(caller: &Caller, op: &AuthOp) -> R<()> {
    let me = match caller {
        Caller::Privileged => return Ok(()),
        Caller::Roles { user, .. } => user.as_deref(),
    };
    let ok = match (op, me) {
        (AuthOp::InitJwtSecret { .. }, _) => true,
        // Checked against the team once it is loaded.
        (
            AuthOp::CreateTeam { .. }
            | AuthOp::UpdateTeam { .. }
            | AuthOp::DeleteTeam { .. }
            | AuthOp::UpdateMembership { .. }
            | AuthOp::DeleteMembership { .. },
            Some(_),
        ) => true,
        // Sign-up, also while signed in (as Appwrite); sign-in needs the proof of a verified
        // password, or creates its own (anonymous) user.
        (AuthOp::CreateUser { .. }, _) => true,
        (
            AuthOp::CreateSession {
                session,
                proof,
                user,
                ..
            },
            None,
        ) => proof.is_some() || user.as_ref().is_some_and(|u| u.id == session.user_id),
        // The token is the proof, checked when applied.
        (AuthOp::TokenSession { .. }, None) => true,
        // Recovery, magic URLs and codes are asked for by anyone who knows the address (the
        // secret goes to it, not to the caller); a verification by the user alone (in apply).
        (AuthOp::EmailToken { owner, mail, .. }, me) => match mail.kind {
            MailKind::Verification => me.is_some() && matches!(owner, TokenOwner::Id(_)),
            MailKind::Recovery => {
                matches!(
                    owner,
                    TokenOwner::Id(_) | TokenOwner::Email { create: None, .. }
                )
            }
            MailKind::MagicUrl | MailKind::EmailOtp => true,
            MailKind::Invitation | MailKind::MfaChallenge => false,
        },
        // MFA: a user's own, and (checked when applied) only with its own session.
        (
            AuthOp::CreateAuthenticator { user, .. }
            | AuthOp::VerifyAuthenticator { user, .. }
            | AuthOp::DeleteAuthenticator { user }
            | AuthOp::RecoveryCodes { user, .. }
            | AuthOp::CreateChallenge { user, .. }
            | AuthOp::VerifyChallenge { user, .. },
            Some(me),
        ) => user == me,
        // The emailed secret is the proof; what it may change is fixed by its kind.
        (AuthOp::RedeemToken { kind, changes, .. }, _) => matches!(
            (kind.as_str(), changes.as_slice()),
            (
                auth::TOKEN_VERIFICATION,
                [UserChange::EmailVerification(true)]
            ) | (
                auth::TOKEN_RECOVERY,
                [
                    UserChange::Password(Some(_)),
                    UserChange::EmailVerification(true)
                ]
            )
        ),
        (AuthOp::Invite { mail, .. }, Some(_)) => mail.kind == MailKind::Invitation,
        (AuthOp::AcceptInvite { .. }, _) => true,
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
    by_index(txn, project, auth::sessions(), "_key_user", user, 1000)
}

/// The documents whose single-column key index `index` holds `value`, in sequence order, at
/// most `limit`.
pub(super) fn by_index(
    txn: &Txn,
    project: &str,
    coll: &model::Collection,
    index: &str,
    value: &str,
    limit: usize,
) -> R<Vec<Document>> {
    let mut prefix = keys::index_prefix(project, &coll.database, &coll.id, index);
    keys::encode_value(&mut prefix, &Value::Str(value.to_string()), Order::Asc);
    let mut out = Vec::new();
    for (k, v) in txn.scan_limit(INDEX, &prefix, limit)? {
        let (_, id) = keys::parse_entry_value(&v)
            .ok_or_else(|| Failure::Storage(crate::engine::corrupt(&k, "index entry")))?;
        if let Some(d) = load_document(txn, project, coll, &String::from_utf8_lossy(id))? {
            out.push(d);
        }
    }
    Ok(out)
}

/// The roles a user's confirmed memberships give (at most a thousand memberships count).
pub(super) fn team_roles(txn: &Txn, project: &str, user: &str) -> R<Vec<auth::TeamRoles>> {
    Ok(by_index(
        txn,
        project,
        auth::memberships(),
        "_key_user",
        user,
        auth::MAX_MEMBERSHIPS,
    )?
    .iter()
    .filter_map(|d| Membership::from_document(d).team_roles())
    .collect())
}

fn team_has_members(txn: &Txn, project: &str, team: &str) -> R<bool> {
    Ok(!by_index(txn, project, auth::memberships(), "_key_team", team, 1)?.is_empty())
}

fn team_not_found() -> Failure {
    err(
        ErrorCode::TeamNotFound,
        "Team with the requested ID could not be found.",
    )
}

/// A team the caller may `action` (a team it cannot even read is not found for it).
fn load_team(
    txn: &Txn,
    project: &str,
    caller: &Caller,
    id: &str,
    action: &str,
) -> R<(Document, Team)> {
    let doc = load_document(txn, project, auth::teams(), id)?.ok_or_else(team_not_found)?;
    if let Caller::Roles { roles, .. } = caller {
        if !auth::teams().grants(Some(&doc), "read", roles) {
            return Err(team_not_found());
        }
        if !auth::teams().grants(Some(&doc), action, roles) {
            return Err(unauthorized());
        }
    }
    let team = Team::from_document(&doc);
    Ok((doc, team))
}

fn save_team(txn: &mut Txn, project: &str, old: &Document, team: &Team) -> R<()> {
    let mut doc = old.clone();
    doc.data = team.data();
    doc.updated_at = team.updated_at;
    write_document(txn, project, auth::teams(), Some(old), Some(&doc))
}

/// Adds `delta` to a team's count of confirmed members.
fn count_member(txn: &mut Txn, project: &str, team: &str, delta: i64, at: i64) -> R<()> {
    if let Some(old) = load_document(txn, project, auth::teams(), team)? {
        let mut t = Team::from_document(&old);
        t.total = t.total.saturating_add(delta).max(0);
        t.updated_at = at;
        save_team(txn, project, &old, &t)?;
    }
    Ok(())
}

/// Only a team's owners (or a key) manage its memberships.
fn owner_of(caller: &Caller, team: &str) -> R<()> {
    match caller {
        Caller::Privileged => Ok(()),
        Caller::Roles { roles, .. } if roles.contains(&format!("team:{team}/owner")) => Ok(()),
        Caller::Roles { .. } => Err(unauthorized()),
    }
}

fn membership_not_found() -> Failure {
    err(
        ErrorCode::MembershipNotFound,
        "Membership with the requested ID could not be found.",
    )
}

fn load_membership(txn: &Txn, project: &str, team: &str, id: &str) -> R<(Document, Membership)> {
    if load_document(txn, project, auth::teams(), team)?.is_none() {
        return Err(team_not_found());
    }
    let doc =
        load_document(txn, project, auth::memberships(), id)?.ok_or_else(membership_not_found)?;
    let m = Membership::from_document(&doc);
    if m.team_id != team {
        return Err(err(
            ErrorCode::TeamMembershipMismatch,
            "The membership ID does not belong to the team ID.",
        ));
    }
    Ok((doc, m))
}

fn remove_membership(txn: &mut Txn, project: &str, doc: &Document, at: i64) -> R<()> {
    let m = Membership::from_document(doc);
    write_document(txn, project, auth::memberships(), Some(doc), None)?;
    if m.confirm {
        count_member(txn, project, &m.team_id, -1, at)?;
    }
    Ok(())
}

fn create_team(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    team: &Team,
    owner: &Option<Box<Membership>>,
    at: i64,
) -> R<Outcome> {
    if let Caller::Roles { user, .. } = caller {
        // A user's team is made with the user's own owner membership.
        let mine = owner
            .as_ref()
            .is_some_and(|m| Some(&m.user_id) == user.as_ref() && m.team_id == team.id);
        if !mine {
            return Err(unauthorized());
        }
    }
    let coll = auth::teams();
    if load_document(txn, project, coll, &team.id)?.is_some()
        || team_has_members(txn, project, &team.id)?
    {
        return Err(err(
            ErrorCode::TeamAlreadyExists,
            "Team with requested ID already exists. Please choose a different ID and try again.",
        ));
    }
    let mut t = team.clone();
    t.created_at = at;
    t.updated_at = at;
    t.total = 0;
    insert_new(
        txn,
        project,
        coll,
        t.id.clone(),
        t.permissions(),
        t.data(),
        at,
    )?;
    if let Some(m) = owner {
        create_membership(txn, project, m, at)?;
        t.total = 1;
    }
    Ok(Outcome::Team(t))
}

/// A confirmed membership (a key's invitation, or a team creator's own).
fn create_membership(txn: &mut Txn, project: &str, m: &Membership, at: i64) -> R<Outcome> {
    if load_document(txn, project, auth::teams(), &m.team_id)?.is_none() {
        return Err(team_not_found());
    }
    load_user(txn, project, &m.user_id)?;
    let held = by_index(
        txn,
        project,
        auth::memberships(),
        "_key_user",
        &m.user_id,
        auth::MAX_MEMBERSHIPS,
    )?;
    if held.len() >= auth::MAX_MEMBERSHIPS {
        return Err(err(
            ErrorCode::GeneralArgumentInvalid,
            msg!(
                "A user may belong to at most {} teams.",
                auth::MAX_MEMBERSHIPS
            ),
        ));
    }
    let coll = auth::memberships();
    if load_document(txn, project, coll, &m.id)?.is_some() {
        return Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "Membership with the requested ID already exists.",
        ));
    }
    let mut m = m.clone();
    m.created_at = at;
    m.updated_at = at;
    m.invited = at;
    m.joined = Some(at);
    m.confirm = true;
    m.secret_sha256.clear();
    insert_new(txn, project, coll, m.id.clone(), Vec::new(), m.data(), at).map_err(
        |f| match f {
            Failure::User(e) if e.code == ErrorCode::DocumentUniqueViolation => err(
                ErrorCode::MembershipAlreadyConfirmed,
                "Membership is already confirmed.",
            ),
            other => other,
        },
    )?;
    count_member(txn, project, &m.team_id, 1, at)?;
    Ok(Outcome::Membership(m))
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
    u.password_history.clear();
    remember_password(txn, project, &mut u)?;
    u.created_at = at;
    u.updated_at = at;
    u.registration = at;
    u.password_update = u.password.as_ref().map(|_| at);
    u.accessed_at = Some(at);
    insert_new(txn, project, coll, u.id.clone(), Vec::new(), u.data(), at)
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
    if changes.iter().any(|c| matches!(c, UserChange::Password(_))) {
        remember_password(txn, project, &mut u)?;
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

/// Starts `session`, for as long as the project's sessions last, ending the user's oldest
/// while it holds the project's most.
fn create_session(
    txn: &mut Txn,
    project: &str,
    session: &Session,
    proof: Option<&str>,
    at: i64,
) -> R<Outcome> {
    let settings = super::projects::auth_settings(txn, project)?;
    let max = settings.max_sessions;
    let (_, user) = load_user(txn, project, &session.user_id)?;
    if !user.status {
        return Err(blocked());
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
    s.expire = at.saturating_add(settings.duration_ms);
    insert_new(txn, project, coll, s.id.clone(), Vec::new(), s.data(), at)?;
    Ok(Outcome::Session(s))
}

/// A session a user or guest proposed, with the one factor its proof stands for (not the
/// proposer's word) and no challenge passed yet; a key's as it made it.
fn proven(caller: &Caller, session: &Session, factor: &str) -> Session {
    let mut s = session.clone();
    if !matches!(caller, Caller::Privileged) {
        s.factors = vec![factor.to_string()];
        s.mfa_updated_at = None;
    }
    s
}

/// A session short of the factors its user needs may only complete a challenge or end
/// (`user_more_factors_required`, as the API refuses it; checked again here against the
/// committed state, so a node whose view lags behind a just-enabled MFA cannot let it
/// through). A JWT made without a session names none and is not checked.
pub(super) fn check_factors(
    txn: &Txn,
    project: &str,
    user: &User,
    session: &str,
    op: &model::command::Op,
) -> R<()> {
    use model::command::Op;
    let auth_op = match op {
        Op::Auth(AuthOp::Audited { op, .. }) => Some(&**op),
        Op::Auth(op) => Some(op),
        _ => None,
    };
    let exempt = matches!(
        auth_op,
        Some(
            AuthOp::CreateChallenge { .. }
                | AuthOp::VerifyChallenge { .. }
                | AuthOp::DeleteSession { .. }
        )
    );
    if session.is_empty() || exempt || user.factors_required() < 2 {
        return Ok(());
    }
    let s = load_document(txn, project, auth::sessions(), session)?
        .map(|d| Session::from_document(&d))
        .ok_or_else(unauthorized)?;
    match s.factors.len() >= user.factors_required() {
        true => Ok(()),
        false => Err(err(
            ErrorCode::UserMoreFactorsRequired,
            "More factors are required to complete the sign in process.",
        )),
    }
}

/// Puts the user's (new) password first in its history, which keeps as many as the project's
/// `password_history` (none when that is 0; only argon2id hashes, which the API can check).
fn remember_password(txn: &Txn, project: &str, u: &mut User) -> R<()> {
    let keep = super::projects::auth_settings(txn, project)?.password_history as usize;
    if let Some(c) = u.password.as_ref().filter(|c| c.algo == "argon2") {
        if u.password_history.first() != Some(&c.hash) {
            u.password_history.insert(0, c.hash.clone());
        }
    }
    u.password_history.truncate(keep);
    Ok(())
}

/// The user and the event a successful auth operation logs (none for teams, the project's
/// secret and the outbox, which are no user's own events).
fn audit_event(op: &AuthOp, out: &Outcome) -> Option<(String, &'static str)> {
    let token_event = |kind: &str, done: bool| match (kind, done) {
        (auth::TOKEN_VERIFICATION, false) => "verification.create",
        (auth::TOKEN_VERIFICATION, true) => "verification.update",
        (auth::TOKEN_RECOVERY, false) => "recovery.create",
        (auth::TOKEN_RECOVERY, true) => "recovery.update",
        _ => "token.create",
    };
    let found = match (op, out) {
        (AuthOp::CreateUser { .. }, Outcome::User(u)) => (u.id.clone(), "user.create"),
        (AuthOp::UpdateUser { id, .. }, _) => (id.clone(), "user.update"),
        (
            AuthOp::CreateSession { .. }
            | AuthOp::TokenSession { .. }
            | AuthOp::AcceptInvite { .. }
            | AuthOp::VerifyChallenge { .. },
            Outcome::Session(s),
        ) => (
            s.user_id.clone(),
            match op {
                AuthOp::VerifyChallenge { .. } => "challenge.update",
                _ => "session.create",
            },
        ),
        (AuthOp::AcceptInvite { .. }, Outcome::Membership(m)) => {
            (m.user_id.clone(), "membership.update")
        }
        (AuthOp::ExtendSession { user, .. }, _) => (user.clone(), "session.update"),
        (AuthOp::DeleteSession { user, .. } | AuthOp::DeleteSessions { user }, _) => {
            (user.clone(), "session.delete")
        }
        (AuthOp::EmailToken { .. } | AuthOp::CreateToken { .. }, Outcome::Token(t)) => {
            (t.user_id.clone(), token_event(&t.kind, false))
        }
        (AuthOp::RedeemToken { user, kind, .. }, _) => (user.clone(), token_event(kind, true)),
        (AuthOp::CreateAuthenticator { user, .. }, _) => (user.clone(), "authenticator.create"),
        (AuthOp::VerifyAuthenticator { user, .. }, _) => (user.clone(), "authenticator.update"),
        (AuthOp::DeleteAuthenticator { user }, _) => (user.clone(), "authenticator.delete"),
        (AuthOp::RecoveryCodes { user, .. }, _) => (user.clone(), "recoverycodes.update"),
        (AuthOp::CreateChallenge { user, .. }, _) => (user.clone(), "challenge.create"),
        _ => return None,
    };
    Some(found)
}

/// Writes a log entry, ending the user's oldest while it holds `MAX_LOGS`.
fn write_log(txn: &mut Txn, project: &str, entry: &auth::LogEntry, at: i64) -> R<()> {
    let coll = auth::logs();
    // Counted on the index alone; only the oldest entry is read, when it has to go.
    let mut prefix = keys::index_prefix(project, &coll.database, &coll.id, "_key_user");
    keys::encode_value(&mut prefix, &Value::Str(entry.user_id.clone()), Order::Asc);
    let held = txn.scan_limit(INDEX, &prefix, auth::MAX_LOGS)?;
    if held.len() >= auth::MAX_LOGS {
        let (k, v) = &held[0];
        let (_, id) = keys::parse_entry_value(v)
            .ok_or_else(|| Failure::Storage(crate::engine::corrupt(k, "index entry")))?;
        if let Some(old) = load_document(txn, project, coll, &String::from_utf8_lossy(id))? {
            write_document(txn, project, coll, Some(&old), None)?;
        }
    }
    if entry.id.is_empty() || load_document(txn, project, coll, &entry.id)?.is_some() {
        return Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "Log entry with the requested ID already exists.",
        ));
    }
    insert_new(
        txn,
        project,
        coll,
        entry.id.clone(),
        Vec::new(),
        entry.data(),
        at,
    )
}

/// Refuses a sign-up (not a key's new user) past the project's user limit.
fn within_user_limit(txn: &Txn, project: &str, caller: &Caller) -> R<()> {
    if matches!(caller, Caller::Privileged) {
        return Ok(());
    }
    let limit = super::projects::auth_settings(txn, project)?.limit;
    let k = keys::rows_count(project, auth::DB, auth::USERS);
    let n = txn
        .get(INDEX, &k)?
        .and_then(|v| keys::parse_count(&v))
        .unwrap_or(0);
    match limit > 0 && n >= limit {
        true => Err(err(
            ErrorCode::UserCountExceeded,
            "The current project has exceeded the maximum number of users. Please check your user limit in the Appwrite console.",
        )),
        false => Ok(()),
    }
}

fn invalid_token() -> Failure {
    err(
        ErrorCode::UserInvalidToken,
        "Invalid token passed in the request.",
    )
}

fn authenticator_not_found() -> Failure {
    err(
        ErrorCode::UserAuthenticatorNotFound,
        "Authenticator could not be found on the current user.",
    )
}

fn authenticator_verified() -> Failure {
    err(
        ErrorCode::UserAuthenticatorAlreadyVerified,
        "This authenticator is already verified on the current user.",
    )
}

fn recovery_codes_not_found() -> Failure {
    err(
        ErrorCode::UserRecoveryCodesNotFound,
        "Recovery codes could not be found on the current user.",
    )
}

/// Writes `u` over its document `old`.
fn save_user(txn: &mut Txn, project: &str, old: &Document, u: &mut User, at: i64) -> R<()> {
    u.updated_at = at;
    let mut doc = old.clone();
    doc.data = u.data();
    doc.updated_at = at;
    write_document(txn, project, auth::users(), Some(old), Some(&doc))
}

/// Adds `factor` to the user's session `id` (once), and with `mfa_at` sets when it last
/// passed a challenge. Answers the session as it is now.
fn add_factor(
    txn: &mut Txn,
    project: &str,
    user: &str,
    id: &str,
    factor: &str,
    mfa_at: Option<i64>,
    at: i64,
) -> R<Session> {
    let old = load_session(txn, project, user, id)?;
    let mut s = Session::from_document(&old);
    if !s.factors.iter().any(|f| f == factor) {
        s.factors.push(factor.to_string());
    }
    if mfa_at.is_some() {
        s.mfa_updated_at = mfa_at;
    }
    s.updated_at = at;
    let mut doc = old.clone();
    doc.data = s.data();
    doc.updated_at = at;
    write_document(txn, project, auth::sessions(), Some(&old), Some(&doc))?;
    Ok(s)
}

/// A user (not a key) removing an authenticator or remaking recovery codes must have passed
/// a challenge in this session within `MFA_RECENT_MS` (Appwrite's `mfaProtected`).
fn recent_mfa(txn: &Txn, project: &str, caller: &Caller, at: i64) -> R<()> {
    let (user, session) = match caller {
        Caller::Privileged => return Ok(()),
        Caller::Roles {
            user: Some(u),
            session: Some(s),
            ..
        } => (u, s),
        Caller::Roles { .. } => return Err(challenge_required()),
    };
    let s = load_session(txn, project, user, session).map(|d| Session::from_document(&d))?;
    match s.mfa_updated_at {
        Some(t) if t.saturating_add(auth::MFA_RECENT_MS) > at => Ok(()),
        _ => Err(challenge_required()),
    }
}

fn challenge_required() -> Failure {
    err(
        ErrorCode::UserChallengeRequired,
        "A recently successful challenge is required to complete this action. A challenge is considered recent for 5 minutes.",
    )
}

fn blocked() -> Failure {
    err(ErrorCode::UserBlocked, "The current user has been blocked.")
}

/// The project's secret (made before the first JWT or email: `AuthOp::InitJwtSecret`).
fn project_secret(txn: &Txn, project: &str) -> R<String> {
    match txn.get(META, &keys::meta(project, keys::JWT_SECRET, &[]))? {
        Some(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
        None => Err(err(
            ErrorCode::GeneralServerError,
            "The project has no secret yet; try again.",
        )),
    }
}

/// Stores a token (its times from `at`), ending the user's oldest while it holds
/// `MAX_TOKENS`.
fn store_token(txn: &mut Txn, project: &str, token: &Token, at: i64) -> R<Token> {
    let coll = auth::tokens();
    let held = by_index(
        txn,
        project,
        coll,
        "_key_user",
        &token.user_id,
        auth::MAX_TOKENS + 1,
    )?;
    let keep = auth::MAX_TOKENS - 1;
    for old in held.iter().take(held.len().saturating_sub(keep)) {
        write_document(txn, project, coll, Some(old), None)?;
    }
    if load_document(txn, project, coll, &token.id)?.is_some() {
        return Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "Token with the requested ID already exists.",
        ));
    }
    let mut t = token.clone();
    t.created_at = at;
    insert_new(txn, project, coll, t.id.clone(), Vec::new(), t.data(), at)?;
    Ok(t)
}

/// The user an emailed secret is for: by id, or by email — made first from `create` (as a
/// sign-up: no password, status, labels or verification of its own) when none has it.
fn token_owner(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    owner: &TokenOwner,
    at: i64,
) -> R<User> {
    let (email, create) = match owner {
        TokenOwner::Id(id) => return Ok(load_user(txn, project, id)?.1),
        TokenOwner::Email { email, create } => (email, create),
    };
    let found = by_index(txn, project, auth::users(), "_key_email", email, 1)?;
    if let Some(d) = found.first() {
        return Ok(User::from_document(d));
    }
    match create {
        Some(u) if u.email == *email => {
            let mut u = (**u).clone();
            u.password = None;
            u.phone.clear();
            u.prefs = "{}".into();
            u.status = true;
            u.labels.clear();
            u.email_verification = false;
            u.phone_verification = false;
            u.mfa = false;
            within_user_limit(txn, project, caller)?;
            create_user(txn, project, &u, at)?;
            Ok(load_user(txn, project, &u.id)?.1)
        }
        _ => Err(user_not_found()),
    }
}

/// How many emails of `project` the outbox holds.
fn outbox_len(txn: &Txn, project: &str) -> R<u64> {
    Ok(txn
        .get(META, &keys::meta(project, keys::OUTBOX_COUNT, &[]))?
        .and_then(|v| v.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

fn set_outbox_len(txn: &mut Txn, project: &str, n: u64) {
    let k = keys::meta(project, keys::OUTBOX_COUNT, &[]);
    match n {
        0 => txn.del(META, k),
        n => txn.put(META, k, n.to_be_bytes().to_vec()),
    }
}

/// The secrets emailed to a user's old address hold no more once it changed: its tokens
/// other than a key's, and its pending invitations' secrets (the email they went to is not
/// the user's any longer; using one would verify the new address).
fn forget_emailed_secrets(txn: &mut Txn, project: &str, user: &str) -> R<()> {
    let tokens = by_index(
        txn,
        project,
        auth::tokens(),
        "_key_user",
        user,
        auth::MAX_TOKENS,
    )?;
    for t in tokens {
        if Token::from_document(&t).kind != auth::TOKEN_GENERIC {
            write_document(txn, project, auth::tokens(), Some(&t), None)?;
        }
    }
    let coll = auth::memberships();
    for old in by_index(txn, project, coll, "_key_user", user, auth::MAX_MEMBERSHIPS)? {
        let mut m = Membership::from_document(&old);
        if !m.confirm && !m.secret_sha256.is_empty() {
            m.secret_sha256.clear();
            let mut doc = old.clone();
            doc.data = m.data();
            write_document(txn, project, coll, Some(&old), Some(&doc))?;
        }
    }
    Ok(())
}

/// Queues `mail` to `user` (its address and name as they are now), due at once.
fn enqueue(txn: &mut Txn, project: &str, user: &User, mut mail: Mail, at: i64) -> R<()> {
    let n = outbox_len(txn, project)?;
    if n >= auth::MAX_OUTBOX {
        return Err(err(
            ErrorCode::GeneralRateLimitExceeded,
            "Too many emails are waiting to be sent. Please try again later.",
        ));
    }
    // One email per secret: its id is the secret's seed (a token's id, an invitation's).
    mail.id = mail.secret_of.clone();
    mail.project = project.to_string();
    mail.user_id = user.id.clone();
    mail.to = user.email.clone();
    // An invitation greets the invitee by the name its owner gave (as Appwrite).
    if mail.kind != MailKind::Invitation || mail.to_name.is_empty() {
        mail.to_name = user.name.clone();
    }
    if mail.kind != MailKind::Invitation {
        mail.team_id.clear();
        mail.team_name.clear();
        mail.inviter.clear();
    }
    if !matches!(mail.kind, MailKind::MagicUrl | MailKind::EmailOtp) {
        mail.phrase.clear();
    }
    mail.due = at;
    mail.attempts = 0;
    let k = keys::outbox(mail.due, &mail.id);
    if mail.id.is_empty() || txn.get(META, &k)?.is_some() {
        return Err(err(
            ErrorCode::GeneralArgumentInvalid,
            "This email is queued already.",
        ));
    }
    txn.put(META, k, encode(&mail));
    set_outbox_len(txn, project, n + 1);
    Ok(())
}

/// A team owner's invitation by email: an unconfirmed membership whose secret is derived
/// like a token's, and the email that carries it. Someone already invited is invited again
/// (same membership, the secret and email sent anew); a member already confirmed is refused.
fn invite(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    membership: &Membership,
    invitee: &TokenOwner,
    mail: &Mail,
    at: i64,
) -> R<Outcome> {
    let (_, team) = load_team(txn, project, caller, &membership.team_id, "read")?;
    owner_of(caller, &team.id)?;
    let inviter = match caller {
        Caller::Roles { user: Some(me), .. } => load_user(txn, project, me)?.1.name,
        _ => String::new(),
    };
    let user = token_owner(txn, project, caller, invitee, at)?;
    let coll = auth::memberships();
    let held = by_index(
        txn,
        project,
        coll,
        "_key_user",
        &user.id,
        auth::MAX_MEMBERSHIPS,
    )?;
    let existing = held
        .iter()
        .find(|d| Membership::from_document(d).team_id == team.id);
    let (old, mut m) = match existing {
        Some(d) => {
            let m = Membership::from_document(d);
            if m.confirm {
                return Err(err(
                    ErrorCode::MembershipAlreadyConfirmed,
                    "Membership is already confirmed.",
                ));
            }
            (Some(d.clone()), m)
        }
        None => {
            if held.len() >= auth::MAX_MEMBERSHIPS {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    msg!(
                        "A user may belong to at most {} teams.",
                        auth::MAX_MEMBERSHIPS
                    ),
                ));
            }
            if load_document(txn, project, coll, &membership.id)?.is_some() {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "Membership with the requested ID already exists.",
                ));
            }
            let mut m = membership.clone();
            m.created_at = at;
            (None, m)
        }
    };
    m.user_id = user.id.clone();
    m.team_id = team.id.clone();
    m.roles = membership.roles.clone();
    m.invited = at;
    m.joined = None;
    m.confirm = false;
    m.updated_at = at;
    // A renewed invitation gets a new secret: its seed is the membership and when it was made.
    let seed = format!("{}@{at}", m.id);
    let secret = auth::mail_secret(&project_secret(txn, project)?, MailKind::Invitation, &seed);
    m.secret_sha256 = auth::sha256_hex(&secret);
    let doc = Document {
        id: m.id.clone(),
        sequence: match &old {
            Some(d) => d.sequence,
            None => next_sequence(txn, project, coll)?,
        },
        created_at: m.created_at,
        updated_at: at,
        permissions: Vec::new(),
        data: m.data(),
    };
    write_document(txn, project, coll, old.as_ref(), Some(&doc))?;
    let mut mail = mail.clone();
    mail.secret_of = seed;
    mail.team_id = team.id.clone();
    mail.team_name = team.name.clone();
    mail.inviter = inviter;
    mail.expire = 0;
    enqueue(txn, project, &user, mail, at)?;
    Ok(Outcome::Membership(m))
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
    let (_, u) = match load_user(txn, project, user) {
        Err(Failure::User(_)) => return Err(unauthorized()),
        other => other?,
    };
    if !u.status {
        return Err(err(
            ErrorCode::UserBlocked,
            "The current user has been blocked.",
        ));
    }
    Ok(u)
}
