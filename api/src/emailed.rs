//! The Account flows whose secret travels by email: verifying the address, recovering the
//! password, and signing in by magic URL or by a six-digit code.
//!
//! Asking for one commits a token and its email in one apply (`AuthOp::EmailToken`); the
//! email leaves with the leader's mail runner, so a node that dies after answering loses
//! nothing. The secret is never in the answer (only the email has it). Using one is checked
//! first against this node's view (then a linearizable one), so a wrong guess costs no log
//! entry, and again in the apply that uses it up.

use crate::abuse;
use crate::auth::Ctx;
use crate::common::{prepare_scoped, reply, unexpected, Reply};
use crate::error::ApiError;
use crate::mail::{new_mail, phrase, redirect_param, require_smtp};
use crate::params::{new_id, Req};
use crate::policy::{check_password, require_method};
use crate::users::{
    email_param, password_param, project_secret, propose, token_json, user_id_param,
};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use model::auth::{self, MailKind, Token, User};
use model::command::{AuthOp, TokenOwner, UserChange};
use model::query::Spec;
use model::reader::{Consistency, StateReader};
use model::{msg, Error, ErrorCode, Outcome};
use serde_json::Value as Json;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/account/verifications/email",
            post(create_verification).put(update_verification),
        )
        // The name before 1.8.
        .route(
            "/v1/account/verification",
            post(create_verification).put(update_verification),
        )
        .route(
            "/v1/account/recovery",
            post(create_recovery).put(update_recovery),
        )
        .route("/v1/account/tokens/magic-url", post(magic_url_token))
        .route("/v1/account/tokens/email", post(email_token))
}

const ACCOUNT: &[&str] = &["account"];
const SESSIONS_WRITE: &[&str] = &["sessions.write"];
const PUBLIC: &[&str] = &["public"];

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(Error::invalid(m))
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| invalid(msg!("Param \"{}\" is not optional.", name)))
}

pub(crate) fn invalid_token() -> ApiError {
    ApiError::new(
        ErrorCode::UserInvalidToken,
        "Invalid token passed in the request.",
    )
}

/// Commits a token of `kind` for `owner` and queues its email.
async fn send(
    s: &AppState,
    ctx: &Ctx,
    owner: TokenOwner,
    kind: MailKind,
    url: String,
    phrase: String,
) -> Result<Token, ApiError> {
    require_smtp(s)?;
    // The secret is derived from the project's secret, made now if this is its first use.
    project_secret(s, ctx).await?;
    let token = Token {
        id: new_id(),
        created_at: 0,
        user_id: String::new(),
        secret_sha256: String::new(),
        kind: kind.token_kind().to_string(),
        expire: 0,
    };
    let op = AuthOp::EmailToken {
        owner,
        token: Box::new(token),
        mail: Box::new(new_mail(kind, url, phrase)),
    };
    match propose(s, ctx, op).await? {
        Outcome::Token(t) => Ok(t),
        o => Err(unexpected(o)),
    }
}

/// The token model as these flows answer it: no secret (it is in the email), the phrase if
/// one was asked for.
fn sent(t: &Token, phrase: &str) -> Reply {
    let mut body = token_json(t, "");
    body["phrase"] = Json::String(phrase.to_string());
    reply(StatusCode::CREATED, body)
}

/// The `secret` param: 1 to 256 characters.
fn secret_param(req: &Req) -> Result<String, ApiError> {
    let secret = required(req.str_opt("secret")?, "secret")?;
    if secret.is_empty() || secret.len() > 256 {
        return Err(invalid(
            "Invalid `secret` param: Value must be a valid string and at least 1 chars and no longer than 256 chars",
        ));
    }
    Ok(secret)
}

fn token_in(
    view: &dyn StateReader,
    project: &str,
    user: &str,
    secret: &str,
    kinds: &[&str],
) -> Result<Option<Token>, ApiError> {
    let digest = auth::sha256_hex(secret);
    let spec = Spec::equal("userId", user, auth::MAX_TOKENS as u64);
    let now = crate::params::now_ms();
    let page = view.find(project, auth::tokens(), &spec, false)?;
    Ok(page.documents.iter().map(Token::from_document).find(|t| {
        t.expire > now
            && kinds.contains(&t.kind.as_str())
            && crate::secrets::constant_time_eq(&t.secret_sha256, &digest)
    }))
}

/// The unexpired token of one of `kinds` that `user` holds for `secret`: looked for in
/// `ctx`'s view, then in a linearizable one (it may have been made through another node a
/// moment ago); `user_invalid_token` if none. A wrong guess ends here, without a log entry.
pub(crate) async fn held_token(
    s: &AppState,
    ctx: &Ctx,
    user: &str,
    secret: &str,
    kinds: &[&str],
) -> Result<Token, ApiError> {
    if let Some(t) = token_in(&*ctx.view, &ctx.project, user, secret, kinds)? {
        return Ok(t);
    }
    let view = s.backend.read(Consistency::Linearizable).await?;
    token_in(&*view, &ctx.project, user, secret, kinds)?.ok_or_else(invalid_token)
}

/// The user `id`, else `user_not_found` (as Appwrite answers before it looks at the secret).
async fn existing_user(s: &AppState, ctx: &Ctx, id: &str) -> Result<User, ApiError> {
    if let Some(u) = crate::auth::load_user(&*ctx.view, &ctx.project, id)? {
        return Ok(u);
    }
    let view = s.backend.read(Consistency::Linearizable).await?;
    crate::auth::load_user(&*view, &ctx.project, id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::UserNotFound,
            "User with the requested ID could not be found.",
        )
    })
}

/// The signed-in user (the route's `account` scope lets only users through).
fn me(ctx: &Ctx) -> Result<&User, ApiError> {
    ctx.user().map(|(u, _)| u).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UserUnauthorized,
            "The current user is not authorized to perform the requested action.",
        )
    })
}

async fn create_verification(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, ACCOUNT, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::VERIFICATION, {
        let url = required(redirect_param(&s, &ctx, &req, "url").await?, "url")?;
        let u = me(&ctx)?;
        let owner = TokenOwner::Id(u.id.clone());
        let t = send(&s, &ctx, owner, MailKind::Verification, url, String::new()).await?;
        sent(&t, "")
    })
}

async fn update_verification(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, PUBLIC, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::REDEEM, {
        let user = user_id_param(&req)?;
        let secret = secret_param(&req)?;
        existing_user(&s, &ctx, &user).await?;
        let kinds = [auth::TOKEN_VERIFICATION];
        let token = held_token(&s, &ctx, &user, &secret, &kinds).await?;
        let op = AuthOp::RedeemToken {
            user: user.clone(),
            kind: token.kind.clone(),
            secret_sha256: token.secret_sha256.clone(),
            changes: vec![UserChange::EmailVerification(true)],
        };
        match propose(&s, &ctx, op).await? {
            Outcome::Token(t) => reply(StatusCode::OK, token_json(&t, "")),
            o => Err(unexpected(o)),
        }
    })
}

async fn create_recovery(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, SESSIONS_WRITE, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::RECOVERY, {
        let email = required(email_param(&req, "email")?, "email")?;
        let url = required(redirect_param(&s, &ctx, &req, "url").await?, "url")?;
        let owner = TokenOwner::Email {
            email,
            create: None,
        };
        let t = send(&s, &ctx, owner, MailKind::Recovery, url, String::new()).await?;
        sent(&t, "")
    })
}

async fn update_recovery(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, SESSIONS_WRITE, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::REDEEM, {
        let user = user_id_param(&req)?;
        let secret = secret_param(&req)?;
        let password = required(password_param(&req, "password")?, "password")?;
        let u = existing_user(&s, &ctx, &user).await?;
        let kinds = [auth::TOKEN_RECOVERY];
        let token = held_token(&s, &ctx, &user, &secret, &kinds).await?;
        let settings = ctx.view.auth_settings(&ctx.project)?;
        check_password(&s, &settings, &password, None, &u.password_history).await?;
        let credential = s.hasher.hash(password).await?;
        let op = AuthOp::RedeemToken {
            user: user.clone(),
            kind: token.kind.clone(),
            secret_sha256: token.secret_sha256.clone(),
            changes: vec![
                UserChange::Password(Some(credential)),
                UserChange::EmailVerification(true),
            ],
        };
        match propose(&s, &ctx, op).await? {
            Outcome::Token(t) => reply(StatusCode::OK, token_json(&t, "")),
            o => Err(unexpected(o)),
        }
    })
}

/// Magic URL and email code: for the user with that email, made (with `userId`) if there is
/// none, as Appwrite signs up on first sign-in.
async fn sign_in_token(s: &AppState, req: &Req, kind: MailKind) -> Reply {
    let (ctx, ()) = prepare_scoped(s, req, SESSIONS_WRITE, |_| Ok(())).await?;
    let rule = match kind {
        MailKind::MagicUrl => &abuse::MAGIC_URL,
        _ => &abuse::EMAIL_TOKEN,
    };
    limited!(s, req, &ctx, rule, {
        require_method(
            &ctx,
            match kind {
                MailKind::MagicUrl => "magic-url",
                _ => "email-otp",
            },
        )?;
        let id = user_id_param(req)?;
        let email = required(email_param(req, "email")?, "email")?;
        let url = match kind {
            MailKind::MagicUrl => redirect_param(s, &ctx, req, "url").await?,
            _ => None,
        };
        let url = match (kind, url, s.mail.public_url.as_deref()) {
            (MailKind::MagicUrl, None, None) => {
                return Err(invalid(
                    "Invalid `url` param: a URL is required (the node has no --public-url to default to)",
                ))
            }
            (MailKind::MagicUrl, None, Some(public)) => {
                format!("{}/auth/magic-url", public.trim_end_matches('/'))
            }
            (_, url, _) => url.unwrap_or_default(),
        };
        let phrase = match req.bool_opt("phrase")?.unwrap_or(false) {
            true => phrase(),
            false => String::new(),
        };
        let user = crate::users::new_user(id, email.clone(), String::new(), String::new(), None);
        let owner = TokenOwner::Email {
            email,
            create: Some(Box::new(user)),
        };
        let t = send(s, &ctx, owner, kind, url, phrase.clone()).await?;
        sent(&t, &phrase)
    })
}

async fn magic_url_token(State(s): State<AppState>, req: Req) -> Reply {
    sign_in_token(&s, &req, MailKind::MagicUrl).await
}

async fn email_token(State(s): State<AppState>, req: Req) -> Reply {
    sign_in_token(&s, &req, MailKind::EmailOtp).await
}
