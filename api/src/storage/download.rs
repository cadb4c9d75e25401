//! `getFileDownload` and `getFileView`: a complete file's bytes, streamed chunk by chunk (at
//! most two chunks of it in memory), whole or one `Range: bytes=a-b`. Each chunk's blob is
//! checked against its name when it is read (a damaged or missing copy is fetched from a peer)
//! and its plain bytes against their checksum once decoded.

use super::codec::{self, FileKey};
use super::{bucket, file_not_found, readable_file, FILES_READ};
use crate::common::{enter_scoped, Reply};
use crate::error::ApiError;
use crate::params::Req;
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use model::storage::{ChunkRef, File, CHUNK_SIZE};
use model::ErrorCode;
use std::sync::Arc;

/// Types `view` serves as they are (Appwrite's list): images, audio, video, PDF and office
/// documents. Anything else — HTML, SVG, scripts — is served as plain text, so a file cannot
/// run in the API's origin.
const VIEWABLE: &[&str] = &[
    "image/jpeg",
    "image/jpg",
    "image/gif",
    "image/png",
    "image/webp",
    "image/heic",
    "image/heic-sequence",
    "image/avif",
    "image/bmp",
    "image/x-icon",
    "image/tiff",
    "video/mp4",
    "video/mpeg",
    "video/ogg",
    "video/webm",
    "video/quicktime",
    "video/x-msvideo",
    "video/x-matroska",
    "audio/mpeg",
    "audio/mp4",
    "audio/ogg",
    "audio/wav",
    "audio/x-wav",
    "audio/webm",
    "audio/aac",
    "audio/flac",
    "audio/x-flac",
    "application/pdf",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "text/plain",
];

fn bad_range() -> ApiError {
    ApiError::new(
        ErrorCode::StorageInvalidRange,
        "The requested range is not satisfiable. Please check the value of the Range header.",
    )
}

/// `Range: bytes=<start>-[<end>]` (one range; an open end runs to the end of the file).
/// Answers the inclusive byte range, or `None` for the whole file.
fn parse_range(v: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad_range)?;
    let (start, end) = spec.split_once('-').ok_or_else(bad_range)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(start) || !(end.is_empty() || digits(end)) {
        return Err(bad_range());
    }
    let start: u64 = start.parse().map_err(|_| bad_range())?;
    let end: u64 = match end {
        "" => size.checked_sub(1).ok_or_else(bad_range)?,
        e => e.parse().map_err(|_| bad_range())?,
    };
    if start > end || end >= size {
        return Err(bad_range());
    }
    Ok(Some((start, end)))
}

pub(super) async fn download(State(s): State<AppState>, req: Req) -> Reply {
    serve(s, req, false).await
}

pub(super) async fn view(State(s): State<AppState>, req: Req) -> Reply {
    serve(s, req, true).await
}

/// A `Content-Disposition` filename: quoted, with what would break the quoting replaced,
/// and the exact name in RFC 5987 form beside it.
fn disposition(kind: &str, name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_control() || !c.is_ascii() => '_',
            c => c,
        })
        .collect();
    let exact = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("{kind}; filename=\"{plain}\"; filename*=UTF-8''{exact}")
}

async fn serve(s: AppState, req: Req, inline: bool) -> Reply {
    let ctx = enter_scoped(&s, &req, FILES_READ).await?;
    let b = bucket(&ctx, &req.path("bucket"))?;
    let shared = super::tokens::grants(&ctx, &req, &b.id, &req.path("file"))?;
    let (_, f) = readable_file(&ctx, &b, &req.path("file"), shared)?;
    if !f.complete() {
        return Err(file_not_found());
    }
    let range = parse_range(
        req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        f.size_original,
    )?;
    let (start, end) = range.unwrap_or((0, f.size_original.saturating_sub(1)));
    let chunks = chunks_of(&*ctx.view, &ctx.project, &f, start, end)?;
    let key = file_key(&ctx, &f, &chunks)?;
    let content_type = match inline && !VIEWABLE.contains(&f.mime_type.as_str()) {
        true => "text/plain".to_string(),
        false => f.mime_type.clone(),
    };
    let body = Body::from_stream(chunk_stream(s, f.clone(), chunks, key, start, end));
    let mut res = Response::new(body);
    *res.status_mut() = match range {
        Some(_) => StatusCode::PARTIAL_CONTENT,
        None => StatusCode::OK,
    };
    let h = res.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    h.insert(header::CONTENT_TYPE, value(&content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3888000"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        value(&disposition(
            if inline { "inline" } else { "attachment" },
            &f.name,
        )),
    );
    if inline {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("script-src 'none';"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{end}/{}", f.size_original)),
        );
    }
    Ok(res)
}

/// The chunks of `f` that hold bytes `start..=end`, read from the view now (the view is not
/// kept while the bytes stream out).
pub(super) fn chunks_of(
    view: &dyn model::reader::StateReader,
    project: &str,
    f: &File,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, ChunkRef)>, ApiError> {
    let (first, last) = (start / CHUNK_SIZE, end / CHUNK_SIZE);
    let mut out = Vec::with_capacity((last - first + 1) as usize);
    let mut next = first;
    while next <= last {
        let page = view.file_chunks(project, &f.bucket, &f.id, next, 1024)?;
        let before = out.len();
        for (i, c) in page {
            if i != next || i > last {
                break;
            }
            out.push((i, c));
            next += 1;
        }
        if out.len() == before {
            tracing::error!(file = %f.id, chunk = next, "a complete file lacks a chunk record");
            return Err(ApiError::new(ErrorCode::GeneralServerError, "Server Error"));
        }
    }
    Ok(out)
}

/// The key `chunks` of `f` are sealed under, if any of them is.
pub(super) fn file_key(
    ctx: &crate::auth::Ctx,
    f: &File,
    chunks: &[(u64, ChunkRef)],
) -> Result<Option<Arc<FileKey>>, ApiError> {
    if !chunks.iter().any(|(_, c)| c.encrypted) {
        return Ok(None);
    }
    let key = ctx
        .view
        .storage_key(&ctx.project)?
        .ok_or_else(|| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))?;
    Ok(Some(Arc::new(FileKey::derive(&key, &f.bucket, &f.id))))
}

/// Chunk `index` of `f`, fetched (this node's blob or a peer's) and decoded off the runtime.
pub(super) async fn plain_chunk(
    s: &AppState,
    f: &File,
    index: u64,
    chunk: ChunkRef,
    key: Option<Arc<FileKey>>,
) -> Result<Vec<u8>, std::io::Error> {
    let stored = s
        .backend
        .get_blob(chunk.blob.clone())
        .await
        .map_err(|e| std::io::Error::other(e.0.to_string()))?;
    tokio::task::spawn_blocking(move || codec::decode(stored.to_vec(), index, &chunk, key.as_deref()))
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| {
            tracing::error!(file = %f.id, chunk = index, error = %e, "a stored chunk could not be read");
            std::io::Error::other(e.to_string())
        })
}

/// The bytes `start..=end` of a file, chunk by chunk: the next chunk is fetched and decoded
/// while the current one is sent.
fn chunk_stream(
    s: AppState,
    f: File,
    chunks: Vec<(u64, ChunkRef)>,
    key: Option<Arc<FileKey>>,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures::stream::iter(chunks)
        .map(move |(index, chunk)| {
            let (s, f, key) = (s.clone(), f.clone(), key.clone());
            async move {
                let plain = plain_chunk(&s, &f, index, chunk, key).await?;
                let base = index * CHUNK_SIZE;
                let from = start.saturating_sub(base) as usize;
                let to = ((end - base + 1) as usize).min(plain.len());
                Ok(bytes::Bytes::from(plain).slice(from..to))
            }
        })
        .buffered(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_one_satisfiable_span() {
        assert_eq!(parse_range(None, 10).unwrap(), None);
        assert_eq!(parse_range(Some("bytes=0-"), 10).unwrap(), Some((0, 9)));
        assert_eq!(parse_range(Some("bytes=2-5"), 10).unwrap(), Some((2, 5)));
        assert_eq!(parse_range(Some("bytes=9-9"), 10).unwrap(), Some((9, 9)));
        for bad in [
            "bytes=988",
            "bytes=-988",
            "bytes=5-2",
            "bytes=0-10",
            "items=0-1",
            "bytes=0-1,3-4",
        ] {
            assert!(parse_range(Some(bad), 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn dispositions_keep_quotes_intact() {
        assert_eq!(
            disposition("attachment", "a\"b.txt"),
            "attachment; filename=\"a_b.txt\"; filename*=UTF-8''a%22b%2Etxt"
        );
    }
}
