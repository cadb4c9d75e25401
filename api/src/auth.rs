//! Who is calling: the project (`X-Appwrite-Project` or `?project=`), then an API key
//! (`X-Appwrite-Key`) with scopes, or an end user through a session (cookie
//! `a_session_<project>`, its `_legacy` twin, `X-Appwrite-Session`, or `X-Fallback-Cookies`)
//! or a JWT (`X-Appwrite-JWT`), or else a guest. Users and guests hold the scopes of their
//! role and the roles that permissions name.

use crate::error::ApiError;
use crate::params::Req;
use crate::secrets::{verify_jwt, SessionValue};
use crate::AppState;
use axum::http::HeaderMap;
use model::auth::{self, Session, User};
use model::msg;
use model::query::Spec;
use model::reader::StateReader;
use model::{Actor, Error, ErrorCode};
use std::sync::Arc;

pub use crate::secrets::sha256_hex;

/// Who the caller is.
#[derive(Clone)]
pub enum Who {
    /// An API key (or a route that takes the operator's root key): permissions do not bind.
    Key,
    /// An end user, through `session` (or a JWT made from it).
    User {
        user: Box<User>,
        session: Box<Session>,
        jwt: bool,
        /// The roles the user holds (its teams' included), as this view has them.
        roles: Vec<String>,
    },
    Guest,
}

/// An authorised request's context: the project, who is acting, and the view of the state
/// the request was authorised against (and reads through — one point in time).
pub struct Ctx {
    pub project: String,
    pub actor: Actor,
    pub view: Arc<dyn StateReader>,
    pub who: Who,
    /// The request named a session or a JWT that this view does not know: a view that lags
    /// behind may not have it yet, so a refusal or a guest's write must be decided again on a
    /// linearizable one.
    pub unresolved: bool,
    /// Where the request came from (for the users' audit log).
    pub ip: String,
    pub user_agent: String,
}

/// The client's user agent, as Appwrite takes it (a server SDK forwards its caller's).
pub(crate) fn user_agent(req: &Req) -> String {
    ["x-forwarded-user-agent", "user-agent"]
        .iter()
        .find_map(|h| req.headers.get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or("")
        .chars()
        .take(1024)
        .collect()
}

impl Ctx {
    /// The roles permissions are checked against; `None` for a key, which they do not bind.
    pub fn roles(&self) -> Option<Vec<String>> {
        match &self.who {
            Who::Key => None,
            Who::User { roles, .. } => Some(roles.clone()),
            Who::Guest => Some(auth::roles(None, &[])),
        }
    }

    /// The same request's context over another view (a fresher one, for a write's answer or
    /// the rows a bulk change picks).
    pub fn over(&self, view: Arc<dyn StateReader>) -> Ctx {
        Ctx {
            project: self.project.clone(),
            actor: self.actor.clone(),
            view,
            who: self.who.clone(),
            unresolved: false,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }

    pub fn is_key(&self) -> bool {
        matches!(self.who, Who::Key)
    }

    /// The signed-in user and their session, if any.
    pub fn user(&self) -> Option<(&User, &Session)> {
        match &self.who {
            Who::User { user, session, .. } => Some((user, session)),
            _ => None,
        }
    }
}

fn header<'a>(req: &'a Req, name: &str) -> Option<&'a str> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// Whether the request carries any credential: a key, a session or a JWT.
pub(crate) fn has_credentials(req: &Req) -> bool {
    has_credentials_in(&req.headers)
}

pub(crate) fn has_credentials_in(headers: &HeaderMap) -> bool {
    let present = |name: &str| headers.get(name).is_some_and(|v| !v.is_empty());
    [
        "x-appwrite-key",
        "x-appwrite-jwt",
        "x-appwrite-session",
        "x-fallback-cookies",
    ]
    .iter()
    .any(|h| present(h))
        || headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .any(|c| c.to_str().is_ok_and(|c| c.contains("a_session_")))
}

fn scope_list(scopes: &[&str]) -> String {
    serde_json::to_string(scopes).unwrap_or_default()
}

/// The scopes of a guest (Appwrite's `guests` role).
pub const GUEST_SCOPES: &[&str] = &[
    "sessions.write",
    "documents.read",
    "documents.write",
    "rows.read",
    "rows.write",
    "files.read",
    "files.write",
    "locale.read",
    "avatars.read",
    "health.read",
    "public",
];

/// The scopes of a signed-in user (Appwrite's `users` role).
pub const USER_SCOPES: &[&str] = &[
    "account",
    "sessions.write",
    "teams.read",
    "teams.write",
    "documents.read",
    "documents.write",
    "rows.read",
    "rows.write",
    "files.read",
    "files.write",
    "locale.read",
    "avatars.read",
    "health.read",
    "targets.read",
    "targets.write",
    "public",
];

/// Would a guest be refused every one of `scopes`? (Decided without any state.)
pub(crate) fn guest_refused(scopes: &[&str]) -> bool {
    !scopes.iter().any(|s| GUEST_SCOPES.contains(s))
}

/// The project a request names: `?project=` in its URL or `X-Appwrite-Project`. Every place
/// that needs it (the CORS check, authorisation) reads it with this one function, and a
/// request naming two different projects is refused (`Err`), so no check can be made against
/// one project while the request acts in another. A `project` in a JSON body names nothing.
pub(crate) fn project_from(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, ()> {
    let mut found: Option<String> = None;
    let mut add = |p: String| match &found {
        _ if p.is_empty() => Ok(()),
        Some(f) if *f != p => Err(()),
        _ => {
            found = Some(p);
            Ok(())
        }
    };
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == "project" {
                add(v.into_owned())?;
            }
        }
    }
    for h in headers.get_all("x-appwrite-project") {
        add(h.to_str().map_err(|_| ())?.to_string())?;
    }
    Ok(found)
}

fn project_of(req: &Req) -> Result<Option<String>, ApiError> {
    project_from(&req.headers, req.query.as_deref()).map_err(|()| {
        ApiError(Error::invalid(
            "The request names more than one project (`project` parameter and X-Appwrite-Project header).",
        ))
    })
}

/// The session value a request carries, from the first place that has one.
pub(crate) fn session_value(headers: &HeaderMap, project: &str) -> Option<String> {
    let name = format!("a_session_{project}");
    let legacy = format!("{name}_legacy");
    let mut from_cookie = None;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
    };
    for c in headers.get_all(axum::http::header::COOKIE) {
        let Ok(c) = c.to_str() else { continue };
        for pair in c.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            // Values are URL-encoded in the cookie (base64 has `=`, `+`, `/`).
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            if k == name && !v.is_empty() {
                return Some(v);
            }
            if k == legacy && from_cookie.is_none() && !v.is_empty() {
                from_cookie = Some(v);
            }
        }
    }
    from_cookie
        .or_else(|| header("x-appwrite-session").map(str::to_string))
        .or_else(|| {
            let fallback: serde_json::Value =
                serde_json::from_str(header("x-fallback-cookies")?).ok()?;
            fallback.get(&name)?.as_str().map(str::to_string)
        })
        .filter(|v| !v.is_empty())
}

/// The session whose secret hashes to `sha`, if it belongs to `user` and has not expired.
pub(crate) fn session_by_secret(
    view: &dyn StateReader,
    project: &str,
    user: &str,
    sha: &str,
    now: i64,
) -> Result<Option<Session>, ApiError> {
    let spec = Spec::equal("secret", sha, 1);
    let page = view.find(project, auth::sessions(), &spec, false)?;
    Ok(page
        .documents
        .first()
        .map(Session::from_document)
        .filter(|s| s.user_id == user && s.expire > now))
}

/// A session by id, if it belongs to `user` and has not expired.
fn session_by_id(
    view: &dyn StateReader,
    project: &str,
    user: &str,
    id: &str,
    now: i64,
) -> Result<Option<Session>, ApiError> {
    Ok(view
        .document(project, auth::sessions(), id)?
        .map(|d| Session::from_document(&d))
        .filter(|s| s.user_id == user && s.expire > now))
}

/// A user's roles: its own, and those of its confirmed memberships.
fn user_roles(view: &dyn StateReader, project: &str, user: &User) -> Result<Vec<String>, ApiError> {
    Ok(auth::roles(Some(user), &teams_of(view, project, user)?))
}

/// What a user's confirmed memberships add to its roles (it holds at most
/// `MAX_MEMBERSHIPS`).
fn teams_of(
    view: &dyn StateReader,
    project: &str,
    user: &User,
) -> Result<Vec<auth::TeamRoles>, ApiError> {
    let spec = Spec::equal("userId", &user.id, auth::MAX_MEMBERSHIPS as u64);
    Ok(view
        .find(project, auth::memberships(), &spec, false)?
        .documents
        .iter()
        .filter_map(|d| auth::Membership::from_document(d).team_roles())
        .collect())
}

/// The claims of a JWT of `project`, or `user_jwt_invalid`. A project that never made a JWT
/// has no secret: nothing verifies (an empty key would let anyone sign one).
fn jwt_claims(
    view: &dyn StateReader,
    project: &str,
    token: &str,
) -> Result<crate::secrets::Claims, ApiError> {
    match view.jwt_secret(project)? {
        Some(secret) if !secret.is_empty() => verify_jwt(&secret, token),
        _ => Err("Signature failed"),
    }
    .map_err(|why| {
        ApiError::new(
            ErrorCode::UserJwtInvalid,
            msg!("Failed to verify JWT. Invalid token: {}", why),
        )
    })
}

/// The live session a JWT stands on (a JWT made without a session names none: its user
/// alone).
fn jwt_session(
    view: &dyn StateReader,
    project: &str,
    claims: &crate::secrets::Claims,
    now: i64,
) -> Result<Option<Session>, ApiError> {
    match claims.session_id.as_str() {
        "" => Ok(Some(Session::unbound(&claims.user_id))),
        id => session_by_id(view, project, &claims.user_id, id, now),
    }
}

/// A signed-in user as a realtime connection holds them: the session (or JWT) they came
/// with, until when it holds, and the teams their roles come from.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub user: User,
    /// The session's id (empty for a JWT made without one).
    pub session: String,
    /// When the session (or the JWT) ends, in ms.
    pub expire: i64,
    /// The JWT's own end (`i64::MAX` for a session): a session extended does not extend it.
    pub cap: i64,
    /// Through a JWT (which, as on the HTTP routes, is not held to the factors rule).
    pub jwt: bool,
    /// The factors the session was verified with.
    pub factors: usize,
    pub teams: Vec<auth::TeamRoles>,
    /// The applied index of the view this was read from: later changes to the user, its
    /// sessions and memberships still apply to it.
    pub at: u64,
}

impl Identity {
    pub(crate) fn roles(&self) -> Vec<String> {
        auth::roles(Some(&self.user), &self.teams)
    }
}

/// Who a realtime connection comes as: a JWT (from its URL, or the header), else a session
/// (cookie, fallback cookie or header). `Ok(None)`: a guest — no credential, or one naming no
/// live session, a blocked user, or a session still short of factors. `Err`: a JWT that
/// does not verify.
pub(crate) fn identify(
    view: &dyn StateReader,
    headers: &HeaderMap,
    jwt: Option<&str>,
    project: &str,
) -> Result<Option<Identity>, ApiError> {
    let now = crate::params::now_ms();
    let jwt = jwt.or_else(|| {
        headers
            .get("x-appwrite-jwt")
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
    });
    let Some(token) = jwt else {
        return match session_value(headers, project) {
            Some(v) => identify_session(view, project, &v),
            None => Ok(None),
        };
    };
    let claims = jwt_claims(view, project, token)?;
    let session = jwt_session(view, project, &claims, now)?;
    let (Some(user), Some(session)) = (load_user(view, project, &claims.user_id)?, session) else {
        return Ok(None);
    };
    if !user.status {
        return Ok(None);
    }
    let cap = claims.exp.saturating_mul(1000);
    Ok(Some(Identity {
        teams: teams_of(view, project, &user)?,
        user,
        expire: session.expire.min(cap),
        cap,
        jwt: true,
        factors: session.factors.len(),
        session: session.id,
        at: view.applied_index(),
    }))
}

/// The user a session value (as the cookie holds it) names, if it is live and complete.
pub(crate) fn identify_session(
    view: &dyn StateReader,
    project: &str,
    value: &str,
) -> Result<Option<Identity>, ApiError> {
    let Some(v) = SessionValue::decode(value) else {
        return Ok(None);
    };
    let now = crate::params::now_ms();
    let sha = sha256_hex(&v.secret);
    let Some(session) = session_by_secret(view, project, &v.id, &sha, now)? else {
        return Ok(None);
    };
    let Some(user) = load_user(view, project, &v.id)? else {
        return Ok(None);
    };
    if !user.status || session.factors.len() < user.factors_required() {
        return Ok(None);
    }
    Ok(Some(Identity {
        teams: teams_of(view, project, &user)?,
        user,
        expire: session.expire,
        cap: i64::MAX,
        jwt: false,
        factors: session.factors.len(),
        session: session.id,
        at: view.applied_index(),
    }))
}

pub(crate) fn load_user(
    view: &dyn StateReader,
    project: &str,
    id: &str,
) -> Result<Option<User>, ApiError> {
    Ok(view
        .document(project, auth::users(), id)?
        .map(|d| User::from_document(&d)))
}

/// Does `headers` carry a live session or a valid JWT of `project`, as `view` knows them?
/// (Only whether it names a user: what the user may do is checked where the request is
/// served.)
pub(crate) fn signed_in(view: &dyn StateReader, headers: &HeaderMap, project: &str) -> bool {
    let now = crate::params::now_ms();
    if let Some(token) = headers.get("x-appwrite-jwt").and_then(|v| v.to_str().ok()) {
        return matches!(view.jwt_secret(project), Ok(Some(s)) if !s.is_empty() && verify_jwt(&s, token).is_ok());
    }
    let Some(v) = session_value(headers, project).and_then(|v| SessionValue::decode(&v)) else {
        return false;
    };
    matches!(
        session_by_secret(view, project, &v.id, &sha256_hex(&v.secret), now),
        Ok(Some(_))
    )
}

fn project_not_found() -> ApiError {
    ApiError::new(ErrorCode::ProjectNotFound, "Project with the requested ID could not be found. Please check the value of the X-Appwrite-Project header to ensure the correct project ID is being used.")
}

/// Authorises a request that needs any one of `scopes`, against `view`. For a write this is
/// the fast answer only: apply checks the key or the session again against the committed
/// state.
pub fn authorize(view: Arc<dyn StateReader>, req: &Req, scopes: &[&str]) -> Result<Ctx, ApiError> {
    let key = header(req, "x-appwrite-key");
    let Some(project) = project_of(req)? else {
        return Err(if key.is_some() {
            ApiError::new(ErrorCode::ProjectIdMissing, "When using project API key, make sure to pass x-appwrite-project header with your project ID.")
        } else {
            project_not_found()
        });
    };
    if view.project(&project)?.is_none() {
        return Err(project_not_found());
    }
    // With a key, a session sent alongside is ignored (as Appwrite does for project keys).
    if let Some(secret) = key {
        return authorize_key(view, project, secret, scopes, req);
    }
    let session = session_value(&req.headers, &project);
    let now = crate::params::now_ms();
    let jwt = header(req, "x-appwrite-jwt");
    let mut unresolved = false;
    let mut who = Who::Guest;
    if let Some(token) = jwt {
        if session.is_some() {
            return Err(ApiError::new(ErrorCode::UserJwtAndCookieSet, "JWT and cookie used in the same request. Use either `setJWT` or `setCookie`. Learn about which authentication method to use in the SSR docs: https://appwrite.io/docs/products/auth/server-side-rendering"));
        }
        let claims = jwt_claims(&*view, &project, token)?;
        // A valid signature whose user or session is gone (or not in a lagging view) makes
        // the caller a guest, as Appwrite does.
        let session = jwt_session(&*view, &project, &claims, now)?;
        let user = load_user(&*view, &project, &claims.user_id)?;
        match (user, session) {
            (Some(user), Some(session)) => {
                who = Who::User {
                    roles: user_roles(&*view, &project, &user)?,
                    user: Box::new(user),
                    session: Box::new(session),
                    jwt: true,
                }
            }
            _ => unresolved = true,
        }
    } else if let Some(value) = session {
        // A value that does not even decode can never name a session: a guest, with no
        // second look on a linearizable view.
        let decoded = SessionValue::decode(&value);
        let found = match &decoded {
            Some(v) => {
                let sha = sha256_hex(&v.secret);
                match session_by_secret(&*view, &project, &v.id, &sha, now)? {
                    Some(s) => load_user(&*view, &project, &v.id)?.map(|u| (u, s)),
                    None => None,
                }
            }
            None => None,
        };
        match found {
            Some((user, session)) => {
                who = Who::User {
                    roles: user_roles(&*view, &project, &user)?,
                    user: Box::new(user),
                    session: Box::new(session),
                    jwt: false,
                }
            }
            // As Appwrite: an unknown or ended session makes the caller a guest (one this
            // view may not know yet is looked for again on a linearizable one).
            None => unresolved = decoded.is_some(),
        }
    }
    let (role, role_scopes) = match &who {
        Who::User { .. } => ("users", USER_SCOPES),
        _ => ("guests", GUEST_SCOPES),
    };
    if !scopes.iter().any(|s| role_scopes.contains(s)) {
        let e = ApiError::new(
            ErrorCode::GeneralUnauthorizedScope,
            msg!(
                "User (role: {}) missing scopes ({})",
                role,
                scope_list(scopes)
            ),
        );
        return Err(e);
    }
    if let Who::User { user, .. } = &who {
        if !user.status {
            return Err(ApiError::new(
                ErrorCode::UserBlocked,
                "The current user has been blocked.",
            ));
        }
    }
    // MFA: a session short of the factors its user needs may only complete a challenge (or
    // end). A JWT is not checked, as in Appwrite: only a full session can make one.
    if let Who::User {
        user,
        session,
        jwt: false,
        ..
    } = &who
    {
        if session.factors.len() < user.factors_required() && !mfa_exempt(&req.method, &req.route) {
            return Err(ApiError::new(
                ErrorCode::UserMoreFactorsRequired,
                "More factors are required to complete the sign in process.",
            ));
        }
    }
    let actor = match &who {
        Who::User { user, session, .. } => Actor::User {
            id: user.id.clone(),
            session: session.id.clone(),
        },
        _ => Actor::Guest,
    };
    Ok(Ctx {
        project,
        actor,
        view,
        who,
        unresolved,
        ip: req.ip(),
        user_agent: user_agent(req),
    })
}

/// The routes a session short of factors may still use (Appwrite's `mfa` route group).
fn mfa_exempt(method: &axum::http::Method, route: &str) -> bool {
    use axum::http::Method;
    matches!(
        (method, route),
        (&Method::DELETE, "/v1/account/sessions/{session}")
            | (&Method::POST, "/v1/account/mfa/challenges")
            | (&Method::PUT, "/v1/account/mfa/challenges")
            | (&Method::GET, "/v1/account/mfa/factors")
    )
}

fn authorize_key(
    view: Arc<dyn StateReader>,
    project: String,
    secret: &str,
    scopes: &[&str],
    req: &Req,
) -> Result<Ctx, ApiError> {
    let api_key = view
        .key_by_secret_sha256(&project, &sha256_hex(secret))?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UserUnauthorized,
                "The current user is not authorized to perform the requested action.",
            )
        })?;
    if api_key.expire.is_some_and(|e| e <= crate::params::now_ms()) {
        return Err(ApiError::new(
            ErrorCode::ProjectKeyExpired,
            "The project key has expired. Please generate a new key using the Appwrite console.",
        ));
    }
    if !scopes.iter().any(|s| api_key.scopes.iter().any(|k| k == s)) {
        return Err(ApiError::new(
            ErrorCode::GeneralUnauthorizedScope,
            msg!(
                "app.{}@service.localhost (role: applications) missing scopes ({})",
                project,
                scope_list(scopes)
            ),
        ));
    }
    Ok(Ctx {
        project,
        actor: Actor::Key {
            id: api_key.id,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        },
        view,
        who: Who::Key,
        unresolved: false,
        ip: req.ip(),
        user_agent: user_agent(req),
    })
}

/// Compares two secrets' digests in time that depends only on their length.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Operator endpoints: `X-Appwrite-Key` must be the root key.
pub fn require_root(state: &AppState, req: &Req) -> Result<(), ApiError> {
    match header(req, "x-appwrite-key") {
        Some(k) if same_secret(&sha256_hex(k), &state.backend.root_key_sha256()) => Ok(()),
        _ => Err(ApiError(Error::new(
            ErrorCode::GeneralUnauthorizedScope,
            "The root key is required for operator endpoints.",
        ))),
    }
}

/// Every scope an Appwrite project key may hold (Appwrite's `app/config/scopes/project.php`),
/// so a key made for Appwrite is accepted as it is; those of services Basalt does not have
/// yet grant nothing here (`--all-scopes` gives them all).
pub const ALL_SCOPES: &[&str] = &[
    "project.read",
    "project.write",
    "keys.read",
    "keys.write",
    "platforms.read",
    "platforms.write",
    "mocks.read",
    "mocks.write",
    "policies.read",
    "policies.write",
    "project.policies.read",
    "project.policies.write",
    "project.oauth2.read",
    "project.oauth2.write",
    "templates.read",
    "templates.write",
    "stages.read",
    "stages.write",
    "users.read",
    "users.write",
    "sessions.read",
    "sessions.write",
    "teams.read",
    "teams.write",
    "databases.read",
    "databases.write",
    "tables.read",
    "tables.write",
    "columns.read",
    "columns.write",
    "indexes.read",
    "indexes.write",
    "rows.read",
    "rows.write",
    "embeddings.write",
    "collections.read",
    "collections.write",
    "attributes.read",
    "attributes.write",
    "documents.read",
    "documents.write",
    "buckets.read",
    "buckets.write",
    "files.read",
    "files.write",
    "tokens.read",
    "tokens.write",
    "functions.read",
    "functions.write",
    "executions.read",
    "executions.write",
    "execution.read",
    "execution.write",
    "sites.read",
    "sites.write",
    "log.read",
    "log.write",
    "providers.read",
    "providers.write",
    "topics.read",
    "topics.write",
    "subscribers.read",
    "subscribers.write",
    "targets.read",
    "targets.write",
    "messages.read",
    "messages.write",
    "rules.read",
    "rules.write",
    "webhooks.read",
    "webhooks.write",
    "locale.read",
    "avatars.read",
    "health.read",
    "assistant.read",
    "migrations.read",
    "migrations.write",
    "schedules.read",
    "schedules.write",
    "vcs.read",
    "vcs.write",
    "insights.read",
    "insights.write",
    "reports.read",
    "reports.write",
    "presences.read",
    "presences.write",
];
