//! The replicated state machine's input and output.
//!
//! Every write is an [`Envelope`]: who asked (`actor`), in which project, under which request
//! id, at what time (`at`, stamped by the leader when it proposes), and the operation (`op`),
//! split by service so that each service is applied by its own module. One Raft log entry
//! carries a [`Batch`] of envelopes (group commit) and is applied as one atomic write.
//!
//! A command carries everything non-deterministic — ids, time, hashes — so that applying it on
//! any node gives the same outcome and the same bytes on disk. Timestamps of the objects an
//! operation creates or changes (`created_at`, `updated_at`, a transaction's expiry) come from
//! `at` in apply; whatever the proposer put in those fields is ignored.

use crate::auth::{Credential, Mail, Membership, Session, Team, Token, User};
use crate::error::Error;
use crate::query::Spec;
use crate::schema::{ApiKey, AttrKind, Attribute, Collection, Database, Document, Index};
use crate::schema::{Platform, Project, Transaction};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The envelope format this build writes and applies. A node meeting a newer one stops
/// applying rather than guess (the log is never skipped).
pub const COMMAND_VERSION: u16 = 1;

/// Made once where a request arrives; a retried proposal keeps it, so the state machine can
/// tell a retry from a new request and apply it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u128);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Who proposes a command. Apply checks it against the committed state, so a key revoked
/// through another node is refused even though the proposer's local view still had it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Actor {
    /// The operator, authenticated by the root key at the node that took the request.
    Operator,
    /// A project API key, by id, that must hold at least one of `scopes` when applied.
    Key { id: String, scopes: Vec<String> },
    /// An end user, through one of their sessions (directly, or through a JWT made from it):
    /// refused when applied if the session has ended or the user is blocked.
    User { id: String, session: String },
    /// A caller with no key and no session.
    Guest,
}

/// One replicated write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub project: String,
    pub request_id: RequestId,
    /// Epoch milliseconds, stamped by the leader when it proposes. Apply never lets time go
    /// backwards: it uses the larger of this and the last applied `at`.
    pub at: i64,
    pub actor: Actor,
    pub op: Op,
}

impl Envelope {
    /// A new envelope; `at` is left for the leader to stamp.
    pub fn new(project: impl Into<String>, request_id: RequestId, actor: Actor, op: Op) -> Self {
        Envelope {
            version: COMMAND_VERSION,
            project: project.into(),
            request_id,
            at: 0,
            actor,
            op,
        }
    }
}

/// What one Raft log entry carries: envelopes proposed together (group commit), applied in
/// order as one atomic write, each with its own outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Envelope>);

/// The operation, by service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Projects(ProjectOp),
    Keys(KeyOp),
    Schema(SchemaOp),
    Documents(DocumentsOp),
    Transactions(TransactionOp),
    Cluster(ClusterOp),
    Auth(AuthOp),
    Platforms(PlatformOp),
    Storage(StorageOp),
    /// `op`, written down in the databases' audit trail (`crate::audit`) when it succeeds,
    /// with where the request came from. (Added after the first log format, like the next.)
    Audited {
        /// Decoded with the nesting bound, like `AuthOp::Audited`.
        #[serde(deserialize_with = "crate::nesting::nested")]
        op: Box<Op>,
        client: Client,
    },
    /// Usage a node counted itself: the reads it served (`crate::usage`). The operator's.
    Usage(UsageOp),
}

/// Where a request came from, as the audit trail records it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub ip: String,
    pub user_agent: String,
    /// A `DocumentsOp::Write` of one row (its last op) with the related rows nested in it
    /// written ahead: the trail files it under that row, not as a bulk write.
    pub one_row: bool,
}

/// Usage counted outside apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UsageOp {
    /// Reads one node served since its last flush, by database and hour.
    Reads { counts: Vec<ReadCount> },
}

/// Reads of one database's documents (gets and lists) in the hour starting `hour` (epoch
/// seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadCount {
    pub database: String,
    pub hour: i64,
    pub reads: u64,
}

/// Counts one flush carries at most.
pub const MAX_READ_COUNTS: usize = 10_000;

/// Buckets and files (`crate::storage`). A file's bytes never travel in the log: each chunk
/// is stored, as a content-addressed blob, on a quorum of nodes before the `PutChunk` naming
/// it is proposed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StorageOp {
    /// A key's new bucket; its times and `total_size` come from apply.
    CreateBucket {
        bucket: Box<crate::storage::Bucket>,
    },
    /// Replaces a bucket's settings (name, permissions, limits, codecs); its files stay.
    UpdateBucket {
        bucket: Box<crate::storage::Bucket>,
    },
    /// Marks the bucket as being deleted (it takes no uploads from then on), removes its next
    /// `BUCKET_DELETE_CHUNK` files, and the bucket with the last of them: answers
    /// `Outcome::Range { next: Some(_) }` while files remain (sent again, it goes on).
    DeleteBucket {
        id: String,
    },
    /// Chunk `index` of `upload` is stored as `chunk`. The first chunk to arrive makes the
    /// file's record (chunks may come in any order); a chunk sent again replaces the one
    /// stored. Refused once the file is complete.
    PutChunk {
        bucket: String,
        upload: Box<FileUpload>,
        index: u64,
        chunk: crate::storage::ChunkRef,
    },
    UpdateFile {
        bucket: String,
        id: String,
        name: Option<String>,
        permissions: Option<Vec<String>>,
    },
    /// Removes a file's record and its chunks; blobs no file names any more are reclaimed by
    /// each node.
    DeleteFile {
        bucket: String,
        id: String,
    },
    /// The key a project's encrypted chunks are sealed under, made once by the first node
    /// that needs it: applied only if the project has none yet (the operator's).
    InitKey {
        secret: String,
    },
    /// A key's token for a file that exists (at most `MAX_TOKENS_PER_FILE` per file); its
    /// times come from apply. Tokens go with their file.
    CreateToken {
        token: Box<crate::storage::ResourceToken>,
    },
    UpdateToken {
        id: String,
        expire: Option<i64>,
    },
    DeleteToken {
        id: String,
    },
}

/// What a file upload says about the whole file, on each of its chunks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileUpload {
    pub id: String,
    pub name: String,
    pub mime_type: String,
    pub size: u64,
    /// `None`: read, update and delete for the uploading user.
    pub permissions: Option<Vec<String>>,
    /// The virtual folder (`a/b/`, or empty).
    pub folder: String,
}

/// A project's client platforms (the operator's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PlatformOp {
    Create { platform: Platform },
    Delete { id: String },
}

/// End users and their sessions (`crate::auth`). What the proposer verified — a password
/// against the hash it read — travels as `proof`, the SHA-256 of that hash: apply refuses
/// if the user's password changed in between, so a session is never made with a password
/// that no longer holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AuthOp {
    /// Sign-up (a guest) or `Users.create` (a key). The user's times come from `at`.
    CreateUser {
        user: Box<User>,
    },
    /// Changes applied in order, all or none.
    UpdateUser {
        id: String,
        changes: Vec<UserChange>,
        proof: Option<String>,
    },
    DeleteUser {
        id: String,
    },
    /// A new session for `session.user_id`; with the project's most sessions already (its
    /// auth settings'; `max` is kept for old entries and ignored), the oldest ends. It lasts as
    /// long as the project's sessions do.
    /// With `user`, that user is created first, in the same apply (an anonymous sign-in).
    /// With `rehash`, the password just verified (an imported hash) is stored again as this
    /// argon2id credential, if `proof` still holds.
    CreateSession {
        session: Box<Session>,
        proof: Option<String>,
        max: u32,
        user: Option<Box<User>>,
        rehash: Option<Box<Credential>>,
    },
    /// Extends a session by the project's session length from now (`Account.updateSession`;
    /// `expire` is kept for old entries and ignored).
    ExtendSession {
        user: String,
        id: String,
        expire: i64,
    },
    DeleteSession {
        user: String,
        id: String,
    },
    /// Ends every session of `user` (at most `crate::auth::MAX_SESSIONS` exist).
    DeleteSessions {
        user: String,
    },
    /// The secret JWTs are signed with, made once per project by the first node that needs
    /// it: applied only if the project has none yet, so concurrent first uses agree.
    InitJwtSecret {
        secret: String,
    },
    /// A team; made by a user, with that user's (confirmed, owner) membership.
    CreateTeam {
        team: Box<Team>,
        owner: Option<Box<Membership>>,
    },
    UpdateTeam {
        id: String,
        name: Option<String>,
        prefs: Option<String>,
    },
    /// Removes the next `TEAM_DELETE_CHUNK` memberships of the team, and the team with the
    /// last of them: answers `Outcome::Range { next: Some(_) }` while memberships remain.
    DeleteTeam {
        id: String,
    },
    /// A membership made by a key: confirmed at once.
    CreateMembership {
        membership: Box<Membership>,
    },
    UpdateMembership {
        team: String,
        id: String,
        roles: Vec<String>,
    },
    DeleteMembership {
        team: String,
        id: String,
    },
    /// A one-time token for `token.user_id` (a key's `Users.createToken`).
    CreateToken {
        token: Box<Token>,
    },
    /// Exchanges a token for a session: applied only if `user` holds an unexpired token whose
    /// secret hashes to `secret_sha256`, which is used up in the same apply.
    TokenSession {
        secret_sha256: String,
        session: Box<Session>,
    },
    /// An emailed secret: `token` for its owner and `mail` queued in the outbox, both in the
    /// same apply; the token's user and the mail's recipient are filled in from the owner.
    EmailToken {
        owner: TokenOwner,
        token: Box<Token>,
        mail: Box<Mail>,
    },
    /// Uses up a `kind` token of `user` whose secret hashes to `secret_sha256`, and applies
    /// `changes` to the user (a verified email; a recovered password).
    RedeemToken {
        user: String,
        kind: String,
        secret_sha256: String,
        changes: Vec<UserChange>,
    },
    /// A user's invitation: an unconfirmed `membership` for the invitee and its email. Asked
    /// again for someone already invited, the invitation is renewed (new secret, new email).
    Invite {
        membership: Box<Membership>,
        invitee: TokenOwner,
        mail: Box<Mail>,
    },
    /// Accepts an invitation: confirms the membership whose secret hashes to
    /// `secret_sha256`, marks the user's email verified, and starts `session` for them
    /// (answered) — unless the caller is signed in as them already (the membership answered).
    AcceptInvite {
        team: String,
        id: String,
        secret_sha256: String,
        session: Box<Session>,
    },
    /// The outbox (the leader's mail runner): the email queued at `due` was sent, or given
    /// up on, and leaves the queue.
    MailSent {
        due: i64,
        id: String,
    },
    /// The email queued at `due` failed; it is tried again at `next`.
    MailRetry {
        due: i64,
        id: String,
        next: i64,
    },
    /// A new TOTP authenticator for `user`, unverified (replacing an unverified one), its
    /// secret derived from the project's secret and `seed`.
    CreateAuthenticator {
        user: String,
        seed: String,
    },
    /// Verifies the user's authenticator with a code (its SHA-256) valid at the envelope's
    /// time; the caller's session gains the `totp` factor.
    VerifyAuthenticator {
        user: String,
        otp_sha256: String,
    },
    /// Removes the user's authenticator (a user needs a recent challenge).
    DeleteAuthenticator {
        user: String,
    },
    /// Makes the user's recovery codes from `seed`: refused if unused ones are left, or, with
    /// `regenerate`, if there are none (a user needs a recent challenge to regenerate).
    RecoveryCodes {
        user: String,
        seed: String,
        regenerate: bool,
    },
    /// An MFA challenge: a token of kind `mfa-<factor>` for the user; for `email`, its code
    /// is queued as an email.
    CreateChallenge {
        user: String,
        factor: String,
        token: Box<Token>,
    },
    /// Completes a challenge of the caller's with a code (its SHA-256): the challenge is used
    /// up, a recovery code too, and the caller's session gains the factor and `mfaUpdatedAt`.
    VerifyChallenge {
        user: String,
        challenge: String,
        otp_sha256: String,
    },
    /// `op`, and, if it is one of a user's auth events and succeeds, an entry `id` in that
    /// user's log, in the same apply, with where the request came from.
    Audited {
        /// Decoded with the nesting bound: a crafted frame of nested `Audited` tags must not
        /// exhaust the stack before apply can refuse it.
        #[serde(deserialize_with = "crate::nesting::nested")]
        op: Box<AuthOp>,
        id: String,
        ip: String,
        user_agent: String,
    },
}

/// Whose token an email carries: a known user, or the user with an email address — made
/// first, as `create`, when there is none yet (magic URLs and codes sign up as they sign in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TokenOwner {
    Id(String),
    Email {
        email: String,
        create: Option<Box<User>>,
    },
}

/// One change to a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UserChange {
    Name(String),
    Email(String),
    Phone(String),
    Password(Option<Credential>),
    Status(bool),
    Labels(Vec<String>),
    Prefs(String),
    EmailVerification(bool),
    PhoneVerification(bool),
    Mfa(bool),
}

/// Operations on the cluster itself (the operator's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClusterOp {
    /// Changes nothing. Every replica that applies it computes a digest of its state as of
    /// this log entry, so digests of all replicas compare the same point of the log
    /// (`basalt cluster check`); the check is known by the envelope's request id.
    Check,
    /// A one-time join token (`basalt cluster join-token`): only its secret's digest is kept.
    IssueToken {
        id: String,
        secret_sha256: String,
        /// Epoch milliseconds; the token is refused from then on.
        expires: i64,
    },
    /// Node `node` may be a member, holding the key whose SPKI digest is `key_sha256`. With
    /// `token`, the token is consumed in the same apply: refused if unknown, wrong, expired, or
    /// used by another node. Refused for a retired node, and for a node already admitted with
    /// another key (a second admission of the same key is a retry and changes nothing).
    Admit {
        node: u64,
        key_sha256: String,
        token: Option<TokenUse>,
    },
    /// Node `node` was removed: its id is never admitted again, its certificate never accepted.
    Retire { node: u64 },
    /// The cluster's root key, by its SHA-256 digest (hex): every node checks the operator's
    /// key against it (`basalt cluster rotate-root-key` replaces it). `initial`: only if the
    /// cluster has none yet (the node that started the cluster recording its key).
    SetRootKey { sha256: String, initial: bool },
    /// The placement policy (`basalt cluster placement`): refused if it cannot be in force.
    SetPlacement(crate::schema::Placement),
    /// Node `node`'s `--zone` within its region (empty: none), as it says at start.
    SetZone { node: u64, zone: String },
}

/// A join token presented by a joiner: its id and the digest of the secret it sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenUse {
    pub id: String,
    pub secret_sha256: String,
}

/// Projects. The envelope's `project` is the project created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ProjectOp {
    Create {
        name: String,
    },
    /// One change of the project's auth settings (`crate::auth::AuthSettings`).
    UpdateAuth {
        change: crate::auth::AuthChange,
    },
}

/// API keys of the envelope's project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyOp {
    Create { key: ApiKey },
    Delete { id: String },
}

/// Fields of an attribute that `PATCH …/attributes/{type}/{key}` may change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttributePatch {
    pub required: Option<bool>,
    /// `Some(Value::Null)` clears the default.
    pub default: Option<Value>,
    pub size: Option<u64>,
    pub min: Option<Value>,
    pub max: Option<Value>,
    pub elements: Option<Vec<String>>,
    pub new_key: Option<String>,
}

/// Databases, collections (tables), attributes (columns) and indexes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SchemaOp {
    CreateDatabase {
        database: Database,
    },
    UpdateDatabase {
        id: String,
        name: Option<String>,
        enabled: Option<bool>,
    },
    DeleteDatabase {
        id: String,
    },
    CreateCollection {
        collection: Collection,
    },
    UpdateCollection {
        database: String,
        id: String,
        name: Option<String>,
        permissions: Option<Vec<String>>,
        document_security: Option<bool>,
        enabled: Option<bool>,
    },
    DeleteCollection {
        database: String,
        id: String,
    },
    CreateAttribute {
        database: String,
        collection: String,
        attribute: Attribute,
    },
    UpdateAttribute {
        database: String,
        collection: String,
        key: String,
        kind: AttrKind,
        patch: AttributePatch,
    },
    DeleteAttribute {
        database: String,
        collection: String,
        key: String,
    },
    CreateIndex {
        database: String,
        collection: String,
        index: Index,
    },
    DeleteIndex {
        database: String,
        collection: String,
        key: String,
    },
    /// The next chunk of a processing index's build: indexes the next documents in
    /// `$sequence` order and records how far it came; the last chunk makes the index
    /// available (or failed, on duplicate values for a unique index). Proposed by the leader's
    /// job runner, one chunk per log entry.
    BuildIndex {
        database: String,
        collection: String,
        key: String,
    },
    /// The next chunk of a collection's document rewrite after attributes were renamed or
    /// deleted (`schema::Reshape`): rewrites the next documents in `$sequence` order to the
    /// current layout; the last chunk drops the collection's reshape records. Proposed by the
    /// leader's job runner.
    Reshape {
        database: String,
        collection: String,
    },
    // Appended, never inserted: commands in the log carry the variant's index.
    /// A relationship attribute `key` on `collection` and its twin on the related collection
    /// (`relationship.side` is `Parent`; the twin's key is `relationship.two_way_key`).
    CreateRelationship {
        database: String,
        collection: String,
        key: String,
        relationship: crate::schema::Relationship,
    },
    /// `onDelete` of both ends, and a new key for this end.
    UpdateRelationship {
        database: String,
        collection: String,
        key: String,
        on_delete: Option<crate::schema::OnDelete>,
        new_key: Option<String>,
    },
}

pub type Data = BTreeMap<String, Value>;
pub use crate::operator::Ops;

/// One document operation. Several of them in one command apply all-or-nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DocOp {
    Create {
        id: String,
        data: Data,
        permissions: Option<Vec<String>>,
    },
    /// Create, or replace the given fields of an existing document.
    Upsert {
        id: String,
        data: Data,
        permissions: Option<Vec<String>>,
    },
    /// Partial update: only the given fields change.
    Update {
        id: String,
        data: Data,
        permissions: Option<Vec<String>>,
    },
    Delete {
        id: String,
    },
    /// Adds `by` (negative to decrement); `bound` is the max (increment) or min (decrement).
    Increment {
        id: String,
        attr: String,
        by: Value,
        bound: Option<Value>,
    },
    UpdateWhere {
        spec: Spec,
        data: Data,
    },
    DeleteWhere {
        spec: Spec,
    },
    /// An `Update`, or an `Upsert` (`upsert`), whose `ops` compute fields from their current
    /// values (from the defaults when an upsert creates the row). A write without operators
    /// is still an `Update` or `Upsert`, so its bytes stay those of the first log format.
    Operate {
        id: String,
        data: Data,
        ops: Ops,
        permissions: Option<Vec<String>>,
        upsert: bool,
    },
    /// `UpdateWhere` with operators.
    OperateWhere {
        spec: Spec,
        data: Data,
        ops: Ops,
    },
}

impl DocOp {
    /// A partial update: `Operate` when it has operators, else `Update`.
    pub fn update(id: String, data: Data, ops: Ops, permissions: Option<Vec<String>>) -> DocOp {
        DocOp::write(id, data, ops, permissions, false)
    }

    /// An upsert: `Operate` when it has operators, else `Upsert`.
    pub fn upsert(id: String, data: Data, ops: Ops, permissions: Option<Vec<String>>) -> DocOp {
        DocOp::write(id, data, ops, permissions, true)
    }

    fn write(
        id: String,
        data: Data,
        ops: Ops,
        permissions: Option<Vec<String>>,
        upsert: bool,
    ) -> DocOp {
        match (ops.is_empty(), upsert) {
            (false, _) => DocOp::Operate {
                id,
                data,
                ops,
                permissions,
                upsert,
            },
            (true, true) => DocOp::Upsert {
                id,
                data,
                permissions,
            },
            (true, false) => DocOp::Update {
                id,
                data,
                permissions,
            },
        }
    }

    /// An update by query: `OperateWhere` when it has operators, else `UpdateWhere`.
    pub fn update_where(spec: Spec, data: Data, ops: Ops) -> DocOp {
        match ops.is_empty() {
            true => DocOp::UpdateWhere { spec, data },
            false => DocOp::OperateWhere { spec, data, ops },
        }
    }
}

/// A document operation and the collection it targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocTarget {
    pub database: String,
    pub collection: String,
    pub op: DocOp,
}

/// Document writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DocumentsOp {
    /// Applied all-or-nothing.
    Write { ops: Vec<DocTarget> },
    /// One bounded chunk of a bulk update or delete by query: looks at the documents after
    /// `$sequence` `after`, in sequence order, at most a fixed number of them, and changes
    /// those matching `spec`'s filters, at most `max`. Answers `Outcome::Range` with where
    /// the next chunk starts, so a bulk change of any size is many small log entries.
    Range {
        database: String,
        collection: String,
        spec: Spec,
        change: RangeChange,
        after: u64,
        max: u32,
    },
    /// One chunk of a bulk update or delete by query that orders, offsets or uses a cursor:
    /// the proposer picked the documents (`ids`, in the query's order) from one view; each is
    /// changed if it still exists and still matches `spec`'s filters. Answers
    /// `Outcome::Range` with no `next`.
    Listed {
        database: String,
        collection: String,
        spec: Spec,
        ids: Vec<String>,
        change: RangeChange,
    },
}

/// What a `DocumentsOp::Range` does to the documents it picks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RangeChange {
    Update {
        data: Data,
    },
    Delete,
    /// `Update` with operators (added after the first log format, like `DocOp::Operate`).
    Operate {
        data: Data,
        ops: Ops,
    },
}

impl RangeChange {
    /// An update: `Operate` when it has operators, else `Update`.
    pub fn update(data: Data, ops: Ops) -> RangeChange {
        match ops.is_empty() {
            true => RangeChange::Update { data },
            false => RangeChange::Operate { data, ops },
        }
    }
}

/// Transactions: operations staged through Raft, then committed as one atomic write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TransactionOp {
    /// A pending transaction that expires `ttl_ms` after the envelope's `at`.
    Create {
        id: String,
        ttl_ms: i64,
    },
    Stage {
        id: String,
        ops: Vec<DocTarget>,
    },
    /// Applies every staged operation atomically, or none with the first failure (the
    /// transaction is then marked failed).
    Commit {
        id: String,
    },
    Rollback {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Project(Project),
    Key(ApiKey),
    Database(Database),
    Collection(Collection),
    Attribute(Attribute),
    Index(Index),
    Documents(Vec<Document>),
    Transaction(Transaction),
    Failed(Error),
    /// The documents a `DocumentsOp::Range` changed (as they are now; deleted ones as they
    /// were), and the `$sequence` the next chunk starts after (`None`: the collection is done).
    Range {
        documents: Vec<Document>,
        next: Option<u64>,
    },
    User(User),
    Session(Session),
    Team(Team),
    Membership(Membership),
    Platform(Platform),
    Token(Token),
    Bucket(Box<crate::storage::Bucket>),
    /// A file's record (a chunk's upload answers the file as it now is).
    File(Box<crate::storage::File>),
    ResourceToken(Box<crate::storage::ResourceToken>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update_where() -> Envelope {
        let spec = Spec::parse(&[
            r#"{"method":"equal","attribute":"a","values":[1,"x",null,[true]]}"#.into(),
            r#"{"method":"limit","values":[3]}"#.into(),
        ])
        .unwrap();
        let mut env = Envelope::new(
            "p",
            RequestId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            Actor::Key {
                id: "k".into(),
                scopes: vec!["rows.write".into()],
            },
            Op::Documents(DocumentsOp::Write {
                ops: vec![DocTarget {
                    database: "d".into(),
                    collection: "c".into(),
                    op: DocOp::UpdateWhere {
                        spec,
                        data: [("a".to_string(), Value::Float(1.5))].into_iter().collect(),
                    },
                }],
            }),
        );
        env.at = 1_767_225_600_000;
        env
    }

    #[test]
    fn envelopes_round_trip_through_bincode() {
        let mut operate = update_where();
        operate.op = Op::Documents(DocumentsOp::Write {
            ops: vec![DocTarget {
                database: "d".into(),
                collection: "c".into(),
                op: DocOp::upsert(
                    "r".into(),
                    Data::new(),
                    [(
                        "tags".to_string(),
                        crate::operator::Operator {
                            method: crate::operator::Method::ArrayAppend,
                            values: vec![Value::Str("x".into())],
                        },
                    )]
                    .into_iter()
                    .collect(),
                    None,
                ),
            }],
        });
        let batch = Batch(vec![update_where(), operate]);
        let bytes = bincode::serialize(&batch).unwrap();
        assert_eq!(bincode::deserialize::<Batch>(&bytes).unwrap(), batch);
    }

    /// A command that carries a whole collection: what the collection keeps beside its record
    /// (`reshapes`) is not part of it.
    #[test]
    fn golden_collection_encoding() {
        let create = Envelope {
            at: 8,
            ..Envelope::new(
                "p",
                RequestId(2),
                Actor::Operator,
                Op::Schema(SchemaOp::CreateCollection {
                    collection: crate::schema::Collection {
                        id: "c".into(),
                        database: "d".into(),
                        name: "C".into(),
                        enabled: true,
                        permissions: vec![],
                        document_security: false,
                        attributes: vec![],
                        indexes: vec![],
                        reshapes: vec![crate::schema::Reshape::Drop { key: "x".into() }],
                        relations: Default::default(),
                        created_at: 1,
                        updated_at: 2,
                    },
                }),
            )
        };
        let hex: String = bincode::serialize(&create)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // version, project, request id, at, actor, op: Schema, CreateCollection, then the
        // collection: id, database, name, enabled, permissions, document security, attributes,
        // indexes, created, updated — and no reshapes.
        assert_eq!(
            hex,
            concat!(
                "0100",
                "0100000000000000",
                "70",
                "02000000000000000000000000000000",
                "0800000000000000",
                "00000000",
                "02000000",
                "03000000",
                "010000000000000063",
                "010000000000000064",
                "010000000000000043",
                "01",
                "0000000000000000",
                "00",
                "0000000000000000",
                "0000000000000000",
                "0100000000000000",
                "0200000000000000"
            )
        );
    }

    /// The log format is pinned: a change to these bytes is a change of what every node has
    /// on disk, and must come with a new `COMMAND_VERSION` and a way to read the old one.
    #[test]
    fn golden_encodings() {
        let create_project = Envelope {
            at: 5,
            ..Envelope::new(
                "demo",
                RequestId(7),
                Actor::Operator,
                Op::Projects(ProjectOp::Create {
                    name: "Demo".into(),
                }),
            )
        };
        let delete_row = Envelope {
            at: 6,
            ..Envelope::new(
                "p",
                RequestId(u128::MAX),
                Actor::Key {
                    id: "k".into(),
                    scopes: vec!["rows.write".into()],
                },
                Op::Documents(DocumentsOp::Write {
                    ops: vec![DocTarget {
                        database: "d".into(),
                        collection: "c".into(),
                        op: DocOp::Delete { id: "r".into() },
                    }],
                }),
            )
        };
        let commit = Envelope {
            at: 7,
            ..Envelope::new(
                "p",
                RequestId(1),
                Actor::Operator,
                Op::Transactions(TransactionOp::Commit { id: "t".into() }),
            )
        };
        let hex = |e: &Envelope| {
            bincode::serialize(e)
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        // Read field by field: version, project, request id (u128 LE), at, actor, op.
        assert_eq!(
            hex(&create_project),
            concat!(
                "0100",
                "0400000000000000",
                "64656d6f",
                "07000000000000000000000000000000",
                "0500000000000000",
                "00000000",
                "00000000",
                "00000000",
                "0400000000000000",
                "44656d6f"
            )
        );
        assert_eq!(
            hex(&delete_row),
            concat!(
                "0100",
                "0100000000000000",
                "70",
                "ffffffffffffffffffffffffffffffff",
                "0600000000000000",
                "01000000",
                "0100000000000000",
                "6b",
                "0100000000000000",
                "0a00000000000000",
                "726f77732e7772697465",
                "03000000",
                "00000000",
                "0100000000000000",
                "0100000000000000",
                "64",
                "0100000000000000",
                "63",
                "03000000",
                "0100000000000000",
                "72"
            )
        );
        assert_eq!(
            hex(&commit),
            concat!(
                "0100",
                "0100000000000000",
                "70",
                "01000000000000000000000000000000",
                "0700000000000000",
                "00000000",
                "04000000",
                "02000000",
                "0100000000000000",
                "74"
            )
        );
        for e in [&create_project, &delete_row, &commit] {
            let back: Envelope = bincode::deserialize(&bincode::serialize(e).unwrap()).unwrap();
            assert_eq!(&back, e);
        }
    }
}
