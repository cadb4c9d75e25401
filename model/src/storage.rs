//! A project's buckets and files.
//!
//! Like users and teams, they are documents of system collections, in the reserved database
//! [`DB`] (`_storage`, an id no client can name): buckets in [`buckets`], and each bucket's
//! files in a collection of their own ([`files`]), whose permissions are the bucket's and whose
//! document security is the bucket's `fileSecurity`. So files are listed, queried, counted
//! and permission-filtered by the same executor as rows, and every change of them is an
//! envelope applied with its checks.
//!
//! A file's bytes are not in the state: it holds, per chunk of [`CHUNK_SIZE`] bytes, a
//! [`ChunkRef`] naming the content-addressed blob (the SHA-256 of its stored form) that every
//! node keeps beside the state (see the raft crate's `blobs`).

use crate::auth::{attr, flag, index, text};
use crate::command::Data;
use crate::schema::{AttrKind, Attribute, Collection, Document, Index, IndexKind};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The reserved database holding a project's buckets and files.
pub const DB: &str = "_storage";
pub const BUCKETS: &str = "buckets";
/// Resource tokens (the Tokens service): a file shared by a link.
pub const TOKENS: &str = "tokens";
/// Tokens one file may have at once.
pub const MAX_TOKENS_PER_FILE: usize = 100;
/// The prefix of a bucket's files collection: `files.<bucketId>`.
pub const FILES_PREFIX: &str = "files.";
/// Bytes per chunk: what Appwrite's SDKs send per request, and what a file is cut into.
pub const CHUNK_SIZE: u64 = 5 * 1024 * 1024;
/// The largest file a bucket may allow (and the default of `maximumFileSize`): 100 GiB,
/// 20,480 chunks, so that deleting one is a bounded apply.
pub const MAX_FILE_SIZE: u64 = 100 * 1024 * 1024 * 1024;
/// The longest file name kept.
pub const NAME_MAX: usize = 2048;
/// Allowed extensions a bucket may list, at most, and their longest.
pub const EXTENSIONS_MAX: usize = 100;
pub const EXTENSION_LEN_MAX: usize = 64;
/// Files one apply removes while a bucket is deleted (a bigger bucket takes several).
pub const BUCKET_DELETE_CHUNK: usize = 100;
/// The longest bucket description.
pub const DESCRIPTION_MAX: usize = 8192;

/// How a chunk's bytes are compressed before they are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// One stored chunk of a file: the blob holding it and how to read it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// SHA-256 (hex) of the stored bytes: the blob's name, checked on every read.
    pub blob: String,
    /// SHA-256 (hex) of the chunk's plain bytes (the file's signature is made from these).
    pub plain_sha256: String,
    /// Plain bytes.
    pub size: u64,
    /// Stored bytes (after compression and encryption).
    pub stored: u64,
    pub compression: Compression,
    /// Sealed with AES-256-GCM under the project's storage key (see `api::storage`).
    pub encrypted: bool,
}

/// A bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub permissions: Vec<String>,
    pub file_security: bool,
    pub name: String,
    pub enabled: bool,
    pub maximum_file_size: u64,
    /// Lower-case, without dots; empty allows every extension.
    pub allowed_file_extensions: Vec<String>,
    pub compression: Compression,
    pub encryption: bool,
    pub antivirus: bool,
    pub transformations: bool,
    /// Bytes of the bucket's complete files (plain sizes), kept by apply.
    pub total_size: u64,
    pub description: String,
    /// Its deletion has begun (its files go in bounded chunks, the bucket with the last):
    /// it takes no new uploads meanwhile.
    pub deleting: bool,
}

fn system(id: &str, attributes: Vec<Attribute>, indexes: Vec<Index>) -> Collection {
    crate::auth::system_in(DB, id, attributes, indexes)
}

/// The buckets collection: what `Storage.listBuckets` queries and searches. Only keys manage
/// buckets; a bucket's own `$permissions` are about its files.
pub fn buckets() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        system(
            BUCKETS,
            vec![
                attr("name", String, Some(128), false),
                attr("enabled", Boolean, None, false),
                attr("fileSecurity", Boolean, None, false),
                attr("maximumFileSize", Integer, None, false),
                attr("allowedFileExtensions", String, Some(64), true),
                attr("compression", String, Some(10), false),
                attr("encryption", Boolean, None, false),
                attr("antivirus", Boolean, None, false),
                attr("transformations", Boolean, None, false),
                attr("totalSize", Integer, None, false),
                attr("description", String, Some(DESCRIPTION_MAX as u64), false),
                attr("deleting", Boolean, None, false),
                attr("search", String, Some(16384), false),
            ],
            vec![
                index("_key_name", IndexKind::Key, &["name"]),
                index("_key_enabled", IndexKind::Key, &["enabled"]),
                index("_key_fileSecurity", IndexKind::Key, &["fileSecurity"]),
                index("_key_maximumFileSize", IndexKind::Key, &["maximumFileSize"]),
                index("_key_encryption", IndexKind::Key, &["encryption"]),
                index("_key_antivirus", IndexKind::Key, &["antivirus"]),
                index("_key_search", IndexKind::Fulltext, &["search"]),
            ],
        )
    })
}

/// The resource tokens collection, by resource (`<bucket>:<file>`).
pub fn tokens() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        system(
            TOKENS,
            vec![
                attr("resourceId", String, Some(128), false),
                attr("resourceType", String, Some(32), false),
                attr("expire", Integer, None, false),
            ],
            vec![index("_key_resource", IndexKind::Key, &["resourceId"])],
        )
    })
}

/// A token sharing one file (`Tokens.createFileToken`): whoever holds its secret reads the
/// file until it expires or is deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceToken {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// `<bucketId>:<fileId>`.
    pub resource_id: String,
    pub resource_type: String,
    /// Epoch ms; `None`: never.
    pub expire: Option<i64>,
}

impl ResourceToken {
    pub fn from_document(d: &Document) -> ResourceToken {
        let g = |k: &str| d.data.get(k);
        ResourceToken {
            id: d.id.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            resource_id: text(g("resourceId")),
            resource_type: text(g("resourceType")),
            expire: match g("expire") {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            },
        }
    }

    pub fn data(&self) -> Data {
        [
            ("resourceId", Value::Str(self.resource_id.clone())),
            ("resourceType", Value::Str(self.resource_type.clone())),
            ("expire", self.expire.map_or(Value::Null, Value::Int)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Does it still hold at `now` (epoch ms)?
    pub fn valid_at(&self, now: i64) -> bool {
        self.expire.is_none_or(|e| e > now)
    }
}

/// A file's resource id, as tokens name it.
pub fn file_resource(bucket: &str, file: &str) -> String {
    format!("{bucket}:{file}")
}

/// The id of bucket `bucket`'s files collection.
pub fn files_id(bucket: &str) -> String {
    format!("{FILES_PREFIX}{bucket}")
}

/// The bucket a files collection id belongs to.
pub fn bucket_of(collection: &str) -> Option<&str> {
    collection.strip_prefix(FILES_PREFIX)
}

/// A bucket's files collection: its permissions are the bucket's, its document security the
/// bucket's `fileSecurity`, and it is enabled with the bucket.
pub fn files(bucket: &Bucket) -> Collection {
    static BASE: OnceLock<Collection> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        use AttrKind::*;
        system(
            "files",
            vec![
                attr("name", String, Some(NAME_MAX as u64), false),
                attr("signature", String, Some(64), false),
                attr("mimeType", String, Some(255), false),
                attr("sizeOriginal", Integer, None, false),
                attr("sizeActual", Integer, None, false),
                attr("chunksTotal", Integer, None, false),
                attr("chunksUploaded", Integer, None, false),
                attr("chunksReceived", Integer, None, false),
                attr("encryption", Boolean, None, false),
                attr("compression", String, Some(10), false),
                attr("uploader", String, Some(64), false),
                attr("folder", String, Some(NAME_MAX as u64), false),
                attr("search", String, Some(16384), false),
            ],
            vec![
                index("_key_name", IndexKind::Key, &["name"]),
                index("_key_signature", IndexKind::Key, &["signature"]),
                index("_key_mimeType", IndexKind::Key, &["mimeType"]),
                index("_key_sizeOriginal", IndexKind::Key, &["sizeOriginal"]),
                index("_key_chunksTotal", IndexKind::Key, &["chunksTotal"]),
                index("_key_chunksUploaded", IndexKind::Key, &["chunksUploaded"]),
                index("_key_search", IndexKind::Fulltext, &["search"]),
            ],
        )
    });
    Collection {
        id: files_id(&bucket.id),
        name: bucket.name.clone(),
        enabled: bucket.enabled,
        permissions: bucket.permissions.clone(),
        document_security: bucket.file_security,
        ..base.clone()
    }
}

fn uint(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Bucket {
    pub fn from_document(d: &Document) -> Bucket {
        let g = |k: &str| d.data.get(k);
        Bucket {
            id: d.id.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            permissions: d.permissions.clone(),
            file_security: flag(g("fileSecurity")),
            name: text(g("name")),
            enabled: flag(g("enabled")),
            maximum_file_size: uint(g("maximumFileSize")),
            allowed_file_extensions: match g("allowedFileExtensions") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            },
            compression: Compression::parse(&text(g("compression"))).unwrap_or_default(),
            encryption: flag(g("encryption")),
            antivirus: flag(g("antivirus")),
            transformations: flag(g("transformations")),
            total_size: uint(g("totalSize")),
            description: text(g("description")),
            deleting: flag(g("deleting")),
        }
    }

    pub fn data(&self) -> Data {
        [
            ("name", Value::Str(self.name.clone())),
            ("enabled", Value::Bool(self.enabled)),
            ("fileSecurity", Value::Bool(self.file_security)),
            ("maximumFileSize", int(self.maximum_file_size)),
            (
                "allowedFileExtensions",
                Value::Array(
                    self.allowed_file_extensions
                        .iter()
                        .map(|e| Value::Str(e.clone()))
                        .collect(),
                ),
            ),
            ("compression", Value::Str(self.compression.as_str().into())),
            ("encryption", Value::Bool(self.encryption)),
            ("antivirus", Value::Bool(self.antivirus)),
            ("transformations", Value::Bool(self.transformations)),
            ("totalSize", int(self.total_size)),
            ("description", Value::Str(self.description.clone())),
            ("deleting", Value::Bool(self.deleting)),
            ("search", Value::Str(format!("{} {}", self.id, self.name))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Does the bucket take a file named `name`? Extensions compare without case.
    pub fn allows_name(&self, name: &str) -> bool {
        if self.allowed_file_extensions.is_empty() {
            return true;
        }
        let ext = extension(name);
        self.allowed_file_extensions
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&ext))
    }
}

/// A file name's extension, lower-case, without its dot (empty when it has none).
pub fn extension(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((_, ext)) if !ext.contains('/') => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// A file's record, complete or still being uploaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub id: String,
    pub bucket: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub permissions: Vec<String>,
    pub name: String,
    /// Empty until the upload completes: the SHA-256 (hex) of the chunks' plain SHA-256s,
    /// in order.
    pub signature: String,
    pub mime_type: String,
    pub size_original: u64,
    pub size_actual: u64,
    pub chunks_total: u64,
    /// Chunks stored from the first on, without a gap: what a client resumes after, and, once
    /// it equals `chunks_total`, the upload is complete.
    pub chunks_uploaded: u64,
    /// Distinct chunks stored, in any order.
    pub chunks_received: u64,
    pub encryption: bool,
    pub compression: Compression,
    /// Who began the upload (`user:<id>`, `guests`, or empty for a key): they may send its
    /// chunks until it is complete.
    pub uploader: String,
    /// The virtual folder holding the file (`a/b/`, empty at the bucket's root).
    pub folder: String,
}

impl File {
    pub fn from_document(bucket: &str, d: &Document) -> File {
        let g = |k: &str| d.data.get(k);
        File {
            id: d.id.clone(),
            bucket: bucket.to_string(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            permissions: d.permissions.clone(),
            name: text(g("name")),
            signature: text(g("signature")),
            mime_type: text(g("mimeType")),
            size_original: uint(g("sizeOriginal")),
            size_actual: uint(g("sizeActual")),
            chunks_total: uint(g("chunksTotal")),
            chunks_uploaded: uint(g("chunksUploaded")),
            chunks_received: uint(g("chunksReceived")),
            encryption: flag(g("encryption")),
            compression: Compression::parse(&text(g("compression"))).unwrap_or_default(),
            uploader: text(g("uploader")),
            folder: text(g("folder")),
        }
    }

    pub fn data(&self) -> Data {
        [
            ("name", Value::Str(self.name.clone())),
            ("signature", Value::Str(self.signature.clone())),
            ("mimeType", Value::Str(self.mime_type.clone())),
            ("sizeOriginal", int(self.size_original)),
            ("sizeActual", int(self.size_actual)),
            ("chunksTotal", int(self.chunks_total)),
            ("chunksUploaded", int(self.chunks_uploaded)),
            ("chunksReceived", int(self.chunks_received)),
            ("encryption", Value::Bool(self.encryption)),
            ("compression", Value::Str(self.compression.as_str().into())),
            ("uploader", Value::Str(self.uploader.clone())),
            ("folder", Value::Str(self.folder.clone())),
            ("search", Value::Str(format!("{} {}", self.id, self.name))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn complete(&self) -> bool {
        self.chunks_uploaded >= self.chunks_total
    }
}

/// How many chunks a file of `size` bytes is cut into (an empty file is refused before).
pub fn chunks_for(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE)
}

/// The plain size chunk `index` of a `size`-byte file must have.
pub fn chunk_len(size: u64, index: u64) -> u64 {
    size.saturating_sub(index.saturating_mul(CHUNK_SIZE))
        .min(CHUNK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cut_a_file_in_five_mebibytes() {
        assert_eq!(chunks_for(1), 1);
        assert_eq!(chunks_for(CHUNK_SIZE), 1);
        assert_eq!(chunks_for(CHUNK_SIZE + 1), 2);
        assert_eq!(chunk_len(CHUNK_SIZE + 1, 0), CHUNK_SIZE);
        assert_eq!(chunk_len(CHUNK_SIZE + 1, 1), 1);
        assert_eq!(chunk_len(CHUNK_SIZE + 1, 2), 0);
    }

    #[test]
    fn extensions_compare_without_case() {
        assert_eq!(extension("a.tar.GZ"), "gz");
        assert_eq!(extension("noext"), "");
        let b = Bucket {
            id: "b".into(),
            created_at: 0,
            updated_at: 0,
            permissions: vec![],
            file_security: false,
            name: "b".into(),
            enabled: true,
            maximum_file_size: MAX_FILE_SIZE,
            allowed_file_extensions: vec!["jpg".into(), "png".into()],
            compression: Compression::None,
            encryption: false,
            antivirus: false,
            transformations: true,
            total_size: 0,
            description: String::new(),
            deleting: false,
        };
        assert!(b.allows_name("x.JPG"));
        assert!(!b.allows_name("x.gif"));
        assert!(!b.allows_name("x"));
        let back = Bucket::from_document(&Document {
            id: "b".into(),
            sequence: 1,
            created_at: 0,
            updated_at: 0,
            permissions: vec![],
            data: b.data(),
        });
        assert_eq!(back, b);
    }
}
