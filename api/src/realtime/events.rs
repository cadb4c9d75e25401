//! From a committed change to Appwrite's realtime event: the event names (every `*`
//! expansion, in Appwrite's order), the channels it is published on, its payload (the
//! response model), and who may receive it. Pure: no state, no clock.

use crate::common::Flavor;
use model::auth::{self, Membership, Session, Team, Token, User};
use model::change::{Action, Change};
use model::schema::Collection;
use model::storage::{self, File};
use serde_json::Value as Json;

/// Who may receive an event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Access {
    /// A document: readers of its collection, or of the document itself when the collection
    /// lets documents carry permissions; nobody while the database or collection is disabled.
    Document {
        enabled: bool,
        collection: Vec<String>,
        document_security: bool,
        document: Vec<String>,
    },
    /// Holders of any of these roles (`user:ID`, `team:ID`).
    Roles(Vec<String>),
}

impl Access {
    pub(crate) fn allows(&self, roles: &[String]) -> bool {
        match self {
            Access::Document {
                enabled,
                collection,
                document_security,
                document,
            } => {
                *enabled
                    && (model::permission::allows(collection, "read", roles)
                        || (*document_security
                            && model::permission::allows(document, "read", roles)))
            }
            Access::Roles(wanted) => wanted.iter().any(|w| roles.contains(w)),
        }
    }
}

/// An event as every subscriber sees it (only `subscriptions` differs between them).
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub project: String,
    pub events: Vec<String>,
    pub channels: Vec<String>,
    pub timestamp: String,
    pub payload: Json,
    pub access: Access,
}

/// A piece of an event name: a literal, or the `n`th value (which `*` may stand for).
#[derive(Clone, Copy)]
enum Seg<'a> {
    Lit(&'a str),
    Val(usize),
}

/// Which values are starred, in Appwrite's order (bit `i`: value `i`): none, all, then the
/// single and paired stars as its generator emits them. Patterns with fewer values repeat
/// earlier names, which are dropped.
const MASKS: [u8; 8] = [0b000, 0b111, 0b010, 0b011, 0b001, 0b100, 0b101, 0b110];

fn render(level: &[Seg], values: &[&str], mask: u8) -> String {
    let mut out = String::new();
    for (i, s) in level.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match *s {
            Seg::Lit(l) => out.push_str(l),
            Seg::Val(n) if mask & (1 << n) != 0 => out.push('*'),
            Seg::Val(n) => out.push_str(values[n]),
        }
    }
    out
}

/// Every name of an event given its levels (most specific first) in each of its forms (a
/// document's legacy and TablesDB names), interleaved per name as Appwrite mirrors them.
fn expand(forms: &[Vec<Vec<Seg>>], values: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let levels = forms.first().map_or(0, Vec::len);
    for l in 0..levels {
        for mask in MASKS {
            for form in forms {
                let name = render(&form[l], values, mask);
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// `databases.D.collections.C.documents.X.<action>` and its expansions: in a TablesDB
/// database the `tablesdb.…rows` names lead each triple; every legacy name has its
/// `databases.D.tables.C.rows` mirror.
fn document_events(d: &str, c: &str, x: &str, action: &str, tablesdb: bool) -> Vec<String> {
    use Seg::{Lit, Val};
    let form = |db: &'static str, coll: &'static str, doc: &'static str| {
        vec![
            vec![
                Lit(db),
                Val(0),
                Lit(coll),
                Val(1),
                Lit(doc),
                Val(2),
                Lit(action),
            ],
            vec![Lit(db), Val(0), Lit(coll), Val(1), Lit(doc), Val(2)],
            vec![Lit(db), Val(0), Lit(coll), Val(1)],
            vec![Lit(db), Val(0)],
        ]
    };
    let mut forms = Vec::new();
    if tablesdb {
        forms.push(form("tablesdb", "tables", "rows"));
    }
    forms.push(form("databases", "collections", "documents"));
    forms.push(form("databases", "tables", "rows"));
    expand(&forms, &[d, c, x])
}

/// The 16 channels of a document or row event: the 8 names, then each with the action.
fn document_channels(d: &str, c: &str, x: &str, action: &str) -> Vec<String> {
    let base = [
        "documents".to_string(),
        format!("databases.{d}.collections.{c}.documents"),
        format!("databases.{d}.collections.{c}.documents.{x}"),
        "rows".to_string(),
        format!("databases.{d}.tables.{c}.rows"),
        format!("databases.{d}.tables.{c}.rows.{x}"),
        format!("tablesdb.{d}.tables.{c}.rows"),
        format!("tablesdb.{d}.tables.{c}.rows.{x}"),
    ];
    let with_action: Vec<String> = base.iter().map(|b| format!("{b}.{action}")).collect();
    base.into_iter().chain(with_action).collect()
}

/// The action an account, team or membership event names: those have no upserts.
fn plain(action: Action) -> &'static str {
    match action {
        Action::Upsert => "update",
        a => a.as_str(),
    }
}

/// `<kind>.U.<action>[.<attr>]` (users, teams) and its expansions.
fn top_events(kind: &str, id: &str, action: &str, attr: Option<&str>) -> Vec<String> {
    use Seg::{Lit, Val};
    let mut levels = vec![vec![Lit(kind), Val(0), Lit(action)]];
    if let Some(a) = attr {
        levels.push(vec![Lit(kind), Val(0), Lit(action), Lit(a)]);
    }
    levels.push(vec![Lit(kind), Val(0)]);
    expand(&[levels], &[id])
}

/// `<kind>.P.<sub>.S.<action>[.<attr>]` (a user's sessions and tokens, a team's memberships)
/// and its expansions; an attribute also names `<kind>.P.<action>.<attr>`, as Appwrite does.
fn nested_events(
    kind: &str,
    parent: &str,
    sub: &str,
    id: &str,
    action: &str,
    attr: Option<&str>,
) -> Vec<String> {
    use Seg::{Lit, Val};
    let full = vec![Lit(kind), Val(0), Lit(sub), Val(1)];
    let mut levels = Vec::new();
    if let Some(a) = attr {
        levels.push([full.as_slice(), &[Lit(action), Lit(a)]].concat());
    }
    levels.push([full.as_slice(), &[Lit(action)]].concat());
    levels.push(full.clone());
    if let Some(a) = attr {
        levels.push(vec![Lit(kind), Val(0), Lit(action), Lit(a)]);
    }
    levels.push(vec![Lit(kind), Val(0)]);
    expand(&[levels], &[parent, id])
}

/// `<base>`, `<base>.ID`, and with the action: `<base>.<action>`, `<base>.ID.<action>`.
fn four_channels(base: &str, id: &str, action: &str) -> Vec<String> {
    vec![
        base.to_string(),
        format!("{base}.{id}"),
        format!("{base}.{action}"),
        format!("{base}.{id}.{action}"),
    ]
}

/// The first of a user's fields that changed, as Appwrite names the update.
fn user_update(old: &User, new: &User) -> Option<&'static str> {
    if old.name != new.name {
        Some("name")
    } else if old.email != new.email {
        Some("email")
    } else if old.phone != new.phone {
        Some("phone")
    } else if old.password_update != new.password_update {
        Some("password")
    } else if old.prefs != new.prefs {
        Some("prefs")
    } else if old.status != new.status {
        Some("status")
    } else if old.email_verification != new.email_verification
        || old.phone_verification != new.phone_verification
    {
        Some("verification")
    } else if old.labels != new.labels {
        Some("labels")
    } else if old.mfa != new.mfa {
        Some("mfa")
    } else {
        // Bookkeeping (last access, authenticators, password history): no event.
        None
    }
}

/// What a change of a file record tells subscribers: `create` when its upload completes,
/// `update` when a complete file's name or permissions change, `delete` when it goes; nothing
/// while it is being uploaded.
pub(crate) fn file_action(c: &Change) -> Option<&'static str> {
    let bucket = storage::bucket_of(&c.collection)?;
    let file = |d: &Option<model::Document>| d.as_ref().map(|d| File::from_document(bucket, d));
    match (file(&c.old), file(&c.new)) {
        (_, None) => Some("delete"),
        (None, Some(n)) => n.complete().then_some("create"),
        (Some(o), Some(n)) if !o.complete() && n.complete() => Some("create"),
        (Some(_), Some(n)) if !n.complete() => None,
        (Some(_), Some(_)) => Some("update"),
    }
}

/// A file's event, as Appwrite makes them: `create` once its upload completes (not for each
/// chunk), `update` and `delete` for a complete file. Buckets make none.
fn file_event(c: &Change) -> Option<Event> {
    let bucket = storage::bucket_of(&c.collection)?;
    let action = file_action(c)?;
    let doc = c.document();
    let f = File::from_document(bucket, doc);
    let base = [
        "files".to_string(),
        format!("buckets.{bucket}.files"),
        format!("buckets.{bucket}.files.{}", f.id),
    ];
    let with_action: Vec<String> = base.iter().map(|b| format!("{b}.{action}")).collect();
    Some(Event {
        project: c.project.clone(),
        events: nested_events("buckets", bucket, "files", &f.id, action, None),
        channels: base.into_iter().chain(with_action).collect(),
        timestamp: model::time::format_ms(c.at),
        payload: crate::storage::file_json(&f),
        access: Access::Document {
            enabled: c.enabled,
            collection: c.collection_permissions.clone(),
            document_security: c.document_security,
            document: doc.permissions.clone(),
        },
    })
}

/// Looks up what a payload shows beyond the change itself (a membership's team name).
pub(crate) trait Lookup {
    fn team_name(&self, project: &str, team: &str) -> String;
}

/// The event a change makes, if Appwrite makes one for it.
pub(crate) fn event(c: &Change, lookup: &dyn Lookup) -> Option<Event> {
    let doc = c.document();
    let action = c.action.as_str();
    if c.database == storage::DB {
        return file_event(c);
    }
    let (events, channels, payload, access) = if c.database != auth::DB {
        let flavor = match c.tablesdb {
            true => Flavor::Tables,
            false => Flavor::Legacy,
        };
        let coll = Collection {
            id: c.collection.clone(),
            database: c.database.clone(),
            name: String::new(),
            enabled: c.enabled,
            permissions: Vec::new(),
            document_security: c.document_security,
            attributes: Vec::new(),
            indexes: Vec::new(),
            reshapes: Vec::new(),
            relations: Default::default(),
            created_at: 0,
            updated_at: 0,
        };
        (
            document_events(&c.database, &c.collection, &doc.id, action, c.tablesdb),
            document_channels(&c.database, &c.collection, &doc.id, action),
            crate::render::document(doc, &coll, flavor, None),
            Access::Document {
                enabled: c.enabled,
                collection: c.collection_permissions.clone(),
                document_security: c.document_security,
                document: doc.permissions.clone(),
            },
        )
    } else {
        match c.collection.as_str() {
            auth::USERS => {
                let user = User::from_document(doc);
                let attr = match (&c.old, &c.new, c.action) {
                    (Some(o), Some(n), _) => Some(user_update(
                        &User::from_document(o),
                        &User::from_document(n),
                    )?),
                    _ => None,
                };
                let action = plain(c.action);
                (
                    top_events("users", &user.id, action, attr),
                    four_channels("account", &user.id, action),
                    crate::users::user_json(&user, false),
                    Access::Roles(vec![format!("user:{}", user.id)]),
                )
            }
            auth::SESSIONS => {
                let s = Session::from_document(doc);
                (
                    nested_events("users", &s.user_id, "sessions", &s.id, action, None),
                    vec!["account".to_string(), format!("account.{}", s.user_id)],
                    crate::users::session_json(&s, None, ""),
                    Access::Roles(vec![format!("user:{}", s.user_id)]),
                )
            }
            auth::TOKENS if c.action == Action::Create => {
                let t = Token::from_document(doc);
                let sub = match t.kind.as_str() {
                    auth::TOKEN_VERIFICATION => "verification",
                    auth::TOKEN_RECOVERY => "recovery",
                    _ => "tokens",
                };
                (
                    nested_events("users", &t.user_id, sub, &t.id, action, None),
                    vec!["account".to_string(), format!("account.{}", t.user_id)],
                    crate::users::token_json(&t, ""),
                    Access::Roles(vec![format!("user:{}", t.user_id)]),
                )
            }
            auth::TEAMS => {
                let team = Team::from_document(doc);
                let (attr, payload) = match (&c.old, &c.new) {
                    (Some(o), Some(_)) => {
                        let old = Team::from_document(o);
                        if old.prefs != team.prefs {
                            (Some("prefs"), crate::teams::prefs_json(&team.prefs))
                        } else if old.name != team.name {
                            (None, crate::teams::team_json(&team))
                        } else {
                            // Its member count: the memberships' own events tell.
                            return None;
                        }
                    }
                    _ => (None, crate::teams::team_json(&team)),
                };
                let action = plain(c.action);
                (
                    top_events("teams", &team.id, action, attr),
                    four_channels("teams", &team.id, action),
                    payload,
                    Access::Roles(vec![format!("team:{}", team.id)]),
                )
            }
            auth::MEMBERSHIPS => {
                let m = Membership::from_document(doc);
                let attr = match (&c.old, &c.new) {
                    (Some(o), Some(_)) => {
                        let old = Membership::from_document(o);
                        if !old.confirm && m.confirm {
                            Some("status")
                        } else if old.roles != m.roles {
                            None
                        } else {
                            // An invitation sent again and the like: no event.
                            return None;
                        }
                    }
                    _ => None,
                };
                let action = plain(c.action);
                let team_name = lookup.team_name(&c.project, &m.team_id);
                (
                    nested_events("teams", &m.team_id, "memberships", &m.id, action, attr),
                    four_channels("memberships", &m.id, action),
                    crate::teams::membership_model(&m, None, &team_name),
                    Access::Roles(vec![format!("team:{}", m.team_id)]),
                )
            }
            // Tokens used up, audit logs: no event.
            _ => return None,
        }
    };
    Some(Event {
        project: c.project.clone(),
        events,
        channels,
        timestamp: model::time::format_ms(c.at),
        payload,
        access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_document_has_42_event_names_and_16_channels() {
        let e = document_events("D", "C", "X", "create", false);
        assert_eq!(e.len(), 42);
        assert_eq!(
            &e[..6],
            [
                "databases.D.collections.C.documents.X.create",
                "databases.D.tables.C.rows.X.create",
                "databases.*.collections.*.documents.*.create",
                "databases.*.tables.*.rows.*.create",
                "databases.D.collections.*.documents.X.create",
                "databases.D.tables.*.rows.X.create",
            ]
        );
        assert_eq!(
            &e[32..],
            [
                "databases.D.collections.C",
                "databases.D.tables.C",
                "databases.*.collections.*",
                "databases.*.tables.*",
                "databases.D.collections.*",
                "databases.D.tables.*",
                "databases.*.collections.C",
                "databases.*.tables.C",
                "databases.D",
                "databases.*",
            ]
        );
        let ch = document_channels("D", "C", "X", "update");
        assert_eq!(ch.len(), 16);
        assert_eq!(ch[0], "documents");
        assert_eq!(ch[7], "tablesdb.D.tables.C.rows.X");
        assert_eq!(ch[8], "documents.update");
        assert_eq!(ch[15], "tablesdb.D.tables.C.rows.X.update");
    }

    #[test]
    fn a_tablesdb_row_has_64_names_led_by_tablesdb() {
        let e = document_events("D", "C", "X", "create", true);
        assert_eq!(e.len(), 64);
        assert_eq!(
            &e[..4],
            [
                "tablesdb.D.tables.C.rows.X.create",
                "databases.D.collections.C.documents.X.create",
                "databases.D.tables.C.rows.X.create",
                "tablesdb.*.tables.*.rows.*.create",
            ]
        );
        assert_eq!(
            &e[60..],
            ["tablesdb.D", "databases.D", "tablesdb.*", "databases.*"]
        );
    }

    #[test]
    fn users_sessions_teams_and_memberships_expand_as_appwrite() {
        assert_eq!(
            top_events("users", "U", "update", Some("name")),
            [
                "users.U.update",
                "users.*.update",
                "users.U.update.name",
                "users.*.update.name",
                "users.U",
                "users.*"
            ]
        );
        assert_eq!(
            nested_events("users", "U", "sessions", "S", "create", None),
            [
                "users.U.sessions.S.create",
                "users.*.sessions.*.create",
                "users.U.sessions.*.create",
                "users.*.sessions.S.create",
                "users.U.sessions.S",
                "users.*.sessions.*",
                "users.U.sessions.*",
                "users.*.sessions.S",
                "users.U",
                "users.*",
            ]
        );
        assert_eq!(
            top_events("teams", "T", "create", None),
            ["teams.T.create", "teams.*.create", "teams.T", "teams.*"]
        );
        assert_eq!(
            nested_events("teams", "T", "memberships", "M", "update", None).len(),
            10
        );
        let status = nested_events("teams", "T", "memberships", "M", "update", Some("status"));
        assert!(status.contains(&"teams.T.update.status".to_string()));
        assert!(status.contains(&"teams.*.memberships.*.update.status".to_string()));
        assert_eq!(
            four_channels("memberships", "M", "update"),
            [
                "memberships",
                "memberships.M",
                "memberships.update",
                "memberships.M.update"
            ]
        );
    }

    #[test]
    fn documents_reach_readers_of_the_collection_or_of_the_row() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let access = |enabled, security| Access::Document {
            enabled,
            collection: vec!["read(\"users\")".into()],
            document_security: security,
            document: vec!["read(\"user:a\")".into()],
        };
        let a = roles(&["any", "users", "user:a"]);
        let guest = roles(&["any", "guests"]);
        assert!(access(true, false).allows(&a));
        assert!(!access(true, false).allows(&guest));
        assert!(!access(false, true).allows(&a));
        let only_row = Access::Document {
            enabled: true,
            collection: vec![],
            document_security: true,
            document: vec!["read(\"user:a\")".into()],
        };
        assert!(only_row.allows(&a));
        assert!(!only_row.allows(&roles(&["any", "users", "user:b"])));
        assert!(Access::Roles(vec!["team:t".into()]).allows(&roles(&["team:t"])));
        assert!(!Access::Roles(vec!["team:t".into()]).allows(&roles(&["team:u"])));
    }
}
