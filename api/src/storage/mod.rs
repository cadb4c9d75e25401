//! The Storage service: buckets (a key's) and their files (anyone the bucket or, under file
//! security, the file lets). Uploads (`upload`) store each chunk's bytes as a blob on a quorum
//! of nodes, then propose the chunk; downloads (`download`) stream a file back chunk by chunk,
//! ranges included. Bytes are compressed and sealed per chunk (`codec`).

mod codec;
mod download;
pub(crate) mod preview;
pub(crate) mod tokens;
mod upload;

use crate::auth::Ctx;
use crate::common::{enter_scoped, no_content, prepare_scoped, reply, unexpected, Reply};
use crate::error::ApiError;
use crate::params::{new_id, new_request_id, Req};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use model::command::StorageOp;
use model::msg;
use model::permission::{self, Scope};
use model::query::Filter;
use model::storage::{self, Bucket, Compression, File};
use model::time::format_ms;
use model::{id, Actor, Collection, Envelope, Error, ErrorCode, Op, Outcome};
use serde_json::{json, Value as Json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/storage/buckets", get(list_buckets).post(create_bucket))
        .route(
            "/v1/storage/buckets/{bucket}",
            get(get_bucket).put(update_bucket).delete(delete_bucket),
        )
        .route(
            "/v1/storage/buckets/{bucket}/files",
            get(list_files).post(upload::create_file).layer(
                // A chunk is 5 MiB; a client may also send a whole file in one request, which
                // is read as it arrives and cut into chunks (the bucket's limit bounds it).
                axum::extract::DefaultBodyLimit::disable(),
            ),
        )
        .route(
            "/v1/storage/buckets/{bucket}/files/{file}",
            get(get_file).put(update_file).delete(delete_file),
        )
        .route(
            "/v1/storage/buckets/{bucket}/files/{file}/download",
            get(download::download),
        )
        .route(
            "/v1/storage/buckets/{bucket}/files/{file}/view",
            get(download::view),
        )
        .route(
            "/v1/storage/buckets/{bucket}/files/{file}/preview",
            get(preview::preview),
        )
}

const BUCKETS_READ: &[&str] = &["buckets.read"];
const BUCKETS_WRITE: &[&str] = &["buckets.write"];
pub(crate) const FILES_READ: &[&str] = &["files.read"];
pub(crate) const FILES_WRITE: &[&str] = &["files.write"];

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(Error::invalid(m))
}

pub(crate) fn bucket_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::StorageBucketNotFound,
        "Storage bucket with the requested ID could not be found.",
    )
}

pub(crate) fn file_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::StorageFileNotFound,
        "The requested file could not be found.",
    )
}

pub(crate) fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::UserUnauthorized,
        "The current user is not authorized to perform the requested action.",
    )
}

pub(crate) fn bucket_json(b: &Bucket) -> Json {
    json!({
        "$id": b.id,
        "$createdAt": format_ms(b.created_at),
        "$updatedAt": format_ms(b.updated_at),
        "$permissions": b.permissions,
        "fileSecurity": b.file_security,
        "name": b.name,
        "description": b.description,
        "enabled": b.enabled,
        "maximumFileSize": b.maximum_file_size,
        "allowedFileExtensions": b.allowed_file_extensions,
        "compression": b.compression.as_str(),
        "encryption": b.encryption,
        "antivirus": b.antivirus,
        "transformations": b.transformations,
        "stripMetadata": false,
        "totalSize": b.total_size,
    })
}

pub(crate) fn file_json(f: &File) -> Json {
    json!({
        "$id": f.id,
        "bucketId": f.bucket,
        "$createdAt": format_ms(f.created_at),
        "$updatedAt": format_ms(f.updated_at),
        "$permissions": f.permissions,
        "name": f.name,
        "folder": f.folder,
        "key": format!("{}{}", f.folder, f.name),
        "signature": f.signature,
        "mimeType": f.mime_type,
        "sizeOriginal": f.size_original,
        "sizeActual": f.size_actual,
        "chunksTotal": f.chunks_total,
        "chunksUploaded": f.chunks_uploaded,
        "encryption": f.encryption,
        "compression": f.compression.as_str(),
    })
}

/// Proposes a storage operation as the request's actor.
pub(crate) async fn propose(s: &AppState, ctx: &Ctx, op: StorageOp) -> Result<Outcome, ApiError> {
    let env = Envelope::new(
        ctx.project.clone(),
        new_request_id(),
        ctx.actor.clone(),
        Op::Storage(op),
    );
    match s.backend.write(env).await? {
        Outcome::Failed(e) => Err(ApiError(e)),
        o => Ok(o),
    }
}

/// The bucket in the path, as the caller may see it: a disabled one does not exist for users
/// and guests.
pub(crate) fn bucket(ctx: &Ctx, id: &str) -> Result<Bucket, ApiError> {
    let b = ctx
        .view
        .document(&ctx.project, storage::buckets(), id)?
        .map(|d| Bucket::from_document(&d))
        .ok_or_else(bucket_not_found)?;
    if !b.enabled && !ctx.is_key() {
        return Err(bucket_not_found());
    }
    Ok(b)
}

/// A file the caller may read, as Appwrite decides it: without file security a caller the
/// bucket does not let read is refused (401); with it, a file it may not read is not found.
/// `shared`: a resource token for this file came with the request, which lets it read.
pub(crate) fn readable_file(
    ctx: &Ctx,
    b: &Bucket,
    id: &str,
    shared: bool,
) -> Result<(Collection, File), ApiError> {
    let coll = storage::files(b);
    if shared {
        let doc = ctx
            .view
            .document(&ctx.project, &coll, id)?
            .ok_or_else(file_not_found)?;
        let f = File::from_document(&b.id, &doc);
        return Ok((coll, f));
    }
    let bucket_reads = ctx
        .roles()
        .is_none_or(|roles| coll.grants(None, "read", &roles));
    if !bucket_reads && !b.file_security {
        return Err(unauthorized());
    }
    let doc = ctx
        .view
        .document(&ctx.project, &coll, id)?
        .ok_or_else(file_not_found)?;
    if let Some(roles) = ctx.roles() {
        if !coll.grants(Some(&doc), "read", &roles) {
            return Err(file_not_found());
        }
    }
    let f = File::from_document(&b.id, &doc);
    Ok((coll, f))
}

fn bucket_id_param(req: &Req) -> Result<String, ApiError> {
    match req.str_req("bucketId")? {
        u if u == id::UNIQUE => Ok(new_id()),
        b => {
            id::check("bucketId", &b)?;
            Ok(b)
        }
    }
}

/// A bucket's settings from a create or an update (Appwrite's update is a true PUT: what it
/// omits goes back to the default, but for permissions, which stay).
fn bucket_params(req: &Req, id: String, keep: Option<&Bucket>) -> Result<Bucket, ApiError> {
    let name = req.str_req("name")?;
    if name.is_empty() || name.chars().count() > 128 {
        return Err(invalid("Invalid `name` param: Value must be a valid string and at least 1 chars and no longer than 128 chars"));
    }
    let permissions = match req.strings_opt("permissions")? {
        Some(p) => permission::normalize(&p, Scope::Collection)?,
        None => keep.map(|b| b.permissions.clone()).unwrap_or_default(),
    };
    let maximum_file_size = req
        .uint_opt("maximumFileSize")?
        .unwrap_or(storage::MAX_FILE_SIZE);
    if maximum_file_size == 0 || maximum_file_size > storage::MAX_FILE_SIZE {
        return Err(invalid(msg!(
            "Invalid `maximumFileSize` param: Value must be a valid range between 1 and {}",
            storage::MAX_FILE_SIZE
        )));
    }
    let allowed = req
        .strings_opt("allowedFileExtensions")?
        .unwrap_or_default();
    if allowed.len() > storage::EXTENSIONS_MAX
        || allowed
            .iter()
            .any(|e| e.is_empty() || e.chars().count() > storage::EXTENSION_LEN_MAX)
    {
        return Err(invalid("Invalid `allowedFileExtensions` param: Value must a valid array no longer than 100 items and Value must be a valid string and at least 1 chars and no longer than 64 chars"));
    }
    let compression = match req.str_opt("compression")? {
        None => Compression::None,
        Some(c) => Compression::parse(&c).ok_or_else(|| {
            invalid("Invalid `compression` param: Value must be one of (none, gzip, zstd)")
        })?,
    };
    if req.bool_opt("stripMetadata")? == Some(true) {
        return Err(invalid(
            "Invalid `stripMetadata` param: removing image metadata is not supported by this server",
        ));
    }
    let description = req.str_opt("description")?.unwrap_or_default();
    if description.chars().count() > storage::DESCRIPTION_MAX {
        return Err(invalid(msg!(
            "Invalid `description` param: Value must be a valid string and no longer than {} chars",
            storage::DESCRIPTION_MAX
        )));
    }
    Ok(Bucket {
        id,
        created_at: 0,
        updated_at: 0,
        permissions,
        file_security: req.bool_opt("fileSecurity")?.unwrap_or(false),
        name,
        enabled: req.bool_opt("enabled")?.unwrap_or(true),
        maximum_file_size,
        allowed_file_extensions: allowed
            .into_iter()
            .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
            .collect(),
        compression,
        encryption: req.bool_opt("encryption")?.unwrap_or(true),
        antivirus: req.bool_opt("antivirus")?.unwrap_or(true),
        transformations: req.bool_opt("transformations")?.unwrap_or(true),
        total_size: 0,
        description,
        deleting: false,
    })
}

async fn create_bucket(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, BUCKETS_WRITE, |_| Ok(())).await?;
    let b = bucket_params(&req, bucket_id_param(&req)?, None)?;
    match propose(
        &s,
        &ctx,
        StorageOp::CreateBucket {
            bucket: Box::new(b),
        },
    )
    .await?
    {
        Outcome::Bucket(b) => reply(StatusCode::CREATED, bucket_json(&b)),
        o => Err(unexpected(o)),
    }
}

async fn update_bucket(State(s): State<AppState>, req: Req) -> Reply {
    let id = req.path("bucket");
    let (ctx, current) = prepare_scoped(&s, &req, BUCKETS_WRITE, |ctx| bucket(ctx, &id)).await?;
    let b = bucket_params(&req, id, Some(&current))?;
    match propose(
        &s,
        &ctx,
        StorageOp::UpdateBucket {
            bucket: Box::new(b),
        },
    )
    .await?
    {
        Outcome::Bucket(b) => reply(StatusCode::OK, bucket_json(&b)),
        o => Err(unexpected(o)),
    }
}

async fn delete_bucket(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, BUCKETS_WRITE, |_| Ok(())).await?;
    // A big bucket goes in bounded chunks of files, the bucket itself with the first.
    loop {
        let op = StorageOp::DeleteBucket {
            id: req.path("bucket"),
        };
        match propose(&s, &ctx, op).await? {
            Outcome::Done => return no_content(),
            Outcome::Range { next: Some(_), .. } => continue,
            o => return Err(unexpected(o)),
        }
    }
}

async fn get_bucket(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, BUCKETS_READ).await?;
    reply(
        StatusCode::OK,
        bucket_json(&bucket(&ctx, &req.path("bucket"))?),
    )
}

async fn list_buckets(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, BUCKETS_READ).await?;
    let queryable = [
        "enabled",
        "name",
        "fileSecurity",
        "maximumFileSize",
        "encryption",
        "antivirus",
        "transformations",
    ];
    let coll = storage::buckets();
    let spec = crate::users::list_spec(&req, coll, &queryable, true)?;
    let want_total = req.want_total()?;
    let page = ctx.view.find(&ctx.project, coll, &spec, want_total)?;
    let buckets: Vec<Json> = page
        .documents
        .iter()
        .map(|d| bucket_json(&Bucket::from_document(d)))
        .collect();
    let total = if want_total { page.total } else { 0 };
    reply(
        StatusCode::OK,
        json!({ "total": total, "buckets": buckets }),
    )
}

async fn list_files(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, FILES_READ).await?;
    let b = bucket(&ctx, &req.path("bucket"))?;
    let coll = storage::files(&b);
    let queryable = [
        "name",
        "signature",
        "mimeType",
        "sizeOriginal",
        "chunksTotal",
        "chunksUploaded",
    ];
    let mut spec = crate::users::list_spec(&req, &coll, &queryable, true)?;
    if let Some(roles) = ctx.roles() {
        if !coll.grants(None, "read", &roles) {
            if !b.file_security {
                return Err(unauthorized());
            }
            spec.filters.push(Filter::readable_by(roles.clone()));
        }
        // A cursor must name a file the caller may read.
        if let Some(model::query::Cursor::After(c) | model::query::Cursor::Before(c)) = &spec.cursor
        {
            let readable = ctx
                .view
                .document(&ctx.project, &coll, c)?
                .is_some_and(|d| coll.grants(Some(&d), "read", &roles));
            if !readable {
                return Err(ApiError::new(
                    ErrorCode::GeneralCursorNotFound,
                    msg!("File '{}' for the 'cursor' value not found.", c),
                ));
            }
        }
    }
    let want_total = req.want_total()?;
    let page = ctx.view.find(&ctx.project, &coll, &spec, want_total)?;
    let files: Vec<Json> = page
        .documents
        .iter()
        .map(|d| file_json(&File::from_document(&b.id, d)))
        .collect();
    let total = if want_total { page.total } else { 0 };
    reply(StatusCode::OK, json!({ "total": total, "files": files }))
}

async fn get_file(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, FILES_READ).await?;
    let b = bucket(&ctx, &req.path("bucket"))?;
    let (_, f) = readable_file(&ctx, &b, &req.path("file"), false)?;
    reply(StatusCode::OK, file_json(&f))
}

async fn update_file(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, FILES_WRITE, |ctx| {
        bucket(ctx, &req.path("bucket")).map(|_| ())
    })
    .await?;
    let name = match req.str_opt("name")? {
        Some(n) if n.chars().count() > storage::NAME_MAX => {
            return Err(invalid(msg!(
                "Invalid `name` param: Value must be a valid string and no longer than {} chars",
                storage::NAME_MAX
            )))
        }
        n => n,
    };
    let permissions = match req.strings_opt("permissions")? {
        Some(p) => Some(file_permissions(&p)?),
        None => None,
    };
    let op = StorageOp::UpdateFile {
        bucket: req.path("bucket"),
        id: req.path("file"),
        name,
        permissions,
    };
    match propose(&s, &ctx, op).await? {
        Outcome::File(f) => reply(StatusCode::OK, file_json(&f)),
        o => Err(unexpected(o)),
    }
}

async fn delete_file(State(s): State<AppState>, req: Req) -> Reply {
    let (ctx, ()) = prepare_scoped(&s, &req, FILES_WRITE, |ctx| {
        bucket(ctx, &req.path("bucket")).map(|_| ())
    })
    .await?;
    let op = StorageOp::DeleteFile {
        bucket: req.path("bucket"),
        id: req.path("file"),
    };
    match propose(&s, &ctx, op).await? {
        Outcome::Done => no_content(),
        o => Err(unexpected(o)),
    }
}

/// A file's permissions: read, update, delete (and write, their sum); `create` is the
/// bucket's alone.
pub(crate) fn file_permissions(p: &[String]) -> Result<Vec<String>, ApiError> {
    let perms = permission::normalize(p, Scope::Document)?;
    if perms.iter().any(|p| p.starts_with("create(")) {
        return Err(invalid(
            "Invalid `permissions` param: Permissions must be one of: (read, update, delete, write)",
        ));
    }
    Ok(perms)
}

/// The project's storage key, made (once, by whichever node first needs it) if it has none.
pub(crate) async fn storage_key(s: &AppState, ctx: &Ctx) -> Result<String, ApiError> {
    if let Some(k) = ctx.view.storage_key(&ctx.project)? {
        return Ok(k);
    }
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))?;
    let env = Envelope::new(
        ctx.project.clone(),
        new_request_id(),
        Actor::Operator,
        Op::Storage(StorageOp::InitKey {
            secret: hex::encode(secret),
        }),
    );
    if let Outcome::Failed(e) = s.backend.write(env).await? {
        return Err(ApiError(e));
    }
    // Whichever proposal came first made the key: read what the cluster holds.
    s.backend
        .read(model::reader::Consistency::Linearizable)
        .await?
        .storage_key(&ctx.project)?
        .ok_or_else(|| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))
}
