//! Who is calling: the project (`X-Appwrite-Project` or `?project=`) and an API key
//! (`X-Appwrite-Key`) with scopes. End-user sessions come with the auth issue.

use crate::error::ApiError;
use crate::params::Req;
use crate::AppState;
use model::msg;
use model::reader::StateReader;
use model::{Actor, Error, ErrorCode};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// An authorised request's context: the project, who is acting, and the view of the state
/// the request was authorised against (and reads through — one point in time).
pub struct Ctx {
    pub project: String,
    pub actor: Actor,
    pub view: Arc<dyn StateReader>,
}

fn header<'a>(req: &'a Req, name: &str) -> Option<&'a str> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// Whether the request names a key at all (an empty header names none).
pub(crate) fn has_key(req: &Req) -> bool {
    header(req, "x-appwrite-key").is_some()
}

fn scope_list(scopes: &[&str]) -> String {
    serde_json::to_string(scopes).unwrap_or_default()
}

/// Authorises an API-key request holding any one of `scopes`, against `view`. For a write
/// this is the fast answer only: apply checks the key again against the committed state.
pub fn authorize(view: Arc<dyn StateReader>, req: &Req, scopes: &[&str]) -> Result<Ctx, ApiError> {
    let key = header(req, "x-appwrite-key");
    let project = header(req, "x-appwrite-project")
        .map(str::to_string)
        .or_else(|| {
            req.params
                .get("project")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    let Some(project) = project.filter(|p| !p.is_empty()) else {
        return Err(if key.is_some() {
            ApiError::new(ErrorCode::ProjectIdMissing, "When using project API key, make sure to pass x-appwrite-project header with your project ID.")
        } else {
            ApiError::new(ErrorCode::ProjectNotFound, "Project with the requested ID could not be found. Please check the value of the X-Appwrite-Project header to ensure the correct project ID is being used.")
        });
    };
    if view.project(&project)?.is_none() {
        return Err(ApiError::new(ErrorCode::ProjectNotFound, "Project with the requested ID could not be found. Please check the value of the X-Appwrite-Project header to ensure the correct project ID is being used."));
    }
    let Some(secret) = key else {
        return Err(ApiError::new(
            ErrorCode::GeneralUnauthorizedScope,
            msg!(
                "User (role: guests) missing scopes ({})",
                scope_list(scopes)
            ),
        ));
    };
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

/// Every scope the server knows (`--all-scopes`).
pub const ALL_SCOPES: &[&str] = &[
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
    "health.read",
    "keys.read",
    "keys.write",
    "project.read",
    "project.write",
    "locale.read",
    "avatars.read",
];
