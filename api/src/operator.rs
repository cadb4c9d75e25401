//! Operator routes: projects and API keys (root key), cluster status and replica checks.

use crate::auth::{require_root, sha256_hex, ALL_SCOPES};
use crate::common::{no_content, reply, Reply};
use crate::error::ApiError;
use crate::params::{new_id, new_request_id, Req};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use model::auth::{AuthChange, AuthSettings};
use model::command::{ClusterOp, KeyOp, PlatformOp, ProjectOp};
use model::msg;
use model::reader::{Consistency, StateReader};
use model::schema::{ApiKey, Project};
use model::time::format_ms;
use model::{id, Actor, Envelope, Error, ErrorCode, Op, Outcome};
use serde_json::{json, Value as Json};
use std::sync::Arc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/ping", get(|| async { "Pong!" }))
        .route("/v1/projects", post(create_project).get(list_projects))
        .route(
            "/v1/projects/{project}/keys",
            post(create_key).get(list_keys),
        )
        .route(
            "/v1/projects/{project}/keys/{key}",
            get(get_key).delete(delete_key),
        )
        .route(
            "/v1/projects/{project}/platforms",
            post(create_platform).get(list_platforms),
        )
        .route(
            "/v1/projects/{project}/platforms/{platform}",
            axum::routing::delete(delete_platform),
        )
        .route("/v1/projects/{project}", get(get_project))
        .route(
            "/v1/projects/{project}/auth/{setting}",
            axum::routing::patch(update_auth),
        )
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/cluster/remove", post(cluster_remove))
        .route("/v1/cluster/check", post(cluster_check))
        .route("/v1/cluster/backup", post(cluster_backup))
        .route("/v1/cluster/join-token", post(cluster_join_token))
        .route("/v1/cluster/root-key", post(cluster_root_key))
        .route("/v1/cluster/drill", post(cluster_drill))
        .route(
            "/v1/cluster/placement",
            get(cluster_placement).put(set_cluster_placement),
        )
}

fn project_json(p: &Project, a: &AuthSettings) -> Json {
    json!({
        "$id": p.id, "name": p.name,
        "$createdAt": format_ms(p.created_at), "$updatedAt": format_ms(p.updated_at),
        "authDuration": a.duration_ms / 1000,
        "authLimit": a.limit,
        "authSessionsLimit": a.max_sessions,
        "authPasswordHistory": a.password_history,
        "authPasswordDictionary": a.password_dictionary,
        "authPersonalDataCheck": a.personal_data_check,
        "authInvalidateSessions": true,
        "authEmailPassword": a.allows("email-password"),
        "authUsersAuthMagicURL": a.allows("magic-url"),
        "authEmailOtp": a.allows("email-otp"),
        "authAnonymous": a.allows("anonymous"),
        "authInvites": a.allows("invites"),
        "authJWT": a.allows("jwt"),
        "authPhone": a.allows("phone"),
    })
}

async fn get_project(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let view = linearizable(&s).await?;
    let project = existing_project(&*view, &req)?;
    let p = view.project(&project)?.ok_or_else(unexpected_none)?;
    reply(
        StatusCode::OK,
        project_json(&p, &view.auth_settings(&project)?),
    )
}

fn unexpected_none() -> ApiError {
    ApiError::new(ErrorCode::GeneralServerError, "Server Error")
}

/// `PATCH /v1/projects/{id}/auth/{setting}`, the console's routes: `duration` {duration}
/// (seconds), `limit` {limit} (users; 0: none), `max-sessions` {limit}, `password-history`
/// {limit}, `password-dictionary` {enabled}, `personal-data` {enabled}, and each sign-in
/// method of `AUTH_METHODS` {status}.
async fn update_auth(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let view = linearizable(&s).await?;
    let project = existing_project(&*view, &req)?;
    // Appwrite 1.9.2 names the numbers `total` (null: off) and the switches `enabled`; the
    // console before it, `limit` and `status`. Both are taken.
    let range = |name: &str, lo: u64, hi: u64| -> Result<u64, ApiError> {
        let n = match (req.has("total"), name) {
            (true, "limit") => req.uint_opt("total")?.unwrap_or(0),
            _ => req.uint_opt(name)?.ok_or_else(|| {
                ApiError(Error::invalid(msg!("Param \"{}\" is not optional.", name)))
            })?,
        };
        if !(lo..=hi).contains(&n) {
            return Err(ApiError(Error::invalid(msg!(
                "Invalid `{}` param: Value must be a valid range between {} and {}",
                name,
                lo,
                hi
            ))));
        }
        Ok(n)
    };
    let setting = req.path("setting");
    let change = match setting.as_str() {
        "duration" => AuthChange::Duration(range("duration", 60, 31_536_000)? as i64 * 1000),
        "limit" => AuthChange::Limit(range("limit", 0, 1_000_000_000)?),
        "max-sessions" => AuthChange::MaxSessions(range("limit", 1, 100)? as u32),
        "password-history" => AuthChange::PasswordHistory(
            range("limit", 0, u64::from(model::auth::PASSWORD_HISTORY_MAX))? as u32,
        ),
        "password-dictionary" => AuthChange::PasswordDictionary(req.bool_req("enabled")?),
        "personal-data" => AuthChange::PersonalDataCheck(req.bool_req("enabled")?),
        m if model::auth::AUTH_METHODS.contains(&m) => AuthChange::Method {
            method: m.to_string(),
            enabled: match req.bool_opt("enabled")? {
                Some(on) => on,
                None => req.bool_req("status")?,
            },
        },
        _ => {
            return Err(ApiError::new(
                ErrorCode::GeneralRouteNotFound,
                "Route not found. Please ensure the endpoint is configured correctly and that the API route is valid for this SDK version. Refer to the API docs for more details.",
            ))
        }
    };
    match propose(&s, &project, Op::Projects(ProjectOp::UpdateAuth { change })).await? {
        Outcome::Project(p) => {
            let view = linearizable(&s).await?;
            reply(
                StatusCode::OK,
                project_json(&p, &view.auth_settings(&project)?),
            )
        }
        _ => Err(unexpected_none()),
    }
}

fn key_json(k: &ApiKey, secret: Option<&str>) -> Json {
    json!({
        "$id": k.id, "name": k.name,
        "$createdAt": format_ms(k.created_at), "$updatedAt": format_ms(k.updated_at),
        "expire": k.expire.map(format_ms).unwrap_or_default(),
        "scopes": k.scopes,
        "secret": secret.unwrap_or(""),
        "accessedAt": "", "sdks": [],
    })
}

/// Proposes an operator operation on `project`.
async fn propose(s: &AppState, project: &str, op: Op) -> Result<Outcome, ApiError> {
    let env = Envelope::new(project, new_request_id(), Actor::Operator, op);
    match s.backend.write(env).await? {
        Outcome::Failed(e) => Err(ApiError(e)),
        o => Ok(o),
    }
}

async fn create_project(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let id = req.id_req("projectId")?;
    if id == "console" {
        return Err(ApiError::new(
            ErrorCode::ProjectReserved,
            "The project ID is reserved. Please choose another project ID.",
        ));
    }
    let name = req.text_req("name", 128)?;
    match propose(&s, &id, Op::Projects(ProjectOp::Create { name })).await? {
        Outcome::Project(p) => reply(
            StatusCode::CREATED,
            project_json(&p, &AuthSettings::default()),
        ),
        o => Err(ApiError(Error::new(
            ErrorCode::GeneralServerError,
            msg!("unexpected outcome {}", format!("{:?}", o)),
        ))),
    }
}

async fn list_projects(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let view = linearizable(&s).await?;
    let projects = view.list_projects()?;
    reply(
        StatusCode::OK,
        json!({ "total": projects.len(), "projects": projects.iter().map(|p| {
            Ok(project_json(p, &view.auth_settings(&p.id)?))
        }).collect::<Result<Vec<_>, ApiError>>()? }),
    )
}

/// A fresh API key secret: Appwrite's `standard_` prefix and 256 hex characters.
fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 128];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut s = String::from("standard_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

async fn create_key(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let project = req.path("project");
    id::check("projectId", &project)?;
    let scopes = match req.strings_opt("scopes")? {
        Some(list) => {
            if let Some(bad) = list.iter().find(|sc| !ALL_SCOPES.contains(&sc.as_str())) {
                return Err(ApiError(Error::invalid(msg!(
                    "Invalid `scopes` param: unknown scope \"{}\"",
                    bad
                ))));
            }
            list
        }
        None => {
            return Err(ApiError(Error::invalid(
                "Param \"scopes\" is not optional.",
            )))
        }
    };
    let expire = match req.str_opt("expire")? {
        Some(e) if !e.is_empty() => Some(model::time::parse_ms(&e).ok_or_else(|| {
            ApiError(Error::invalid(
                "Invalid `expire` param: Value must be valid date",
            ))
        })?),
        _ => None,
    };
    let key_id = match req.str_opt("keyId")? {
        Some(k) if k != id::UNIQUE => {
            id::check("keyId", &k)?;
            k
        }
        _ => new_id(),
    };
    let secret = new_secret();
    let key = ApiKey {
        id: key_id,
        project: project.clone(),
        name: req.str_opt("name")?.unwrap_or_else(|| "key".into()),
        scopes,
        expire,
        secret_sha256: sha256_hex(&secret),
        created_at: 0,
        updated_at: 0,
    };
    match propose(&s, &project, Op::Keys(KeyOp::Create { key })).await? {
        Outcome::Key(k) => reply(StatusCode::CREATED, key_json(&k, Some(&secret))),
        o => Err(ApiError(Error::new(
            ErrorCode::GeneralServerError,
            msg!("unexpected outcome {}", format!("{:?}", o)),
        ))),
    }
}

async fn list_keys(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let view = linearizable(&s).await?;
    let project = existing_project(&*view, &req)?;
    let keys = view.list_keys(&project)?;
    reply(
        StatusCode::OK,
        json!({ "total": keys.len(), "keys": keys.iter().map(|k| key_json(k, None)).collect::<Vec<_>>() }),
    )
}

async fn cluster_status(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    reply(StatusCode::OK, s.backend.cluster_status())
}

async fn cluster_remove(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let id = req
        .uint_opt("nodeId")?
        .ok_or_else(|| ApiError(Error::invalid("Param \"nodeId\" is not optional.")))?;
    let status = s.backend.remove_member(id).await?;
    reply(StatusCode::OK, status)
}

async fn cluster_join_token(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let ttl = req.uint_opt("ttl")?.unwrap_or(3600);
    if !(1..=366 * 86_400).contains(&ttl) {
        return Err(ApiError(Error::invalid(
            "Invalid `ttl` param: a token lives between 1 second and 366 days.",
        )));
    }
    let token = s
        .backend
        .join_token(std::time::Duration::from_secs(ttl))
        .await?;
    reply(StatusCode::CREATED, token)
}

async fn cluster_placement(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let policy = s.backend.placement().await?;
    reply(StatusCode::OK, json!(policy))
}

/// Changes the placement policy: `voters`, `learners` (region lists) and `leaderRegion` (a
/// region, or null for none) each replace what is in force when given; the others stay.
async fn set_cluster_placement(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let mut policy = s.backend.placement().await?;
    if let Some(voters) = req.strings_opt("voters")? {
        policy.voters = voters;
    }
    if let Some(learners) = req.strings_opt("learners")? {
        policy.learners = learners;
    }
    if req.has("leaderRegion") {
        policy.leader_region = req.str_opt("leaderRegion")?.filter(|r| !r.is_empty());
    }
    if let Some(problem) = policy.problem() {
        return Err(ApiError(Error::invalid(problem)));
    }
    s.backend.set_placement(policy).await?;
    let policy = s.backend.placement().await?;
    reply(StatusCode::OK, json!(policy))
}

/// `basalt drill` against a running cluster: this node crashes (`{"fault": "crash"}`) or cuts
/// itself off from its peers (`{"fault": "isolate", "seconds": N}`, 1 to 600).
async fn cluster_drill(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let fault = match req.str_opt("fault")?.as_deref() {
        Some("crash") => crate::DrillFault::Crash,
        Some("isolate") => {
            let secs = req.uint_opt("seconds")?.unwrap_or(10);
            if !(1..=600).contains(&secs) {
                return Err(ApiError(Error::invalid(
                    "Invalid `seconds` param: an isolation lasts between 1 and 600 seconds.",
                )));
            }
            crate::DrillFault::Isolate(std::time::Duration::from_secs(secs))
        }
        _ => {
            return Err(ApiError(Error::invalid(
                "Invalid `fault` param: expected \"crash\" or \"isolate\".",
            )))
        }
    };
    reply(StatusCode::ACCEPTED, s.backend.drill(fault))
}

/// Replaces the cluster's root key: the body carries the new key's SHA-256 (hex), never the key.
async fn cluster_root_key(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let sha = req
        .str_opt("sha256")?
        .unwrap_or_default()
        .to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError(Error::invalid(
            "Invalid `sha256` param: the new root key's SHA-256, 64 hex digits.",
        )));
    }
    s.backend.set_root_key(sha).await?;
    reply(StatusCode::OK, serde_json::json!({ "rotated": true }))
}

fn platform_json(p: &model::schema::Platform) -> Json {
    json!({
        "$id": p.id, "$createdAt": format_ms(p.created_at), "$updatedAt": format_ms(p.updated_at),
        "name": p.name, "type": p.kind, "key": "", "store": "", "hostname": p.hostname,
    })
}

/// A web platform: its pages (on `hostname`, or any subdomain for `*.example.com`) may call
/// the project's API from the browser.
async fn create_platform(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let project = req.path("project");
    let kind = req.str_opt("type")?.unwrap_or_else(|| "web".into());
    if kind != "web" {
        return Err(ApiError(Error::invalid(
            "Invalid `type` param: Value must be one of (web)",
        )));
    }
    let hostname = req.str_req("hostname")?.to_ascii_lowercase();
    let bare = hostname.strip_prefix("*.").unwrap_or(&hostname);
    let valid = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(ApiError(Error::invalid(
            "Invalid `hostname` param: Value must be a valid hostname without path, port and protocol.",
        )));
    }
    let platform = model::schema::Platform {
        id: match req.str_opt("platformId")? {
            Some(p) if p != id::UNIQUE => {
                id::check("platformId", &p)?;
                p
            }
            _ => new_id(),
        },
        project: project.clone(),
        kind,
        name: req.str_opt("name")?.unwrap_or_else(|| hostname.clone()),
        hostname,
        created_at: 0,
        updated_at: 0,
    };
    match propose(&s, &project, Op::Platforms(PlatformOp::Create { platform })).await? {
        Outcome::Platform(p) => reply(StatusCode::CREATED, platform_json(&p)),
        o => Err(crate::common::unexpected(o)),
    }
}

async fn list_platforms(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let view = linearizable(&s).await?;
    let project = existing_project(&*view, &req)?;
    let all = view.list_platforms(&project)?;
    reply(
        StatusCode::OK,
        json!({ "total": all.len(), "platforms": all.iter().map(platform_json).collect::<Vec<_>>() }),
    )
}

async fn delete_platform(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let op = PlatformOp::Delete {
        id: req.path("platform"),
    };
    propose(&s, &req.path("project"), Op::Platforms(op)).await?;
    no_content()
}

async fn linearizable(s: &AppState) -> Result<Arc<dyn StateReader>, ApiError> {
    Ok(s.backend.read(Consistency::Linearizable).await?)
}

/// The `{project}` of the path, which must exist.
fn existing_project(view: &dyn StateReader, req: &Req) -> Result<String, ApiError> {
    let project = req.path("project");
    if view.project(&project)?.is_none() {
        return Err(ApiError::new(
            ErrorCode::ProjectNotFound,
            "Project with the requested ID could not be found.",
        ));
    }
    Ok(project)
}

fn key_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::KeyNotFound,
        "Key with the requested ID could not be found.",
    )
}

async fn get_key(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let view = linearizable(&s).await?;
    let project = existing_project(&*view, &req)?;
    let key = view
        .key(&project, &req.path("key"))?
        .ok_or_else(key_not_found)?;
    reply(StatusCode::OK, key_json(&key, None))
}

/// Revokes a key. Once this answers, no write made with the key is applied, whichever node
/// takes it (apply checks the key against the committed state).
async fn delete_key(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let project = req.path("project");
    id::check("projectId", &project)?;
    let op = Op::Keys(KeyOp::Delete {
        id: req.path("key"),
    });
    match propose(&s, &project, op).await? {
        Outcome::Done => no_content(),
        o => Err(ApiError(Error::new(
            ErrorCode::GeneralServerError,
            msg!("unexpected outcome {}", format!("{:?}", o)),
        ))),
    }
}

/// `basalt backup`: the whole state at one applied index, streamed (see `raft::backup` for
/// the frames).
async fn cluster_backup(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let rx = s.backend.backup().await?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(std::io::Error::other), rx))
    });
    Ok((
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/vnd.basalt.backup",
        )],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn cluster_check(State(s): State<AppState>, req: Req) -> Reply {
    require_root(&s, &req)?;
    let env = Envelope::new(
        "",
        new_request_id(),
        Actor::Operator,
        Op::Cluster(ClusterOp::Check),
    );
    let report = s.backend.cluster_check(env).await?;
    reply(StatusCode::OK, report)
}
