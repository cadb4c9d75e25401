//! The users' audit log (`Account.listLogs`, `Users.listLogs`): each auth event is written in
//! the apply of the operation it records (`AuthOp::Audited`), newest first, at most
//! `MAX_LOGS` a user. Appwrite's log model; the client and device fields it fills from a
//! user-agent database and the country from a GeoIP database are left empty here.

use crate::auth::Ctx;
use crate::common::{enter_scoped, reply, Reply};
use crate::error::ApiError;
use crate::params::Req;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use model::auth::{self, LogEntry, User};
use model::query::Spec;
use model::time::format_ms;
use model::{Error, ErrorCode};
use serde_json::{json, Value as Json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/account/logs", get(my_logs))
        .route("/v1/users/{user}/logs", get(user_logs))
}

fn log_json(l: &LogEntry, u: &User) -> Json {
    json!({
        "event": l.event,
        "userId": l.user_id,
        "userEmail": u.email,
        "userName": u.name,
        "mode": l.mode,
        "userType": if l.mode == "admin" { "keys" } else { "user" },
        "ip": l.ip,
        "time": format_ms(l.created_at),
        "osCode": "", "osName": "", "osVersion": "",
        "clientType": "", "clientCode": "", "clientName": "", "clientVersion": "",
        "clientEngine": "", "clientEngineVersion": "",
        "deviceName": "", "deviceBrand": "", "deviceModel": "",
        "countryCode": "--", "countryName": "Unknown",
    })
}

/// `u`'s log, newest first, paged by the request's `limit` and `offset` queries (the only
/// ones Appwrite takes here).
fn logs_of(ctx: &Ctx, req: &Req, u: &User) -> Reply {
    let spec = Spec::parse(&req.queries()?).map_err(ApiError)?;
    if !spec.filters.is_empty()
        || !spec.orders.is_empty()
        || spec.cursor.is_some()
        || spec.random.is_some()
    {
        return Err(ApiError(Error::new(
            ErrorCode::GeneralQueryInvalid,
            "Invalid `queries` param: Only limit and offset queries are allowed",
        )));
    }
    let all = Spec::equal("userId", &u.id, auth::MAX_LOGS as u64);
    let page = ctx.view.find(&ctx.project, auth::logs(), &all, false)?;
    let mut logs: Vec<LogEntry> = page.documents.iter().map(LogEntry::from_document).collect();
    logs.reverse();
    let total = logs.len();
    let offset = usize::try_from(spec.offset).unwrap_or(usize::MAX);
    let limit = spec
        .limit
        .map_or(25, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let shown: Vec<Json> = logs
        .iter()
        .skip(offset)
        .take(limit)
        .map(|l| log_json(l, u))
        .collect();
    let total = match req.want_total()? {
        true => total,
        false => 0,
    };
    reply(StatusCode::OK, json!({ "total": total, "logs": shown }))
}

async fn my_logs(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, &["account"]).await?;
    let u = ctx.user().map(|(u, _)| u.clone()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UserUnauthorized,
            "The current user is not authorized to perform the requested action.",
        )
    })?;
    logs_of(&ctx, &req, &u)
}

async fn user_logs(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, &["users.read"]).await?;
    let u =
        crate::auth::load_user(&*ctx.view, &ctx.project, &req.path("user"))?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::UserNotFound,
                "User with the requested ID could not be found.",
            )
        })?;
    logs_of(&ctx, &req, &u)
}
