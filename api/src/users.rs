//! The Users service (a key's: `users.read` / `users.write`), and what it shares with
//! Account: the user and session models, input checks, and making sessions.

use crate::auth::Ctx;
use crate::common::{enter_scoped, no_content, prepare_scoped, reply, unexpected, Reply};
use crate::error::ApiError;
use crate::params::{new_id, new_request_id, now_ms, Req};
use crate::secrets::{random_hex, sha256_hex, Claims, SessionValue};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post, put};
use axum::Router;
use model::auth::{self, Credential, Session, User};
use model::command::{AuthOp, UserChange};
use model::msg;
use model::query::{CmpOp, Filter, Spec};
use model::time::format_ms;
use model::{id, Envelope, Error, ErrorCode, Op, Outcome, Value};
use serde_json::{json, Value as Json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(list).post(create))
        // `POST /v1/users/{argon2,bcrypt,md5,phpass,scrypt,scrypt-modified,sha}`: users with
        // imported password hashes (a user may be named `argon2` too: GET and DELETE are hers).
        .route(
            "/v1/users/{user}",
            get(get_one).delete(delete).post(create_imported),
        )
        .route("/v1/users/{user}/name", patch(update_name))
        .route("/v1/users/{user}/email", patch(update_email))
        .route("/v1/users/{user}/phone", patch(update_phone))
        .route("/v1/users/{user}/password", patch(update_password))
        .route("/v1/users/{user}/status", patch(update_status))
        .route("/v1/users/{user}/labels", put(update_labels))
        .route(
            "/v1/users/{user}/verification",
            patch(update_email_verification),
        )
        .route(
            "/v1/users/{user}/verification/phone",
            patch(update_phone_verification),
        )
        .route("/v1/users/{user}/mfa", patch(update_mfa))
        .route("/v1/users/{user}/prefs", get(get_prefs).patch(update_prefs))
        .route(
            "/v1/users/{user}/sessions",
            get(list_sessions)
                .post(create_session)
                .delete(delete_sessions),
        )
        .route(
            "/v1/users/{user}/sessions/{session}",
            axum::routing::delete(delete_session),
        )
        .route("/v1/users/{user}/jwts", post(create_jwt))
        .route("/v1/users/{user}/tokens", post(create_token))
}

// ---- the models -------------------------------------------------------------------------

fn prefs_json(u: &User) -> Json {
    serde_json::from_str::<Json>(&u.prefs)
        .ok()
        .filter(Json::is_object)
        .unwrap_or_else(|| json!({}))
}

fn opt_time(t: Option<i64>) -> String {
    t.map(format_ms).unwrap_or_default()
}

/// Appwrite's `user` model. A key also sees the password hash and how it was made.
pub(crate) fn user_json(u: &User, with_hash: bool) -> Json {
    let mut j = json!({
        "$id": u.id,
        "$createdAt": format_ms(u.created_at),
        "$updatedAt": format_ms(u.updated_at),
        "name": u.name,
        "registration": format_ms(u.registration),
        "status": u.status,
        "labels": u.labels,
        "passwordUpdate": opt_time(u.password_update),
        "email": u.email,
        "phone": u.phone,
        "emailVerification": u.email_verification,
        "phoneVerification": u.phone_verification,
        "mfa": u.mfa,
        "prefs": prefs_json(u),
        "targets": [],
        "accessedAt": opt_time(u.accessed_at),
    });
    if with_hash {
        if let Some(c) = &u.password {
            j["password"] = json!(c.hash);
            j["hash"] = json!(c.algo);
            j["hashOptions"] =
                serde_json::from_str::<Json>(&c.options).unwrap_or_else(|_| json!({}));
        }
    }
    j
}

/// Appwrite's `session` model. `secret` is the session value, shown only to a key holder
/// that has just made the session; `current` says whether the caller uses it.
pub(crate) fn session_json(s: &Session, current: Option<&str>, secret: &str) -> Json {
    json!({
        "$id": s.id,
        "$createdAt": format_ms(s.created_at),
        "$updatedAt": format_ms(s.updated_at),
        "userId": s.user_id,
        "expire": format_ms(s.expire),
        "provider": s.provider,
        "providerUid": s.provider_uid,
        "providerAccessToken": "",
        "providerAccessTokenExpiry": "",
        "providerRefreshToken": "",
        "ip": s.ip,
        "osCode": "",
        "osName": "",
        "osVersion": "",
        "clientType": "",
        "clientCode": "",
        "clientName": "",
        "clientVersion": "",
        "clientEngine": "",
        "clientEngineVersion": "",
        "deviceName": "",
        "deviceBrand": "",
        "deviceModel": "",
        "countryCode": "--",
        "countryName": "Unknown",
        "current": current == Some(s.id.as_str()),
        "factors": s.factors,
        "secret": secret,
        "mfaUpdatedAt": opt_time(s.mfa_updated_at),
    })
}

// ---- input checks -----------------------------------------------------------------------

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(Error::invalid(m))
}

/// A new user's id: `unique()` asks for a generated one.
pub(crate) fn user_id_param(req: &Req) -> Result<String, ApiError> {
    let id = req.str_req("userId")?;
    if id == id::UNIQUE {
        return Ok(new_id());
    }
    id::check("userId", &id)?;
    Ok(id)
}

/// A valid email, lower-cased as Appwrite stores it.
pub(crate) fn email_param(req: &Req, name: &str) -> Result<Option<String>, ApiError> {
    let Some(e) = req.str_opt(name)? else {
        return Ok(None);
    };
    if e.len() > auth::EMAIL_MAX || !storage_like_email(&e) {
        return Err(invalid(msg!(
            "Invalid `{}` param: Value must be a valid email address",
            name
        )));
    }
    Ok(Some(e.to_lowercase()))
}

/// An email address: one `@`, a non-empty local part, a dotted domain, no spaces.
fn storage_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A phone number in E.164 form: `+` and up to 15 digits.
pub(crate) fn phone_param(req: &Req, name: &str) -> Result<Option<String>, ApiError> {
    let Some(p) = req.str_opt(name)? else {
        return Ok(None);
    };
    let digits = p.strip_prefix('+').unwrap_or("");
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(msg!("Invalid `{}` param: Phone number must start with a '+' can have a maximum of fifteen digits.", name)));
    }
    Ok(Some(p))
}

/// A new password, within Appwrite's length limits.
pub(crate) fn password_param(req: &Req, name: &str) -> Result<Option<String>, ApiError> {
    let Some(p) = req.str_opt(name)? else {
        return Ok(None);
    };
    let n = p.chars().count();
    if !(8..=auth::PASSWORD_MAX).contains(&n) {
        return Err(invalid(msg!(
            "Invalid `{}` param: Password must be between 8 and 256 characters long.",
            name
        )));
    }
    Ok(Some(p))
}

/// A name of at most 128 characters; `empty_ok`: may be empty (only `Users.updateName`).
pub(crate) fn name_param(
    req: &Req,
    name: &str,
    empty_ok: bool,
) -> Result<Option<String>, ApiError> {
    let Some(n) = req.str_opt(name)? else {
        return Ok(None);
    };
    let len = n.chars().count();
    if len > auth::NAME_MAX || (len == 0 && !empty_ok) {
        return Err(invalid(match empty_ok {
            true => msg!(
                "Invalid `{}` param: Value must be a valid string and no longer than 128 chars",
                name
            ),
            false => msg!(
                "Invalid `{}` param: Value must be a valid string and at least 1 chars and no longer than 128 chars",
                name
            ),
        }));
    }
    Ok(Some(n))
}

pub(crate) fn prefs_param(req: &Req) -> Result<String, ApiError> {
    let prefs = req
        .object_opt("prefs")?
        .ok_or_else(|| invalid("Param \"prefs\" is not optional."))?;
    let text = Json::Object(prefs).to_string();
    if text.len() > 65535 {
        return Err(invalid(
            "Invalid `prefs` param: Value must be a valid JSON object no longer than 65535 characters",
        ));
    }
    Ok(text)
}

// ---- shared actions ---------------------------------------------------------------------

/// Proposes an auth operation as the request's actor.
/// Proposes `op` for the caller; a user's auth event is logged with it (`AuthOp::Audited`).
pub(crate) async fn propose(s: &AppState, ctx: &Ctx, op: AuthOp) -> Result<Outcome, ApiError> {
    let op = AuthOp::Audited {
        op: Box::new(op),
        id: new_id(),
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
    };
    let env = Envelope::new(
        ctx.project.clone(),
        new_request_id(),
        ctx.actor.clone(),
        Op::Auth(op),
    );
    match s.backend.write(env).await? {
        Outcome::Failed(e) => Err(ApiError(e)),
        o => Ok(o),
    }
}

pub(crate) async fn propose_user(s: &AppState, ctx: &Ctx, op: AuthOp) -> Result<User, ApiError> {
    match propose(s, ctx, op).await? {
        Outcome::User(u) => Ok(u),
        o => Err(unexpected(o)),
    }
}

/// A session made for a user: its record and the value the client holds.
pub(crate) struct NewSession {
    pub session: Session,
    pub value: String,
}

/// How a session is made: by what, with what proof, for whom.
pub(crate) struct SessionRequest {
    pub user_id: String,
    pub provider: &'static str,
    pub provider_uid: String,
    pub factors: Vec<String>,
    pub proof: Option<String>,
    pub new_user: Option<User>,
    /// Made by using up a token (its secret's SHA-256) instead of a password.
    pub token: Option<String>,
    /// An imported password just verified, to be stored again as this argon2id credential.
    pub rehash: Option<Credential>,
}

/// A new session for `user_id` (not yet committed), and the value its holder is given.
pub(crate) fn new_session(
    req: &Req,
    user_id: &str,
    provider: &str,
    provider_uid: String,
    factors: Vec<String>,
) -> (Session, String) {
    // As Appwrite: 128 random bytes, 256 hex characters.
    let secret = random_hex(128);
    let now = now_ms();
    let session = Session {
        id: new_id(),
        created_at: now,
        updated_at: now,
        user_id: user_id.to_string(),
        secret_sha256: sha256_hex(&secret),
        provider: provider.into(),
        provider_uid,
        expire: now.saturating_add(auth::SESSION_TTL_MS),
        ip: req.ip(),
        user_agent: crate::auth::user_agent(req),
        factors,
        mfa_updated_at: None,
    };
    let value = SessionValue {
        id: user_id.to_string(),
        secret,
    }
    .encode();
    (session, value)
}

pub(crate) async fn make_session(
    s: &AppState,
    ctx: &Ctx,
    req: &Req,
    r: SessionRequest,
) -> Result<NewSession, ApiError> {
    let (session, value) = new_session(req, &r.user_id, r.provider, r.provider_uid, r.factors);
    let op = match r.token {
        Some(secret_sha256) => AuthOp::TokenSession {
            secret_sha256,
            session: Box::new(session),
        },
        None => AuthOp::CreateSession {
            session: Box::new(session),
            proof: r.proof,
            max: auth::MAX_SESSIONS as u32,
            user: r.new_user.map(Box::new),
            rehash: r.rehash.map(Box::new),
        },
    };
    match propose(s, ctx, op).await? {
        Outcome::Session(session) => Ok(NewSession { session, value }),
        o => Err(unexpected(o)),
    }
}

/// The project's secret (JWTs are signed with it, emailed secrets derived from it), made
/// (once, cluster-wide) the first time one is needed.
pub(crate) async fn project_secret(s: &AppState, ctx: &Ctx) -> Result<String, ApiError> {
    if let Some(secret) = ctx.view.jwt_secret(&ctx.project)? {
        return Ok(secret);
    }
    propose(
        s,
        ctx,
        AuthOp::InitJwtSecret {
            secret: random_hex(32),
        },
    )
    .await?;
    let view = s
        .backend
        .read(model::reader::Consistency::Linearizable)
        .await?;
    view.jwt_secret(&ctx.project)?
        .ok_or_else(|| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))
}

/// A JWT for `session` of `user`, valid `duration` seconds (at most an hour).
pub(crate) async fn make_jwt(
    s: &AppState,
    ctx: &Ctx,
    user: &str,
    session: &str,
    req: &Req,
) -> Reply {
    let duration = req.uint_opt("duration")?.unwrap_or(900);
    if duration > 3600 {
        return Err(invalid(
            "Invalid `duration` param: Value must be a valid range between 0 and 3,600",
        ));
    }
    let secret = project_secret(s, ctx).await?;
    let now = now_ms() / 1000;
    let jwt = crate::secrets::sign_jwt(
        &secret,
        &Claims {
            user_id: user.to_string(),
            session_id: session.to_string(),
            exp: now + duration as i64,
        },
    )?;
    reply(StatusCode::CREATED, json!({ "jwt": jwt }))
}

/// A session's answer: 201, the session, and the cookies a browser keeps it in.
pub(crate) fn session_reply(ctx: &Ctx, req: &Req, made: &NewSession) -> Reply {
    let secret = if ctx.is_key() {
        made.value.as_str()
    } else {
        ""
    };
    let body = session_json(&made.session, Some(&made.session.id), secret);
    let mut headers = HeaderMap::new();
    if !ctx.is_key() {
        set_session_cookies(
            &mut headers,
            &ctx.project,
            &made.value,
            made.session.expire,
            req,
        );
    }
    Ok((StatusCode::CREATED, headers, axum::Json(body)).into_response())
}

fn cookie_date(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

/// Appwrite's two cookies (`a_session_<p>` for browsers that keep `SameSite=None; Secure`
/// cookies, `_legacy` for those that do not), the value URL-encoded, and, for a client whose
/// page is not on the API's own domain (cookies would not reach it), the same value in
/// `X-Fallback-Cookies`.
pub(crate) fn set_session_cookies(
    headers: &mut HeaderMap,
    project: &str,
    value: &str,
    expire: i64,
    req: &Req,
) {
    let expires = cookie_date(expire);
    let name = format!("a_session_{}", project.to_ascii_lowercase());
    let encoded = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
    let cookies = [
        format!("{name}_legacy={encoded}; expires={expires}; path=/; httponly"),
        format!("{name}={encoded}; expires={expires}; path=/; secure; httponly; samesite=None"),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            headers.append(axum::http::header::SET_COOKIE, v);
        }
    }
    if !same_site(req) {
        let fallback = json!({ format!("a_session_{project}"): value }).to_string();
        if let Ok(v) = HeaderValue::from_str(&fallback) {
            headers.insert("x-fallback-cookies", v);
        }
    }
}

/// Clears the session cookies (a signed-out or blocked session), and the fallback copy.
pub(crate) fn clear_session_cookies(headers: &mut HeaderMap, project: &str, req: &Req) {
    let name = format!("a_session_{}", project.to_ascii_lowercase());
    for c in [
        format!("{name}_legacy=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/; httponly"),
        format!("{name}=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/; secure; httponly; samesite=None"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            headers.append(axum::http::header::SET_COOKIE, v);
        }
    }
    if !same_site(req) {
        headers.insert("x-fallback-cookies", HeaderValue::from_static("[]"));
    }
}

/// Appwrite's domain verification: the page (`Origin`, else `Referer`) is on the host the API
/// answers on, a real domain (not `localhost`, not an IP address), so its cookies reach us.
fn same_site(req: &Req) -> bool {
    let host = |v: &str| {
        let v = v.split("://").nth(1).unwrap_or(v);
        v.split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let page = ["origin", "referer"]
        .iter()
        .find_map(|h| req.headers.get(*h).and_then(|v| v.to_str().ok()));
    let own = req.headers.get("host").and_then(|v| v.to_str().ok());
    match (page, own) {
        (Some(p), Some(h)) => {
            let (p, h) = (host(p), host(h));
            p == h && !p.is_empty() && p != "localhost" && p.parse::<std::net::IpAddr>().is_err()
        }
        _ => false,
    }
}

/// The user with `email`, as the cluster has it now.
pub(crate) async fn user_by_email(
    s: &AppState,
    ctx: &Ctx,
    email: &str,
) -> Result<Option<User>, ApiError> {
    let view = s
        .backend
        .read(model::reader::Consistency::Linearizable)
        .await?;
    let spec = Spec::equal("email", email, 1);
    let page = view.find(&ctx.project, auth::users(), &spec, false)?;
    Ok(page.documents.first().map(User::from_document))
}

// ---- routes -----------------------------------------------------------------------------

const READ: &[&str] = &["users.read"];
const WRITE: &[&str] = &["users.write"];

fn user_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::UserNotFound,
        "User with the requested ID could not be found.",
    )
}

fn existing(ctx: &Ctx, id: &str) -> Result<User, ApiError> {
    crate::auth::load_user(&*ctx.view, &ctx.project, id)?.ok_or_else(user_not_found)
}

/// What `Users.list` may filter and order by (Appwrite's list).
const QUERYABLE: &[&str] = &[
    "name",
    "email",
    "phone",
    "status",
    "passwordUpdate",
    "registration",
    "emailVerification",
    "phoneVerification",
    "labels",
];

/// A service list's queries (`Users.list`, `Teams.list`, memberships): filters and orders on
/// the `queryable` attributes of `coll` only, validated as a parameter as Appwrite validates
/// them, and, with `searchable`, the `search` parameter through the collection's fulltext
/// `search` attribute.
pub(crate) fn list_spec(
    req: &Req,
    coll: &model::Collection,
    queryable: &[&str],
    searchable: bool,
) -> Result<Spec, ApiError> {
    let mut spec = crate::common::parse_spec(req)?;
    let mut visible = coll.clone();
    visible
        .attributes
        .retain(|a| queryable.contains(&a.key.as_str()));
    spec.validate(&visible)
        .map_err(|e| invalid(msg!("Invalid `queries` param: {}", e.message.text())))?;
    if !searchable {
        return Ok(spec);
    }
    if let Some(term) = req.str_opt("search")?.filter(|t| !t.trim().is_empty()) {
        spec.filters.push(Filter::Cmp {
            attr: "search".into(),
            op: CmpOp::Search,
            values: vec![Value::Str(term)],
        });
    }
    Ok(spec)
}

async fn list(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    let spec = list_spec(&req, auth::users(), QUERYABLE, true)?;
    let want_total = req.want_total()?;
    let page = ctx
        .view
        .find(&ctx.project, auth::users(), &spec, want_total)?;
    let users: Vec<Json> = page
        .documents
        .iter()
        .map(|d| user_json(&User::from_document(d), true))
        .collect();
    let total = if want_total { page.total } else { 0 };
    reply(StatusCode::OK, json!({ "total": total, "users": users }))
}

async fn create(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    let id = user_id_param(&req)?;
    let email = email_param(&req, "email")?;
    let phone = phone_param(&req, "phone")?;
    let password = password_param(&req, "password")?;
    let name = name_param(&req, "name", false)?.unwrap_or_default();
    let password = match password {
        Some(p) => {
            let personal = crate::policy::Personal {
                id: &id,
                email: email.as_deref().unwrap_or(""),
                name: &name,
                phone: phone.as_deref().unwrap_or(""),
            };
            let settings = ctx.view.auth_settings(&ctx.project)?;
            crate::policy::check_password(&s, &settings, &p, Some(personal), &[]).await?;
            Some(s.hasher.hash(p).await?)
        }
        None => None,
    };
    let user = new_user(
        id,
        email.unwrap_or_default(),
        phone.unwrap_or_default(),
        name,
        password,
    );
    let u = propose_user(
        &s,
        &ctx,
        AuthOp::CreateUser {
            user: Box::new(user),
        },
    )
    .await?;
    reply(StatusCode::CREATED, user_json(&u, true))
}

/// A user as a sign-up or `Users.create` makes it (apply stamps its times).
pub(crate) fn new_user(
    id: String,
    email: String,
    phone: String,
    name: String,
    password: Option<Credential>,
) -> User {
    User {
        id,
        created_at: 0,
        updated_at: 0,
        name,
        email,
        phone,
        password,
        registration: 0,
        status: true,
        labels: Vec::new(),
        password_update: None,
        email_verification: false,
        phone_verification: false,
        mfa: false,
        prefs: "{}".into(),
        accessed_at: None,
        totp: None,
        recovery: None,
        password_history: Vec::new(),
    }
}

async fn get_one(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    let u = existing(&ctx, &req.path("user"))?;
    reply(StatusCode::OK, user_json(&u, true))
}

async fn delete(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    propose(
        &s,
        &ctx,
        AuthOp::DeleteUser {
            id: req.path("user"),
        },
    )
    .await?;
    no_content()
}

/// Applies `changes` to the user in the path and answers the user.
async fn change(s: &AppState, req: &Req, changes: Vec<UserChange>) -> Reply {
    let (ctx, ()) = prepare_scoped(s, req, WRITE, |_| Ok(())).await?;
    let op = AuthOp::UpdateUser {
        id: req.path("user"),
        changes,
        proof: None,
    };
    let u = propose_user(s, &ctx, op).await?;
    reply(StatusCode::OK, user_json(&u, true))
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| invalid(msg!("Param \"{}\" is not optional.", name)))
}

async fn update_name(State(s): State<AppState>, req: Req) -> Reply {
    let name = required(name_param(&req, "name", true)?, "name")?;
    change(&s, &req, vec![UserChange::Name(name)]).await
}

/// An empty value removes the user's email or phone (Appwrite's Users service allows it).
fn cleared(req: &Req, name: &str) -> Result<bool, ApiError> {
    Ok(req.str_opt(name)?.is_some_and(|v| v.is_empty()))
}

async fn update_email(State(s): State<AppState>, req: Req) -> Reply {
    let email = match cleared(&req, "email")? {
        true => String::new(),
        false => required(email_param(&req, "email")?, "email")?,
    };
    change(&s, &req, vec![UserChange::Email(email)]).await
}

async fn update_phone(State(s): State<AppState>, req: Req) -> Reply {
    let phone = match cleared(&req, "number")? {
        true => String::new(),
        false => required(phone_param(&req, "number")?, "number")?,
    };
    change(&s, &req, vec![UserChange::Phone(phone)]).await
}

async fn update_password(State(s): State<AppState>, req: Req) -> Reply {
    let password = required(password_param(&req, "password")?, "password")?;
    let (ctx, u) = prepare_scoped(&s, &req, WRITE, |ctx| existing(ctx, &req.path("user"))).await?;
    crate::policy::check_user_password(&s, &ctx, &password, &u).await?;
    let c = s.hasher.hash(password).await?;
    change(&s, &req, vec![UserChange::Password(Some(c))]).await
}

async fn update_status(State(s): State<AppState>, req: Req) -> Reply {
    let status = req.bool_req("status")?;
    change(&s, &req, vec![UserChange::Status(status)]).await
}

async fn update_labels(State(s): State<AppState>, req: Req) -> Reply {
    let labels = required(req.strings_opt("labels")?, "labels")?;
    if labels.len() > 1000 {
        return Err(invalid(
            "Invalid `labels` param: Value must a valid array no longer than 1000 items",
        ));
    }
    for l in &labels {
        if l.is_empty() || l.len() > 36 || !l.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid("Invalid `labels` param: Value must a valid array and Value must be a valid string and at least 1 chars and no longer than 36 chars and only contain alphanumeric characters"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let labels: Vec<String> = labels
        .into_iter()
        .filter(|l| seen.insert(l.clone()))
        .collect();
    change(&s, &req, vec![UserChange::Labels(labels)]).await
}

async fn update_email_verification(State(s): State<AppState>, req: Req) -> Reply {
    let v = req.bool_req("emailVerification")?;
    change(&s, &req, vec![UserChange::EmailVerification(v)]).await
}

async fn update_phone_verification(State(s): State<AppState>, req: Req) -> Reply {
    let v = req.bool_req("phoneVerification")?;
    change(&s, &req, vec![UserChange::PhoneVerification(v)]).await
}

async fn update_mfa(State(s): State<AppState>, req: Req) -> Reply {
    let v = req.bool_req("mfa")?;
    change(&s, &req, vec![UserChange::Mfa(v)]).await
}

async fn get_prefs(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    let u = existing(&ctx, &req.path("user"))?;
    reply(StatusCode::OK, prefs_json(&u))
}

async fn update_prefs(State(s): State<AppState>, req: Req) -> Reply {
    let prefs = prefs_param(&req)?;
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    let op = AuthOp::UpdateUser {
        id: req.path("user"),
        changes: vec![UserChange::Prefs(prefs)],
        proof: None,
    };
    let u = propose_user(&s, &ctx, op).await?;
    reply(StatusCode::OK, prefs_json(&u))
}

/// A user's sessions, oldest first.
pub(crate) fn sessions_of(ctx: &Ctx, user: &str) -> Result<Vec<Session>, ApiError> {
    let spec = Spec::equal("userId", user, 1000);
    let page = ctx
        .view
        .find(&ctx.project, auth::sessions(), &spec, false)?;
    Ok(page.documents.iter().map(Session::from_document).collect())
}

/// A session list in Appwrite's shape.
pub(crate) fn session_list(sessions: &[Session], current: Option<&str>) -> Json {
    json!({
        "total": sessions.len(),
        "sessions": sessions.iter().map(|s| session_json(s, current, "")).collect::<Vec<_>>(),
    })
}

async fn list_sessions(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, &["users.read", "sessions.read"]).await?;
    let id = req.path("user");
    existing(&ctx, &id)?;
    let now = now_ms();
    let live: Vec<Session> = sessions_of(&ctx, &id)?
        .into_iter()
        .filter(|s| s.expire > now)
        .collect();
    reply(StatusCode::OK, session_list(&live, None))
}

async fn create_session(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, u) = prepare_scoped(&s, &req, &["users.write", "sessions.write"], |ctx| {
        existing(ctx, &req.path("user"))
    })
    .await?;
    let made = make_session(
        &s,
        &ctx,
        &req,
        SessionRequest {
            user_id: u.id.clone(),
            provider: "server",
            provider_uid: String::new(),
            factors: vec!["server".into()],
            proof: None,
            new_user: None,
            token: None,
            rehash: None,
        },
    )
    .await?;
    session_reply(&ctx, &req, &made)
}

async fn delete_sessions(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) =
        prepare_scoped(&s, &req, &["users.write", "sessions.write"], |_| Ok(())).await?;
    propose(
        &s,
        &ctx,
        AuthOp::DeleteSessions {
            user: req.path("user"),
        },
    )
    .await?;
    no_content()
}

async fn delete_session(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) =
        prepare_scoped(&s, &req, &["users.write", "sessions.write"], |_| Ok(())).await?;
    let op = AuthOp::DeleteSession {
        user: req.path("user"),
        id: req.path("session"),
    };
    propose(&s, &ctx, op).await?;
    no_content()
}

async fn create_jwt(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, WRITE).await?;
    let user = existing(&ctx, &req.path("user"))?;
    let now = now_ms();
    let sessions: Vec<Session> = sessions_of(&ctx, &user.id)?
        .into_iter()
        .filter(|s| s.expire > now)
        .collect();
    // No session: a JWT that stands for the user alone; `recent`: the newest session.
    let not_found = || {
        ApiError::new(
            ErrorCode::UserSessionNotFound,
            "The current user session could not be found.",
        )
    };
    let session = match req.str_opt("sessionId")?.unwrap_or_default().as_str() {
        "" => String::new(),
        "recent" => sessions.last().ok_or_else(not_found)?.id.clone(),
        id => sessions
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(not_found)?
            .id
            .clone(),
    };
    make_jwt(&s, &ctx, &user.id, &session, &req).await
}

/// Appwrite's `token` model; the secret is shown to a key only.
pub(crate) fn token_json(t: &model::auth::Token, secret: &str) -> Json {
    json!({
        "$id": t.id,
        "$createdAt": format_ms(t.created_at),
        "userId": t.user_id,
        "secret": secret,
        "expire": format_ms(t.expire),
        "phrase": "",
    })
}

/// A one-time token (`length` hex characters, valid `expire` seconds) that
/// `Account.createSession` exchanges for a session.
async fn create_token(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, u) = prepare_scoped(&s, &req, WRITE, |ctx| existing(ctx, &req.path("user"))).await?;
    let length = req.uint_opt("length")?.unwrap_or(6);
    if !(4..=128).contains(&length) {
        return Err(invalid(
            "Invalid `length` param: Value must be a valid range between 4 and 128",
        ));
    }
    let expire = req.uint_opt("expire")?.unwrap_or(900);
    if !(60..=31_536_000).contains(&expire) {
        return Err(invalid(
            "Invalid `expire` param: Value must be a valid range between 60 and 31,536,000",
        ));
    }
    let mut secret = random_hex(length.div_ceil(2) as usize);
    secret.truncate(length as usize);
    let token = model::auth::Token {
        id: new_id(),
        created_at: 0,
        user_id: u.id.clone(),
        secret_sha256: sha256_hex(&secret),
        kind: "generic".into(),
        expire: now_ms().saturating_add(expire as i64 * 1000),
    };
    match propose(
        &s,
        &ctx,
        AuthOp::CreateToken {
            token: Box::new(token),
        },
    )
    .await?
    {
        Outcome::Token(t) => reply(StatusCode::CREATED, token_json(&t, &secret)),
        o => Err(unexpected(o)),
    }
}

/// `Users.create{Argon2,Bcrypt,MD5,PHPass,Scrypt,ScryptModified,SHA}User`: a user whose
/// password is a hash made elsewhere, verified as it was made at the first sign-in and then
/// stored again as argon2id.
async fn create_imported(State(s): State<AppState>, req: Req) -> Reply {
    let algo = req.path("user");
    if ![
        "argon2",
        "bcrypt",
        "md5",
        "phpass",
        "scrypt",
        "scrypt-modified",
        "sha",
    ]
    .contains(&algo.as_str())
    {
        return Err(crate::error::not_found().await);
    }
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    let id = user_id_param(&req)?;
    let email = required(email_param(&req, "email")?, "email")?;
    let hash = req.str_req("password")?;
    if hash.is_empty() || hash.len() > 16384 {
        return Err(invalid(
            "Invalid `password` param: Value must be a valid password hash",
        ));
    }
    let name = name_param(&req, "name", false)?.unwrap_or_default();
    let bad = |what: &str| {
        invalid(msg!(
            "Invalid `{}` param: Value is not valid for this hash",
            what
        ))
    };
    let (stored, options) = match algo.as_str() {
        "argon2" => {
            let parsed =
                argon2::password_hash::PasswordHash::new(&hash).map_err(|_| bad("password"))?;
            if !crate::imported::argon2_bounded(&hash) {
                return Err(bad("password"));
            }
            let param = |k: &str| parsed.params.get_decimal(k).unwrap_or(0);
            (
                "argon2",
                json!({"type": "argon2", "memoryCost": param("m"), "timeCost": param("t"), "threads": param("p")}),
            )
        }
        "bcrypt" => {
            if !hash.starts_with("$2") || !crate::imported::bcrypt_bounded(&hash) {
                return Err(bad("password"));
            }
            ("bcrypt", json!({"type": "bcrypt"}))
        }
        "md5" => ("md5", json!({"type": "md5"})),
        "phpass" => ("phpass", json!({"type": "phpass"})),
        "sha" => {
            let version = req
                .str_opt("passwordVersion")?
                .unwrap_or_else(|| "sha256".into());
            if !crate::imported::SHA_VERSIONS.contains(&version.as_str()) {
                return Err(invalid(msg!(
                    "Invalid `passwordVersion` param: Value must be one of ({})",
                    crate::imported::SHA_VERSIONS.join(", ")
                )));
            }
            ("sha", json!({"type": "sha", "version": version}))
        }
        "scrypt" => {
            let salt = req.str_req("passwordSalt")?;
            let cpu = req.uint_opt("passwordCpu")?.unwrap_or(8);
            let memory = req.uint_opt("passwordMemory")?.unwrap_or(14);
            let parallel = req.uint_opt("passwordParallel")?.unwrap_or(1);
            let length = req.uint_opt("passwordLength")?.unwrap_or(64);
            let bounded = u32::try_from(memory)
                .ok()
                .zip(u32::try_from(parallel).ok())
                .is_some_and(|(r, p)| crate::imported::scrypt_bounded(cpu, r, p, length as usize));
            if !bounded {
                return Err(bad("passwordCpu"));
            }
            (
                "scrypt",
                json!({"type": "scrypt", "salt": salt, "costCpu": cpu, "costMemory": memory, "costParallel": parallel, "length": length}),
            )
        }
        _ => {
            let salt = req.str_req("passwordSalt")?;
            let separator = req.str_req("passwordSaltSeparator")?;
            let signer = req.str_req("passwordSignerKey")?;
            (
                "scryptMod",
                json!({"type": "scryptMod", "salt": salt, "saltSeparator": separator, "signerKey": signer}),
            )
        }
    };
    let credential = Credential {
        algo: stored.into(),
        hash,
        options: options.to_string(),
    };
    let user = new_user(id, email, String::new(), name, Some(credential));
    let u = propose_user(
        &s,
        &ctx,
        AuthOp::CreateUser {
            user: Box::new(user),
        },
    )
    .await?;
    reply(StatusCode::CREATED, user_json(&u, true))
}
