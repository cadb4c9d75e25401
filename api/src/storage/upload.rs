//! `Storage.createFile`: a multipart upload, whole or one 5 MiB chunk of it (`Content-Range`,
//! with `x-appwrite-id` naming the file after the first chunk). The SDKs send chunks after the
//! first in parallel and in any order, and resume by asking how many arrived.
//!
//! Each chunk is read as it arrives (never more than one chunk of it in memory), encoded
//! (`codec`), stored as a blob on a quorum of nodes, and only then proposed: so an
//! acknowledged chunk is durable on a majority before the entry naming it is committed. A
//! whole file sent in one request is cut into chunks the same way, its chunks proposed once
//! it has all arrived (its size is only known then).

use super::codec::{self, FileKey};
use super::{bucket, file_json, file_permissions, propose, storage_key, FILES_WRITE};
use crate::auth::Ctx;
use crate::common::{prepare_scoped, reply, unexpected, Reply};
use crate::error::ApiError;
use crate::params::{new_id, Peer, Req};
use crate::AppState;
use axum::extract::{FromRequest, Multipart, Path, State};
use axum::http::StatusCode;
use futures::StreamExt;
use model::command::{FileUpload, StorageOp};
use model::msg;
use model::storage::{self, Bucket, ChunkRef, CHUNK_SIZE};
use model::{id, ErrorCode, Outcome};
use std::collections::HashMap;

/// Form fields besides the file, at most, and the longest one.
const MAX_FIELDS: usize = 200;
const MAX_FIELD: usize = 64 << 10;
/// Chunks of a whole-file upload proposed at once.
const PROPOSALS_IN_FLIGHT: usize = 8;

fn bad_range() -> ApiError {
    ApiError::new(
        ErrorCode::StorageInvalidContentRange,
        "The content range is invalid. Please check the value of the Content-Range header.",
    )
}

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(model::Error::invalid(m))
}

/// `Content-Range: <unit> <start>-<end>/<size>`: a chunk as Appwrite's SDKs cut a file, 5 MiB
/// aligned. Answers (chunk index, size of the file).
fn content_range(v: &str) -> Result<(u64, u64), ApiError> {
    let (_, rest) = v.trim().split_once(' ').ok_or_else(bad_range)?;
    let (span, size) = rest.split_once('/').ok_or_else(bad_range)?;
    let (start, end) = span.split_once('-').ok_or_else(bad_range)?;
    let num = |s: &str| -> Result<u64, ApiError> {
        match !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            true => s.parse::<u64>().map_err(|_| bad_range()),
            false => Err(bad_range()),
        }
    };
    let (start, end, size) = (num(start)?, num(end)?, num(size)?);
    if start > end || end >= size || start % CHUNK_SIZE != 0 {
        return Err(bad_range());
    }
    let index = start / CHUNK_SIZE;
    if end - start + 1 != storage::chunk_len(size, index) {
        return Err(bad_range());
    }
    Ok((index, size))
}

/// A file's type from its first bytes, as Appwrite takes it from libmagic: a known magic
/// number, else text when the bytes are UTF-8, else what the client said.
fn sniff(first: &[u8], declared: Option<&str>) -> String {
    if let Some(t) = infer::get(first) {
        return t.mime_type().to_string();
    }
    let head = &first[..first.len().min(4096)];
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A multi-byte character cut at the end of the sample.
        Err(e) => e.valid_up_to() + 4 > head.len() && e.error_len().is_none(),
    };
    if text && !head.contains(&0) {
        return "text/plain".to_string();
    }
    match declared {
        Some(d) if !d.is_empty() && d.len() <= 255 => d.to_string(),
        _ => "application/octet-stream".to_string(),
    }
}

/// Where an upload is going, once its form has been read far enough to know.
struct Target {
    bucket: Bucket,
    file: Option<String>,
    name: String,
    declared: Option<String>,
    key: Option<String>,
}

/// Encodes and stores one plain chunk; answers its reference.
async fn store(
    s: &AppState,
    t: &Target,
    plain: Vec<u8>,
    index: u64,
) -> Result<(ChunkRef, Option<String>), ApiError> {
    let file = t.file.clone().unwrap_or_default();
    // Encoding and replicating: a few chunks at a time per node, whatever the clients.
    let _storing = s
        .storing
        .acquire()
        .await
        .map_err(|_| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))?;
    let (key, bucket, compression) = (t.key.clone(), t.bucket.id.clone(), t.bucket.compression);
    let declared = t.declared.clone();
    let (stored, chunk, mime) = tokio::task::spawn_blocking(move || {
        let mime = (index == 0).then(|| sniff(&plain, declared.as_deref()));
        let fk = key.map(|k| FileKey::derive(&k, &bucket, &file));
        codec::encode(plain, index, compression, fk.as_ref()).map(|(s, c)| (s, c, mime))
    })
    .await
    .map_err(|_| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))?
    .map_err(|e| {
        tracing::error!(error = %e, "encoding a chunk");
        ApiError::new(ErrorCode::GeneralServerError, "Server Error")
    })?;
    s.backend
        .put_blob(chunk.blob.clone(), bytes::Bytes::from(stored))
        .await?;
    Ok((chunk, mime))
}

pub(super) async fn create_file(
    State(s): State<AppState>,
    Path(path): Path<HashMap<String, String>>,
    request: axum::extract::Request,
) -> Reply {
    let (parts, body) = request.into_parts();
    let mut req = Req {
        headers: parts.headers.clone(),
        path,
        params: parts
            .uri
            .query()
            .map(crate::params::parse_query)
            .unwrap_or_default(),
        method: parts.method.clone(),
        route: parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
        peer: parts.extensions.get::<Peer>().map(|p| p.0.ip()),
        query: parts.uri.query().map(str::to_string),
    };
    let bucket_id = req.path("bucket");
    let (ctx, b) = prepare_scoped(&s, &req, FILES_WRITE, |ctx| {
        let b = bucket(ctx, &bucket_id)?;
        match ctx.roles() {
            Some(roles) if !model::permission::allows(&b.permissions, "create", &roles) => {
                Err(ApiError::new(
                    ErrorCode::UserUnauthorized,
                    "No permissions provided for action 'create'",
                ))
            }
            _ => Ok(b),
        }
    })
    .await?;
    let range = match req.headers.get("content-range") {
        Some(v) => Some(content_range(v.to_str().map_err(|_| bad_range())?)?),
        None => None,
    };
    if let Some((_, size)) = range {
        if size > b.maximum_file_size {
            return Err(ApiError::new(
                ErrorCode::StorageInvalidFileSize,
                "File size not allowed",
            ));
        }
    }
    let header_id = match (range, req.headers.get("x-appwrite-id")) {
        (Some(_), Some(v)) => {
            let v = v.to_str().unwrap_or_default();
            if v == id::UNIQUE || !id::is_valid(v) {
                return Err(ApiError::new(
                    ErrorCode::StorageInvalidAppwriteId,
                    "The value for x-appwrite-id header is invalid. Please check the value of the x-appwrite-id header is a valid id and not unique().",
                ));
            }
            Some(v.to_string())
        }
        _ => None,
    };
    let mut form = Multipart::from_request(axum::extract::Request::from_parts(parts, body), &s)
        .await
        .map_err(|e| {
            invalid(msg!(
                "The request body could not be read: {}",
                e.body_text()
            ))
        })?;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut target: Option<Target> = None;
    // Plain chunks stored so far (a whole-file upload has several), and the one being filled.
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut mime: Option<String> = None;
    let mut size: u64 = 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut saw_file = false;
    let mut form_id: Option<String> = None;
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(mut field) = form.next_field().await.map_err(|e| {
        invalid(msg!(
            "The request body could not be read: {}",
            e.body_text()
        ))
    })? {
        let name = field.name().unwrap_or_default().to_string();
        if name != "file" {
            if fields.len() >= MAX_FIELDS {
                return Err(invalid("Too many form fields."));
            }
            let mut text = Vec::new();
            while let Some(part) = field
                .chunk()
                .await
                .map_err(|_| invalid("A form field could not be read."))?
            {
                if text.len() + part.len() > MAX_FIELD {
                    return Err(invalid(msg!("Form field `{}` is too long.", name)));
                }
                text.extend_from_slice(&part);
            }
            let text = String::from_utf8(text)
                .map_err(|_| invalid(msg!("Form field `{}` is not UTF-8.", name)))?;
            fields.push((name, text));
            continue;
        }
        if saw_file {
            return Err(invalid("Only one file may be uploaded per request."));
        }
        saw_file = true;
        let file_name = field.file_name().unwrap_or_default().to_string();
        if file_name.chars().count() > storage::NAME_MAX {
            return Err(invalid(msg!(
                "The file name is longer than {} characters.",
                storage::NAME_MAX
            )));
        }
        if !b.allows_name(&file_name) {
            return Err(ApiError::new(
                ErrorCode::StorageFileTypeUnsupported,
                "File extension not allowed",
            ));
        }
        let key = match b.encryption {
            true => Some(storage_key(&s, &ctx).await?),
            false => None,
        };
        // Chunks being received at once on this node are bounded: a request waits its turn
        // (a while; then it is told to come back).
        let turn = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            s.uploads.clone().acquire_owned(),
        )
        .await;
        permit = match turn {
            Ok(Ok(p)) => Some(p),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::GeneralRateLimitExceeded,
                    "Too many uploads are in progress on this node. Please try again shortly.",
                ))
            }
        };
        // The file's id, resolved once (`unique()` makes a new one each time it is read).
        if header_id.is_none() && form_id.is_none() {
            form_id = file_id(&fields).ok();
        }
        let file = header_id.clone().or_else(|| form_id.clone());
        let t = target.insert(Target {
            bucket: b.clone(),
            file,
            name: file_name,
            declared: field.content_type().map(str::to_string),
            key,
        });
        // The most a chunk of this request may hold.
        let expect = match range {
            Some((index, total)) => storage::chunk_len(total, index),
            None => CHUNK_SIZE,
        };
        while let Some(bytes) = field
            .chunk()
            .await
            .map_err(|e| invalid(msg!("The file could not be read: {}", e.body_text())))?
        {
            size += bytes.len() as u64;
            if size > b.maximum_file_size || (range.is_some() && size > expect) {
                return Err(match range {
                    Some(_) => bad_range(),
                    None => {
                        ApiError::new(ErrorCode::StorageInvalidFileSize, "File size not allowed")
                    }
                });
            }
            let mut rest: &[u8] = &bytes;
            while !rest.is_empty() {
                let room = (CHUNK_SIZE as usize) - pending.len();
                let take = room.min(rest.len());
                pending.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if pending.len() == CHUNK_SIZE as usize && range.is_none() {
                    if t.file.is_none() {
                        return Err(invalid(
                            "Param \"fileId\" must come before the file in the form.",
                        ));
                    }
                    let index = chunks.len() as u64;
                    let (c, m) = store(&s, t, std::mem::take(&mut pending), index).await?;
                    mime = mime.or(m);
                    chunks.push(c);
                }
            }
        }
    }
    if !saw_file {
        return Err(ApiError::new(
            ErrorCode::StorageFileEmpty,
            "Empty file passed to the endpoint.",
        ));
    }
    // The form's fields, read like a query string's (`permissions[]`, `permissions[0]`).
    let encoded = {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &fields {
            ser.append_pair(k, v);
        }
        ser.finish()
    };
    req.params.extend(crate::params::parse_query(&encoded));
    let id = match (&header_id, form_id) {
        (Some(h), _) => {
            // The form's id is checked too, as Appwrite does.
            let _ = file_id(&fields)?;
            h.clone()
        }
        (None, Some(f)) => f,
        (None, None) => file_id(&fields)?,
    };
    let folder = folder_param(&req)?;
    let permissions = match req.strings_opt("permissions")? {
        Some(p) => Some(file_permissions(&p)?),
        None => None,
    };
    let Some(mut t) = target else {
        return Err(ApiError::new(
            ErrorCode::StorageFileEmpty,
            "Empty file passed to the endpoint.",
        ));
    };
    if t.file.as_deref().is_some_and(|f| f != id) {
        // Stored under another id's key: cannot happen (the id is the header's or the
        // form's, read before the bytes).
        return Err(unexpected(Outcome::Done));
    }
    t.file = Some(id.clone());
    let total_size = match range {
        Some((_, total)) => {
            if size != storage::chunk_len(total, range.map_or(0, |r| r.0)) {
                return Err(bad_range());
            }
            total
        }
        None => size,
    };
    if total_size == 0 {
        return Err(ApiError::new(
            ErrorCode::StorageFileEmpty,
            "Empty file passed to the endpoint.",
        ));
    }
    if !pending.is_empty() {
        let index = range.map_or(chunks.len() as u64, |r| r.0);
        let (c, m) = store(&s, &t, std::mem::take(&mut pending), index).await?;
        mime = mime.or(m);
        chunks.push(c);
    }
    let upload = FileUpload {
        id: id.clone(),
        name: t.name.clone(),
        mime_type: mime
            .or(t.declared.clone())
            .filter(|m| !m.is_empty() && m.len() <= 255)
            .unwrap_or_else(|| "application/octet-stream".to_string()),
        size: total_size,
        permissions,
        folder,
    };
    drop(permit);
    let first = range.map_or(0, |r| r.0);
    let sent_sha = chunks.first().map(|c| c.plain_sha256.clone());
    let ops: Vec<StorageOp> = chunks
        .into_iter()
        .enumerate()
        .map(|(n, chunk)| StorageOp::PutChunk {
            bucket: b.id.clone(),
            upload: Box::new(upload.clone()),
            index: first + n as u64,
            chunk,
        })
        .collect();
    let results: Vec<Result<Outcome, ApiError>> = futures::stream::iter(ops)
        .map(|op| propose(&s, &ctx, op))
        .buffer_unordered(PROPOSALS_IN_FLIGHT)
        .collect()
        .await;
    let mut latest: Option<storage::File> = None;
    for r in results {
        match r {
            Ok(Outcome::File(f)) => {
                if latest
                    .as_ref()
                    .is_none_or(|l| f.chunks_uploaded >= l.chunks_uploaded)
                {
                    latest = Some(*f);
                }
            }
            Ok(o) => return Err(unexpected(o)),
            // A chunk sent again after the file completed (a retry): the file, as it is.
            Err(e) if range.is_some() && e.0.code == ErrorCode::StorageFileAlreadyExists => {
                let sent = (first, total_size, sent_sha.unwrap_or_default());
                return already_complete(&s, &ctx, &b, &id, sent, e).await;
            }
            Err(e) => return Err(e),
        }
    }
    match latest {
        Some(f) => reply(StatusCode::CREATED, file_json(&f)),
        None => Err(unexpected(Outcome::Done)),
    }
}

/// A chunk sent again after its file completed (a retry whose answer was lost): answered 200
/// with the file when it is that file's chunk — same size, same bytes at that index — and the
/// caller may read it; anything else is the refusal (409).
async fn already_complete(
    s: &AppState,
    ctx: &Ctx,
    b: &Bucket,
    id: &str,
    (index, size, plain_sha256): (u64, u64, String),
    refusal: ApiError,
) -> Reply {
    let view = s
        .backend
        .read(model::reader::Consistency::Linearizable)
        .await?;
    let ctx = Ctx {
        view,
        project: ctx.project.clone(),
        actor: ctx.actor.clone(),
        who: ctx.who.clone(),
        unresolved: false,
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
    };
    let Ok((_, f)) = super::readable_file(&ctx, b, id, false) else {
        return Err(refusal);
    };
    let same = f.size_original == size
        && ctx
            .view
            .file_chunks(&ctx.project, &b.id, id, index, 1)?
            .first()
            .is_some_and(|(i, c)| *i == index && c.plain_sha256 == plain_sha256);
    match same {
        true => reply(StatusCode::OK, file_json(&f)),
        false => Err(refusal),
    }
}

/// The optional `folder`: `a/b/` (slashes trimmed at the start, one added at the end).
fn folder_param(req: &Req) -> Result<String, ApiError> {
    let Some(f) = req.str_opt("folder")? else {
        return Ok(String::new());
    };
    let f = f.trim_matches('/');
    if f.is_empty() {
        return Ok(String::new());
    }
    let bad = f.len() > 1024
        || f.split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.chars().any(char::is_control));
    if bad {
        return Err(invalid("Invalid `folder` param: Value must be a path of names separated by `/`, at most 1024 chars"));
    }
    Ok(format!("{f}/"))
}

/// The form's `fileId`: `unique()` makes one.
fn file_id(fields: &[(String, String)]) -> Result<String, ApiError> {
    let v = fields
        .iter()
        .find(|(k, _)| k == "fileId")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| invalid("Param \"fileId\" is not optional."))?;
    match v {
        id::UNIQUE => Ok(new_id()),
        v => {
            id::check("fileId", v)?;
            Ok(v.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_whole_aligned_chunks() {
        let mib5 = CHUNK_SIZE;
        let size = 2 * mib5 + 10;
        assert_eq!(
            content_range(&format!("bytes 0-{}/{size}", mib5 - 1)).unwrap(),
            (0, size)
        );
        assert_eq!(
            content_range(&format!("bytes {}-{}/{size}", 2 * mib5, size - 1)).unwrap(),
            (2, size)
        );
        for bad in [
            "bytes 0-10".to_string(),
            "0-10/20".to_string(),
            "bytes 5-10/20".to_string(),
            "bytes 0-30/20".to_string(),
            "bytes 0-9/20".to_string(),
            "bytes -1-9/20".to_string(),
            "bytes 0-x/20".to_string(),
            format!("bytes 0-{}/{size}", mib5),
        ] {
            assert!(content_range(&bad).is_err(), "{bad}");
        }
        assert_eq!(content_range("bytes 0-19/20").unwrap(), (0, 20));
    }

    #[test]
    fn types_come_from_the_bytes_first() {
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0];
        assert_eq!(sniff(&png, Some("text/plain")), "image/png");
        assert_eq!(sniff(b"hello, world", None), "text/plain");
        assert_eq!(sniff(&[0, 1, 2, 3, 0xff], Some("x/y")), "x/y");
        assert_eq!(sniff(&[0, 1, 2, 3, 0xff], None), "application/octet-stream");
    }
}
