//! A project's end users and their sessions.
//!
//! They are documents of system collections in the reserved database [`DB`] (`_auth`, an id
//! no client can name: ids start with a letter or a digit), so that they are stored, indexed,
//! counted, queried and replicated exactly like rows: users are unique by email and phone
//! through unique indexes, listed with the same query executor, and every change of them is an
//! envelope applied in the same atomic entry as its checks. The system collections are defined
//! here, in code, and never stored as schema records: no client can see or change them.
//!
//! Secrets never reach the state in the clear: a password is kept as its hash (argon2id by
//! default), a session secret as its SHA-256.

use crate::command::Data;
use crate::schema::{AttrKind, Attribute, Collection, Document, Index, IndexKind, IndexStatus};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The reserved database holding a project's auth collections.
pub const DB: &str = "_auth";
pub const USERS: &str = "users";
pub const SESSIONS: &str = "sessions";
pub const TEAMS: &str = "teams";
pub const MEMBERSHIPS: &str = "memberships";
pub const TOKENS: &str = "tokens";
pub const LOGS: &str = "logs";
/// Log entries a user keeps (`Account.listLogs`); a new one ends the oldest. Large, so that
/// pushing a recent entry out takes a thousand events (spread over hours by abuse limits).
pub const MAX_LOGS: usize = 1000;
/// Unused tokens a user holds at most; a new one ends the oldest.
pub const MAX_TOKENS: usize = 100;
/// Teams a user may belong to: what its roles are computed from on every request.
pub const MAX_MEMBERSHIPS: usize = 100;
/// Memberships one apply removes while a team is deleted (a bigger team takes several).
pub const TEAM_DELETE_CHUNK: usize = 500;

/// The longest name, as Appwrite allows.
pub const NAME_MAX: usize = 128;
/// The longest password Appwrite accepts.
pub const PASSWORD_MAX: usize = 256;
/// The longest email.
pub const EMAIL_MAX: usize = 255;
/// Sessions a user may hold; creating one more ends the oldest (Appwrite's default).
pub const MAX_SESSIONS: usize = 10;
/// How long a session lasts unless the project says otherwise: one year, as Appwrite.
pub const SESSION_TTL_MS: i64 = 365 * 24 * 3600 * 1000;

/// What a token is for (`Token::kind`). Only the first three are exchanged for a session.
pub const TOKEN_GENERIC: &str = "generic";
pub const TOKEN_MAGIC_URL: &str = "magic-url";
pub const TOKEN_EMAIL_OTP: &str = "email";
pub const TOKEN_VERIFICATION: &str = "verification";
pub const TOKEN_RECOVERY: &str = "recovery";
/// How long the emailed secrets hold, as in Appwrite: an hour, a code 15 minutes (an
/// invitation until it is accepted or the membership deleted).
pub const TOKEN_TTL_MS: i64 = 3600 * 1000;
pub const OTP_TTL_MS: i64 = 15 * 60 * 1000;
/// Emails of one project waiting to be sent, at most; past that its new ones are refused
/// (429) until the queue drains, rather than growing the state without bound (and one
/// project's flood never holds up another's email).
pub const MAX_OUTBOX: u64 = 1_000;
/// Tries to send one email before it is dropped (with a warning in the leader's log).
pub const MAIL_ATTEMPTS: u32 = 10;

pub(crate) fn attr(key: &str, kind: AttrKind, size: Option<u64>, array: bool) -> Attribute {
    Attribute {
        size,
        array,
        ..Attribute::new(key, kind, 0)
    }
}

pub(crate) fn index(key: &str, kind: IndexKind, attrs: &[&str]) -> Index {
    Index {
        key: key.to_string(),
        kind,
        attributes: attrs.iter().map(|a| a.to_string()).collect(),
        orders: Vec::new(),
        lengths: Vec::new(),
        status: IndexStatus::Available,
        created_at: 0,
        updated_at: 0,
    }
}

pub(crate) fn system(id: &str, attributes: Vec<Attribute>, indexes: Vec<Index>) -> Collection {
    system_in(DB, id, attributes, indexes)
}

/// A system collection of reserved database `db`: defined in code, never stored as a schema
/// record, so no client can see or change it.
pub(crate) fn system_in(
    db: &str,
    id: &str,
    attributes: Vec<Attribute>,
    indexes: Vec<Index>,
) -> Collection {
    Collection {
        id: id.to_string(),
        database: db.to_string(),
        name: id.to_string(),
        enabled: true,
        permissions: Vec::new(),
        document_security: false,
        attributes,
        indexes,
        reshapes: Vec::new(),
        relations: Default::default(),
        created_at: 0,
        updated_at: 0,
    }
}

/// The users collection: what `Users.list` queries (name, email, phone, status, labels,
/// registration, passwordUpdate, emailVerification, phoneVerification, accessedAt) and
/// searches (`search`: id, name, email and phone).
pub fn users() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        system(
            USERS,
            vec![
                attr("name", String, Some(NAME_MAX as u64), false),
                attr("email", String, Some(EMAIL_MAX as u64), false),
                attr("phone", String, Some(16), false),
                attr("password", String, Some(16384), false),
                attr("hash", String, Some(64), false),
                attr("hashOptions", String, Some(16384), false),
                attr("registration", Datetime, None, false),
                attr("status", Boolean, None, false),
                attr("labels", String, Some(36), true),
                attr("passwordUpdate", Datetime, None, false),
                attr("emailVerification", Boolean, None, false),
                attr("phoneVerification", Boolean, None, false),
                attr("mfa", Boolean, None, false),
                attr("prefs", String, Some(65535), false),
                attr("accessedAt", Datetime, None, false),
                attr("search", String, Some(16384), false),
                attr("mfaTotp", String, Some(64), false),
                attr("mfaTotpVerified", Boolean, None, false),
                attr("mfaRecovery", String, Some(64), false),
                attr("mfaRecoveryUsed", Integer, None, false),
                attr("passwordHistory", String, Some(1024), true),
            ],
            vec![
                index("_key_email", IndexKind::Unique, &["email"]),
                index("_key_phone", IndexKind::Unique, &["phone"]),
                index("_key_name", IndexKind::Key, &["name"]),
                index("_key_status", IndexKind::Key, &["status"]),
                index("_key_search", IndexKind::Fulltext, &["search"]),
            ],
        )
    })
}

/// The sessions collection, indexed by user.
pub fn sessions() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        system(
            SESSIONS,
            vec![
                attr("userId", String, Some(36), false),
                attr("secret", String, Some(64), false),
                attr("provider", String, Some(128), false),
                attr("providerUid", String, Some(2048), false),
                attr("expire", Datetime, None, false),
                attr("ip", String, Some(45), false),
                attr("userAgent", String, Some(16384), false),
                attr("factors", String, Some(32), true),
                attr("mfaUpdatedAt", Datetime, None, false),
            ],
            vec![
                index("_key_user", IndexKind::Key, &["userId"]),
                // Finds the session a client's secret names (secrets are random: unique).
                index("_key_secret", IndexKind::Unique, &["secret"]),
            ],
        )
    })
}

/// The teams collection. Row security: a team's own permissions say who may read
/// (`team:T`) and change it (`team:T/owner`).
pub fn teams() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        let mut c = system(
            TEAMS,
            vec![
                attr("name", String, Some(NAME_MAX as u64), false),
                attr("total", Integer, None, false),
                attr("prefs", String, Some(65535), false),
                attr("search", String, Some(16384), false),
            ],
            vec![
                index("_key_name", IndexKind::Key, &["name"]),
                index("_key_total", IndexKind::Key, &["total"]),
                index("_key_search", IndexKind::Fulltext, &["search"]),
            ],
        );
        c.document_security = true;
        c
    })
}

/// The memberships collection, indexed by user (roles), by team (listing) and by the pair
/// (one membership per user and team).
pub fn memberships() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        system(
            MEMBERSHIPS,
            vec![
                attr("userId", String, Some(36), false),
                attr("teamId", String, Some(36), false),
                attr("roles", String, Some(81), true),
                attr("invited", Datetime, None, false),
                attr("joined", Datetime, None, false),
                attr("confirm", Boolean, None, false),
                attr("secret", String, Some(64), false),
            ],
            vec![
                index("_key_user", IndexKind::Key, &["userId"]),
                index("_key_team", IndexKind::Key, &["teamId"]),
                index("_key_team_user", IndexKind::Unique, &["teamId", "userId"]),
            ],
        )
    })
}

/// The tokens collection (one-time secrets exchanged for a session: `Users.createToken`, and
/// the email flows' magic URLs and codes), indexed by user.
pub fn tokens() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        system(
            TOKENS,
            vec![
                attr("userId", String, Some(36), false),
                attr("secret", String, Some(64), false),
                attr("kind", String, Some(32), false),
                attr("expire", Datetime, None, false),
            ],
            vec![index("_key_user", IndexKind::Key, &["userId"])],
        )
    })
}

/// The audit log of users' auth events (`Account.listLogs`, `Users.listLogs`), indexed by user.
pub fn logs() -> &'static Collection {
    static C: OnceLock<Collection> = OnceLock::new();
    C.get_or_init(|| {
        use AttrKind::*;
        system(
            LOGS,
            vec![
                attr("userId", String, Some(36), false),
                attr("event", String, Some(64), false),
                attr("mode", String, Some(16), false),
                attr("ip", String, Some(45), false),
                attr("userAgent", String, Some(1024), false),
            ],
            vec![index("_key_user", IndexKind::Key, &["userId"])],
        )
    })
}

/// One auth event of a user: what happened, through which kind of caller, from where. Its
/// time is its document's `$createdAt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub id: String,
    pub created_at: i64,
    pub user_id: String,
    /// `user.create`, `session.create`, `recovery.update`, ...
    pub event: String,
    /// `default` (the user, or a guest), `admin` (a key).
    pub mode: String,
    pub ip: String,
    pub user_agent: String,
}

impl LogEntry {
    pub fn from_document(d: &Document) -> LogEntry {
        let g = |k: &str| d.data.get(k);
        LogEntry {
            id: d.id.clone(),
            created_at: d.created_at,
            user_id: text(g("userId")),
            event: text(g("event")),
            mode: text(g("mode")),
            ip: text(g("ip")),
            user_agent: text(g("userAgent")),
        }
    }

    pub fn data(&self) -> Data {
        [
            ("userId", Value::Str(self.user_id.clone())),
            ("event", Value::Str(self.event.clone())),
            ("mode", Value::Str(self.mode.clone())),
            ("ip", Value::Str(self.ip.clone())),
            ("userAgent", Value::Str(self.user_agent.clone())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A one-time token: its secret's SHA-256, what it is for, and until when it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub created_at: i64,
    pub user_id: String,
    pub secret_sha256: String,
    /// `generic` (`Users.createToken`), `magic-url`, `email`, ...
    pub kind: String,
    pub expire: i64,
}

impl Token {
    pub fn from_document(d: &Document) -> Token {
        let g = |k: &str| d.data.get(k);
        Token {
            id: d.id.clone(),
            created_at: d.created_at,
            user_id: text(g("userId")),
            secret_sha256: text(g("secret")),
            kind: text(g("kind")),
            expire: time(g("expire")).unwrap_or(0),
        }
    }

    pub fn data(&self) -> Data {
        [
            ("userId", Value::Str(self.user_id.clone())),
            ("secret", Value::Str(self.secret_sha256.clone())),
            ("kind", Value::Str(self.kind.clone())),
            ("expire", Value::Str(crate::time::format_ms(self.expire))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A team.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Team {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub name: String,
    /// Confirmed members.
    pub total: i64,
    pub prefs: String,
}

impl Team {
    pub fn from_document(d: &Document) -> Team {
        let g = |k: &str| d.data.get(k);
        Team {
            id: d.id.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            name: text(g("name")),
            total: match g("total") {
                Some(Value::Int(n)) => *n,
                _ => 0,
            },
            prefs: match text(g("prefs")) {
                p if p.is_empty() => "{}".to_string(),
                p => p,
            },
        }
    }

    pub fn data(&self) -> Data {
        [
            ("name", Value::Str(self.name.clone())),
            ("total", Value::Int(self.total)),
            ("prefs", Value::Str(self.prefs.clone())),
            ("search", Value::Str(format!("{} {}", self.id, self.name))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Who may read and change a team: its members read, its owners change.
    pub fn permissions(&self) -> Vec<String> {
        vec![
            format!("read(\"team:{}\")", self.id),
            format!("update(\"team:{}/owner\")", self.id),
            format!("delete(\"team:{}/owner\")", self.id),
        ]
    }
}

/// A membership of a user in a team; it grants roles once confirmed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub user_id: String,
    pub team_id: String,
    pub roles: Vec<String>,
    pub invited: i64,
    pub joined: Option<i64>,
    pub confirm: bool,
    /// SHA-256 of the invitation's secret (empty once confirmed or when none was sent).
    pub secret_sha256: String,
}

impl Membership {
    pub fn from_document(d: &Document) -> Membership {
        let g = |k: &str| d.data.get(k);
        Membership {
            id: d.id.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            user_id: text(g("userId")),
            team_id: text(g("teamId")),
            roles: strings(g("roles")),
            invited: time(g("invited")).unwrap_or(d.created_at),
            joined: time(g("joined")),
            confirm: flag(g("confirm")),
            secret_sha256: text(g("secret")),
        }
    }

    pub fn data(&self) -> Data {
        [
            ("userId", Value::Str(self.user_id.clone())),
            ("teamId", Value::Str(self.team_id.clone())),
            ("roles", str_array(&self.roles)),
            ("invited", Value::Str(crate::time::format_ms(self.invited))),
            ("joined", opt_time(self.joined)),
            ("confirm", Value::Bool(self.confirm)),
            ("secret", opt_str(&self.secret_sha256)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// What this membership adds to its user's roles (nothing until confirmed).
    pub fn team_roles(&self) -> Option<TeamRoles> {
        self.confirm.then(|| TeamRoles {
            team: self.team_id.clone(),
            membership: self.id.clone(),
            roles: self.roles.clone(),
        })
    }
}

/// A stored password: the hash, the algorithm that made it, and that algorithm's options
/// (JSON, as Appwrite reports them in `hashOptions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    pub algo: String,
    pub hash: String,
    pub options: String,
}

/// A user, as the state keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub name: String,
    /// Lower-cased; empty when the user has none.
    pub email: String,
    pub phone: String,
    pub password: Option<Credential>,
    pub registration: i64,
    /// `false`: blocked.
    pub status: bool,
    pub labels: Vec<String>,
    pub password_update: Option<i64>,
    pub email_verification: bool,
    pub phone_verification: bool,
    pub mfa: bool,
    /// A JSON object, as the client gave it.
    pub prefs: String,
    pub accessed_at: Option<i64>,
    /// The TOTP authenticator, if one was added: the seed its secret is derived from
    /// (`totp_secret`), and whether a code from it was seen.
    pub totp: Option<Authenticator>,
    /// MFA recovery codes, if made: their seed (`recovery_codes`) and which are used up.
    pub recovery: Option<RecoveryCodes>,
    /// The latest argon2id hashes of its passwords, newest first, as many as the project's
    /// `password_history` (the current one included).
    pub password_history: Vec<String>,
}

/// A TOTP authenticator: its secret is derived from the project's secret and `seed`, so
/// the state holds none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Authenticator {
    pub seed: String,
    pub verified: bool,
}

/// A user's MFA recovery codes: `RECOVERY_CODES` derived from the project's secret and
/// `seed`; bit `i` of `used` set once code `i` was used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCodes {
    pub seed: String,
    pub used: u32,
}

pub(crate) fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    }
}

pub(crate) fn flag(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

fn time(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::Str(s)) => crate::time::parse_ms(s),
        _ => None,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// An empty string is stored as null, so that unique indexes ignore it.
fn opt_str(s: &str) -> Value {
    match s.is_empty() {
        true => Value::Null,
        false => Value::Str(s.to_string()),
    }
}

fn opt_time(t: Option<i64>) -> Value {
    t.map(|t| Value::Str(crate::time::format_ms(t)))
        .unwrap_or(Value::Null)
}

fn str_array(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::Str(s.clone())).collect())
}

impl User {
    pub fn from_document(d: &Document) -> User {
        let g = |k: &str| d.data.get(k);
        let password = match g("password") {
            Some(Value::Str(h)) => Some(Credential {
                algo: text(g("hash")),
                hash: h.clone(),
                options: text(g("hashOptions")),
            }),
            _ => None,
        };
        User {
            id: d.id.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            name: text(g("name")),
            email: text(g("email")),
            phone: text(g("phone")),
            password,
            registration: time(g("registration")).unwrap_or(d.created_at),
            status: flag(g("status")),
            labels: strings(g("labels")),
            password_update: time(g("passwordUpdate")),
            email_verification: flag(g("emailVerification")),
            phone_verification: flag(g("phoneVerification")),
            mfa: flag(g("mfa")),
            prefs: match text(g("prefs")) {
                p if p.is_empty() => "{}".to_string(),
                p => p,
            },
            accessed_at: time(g("accessedAt")),
            totp: match text(g("mfaTotp")) {
                s if s.is_empty() => None,
                seed => Some(Authenticator {
                    seed,
                    verified: flag(g("mfaTotpVerified")),
                }),
            },
            password_history: strings(g("passwordHistory")),
            recovery: match text(g("mfaRecovery")) {
                s if s.is_empty() => None,
                seed => Some(RecoveryCodes {
                    seed,
                    used: match g("mfaRecoveryUsed") {
                        Some(Value::Int(n)) => u32::try_from(*n).unwrap_or(0),
                        _ => 0,
                    },
                }),
            },
        }
    }

    /// The document data this user is stored as.
    pub fn data(&self) -> Data {
        let (password, hash, options) = match &self.password {
            Some(c) => (
                Value::Str(c.hash.clone()),
                Value::Str(c.algo.clone()),
                Value::Str(c.options.clone()),
            ),
            None => (Value::Null, Value::Null, Value::Null),
        };
        let search = [self.id.as_str(), &self.name, &self.email, &self.phone]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        [
            ("name", Value::Str(self.name.clone())),
            ("email", opt_str(&self.email)),
            ("phone", opt_str(&self.phone)),
            ("password", password),
            ("hash", hash),
            ("hashOptions", options),
            (
                "registration",
                Value::Str(crate::time::format_ms(self.registration)),
            ),
            ("status", Value::Bool(self.status)),
            ("labels", str_array(&self.labels)),
            ("passwordUpdate", opt_time(self.password_update)),
            ("emailVerification", Value::Bool(self.email_verification)),
            ("phoneVerification", Value::Bool(self.phone_verification)),
            ("mfa", Value::Bool(self.mfa)),
            ("prefs", Value::Str(self.prefs.clone())),
            ("accessedAt", opt_time(self.accessed_at)),
            ("search", Value::Str(search)),
            (
                "mfaTotp",
                self.totp
                    .as_ref()
                    .map_or(Value::Null, |a| Value::Str(a.seed.clone())),
            ),
            (
                "mfaTotpVerified",
                Value::Bool(self.totp.as_ref().is_some_and(|a| a.verified)),
            ),
            (
                "mfaRecovery",
                self.recovery
                    .as_ref()
                    .map_or(Value::Null, |r| Value::Str(r.seed.clone())),
            ),
            ("passwordHistory", str_array(&self.password_history)),
            (
                "mfaRecoveryUsed",
                Value::Int(self.recovery.as_ref().map_or(0, |r| i64::from(r.used))),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// SHA-256 (hex) of the stored password hash: the proof a proposer that verified a
    /// password against this hash puts in its command (see `AuthOp`).
    pub fn credential_proof(&self) -> String {
        use sha2::{Digest, Sha256};
        let hash = self
            .password
            .as_ref()
            .map(|c| c.hash.as_str())
            .unwrap_or("");
        hex::encode(Sha256::digest(hash.as_bytes()))
    }

    /// Verified, in Appwrite's sense: by email or by phone.
    pub fn verified(&self) -> bool {
        self.email_verification || self.phone_verification
    }

    /// The second factors this user has (Appwrite's `listMfaFactors`): a verified TOTP
    /// authenticator, a verified email, a verified phone, unused recovery codes.
    pub fn factors(&self) -> Factors {
        Factors {
            totp: self.totp.as_ref().is_some_and(|a| a.verified),
            email: !self.email.is_empty() && self.email_verification,
            phone: !self.phone.is_empty() && self.phone_verification,
            recovery_code: self
                .recovery
                .as_ref()
                .is_some_and(|r| r.used.count_ones() < RECOVERY_CODES as u32),
        }
    }

    /// How many factors a session of this user needs: two once MFA is on and the user has a
    /// second factor (recovery codes do not count), else one — Appwrite's rule.
    pub fn factors_required(&self) -> usize {
        let f = self.factors();
        match self.mfa && (f.totp || f.email || f.phone) {
            true => 2,
            false => 1,
        }
    }
}

/// Which second factors a user has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Factors {
    pub totp: bool,
    pub email: bool,
    pub phone: bool,
    pub recovery_code: bool,
}

/// Recovery codes a user gets, as Appwrite: six of ten hex characters.
pub const RECOVERY_CODES: usize = 6;
/// A challenge passed within this long makes a session's MFA "recent", which removing an
/// authenticator or reading recovery codes needs (Appwrite's 30 minutes).
pub const MFA_RECENT_MS: i64 = 30 * 60 * 1000;
/// The factors a challenge may be for.
pub const CHALLENGE_FACTORS: [&str; 4] = ["email", "phone", "totp", "recoveryCode"];
/// Token kinds of MFA challenges are this and the factor (`mfa-totp`).
pub const CHALLENGE_PREFIX: &str = "mfa-";

/// A session, as the state keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub user_id: String,
    /// SHA-256 (hex) of the secret the client holds.
    pub secret_sha256: String,
    /// `email`, `anonymous`, `token`, `magic-url`, `server`, ...
    pub provider: String,
    pub provider_uid: String,
    pub expire: i64,
    pub ip: String,
    pub user_agent: String,
    /// Factors the session was made or verified with: `password`, `email`, `totp`, ...
    pub factors: Vec<String>,
    pub mfa_updated_at: Option<i64>,
}

impl Session {
    /// What a JWT made without a session stands on: the user alone (empty id).
    pub fn unbound(user: &str) -> Session {
        Session {
            id: String::new(),
            created_at: 0,
            updated_at: 0,
            user_id: user.to_string(),
            secret_sha256: String::new(),
            provider: String::new(),
            provider_uid: String::new(),
            expire: i64::MAX,
            ip: String::new(),
            user_agent: String::new(),
            factors: Vec::new(),
            mfa_updated_at: None,
        }
    }

    pub fn from_document(d: &Document) -> Session {
        let g = |k: &str| d.data.get(k);
        Session {
            id: d.id.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            user_id: text(g("userId")),
            secret_sha256: text(g("secret")),
            provider: text(g("provider")),
            provider_uid: text(g("providerUid")),
            expire: time(g("expire")).unwrap_or(0),
            ip: text(g("ip")),
            user_agent: text(g("userAgent")),
            factors: strings(g("factors")),
            mfa_updated_at: time(g("mfaUpdatedAt")),
        }
    }

    pub fn data(&self) -> Data {
        [
            ("userId", Value::Str(self.user_id.clone())),
            ("secret", Value::Str(self.secret_sha256.clone())),
            ("provider", Value::Str(self.provider.clone())),
            ("providerUid", Value::Str(self.provider_uid.clone())),
            ("expire", Value::Str(crate::time::format_ms(self.expire))),
            ("ip", Value::Str(self.ip.clone())),
            ("userAgent", Value::Str(self.user_agent.clone())),
            ("factors", str_array(&self.factors)),
            ("mfaUpdatedAt", opt_time(self.mfa_updated_at)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A membership as roles see it: the team, the membership's id, and the roles it grants.
#[derive(Clone, Debug, PartialEq)]
pub struct TeamRoles {
    pub team: String,
    pub membership: String,
    pub roles: Vec<String>,
}

/// The roles a caller holds, as Appwrite names them and in Appwrite's order (error messages
/// list them): a guest holds `any` and `guests`; a user holds `any`, `users`, `user:ID`, the
/// verified or unverified forms, then for each confirmed membership `team:T`, `member:M` and
/// `team:T/R` for each role, then `label:L` for each label.
pub fn roles(user: Option<&User>, teams: &[TeamRoles]) -> Vec<String> {
    let Some(u) = user else {
        return vec!["any".into(), "guests".into()];
    };
    let dim = if u.verified() {
        "verified"
    } else {
        "unverified"
    };
    let mut r = vec![
        "any".to_string(),
        "users".to_string(),
        format!("user:{}", u.id),
        format!("user:{}/{dim}", u.id),
        format!("users/{dim}"),
    ];
    for t in teams {
        r.push(format!("team:{}", t.team));
        r.push(format!("member:{}", t.membership));
        for role in &t.roles {
            r.push(format!("team:{}/{}", t.team, role));
        }
    }
    for l in &u.labels {
        r.push(format!("label:{l}"));
    }
    r.dedup();
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn totp_codes_follow_rfc_6238() {
        // RFC 6238, appendix B (SHA-1): the last six of its eight digits.
        let secret = b"12345678901234567890";
        assert_eq!(super::totp_code(secret, 59_000), "287082");
        assert_eq!(super::totp_code(secret, 1_111_111_109_000), "081804");
        assert_eq!(super::totp_code(secret, 20_000_000_000_000), "353130");
        let sha = super::sha256_hex("081804");
        assert!(super::totp_matches(secret, &sha, 1_111_111_109_000));
        // The step after still takes it; two steps after does not.
        assert!(super::totp_matches(
            secret,
            &sha,
            1_111_111_109_000 + 30_000
        ));
        assert!(!super::totp_matches(
            secret,
            &sha,
            1_111_111_109_000 + 60_000
        ));
        let s = super::totp_secret("k", "u", "seed");
        assert_eq!(super::totp_base32(&s).len(), 103);
        let codes = super::recovery_codes("k", "u", "seed");
        assert_eq!(codes.len(), 6);
        assert!(codes
            .iter()
            .all(|c| c.len() == 10 && c.chars().all(|c| c.is_ascii_hexdigit())));
        assert_ne!(codes, super::recovery_codes("k", "u", "seed2"));
    }

    #[test]
    fn mail_secrets_are_as_long_as_appwrite_makes_them_and_kept_apart_by_kind() {
        use super::{mail_secret, MailKind};
        let v = mail_secret("k", MailKind::Verification, "t1");
        assert_eq!(v.len(), 256);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(v, mail_secret("k", MailKind::Verification, "t1"));
        assert_ne!(v, mail_secret("k", MailKind::Recovery, "t1"));
        assert_ne!(v, mail_secret("k2", MailKind::Verification, "t1"));
        assert_ne!(v, mail_secret("k", MailKind::Verification, "t2"));
        assert_eq!(mail_secret("k", MailKind::MagicUrl, "t1").len(), 64);
        let otp = mail_secret("k", MailKind::EmailOtp, "t1");
        assert_eq!(otp.len(), 6);
        assert!(otp.chars().all(|c| c.is_ascii_digit()));
    }

    use super::*;

    fn user() -> User {
        User {
            id: "u1".into(),
            created_at: 5,
            updated_at: 6,
            name: "Ada".into(),
            email: "ada@example.com".into(),
            phone: String::new(),
            password: Some(Credential {
                algo: "argon2".into(),
                hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                options: r#"{"type":"argon2"}"#.into(),
            }),
            registration: 5,
            status: true,
            labels: vec!["vip".into()],
            password_update: Some(5),
            email_verification: false,
            phone_verification: true,
            mfa: false,
            prefs: r#"{"theme":"dark"}"#.into(),
            accessed_at: None,
            totp: None,
            recovery: None,
            password_history: Vec::new(),
        }
    }

    #[test]
    fn a_user_round_trips_through_its_document() {
        let u = user();
        let d = Document {
            id: u.id.clone(),
            sequence: 1,
            created_at: u.created_at,
            updated_at: u.updated_at,
            permissions: vec![],
            data: u.data(),
        };
        assert_eq!(User::from_document(&d), u);
        // No phone: stored as null, so the unique phone index holds no entry for it.
        assert_eq!(d.data["phone"], Value::Null);
        assert_eq!(
            d.data["search"],
            Value::Str("u1 Ada ada@example.com".into())
        );
    }

    #[test]
    fn roles_of_guests_users_labels_and_teams() {
        assert_eq!(roles(None, &[]), ["any", "guests"]);
        let teams = [TeamRoles {
            team: "t1".into(),
            membership: "m1".into(),
            roles: vec!["owner".into()],
        }];
        assert_eq!(
            roles(Some(&user()), &teams),
            [
                "any",
                "users",
                "user:u1",
                "user:u1/verified",
                "users/verified",
                "team:t1",
                "member:m1",
                "team:t1/owner",
                "label:vip"
            ]
        );
    }
}

/// A project's auth settings (Appwrite's `auths`), set by the operator (`basalt project
/// auth`, `PATCH /v1/projects/{id}/auth/...`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthSettings {
    /// How long a new (or extended) session lasts.
    pub duration_ms: i64,
    /// Users the project may have at most (0: no limit); sign-ups past it are refused.
    pub limit: u64,
    /// Sessions a user holds at most; a new one ends the oldest.
    pub max_sessions: u32,
    /// A new password may not be any of the user's last this many (0..=20).
    pub password_history: u32,
    /// Refuse the most common passwords.
    pub password_dictionary: bool,
    /// Refuse passwords that contain the user's id, name, email or phone.
    pub personal_data_check: bool,
    /// Sign-in methods turned off (`AUTH_METHODS`).
    pub disabled: Vec<String>,
}

/// The sign-in methods a project may turn off, in Appwrite's names.
pub const AUTH_METHODS: [&str; 7] = [
    "email-password",
    "magic-url",
    "email-otp",
    "anonymous",
    "invites",
    "jwt",
    "phone",
];
/// The longest password history Appwrite keeps.
pub const PASSWORD_HISTORY_MAX: u32 = 20;

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            duration_ms: SESSION_TTL_MS,
            limit: 0,
            max_sessions: MAX_SESSIONS as u32,
            password_history: 0,
            password_dictionary: false,
            personal_data_check: false,
            disabled: Vec::new(),
        }
    }
}

impl AuthSettings {
    /// Whether sign-in `method` (one of `AUTH_METHODS`) is on.
    pub fn allows(&self, method: &str) -> bool {
        !self.disabled.iter().any(|m| m == method)
    }

    /// Applies one change (the operator's), kept within the ranges the API accepts whatever
    /// the command says: the log, not the API, is what every replica applies.
    pub fn apply(&mut self, change: &AuthChange) {
        match change {
            AuthChange::Duration(ms) => self.duration_ms = (*ms).clamp(60_000, SESSION_TTL_MS),
            AuthChange::Limit(n) => self.limit = *n,
            AuthChange::MaxSessions(n) => self.max_sessions = (*n).clamp(1, 100),
            AuthChange::PasswordHistory(n) => {
                self.password_history = (*n).min(PASSWORD_HISTORY_MAX)
            }
            AuthChange::PasswordDictionary(on) => self.password_dictionary = *on,
            AuthChange::PersonalDataCheck(on) => self.personal_data_check = *on,
            AuthChange::Method { method, enabled } => {
                self.disabled.retain(|m| m != method);
                if !enabled {
                    self.disabled.push(method.clone());
                    self.disabled.sort();
                }
            }
        }
    }
}

/// One change of a project's auth settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AuthChange {
    Duration(i64),
    Limit(u64),
    MaxSessions(u32),
    PasswordHistory(u32),
    PasswordDictionary(bool),
    PersonalDataCheck(bool),
    Method { method: String, enabled: bool },
}

/// The emails Basalt sends, each with a one-time secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailKind {
    /// `Account.createVerification`: a link that verifies the address.
    Verification,
    /// `Account.createRecovery`: a link to set a new password.
    Recovery,
    /// `Account.createMagicURLToken`: a link that signs in.
    MagicUrl,
    /// `Account.createEmailToken`: a six-digit code that signs in.
    EmailOtp,
    /// `Teams.createMembership` by a user: a link that accepts the invitation.
    Invitation,
    /// `Account.createMfaChallenge` for the `email` factor: a six-digit code.
    MfaChallenge,
}

impl MailKind {
    /// The token kind (or, for invitations, the membership) the secret belongs to; also what
    /// keeps the secrets of different kinds apart where they are derived.
    pub fn token_kind(self) -> &'static str {
        match self {
            MailKind::Verification => TOKEN_VERIFICATION,
            MailKind::Recovery => TOKEN_RECOVERY,
            MailKind::MagicUrl => TOKEN_MAGIC_URL,
            MailKind::EmailOtp => TOKEN_EMAIL_OTP,
            MailKind::Invitation => "invitation",
            MailKind::MfaChallenge => "mfa-email",
        }
    }

    /// Characters of the secret, as Appwrite makes them (the code is six digits).
    pub fn secret_len(self) -> usize {
        match self {
            MailKind::Verification | MailKind::Recovery | MailKind::Invitation => 256,
            MailKind::MagicUrl => 64,
            MailKind::EmailOtp | MailKind::MfaChallenge => 6,
        }
    }
}

/// An email waiting in the outbox (Raft state) until the leader's mail runner has sent it.
/// Its secret is not here: the runner derives it again from the project's secret and
/// `secret_of` (the token's or the membership's id), so neither the log nor a snapshot
/// holds a usable link. Everything else the message says is fixed when it is queued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    pub id: String,
    pub project: String,
    pub kind: MailKind,
    /// When it is (next) to be sent, epoch ms: the queue's order.
    pub due: i64,
    pub attempts: u32,
    pub user_id: String,
    /// The recipient, filled in when applied from the user as it is then.
    pub to: String,
    pub to_name: String,
    pub secret_of: String,
    /// Until when the secret holds.
    pub expire: i64,
    /// The page the link opens (none for a code).
    pub url: String,
    /// The security phrase shown both to the signing-in page and in the email, if asked for.
    pub phrase: String,
    /// Invitations: the team, and who invited.
    pub team_id: String,
    pub team_name: String,
    pub inviter: String,
}

impl Mail {
    /// A new email of `kind`; the apply that queues it fills in its recipient and secret.
    pub fn new(id: String, kind: MailKind, url: String, phrase: String) -> Mail {
        Mail {
            id,
            project: String::new(),
            kind,
            due: 0,
            attempts: 0,
            user_id: String::new(),
            to: String::new(),
            to_name: String::new(),
            secret_of: String::new(),
            expire: 0,
            url,
            phrase,
            team_id: String::new(),
            team_name: String::new(),
            inviter: String::new(),
        }
    }
}

/// What a code given for an MFA challenge proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeCheck {
    /// Nothing: wrong code, expired or foreign challenge.
    Refused,
    /// The challenge's factor.
    Passed,
    /// Recovery code number `i` (used up with it).
    RecoveryCode(usize),
}

/// Checks `otp_sha256` (SHA-256 of the code given) against `challenge`, a token of kind
/// `mfa-<factor>` of `user`, at `at`: a TOTP code of the user's authenticator for `at`, the
/// emailed code, or one of the user's unused recovery codes. Deterministic: apply decides
/// with it, and a node checks a guess with it before proposing anything.
pub fn check_challenge(
    project_secret: &str,
    user: &User,
    challenge: &Token,
    otp_sha256: &str,
    at: i64,
) -> ChallengeCheck {
    if challenge.user_id != user.id || challenge.expire <= at {
        return ChallengeCheck::Refused;
    }
    let passed = match challenge.kind.strip_prefix(CHALLENGE_PREFIX) {
        // Only a verified authenticator: one added and never verified may be someone else's.
        Some("totp") => user.totp.as_ref().is_some_and(|a| {
            a.verified
                && totp_matches(
                    &totp_secret(project_secret, &user.id, &a.seed),
                    otp_sha256,
                    at,
                )
        }),
        Some("email" | "phone") => {
            !challenge.secret_sha256.is_empty() && challenge.secret_sha256 == otp_sha256
        }
        Some("recoveryCode") => {
            let Some(r) = &user.recovery else {
                return ChallengeCheck::Refused;
            };
            let codes = recovery_codes(project_secret, &user.id, &r.seed);
            return codes
                .iter()
                .enumerate()
                .find(|(i, c)| r.used & (1 << i) == 0 && sha256_hex(c) == otp_sha256)
                .map_or(ChallengeCheck::Refused, |(i, _)| {
                    ChallengeCheck::RecoveryCode(i)
                });
        }
        _ => false,
    };
    match passed {
        true => ChallengeCheck::Passed,
        false => ChallengeCheck::Refused,
    }
}

/// The secret an emailed link or code carries: HMAC-SHA256 of the project's secret over the
/// kind and the id of what it unlocks (a token, or an invitation's membership), as many hex
/// characters as Appwrite gives that kind, or six digits for a code. Apply stores only its
/// SHA-256; the mail runner derives it again to write the message.
pub fn mail_secret(project_secret: &str, kind: MailKind, id: &str) -> String {
    let block = |n: u32| derive(project_secret, "basalt-mail", &[kind.token_kind(), id], n);
    if matches!(kind, MailKind::EmailOtp | MailKind::MfaChallenge) {
        let d = block(0);
        let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % 1_000_000;
        return format!("{n:06}");
    }
    let mut out = String::new();
    let mut n = 0;
    while out.len() < kind.secret_len() {
        out.push_str(&hex::encode(block(n)));
        n += 1;
    }
    out.truncate(kind.secret_len());
    out
}

/// Block `n` of a secret derived from the project's secret: HMAC-SHA256 over `label`, the
/// `parts` (each after a NUL) and `n`.
fn derive(project_secret: &str, label: &str, parts: &[&str], n: u32) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(project_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    m.update(label.as_bytes());
    for p in parts {
        m.update(b"\0");
        m.update(p.as_bytes());
    }
    m.update(&n.to_be_bytes());
    m.finalize().into_bytes().into()
}

/// A TOTP authenticator's secret (64 bytes, as Appwrite's), derived from the project's
/// secret, the user and the authenticator's seed.
pub fn totp_secret(project_secret: &str, user: &str, seed: &str) -> Vec<u8> {
    let mut out = derive(project_secret, "basalt-totp", &[user, seed], 0).to_vec();
    out.extend_from_slice(&derive(project_secret, "basalt-totp", &[user, seed], 1));
    out
}

/// The secret as authenticator apps take it: base32, upper case, unpadded.
pub fn totp_base32(secret: &[u8]) -> String {
    base32::encode(base32::Alphabet::Rfc4648 { padding: false }, secret)
}

/// The six-digit TOTP code (SHA-1, 30-second steps, RFC 6238) for `at` (epoch ms).
pub fn totp_code(secret: &[u8], at_ms: i64) -> String {
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 30, secret.to_vec());
    totp.generate(u64::try_from(at_ms / 1000).unwrap_or(0))
}

/// Whether `code_sha256` is the SHA-256 of the code for `at`'s 30-second step or the one
/// before it (a code typed at the end of its step arrives in the next).
pub fn totp_matches(secret: &[u8], code_sha256: &str, at_ms: i64) -> bool {
    [at_ms, at_ms.saturating_sub(30_000)]
        .iter()
        .any(|t| sha256_hex(&totp_code(secret, *t)) == code_sha256)
}

/// A user's recovery codes (`RECOVERY_CODES` of ten hex characters), derived from the
/// project's secret, the user and the codes' seed.
pub fn recovery_codes(project_secret: &str, user: &str, seed: &str) -> Vec<String> {
    (0..RECOVERY_CODES as u32)
        .map(|i| {
            hex::encode(derive(project_secret, "basalt-recovery", &[user, seed], i))[..10]
                .to_string()
        })
        .collect()
}

/// Hex SHA-256 of a secret, as secrets are kept.
pub fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}
