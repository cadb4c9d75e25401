//! The Tokens service: resource tokens that share one file by a link (`?token=` on download,
//! view and preview), made, listed, changed and deleted by a key. A token's secret is a JWT
//! (HS256, the project's JWT secret) naming the token; what it grants is decided by the
//! token's record at each use, so changing its expiry or deleting it takes effect at once.

use super::{bucket, readable_file};
use crate::auth::Ctx;
use crate::common::{enter_scoped, no_content, prepare_scoped, reply, unexpected, Reply};
use crate::error::ApiError;
use crate::params::{new_id, now_ms, Req};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use model::command::StorageOp;
use model::query::Filter;
use model::storage::{self, ResourceToken};
use model::time::format_ms;
use model::{ErrorCode, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tokens/buckets/{bucket}/files/{file}",
            post(create).get(list),
        )
        .route(
            "/v1/tokens/{token}",
            get(get_one).patch(update).delete(delete),
        )
}

const READ: &[&str] = &["tokens.read"];
const WRITE: &[&str] = &["tokens.write"];

/// What a token's secret says.
#[derive(Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "tokenId")]
    token_id: String,
    #[serde(rename = "resourceId")]
    resource_id: String,
    #[serde(rename = "resourceType")]
    resource_type: String,
    iat: i64,
}

fn token_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::TokenNotFound,
        "The requested token could not be found.",
    )
}

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(model::Error::invalid(m))
}

async fn token_json(s: &AppState, ctx: &Ctx, t: &ResourceToken) -> Result<Json, ApiError> {
    let secret = crate::users::project_secret(s, ctx).await?;
    let claims = Claims {
        token_id: t.id.clone(),
        resource_id: t.resource_id.clone(),
        resource_type: t.resource_type.clone(),
        iat: t.created_at / 1000,
    };
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|_| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))?;
    Ok(json!({
        "$id": t.id,
        "$createdAt": format_ms(t.created_at),
        "resourceId": t.resource_id,
        "resourceType": t.resource_type,
        "expire": t.expire.map(format_ms).unwrap_or_default(),
        "secret": jwt,
        "accessedAt": "",
    }))
}

/// `expire`: a datetime in the future, or null (never).
fn expire_param(req: &Req) -> Result<Option<i64>, ApiError> {
    let Some(e) = req.str_opt("expire")?.filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let at = model::time::parse_ms(&e).ok_or_else(|| {
        invalid("Invalid `expire` param: Value must be valid date in ISO 8601 format.")
    })?;
    if at <= now_ms() {
        return Err(invalid(
            "Invalid `expire` param: Value must be valid date in the future.",
        ));
    }
    Ok(Some(at))
}

async fn propose_token(s: &AppState, ctx: &Ctx, op: StorageOp) -> Result<ResourceToken, ApiError> {
    match super::propose(s, ctx, op).await? {
        Outcome::ResourceToken(t) => Ok(*t),
        o => Err(unexpected(o)),
    }
}

async fn create(State(s): State<AppState>, req: Req) -> Reply {
    let (b, f) = (req.path("bucket"), req.path("file"));
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |ctx| {
        let bk = bucket(ctx, &b)?;
        readable_file(ctx, &bk, &f, false).map(|_| ())
    })
    .await?;
    let token = ResourceToken {
        id: new_id(),
        created_at: 0,
        updated_at: 0,
        resource_id: storage::file_resource(&b, &f),
        resource_type: "files".into(),
        expire: expire_param(&req)?,
    };
    let t = propose_token(
        &s,
        &ctx,
        StorageOp::CreateToken {
            token: Box::new(token),
        },
    )
    .await?;
    reply(StatusCode::CREATED, token_json(&s, &ctx, &t).await?)
}

async fn list(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    let (b, f) = (req.path("bucket"), req.path("file"));
    let bk = bucket(&ctx, &b)?;
    readable_file(&ctx, &bk, &f, false)?;
    let coll = storage::tokens();
    let mut spec = crate::users::list_spec(&req, coll, &["expire"], false)?;
    spec.filters
        .push(Filter::equal("resourceId", &storage::file_resource(&b, &f)));
    let want_total = req.want_total()?;
    let page = ctx.view.find(&ctx.project, coll, &spec, want_total)?;
    let mut tokens = Vec::with_capacity(page.documents.len());
    for d in &page.documents {
        tokens.push(token_json(&s, &ctx, &ResourceToken::from_document(d)).await?);
    }
    let total = if want_total { page.total } else { 0 };
    reply(StatusCode::OK, json!({ "total": total, "tokens": tokens }))
}

async fn get_one(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, READ).await?;
    let t = ctx
        .view
        .document(&ctx.project, storage::tokens(), &req.path("token"))?
        .map(|d| ResourceToken::from_document(&d))
        .ok_or_else(token_not_found)?;
    reply(StatusCode::OK, token_json(&s, &ctx, &t).await?)
}

async fn update(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    let op = StorageOp::UpdateToken {
        id: req.path("token"),
        expire: expire_param(&req)?,
    };
    let t = propose_token(&s, &ctx, op).await?;
    reply(StatusCode::OK, token_json(&s, &ctx, &t).await?)
}

async fn delete(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, WRITE, |_| Ok(())).await?;
    match super::propose(
        &s,
        &ctx,
        StorageOp::DeleteToken {
            id: req.path("token"),
        },
    )
    .await?
    {
        Outcome::Done => no_content(),
        o => Err(unexpected(o)),
    }
}

/// What a request's `token` grants on file `file` of bucket `b`: `true` when it is a live
/// token for that file; `false` when there is none or it is not a token (ignored, as
/// Appwrite ignores it); refused (401) when it is a live token for another resource.
pub(crate) fn grants(ctx: &Ctx, req: &Req, b: &str, file: &str) -> Result<bool, ApiError> {
    let Some(jwt) = req.str_opt("token")?.filter(|t| !t.is_empty()) else {
        return Ok(false);
    };
    let Some(secret) = ctx.view.jwt_secret(&ctx.project)?.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims = Default::default();
    v.validate_exp = false;
    let Ok(data) = jsonwebtoken::decode::<Claims>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &v,
    ) else {
        return Ok(false);
    };
    let Some(t) = ctx
        .view
        .document(&ctx.project, storage::tokens(), &data.claims.token_id)?
        .map(|d| ResourceToken::from_document(&d))
        .filter(|t| t.valid_at(now_ms()))
    else {
        return Ok(false);
    };
    match t.resource_id == storage::file_resource(b, file) {
        true => Ok(true),
        false => Err(super::unauthorized()),
    }
}
