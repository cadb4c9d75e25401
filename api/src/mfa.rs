//! Multi-factor authentication, as Appwrite has it: a TOTP authenticator, challenges (a TOTP
//! code, a code sent by email, a recovery code) that add a factor to the session, recovery
//! codes, and the `mfa` flag, which makes a session that has one factor only (of a user with a
//! second) good for nothing but completing a challenge (`auth::authorize`).
//!
//! No MFA secret is stored: an authenticator's secret and the recovery codes are derived from
//! the project's secret and a seed kept on the user (`model::auth::totp_secret`,
//! `recovery_codes`). A code is checked first on this node's view, so a wrong guess costs no
//! log entry, then again in apply, at the envelope's time.

use crate::abuse;
use crate::auth::Ctx;
use crate::common::{enter_scoped, no_content, prepare_scoped, reply, unexpected, Reply};
use crate::emailed::invalid_token;
use crate::error::ApiError;
use crate::mail::require_smtp;
use crate::params::{new_id, now_ms, Req};
use crate::secrets::random_hex;
use crate::users::{project_secret, propose, propose_user, session_json, user_json};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::Router;
use model::auth::{self, ChallengeCheck, Session, Token, User};
use model::command::{AuthOp, UserChange};
use model::reader::{Consistency, StateReader};
use model::time::format_ms;
use model::{msg, Error, ErrorCode, Outcome};
use serde_json::{json, Value as Json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/account/mfa", patch(update_mfa))
        .route(
            "/v1/account/mfa/authenticators/{type}",
            post(create_authenticator)
                .put(verify_authenticator)
                .delete(delete_authenticator),
        )
        .route(
            "/v1/account/mfa/challenges",
            post(create_challenge).put(verify_challenge),
        )
        .route("/v1/account/mfa/factors", get(my_factors))
        .route(
            "/v1/account/mfa/recovery-codes",
            get(my_recovery_codes)
                .post(create_recovery_codes)
                .patch(regenerate_recovery_codes),
        )
        .route("/v1/users/{user}/mfa/factors", get(user_factors))
        .route(
            "/v1/users/{user}/mfa/recovery-codes",
            get(user_recovery_codes)
                // As Appwrite's Users service: PATCH makes them, PUT makes them anew.
                .patch(create_user_recovery_codes)
                .put(regenerate_user_recovery_codes),
        )
        .route(
            "/v1/users/{user}/mfa/authenticators/{type}",
            axum::routing::delete(delete_user_authenticator),
        )
}

const ACCOUNT: &[&str] = &["account"];
const USERS_READ: &[&str] = &["users.read"];
const USERS_WRITE: &[&str] = &["users.write"];

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(Error::invalid(m))
}

fn me(ctx: &Ctx) -> Result<(&User, &Session), ApiError> {
    ctx.user().ok_or_else(|| {
        ApiError::new(
            ErrorCode::UserUnauthorized,
            "The current user is not authorized to perform the requested action.",
        )
    })
}

/// The `{type}` in the path: `totp`, the one authenticator there is.
fn authenticator_type(req: &Req) -> Result<(), ApiError> {
    match req.path("type").as_str() {
        "totp" => Ok(()),
        _ => Err(invalid("Invalid `type` param: Value must be one of (totp)")),
    }
}

/// The `otp` param: the code the user typed.
fn otp_param(req: &Req) -> Result<String, ApiError> {
    let otp = req
        .str_opt("otp")?
        .ok_or_else(|| invalid("Param \"otp\" is not optional."))?;
    if otp.is_empty() || otp.len() > 256 {
        return Err(invalid(
            "Invalid `otp` param: Value must be a valid string and at least 1 chars and no longer than 256 chars",
        ));
    }
    Ok(otp)
}

fn factors_json(u: &User) -> Json {
    let f = u.factors();
    json!({
        "totp": f.totp,
        "phone": f.phone,
        "email": f.email,
        "recoveryCode": f.recovery_code,
        // Appwrite Cloud's custom factor, which the 27.x SDKs expect in the model.
        "custom": false,
    })
}

/// The codes of `u` not used yet.
fn unused_codes(project_secret: &str, u: &User) -> Vec<String> {
    let Some(r) = &u.recovery else {
        return Vec::new();
    };
    auth::recovery_codes(project_secret, &u.id, &r.seed)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| r.used & (1 << i) == 0)
        .map(|(_, c)| c)
        .collect()
}

fn codes_reply(status: StatusCode, codes: Vec<String>) -> Reply {
    reply(status, json!({ "recoveryCodes": codes }))
}

/// `otpauth://totp/<issuer>:<email>?issuer=<issuer>&secret=<base32>`, as Appwrite writes it.
fn otpauth_uri(issuer: &str, label: &str, secret: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let enc = |s: &str| {
        // rawurlencode: everything but letters, digits and `-_.~`.
        utf8_percent_encode(s, NON_ALPHANUMERIC)
            .to_string()
            .replace("%2D", "-")
            .replace("%5F", "_")
            .replace("%2E", ".")
            .replace("%7E", "~")
    };
    format!(
        "otpauth://totp/{}?issuer={}&secret={}",
        enc(&format!("{issuer}:{label}")),
        enc(issuer),
        secret
    )
}

async fn update_mfa(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::ACCOUNT_CHANGE, {
        let on = req.bool_req("mfa")?;
        let (u, _) = me(&ctx)?;
        let op = AuthOp::UpdateUser {
            id: u.id.clone(),
            changes: vec![UserChange::Mfa(on)],
            proof: None,
        };
        let u = propose_user(&s, &ctx, op).await?;
        reply(StatusCode::OK, user_json(&u, false))
    })
}

async fn create_authenticator(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    authenticator_type(&req)?;
    let (u, _) = me(&ctx)?;
    let ps = project_secret(&s, &ctx).await?;
    let op = AuthOp::CreateAuthenticator {
        user: u.id.clone(),
        seed: random_hex(16),
    };
    let u = propose_user(&s, &ctx, op).await?;
    let a = u.totp.as_ref().ok_or_else(|| unexpected(Outcome::Done))?;
    let secret = auth::totp_base32(&auth::totp_secret(&ps, &u.id, &a.seed));
    let issuer = ctx
        .view
        .project(&ctx.project)?
        .map(|p| p.name)
        .unwrap_or_else(|| ctx.project.clone());
    let uri = otpauth_uri(&issuer, &u.email, &secret);
    reply(StatusCode::OK, json!({ "secret": secret, "uri": uri }))
}

/// Whether `code` is the user's authenticator's code now, on `view`.
fn totp_ok(
    view: &dyn StateReader,
    project: &str,
    user: &str,
    code: &str,
) -> Result<bool, ApiError> {
    let (Some(u), Some(ps)) = (
        crate::auth::load_user(view, project, user)?,
        view.jwt_secret(project)?,
    ) else {
        return Ok(false);
    };
    let Some(a) = &u.totp else {
        return Ok(false);
    };
    let secret = auth::totp_secret(&ps, &u.id, &a.seed);
    Ok(auth::totp_matches(
        &secret,
        &auth::sha256_hex(code),
        now_ms(),
    ))
}

async fn verify_authenticator(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::ACCOUNT_CHANGE, {
        authenticator_type(&req)?;
        let otp = otp_param(&req)?;
        let (u, _) = me(&ctx)?;
        match &u.totp {
            None => {
                return Err(ApiError::new(
                    ErrorCode::UserAuthenticatorNotFound,
                    "Authenticator could not be found on the current user.",
                ))
            }
            Some(a) if a.verified => {
                return Err(ApiError::new(
                    ErrorCode::UserAuthenticatorAlreadyVerified,
                    "This authenticator is already verified on the current user.",
                ))
            }
            Some(_) => {}
        }
        if !totp_ok(&*ctx.view, &ctx.project, &u.id, &otp)? {
            return Err(invalid_token());
        }
        let op = AuthOp::VerifyAuthenticator {
            user: u.id.clone(),
            otp_sha256: auth::sha256_hex(&otp),
        };
        let u = propose_user(&s, &ctx, op).await?;
        reply(StatusCode::OK, user_json(&u, false))
    })
}

async fn delete_authenticator(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    authenticator_type(&req)?;
    let (u, _) = me(&ctx)?;
    propose(&s, &ctx, AuthOp::DeleteAuthenticator { user: u.id.clone() }).await?;
    no_content()
}

/// The `factor` param, in Appwrite's spelling whatever its case (the SDK sends
/// `recoverycode`).
fn factor_param(req: &Req) -> Result<&'static str, ApiError> {
    let f = req
        .str_opt("factor")?
        .ok_or_else(|| invalid("Param \"factor\" is not optional."))?;
    auth::CHALLENGE_FACTORS
        .iter()
        .find(|c| c.eq_ignore_ascii_case(&f))
        .copied()
        .ok_or_else(|| {
            invalid(
                "Invalid `factor` param: Value must be one of (email, phone, totp, recoveryCode)",
            )
        })
}

async fn create_challenge(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::CHALLENGE, {
        let factor = factor_param(&req)?;
        let (u, _) = me(&ctx)?;
        if factor == "email" {
            require_smtp(&s)?;
        }
        project_secret(&s, &ctx).await?;
        let token = Token {
            id: new_id(),
            created_at: 0,
            user_id: u.id.clone(),
            secret_sha256: String::new(),
            kind: String::new(),
            expire: 0,
        };
        let op = AuthOp::CreateChallenge {
            user: u.id.clone(),
            factor: factor.to_string(),
            token: Box::new(token),
        };
        match propose(&s, &ctx, op).await? {
            Outcome::Token(t) => reply(
                StatusCode::CREATED,
                json!({
                    "$id": t.id,
                    "$createdAt": format_ms(t.created_at),
                    "userId": t.user_id,
                    "expire": format_ms(t.expire),
                }),
            ),
            o => Err(unexpected(o)),
        }
    })
}

/// Checks a challenge's code on `view` (see `auth::check_challenge`).
fn challenge_ok(
    view: &dyn StateReader,
    project: &str,
    user: &User,
    challenge: &str,
    otp: &str,
) -> Result<bool, ApiError> {
    let Some(ps) = view.jwt_secret(project)? else {
        return Ok(false);
    };
    let Some(doc) = view.document(project, auth::tokens(), challenge)? else {
        return Ok(false);
    };
    let fresh = crate::auth::load_user(view, project, &user.id)?;
    let Some(u) = fresh else {
        return Ok(false);
    };
    let t = Token::from_document(&doc);
    let check = auth::check_challenge(&ps, &u, &t, &auth::sha256_hex(otp), now_ms());
    Ok(check != ChallengeCheck::Refused)
}

async fn verify_challenge(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::CHALLENGE_ANSWER, {
        let challenge = req.id_req("challengeId")?;
        let otp = otp_param(&req)?;
        let (u, _) = me(&ctx)?;
        if !challenge_ok(&*ctx.view, &ctx.project, u, &challenge, &otp)? {
            let view = s.backend.read(Consistency::Linearizable).await?;
            if !challenge_ok(&*view, &ctx.project, u, &challenge, &otp)? {
                return Err(invalid_token());
            }
        }
        let op = AuthOp::VerifyChallenge {
            user: u.id.clone(),
            challenge,
            otp_sha256: auth::sha256_hex(&otp),
        };
        match propose(&s, &ctx, op).await? {
            Outcome::Session(session) => reply(StatusCode::OK, session_json(&session, None, "")),
            o => Err(unexpected(o)),
        }
    })
}

async fn my_factors(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, ACCOUNT).await?;
    let (u, _) = me(&ctx)?;
    reply(StatusCode::OK, factors_json(u))
}

/// A challenge passed in this session within `MFA_RECENT_MS` (Appwrite's `mfaProtected`).
fn recent(session: &Session) -> Result<(), ApiError> {
    match session.mfa_updated_at {
        Some(t) if t.saturating_add(auth::MFA_RECENT_MS) > now_ms() => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::UserChallengeRequired,
            "A recently successful challenge is required to complete this action. A challenge is considered recent for 5 minutes.",
        )),
    }
}

async fn my_recovery_codes(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, ACCOUNT).await?;
    let (u, session) = me(&ctx)?;
    recent(session)?;
    let ps = ctx.view.jwt_secret(&ctx.project)?.unwrap_or_default();
    match unused_codes(&ps, u) {
        codes if codes.is_empty() => Err(codes_not_found()),
        codes => codes_reply(StatusCode::OK, codes),
    }
}

fn codes_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::UserRecoveryCodesNotFound,
        "Recovery codes could not be found on the current user.",
    )
}

/// Makes `user`'s recovery codes (anew with `regenerate`) and answers them.
async fn make_codes(
    s: &AppState,
    ctx: &Ctx,
    user: &str,
    regenerate: bool,
    status: StatusCode,
) -> Reply {
    let ps = project_secret(s, ctx).await?;
    let op = AuthOp::RecoveryCodes {
        user: user.to_string(),
        seed: random_hex(16),
        regenerate,
    };
    let u = propose_user(s, ctx, op).await?;
    codes_reply(status, unused_codes(&ps, &u))
}

async fn create_recovery_codes(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    let (u, _) = me(&ctx)?;
    make_codes(&s, &ctx, &u.id.clone(), false, StatusCode::CREATED).await
}

async fn regenerate_recovery_codes(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    let (u, session) = me(&ctx)?;
    recent(session)?;
    make_codes(&s, &ctx, &u.id.clone(), true, StatusCode::OK).await
}

/// The user in the path, for a key.
fn path_user(ctx: &Ctx, req: &Req) -> Result<User, ApiError> {
    crate::auth::load_user(&*ctx.view, &ctx.project, &req.path("user"))?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::UserNotFound,
            msg!("User with the requested ID could not be found."),
        )
    })
}

async fn user_factors(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, USERS_READ).await?;
    let u = path_user(&ctx, &req)?;
    reply(StatusCode::OK, factors_json(&u))
}

async fn user_recovery_codes(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, USERS_READ).await?;
    let u = path_user(&ctx, &req)?;
    let ps = ctx.view.jwt_secret(&ctx.project)?.unwrap_or_default();
    match unused_codes(&ps, &u) {
        codes if codes.is_empty() => Err(codes_not_found()),
        codes => codes_reply(StatusCode::OK, codes),
    }
}

async fn create_user_recovery_codes(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, u) = prepare_scoped(&s, &req, USERS_WRITE, |ctx| path_user(ctx, &req)).await?;
    make_codes(&s, &ctx, &u.id, false, StatusCode::OK).await
}

async fn regenerate_user_recovery_codes(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, u) = prepare_scoped(&s, &req, USERS_WRITE, |ctx| path_user(ctx, &req)).await?;
    make_codes(&s, &ctx, &u.id, true, StatusCode::OK).await
}

async fn delete_user_authenticator(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, u) = prepare_scoped(&s, &req, USERS_WRITE, |ctx| path_user(ctx, &req)).await?;
    authenticator_type(&req)?;
    propose(&s, &ctx, AuthOp::DeleteAuthenticator { user: u.id }).await?;
    no_content()
}

#[cfg(test)]
mod tests {
    #[test]
    fn otpauth_uris_are_appwrites() {
        assert_eq!(
            super::otpauth_uri("My Project", "user@example.com", "ABC"),
            "otpauth://totp/My%20Project%3Auser%40example.com?issuer=My%20Project&secret=ABC"
        );
    }
}
