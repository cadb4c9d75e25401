//! The Account service: what an app's end users call about themselves — sign-up, sign-in
//! (email and password, anonymous), their sessions, JWTs, and their own details.

use crate::abuse;
use crate::auth::Ctx;
use crate::common::{enter_scoped, no_content, prepare_scoped, reply, Reply};
use crate::error::ApiError;
use crate::params::{now_ms, Req};
use crate::policy::{check_password, check_user_password, require_method, Personal};
use crate::users::{
    clear_session_cookies, email_param, make_jwt, make_session, name_param, new_user,
    password_param, phone_param, prefs_param, propose, propose_user, session_json, session_list,
    session_reply, sessions_of, user_by_email, user_id_param, user_json, SessionRequest,
};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::Router;
use model::auth::{self, Session, User};
use model::command::{AuthOp, UserChange};
use model::msg;
use model::{Error, ErrorCode, Outcome};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/account", get(get_account).post(create))
        .route("/v1/account/name", patch(update_name))
        .route("/v1/account/email", patch(update_email))
        .route("/v1/account/phone", patch(update_phone))
        .route("/v1/account/password", patch(update_password))
        .route("/v1/account/status", patch(update_status))
        .route("/v1/account/prefs", get(get_prefs).patch(update_prefs))
        .route("/v1/account/jwts", post(create_jwt))
        .route(
            "/v1/account/sessions",
            get(list_sessions).delete(delete_sessions),
        )
        .route("/v1/account/sessions/email", post(email_session))
        .route("/v1/account/sessions/anonymous", post(anonymous_session))
        .route("/v1/account/sessions/token", post(token_session))
        // Deprecated names of the same exchange.
        .route(
            "/v1/account/sessions/magic-url",
            axum::routing::put(token_session),
        )
        .route(
            "/v1/account/sessions/phone",
            axum::routing::put(token_session),
        )
        .route(
            "/v1/account/sessions/{session}",
            get(get_session)
                .patch(extend_session)
                .delete(delete_session),
        )
}

const ACCOUNT: &[&str] = &["account"];
const SESSIONS_WRITE: &[&str] = &["sessions.write"];

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(Error::invalid(m))
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| invalid(msg!("Param \"{}\" is not optional.", name)))
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::UserInvalidCredentials,
        "Invalid credentials. Please check the email and password.",
    )
}

/// The signed-in caller (routes with the `account` scope only let users through).
fn me(ctx: &Ctx) -> Result<(&User, &Session), ApiError> {
    ctx.user().ok_or_else(|| {
        ApiError::new(
            ErrorCode::UserUnauthorized,
            "The current user is not authorized to perform the requested action.",
        )
    })
}

/// Refuses a sign-in by a caller that is signed in already.
fn not_signed_in(ctx: &Ctx) -> Result<(), ApiError> {
    match ctx.user() {
        Some(_) => Err(ApiError::new(
            ErrorCode::UserSessionAlreadyExists,
            "Creation of a session is prohibited when a session is active.",
        )),
        None => Ok(()),
    }
}

async fn create(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, SESSIONS_WRITE, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::SIGN_UP, {
        require_method(&ctx, "email-password")?;
        let id = user_id_param(&req)?;
        let email = required(email_param(&req, "email")?, "email")?;
        let password = required(password_param(&req, "password")?, "password")?;
        let name = name_param(&req, "name", false)?.unwrap_or_default();
        let personal = Personal {
            id: &id,
            email: &email,
            name: &name,
            phone: "",
        };
        let settings = ctx.view.auth_settings(&ctx.project)?;
        check_password(&s, &settings, &password, Some(personal), &[]).await?;
        let credential = s.hasher.hash(password).await?;
        let user = new_user(id, email, String::new(), name, Some(credential));
        let u = propose_user(
            &s,
            &ctx,
            AuthOp::CreateUser {
                user: Box::new(user),
            },
        )
        .await?;
        reply(StatusCode::CREATED, user_json(&u, false))
    })
}

async fn get_account(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, ACCOUNT).await?;
    let (u, _) = me(&ctx)?;
    reply(StatusCode::OK, user_json(u, false))
}

async fn email_session(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, SESSIONS_WRITE, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::EMAIL_SESSION, {
        require_method(&ctx, "email-password")?;
        not_signed_in(&ctx)?;
        let email = required(email_param(&req, "email")?, "email")?;
        let password = required(password_param(&req, "password")?, "password")?;
        let user = user_by_email(&s, &ctx, &email).await?;
        let stored = user.as_ref().and_then(|u| u.password.clone());
        // An unknown email costs the same as a wrong password, and answers the same.
        let ok = s.hasher.verify(password, stored).await?;
        let user = match (ok, user) {
            (true, Some(u)) => u,
            _ => return Err(invalid_credentials()),
        };
        if !user.status {
            return Err(ApiError::new(
                ErrorCode::UserBlocked,
                "The current user has been blocked.",
            ));
        }
        // An imported hash (or an argon2 one made with other parameters elsewhere) is
        // replaced by one of ours, in the apply that makes the session.
        let rehash = match user.password.as_ref().map(|c| c.algo.as_str()) {
            Some("argon2") | None => None,
            Some(_) => Some(s.hasher.hash(req.str_req("password")?).await?),
        };
        let made = make_session(
            &s,
            &ctx,
            &req,
            SessionRequest {
                user_id: user.id.clone(),
                provider: "email",
                provider_uid: email,
                factors: vec!["password".into()],
                proof: Some(user.credential_proof()),
                new_user: None,
                token: None,
                rehash,
            },
        )
        .await?;
        session_reply(&ctx, &req, &made)
    })
}

async fn anonymous_session(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, SESSIONS_WRITE, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::ANONYMOUS_SESSION, {
        require_method(&ctx, "anonymous")?;
        not_signed_in(&ctx)?;
        let user = new_user(
            crate::params::new_id(),
            String::new(),
            String::new(),
            String::new(),
            None,
        );
        let made = make_session(
            &s,
            &ctx,
            &req,
            SessionRequest {
                user_id: user.id.clone(),
                provider: "anonymous",
                provider_uid: String::new(),
                factors: vec!["anonymous".into()],
                proof: None,
                new_user: Some(user),
                token: None,
                rehash: None,
            },
        )
        .await?;
        session_reply(&ctx, &req, &made)
    })
}

/// A session for a one-time token's user, using the token up.
async fn token_session(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, SESSIONS_WRITE, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::TOKEN_SESSION, {
        not_signed_in(&ctx)?;
        let user_id = req.str_req("userId")?;
        model::id::check("userId", &user_id)?;
        let secret = req.str_req("secret")?;
        if secret.is_empty() || secret.len() > 256 {
            return Err(invalid("Invalid `secret` param: Value must be a valid string and at least 1 chars and no longer than 256 chars"));
        }
        // A wrong secret is refused here, without a log entry; the apply checks it again.
        let kinds = [
            auth::TOKEN_GENERIC,
            auth::TOKEN_MAGIC_URL,
            auth::TOKEN_EMAIL_OTP,
        ];
        let token = crate::emailed::held_token(&s, &ctx, &user_id, &secret, &kinds).await?;
        // As Appwrite: a magic URL signs in as `magic-url`, a code or a key's token as
        // `token`; a secret that came by email is the `email` factor.
        let (provider, factor) = match token.kind.as_str() {
            auth::TOKEN_MAGIC_URL => ("magic-url", "email"),
            auth::TOKEN_EMAIL_OTP => ("token", "email"),
            _ => ("token", "token"),
        };
        let made = make_session(
            &s,
            &ctx,
            &req,
            SessionRequest {
                user_id,
                provider,
                provider_uid: String::new(),
                factors: vec![factor.into()],
                proof: None,
                new_user: None,
                token: Some(crate::secrets::sha256_hex(&secret)),
                rehash: None,
            },
        )
        .await?;
        session_reply(&ctx, &req, &made)
    })
}

/// The caller's session named in the path (`current` for the one in use).
fn named_session<'a>(ctx: &'a Ctx, req: &Req, all: &'a [Session]) -> Result<&'a Session, ApiError> {
    let (_, current) = me(ctx)?;
    let id = req.path("session");
    let id = if id == "current" {
        current.id.clone()
    } else {
        id
    };
    all.iter().find(|s| s.id == id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UserSessionNotFound,
            "The current user session could not be found.",
        )
    })
}

fn live_sessions(ctx: &Ctx) -> Result<Vec<Session>, ApiError> {
    let (u, _) = me(ctx)?;
    let now = now_ms();
    Ok(sessions_of(ctx, &u.id)?
        .into_iter()
        .filter(|s| s.expire > now)
        .collect())
}

async fn list_sessions(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, ACCOUNT).await?;
    let (_, current) = me(&ctx)?;
    let all = live_sessions(&ctx)?;
    reply(StatusCode::OK, session_list(&all, Some(&current.id)))
}

async fn get_session(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, ACCOUNT).await?;
    let all = live_sessions(&ctx)?;
    let found = named_session(&ctx, &req, &all)?;
    let (_, current) = me(&ctx)?;
    reply(StatusCode::OK, session_json(found, Some(&current.id), ""))
}

async fn extend_session(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, id) = prepare_scoped(&s, &req, ACCOUNT, |ctx| {
        let all = live_sessions(ctx)?;
        Ok(named_session(ctx, &req, &all)?.id.clone())
    })
    .await?;
    limited!(s, &req, &ctx, &abuse::ACCOUNT_CHANGE, {
        let (u, current) = me(&ctx)?;
        let op = AuthOp::ExtendSession {
            user: u.id.clone(),
            id,
            expire: now_ms().saturating_add(auth::SESSION_TTL_MS),
        };
        match propose(&s, &ctx, op).await? {
            Outcome::Session(session) => reply(
                StatusCode::OK,
                session_json(&session, Some(&current.id), ""),
            ),
            o => Err(crate::common::unexpected(o)),
        }
    })
}

async fn delete_session(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, id) = prepare_scoped(&s, &req, ACCOUNT, |ctx| {
        let all = live_sessions(ctx)?;
        Ok(named_session(ctx, &req, &all)?.id.clone())
    })
    .await?;
    limited!(s, &req, &ctx, &abuse::SESSION_DELETE, {
        let (u, current) = me(&ctx)?;
        let op = AuthOp::DeleteSession {
            user: u.id.clone(),
            id: id.clone(),
        };
        propose(&s, &ctx, op).await?;
        signed_out(&ctx, &req, id == current.id)
    })
}

async fn delete_sessions(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::SESSION_DELETE, {
        let (u, _) = me(&ctx)?;
        let op = AuthOp::DeleteSessions { user: u.id.clone() };
        propose(&s, &ctx, op).await?;
        signed_out(&ctx, &req, true)
    })
}

/// 204, clearing the session cookies if the caller's own session ended.
fn signed_out(ctx: &Ctx, req: &Req, own: bool) -> Reply {
    let mut headers = HeaderMap::new();
    if own {
        clear_session_cookies(&mut headers, &ctx.project, req);
    }
    let mut res = no_content()?;
    res.headers_mut().extend(headers);
    Ok(res)
}

async fn create_jwt(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, ACCOUNT).await?;
    limited!(s, &req, &ctx, &abuse::JWT, {
        if let crate::auth::Who::User { jwt: true, .. } = ctx.who {
            return Err(ApiError::new(ErrorCode::UserJwtCreationDenied, "A JWT cannot be created from a request authorized with a JWT. Authenticate with a session cookie or session header instead."));
        }
        require_method(&ctx, "jwt")?;
        let (u, session) = me(&ctx)?;
        make_jwt(&s, &ctx, &u.id, &session.id, &req).await
    })
}

/// Applies `changes` to the caller, with `proof` that it knew its password, and answers the
/// user.
async fn change_me(
    s: &AppState,
    ctx: &Ctx,
    changes: Vec<UserChange>,
    proof: Option<String>,
) -> Result<User, ApiError> {
    let (u, _) = me(ctx)?;
    let op = AuthOp::UpdateUser {
        id: u.id.clone(),
        changes,
        proof,
    };
    propose_user(s, ctx, op).await
}

/// Checks the caller's current password when they have one; answers the proof for apply.
async fn knows_password(
    s: &AppState,
    u: &User,
    password: Option<String>,
) -> Result<Option<String>, ApiError> {
    let Some(stored) = u.password.clone() else {
        return Ok(None);
    };
    let ok = match password {
        Some(p) => s.hasher.verify(p, Some(stored)).await?,
        None => false,
    };
    match ok {
        true => Ok(Some(u.credential_proof())),
        false => Err(invalid_credentials()),
    }
}

async fn update_name(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    let name = required(name_param(&req, "name", false)?, "name")?;
    let u = change_me(&s, &ctx, vec![UserChange::Name(name)], None).await?;
    reply(StatusCode::OK, user_json(&u, false))
}

async fn update_password(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::ACCOUNT_CHANGE, {
        let password = required(password_param(&req, "password")?, "password")?;
        let (u, _) = me(&ctx)?;
        let proof = knows_password(&s, u, req.str_opt("oldPassword")?).await?;
        check_user_password(&s, &ctx, &password, u).await?;
        let c = s.hasher.hash(password).await?;
        let u = change_me(&s, &ctx, vec![UserChange::Password(Some(c))], proof).await?;
        reply(StatusCode::OK, user_json(&u, false))
    })
}

/// An email or phone change: needs the current password, or, for a user without one (an
/// anonymous user becoming a real one), sets the password given.
async fn update_contact(s: &AppState, req: &Req, contact: UserChange) -> Reply {
    let (ctx, ()) = prepare_scoped(s, req, ACCOUNT, |_| Ok(())).await?;
    limited!(s, req, &ctx, &abuse::ACCOUNT_CHANGE, {
        let password = required(req.str_opt("password")?, "password")?;
        let (u, _) = me(&ctx)?;
        let mut changes = vec![contact];
        let proof = match u.password {
            Some(_) => knows_password(s, u, Some(password)).await?,
            None => {
                let password = required(password_param(req, "password")?, "password")?;
                changes.push(UserChange::Password(Some(s.hasher.hash(password).await?)));
                None
            }
        };
        let u = change_me(s, &ctx, changes, proof).await?;
        reply(StatusCode::OK, user_json(&u, false))
    })
}

async fn update_email(State(s): State<AppState>, req: Req) -> Reply {
    let email = required(email_param(&req, "email")?, "email")?;
    update_contact(&s, &req, UserChange::Email(email)).await
}

async fn update_phone(State(s): State<AppState>, req: Req) -> Reply {
    let phone = required(phone_param(&req, "phone")?, "phone")?;
    update_contact(&s, &req, UserChange::Phone(phone)).await
}

async fn update_status(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    let u = change_me(&s, &ctx, vec![UserChange::Status(false)], None).await?;
    let mut headers = HeaderMap::new();
    clear_session_cookies(&mut headers, &ctx.project, &req);
    Ok((StatusCode::OK, headers, axum::Json(user_json(&u, false))).into_response())
}

async fn get_prefs(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, ACCOUNT).await?;
    let (u, _) = me(&ctx)?;
    let prefs: serde_json::Value =
        serde_json::from_str(&u.prefs).unwrap_or_else(|_| serde_json::json!({}));
    reply(StatusCode::OK, prefs)
}

async fn update_prefs(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    let prefs = prefs_param(&req)?;
    let u = change_me(&s, &ctx, vec![UserChange::Prefs(prefs)], None).await?;
    reply(StatusCode::OK, user_json(&u, false))
}
