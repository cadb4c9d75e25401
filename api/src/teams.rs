//! The Teams service: teams, their preferences, and memberships with roles. A team's members
//! read it; its owners change it and manage its memberships; a key does everything. A key's
//! new member is confirmed at once; an owner's is invited by email and joins by the link in
//! it (`updateMembershipStatus`), which also signs them in.

use crate::abuse;
use crate::auth::Ctx;
use crate::common::{enter_scoped, no_content, prepare_scoped, reply, unexpected, Reply};
use crate::error::ApiError;
use crate::mail::{new_mail, redirect_param, require_smtp};
use crate::params::{new_id, Req};
use crate::users::{
    email_param, list_spec, name_param, new_session, prefs_param, project_secret, propose,
    set_session_cookies,
};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use model::auth::{self, MailKind, Membership, Team, User};
use model::command::{AuthOp, TokenOwner};
use model::query::Filter;
use model::reader::StateReader;
use model::time::format_ms;
use model::{id, Error, ErrorCode, Outcome};
use serde_json::{json, Value as Json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/teams", get(list).post(create))
        .route("/v1/teams/{team}", get(get_one).put(update).delete(delete))
        .route("/v1/teams/{team}/prefs", get(get_prefs).put(update_prefs))
        .route(
            "/v1/teams/{team}/memberships",
            get(list_memberships).post(create_membership),
        )
        .route(
            "/v1/teams/{team}/memberships/{membership}",
            get(get_membership)
                .patch(update_membership)
                .delete(delete_membership),
        )
        .route(
            "/v1/teams/{team}/memberships/{membership}/status",
            axum::routing::patch(update_membership_status),
        )
}

const READ: &[&str] = &["teams.read"];
const WRITE: &[&str] = &["teams.write"];
const PUBLIC: &[&str] = &["public"];

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(Error::invalid(m))
}

fn team_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::TeamNotFound,
        "Team with the requested ID could not be found.",
    )
}

pub(crate) fn prefs_json(text: &str) -> Json {
    serde_json::from_str::<Json>(text)
        .ok()
        .filter(Json::is_object)
        .unwrap_or_else(|| json!({}))
}

pub(crate) fn team_json(t: &Team) -> Json {
    json!({
        "$id": t.id,
        "$createdAt": format_ms(t.created_at),
        "$updatedAt": format_ms(t.updated_at),
        "name": t.name,
        "total": t.total,
        "prefs": prefs_json(&t.prefs),
    })
}

/// Appwrite's `membership`. The member's name and email are shown to a key only (a project's
/// membership privacy settings are off by default).
fn membership_json(ctx: &Ctx, m: &Membership) -> Json {
    let user = match ctx.is_key() {
        true => crate::auth::load_user(&*ctx.view, &ctx.project, &m.user_id)
            .ok()
            .flatten(),
        false => None,
    };
    let team_name = team_name(&*ctx.view, &ctx.project, &m.team_id);
    membership_model(m, user.as_ref(), &team_name)
}

/// The name of team `id`, as `view` has it (empty when it has none).
pub(crate) fn team_name(view: &dyn StateReader, project: &str, id: &str) -> String {
    view.document(project, auth::teams(), id)
        .ok()
        .flatten()
        .map(|d| Team::from_document(&d).name)
        .unwrap_or_default()
}

/// A membership as `membership_json` shows it; `user` (the member) is given to keys only.
pub(crate) fn membership_model(m: &Membership, user: Option<&User>, team_name: &str) -> Json {
    let (name, email, phone) = match user {
        Some(u) => (u.name.as_str(), u.email.as_str(), u.phone.as_str()),
        None => ("", "", ""),
    };
    json!({
        "$id": m.id,
        "$createdAt": format_ms(m.created_at),
        "$updatedAt": format_ms(m.updated_at),
        "userId": if user.is_some() { m.user_id.as_str() } else { "" },
        "userName": name,
        "userEmail": email,
        "userPhone": phone,
        "teamId": m.team_id,
        "teamName": team_name,
        "invited": format_ms(m.invited),
        "joined": m.joined.map(format_ms).unwrap_or_default(),
        "confirm": m.confirm,
        "mfa": user.is_some_and(|u| u.mfa),
        "roles": m.roles,
    })
}

/// The team in the path, if the caller may read it.
fn readable_team(ctx: &Ctx, req: &Req) -> Result<Team, ApiError> {
    let doc = ctx
        .view
        .document(&ctx.project, auth::teams(), &req.path("team"))?
        .ok_or_else(team_not_found)?;
    if let Some(roles) = ctx.roles() {
        if !auth::teams().grants(Some(&doc), "read", &roles) {
            return Err(team_not_found());
        }
    }
    Ok(Team::from_document(&doc))
}

async fn list(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    let mut spec = list_spec(&req, auth::teams(), &["name", "total"], true)?;
    if let Some(roles) = ctx.roles() {
        spec.filters.push(Filter::readable_by(roles));
    }
    let want_total = req.want_total()?;
    let page = ctx
        .view
        .find(&ctx.project, auth::teams(), &spec, want_total)?;
    let teams: Vec<Json> = page
        .documents
        .iter()
        .map(|d| team_json(&Team::from_document(d)))
        .collect();
    let total = if want_total { page.total } else { 0 };
    reply(StatusCode::OK, json!({ "total": total, "teams": teams }))
}

fn roles_param(req: &Req, default: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let roles = match (req.strings_opt("roles")?, default) {
        (Some(r), _) => r,
        (None, Some(d)) => d,
        (None, None) => return Err(invalid("Param \"roles\" is not optional.")),
    };
    if roles.len() > 100
        || roles.iter().any(|r| {
            r.is_empty()
                || r.len() > 81
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
    {
        return Err(invalid("Invalid `roles` param: Value must a valid array no longer than 100 items and Parameter must contain at most 81 chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char"));
    }
    let mut out: Vec<String> = Vec::new();
    for r in roles {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

async fn create(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    let id = match req.str_req("teamId")? {
        u if u == id::UNIQUE => new_id(),
        id => {
            id::check("teamId", &id)?;
            id
        }
    };
    let name = name_param(&req, "name", false)?
        .ok_or_else(|| invalid("Param \"name\" is not optional."))?;
    let mut roles = roles_param(&req, Some(vec!["owner".into()]))?;
    let team = Team {
        id: id.clone(),
        created_at: 0,
        updated_at: 0,
        name,
        total: 0,
        prefs: "{}".into(),
    };
    // A user who makes a team joins it as an owner; a key's team starts empty.
    let owner = ctx.user().map(|(u, _)| {
        if !roles.iter().any(|r| r == "owner") {
            roles.push("owner".into());
        }
        Box::new(Membership {
            id: new_id(),
            created_at: 0,
            updated_at: 0,
            user_id: u.id.clone(),
            team_id: id.clone(),
            roles: roles.clone(),
            invited: 0,
            joined: None,
            confirm: true,
            secret_sha256: String::new(),
        })
    });
    let op = AuthOp::CreateTeam {
        team: Box::new(team),
        owner,
    };
    match propose(&s, &ctx, op).await? {
        Outcome::Team(t) => reply(StatusCode::CREATED, team_json(&t)),
        o => Err(unexpected(o)),
    }
}

async fn get_one(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    reply(StatusCode::OK, team_json(&readable_team(&ctx, &req)?))
}

async fn change(
    s: &AppState,
    req: &Req,
    name: Option<String>,
    prefs: Option<String>,
) -> Result<Team, ApiError> {
    let (ctx, ()) = prepare_scoped(s, req, WRITE, |_| Ok(())).await?;
    let op = AuthOp::UpdateTeam {
        id: req.path("team"),
        name,
        prefs,
    };
    match propose(s, &ctx, op).await? {
        Outcome::Team(t) => Ok(t),
        o => Err(unexpected(o)),
    }
}

async fn update(State(s): State<AppState>, req: Req) -> Reply {
    let name = name_param(&req, "name", false)?
        .ok_or_else(|| invalid("Param \"name\" is not optional."))?;
    let t = change(&s, &req, Some(name), None).await?;
    reply(StatusCode::OK, team_json(&t))
}

async fn get_prefs(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    reply(
        StatusCode::OK,
        prefs_json(&readable_team(&ctx, &req)?.prefs),
    )
}

async fn update_prefs(State(s): State<AppState>, req: Req) -> Reply {
    let prefs = prefs_param(&req)?;
    let t = change(&s, &req, None, Some(prefs)).await?;
    reply(StatusCode::OK, prefs_json(&t.prefs))
}

async fn delete(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    // A big team goes in bounded chunks of memberships, the team with the last one.
    loop {
        let op = AuthOp::DeleteTeam {
            id: req.path("team"),
        };
        match propose(&s, &ctx, op).await? {
            Outcome::Done => return no_content(),
            Outcome::Range { next: Some(_), .. } => continue,
            o => return Err(unexpected(o)),
        }
    }
}

fn memberships_of(ctx: &Ctx, team: &str, req: &Req) -> Result<(Vec<Membership>, u64), ApiError> {
    let queryable = ["userId", "teamId", "invited", "joined", "confirm", "roles"];
    let mut spec = list_spec(req, auth::memberships(), &queryable, false)?;
    spec.filters.push(Filter::equal("teamId", team));
    let want_total = req.want_total()?;
    let page = ctx
        .view
        .find(&ctx.project, auth::memberships(), &spec, want_total)?;
    let total = if want_total { page.total } else { 0 };
    Ok((
        page.documents
            .iter()
            .map(Membership::from_document)
            .collect(),
        total,
    ))
}

async fn list_memberships(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    let team = readable_team(&ctx, &req)?;
    let (all, total) = memberships_of(&ctx, &team.id, &req)?;
    let items: Vec<Json> = all.iter().map(|m| membership_json(&ctx, m)).collect();
    reply(
        StatusCode::OK,
        json!({ "total": total, "memberships": items }),
    )
}

async fn create_membership(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::INVITE, {
        let roles = roles_param(&req, None)?;
        let user_id = req.str_opt("userId")?;
        let email = email_param(&req, "email")?;
        if user_id.is_none() && email.is_none() && req.str_opt("phone")?.is_none() {
            return Err(invalid(
                "At least one of userId, email, or phone is required",
            ));
        }
        if !ctx.is_key() {
            crate::policy::require_method(&ctx, "invites")?;
            return invite(&s, &ctx, &req, roles, user_id, email).await;
        }
        readable_team(&ctx, &req)?;
        let user = match (&user_id, &email) {
            (Some(id), _) => {
                crate::auth::load_user(&*ctx.view, &ctx.project, id)?.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::UserNotFound,
                        "User with given userId doesn't exist.",
                    )
                })?
            }
            // As Appwrite, a key's invitation of an unknown address makes its user first.
            (None, Some(e)) => match crate::users::user_by_email(&s, &ctx, e).await? {
                Some(u) => u,
                None => {
                    let name = name_param(&req, "name", false)?.unwrap_or_else(|| e.clone());
                    let u = crate::users::new_user(new_id(), e.clone(), String::new(), name, None);
                    let op = AuthOp::CreateUser { user: Box::new(u) };
                    match propose(&s, &ctx, op).await {
                        Ok(Outcome::User(u)) => u,
                        // Made meanwhile by someone else: that user it is.
                        Err(e1) if e1.0.code == ErrorCode::UserAlreadyExists => {
                            crate::users::user_by_email(&s, &ctx, e).await?.ok_or(e1)?
                        }
                        Ok(o) => return Err(unexpected(o)),
                        Err(e) => return Err(e),
                    }
                }
            },
            (None, None) => {
                return Err(invalid(
                    "Invalid `phone` param: phone invitations are not supported",
                ))
            }
        };
        if let (Some(e), false) = (&email, user_id.is_none()) {
            if *e != user.email {
                return Err(ApiError::new(
                    ErrorCode::UserAlreadyExists,
                    "Given userId and email doesn't match",
                ));
            }
        }
        let m = Membership {
            id: new_id(),
            created_at: 0,
            updated_at: 0,
            user_id: user.id.clone(),
            team_id: req.path("team"),
            roles,
            invited: 0,
            joined: None,
            confirm: true,
            secret_sha256: String::new(),
        };
        let op = AuthOp::CreateMembership {
            membership: Box::new(m),
        };
        match propose(&s, &ctx, op).await? {
            Outcome::Membership(m) => {
                let view = s
                    .backend
                    .read(model::reader::Consistency::Linearizable)
                    .await?;
                let fresh = Ctx { view, ..ctx };
                reply(StatusCode::CREATED, membership_json(&fresh, &m))
            }
            o => Err(unexpected(o)),
        }
    })
}

/// An owner's invitation: an unconfirmed membership and the email with its link (the
/// invitee, if the address is unknown, made as a user without a password).
async fn invite(
    s: &AppState,
    ctx: &Ctx,
    req: &Req,
    roles: Vec<String>,
    user_id: Option<String>,
    email: Option<String>,
) -> Reply {
    let url = match redirect_param(s, ctx, req, "url").await? {
        Some(u) => u,
        None => return Err(invalid("URL is required")),
    };
    require_smtp(s)?;
    readable_team(ctx, req)?;
    let name = name_param(req, "name", false)?;
    // The email greets the invitee by the name given, else by the address (as Appwrite).
    let greeting = name.clone().or_else(|| email.clone()).unwrap_or_default();
    let invitee = match (user_id, email) {
        (Some(id), email) => {
            let u = crate::auth::load_user(&*ctx.view, &ctx.project, &id)?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UserNotFound,
                    "User with given userId doesn't exist.",
                )
            })?;
            if email.is_some_and(|e| e != u.email) {
                return Err(ApiError::new(
                    ErrorCode::UserAlreadyExists,
                    "Given userId and email doesn't match",
                ));
            }
            TokenOwner::Id(id)
        }
        (None, Some(email)) => {
            let name = name.unwrap_or_else(|| email.clone());
            let u = crate::users::new_user(new_id(), email.clone(), String::new(), name, None);
            TokenOwner::Email {
                email,
                create: Some(Box::new(u)),
            }
        }
        (None, None) => {
            return Err(invalid(
                "Invalid `phone` param: phone invitations are not supported",
            ))
        }
    };
    project_secret(s, ctx).await?;
    let m = Membership {
        id: new_id(),
        created_at: 0,
        updated_at: 0,
        user_id: String::new(),
        team_id: req.path("team"),
        roles,
        invited: 0,
        joined: None,
        confirm: false,
        secret_sha256: String::new(),
    };
    let mut mail = new_mail(MailKind::Invitation, url, String::new());
    mail.to_name = greeting;
    let op = AuthOp::Invite {
        membership: Box::new(m),
        invitee,
        mail: Box::new(mail),
    };
    match propose(s, ctx, op).await? {
        Outcome::Membership(m) => reply(StatusCode::CREATED, membership_json(ctx, &m)),
        o => Err(unexpected(o)),
    }
}

/// Accepts an invitation with the secret from its email: the membership is confirmed, the
/// address verified, and the invitee signed in (unless signed in as them already).
async fn update_membership_status(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, PUBLIC, |_| Ok(())).await?;
    limited!(s, &req, &ctx, &abuse::REDEEM, {
        let user_id = crate::users::user_id_param(&req)?;
        let secret = req.text_req("secret", 256)?;
        let team = req.path("team");
        let id = req.path("membership");
        // A wrong secret is refused here, without a log entry; the apply checks it again.
        let digest = model::auth::sha256_hex(&secret);
        let found = |view: &dyn model::reader::StateReader| -> Result<bool, ApiError> {
            let m = view
                .document(&ctx.project, auth::memberships(), &id)?
                .map(|d| Membership::from_document(&d));
            Ok(m.is_some_and(|m| {
                m.team_id == team && crate::secrets::constant_time_eq(&m.secret_sha256, &digest)
            }))
        };
        if !found(&*ctx.view)? {
            let view = s
                .backend
                .read(model::reader::Consistency::Linearizable)
                .await?;
            if !found(&*view)? {
                // Let the apply answer which of Appwrite's errors it is (unknown membership
                // or team, mismatch, wrong secret): a refusal changes nothing.
                let (m, t) = (
                    view.document(&ctx.project, auth::memberships(), &id)?,
                    view.document(&ctx.project, auth::teams(), &team)?,
                );
                return Err(match (m, t) {
                    (None, _) => ApiError::new(
                        ErrorCode::MembershipNotFound,
                        "Membership with the requested ID could not be found.",
                    ),
                    (_, None) => team_not_found(),
                    (Some(m), _) if Membership::from_document(&m).team_id != team => {
                        ApiError::new(
                            ErrorCode::TeamMembershipMismatch,
                            "The membership ID does not belong to the team ID.",
                        )
                    }
                    _ => ApiError::new(
                        ErrorCode::TeamInvalidSecret,
                        "The team invitation secret is invalid. Please request a new invitation and try again.",
                    ),
                });
            }
        }
        let email = crate::auth::load_user(&*ctx.view, &ctx.project, &user_id)?
            .map(|u| u.email)
            .unwrap_or_default();
        let (session, value) = new_session(&req, &user_id, "email", email, vec!["email".into()]);
        let op = AuthOp::AcceptInvite {
            team,
            id: id.clone(),
            secret_sha256: digest,
            session: Box::new(session),
        };
        let made = match propose(&s, &ctx, op).await? {
            Outcome::Session(session) => Some(session),
            Outcome::Membership(_) => None,
            o => return Err(unexpected(o)),
        };
        let view = s
            .backend
            .read(model::reader::Consistency::Linearizable)
            .await?;
        let m = view
            .document(&ctx.project, auth::memberships(), &id)?
            .map(|d| Membership::from_document(&d))
            .ok_or_else(|| unexpected(Outcome::Done))?;
        let fresh = Ctx { view, ..ctx };
        let mut headers = axum::http::HeaderMap::new();
        if let Some(session) = made {
            set_session_cookies(&mut headers, &fresh.project, &value, session.expire, &req);
        }
        let body = axum::Json(membership_json(&fresh, &m));
        Ok(axum::response::IntoResponse::into_response((
            StatusCode::OK,
            headers,
            body,
        )))
    })
}

fn membership_in(ctx: &Ctx, req: &Req) -> Result<Membership, ApiError> {
    let team = readable_team(ctx, req)?;
    ctx.view
        .document(&ctx.project, auth::memberships(), &req.path("membership"))?
        .map(|d| Membership::from_document(&d))
        .filter(|m| m.team_id == team.id)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MembershipNotFound,
                "Membership with the requested ID could not be found.",
            )
        })
}

async fn get_membership(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    let m = membership_in(&ctx, &req)?;
    reply(StatusCode::OK, membership_json(&ctx, &m))
}

async fn update_membership(State(s): State<AppState>, req: Req) -> Reply {
    let roles = roles_param(&req, None)?;
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    let op = AuthOp::UpdateMembership {
        team: req.path("team"),
        id: req.path("membership"),
        roles,
    };
    match propose(&s, &ctx, op).await? {
        Outcome::Membership(m) => reply(StatusCode::OK, membership_json(&ctx, &m)),
        o => Err(unexpected(o)),
    }
}

async fn delete_membership(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    let op = AuthOp::DeleteMembership {
        team: req.path("team"),
        id: req.path("membership"),
    };
    propose(&s, &ctx, op).await?;
    no_content()
}
