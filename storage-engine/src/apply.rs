//! `Engine::apply`: the deterministic state transition. Every command becomes one atomic
//! write batch; a failed check leaves the state untouched and returns `Outcome::Failed`.

use crate::engine::{decode, encode, Engine, StorageError, CF_DOCS, CF_INDEX, CF_META};
use crate::keys::{self, SEQ_INDEX};
use crate::validate;
use model::command::{AttributePatch, Data, DocOp, DocTarget};
use model::schema::{AttrKind, Collection, Document, Index, IndexKind, Order, TransactionStatus};
use model::{Command, Error, ErrorCode, Outcome, Value};
use rocksdb::{IteratorMode, WriteBatch};
use std::collections::BTreeMap;

const CFS: [&str; 3] = [CF_META, CF_DOCS, CF_INDEX];
const META: usize = 0;
const DOCS: usize = 1;
const INDEX: usize = 2;

pub const MAX_TRANSACTION_OPERATIONS: usize = 100;
pub const MAX_ATTRIBUTES: usize = 1000;
pub const MAX_INDEXES: usize = 64;

/// A write overlay over the database: reads see earlier writes of the same command.
pub(crate) struct Txn<'a> {
    eng: &'a Engine,
    writes: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>,
    range_deletes: Vec<(usize, Vec<u8>)>,
}

type R<T> = Result<T, Failure>;

/// Why an apply stopped: a deterministic user error, or the disk failing under us.
pub(crate) enum Failure {
    User(Error),
    Storage(StorageError),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::User(e)
    }
}
impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Failure::Storage(e)
    }
}
impl From<rocksdb::Error> for Failure {
    fn from(e: rocksdb::Error) -> Self {
        Failure::Storage(e.into())
    }
}

fn err(code: ErrorCode, msg: impl Into<String>) -> Failure {
    Failure::User(Error::new(code, msg))
}

impl<'a> Txn<'a> {
    pub(crate) fn new(eng: &'a Engine) -> Self {
        Txn {
            eng,
            writes: BTreeMap::new(),
            range_deletes: Vec::new(),
        }
    }

    fn get(&self, cf: usize, key: &[u8]) -> R<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(&(cf, key.to_vec())) {
            return Ok(v.clone());
        }
        if self
            .range_deletes
            .iter()
            .any(|(c, p)| *c == cf && key.starts_with(p))
        {
            return Ok(None);
        }
        Ok(self.eng.db.get_cf(self.eng.cf(CFS[cf]), key)?)
    }

    fn get_as<T: serde::de::DeserializeOwned>(&self, cf: usize, key: &[u8]) -> R<Option<T>> {
        match self.get(cf, key)? {
            Some(bytes) => Ok(Some(decode(key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, cf: usize, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert((cf, key), Some(value));
    }

    fn del(&mut self, cf: usize, key: Vec<u8>) {
        self.writes.insert((cf, key), None);
    }

    fn delete_prefix(&mut self, cf: usize, prefix: Vec<u8>) {
        self.writes
            .retain(|(c, k), _| !(*c == cf && k.starts_with(&prefix)));
        self.range_deletes.push((cf, prefix));
    }

    /// Every live key/value under `prefix`, merging the overlay with the database.
    fn scan(&self, cf: usize, prefix: &[u8]) -> R<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let deleted = |k: &[u8]| {
            self.range_deletes
                .iter()
                .any(|(c, p)| *c == cf && k.starts_with(p))
        };
        let iter = self.eng.db.iterator_cf(
            self.eng.cf(CFS[cf]),
            IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if !deleted(&k) {
                merged.insert(k.to_vec(), Some(v.to_vec()));
            }
        }
        for ((c, k), v) in self.writes.range((cf, prefix.to_vec())..) {
            if *c != cf || !k.starts_with(prefix) {
                break;
            }
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    pub(crate) fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (cf, prefix) in &self.range_deletes {
            batch.delete_range_cf(
                self.eng.cf(CFS[*cf]),
                prefix.as_slice(),
                keys::prefix_end(prefix).as_slice(),
            );
        }
        for ((cf, k), v) in self.writes {
            match v {
                Some(v) => batch.put_cf(self.eng.cf(CFS[cf]), k, v),
                None => batch.delete_cf(self.eng.cf(CFS[cf]), k),
            }
        }
        batch
    }
}

fn meta_key(parts: &[&str]) -> Vec<u8> {
    keys::join(parts)
}

impl Engine {
    /// Applies one command. `applied` is the Raft layer's opaque applied-state record,
    /// written in the same batch so state and applied index never disagree.
    pub fn apply(&self, cmd: &Command, applied: &[u8]) -> Result<Outcome, StorageError> {
        if let Command::Batch(cmds) = cmd {
            // Each command is its own atomic write batch, in order; all carry the same
            // applied record (they share one log entry).
            return cmds
                .iter()
                .map(|c| self.apply(c, applied))
                .collect::<Result<Vec<_>, _>>()
                .map(Outcome::Batch);
        }
        let mut txn = Txn::new(self);
        let outcome = match apply_command(&mut txn, cmd) {
            Ok(o) => o,
            Err(Failure::User(e)) => {
                // A failed check drops every change of the command — except a commit that
                // failed, whose overlay then holds only the transaction's new status.
                if !matches!(cmd, Command::CommitTransaction { .. }) {
                    txn = Txn::new(self);
                }
                Outcome::Failed(e)
            }
            Err(Failure::Storage(e)) => return Err(e),
        };
        txn.put(META, keys::APPLIED.to_vec(), applied.to_vec());
        self.write(txn.into_batch())?;
        Ok(outcome)
    }
}

impl Engine {
    /// Runs `read` over the state as it would be after `staged` — without writing anything.
    pub(crate) fn with_staged<T>(
        &self,
        project: &str,
        staged: &[DocTarget],
        now: i64,
        read: impl FnOnce(&Txn) -> R<T>,
    ) -> Result<T, Error> {
        let mut txn = Txn::new(self);
        let result = apply_doc_ops(&mut txn, project, staged, now).and_then(|_| read(&txn));
        match result {
            Ok(v) => Ok(v),
            Err(Failure::User(e)) => Err(e),
            Err(Failure::Storage(e)) => Err(e.into()),
        }
    }
}

pub(crate) fn staged_document(
    txn: &Txn,
    project: &str,
    coll: &Collection,
    id: &str,
) -> R<Option<Document>> {
    load_document(txn, project, coll, id)
}

pub(crate) fn staged_documents(txn: &Txn, project: &str, coll: &Collection) -> R<Vec<Document>> {
    all_documents(txn, project, coll)
}

fn apply_command(txn: &mut Txn, cmd: &Command) -> R<Outcome> {
    match cmd {
        Command::CreateProject { project } => {
            let k = meta_key(&[keys::PROJECT, &project.id]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(ErrorCode::ProjectAlreadyExists, "Project with the requested ID already exists. Try again with a different ID or use ID.unique() to generate a unique ID."));
            }
            txn.put(META, k, encode(project));
            Ok(Outcome::Project(project.clone()))
        }
        Command::CreateKey { key } => {
            require_project(txn, &key.project)?;
            let k = meta_key(&[keys::KEY, &key.project, &key.id]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::KeyAlreadyExists,
                    "Key with the same ID already exists. Try again with a different ID.",
                ));
            }
            txn.put(META, k, encode(key));
            txn.put(
                META,
                meta_key(&[keys::KEY_HASH, &key.secret_sha256]),
                keys::join(&[&key.project, &key.id]),
            );
            Ok(Outcome::Key(key.clone()))
        }
        Command::DeleteKey { project, id } => {
            let k = meta_key(&[keys::KEY, project, id]);
            let key: model::ApiKey = txn.get_as(META, &k)?.ok_or_else(|| {
                err(
                    ErrorCode::KeyNotFound,
                    "Key with the requested ID could not be found.",
                )
            })?;
            txn.del(META, k);
            txn.del(META, meta_key(&[keys::KEY_HASH, &key.secret_sha256]));
            Ok(Outcome::Done)
        }
        Command::CreateDatabase { project, database } => {
            require_project(txn, project)?;
            let k = meta_key(&[keys::DATABASE, project, &database.id]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::DatabaseAlreadyExists,
                    format!("Database with the requested ID '{}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID.", database.id),
                ));
            }
            txn.put(META, k, encode(database));
            Ok(Outcome::Database(database.clone()))
        }
        Command::UpdateDatabase {
            project,
            id,
            name,
            enabled,
            now,
        } => {
            let k = meta_key(&[keys::DATABASE, project, id]);
            let mut db = load_database(txn, project, id)?;
            if let Some(n) = name {
                db.name = n.clone();
            }
            if let Some(e) = enabled {
                db.enabled = *e;
            }
            db.updated_at = *now;
            txn.put(META, k, encode(&db));
            Ok(Outcome::Database(db))
        }
        Command::DeleteDatabase { project, id } => {
            load_database(txn, project, id)?;
            txn.del(META, meta_key(&[keys::DATABASE, project, id]));
            txn.delete_prefix(META, keys::prefix(&[keys::COLLECTION, project, id]));
            txn.delete_prefix(META, keys::prefix(&[keys::SEQUENCE, project, id]));
            txn.delete_prefix(DOCS, keys::prefix(&[project, id]));
            txn.delete_prefix(INDEX, keys::prefix(&[project, id]));
            Ok(Outcome::Done)
        }
        Command::CreateCollection {
            project,
            collection,
        } => {
            load_database(txn, project, &collection.database)?;
            let k = meta_key(&[
                keys::COLLECTION,
                project,
                &collection.database,
                &collection.id,
            ]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::CollectionAlreadyExists,
                    format!("A collection with the requested ID '{}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID.", collection.id),
                ));
            }
            let mut coll = collection.clone();
            coll.attributes.clear();
            coll.indexes.clear();
            for a in &collection.attributes {
                add_attribute(&mut coll, a.clone())?;
            }
            for i in &collection.indexes {
                check_index(&coll, i)?;
                coll.indexes.push(i.clone());
            }
            txn.put(META, k, encode(&coll));
            Ok(Outcome::Collection(coll))
        }
        Command::UpdateCollection {
            project,
            database,
            id,
            name,
            permissions,
            document_security,
            enabled,
            now,
        } => {
            let mut coll = load_collection(txn, project, database, id)?;
            if let Some(n) = name {
                coll.name = n.clone();
            }
            if let Some(p) = permissions {
                coll.permissions = p.clone();
            }
            if let Some(d) = document_security {
                coll.document_security = *d;
            }
            if let Some(e) = enabled {
                coll.enabled = *e;
            }
            coll.updated_at = *now;
            save_collection(txn, project, &coll);
            Ok(Outcome::Collection(coll))
        }
        Command::DeleteCollection {
            project,
            database,
            id,
        } => {
            load_collection(txn, project, database, id)?;
            txn.del(META, meta_key(&[keys::COLLECTION, project, database, id]));
            txn.del(META, meta_key(&[keys::SEQUENCE, project, database, id]));
            txn.delete_prefix(DOCS, keys::prefix(&[project, database, id]));
            txn.delete_prefix(INDEX, keys::prefix(&[project, database, id]));
            Ok(Outcome::Done)
        }
        Command::CreateAttribute {
            project,
            database,
            collection,
            attribute,
        } => {
            let mut coll = load_collection(txn, project, database, collection)?;
            add_attribute(&mut coll, attribute.clone())?;
            coll.updated_at = attribute.created_at;
            save_collection(txn, project, &coll);
            Ok(Outcome::Attribute(attribute.clone()))
        }
        Command::UpdateAttribute {
            project,
            database,
            collection,
            key,
            kind,
            patch,
            now,
        } => {
            let coll = load_collection(txn, project, database, collection)?;
            let (coll, attr) = update_attribute(txn, project, coll, key, *kind, patch, *now)?;
            save_collection(txn, project, &coll);
            Ok(Outcome::Attribute(attr))
        }
        Command::DeleteAttribute {
            project,
            database,
            collection,
            key,
            now,
        } => {
            let mut coll = load_collection(txn, project, database, collection)?;
            if coll.attribute(key).is_none() {
                return Err(attribute_not_found(key));
            }
            if let Some(i) = coll.indexes.iter().find(|i| i.attributes.contains(key)) {
                return Err(err(
                    ErrorCode::IndexDependency,
                    format!("Attribute '{key}' cannot be renamed or deleted. Please remove the associated index '{}' first.", i.key),
                ));
            }
            coll.attributes.retain(|a| a.key != *key);
            coll.updated_at = *now;
            rewrite_documents(txn, project, &coll, |data| {
                data.remove(key.as_str());
            })?;
            save_collection(txn, project, &coll);
            Ok(Outcome::Done)
        }
        Command::CreateIndex {
            project,
            database,
            collection,
            index,
        } => {
            let mut coll = load_collection(txn, project, database, collection)?;
            check_index(&coll, index)?;
            let docs = all_documents(txn, project, &coll)?;
            for doc in &docs {
                put_index_entries(txn, project, &coll, index, doc).map_err(|e| match e {
                    Failure::User(e) if e.code == ErrorCode::DocumentUniqueViolation => err(
                        ErrorCode::IndexInvalid,
                        "Unique index cannot be created: existing documents have duplicate values.",
                    ),
                    other => other,
                })?;
            }
            coll.indexes.push(index.clone());
            coll.updated_at = index.created_at;
            save_collection(txn, project, &coll);
            Ok(Outcome::Index(index.clone()))
        }
        Command::DeleteIndex {
            project,
            database,
            collection,
            key,
            now,
        } => {
            let mut coll = load_collection(txn, project, database, collection)?;
            if coll.index(key).is_none() {
                return Err(err(
                    ErrorCode::IndexNotFound,
                    format!("Index with the requested key '{key}' could not be found."),
                ));
            }
            coll.indexes.retain(|i| i.key != *key);
            coll.updated_at = *now;
            txn.delete_prefix(INDEX, keys::index_prefix(project, database, &coll.id, key));
            save_collection(txn, project, &coll);
            Ok(Outcome::Done)
        }
        Command::Documents { project, ops, now } => {
            let docs = apply_doc_ops(txn, project, ops, *now)?;
            Ok(Outcome::Documents(docs))
        }
        Command::CreateTransaction {
            project,
            transaction,
        } => {
            require_project(txn, project)?;
            let k = meta_key(&[keys::TRANSACTION, project, &transaction.id]);
            if txn.get(META, &k)?.is_some() {
                return Err(err(
                    ErrorCode::TransactionAlreadyExists,
                    format!("Transaction with the requested ID '{}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID.", transaction.id),
                ));
            }
            txn.put(META, k, encode(transaction));
            Ok(Outcome::Transaction(transaction.clone()))
        }
        Command::StageOperations {
            project,
            id,
            ops,
            now,
        } => {
            let mut t = pending_transaction(txn, project, id, *now)?;
            if t.operations.len() + ops.len() > MAX_TRANSACTION_OPERATIONS {
                return Err(err(
                    ErrorCode::TransactionLimitExceeded,
                    format!(
                        "Transaction already has {} operations, adding {} would exceed the maximum of {MAX_TRANSACTION_OPERATIONS}",
                        t.operations.len(),
                        ops.len()
                    ),
                ));
            }
            for op in ops {
                load_collection(txn, project, &op.database, &op.collection)?;
            }
            t.operations.extend(ops.iter().cloned());
            t.updated_at = *now;
            txn.put(
                META,
                meta_key(&[keys::TRANSACTION, project, id]),
                encode(&t),
            );
            Ok(Outcome::Transaction(t))
        }
        Command::CommitTransaction { project, id, now } => {
            let mut t = pending_transaction(txn, project, id, *now)?;
            let k = meta_key(&[keys::TRANSACTION, project, id]);
            let ops = std::mem::take(&mut t.operations);
            t.updated_at = *now;
            match apply_doc_ops(txn, project, &ops, *now) {
                Ok(_) => {
                    t.status = TransactionStatus::Committed;
                    t.operations = ops;
                    txn.put(META, k, encode(&t));
                    Ok(Outcome::Transaction(t))
                }
                Err(Failure::User(e)) => {
                    // Nothing of the transaction lands; only its status changes.
                    let mut clean = Txn::new(txn.eng);
                    t.status = TransactionStatus::Failed;
                    t.operations = ops;
                    clean.put(META, k, encode(&t));
                    *txn = clean;
                    Err(Failure::User(Error::new(
                        ErrorCode::TransactionFailed,
                        format!("The transaction has errored: {}", e.message),
                    )))
                }
                Err(other) => Err(other),
            }
        }
        Command::RollbackTransaction { project, id, now } => {
            let k = meta_key(&[keys::TRANSACTION, project, id]);
            let mut t = load_transaction(txn, project, id)?;
            if t.status != TransactionStatus::Pending {
                return Err(err(
                    ErrorCode::TransactionNotReady,
                    "The transaction is not ready yet. Please try again later.",
                ));
            }
            t.status = TransactionStatus::Failed;
            t.updated_at = *now;
            txn.put(META, k, encode(&t));
            Ok(Outcome::Transaction(t))
        }
        Command::Batch(_) => Err(err(
            ErrorCode::GeneralBadRequest,
            "A batch cannot be nested inside another command.",
        )),
        Command::DeleteTransaction { project, id } => {
            load_transaction(txn, project, id)?;
            txn.del(META, meta_key(&[keys::TRANSACTION, project, id]));
            Ok(Outcome::Done)
        }
    }
}

fn require_project(txn: &Txn, project: &str) -> R<()> {
    if txn
        .get(META, &meta_key(&[keys::PROJECT, project]))?
        .is_none()
    {
        return Err(err(ErrorCode::ProjectNotFound, "Project with the requested ID could not be found. Please check the value of the X-Appwrite-Project header to ensure the correct project ID is being used."));
    }
    Ok(())
}

fn load_database(txn: &Txn, project: &str, id: &str) -> R<model::Database> {
    txn.get_as(META, &meta_key(&[keys::DATABASE, project, id]))?
        .ok_or_else(|| {
            err(
                ErrorCode::DatabaseNotFound,
                format!("Database with the requested ID '{id}' could not be found."),
            )
        })
}

fn load_collection(txn: &Txn, project: &str, db: &str, id: &str) -> R<Collection> {
    load_database(txn, project, db)?;
    txn.get_as(META, &meta_key(&[keys::COLLECTION, project, db, id]))?
        .ok_or_else(|| {
            err(
                ErrorCode::CollectionNotFound,
                format!("Collection with the requested ID '{id}' could not be found."),
            )
        })
}

fn save_collection(txn: &mut Txn, project: &str, coll: &Collection) {
    txn.put(
        META,
        meta_key(&[keys::COLLECTION, project, &coll.database, &coll.id]),
        encode(coll),
    );
}

fn load_transaction(txn: &Txn, project: &str, id: &str) -> R<model::Transaction> {
    txn.get_as(META, &meta_key(&[keys::TRANSACTION, project, id]))?
        .ok_or_else(|| {
            err(
                ErrorCode::TransactionNotFound,
                format!("Transaction with the requested ID '{id}' could not be found."),
            )
        })
}

fn pending_transaction(txn: &Txn, project: &str, id: &str, now: i64) -> R<model::Transaction> {
    let t = load_transaction(txn, project, id)?;
    if t.status != TransactionStatus::Pending {
        return Err(err(
            ErrorCode::TransactionNotReady,
            format!(
                "The transaction is {} and can no longer change.",
                t.status.as_str()
            ),
        ));
    }
    if now >= t.expires_at {
        return Err(err(
            ErrorCode::TransactionExpired,
            "The transaction has expired. Please create a new transaction and try again.",
        ));
    }
    Ok(t)
}

fn attribute_not_found(key: &str) -> Failure {
    err(
        ErrorCode::AttributeNotFound,
        format!("Attribute with the requested key '{key}' could not be found."),
    )
}

fn add_attribute(coll: &mut Collection, attr: model::Attribute) -> R<()> {
    if coll.attribute(&attr.key).is_some() {
        return Err(err(
            ErrorCode::AttributeAlreadyExists,
            format!("Attribute with the requested key '{}' already exists. Attribute keys must be unique, try again with a different key.", attr.key),
        ));
    }
    if coll.attributes.len() >= MAX_ATTRIBUTES {
        return Err(err(
            ErrorCode::AttributeLimitExceeded,
            format!(
                "The maximum number or size of attributes for collection '{}' has been reached.",
                coll.id
            ),
        ));
    }
    validate::attribute(&attr)?;
    coll.attributes.push(attr);
    Ok(())
}

fn update_attribute(
    txn: &mut Txn,
    project: &str,
    mut coll: Collection,
    key: &str,
    kind: AttrKind,
    patch: &AttributePatch,
    now: i64,
) -> R<(Collection, model::Attribute)> {
    let pos = coll
        .attributes
        .iter()
        .position(|a| a.key == key)
        .ok_or_else(|| attribute_not_found(key))?;
    let mut attr = coll.attributes[pos].clone();
    let same_family = attr.kind == kind
        || (attr.kind.is_string() && kind.is_string() && attr.kind.format() == kind.format());
    if !same_family {
        return Err(err(
            ErrorCode::AttributeTypeInvalid,
            format!("The attribute '{key}' type is invalid."),
        ));
    }
    if let Some(r) = patch.required {
        attr.required = r;
    }
    if let Some(d) = &patch.default {
        attr.default = if d.is_null() { None } else { Some(d.clone()) };
    }
    if let Some(s) = patch.size {
        attr.size = Some(s);
    }
    if let Some(m) = &patch.min {
        attr.min = Some(m.clone());
    }
    if let Some(m) = &patch.max {
        attr.max = Some(m.clone());
    }
    if let Some(e) = &patch.elements {
        attr.elements = e.clone();
    }
    attr.updated_at = now;
    validate::attribute(&attr)?;
    if let Some(new_key) = patch.new_key.as_ref().filter(|k| k.as_str() != key) {
        if coll.attribute(new_key).is_some() {
            return Err(err(
                ErrorCode::AttributeAlreadyExists,
                format!("Attribute with the requested key '{new_key}' already exists. Attribute keys must be unique, try again with a different key."),
            ));
        }
        if coll
            .indexes
            .iter()
            .any(|i| i.attributes.iter().any(|a| a == key))
        {
            return Err(err(
                ErrorCode::IndexDependency,
                format!("Attribute '{key}' cannot be renamed or deleted. Please remove the associated index first."),
            ));
        }
        attr.key = new_key.clone();
        let (old, new) = (key.to_string(), new_key.clone());
        rewrite_documents(txn, project, &coll, |data| {
            if let Some(v) = data.remove(&old) {
                data.insert(new.clone(), v);
            }
        })?;
    }
    coll.attributes[pos] = attr.clone();
    coll.updated_at = now;
    Ok((coll, attr))
}

fn check_index(coll: &Collection, index: &Index) -> R<()> {
    if coll.index(&index.key).is_some() {
        return Err(err(
            ErrorCode::IndexAlreadyExists,
            format!(
                "Index with the requested key '{}' already exists. Try again with a different key.",
                index.key
            ),
        ));
    }
    if coll.indexes.len() >= MAX_INDEXES {
        return Err(err(
            ErrorCode::IndexInvalid,
            format!(
                "The maximum number of indexes for collection '{}' has been reached.",
                coll.id
            ),
        ));
    }
    if index.attributes.is_empty() || index.orders.len() > index.attributes.len() {
        return Err(err(
            ErrorCode::IndexInvalid,
            "Index invalid: attributes are required and orders may not outnumber them.",
        ));
    }
    let mut seen = Vec::new();
    for a in &index.attributes {
        if seen.contains(&a) {
            return Err(err(
                ErrorCode::IndexInvalid,
                format!("Index invalid: duplicate attribute \"{a}\"."),
            ));
        }
        seen.push(a);
        let system = matches!(
            a.as_str(),
            "$id" | "$createdAt" | "$updatedAt" | "$sequence"
        );
        let attr = coll.attribute(a);
        if attr.is_none() && !system {
            return Err(err(
                ErrorCode::AttributeUnknown,
                format!("The attribute '{a}' required for the index could not be found. Please confirm all your attributes are in the available state."),
            ));
        }
        if index.kind == IndexKind::Fulltext && !attr.is_some_and(|a| a.kind.is_string()) {
            return Err(err(
                ErrorCode::IndexInvalid,
                format!(
                    "Index invalid: fulltext indexes need string attributes, \"{a}\" is not one."
                ),
            ));
        }
    }
    if index.kind == IndexKind::Fulltext && index.attributes.len() != 1 {
        return Err(err(
            ErrorCode::IndexInvalid,
            "Index invalid: a fulltext index covers exactly one attribute.",
        ));
    }
    let arrays = index
        .attributes
        .iter()
        .filter(|a| coll.attribute(a).is_some_and(|a| a.array))
        .count();
    if arrays > 1 {
        return Err(err(
            ErrorCode::IndexInvalid,
            "Index invalid: at most one array attribute per index.",
        ));
    }
    Ok(())
}

fn doc_prefix(project: &str, coll: &Collection) -> Vec<u8> {
    keys::prefix(&[project, &coll.database, &coll.id])
}

fn all_documents(txn: &Txn, project: &str, coll: &Collection) -> R<Vec<Document>> {
    let prefix = doc_prefix(project, coll);
    txn.scan(DOCS, &prefix)?
        .into_iter()
        .map(|(k, v)| Ok(decode::<Document>(&k, &v)?))
        .collect()
}

fn rewrite_documents(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    f: impl Fn(&mut Data),
) -> R<()> {
    for mut doc in all_documents(txn, project, coll)? {
        f(&mut doc.data);
        txn.put(
            DOCS,
            keys::doc(project, &coll.database, &coll.id, &doc.id),
            encode(&doc),
        );
    }
    Ok(())
}

/// The index keys a document contributes to one index: (key, unique-checked).
pub(crate) fn index_keys(
    project: &str,
    coll: &Collection,
    index: &Index,
    doc: &Document,
) -> Vec<(Vec<u8>, bool)> {
    let prefix = keys::index_prefix(project, &coll.database, &coll.id, &index.key);
    if index.kind == IndexKind::Fulltext {
        let text = match doc.get(&index.attributes[0]) {
            Value::Str(s) => s,
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let mut toks = model::query::tokens(&text);
        toks.sort();
        toks.dedup();
        return toks
            .into_iter()
            .map(|t| {
                let mut k = prefix.clone();
                keys::encode_token(&mut k, &t, false);
                k.extend_from_slice(doc.id.as_bytes());
                (k, false)
            })
            .collect();
    }
    // One tuple per combination of array elements (at most one array attribute per index).
    let mut tuples: Vec<Vec<Value>> = vec![Vec::new()];
    for a in &index.attributes {
        let values = match doc.get(a) {
            Value::Array(items) if items.is_empty() => vec![Value::Null],
            Value::Array(items) => {
                let mut items = items;
                items.sort_by(|x, y| x.total_cmp(y));
                items.dedup_by(|x, y| x.loose_eq(y));
                items
            }
            v => vec![v],
        };
        tuples = tuples
            .into_iter()
            .flat_map(|t| {
                values.iter().map(move |v| {
                    let mut t = t.clone();
                    t.push(v.clone());
                    t
                })
            })
            .collect();
    }
    tuples
        .into_iter()
        .map(|t| {
            let unique = index.kind == IndexKind::Unique && t.iter().all(|v| !v.is_null());
            let mut k = prefix.clone();
            for (i, v) in t.iter().enumerate() {
                let order = index.orders.get(i).copied().unwrap_or(Order::Asc);
                keys::encode_value(&mut k, v, order);
            }
            if !unique {
                k.extend_from_slice(doc.id.as_bytes());
            }
            (k, unique)
        })
        .collect()
}

fn put_index_entries(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    index: &Index,
    doc: &Document,
) -> R<()> {
    for (k, unique) in index_keys(project, coll, index, doc) {
        if unique {
            if let Some(owner) = txn.get(INDEX, &k)? {
                if owner != doc.id.as_bytes() {
                    return Err(err(
                        ErrorCode::DocumentUniqueViolation,
                        "Document with the requested unique attributes already exists.",
                    ));
                }
            }
        }
        txn.put(INDEX, k, doc.id.as_bytes().to_vec());
    }
    Ok(())
}

fn seq_key(project: &str, coll: &Collection, seq: u64) -> Vec<u8> {
    let mut k = keys::index_prefix(project, &coll.database, &coll.id, SEQ_INDEX);
    k.extend_from_slice(&keys::seq_bytes(seq));
    k
}

/// Replaces `old` with `new` (either may be absent), keeping every index in step.
fn write_document(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    old: Option<&Document>,
    new: Option<&Document>,
) -> R<()> {
    if let Some(old) = old {
        for index in &coll.indexes {
            for (k, _) in index_keys(project, coll, index, old) {
                txn.del(INDEX, k);
            }
        }
        txn.del(INDEX, seq_key(project, coll, old.sequence));
    }
    match new {
        Some(new) => {
            for index in &coll.indexes {
                put_index_entries(txn, project, coll, index, new)?;
            }
            txn.put(
                INDEX,
                seq_key(project, coll, new.sequence),
                new.id.as_bytes().to_vec(),
            );
            txn.put(
                DOCS,
                keys::doc(project, &coll.database, &coll.id, &new.id),
                encode(new),
            );
        }
        None => {
            if let Some(old) = old {
                txn.del(DOCS, keys::doc(project, &coll.database, &coll.id, &old.id));
            }
        }
    }
    Ok(())
}

fn load_document(txn: &Txn, project: &str, coll: &Collection, id: &str) -> R<Option<Document>> {
    txn.get_as(DOCS, &keys::doc(project, &coll.database, &coll.id, id))
}

fn document_not_found(id: &str) -> Failure {
    err(
        ErrorCode::DocumentNotFound,
        format!("Document with the requested ID '{id}' could not be found."),
    )
}

fn next_sequence(txn: &mut Txn, project: &str, coll: &Collection) -> R<u64> {
    let k = meta_key(&[keys::SEQUENCE, project, &coll.database, &coll.id]);
    let cur: u64 = txn.get_as(META, &k)?.unwrap_or(0);
    txn.put(META, k, encode(&(cur + 1)));
    Ok(cur + 1)
}

fn apply_doc_ops(txn: &mut Txn, project: &str, ops: &[DocTarget], now: i64) -> R<Vec<Document>> {
    let mut out = Vec::new();
    let mut schemas: BTreeMap<(String, String), Collection> = BTreeMap::new();
    for t in ops {
        let key = (t.database.clone(), t.collection.clone());
        if !schemas.contains_key(&key) {
            let c = load_collection(txn, project, &t.database, &t.collection)?;
            schemas.insert(key.clone(), c);
        }
        let coll = schemas[&key].clone();
        doc_op(txn, project, &coll, &t.op, now, &mut out)?;
    }
    Ok(out)
}

fn doc_op(
    txn: &mut Txn,
    project: &str,
    coll: &Collection,
    op: &DocOp,
    now: i64,
    out: &mut Vec<Document>,
) -> R<()> {
    match op {
        DocOp::Create {
            id,
            data,
            permissions,
        } => {
            if load_document(txn, project, coll, id)?.is_some() {
                return Err(err(
                    ErrorCode::DocumentAlreadyExists,
                    format!("Document with the requested ID '{id}' already exists. Try again with a different ID or use ID.unique() to generate a unique ID."),
                ));
            }
            let data = validate::new_document(coll, data)?;
            let doc = Document {
                id: id.clone(),
                sequence: next_sequence(txn, project, coll)?,
                created_at: now,
                updated_at: now,
                permissions: permissions.clone().unwrap_or_default(),
                data,
            };
            write_document(txn, project, coll, None, Some(&doc))?;
            out.push(doc);
        }
        DocOp::Upsert {
            id,
            data,
            permissions,
        } => match load_document(txn, project, coll, id)? {
            Some(old) => {
                let doc = updated(coll, &old, data, permissions, now)?;
                write_document(txn, project, coll, Some(&old), Some(&doc))?;
                out.push(doc);
            }
            None => {
                let create = DocOp::Create {
                    id: id.clone(),
                    data: data.clone(),
                    permissions: permissions.clone(),
                };
                doc_op(txn, project, coll, &create, now, out)?;
            }
        },
        DocOp::Update {
            id,
            data,
            permissions,
        } => {
            let old =
                load_document(txn, project, coll, id)?.ok_or_else(|| document_not_found(id))?;
            let doc = updated(coll, &old, data, permissions, now)?;
            write_document(txn, project, coll, Some(&old), Some(&doc))?;
            out.push(doc);
        }
        DocOp::Delete { id } => {
            let old =
                load_document(txn, project, coll, id)?.ok_or_else(|| document_not_found(id))?;
            write_document(txn, project, coll, Some(&old), None)?;
            out.push(old);
        }
        DocOp::Increment {
            id,
            attr,
            by,
            bound,
        } => {
            let old =
                load_document(txn, project, coll, id)?.ok_or_else(|| document_not_found(id))?;
            let a = coll
                .attribute(attr)
                .ok_or_else(|| attribute_not_found(attr))?;
            if a.array
                || !matches!(
                    a.kind,
                    AttrKind::Integer | AttrKind::Bigint | AttrKind::Float
                )
            {
                return Err(err(
                    ErrorCode::AttributeTypeInvalid,
                    format!("Attribute \"{attr}\" is not a number"),
                ));
            }
            let current = old.get(attr);
            let next = match (a.kind, &current, by) {
                (
                    AttrKind::Integer | AttrKind::Bigint,
                    Value::Int(_) | Value::Null,
                    Value::Int(b),
                ) => {
                    let c = if let Value::Int(c) = current { c } else { 0 };
                    Value::Int(c.checked_add(*b).ok_or_else(|| {
                        err(
                            ErrorCode::AttributeValueInvalid,
                            format!("Attribute \"{attr}\" would overflow."),
                        )
                    })?)
                }
                _ => Value::Float(current.as_f64().unwrap_or(0.0) + by.as_f64().unwrap_or(0.0)),
            };
            if let Some(b) = bound {
                let up = by.as_f64().unwrap_or(0.0) >= 0.0;
                let over = if up {
                    next.total_cmp(b) == std::cmp::Ordering::Greater
                } else {
                    next.total_cmp(b) == std::cmp::Ordering::Less
                };
                if over {
                    let which = if up { "maximum" } else { "minimum" };
                    return Err(err(
                        ErrorCode::AttributeLimitExceeded,
                        format!(
                            "Attribute \"{attr}\" has reached the {which} value of {}",
                            b.to_json()
                        ),
                    ));
                }
            }
            let patch: Data = [(attr.clone(), next)].into_iter().collect();
            let doc = updated(coll, &old, &patch, &None, now)?;
            write_document(txn, project, coll, Some(&old), Some(&doc))?;
            out.push(doc);
        }
        DocOp::UpdateWhere { spec, data } => {
            for old in select(txn, project, coll, spec)? {
                let doc = updated(coll, &old, data, &None, now)?;
                write_document(txn, project, coll, Some(&old), Some(&doc))?;
                out.push(doc);
            }
        }
        DocOp::DeleteWhere { spec } => {
            for old in select(txn, project, coll, spec)? {
                write_document(txn, project, coll, Some(&old), None)?;
                out.push(old);
            }
        }
    }
    Ok(())
}

fn updated(
    coll: &Collection,
    old: &Document,
    data: &Data,
    permissions: &Option<Vec<String>>,
    now: i64,
) -> R<Document> {
    let mut doc = old.clone();
    doc.data = validate::update_document(coll, &old.data, data)?;
    if let Some(p) = permissions {
        doc.permissions = p.clone();
    }
    doc.updated_at = now;
    Ok(doc)
}

/// The documents a bulk operation targets: filters, order, cursor, offset and limit.
fn select(
    txn: &Txn,
    project: &str,
    coll: &Collection,
    spec: &model::query::Spec,
) -> R<Vec<Document>> {
    let mut spec = spec.clone();
    spec.validate(coll)?;
    let mut docs: Vec<Document> = all_documents(txn, project, coll)?
        .into_iter()
        .filter(|d| spec.matches(d))
        .collect();
    docs.sort_by(|a, b| spec.compare(a, b));
    let docs = crate::read::paginate::<Failure>(docs, &spec, |id| {
        load_document(txn, project, coll, id).ok().flatten()
    })?;
    Ok(docs)
}
