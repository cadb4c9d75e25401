//! Stored entities: projects, API keys, databases, collections (tables) with their
//! attributes (columns) and indexes, documents (rows) and transactions.

use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An API key. The secret itself is never stored: only its SHA-256, which is also the lookup key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub project: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// Expiry in epoch ms; `None` never expires.
    pub expire: Option<i64>,
    pub secret_sha256: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A client platform of a project: a web app's hostname (`*.example.com` covers the
/// subdomains), whose pages may call the API from the browser with credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    pub id: String,
    pub project: String,
    /// `web`.
    pub kind: String,
    pub name: String,
    pub hostname: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Platform {
    /// Does this platform cover a page on `host` (lower-case, no port)?
    pub fn covers(&self, host: &str) -> bool {
        let want = self.hostname.to_ascii_lowercase();
        match want.strip_prefix("*.") {
            Some(base) => host.len() > base.len() + 1 && host.ends_with(&format!(".{base}")),
            None => host == want,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Database {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    /// `legacy` (created through Databases) or `tablesdb`.
    pub kind: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    pub id: String,
    pub database: String,
    pub name: String,
    pub enabled: bool,
    pub permissions: Vec<String>,
    pub document_security: bool,
    pub attributes: Vec<Attribute>,
    pub indexes: Vec<Index>,
    /// Renames and deletions of attributes that stored documents may not have caught up
    /// with yet, oldest first (see `Reshape`). Kept in a record of its own beside the
    /// collection's (and loaded with it), so neither the collection record nor the commands
    /// that carry a collection change their encoding.
    #[serde(skip)]
    pub reshapes: Vec<Reshape>,
    /// The relationship of each relationship attribute, by key (a one-way relationship's
    /// hidden twin included). Kept in a record of its own beside the collection's, as
    /// `reshapes` is, for the same reason.
    #[serde(skip)]
    pub relations: BTreeMap<String, Relationship>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Appwrite's relationship types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelationType {
    OneToOne,
    OneToMany,
    ManyToOne,
    ManyToMany,
}

impl RelationType {
    pub fn parse(s: &str) -> Option<RelationType> {
        Some(match s {
            "oneToOne" => RelationType::OneToOne,
            "oneToMany" => RelationType::OneToMany,
            "manyToOne" => RelationType::ManyToOne,
            "manyToMany" => RelationType::ManyToMany,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RelationType::OneToOne => "oneToOne",
            RelationType::OneToMany => "oneToMany",
            RelationType::ManyToOne => "manyToOne",
            RelationType::ManyToMany => "manyToMany",
        }
    }
}

/// What deleting a row does to the rows it is related to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnDelete {
    /// Refused while related rows exist (`document_delete_restricted`).
    Restrict,
    /// The related rows are deleted too, in the same log entry.
    Cascade,
    /// The related rows' references to it are cleared.
    SetNull,
}

impl OnDelete {
    pub fn parse(s: &str) -> Option<OnDelete> {
        Some(match s {
            "restrict" => OnDelete::Restrict,
            "cascade" => OnDelete::Cascade,
            "setNull" => OnDelete::SetNull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Restrict => "restrict",
            OnDelete::Cascade => "cascade",
            OnDelete::SetNull => "setNull",
        }
    }
}

/// Which end of a relationship an attribute is: the one it was created on, or its twin on the
/// related collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    Parent,
    Child,
}

/// One end of a relationship between two collections. Where the link is kept follows the
/// type, as in Appwrite: a single reference (`oneToOne` from the parent, and from the child
/// too when two-way; `manyToOne` from the parent; `oneToMany` from the child) is the related
/// row's id in the row's own data; `manyToMany` keeps the list of related ids in the parent's
/// data. The other ends are found through an internal index over the stored end's key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relationship {
    pub related: String,
    pub kind: RelationType,
    pub two_way: bool,
    /// The key of the other end, on the related collection.
    pub two_way_key: String,
    pub on_delete: OnDelete,
    pub side: Side,
    /// The internal index over this end's key, when it keeps one (a name that survives a
    /// rename of the key).
    pub index: Option<String>,
}

impl Relationship {
    /// Does this end keep the related id(s) in the row's data?
    pub fn stored(&self) -> bool {
        use RelationType::*;
        match (self.kind, self.side) {
            (OneToOne, Side::Parent) | (ManyToOne, Side::Parent) => true,
            (OneToOne, Side::Child) => self.two_way,
            (OneToMany, Side::Child) => true,
            (ManyToMany, Side::Parent) => true,
            (OneToMany, Side::Parent) | (ManyToOne, Side::Child) | (ManyToMany, Side::Child) => {
                false
            }
        }
    }

    /// Does this end relate a row to a list of rows?
    pub fn many(&self) -> bool {
        use RelationType::*;
        matches!(
            (self.kind, self.side),
            (OneToMany, Side::Parent) | (ManyToOne, Side::Child) | (ManyToMany, _)
        )
    }

    /// Is this end an attribute clients see? A one-way relationship's twin is not.
    pub fn visible(&self) -> bool {
        self.side == Side::Parent || self.two_way
    }

    /// Does a row show this end's value without loading related rows (the related id, as
    /// Appwrite shows a foreign key)?
    pub fn shows_id(&self) -> bool {
        self.visible() && self.stored() && !self.many()
    }
}

/// A change of the document layout that documents stored before it may still have on disk:
/// an attribute renamed or deleted. Every read settles a document to the current layout
/// (`Collection::settle`), so the change is whole the moment it commits; a background job
/// then rewrites the stored documents in bounded chunks, one log entry each, and drops the
/// record when it is through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reshape {
    Rename { from: String, to: String },
    Drop { key: String },
}

impl Collection {
    pub fn attribute(&self, key: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.key == key)
    }

    /// Brings a stored document's data to the current layout.
    pub fn settle(&self, data: &mut BTreeMap<String, Value>) {
        for r in &self.reshapes {
            match r {
                Reshape::Rename { from, to } => {
                    if let Some(v) = data.remove(from) {
                        data.insert(to.clone(), v);
                    }
                }
                Reshape::Drop { key } => {
                    data.remove(key);
                }
            }
        }
    }

    /// Whether stored documents may still hold `key` under an older layout: such a key cannot
    /// name a new attribute until the rewrite is through (its old values would surface).
    pub fn in_flux(&self, key: &str) -> bool {
        self.reshapes.iter().any(|r| match r {
            Reshape::Rename { from, .. } => from == key,
            Reshape::Drop { key: k } => k == key,
        })
    }
    /// Does one of `roles` hold `action` on `doc` of this collection (`None`: on the collection
    /// itself, as a create asks)? The collection's permissions grant it for every row; with
    /// document security, a row's own permissions grant it for that row.
    pub fn grants(&self, doc: Option<&Document>, action: &str, roles: &[String]) -> bool {
        crate::permission::allows(&self.permissions, action, roles)
            || (self.document_security
                && doc.is_some_and(|d| crate::permission::allows(&d.permissions, action, roles)))
    }

    pub fn index(&self, key: &str) -> Option<&Index> {
        self.indexes.iter().find(|i| i.key == key)
    }

    /// The internal indexes over the stored ends of this collection's relationships (so the
    /// other ends are found), kept by every write like the built-in read-roles index; no
    /// client sees them.
    pub fn relation_indexes(&self) -> Vec<Index> {
        self.relations
            .iter()
            .filter_map(|(key, r)| {
                Some(Index {
                    key: r.index.clone()?,
                    kind: IndexKind::Key,
                    attributes: vec![key.clone()],
                    orders: vec![Order::Asc],
                    lengths: Vec::new(),
                    status: IndexStatus::Available,
                    created_at: 0,
                    updated_at: 0,
                })
            })
            .collect()
    }

    /// The relationship of attribute `key`, if it is one.
    pub fn relation(&self, key: &str) -> Option<&Relationship> {
        self.relations.get(key)
    }

    /// The attributes clients see: every one but a one-way relationship's hidden twin.
    pub fn visible_attributes(&self) -> impl Iterator<Item = &Attribute> {
        self.attributes
            .iter()
            .filter(|a| self.relations.get(&a.key).is_none_or(Relationship::visible))
    }

    /// How many bytes of a row the columns take, as Appwrite reports it (`bytesUsed`): the
    /// width MariaDB gives the row under Appwrite's schema — a fixed part for the internal
    /// columns, then each column's. Basalt itself stores rows of any width up to its own
    /// limits; the figure tells an app what the same table would cost in Appwrite.
    pub fn bytes_used(&self) -> u64 {
        1067 + self
            .attributes
            .iter()
            .map(Attribute::row_width)
            .sum::<u64>()
    }
}

/// The row width Appwrite's tables allow (`bytesMax`: MariaDB's 65,535-byte row).
pub const BYTES_MAX: u64 = 65_535;

/// The scalar type of an attribute. String flavours differ only in their size limit and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrKind {
    String,
    Varchar,
    Text,
    Mediumtext,
    Longtext,
    Integer,
    /// 64-bit integer column (`bigint`); stored like `integer`, reported with its own type.
    Bigint,
    Float,
    Boolean,
    Datetime,
    Email,
    Url,
    Ip,
    Enum,
    // Appended, never inserted: stored collections carry the variant's index.
    Point,
    Line,
    Polygon,
    Relationship,
}

impl AttrKind {
    /// The path segment used by `POST …/attributes/{type}`.
    pub fn from_route(s: &str) -> Option<AttrKind> {
        Some(match s {
            "string" => AttrKind::String,
            "varchar" => AttrKind::Varchar,
            "text" => AttrKind::Text,
            "mediumtext" => AttrKind::Mediumtext,
            "longtext" => AttrKind::Longtext,
            "integer" => AttrKind::Integer,
            "bigint" => AttrKind::Bigint,
            "float" => AttrKind::Float,
            "boolean" => AttrKind::Boolean,
            "datetime" => AttrKind::Datetime,
            "email" => AttrKind::Email,
            "url" => AttrKind::Url,
            "ip" => AttrKind::Ip,
            "enum" => AttrKind::Enum,
            "point" => AttrKind::Point,
            "line" => AttrKind::Line,
            "polygon" => AttrKind::Polygon,
            _ => return None,
        })
    }

    pub fn route(self) -> &'static str {
        match self {
            AttrKind::String => "string",
            AttrKind::Varchar => "varchar",
            AttrKind::Text => "text",
            AttrKind::Mediumtext => "mediumtext",
            AttrKind::Longtext => "longtext",
            AttrKind::Integer => "integer",
            AttrKind::Bigint => "bigint",
            AttrKind::Float => "float",
            AttrKind::Boolean => "boolean",
            AttrKind::Datetime => "datetime",
            AttrKind::Email => "email",
            AttrKind::Url => "url",
            AttrKind::Ip => "ip",
            AttrKind::Enum => "enum",
            AttrKind::Point => "point",
            AttrKind::Line => "line",
            AttrKind::Polygon => "polygon",
            AttrKind::Relationship => "relationship",
        }
    }

    /// The geometry a spatial kind holds; `None` for the others.
    pub fn shape(self) -> Option<crate::spatial::Shape> {
        use crate::spatial::Shape;
        match self {
            AttrKind::Point => Some(Shape::Point),
            AttrKind::Line => Some(Shape::Line),
            AttrKind::Polygon => Some(Shape::Polygon),
            _ => None,
        }
    }

    /// Appwrite's `type` field in the attribute model.
    pub fn wire_type(self) -> &'static str {
        match self {
            AttrKind::String | AttrKind::Email | AttrKind::Url | AttrKind::Ip | AttrKind::Enum => {
                "string"
            }
            AttrKind::Varchar => "varchar",
            AttrKind::Text => "text",
            AttrKind::Mediumtext => "mediumtext",
            AttrKind::Longtext => "longtext",
            AttrKind::Integer => "integer",
            AttrKind::Bigint => "bigint",
            AttrKind::Float => "double",
            AttrKind::Boolean => "boolean",
            AttrKind::Datetime => "datetime",
            AttrKind::Point => "point",
            AttrKind::Line => "linestring",
            AttrKind::Polygon => "polygon",
            AttrKind::Relationship => "relationship",
        }
    }

    /// Appwrite's `format` field, for the kinds that have one.
    pub fn format(self) -> Option<&'static str> {
        match self {
            AttrKind::Email => Some("email"),
            AttrKind::Url => Some("url"),
            AttrKind::Ip => Some("ip"),
            AttrKind::Enum => Some("enum"),
            AttrKind::Datetime => Some("datetime"),
            _ => None,
        }
    }

    pub fn is_string(self) -> bool {
        matches!(
            self,
            AttrKind::String
                | AttrKind::Varchar
                | AttrKind::Text
                | AttrKind::Mediumtext
                | AttrKind::Longtext
                | AttrKind::Email
                | AttrKind::Url
                | AttrKind::Ip
                | AttrKind::Enum
        )
    }

    /// Whole-number kinds.
    pub fn is_integer(self) -> bool {
        matches!(self, AttrKind::Integer | AttrKind::Bigint)
    }

    /// The fixed size limit of the text flavours (bytes, as MariaDB counts them).
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            AttrKind::Text => Some(65_535),
            AttrKind::Mediumtext => Some(16_777_215),
            AttrKind::Longtext => Some(4_294_967_295),
            AttrKind::Email | AttrKind::Enum => Some(255),
            AttrKind::Url => Some(2000),
            AttrKind::Ip => Some(39),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub key: String,
    pub kind: AttrKind,
    pub required: bool,
    pub array: bool,
    /// Size limit for `string`/`varchar` (characters).
    pub size: Option<u64>,
    pub min: Option<Value>,
    pub max: Option<Value>,
    pub default: Option<Value>,
    pub elements: Vec<String>,
    pub encrypt: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Attribute {
    /// An optional, scalar attribute of `kind` with no limits or default.
    pub fn new(key: &str, kind: AttrKind, now: i64) -> Attribute {
        Attribute {
            key: key.to_string(),
            kind,
            required: false,
            array: false,
            size: None,
            min: None,
            max: None,
            default: None,
            elements: Vec::new(),
            encrypt: false,
            created_at: now,
            updated_at: now,
        }
    }

    /// The effective maximum length of a string value, in characters.
    pub fn max_len(&self) -> Option<u64> {
        self.size.or(self.kind.fixed_size())
    }

    /// This column's share of a row's width as Appwrite counts it (`Collection::bytes_used`):
    /// utf8mb4 strings take 4 bytes a character plus a length prefix, longer ones and texts
    /// live off the row (20 bytes), arrays are JSON texts.
    fn row_width(&self) -> u64 {
        if self.array {
            return 20;
        }
        let string = |size: u64, off_row: bool| match size {
            s if off_row && s > 16_381 => 20,
            s if s > 255 => 4 * s + 2,
            s => 4 * s + 1,
        };
        // Appwrite sizes an integer column by its maximum alone (absent: PHP_INT_MAX): an
        // `INT` up to 2,147,483,647, else a `BIGINT`.
        let int_fits = |v: &Option<Value>| {
            v.as_ref()
                .and_then(Value::as_f64)
                .is_some_and(|n| n <= i32::MAX as f64)
        };
        match self.kind {
            AttrKind::String => string(self.size.unwrap_or(0), true),
            AttrKind::Varchar => string(self.size.unwrap_or(0), false),
            // Appwrite's sizes for the string formats.
            AttrKind::Email => string(254, true),
            AttrKind::Url => string(2000, true),
            AttrKind::Ip => string(39, true),
            AttrKind::Enum => string(255, true),
            AttrKind::Text | AttrKind::Mediumtext | AttrKind::Longtext => 20,
            AttrKind::Integer if int_fits(&self.max) => 4,
            AttrKind::Integer | AttrKind::Bigint | AttrKind::Float => 8,
            AttrKind::Boolean => 1,
            AttrKind::Datetime => 7,
            AttrKind::Point => 25,
            AttrKind::Line | AttrKind::Polygon => 20,
            AttrKind::Relationship => 1021,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexKind {
    Key,
    Unique,
    Fulltext,
    /// Over one spatial column: the cells of a grid its geometry's bounding box covers.
    Spatial,
}

impl IndexKind {
    pub fn parse(s: &str) -> Option<IndexKind> {
        Some(match s {
            "key" => IndexKind::Key,
            "unique" => IndexKind::Unique,
            "fulltext" => IndexKind::Fulltext,
            "spatial" => IndexKind::Spatial,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Key => "key",
            IndexKind::Unique => "unique",
            IndexKind::Fulltext => "fulltext",
            IndexKind::Spatial => "spatial",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    pub fn parse(s: &str) -> Option<Order> {
        match s.to_ascii_lowercase().as_str() {
            "asc" => Some(Order::Asc),
            "desc" => Some(Order::Desc),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub key: String,
    pub kind: IndexKind,
    pub attributes: Vec<String>,
    pub orders: Vec<Order>,
    pub lengths: Vec<u32>,
    pub status: IndexStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where an index's build stands. Writes keep every index in step from its creation on; the
/// documents that were there before are indexed by a background job, in bounded chunks, one
/// log entry each. Only an `Available` index answers queries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexStatus {
    #[default]
    Available,
    Processing,
    Failed {
        error: String,
    },
}

impl IndexStatus {
    pub fn is_failed(&self) -> bool {
        matches!(self, IndexStatus::Failed { .. })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            IndexStatus::Available => "available",
            IndexStatus::Processing => "processing",
            IndexStatus::Failed { .. } => "failed",
        }
    }
}

/// The internal attribute holding the roles a row's own permissions let read it.
pub const READ_ROLES: &str = "$read";

/// The built-in index every collection keeps on [`READ_ROLES`] (one entry per role a row's
/// own permissions let read it, in `$sequence` order), so that a list made by a user who may
/// read few rows reads those rows' entries instead of the whole collection. Not one of
/// `Collection::indexes`: no client sees or changes it.
pub fn read_index() -> &'static Index {
    static I: std::sync::OnceLock<Index> = std::sync::OnceLock::new();
    I.get_or_init(|| Index {
        key: READ_ROLES.to_string(),
        kind: IndexKind::Key,
        attributes: vec![READ_ROLES.to_string()],
        orders: vec![Order::Asc],
        lengths: Vec::new(),
        status: IndexStatus::Available,
        created_at: 0,
        updated_at: 0,
    })
}

/// A document (row). System fields are typed; user data is keyed by attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub sequence: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub permissions: Vec<String>,
    pub data: BTreeMap<String, Value>,
}

impl Document {
    /// The value of an attribute as queries see it, system attributes included.
    pub fn get(&self, attr: &str) -> Value {
        match attr {
            "$id" => Value::Str(self.id.clone()),
            "$sequence" => Value::Int(self.sequence as i64),
            "$createdAt" => Value::Str(crate::time::format_ms(self.created_at)),
            "$updatedAt" => Value::Str(crate::time::format_ms(self.updated_at)),
            // The roles that may read this row by its own permissions (internal: the filter
            // a list made by a user carries).
            READ_ROLES => Value::Array(
                crate::permission::granted(&self.permissions, "read")
                    .map(|r| Value::Str(r.to_string()))
                    .collect(),
            ),
            _ => self.data.get(attr).cloned().unwrap_or(Value::Null),
        }
    }

    /// The row ids a relationship end stored under `key` holds: one, a list, or none.
    pub fn related_ids(&self, key: &str) -> Vec<String> {
        match self.data.get(key) {
            Some(Value::Str(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionStatus {
    Pending,
    Committed,
    /// Failed at commit, or rolled back (Appwrite reports both as `failed`).
    Failed,
}

impl TransactionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionStatus::Pending => "pending",
            TransactionStatus::Committed => "committed",
            TransactionStatus::Failed => "failed",
        }
    }
}

/// A transaction: operations staged through Raft, invisible until committed as one entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: String,
    pub status: TransactionStatus,
    pub operations: Vec<crate::command::DocTarget>,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A node the cluster admitted (`ClusterOp::Admit`), and whether it was removed since.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// SHA-256 of the public key (DER SubjectPublicKeyInfo) its certificate must carry, hex.
    pub key_sha256: String,
    pub admitted_at: i64,
    pub retired_at: Option<i64>,
}

/// Where the cluster keeps its members (`basalt cluster placement`): which regions hold voters,
/// which hold read replicas (Raft learners), and where the leader should be. Nodes of a region
/// named in neither list are read replicas: a node is never made a voter by accident.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Regions whose nodes vote. Empty: every region's (no policy set).
    pub voters: Vec<String>,
    /// Regions whose nodes are read replicas.
    pub learners: Vec<String>,
    /// The region the leader should be in while one of its voters is healthy.
    pub leader_region: Option<String>,
}

impl Placement {
    /// Whether a node of `region` should vote.
    pub fn votes(&self, region: &str) -> bool {
        self.voters.is_empty() || self.voters.iter().any(|r| r == region)
    }

    /// Whether losing any one region must leave a quorum: voters in three regions or more.
    pub fn survives_region_loss(&self) -> bool {
        self.voters.len() >= 3
    }

    /// Why the policy cannot be in force, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let all = self.voters.iter().chain(&self.learners);
        if let Some(bad) = all.clone().find(|r| !valid_region(r)) {
            return Some(format!(
                "region {bad:?} is not a region name: 1-64 of a-z, A-Z, 0-9, '.', '_' and '-'"
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = all.clone().find(|r| !seen.insert(r.as_str())) {
            return Some(format!("region {twice:?} is named twice"));
        }
        if self.voters.is_empty() && !self.learners.is_empty() {
            return Some("a policy with read-replica regions names its voter regions too".into());
        }
        match &self.leader_region {
            Some(r) if !valid_region(r) => Some(format!("region {r:?} is not a region name")),
            Some(r) if !self.votes(r) => Some(format!(
                "the leader region {r:?} holds no voters: a leader is always a voter"
            )),
            _ => None,
        }
    }
}

/// A `--region` label: 1-64 of `[A-Za-z0-9._-]`.
pub fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The cluster's root key as the cluster keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RootKeyRecord {
    /// SHA-256 of the root key, hex.
    pub sha256: String,
    /// A node was removed since the key was set: the removed node may know the key (or the
    /// digest enrollment proofs are keyed with), so joining by root key is refused until the
    /// key is rotated.
    pub removed_since: bool,
}

/// A join token as the cluster keeps it: the secret's digest, never the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub secret_sha256: String,
    pub issued_at: i64,
    pub expires: i64,
    /// The node that used it; a token works once.
    pub used_by: Option<u64>,
}
