//! The databases' audit trail (the console's `listLogs`, `listCollectionLogs`/`listTableLogs`,
//! `listDocumentLogs`/`listRowLogs`): one entry per audited write, filed under the resource it
//! changed as Appwrite names resources (`database/{db}`, `database/{db}/collection/{c}`,
//! `database/{db}/collection/{c}/document/{d}`; a TablesDB write is filed under the same
//! names, and rendered with TablesDB's event names when listed through TablesDB).
//!
//! Entries are documents of a system collection of the auth database, indexed by resource, so
//! they are counted, paged and replicated like rows. A resource keeps its newest
//! [`MAX_PER_RESOURCE`] entries, and no entry outlives [`RETENTION_MS`] (Appwrite's default
//! audit retention), so the trail is bounded by the write rate, not by the project's age.

use crate::auth::{attr, index, system};
use crate::command::Data;
use crate::schema::{AttrKind, Collection, Document, IndexKind};
use crate::value::Value;
use std::sync::OnceLock;

pub const AUDIT: &str = "audit";
/// Entries one resource keeps; a new one ends its oldest.
pub const MAX_PER_RESOURCE: u64 = 1000;
/// How long an entry is kept: 14 days, Appwrite's `_APP_MAINTENANCE_RETENTION_AUDIT`.
pub const RETENTION_MS: i64 = 14 * 24 * 3600 * 1000;
/// Expired entries removed per audited write (a few, so the trail shrinks after a burst
/// and no apply does unbounded work).
pub const PRUNE_PER_WRITE: usize = 4;

/// The audit collection, indexed by resource (entries of a resource in the order written).
pub fn collection() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        system(
            AUDIT,
            vec![
                attr("resource", String, Some(512), false),
                attr("event", String, Some(64), false),
                attr("userId", String, Some(36), false),
                attr("mode", String, Some(16), false),
                attr("userType", String, Some(16), false),
                attr("ip", String, Some(45), false),
                attr("userAgent", String, Some(1024), false),
            ],
            vec![index("_key_resource", IndexKind::Key, &["resource"])],
        )
    })
}

/// The resource name of a database, a collection of it, or a document of that.
pub fn resource(database: &str, collection: Option<&str>, document: Option<&str>) -> String {
    let mut r = format!("database/{database}");
    if let Some(c) = collection {
        r.push_str("/collection/");
        r.push_str(c);
        if let Some(d) = document {
            r.push_str("/document/");
            r.push_str(d);
        }
    }
    r
}

/// One audited write. Its time is its document's `$createdAt`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub resource: String,
    /// The event in the Databases service's names (`document.create`, `attribute.update`,
    /// `documents.delete`, ...); [`tablesdb_event`] renames it for TablesDB.
    pub event: String,
    /// The user who wrote (empty for a key or the operator).
    pub user_id: String,
    /// `admin` (a key or the operator) or `default` (a user or a guest).
    pub mode: String,
    /// `user`, `guest`, `keys` or `console` (the operator).
    pub user_type: String,
    pub ip: String,
    pub user_agent: String,
    pub created_at: i64,
}

impl Entry {
    pub fn from_document(d: &Document) -> Entry {
        let g = |k: &str| match d.data.get(k) {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        };
        Entry {
            resource: g("resource"),
            event: g("event"),
            user_id: g("userId"),
            mode: g("mode"),
            user_type: g("userType"),
            ip: g("ip"),
            user_agent: g("userAgent"),
            created_at: d.created_at,
        }
    }

    pub fn data(&self) -> Data {
        [
            ("resource", &self.resource),
            ("event", &self.event),
            ("userId", &self.user_id),
            ("mode", &self.mode),
            ("userType", &self.user_type),
            ("ip", &self.ip),
            ("userAgent", &self.user_agent),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::Str(v.clone())))
        .collect()
    }
}

/// An event as TablesDB names it: `document.create` → `row.create`, `collection.update` →
/// `table.update`, `attribute.delete` → `column.delete`, `documents.update` → `rows.update`.
pub fn tablesdb_event(event: &str) -> String {
    let (noun, verb) = event.split_once('.').unwrap_or((event, ""));
    let noun = match noun {
        "document" => "row",
        "documents" => "rows",
        "collection" => "table",
        "collections" => "tables",
        "attribute" => "column",
        other => other,
    };
    match verb.is_empty() {
        true => noun.to_string(),
        false => format!("{noun}.{verb}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_named_as_appwrite_names_them() {
        assert_eq!(resource("db", None, None), "database/db");
        assert_eq!(resource("db", Some("c"), None), "database/db/collection/c");
        assert_eq!(
            resource("db", Some("c"), Some("d")),
            "database/db/collection/c/document/d"
        );
    }

    #[test]
    fn tablesdb_renames_the_nouns_it_renames() {
        assert_eq!(tablesdb_event("document.create"), "row.create");
        assert_eq!(tablesdb_event("documents.delete"), "rows.delete");
        assert_eq!(tablesdb_event("collection.update"), "table.update");
        assert_eq!(tablesdb_event("attribute.create"), "column.create");
        assert_eq!(tablesdb_event("index.create"), "index.create");
        assert_eq!(tablesdb_event("database.delete"), "database.delete");
    }

    #[test]
    fn an_entry_survives_its_document() {
        let e = Entry {
            resource: resource("db", Some("c"), Some("d")),
            event: "document.update".into(),
            user_id: "u1".into(),
            mode: "default".into(),
            user_type: "user".into(),
            ip: "127.0.0.1".into(),
            user_agent: "test".into(),
            created_at: 5,
        };
        let d = Document {
            id: "x".into(),
            sequence: 1,
            created_at: 5,
            updated_at: 5,
            permissions: Vec::new(),
            data: e.data(),
        };
        assert_eq!(Entry::from_document(&d), e);
    }
}
