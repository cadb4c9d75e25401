//! What the handlers of the database services share: the two vocabularies (`Flavor`), how a
//! request takes its view and is authorised (`enter`, `prepare`), proposing, the common
//! lookups and replies, and row-data parsing. Imports none of the handler modules.

use crate::auth::{authorize, Ctx};
use crate::error::ApiError;
use crate::params::{data_from_json, new_id, new_request_id, Req};
use crate::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::command::Data;
use model::msg;
use model::permission::{self, Scope};
use model::query::{Spec, DEFAULT_LIMIT};
use model::reader::Consistency;
use model::schema::{Collection, Database, Transaction};
use model::{id, Envelope, Error, ErrorCode, Op, Outcome, Value};
use serde_json::{json, Map, Value as Json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Legacy,
    Tables,
}

impl Flavor {
    pub(crate) fn base(self) -> &'static str {
        match self {
            Flavor::Legacy => "/v1/databases",
            Flavor::Tables => "/v1/tablesdb",
        }
    }
    pub(crate) fn coll_seg(self) -> &'static str {
        match self {
            Flavor::Legacy => "collections",
            Flavor::Tables => "tables",
        }
    }
    pub fn attrs_key(self) -> &'static str {
        match self {
            Flavor::Legacy => "attributes",
            Flavor::Tables => "columns",
        }
    }
    pub fn index_attrs_key(self) -> &'static str {
        self.attrs_key()
    }
    pub(crate) fn docs_key(self) -> &'static str {
        match self {
            Flavor::Legacy => "documents",
            Flavor::Tables => "rows",
        }
    }
    pub(crate) fn coll_id_param(self) -> &'static str {
        match self {
            Flavor::Legacy => "collectionId",
            Flavor::Tables => "tableId",
        }
    }
    pub(crate) fn doc_id_param(self) -> &'static str {
        match self {
            Flavor::Legacy => "documentId",
            Flavor::Tables => "rowId",
        }
    }
    pub fn security_key(self) -> &'static str {
        match self {
            Flavor::Legacy => "documentSecurity",
            Flavor::Tables => "rowSecurity",
        }
    }
    /// The relationship attribute's field naming the related collection (and the create
    /// request's parameter, with `Id`).
    pub fn related_key(self) -> &'static str {
        match self {
            Flavor::Legacy => "relatedCollection",
            Flavor::Tables => "relatedTable",
        }
    }
    pub fn parent_id_key(self) -> &'static str {
        match self {
            Flavor::Legacy => "$collectionId",
            Flavor::Tables => "$tableId",
        }
    }
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Flavor::Legacy => "legacy",
            Flavor::Tables => "tablesdb",
        }
    }

    /// Renames a storage error into this API's vocabulary.
    pub(crate) fn error(self, e: Error) -> ApiError {
        match self {
            Flavor::Legacy => ApiError(e),
            Flavor::Tables => ApiError(e.for_tables()),
        }
    }

    pub(crate) fn scopes(self, what: Res, write: bool) -> &'static [&'static str] {
        match (what, write) {
            (Res::Db, false) => &["databases.read"],
            (Res::Db, true) => &["databases.write"],
            (Res::Coll, false) => &["collections.read", "tables.read"],
            (Res::Coll, true) => &["collections.write", "tables.write"],
            (Res::Attr, false) => &[
                "attributes.read",
                "columns.read",
                "collections.read",
                "tables.read",
            ],
            (Res::Attr, true) => &[
                "attributes.write",
                "columns.write",
                "collections.write",
                "tables.write",
            ],
            (Res::Index, false) => &["indexes.read", "collections.read", "tables.read"],
            (Res::Index, true) => &["indexes.write", "collections.write", "tables.write"],
            (Res::Doc, false) => &["documents.read", "rows.read"],
            (Res::Doc, true) => &["documents.write", "rows.write"],
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Res {
    Db,
    Coll,
    Attr,
    Index,
    Doc,
}

pub(crate) type Reply = Result<Response, ApiError>;

pub(crate) fn reply(status: StatusCode, body: Json) -> Reply {
    Ok((
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        )],
        body.to_string(),
    )
        .into_response())
}

pub(crate) fn no_content() -> Reply {
    Ok((
        StatusCode::NO_CONTENT,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=UTF-8",
        )],
    )
        .into_response())
}

/// A read: takes a linearizable view and authorises against it. A request with no
/// credentials at all, for a route no guest may use, is refused on this node's state instead,
/// without a quorum round: an anonymous flood of such requests costs no barriers.
pub(crate) async fn enter(s: &AppState, f: Flavor, req: &Req, what: Res) -> Result<Ctx, ApiError> {
    enter_scoped(s, req, f.scopes(what, false)).await
}

/// `enter` for a route that needs one of `scopes`.
pub(crate) async fn enter_scoped(
    s: &AppState,
    req: &Req,
    scopes: &[&str],
) -> Result<Ctx, ApiError> {
    let consistency = match !crate::auth::has_credentials(req) && crate::auth::guest_refused(scopes)
    {
        true => Consistency::Local,
        false => Consistency::Linearizable,
    };
    let view = match (consistency, crate::stale::bound()) {
        (Consistency::Linearizable, Some(max)) => {
            let (view, applied, stale) = s.backend.read_within(max).await?;
            crate::stale::served(applied, stale);
            view
        }
        _ => s.backend.read(consistency).await?,
    };
    authorize(view, req, scopes)
}

/// A write: authorised, and checked by `check`, on this node's applied state — no read
/// barrier, so a write costs one quorum round (its proposal). Those checks only give fast
/// answers: apply checks the key or session, the schema and the data again against the
/// committed state. When they refuse, or when the request's session is not in this node's
/// state yet, they run once more on a linearizable view before anything is answered or
/// proposed, so a node that lags behind never refuses what the cluster would accept (a table
/// created through another node a moment ago, a key or a session just made), nor acts for a
/// signed-in user as a guest.
pub(crate) async fn prepare<T>(
    s: &AppState,
    f: Flavor,
    req: &Req,
    what: Res,
    check: impl Fn(&Ctx) -> Result<T, ApiError>,
) -> Result<(Ctx, T), ApiError> {
    prepare_scoped(s, req, f.scopes(what, true), check).await
}

/// `prepare` for a route that needs one of `scopes`.
pub(crate) async fn prepare_scoped<T>(
    s: &AppState,
    req: &Req,
    scopes: &[&str],
    check: impl Fn(&Ctx) -> Result<T, ApiError>,
) -> Result<(Ctx, T), ApiError> {
    let local = s.backend.read(Consistency::Local).await?;
    let first = authorize(local, req, scopes).and_then(|ctx| {
        if ctx.unresolved {
            return Err(ApiError::new(ErrorCode::UserUnauthorized, "unresolved"));
        }
        let t = check(&ctx)?;
        Ok((ctx, t))
    });
    match first {
        Err(e) if e.is_refusal() => {
            let view = s.backend.read(Consistency::Linearizable).await?;
            let ctx = authorize(view, req, scopes)?;
            let t = check(&ctx)?;
            Ok((ctx, t))
        }
        other => other,
    }
}

/// Refuses a user or a guest on what only a key may do (changes by query, bulk writes and,
/// until transactions have owners, transactions).
pub(crate) fn key_only(ctx: &Ctx) -> Result<(), ApiError> {
    match ctx.is_key() {
        true => Ok(()),
        false => Err(ApiError::new(
            ErrorCode::GeneralUnauthorizedScope,
            "The current user or API key does not have the required scopes to access the requested resource.",
        )),
    }
}

/// A write whose only state-dependent check is its authorisation.
pub(crate) async fn enter_write(
    s: &AppState,
    f: Flavor,
    req: &Req,
    what: Res,
) -> Result<Ctx, ApiError> {
    Ok(prepare(s, f, req, what, |_| Ok(())).await?.0)
}

/// Proposes `op` as the request's actor, in its project, under a new request id. A schema
/// or document write goes down in the databases' audit trail (`model::audit`) with where the
/// request came from.
pub(crate) async fn propose(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    op: Op,
) -> Result<Outcome, ApiError> {
    propose_audited(s, f, ctx, op, false).await
}

/// `propose`; `one_row`: a document write of one row (its last op), the others rows nested
/// in it (the audit trail files it under that row).
pub(crate) async fn propose_audited(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    op: Op,
    one_row: bool,
) -> Result<Outcome, ApiError> {
    let op = match op {
        Op::Schema(_) | Op::Documents(_) => Op::Audited {
            op: Box::new(op),
            client: model::command::Client {
                ip: ctx.ip.clone(),
                user_agent: ctx.user_agent.clone(),
                one_row,
            },
        },
        op => op,
    };
    propose_plain(s, f, ctx, op).await
}

/// `propose`, leaving no audit entry (the later chunks of one request's bulk change).
pub(crate) async fn propose_plain(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    op: Op,
) -> Result<Outcome, ApiError> {
    let env = Envelope::new(ctx.project.clone(), new_request_id(), ctx.actor.clone(), op);
    match s.backend.write(env).await? {
        Outcome::Failed(e) => Err(f.error(e)),
        o => Ok(o),
    }
}

pub(crate) fn unexpected(o: Outcome) -> ApiError {
    tracing::error!(outcome = ?o, "unexpected outcome for command");
    ApiError::new(ErrorCode::GeneralServerError, "Server Error")
}

pub(crate) fn database(ctx: &Ctx, id: &str) -> Result<Database, ApiError> {
    ctx.view.database(&ctx.project, id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::DatabaseNotFound,
            msg!(
                "Database with the requested ID '{}' could not be found.",
                id
            ),
        )
    })
}

pub(crate) fn collection(f: Flavor, ctx: &Ctx, req: &Req) -> Result<Collection, ApiError> {
    let db = req.path("db");
    let d = database(ctx, &db)?;
    let id = req.path("coll");
    // A disabled database or table does not exist for users and guests.
    let visible = |c: &Collection| ctx.is_key() || (d.enabled && c.enabled);
    ctx.view
        .collection(&ctx.project, &db, &id)?
        .filter(visible)
        .ok_or_else(|| {
            f.error(Error::new(
                ErrorCode::CollectionNotFound,
                msg!(
                    "Collection with the requested ID '{}' could not be found.",
                    id
                ),
            ))
        })
}

/// The request's `queries[]`, parsed, an `orderRandom` among them seeded afresh.
pub(crate) fn parse_spec(req: &Req) -> Result<Spec, ApiError> {
    let mut spec = Spec::parse(&req.queries()?)?;
    spec.shuffle(rand::random());
    Ok(spec)
}

/// Filters, orders and pages a metadata list (databases, collections, …) with `queries[]`.
pub(crate) fn page_json(items: Vec<Json>, req: &Req) -> Result<(Vec<Json>, u64), ApiError> {
    let spec = parse_spec(req)?;
    let docs: Vec<(model::Document, Json)> = items
        .into_iter()
        .enumerate()
        .map(|(i, j)| {
            let get_str = |k: &str| j.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let data = j
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| !k.starts_with('$'))
                        .filter_map(|(k, v)| Value::from_json(v).map(|v| (k.clone(), v)))
                        .collect()
                })
                .unwrap_or_default();
            let doc = model::Document {
                id: get_str("$id"),
                sequence: i as u64,
                created_at: model::time::parse_ms(&get_str("$createdAt")).unwrap_or(0),
                updated_at: model::time::parse_ms(&get_str("$updatedAt")).unwrap_or(0),
                permissions: vec![],
                data,
            };
            (doc, j)
        })
        .collect();
    // `search` narrows metadata lists to items whose id or name contains the term.
    let search = req.str_opt("search")?.unwrap_or_default().to_lowercase();
    let found = |d: &model::Document| {
        search.is_empty()
            || d.id.to_lowercase().contains(&search)
            || d.data
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.to_lowercase().contains(&search))
    };
    let mut matched: Vec<(model::Document, Json)> = docs
        .into_iter()
        .filter(|(d, _)| found(d) && spec.matches(d))
        .collect();
    matched.sort_by(|a, b| spec.compare(&a.0, &b.0));
    let total = matched.len() as u64;
    let start = match &spec.cursor {
        None => 0,
        Some(model::query::Cursor::After(id)) | Some(model::query::Cursor::Before(id)) => {
            let pos = matched
                .iter()
                .position(|(d, _)| d.id == *id)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::GeneralCursorNotFound,
                        msg!("Document '{}' for the 'cursor' value not found.", id),
                    )
                })?;
            match &spec.cursor {
                Some(model::query::Cursor::After(_)) => pos + 1,
                _ => pos.saturating_sub(
                    (spec.limit.unwrap_or(DEFAULT_LIMIT) as usize)
                        .saturating_add(spec.offset as usize),
                ),
            }
        }
    };
    let out = matched
        .into_iter()
        .skip(start.saturating_add(spec.offset as usize))
        .take(spec.limit.unwrap_or(DEFAULT_LIMIT) as usize)
        .map(|(_, j)| j)
        .collect();
    Ok((out, total))
}

pub(crate) fn list_reply(req: &Req, key: &str, items: Vec<Json>) -> Reply {
    let (page, total) = page_json(items, req)?;
    let total = if req.want_total()? { total } else { 0 };
    reply(StatusCode::OK, json!({ "total": total, key: page }))
}

pub(crate) fn permissions(req: &Req, scope: Scope) -> Result<Option<Vec<String>>, ApiError> {
    match req.strings_opt("permissions")? {
        Some(p) => Ok(Some(permission::normalize(&p, scope)?)),
        None => Ok(None),
    }
}

pub(crate) fn missing_data(f: Flavor, msg: &str) -> ApiError {
    f.error(Error::new(ErrorCode::DocumentMissingData, msg))
}

/// `$permissions` carried inside row data (bulk items, operations, `data`), normalised.
pub(crate) fn inline_permissions(m: &Map<String, Json>) -> Result<Option<Vec<String>>, ApiError> {
    match m.get("$permissions") {
        Some(Json::Array(a)) => {
            let p: Vec<String> = a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            Ok(Some(permission::normalize(&p, Scope::Document)?))
        }
        _ => Ok(None),
    }
}

/// The step a decrement applies: the value, negated.
pub(crate) fn negated(v: Value) -> Value {
    match v {
        Value::Int(i) => Value::Int(-i),
        v => Value::Float(-v.as_f64().unwrap_or(0.0)),
    }
}

/// A row write's fields: its data, the operators sent in place of some values, and the
/// `$permissions` it may carry inline.
pub(crate) type Fields = (Data, model::command::Ops, Option<Vec<String>>);

/// A row write's fields from its JSON object: with its operators read where `operators`
/// allows them (updates and upserts), else as literal values (creates).
pub(crate) fn fields(
    f: Flavor,
    m: &Map<String, Json>,
    operators: bool,
) -> Result<Fields, ApiError> {
    let perms = inline_permissions(m)?;
    let code = ErrorCode::DocumentInvalidStructure;
    let (data, ops) = match operators {
        true => crate::params::patch_from_json(m, code),
        false => data_from_json(m, code).map(|d| (d, model::command::Ops::new())),
    }
    .map_err(|e| f.error(e.0))?;
    Ok((data, ops, perms))
}

/// One row of a bulk create or upsert: its id (made for `unique()` or none) and its fields
/// (operators only for an upsert, `operators`).
pub(crate) fn bulk_item(
    f: Flavor,
    item: &Json,
    operators: bool,
) -> Result<(String, Fields), ApiError> {
    let obj = item
        .as_object()
        .ok_or_else(|| missing_data(f, "Each item must be an object."))?;
    let id = match obj.get("$id").and_then(|v| v.as_str()) {
        None => new_id(),
        Some(model::id::UNIQUE) => new_id(),
        Some(s) => {
            id::check("$id", s)?;
            s.to_string()
        }
    };
    Ok((id, fields(f, obj, operators)?))
}

/// Transaction `id`, if the caller may use it: a key any of the project's, a user only those
/// they made (another's is "not found", as in Appwrite, where it is theirs to read alone);
/// else `transaction_not_found`.
pub(crate) fn load_transaction(ctx: &Ctx, id: &str) -> Result<Transaction, ApiError> {
    let mine = match &ctx.who {
        crate::auth::Who::Key => true,
        crate::auth::Who::User { user, .. } => {
            ctx.view.transaction_owner(&ctx.project, id)?.as_deref() == Some(user.id.as_str())
        }
        crate::auth::Who::Guest => false,
    };
    let found = match mine {
        true => ctx.view.transaction(&ctx.project, id)?,
        false => None,
    };
    found.ok_or_else(|| {
        ApiError::new(
            ErrorCode::TransactionNotFound,
            msg!(
                "Transaction with the requested ID '{}' could not be found.",
                id
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::Flavor;
    use model::{msg, Error, ErrorCode};

    #[test]
    fn tables_errors_keep_what_the_client_named() {
        let e = Error::new(
            ErrorCode::IndexDependency,
            msg!(
                "Attribute '{}' cannot be renamed or deleted. Please remove the associated index '{}' first.",
                "document",
                "collection_idx"
            ),
        );
        let t = Flavor::Tables.error(e.clone()).0;
        assert_eq!(t.code, ErrorCode::ColumnIndexDependency);
        assert_eq!(
            t.message.text(),
            "Column 'document' cannot be renamed or deleted. Please remove the associated index 'collection_idx' first."
        );
        assert_eq!(Flavor::Legacy.error(e.clone()).0, e);
    }
}
