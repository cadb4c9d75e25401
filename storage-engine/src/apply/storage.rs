//! Buckets and files (`StorageOp`). A file's record is a document of its bucket's files
//! collection; each of its chunks is a meta record naming a content-addressed blob, and every
//! blob named counts its references (`keys::blob_refs`), so each node knows which blobs it
//! must hold and which it may reclaim. Apply never sees a byte of a file: the proposer stored
//! the chunk's blob on a quorum of nodes before it proposed the chunk.

use super::documents::{check_grants, initial_permissions, next_sequence, write_document};
use super::store::{doc_prefix, load_document};
use super::txn::{Txn, DOCS, META};
use super::{err, unauthorized, Caller, Failure, R};
use crate::engine::{decode, decode_document, encode};
use crate::keys;
use model::command::{FileUpload, StorageOp};
use model::msg;
use model::schema::Document;
use model::storage::{self, Bucket, ChunkRef, File};
use model::{ErrorCode, Outcome};
use sha2::{Digest, Sha256};

/// Chunks one apply removes while it deletes a bucket's files, about (at least one file goes
/// per apply, whatever its size: a file has at most `MAX_FILE_SIZE / CHUNK_SIZE` chunks).
const BUCKET_DELETE_CHUNKS: u64 = 20_480;
/// The most bytes a stored chunk may hold (a 5 MiB chunk, compressed and sealed): as the
/// blob store takes them.
const MAX_STORED_CHUNK: u64 = 6 << 20;

pub(super) fn apply(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    op: &StorageOp,
    at: i64,
) -> R<Outcome> {
    match op {
        StorageOp::CreateBucket { bucket } => {
            privileged(caller)?;
            if load_document(txn, project, storage::buckets(), &bucket.id)?.is_some()
                || has_files(txn, project, &bucket.id)?
            {
                return Err(err(
                    ErrorCode::StorageBucketAlreadyExists,
                    "A storage bucket with the requested ID already exists. Try again with a different ID or use ID.unique() to generate a unique ID.",
                ));
            }
            let mut b = (**bucket).clone();
            b.created_at = at;
            b.updated_at = at;
            b.total_size = 0;
            b.deleting = false;
            let coll = storage::buckets();
            let doc = Document {
                id: b.id.clone(),
                sequence: next_sequence(txn, project, coll)?,
                created_at: at,
                updated_at: at,
                permissions: b.permissions.clone(),
                data: b.data(),
            };
            write_document(txn, project, coll, None, Some(&doc))?;
            Ok(Outcome::Bucket(Box::new(b)))
        }
        StorageOp::UpdateBucket { bucket } => {
            privileged(caller)?;
            let (old, current) = load_bucket(txn, project, caller, &bucket.id)?;
            let mut b = (**bucket).clone();
            b.created_at = current.created_at;
            b.updated_at = at;
            b.total_size = current.total_size;
            b.deleting = current.deleting;
            save_bucket(txn, project, &old, &b)?;
            Ok(Outcome::Bucket(Box::new(b)))
        }
        StorageOp::DeleteBucket { id } => {
            privileged(caller)?;
            // The bucket stays, marked, while its files go in bounded chunks; it goes with the
            // last of them. An interrupted delete is finished by sending it again.
            let (bdoc, mut b) = load_bucket(txn, project, caller, id)?;
            if !b.deleting {
                b.deleting = true;
                b.updated_at = at;
                save_bucket(txn, project, &bdoc, &b)?;
            }
            let coll = storage::files(&b);
            let prefix = doc_prefix(project, &coll);
            let mut budget = BUCKET_DELETE_CHUNKS;
            let mut more = false;
            for (k, v) in txn.scan_limit(DOCS, &prefix, storage::BUCKET_DELETE_CHUNK)? {
                if budget == 0 {
                    more = true;
                    break;
                }
                let doc = decode_document(&coll, &k, &v)?;
                let file = File::from_document(id, &doc);
                budget = budget.saturating_sub(file.chunks_received.max(1));
                remove_file(txn, project, &coll, &doc)?;
            }
            if more || has_files(txn, project, id)? {
                return Ok(Outcome::Range {
                    documents: Vec::new(),
                    next: Some(0),
                });
            }
            let bdoc = load_document(txn, project, storage::buckets(), id)?
                .ok_or_else(bucket_not_found)?;
            write_document(txn, project, storage::buckets(), Some(&bdoc), None)?;
            Ok(Outcome::Done)
        }
        StorageOp::PutChunk {
            bucket,
            upload,
            index,
            chunk,
        } => put_chunk(txn, project, caller, bucket, upload, *index, chunk, at),
        StorageOp::UpdateFile {
            bucket,
            id,
            name,
            permissions,
        } => {
            let (_, b) = load_bucket(txn, project, caller, bucket)?;
            let coll = storage::files(&b);
            let old = file_for(txn, project, caller, &coll, id, "update")?;
            check_grants(caller, permissions)?;
            let mut f = File::from_document(bucket, &old);
            if let Some(n) = name {
                f.name = n.clone();
            }
            if let Some(p) = permissions {
                f.permissions = p.clone();
            }
            f.updated_at = at;
            let mut doc = old.clone();
            doc.data = f.data();
            doc.permissions = f.permissions.clone();
            doc.updated_at = at;
            write_document(txn, project, &coll, Some(&old), Some(&doc))?;
            Ok(Outcome::File(Box::new(f)))
        }
        StorageOp::DeleteFile { bucket, id } => {
            let (bdoc, mut b) = load_bucket(txn, project, caller, bucket)?;
            let coll = storage::files(&b);
            let old = file_for(txn, project, caller, &coll, id, "delete")?;
            let f = File::from_document(bucket, &old);
            remove_file(txn, project, &coll, &old)?;
            if f.complete() {
                b.total_size = b.total_size.saturating_sub(f.size_original);
                b.updated_at = at;
                save_bucket(txn, project, &bdoc, &b)?;
            }
            Ok(Outcome::Done)
        }
        StorageOp::CreateToken { token } => {
            privileged(caller)?;
            let (bucket, file) = token
                .resource_id
                .split_once(':')
                .ok_or_else(file_not_found)?;
            let (_, b) = load_bucket(txn, project, caller, bucket)?;
            if load_document(txn, project, &storage::files(&b), file)?.is_none() {
                return Err(file_not_found());
            }
            let coll = storage::tokens();
            if load_document(txn, project, coll, &token.id)?.is_some() {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "A token with the requested ID already exists.",
                ));
            }
            if tokens_of(txn, project, &token.resource_id)?.len() >= storage::MAX_TOKENS_PER_FILE {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    msg!(
                        "A file may have at most {} tokens.",
                        storage::MAX_TOKENS_PER_FILE
                    ),
                ));
            }
            let mut t = (**token).clone();
            t.created_at = at;
            t.updated_at = at;
            let doc = Document {
                id: t.id.clone(),
                sequence: next_sequence(txn, project, coll)?,
                created_at: at,
                updated_at: at,
                permissions: Vec::new(),
                data: t.data(),
            };
            write_document(txn, project, coll, None, Some(&doc))?;
            Ok(Outcome::ResourceToken(Box::new(t)))
        }
        StorageOp::UpdateToken { id, expire } => {
            privileged(caller)?;
            let coll = storage::tokens();
            let old = load_document(txn, project, coll, id)?.ok_or_else(token_not_found)?;
            let mut t = storage::ResourceToken::from_document(&old);
            t.expire = *expire;
            t.updated_at = at;
            let mut doc = old.clone();
            doc.data = t.data();
            doc.updated_at = at;
            write_document(txn, project, coll, Some(&old), Some(&doc))?;
            Ok(Outcome::ResourceToken(Box::new(t)))
        }
        StorageOp::DeleteToken { id } => {
            privileged(caller)?;
            let coll = storage::tokens();
            let old = load_document(txn, project, coll, id)?.ok_or_else(token_not_found)?;
            write_document(txn, project, coll, Some(&old), None)?;
            Ok(Outcome::Done)
        }
        StorageOp::InitKey { secret } => {
            let k = keys::meta(project, keys::STORAGE_KEY, &[]);
            super::store::put_if_absent(txn, k, secret.as_bytes())?;
            Ok(Outcome::Done)
        }
    }
}

fn privileged(caller: &Caller) -> R<()> {
    match caller {
        Caller::Privileged => Ok(()),
        Caller::Roles { .. } => Err(unauthorized()),
    }
}

fn bucket_not_found() -> Failure {
    err(
        ErrorCode::StorageBucketNotFound,
        "Storage bucket with the requested ID could not be found.",
    )
}

fn file_not_found() -> Failure {
    err(
        ErrorCode::StorageFileNotFound,
        "The requested file could not be found.",
    )
}

fn invalid_range(m: impl Into<model::error::Message>) -> Failure {
    err(ErrorCode::StorageInvalidContentRange, m)
}

fn empty_bucket() -> Bucket {
    Bucket {
        id: String::new(),
        created_at: 0,
        updated_at: 0,
        permissions: Vec::new(),
        file_security: false,
        name: String::new(),
        enabled: false,
        maximum_file_size: 0,
        allowed_file_extensions: Vec::new(),
        compression: storage::Compression::None,
        encryption: false,
        antivirus: false,
        transformations: false,
        total_size: 0,
        description: String::new(),
        deleting: false,
    }
}

/// A bucket, as its caller may see it: a disabled one does not exist for users and guests.
fn load_bucket(txn: &Txn, project: &str, caller: &Caller, id: &str) -> R<(Document, Bucket)> {
    let doc = load_document(txn, project, storage::buckets(), id)?.ok_or_else(bucket_not_found)?;
    let b = Bucket::from_document(&doc);
    if !b.enabled && !matches!(caller, Caller::Privileged) {
        return Err(bucket_not_found());
    }
    Ok((doc, b))
}

fn save_bucket(txn: &mut Txn, project: &str, old: &Document, b: &Bucket) -> R<()> {
    let mut doc = old.clone();
    doc.data = b.data();
    doc.permissions = b.permissions.clone();
    doc.updated_at = b.updated_at;
    write_document(txn, project, storage::buckets(), Some(old), Some(&doc))
}

fn has_files(txn: &Txn, project: &str, bucket: &str) -> R<bool> {
    let coll = storage::files(&Bucket {
        id: bucket.to_string(),
        ..empty_bucket()
    });
    Ok(!txn
        .scan_limit(DOCS, &doc_prefix(project, &coll), 1)?
        .is_empty())
}

/// A file the caller may `action` (update, delete), through the bucket or, under file
/// security, the file: refused (401) if it may only read it, not found if it may not even
/// read it.
fn file_for(
    txn: &Txn,
    project: &str,
    caller: &Caller,
    coll: &model::Collection,
    id: &str,
    action: &str,
) -> R<Document> {
    let doc = load_document(txn, project, coll, id)?.ok_or_else(file_not_found)?;
    if let Caller::Roles { roles, .. } = caller {
        if !coll.grants(Some(&doc), action, roles) {
            return Err(match coll.grants(Some(&doc), "read", roles) {
                true => unauthorized(),
                false => file_not_found(),
            });
        }
    }
    Ok(doc)
}

/// Counts one more (`delta` 1) or one fewer (-1) reference to `blob`; the count's record goes
/// with its last reference.
fn count_blob(txn: &mut Txn, blob: &str, delta: i64) -> R<()> {
    let k = keys::blob_refs(blob);
    let n = match txn.get(META, &k)? {
        Some(v) => u64::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| crate::engine::corrupt(&k, "not 8 bytes"))?,
        ),
        None => 0,
    };
    let n = match delta {
        d if d >= 0 => n.saturating_add(d as u64),
        d => n.saturating_sub(d.unsigned_abs()),
    };
    match n {
        0 => txn.del(META, k),
        n => txn.put(META, k, n.to_be_bytes().to_vec()),
    }
    Ok(())
}

/// Who an upload is recorded as begun by: `user:<id>`, `guests` (any guest may continue a
/// guest's upload, as Appwrite lets anyone the bucket lets create), or nobody for a key's.
fn uploader(caller: &Caller) -> String {
    match caller {
        Caller::Roles { user: Some(u), .. } => format!("user:{u}"),
        Caller::Roles { user: None, .. } => "guests".to_string(),
        Caller::Privileged => String::new(),
    }
}

fn token_not_found() -> Failure {
    err(
        ErrorCode::TokenNotFound,
        "The requested token could not be found.",
    )
}

/// The tokens of resource `resource` (at most `MAX_TOKENS_PER_FILE` exist).
fn tokens_of(txn: &Txn, project: &str, resource: &str) -> R<Vec<Document>> {
    super::auth::by_index(
        txn,
        project,
        storage::tokens(),
        "_key_resource",
        resource,
        storage::MAX_TOKENS_PER_FILE,
    )
}

/// Removes a file's record and its chunks, dropping their blobs' references.
fn remove_file(txn: &mut Txn, project: &str, coll: &model::Collection, doc: &Document) -> R<()> {
    let bucket = storage::bucket_of(&coll.id).unwrap_or_default().to_string();
    let prefix = keys::meta_prefix(project, keys::FILE_CHUNK, &[&bucket, &doc.id]);
    let chunks = txn.scan_limit(META, &prefix, usize::MAX)?;
    for (k, v) in chunks {
        let c: ChunkRef = decode(&k, &v)?;
        count_blob(txn, &c.blob, -1)?;
        txn.del(META, k);
    }
    for t in tokens_of(txn, project, &storage::file_resource(&bucket, &doc.id))? {
        write_document(txn, project, storage::tokens(), Some(&t), None)?;
    }
    write_document(txn, project, coll, Some(doc), None)
}

#[allow(clippy::too_many_arguments)]
fn put_chunk(
    txn: &mut Txn,
    project: &str,
    caller: &Caller,
    bucket: &str,
    upload: &FileUpload,
    index: u64,
    chunk: &ChunkRef,
    at: i64,
) -> R<Outcome> {
    let (bdoc, mut b) = load_bucket(txn, project, caller, bucket)?;
    if b.deleting {
        return Err(bucket_not_found());
    }
    if let Caller::Roles { roles, .. } = caller {
        if !model::permission::allows(&b.permissions, "create", roles) {
            return Err(unauthorized());
        }
    }
    // What the proposer says of the chunk is checked as far as apply can: a blob name, and
    // sizes a chunk can have.
    let sane = chunk.blob.len() == 64
        && chunk
            .blob
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        && chunk.plain_sha256.len() == 64
        && chunk.stored <= MAX_STORED_CHUNK;
    if !sane {
        return Err(err(ErrorCode::GeneralArgumentInvalid, "Invalid chunk."));
    }
    // The bucket's limits as they are now (they may have changed since the proposer looked).
    if upload.size == 0 {
        return Err(err(
            ErrorCode::StorageFileEmpty,
            "Empty file passed to the endpoint.",
        ));
    }
    if upload.size > b.maximum_file_size {
        return Err(err(
            ErrorCode::StorageInvalidFileSize,
            "File size not allowed",
        ));
    }
    if !b.allows_name(&upload.name) {
        return Err(err(
            ErrorCode::StorageFileTypeUnsupported,
            "File extension not allowed",
        ));
    }
    let total = storage::chunks_for(upload.size);
    if index >= total || chunk.size != storage::chunk_len(upload.size, index) {
        return Err(invalid_range("Invalid content-range header"));
    }
    check_grants(caller, &upload.permissions)?;
    let coll = storage::files(&b);
    let (old, mut f) = match load_document(txn, project, &coll, &upload.id)? {
        Some(doc) => {
            let f = File::from_document(bucket, &doc);
            if f.complete() {
                return Err(err(
                    ErrorCode::StorageFileAlreadyExists,
                    "A storage file with the requested ID already exists.",
                ));
            }
            // An upload in progress is its uploader's to continue (or a key's, or anyone's
            // the file lets update): another user cannot slip chunks into it.
            if let Caller::Roles { roles, .. } = caller {
                let theirs = !f.uploader.is_empty() && f.uploader == uploader(caller);
                if !theirs && !coll.grants(Some(&doc), "update", roles) {
                    return Err(unauthorized());
                }
            }
            if f.encryption != chunk.encrypted || f.compression != chunk.compression {
                return Err(err(
                    ErrorCode::GeneralArgumentInvalid,
                    "The bucket's compression or encryption changed during this upload: upload the file again under a new ID.",
                ));
            }
            if f.size_original != upload.size {
                return Err(invalid_range(msg!(
                    "The upload of file '{}' is {} bytes long, not {}.",
                    upload.id,
                    f.size_original,
                    upload.size
                )));
            }
            (Some(doc), f)
        }
        None => (
            None,
            File {
                id: upload.id.clone(),
                bucket: bucket.to_string(),
                created_at: at,
                updated_at: at,
                permissions: initial_permissions(caller, &upload.permissions),
                name: upload.name.clone(),
                signature: String::new(),
                mime_type: upload.mime_type.clone(),
                size_original: upload.size,
                size_actual: 0,
                chunks_total: total,
                chunks_uploaded: 0,
                chunks_received: 0,
                encryption: chunk.encrypted,
                compression: chunk.compression,
                uploader: uploader(caller),
                folder: upload.folder.clone(),
            },
        ),
    };
    // The file's type is read from its first bytes, whichever chunk made its record.
    if index == 0 {
        f.mime_type = upload.mime_type.clone();
    }
    let key = keys::file_chunk(project, bucket, &upload.id, index);
    match txn.get_as::<ChunkRef>(META, &key)? {
        Some(prev) if prev == *chunk => {}
        prev => {
            if let Some(p) = &prev {
                count_blob(txn, &p.blob, -1)?;
                f.size_actual = f.size_actual.saturating_sub(p.stored);
            } else {
                f.chunks_received += 1;
            }
            count_blob(txn, &chunk.blob, 1)?;
            f.size_actual = f.size_actual.saturating_add(chunk.stored);
            txn.put(META, key, encode(chunk));
        }
    }
    while f.chunks_uploaded < f.chunks_total
        && txn
            .get(
                META,
                &keys::file_chunk(project, bucket, &upload.id, f.chunks_uploaded),
            )?
            .is_some()
    {
        f.chunks_uploaded += 1;
    }
    if f.complete() {
        f.signature = signature(txn, project, bucket, &upload.id)?;
        b.total_size = b.total_size.saturating_add(f.size_original);
        b.updated_at = at;
        save_bucket(txn, project, &bdoc, &b)?;
    }
    f.updated_at = at;
    let doc = Document {
        id: f.id.clone(),
        sequence: match &old {
            Some(d) => d.sequence,
            None => next_sequence(txn, project, &coll)?,
        },
        created_at: f.created_at,
        updated_at: at,
        permissions: f.permissions.clone(),
        data: f.data(),
    };
    write_document(txn, project, &coll, old.as_ref(), Some(&doc))?;
    Ok(Outcome::File(Box::new(f)))
}

/// A complete file's signature: the SHA-256 (hex) of its chunks' plain SHA-256s, in order.
fn signature(txn: &Txn, project: &str, bucket: &str, file: &str) -> R<String> {
    let prefix = keys::meta_prefix(project, keys::FILE_CHUNK, &[bucket, file]);
    let mut h = Sha256::new();
    for (k, v) in txn.scan_limit(META, &prefix, usize::MAX)? {
        let c: ChunkRef = decode(&k, &v)?;
        h.update(hex::decode(&c.plain_sha256).unwrap_or_default());
    }
    Ok(hex::encode(h.finalize()))
}
