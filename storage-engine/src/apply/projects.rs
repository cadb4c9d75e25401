//! Projects and their API keys (the operator's operations).

use super::txn::{Txn, META};
use super::{err, R};
use crate::engine::encode;
use crate::keys;
use model::command::{KeyOp, PlatformOp, ProjectOp};
use model::schema::{ApiKey, Project};
use model::{ErrorCode, Outcome};

pub(super) fn apply_project(txn: &mut Txn, project: &str, op: &ProjectOp, at: i64) -> R<Outcome> {
    match op {
        ProjectOp::Create { name } => {
            let k = keys::meta(project, keys::PROJECT, &[]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(ErrorCode::ProjectAlreadyExists, "Project with the requested ID already exists. Try again with a different ID or use ID.unique() to generate a unique ID."));
            }
            let p = Project {
                id: project.to_string(),
                name: name.clone(),
                created_at: at,
                updated_at: at,
            };
            txn.put(META, k, encode(&p));
            let mut listed = keys::PROJECTS.to_vec();
            listed.extend_from_slice(project.as_bytes());
            txn.put(META, listed, Vec::new());
            Ok(Outcome::Project(p))
        }
        ProjectOp::UpdateAuth { change } => {
            let k = keys::meta(project, keys::PROJECT, &[]);
            let mut p: Project = txn.get_as(META, &k)?.ok_or_else(|| err(ErrorCode::ProjectNotFound, "Project with the requested ID could not be found. Please check the value of the X-Appwrite-Project header to ensure the correct project ID is being used."))?;
            let mut settings = auth_settings(txn, project)?;
            settings.apply(change);
            txn.put(
                META,
                keys::meta(project, keys::AUTH_SETTINGS, &[]),
                encode(&settings),
            );
            p.updated_at = at;
            txn.put(META, k, encode(&p));
            Ok(Outcome::Project(p))
        }
    }
}

/// The project's auth settings as committed (the defaults until the operator changes one).
pub(crate) fn auth_settings(txn: &Txn, project: &str) -> R<model::auth::AuthSettings> {
    Ok(txn
        .get_as(META, &keys::meta(project, keys::AUTH_SETTINGS, &[]))?
        .unwrap_or_default())
}

pub(crate) fn require_project(txn: &Txn, project: &str) -> R<()> {
    if txn
        .get(META, &keys::meta(project, keys::PROJECT, &[]))?
        .is_none()
    {
        return Err(err(ErrorCode::ProjectNotFound, "Project with the requested ID could not be found. Please check the value of the X-Appwrite-Project header to ensure the correct project ID is being used."));
    }
    Ok(())
}

pub(super) fn apply_key(txn: &mut Txn, project: &str, op: &KeyOp, at: i64) -> R<Outcome> {
    match op {
        KeyOp::Create { key } => {
            require_project(txn, project)?;
            let k = keys::meta(project, keys::KEY, &[&key.id]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::KeyAlreadyExists,
                    "Key with the same ID already exists. Try again with a different ID.",
                ));
            }
            let key = ApiKey {
                project: project.to_string(),
                created_at: at,
                updated_at: at,
                ..key.clone()
            };
            txn.put(META, k, encode(&key));
            txn.put(
                META,
                keys::meta(project, keys::KEY_HASH, &[&key.secret_sha256]),
                key.id.as_bytes().to_vec(),
            );
            Ok(Outcome::Key(key))
        }
        KeyOp::Delete { id } => {
            let k = keys::meta(project, keys::KEY, &[id]);
            let key: ApiKey = txn.get_as(META, &k)?.ok_or_else(|| {
                err(
                    ErrorCode::KeyNotFound,
                    "Key with the requested ID could not be found.",
                )
            })?;
            txn.del(META, k);
            txn.del(
                META,
                keys::meta(project, keys::KEY_HASH, &[&key.secret_sha256]),
            );
            Ok(Outcome::Done)
        }
    }
}

pub(super) fn apply_platform(txn: &mut Txn, project: &str, op: &PlatformOp, at: i64) -> R<Outcome> {
    require_project(txn, project)?;
    match op {
        PlatformOp::Create { platform } => {
            let k = keys::meta(project, keys::PLATFORM, &[&platform.id]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "Platform with the requested ID already exists.",
                ));
            }
            let p = model::schema::Platform {
                project: project.to_string(),
                created_at: at,
                updated_at: at,
                ..platform.clone()
            };
            txn.put(META, k, encode(&p));
            Ok(Outcome::Platform(p))
        }
        PlatformOp::Delete { id } => {
            let k = keys::meta(project, keys::PLATFORM, &[id]);
            if txn.get(META, &k)?.is_none() {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "Platform with the requested ID could not be found.",
                ));
            }
            txn.del(META, k);
            Ok(Outcome::Done)
        }
    }
}
