//! What an applied log entry changed, as realtime sees it: every document (row, user, session,
//! team, membership, ...) written or deleted, in commit order, with the collection's read
//! rules as they stood when it committed. Apply produces these; each node's realtime hub turns
//! them into events for its own subscribers.

use crate::schema::Document;

/// What a change did to its document, as Appwrite names it in events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    /// An upsert, whether it created the document or updated it.
    Upsert,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Upsert => "upsert",
            Action::Delete => "delete",
        }
    }
}

/// One document's change within one envelope (several writes of the same document in one
/// envelope, e.g. a transaction's commit, are one change: first old to last new).
#[derive(Clone, Debug)]
pub struct Change {
    pub project: String,
    pub database: String,
    pub collection: String,
    pub action: Action,
    /// The document before (absent for a create).
    pub old: Option<Document>,
    /// The document after (absent for a delete).
    pub new: Option<Document>,
    /// The collection's permissions when the change committed.
    pub collection_permissions: Vec<String>,
    /// Whether the collection's documents carry permissions of their own.
    pub document_security: bool,
    /// Whether the database and the collection were enabled (a disabled one is not there for
    /// users).
    pub enabled: bool,
    /// Whether the database was made through TablesDB (its events name tables and rows too).
    pub tablesdb: bool,
    /// Leader time of the change (ms since the epoch).
    pub at: i64,
    /// How many bytes the document's stored value grew by (negative: shrank), as encoded
    /// in the document keyspace (usage counts these; 0 for the system databases).
    pub stored_bytes: i64,
}

impl Change {
    /// The document as the event shows it: as it is now, or as it was for a delete.
    pub fn document(&self) -> &Document {
        match (&self.new, &self.old) {
            (Some(d), _) | (None, Some(d)) => d,
            // Apply never records a change with neither side.
            (None, None) => unreachable!("a change has a document on one side"),
        }
    }

    pub fn id(&self) -> &str {
        &self.document().id
    }
}

/// The changes one applied log entry made, envelope by envelope, with the entry's position in
/// the log. Every entry is handed over, with or without changes, so a gap in the indexes
/// means entries were missed.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub index: u64,
    pub envelopes: Vec<Vec<Change>>,
}

/// Where a node's apply hands what each entry changed, in log order (its realtime hub).
/// Called on the apply path: it must not block or wait for subscribers.
pub trait Feed: Send + Sync {
    /// An entry was applied.
    fn applied(&self, applied: Applied);
    /// The state jumped to `index` without applying the entries before it (a snapshot was
    /// installed): whatever they changed is not in the feed.
    fn skipped(&self, index: u64);
}

/// Folds an envelope's changes into one per document (keyed by project, database, collection
/// and id), in the order each document was first changed: the first `old`, the last `new`. A
/// document created and deleted in the same envelope leaves nothing. An upsert anywhere in
/// the run keeps the action `upsert` unless the document ends deleted.
pub fn coalesce(changes: Vec<Change>) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::with_capacity(changes.len());
    let mut at: std::collections::HashMap<(String, String, String, String), usize> =
        std::collections::HashMap::new();
    for c in changes {
        let key = (
            c.project.clone(),
            c.database.clone(),
            c.collection.clone(),
            c.id().to_string(),
        );
        match at.get(&key) {
            None => {
                at.insert(key, out.len());
                out.push(c);
            }
            Some(&i) => {
                let first = &mut out[i];
                let upsert = first.action == Action::Upsert || c.action == Action::Upsert;
                first.new = c.new;
                first.collection_permissions = c.collection_permissions;
                first.document_security = c.document_security;
                first.enabled = c.enabled;
                first.at = c.at;
                first.stored_bytes += c.stored_bytes;
                first.action = match (&first.old, &first.new) {
                    (_, None) => Action::Delete,
                    _ if upsert => Action::Upsert,
                    (None, Some(_)) => Action::Create,
                    (Some(_), Some(_)) => Action::Update,
                };
            }
        }
    }
    out.retain(|c| c.old.is_some() || c.new.is_some());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, v: i64) -> Document {
        Document {
            id: id.into(),
            sequence: 1,
            created_at: 0,
            updated_at: v,
            permissions: vec![],
            data: Default::default(),
        }
    }

    fn change(id: &str, action: Action, old: Option<i64>, new: Option<i64>) -> Change {
        Change {
            project: "p".into(),
            database: "d".into(),
            collection: "c".into(),
            action,
            old: old.map(|v| doc(id, v)),
            new: new.map(|v| doc(id, v)),
            collection_permissions: vec![],
            document_security: true,
            enabled: true,
            tablesdb: false,
            at: 0,
            stored_bytes: 0,
        }
    }

    #[test]
    fn one_change_per_document_first_old_last_new() {
        let out = coalesce(vec![
            change("a", Action::Create, None, Some(1)),
            change("b", Action::Update, Some(1), Some(2)),
            change("a", Action::Update, Some(1), Some(3)),
            change("b", Action::Delete, Some(2), None),
            change("c", Action::Create, None, Some(1)),
            change("c", Action::Delete, Some(1), None),
            change("d", Action::Upsert, Some(1), Some(2)),
            change("d", Action::Update, Some(2), Some(3)),
        ]);
        let got: Vec<_> = out
            .iter()
            .map(|c| {
                (
                    c.id().to_string(),
                    c.action,
                    c.old.as_ref().map(|d| d.updated_at),
                    c.new.as_ref().map(|d| d.updated_at),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), Action::Create, None, Some(3)),
                ("b".into(), Action::Delete, Some(1), None),
                ("d".into(), Action::Upsert, Some(1), Some(3)),
            ]
        );
    }
}
