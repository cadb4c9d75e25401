//! Rows (TablesDB) and documents (Databases): CRUD, bulk operations, increments, and writes
//! staged into a transaction.

use crate::abuse;
use crate::auth::Ctx;
use crate::common::{
    bulk_item, collection, enter, fields, key_only, load_transaction, missing_data, negated,
    no_content, parse_spec, permissions, prepare, propose, propose_audited, propose_plain, reply,
    unexpected, Fields, Flavor, Reply, Res,
};
use crate::error::ApiError;
use crate::params::{now_ms, Req};
use crate::{related, render, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use model::command::{Data, DocOp, DocTarget, Ops};
use model::command::{DocumentsOp, RangeChange, TransactionOp};
use model::msg;
use model::permission::Scope;
use model::query::{Filter, Spec};
use model::reader::Consistency;
use model::schema::{Collection, TransactionStatus};
use model::{id, Error, ErrorCode, Op, Outcome, Transaction, Value};
use serde_json::{json, Map, Value as Json};

/// The `data` param. Only updates and upserts take operators (`operators`); a create stores
/// such a string as it is, as Appwrite does.
fn data_param(req: &Req, f: Flavor, operators: bool) -> Result<Option<Fields>, ApiError> {
    let Some(m) = req.object_opt("data")? else {
        return Ok(None);
    };
    fields(f, &m, operators).map(Some)
}

/// `data_param` for a single-row write of `c`, with the rows nested in its relationship values
/// taken out as writes of their own (`nested`), to go ahead of the row's.
fn data_nested(
    ctx: &Ctx,
    req: &Req,
    f: Flavor,
    c: &Collection,
    operators: bool,
) -> Result<(Option<Fields>, Vec<DocTarget>), ApiError> {
    let Some(mut m) = req.object_opt("data")? else {
        return Ok((None, Vec::new()));
    };
    let inherited = match permissions(req, Scope::Document)? {
        Some(p) => Some(p),
        None => crate::common::inline_permissions(&m)?,
    };
    let nested = crate::nested::take(ctx, f, c, &mut m, &inherited)?;
    Ok((Some(fields(f, &m, operators)?), nested))
}

fn target(req: &Req, op: DocOp) -> DocTarget {
    DocTarget {
        database: req.path("db"),
        collection: req.path("coll"),
        op,
    }
}

/// The staged operations of the request's transaction (`transactionId`), for reads that
/// should see them; `None` without one.
fn staged_ops(ctx: &Ctx, req: &Req) -> Result<Option<Vec<DocTarget>>, ApiError> {
    let Some(id) = req.str_opt("transactionId")? else {
        return Ok(None);
    };
    let t = load_transaction(ctx, &id)?;
    if t.status != TransactionStatus::Pending {
        return Err(ApiError::new(
            ErrorCode::TransactionNotReady,
            "The transaction is not ready yet. Please try again later.",
        ));
    }
    Ok(Some(t.operations))
}

/// Runs document ops now, or stages them in the request's transaction.
async fn run_ops(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    req: &Req,
    ops: Vec<DocTarget>,
) -> Result<Result<Vec<model::Document>, Transaction>, ApiError> {
    run_ops_as(s, f, ctx, req, ops, false).await
}

/// `run_ops`; `one_row`: the write of one row (the last op), the others rows nested in it.
async fn run_ops_as(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    req: &Req,
    ops: Vec<DocTarget>,
    one_row: bool,
) -> Result<Result<Vec<model::Document>, Transaction>, ApiError> {
    if let Some(tx) = req.str_opt("transactionId")? {
        // Whose it is, apply decides on the committed state (this view may lag).
        let op = Op::Transactions(TransactionOp::Stage { id: tx, ops });
        return match propose(s, f, ctx, op).await? {
            Outcome::Transaction(t) => Ok(Err(t)),
            o => Err(unexpected(o)),
        };
    }
    let op = Op::Documents(DocumentsOp::Write { ops });
    match propose_audited(s, f, ctx, op, one_row).await? {
        Outcome::Documents(d) => Ok(Ok(d)),
        o => Err(unexpected(o)),
    }
}

fn list_of(f: Flavor, c: &Collection, docs: &[model::Document]) -> Json {
    json!({ "total": docs.len(), f.docs_key(): docs.iter().map(|d| render::document(d, c, f, None)).collect::<Vec<_>>() })
}

/// Rows a bulk update, upsert or delete answers, at most (Appwrite's
/// `APP_LIMIT_DATABASE_BATCH`); its `total` still counts every row it changed.
const BULK_ANSWER: usize = 100;

/// A bulk change's answer, gathered a log entry at a time: how many rows it changed, and the
/// first `BULK_ANSWER` of them (the others are not kept).
#[derive(Default)]
struct Tally {
    total: usize,
    first: Vec<model::Document>,
}

impl Tally {
    fn add(&mut self, docs: Vec<model::Document>) {
        self.total += docs.len();
        let room = BULK_ANSWER.saturating_sub(self.first.len());
        self.first.extend(docs.into_iter().take(room));
    }

    fn answer(&self, f: Flavor, c: &Collection) -> Json {
        let shown: Vec<Json> = self
            .first
            .iter()
            .map(|d| render::document(d, c, f, None))
            .collect();
        json!({ "total": self.total, f.docs_key(): shown })
    }
}

/// A bulk change's answer: how many rows it changed, and the first `BULK_ANSWER` of them.
fn changed(f: Flavor, c: &Collection, docs: &[model::Document]) -> Json {
    let t = Tally {
        total: docs.len(),
        first: docs.iter().take(BULK_ANSWER).cloned().collect(),
    };
    t.answer(f, c)
}

/// What a staged single-row write answers, as Appwrite's staged writes do: the row model with
/// the values sent (an operator as it was sent: its result is known at commit), over the
/// stored row for an update (its stored fields as they are now), else with the stored fields
/// empty (`$sequence`, `$createdAt`, `$updatedAt`), and the permissions the write gives.
struct Staged {
    data: Data,
    ops: Ops,
    permissions: Option<Vec<String>>,
    /// An update: shown over the row as it is.
    over_stored: bool,
}

fn staged(ctx: &Ctx, f: Flavor, c: &Collection, id: &str, st: &Staged) -> Result<Json, ApiError> {
    // Only a row the caller may read is shown.
    let stored = match st.over_stored {
        true => ctx
            .view
            .document(&ctx.project, c, id)?
            .filter(|d| match ctx.roles() {
                Some(roles) => c.grants(Some(d), "read", &roles),
                None => true,
            }),
        false => None,
    };
    let mut m = match stored.map(|d| render::document(&d, c, f, None)) {
        Some(Json::Object(m)) => m,
        _ => {
            let mut m = Map::new();
            m.insert("$id".into(), json!(id));
            m.insert("$sequence".into(), json!(""));
            m.insert(f.parent_id_key().into(), json!(c.id));
            m.insert("$databaseId".into(), json!(c.database));
            m.insert("$createdAt".into(), json!(""));
            m.insert("$updatedAt".into(), json!(""));
            m.insert("$permissions".into(), json!([]));
            m
        }
    };
    if let Some(p) = &st.permissions {
        m.insert("$permissions".into(), json!(p));
    }
    for (k, v) in &st.data {
        m.insert(k.clone(), v.to_json());
    }
    for (k, op) in &st.ops {
        m.insert(k.clone(), json!(op.to_wire()));
    }
    Ok(Json::Object(m))
}

/// The permissions a row created by `ctx` gets when the write names none: read, update and
/// delete for the signed-in user (as apply gives them), none for a key or a guest.
fn creator_permissions(ctx: &Ctx, given: &Option<Vec<String>>) -> Vec<String> {
    match (given, ctx.user()) {
        (Some(p), _) => p.clone(),
        (None, Some((user, _))) => ["read", "update", "delete"]
            .iter()
            .map(|a| format!("{a}(\"user:{}\")", user.id))
            .collect(),
        (None, None) => Vec::new(),
    }
}

/// Narrows a user's or a guest's list to the rows they may read: all of them when the table
/// grants read, those whose own permissions grant it under row security, else none (refused,
/// as Appwrite refuses it). The filter is part of the query, so pages, cursors and totals
/// count only readable rows.
fn readable_only(ctx: &Ctx, c: &Collection, spec: &mut Spec) -> Result<(), ApiError> {
    let Some(roles) = ctx.roles() else {
        return Ok(());
    };
    if c.grants(None, "read", &roles) {
        return Ok(());
    }
    if !c.document_security {
        return Err(ApiError::new(
            ErrorCode::UserUnauthorized,
            "The current user is not authorized to perform the requested action.",
        ));
    }
    spec.filters.push(Filter::readable_by(roles));
    Ok(())
}

/// A user's or a guest's cursor must name a row they may read: one they may not is "not
/// found", so that a cursor cannot probe rows they cannot see.
fn readable_cursor(ctx: &Ctx, f: Flavor, c: &Collection, spec: &Spec) -> Result<(), ApiError> {
    let (Some(roles), Some(cursor)) = (ctx.roles(), &spec.cursor) else {
        return Ok(());
    };
    let id = match cursor {
        model::query::Cursor::After(id) | model::query::Cursor::Before(id) => id,
    };
    let readable = ctx
        .view
        .document(&ctx.project, c, id)?
        .is_some_and(|d| c.grants(Some(&d), "read", &roles));
    match readable {
        true => Ok(()),
        false => Err(f.error(Error::new(
            ErrorCode::GeneralCursorNotFound,
            msg!("Document '{}' for the 'cursor' value not found.", id),
        ))),
    }
}

pub(crate) async fn list_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc).await?;
    let c = collection(f, &ctx, &req)?;
    let mut spec = parse_spec(&req)?;
    let across = related::take_across(&c, &mut spec);
    spec.validate(&c)?;
    // A read counts once its request is known to be a valid one.
    s.reads.count(&ctx.project, &c.database);
    match related::resolve_across(&ctx, f, &c, across, 1)? {
        Some(filters) => spec.filters.extend(filters),
        // No related row matches: neither does any of these.
        None => return reply(StatusCode::OK, json!({ "total": 0, f.docs_key(): [] })),
    }
    readable_only(&ctx, &c, &mut spec)?;
    readable_cursor(&ctx, f, &c, &spec)?;
    let want_total = req.want_total()?;
    let page = match staged_ops(&ctx, &req)? {
        Some(staged) => ctx
            .view
            .find_staged(&ctx.project, &c, &spec, &staged, now_ms())?,
        None => ctx.view.find(&ctx.project, &c, &spec, want_total)?,
    };
    let total = if want_total { page.total } else { 0 };
    let docs = related::rows(&ctx, f, &c, &page.documents, spec.select.as_deref())?;
    reply(
        StatusCode::OK,
        json!({ "total": total, f.docs_key(): docs }),
    )
}

pub(crate) async fn create_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let (ctx, c) = prepare(&s, f, &req, Res::Doc, |ctx| collection(f, ctx, &req)).await?;
    limited!(s, &req, &ctx, &abuse::ROW_WRITE, {
        let bulk = req.array_opt(f.docs_key())?;
        if bulk.is_some() {
            key_only(&ctx)?;
        }
        match (bulk, req.has("data")) {
            (Some(_), true) => Err(ApiError::new(
                ErrorCode::GeneralBadRequest,
                msg!(
                    "You can only send one of the following parameters: data, {}",
                    f.docs_key()
                ),
            )),
            (None, false) => Err(missing_data(
                f,
                "The document data is missing. Try again with document data populated",
            )),
            (Some(items), false) => {
                if req.has(f.doc_id_param()) {
                    return Err(ApiError::new(ErrorCode::GeneralBadRequest, msg!("Param \"{}\" is not allowed when creating multiple {}, set \"$id\" on each instead.", f.doc_id_param(), f.docs_key())));
                }
                if items.len() > 1000 {
                    return Err(ApiError(Error::invalid(msg!(
                        "Invalid `{}` param: Value must a valid array no longer than 1000 items",
                        f.docs_key()
                    ))));
                }
                let mut ops = Vec::new();
                for item in &items {
                    let (id, (data, _, permissions)) = bulk_item(f, item, false)?;
                    ops.push(target(
                        &req,
                        DocOp::Create {
                            id,
                            data,
                            permissions,
                        },
                    ));
                }
                let n = ops.len();
                match run_ops(&s, f, &ctx, &req, ops).await? {
                    Ok(docs) => reply(StatusCode::CREATED, list_of(f, &c, &docs)),
                    Err(_) => reply(StatusCode::CREATED, json!({ "total": n, f.docs_key(): [] })),
                }
            }
            (None, true) => {
                let id = req.id_req(f.doc_id_param())?;
                let (data, nested) = data_nested(&ctx, &req, f, &c, false)?;
                let (data, _, inline_perms) = data.unwrap_or_default();
                let permissions = permissions(&req, Scope::Document)?.or(inline_perms);
                let shown = Staged {
                    data: data.clone(),
                    ops: Ops::new(),
                    permissions: Some(creator_permissions(&ctx, &permissions)),
                    over_stored: false,
                };
                let op = DocOp::Create {
                    id: id.clone(),
                    data,
                    permissions,
                };
                let mut ops = nested;
                ops.push(target(&req, op));
                match run_ops_as(&s, f, &ctx, &req, ops, true).await? {
                    // The row's own is the last (nested rows go first).
                    Ok(docs) => match docs.last() {
                        Some(d) => reply(
                            StatusCode::CREATED,
                            written(&s, f, &ctx, &req, &c, d).await?,
                        ),
                        None => Err(unexpected(Outcome::Documents(docs))),
                    },
                    Err(_) => reply(StatusCode::CREATED, staged(&ctx, f, &c, &id, &shown)?),
                }
            }
        }
    })
}

pub(crate) async fn upsert_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let (ctx, c) = prepare(&s, f, &req, Res::Doc, |ctx| collection(f, ctx, &req)).await?;
    key_only(&ctx)?;
    let items = req.array_opt(f.docs_key())?.ok_or_else(|| {
        ApiError(Error::invalid(msg!(
            "Param \"{}\" is not optional.",
            f.docs_key()
        )))
    })?;
    let mut ops = Vec::new();
    for item in &items {
        let (id, (data, operators, permissions)) = bulk_item(f, item, true)?;
        ops.push(target(
            &req,
            DocOp::upsert(id, data, operators, permissions),
        ));
    }
    let n = ops.len();
    match run_ops(&s, f, &ctx, &req, ops).await? {
        Ok(docs) => reply(StatusCode::CREATED, changed(f, &c, &docs)),
        Err(_) => reply(StatusCode::CREATED, json!({ "total": n, f.docs_key(): [] })),
    }
}

fn bulk_spec(req: &Req, c: &Collection) -> Result<Spec, ApiError> {
    let mut spec = parse_spec(req)?;
    spec.validate(c)?;
    if req.str_opt("transactionId")?.is_some() {
        spec.random_order()?;
    }
    Ok(spec)
}

/// Rows a bulk change by query changes per log entry, at most.
const RANGE_CHUNK: u32 = 500;

/// A bulk update or delete by query outside a transaction: applied as many bounded log
/// entries, never one apply over the whole table. When the queries only filter (and limit),
/// each entry looks at a bounded run of rows in `$sequence` order (`DocumentsOp::Range`);
/// when they also order, offset or use a cursor, the rows are picked from one linearizable
/// view (bounded by the scan budget) and changed in chunks by id, each row only if it still
/// matches the filters (`DocumentsOp::Listed`). `None` inside a transaction (staged as one
/// operation).
async fn change_in_chunks(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    req: &Req,
    spec: &Spec,
    change: RangeChange,
) -> Result<Option<Tally>, ApiError> {
    if req.str_opt("transactionId")?.is_some() {
        return Ok(None);
    }
    if !spec.orders.is_empty() || spec.cursor.is_some() || spec.offset > 0 || spec.random.is_some()
    {
        return change_listed(s, f, ctx, req, spec, change).await.map(Some);
    }
    let mut remaining = spec.limit.unwrap_or(u64::MAX);
    let filters = Spec {
        limit: None,
        ..spec.clone()
    };
    let (mut after, mut tally) = (0u64, Tally::default());
    while remaining > 0 {
        let op = DocumentsOp::Range {
            database: req.path("db"),
            collection: req.path("coll"),
            spec: filters.clone(),
            change: change.clone(),
            after,
            max: remaining.min(u64::from(RANGE_CHUNK)) as u32,
        };
        // One audit entry for the request: its first chunk's.
        let sent = match after {
            0 => propose(s, f, ctx, Op::Documents(op)).await?,
            _ => propose_plain(s, f, ctx, Op::Documents(op)).await?,
        };
        match sent {
            Outcome::Range { documents, next } => {
                remaining = remaining.saturating_sub(documents.len() as u64);
                tally.add(documents);
                match next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            o => return Err(unexpected(o)),
        }
    }
    Ok(Some(tally))
}

/// The ordered case of `change_in_chunks`.
async fn change_listed(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    req: &Req,
    spec: &Spec,
    change: RangeChange,
) -> Result<Tally, ApiError> {
    let fresh = ctx.over(s.backend.read(Consistency::Linearizable).await?);
    let c = collection(f, &fresh, req)?;
    let all = Spec {
        limit: Some(spec.limit.unwrap_or(u64::MAX)),
        ..spec.clone()
    };
    let picked: Vec<String> = fresh
        .view
        .find(&ctx.project, &c, &all, false)
        .map_err(|e| f.error(e))?
        .documents
        .into_iter()
        .map(|d| d.id)
        .collect();
    let filters = Spec {
        orders: Vec::new(),
        cursor: None,
        offset: 0,
        limit: None,
        random: None,
        ..spec.clone()
    };
    let mut tally = Tally::default();
    for (n, chunk) in picked.chunks(RANGE_CHUNK as usize).enumerate() {
        let op = DocumentsOp::Listed {
            database: req.path("db"),
            collection: req.path("coll"),
            spec: filters.clone(),
            ids: chunk.to_vec(),
            change: change.clone(),
        };
        // One audit entry for the request: its first chunk's.
        let sent = match n {
            0 => propose(s, f, ctx, Op::Documents(op)).await?,
            _ => propose_plain(s, f, ctx, Op::Documents(op)).await?,
        };
        match sent {
            Outcome::Range { documents, .. } => tally.add(documents),
            o => return Err(unexpected(o)),
        }
    }
    Ok(tally)
}

pub(crate) async fn update_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let (ctx, (c, spec)) = prepare(&s, f, &req, Res::Doc, |ctx| {
        key_only(ctx)?;
        let c = collection(f, ctx, &req)?;
        let spec = bulk_spec(&req, &c)?;
        Ok((c, spec))
    })
    .await?;
    let (data, operators, _) = data_param(&req, f, true)?.unwrap_or_default();
    let change = RangeChange::update(data.clone(), operators.clone());
    if let Some(tally) = change_in_chunks(&s, f, &ctx, &req, &spec, change).await? {
        return reply(StatusCode::OK, tally.answer(f, &c));
    }
    match run_ops(
        &s,
        f,
        &ctx,
        &req,
        vec![target(&req, DocOp::update_where(spec, data, operators))],
    )
    .await?
    {
        Ok(docs) => reply(StatusCode::OK, changed(f, &c, &docs)),
        Err(_) => reply(StatusCode::OK, json!({ "total": 0, f.docs_key(): [] })),
    }
}

pub(crate) async fn delete_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let (ctx, (c, spec)) = prepare(&s, f, &req, Res::Doc, |ctx| {
        key_only(ctx)?;
        let c = collection(f, ctx, &req)?;
        let spec = bulk_spec(&req, &c)?;
        Ok((c, spec))
    })
    .await?;
    if let Some(tally) = change_in_chunks(&s, f, &ctx, &req, &spec, RangeChange::Delete).await? {
        return reply(StatusCode::OK, tally.answer(f, &c));
    }
    match run_ops(
        &s,
        f,
        &ctx,
        &req,
        vec![target(&req, DocOp::DeleteWhere { spec })],
    )
    .await?
    {
        Ok(docs) => reply(StatusCode::OK, changed(f, &c, &docs)),
        Err(_) => reply(StatusCode::OK, json!({ "total": 0, f.docs_key(): [] })),
    }
}

pub(crate) async fn get_document(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc).await?;
    let c = collection(f, &ctx, &req)?;
    let mut spec = Spec::parse(&req.queries()?)?;
    spec.validate(&c)?;
    s.reads.count(&ctx.project, &c.database);
    let id = req.path("doc");
    let found = match staged_ops(&ctx, &req)? {
        Some(staged) => ctx
            .view
            .document_staged(&ctx.project, &c, &id, &staged, now_ms())?,
        None => ctx.view.document(&ctx.project, &c, &id)?,
    };
    let readable = |d: &model::Document| match ctx.roles() {
        Some(roles) => c.grants(Some(d), "read", &roles),
        None => true,
    };
    let d = found.filter(readable).ok_or_else(|| {
        f.error(Error::new(
            ErrorCode::DocumentNotFound,
            msg!(
                "Document with the requested ID '{}' could not be found.",
                id
            ),
        ))
    })?;
    let mut answer = related::rows(&ctx, f, &c, &[d], spec.select.as_deref())?;
    reply(StatusCode::OK, answer.pop().unwrap_or(Json::Null))
}

/// A written row as answered: with its related rows loaded, one level deep, where its table
/// has relationships (as Appwrite answers a write), read from a view that holds the write.
async fn written(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    req: &Req,
    c: &Collection,
    d: &model::Document,
) -> Result<Json, ApiError> {
    let Some(select) = related::everything(c) else {
        return Ok(render::document(d, c, f, None));
    };
    let fresh = ctx.over(s.backend.read(Consistency::Linearizable).await?);
    let c = collection(f, &fresh, req)?;
    let mut answer = related::rows(&fresh, f, &c, std::slice::from_ref(d), Some(&select))?;
    Ok(answer.pop().unwrap_or(Json::Null))
}

/// A single-row write: the op, the success status, and what to answer if it is staged.
struct OneWrite {
    op: DocOp,
    /// Writes of the rows nested in its data, to go first.
    nested: Vec<DocTarget>,
    status: StatusCode,
    staged: Staged,
}

async fn write_one(
    s: &AppState,
    f: Flavor,
    ctx: &Ctx,
    req: &Req,
    c: &Collection,
    w: OneWrite,
) -> Reply {
    let id = req.path("doc");
    let mut ops = w.nested;
    ops.push(target(req, w.op));
    match run_ops_as(s, f, ctx, req, ops, true).await? {
        // The row's own is the last.
        Ok(docs) => match docs.last() {
            Some(d) => reply(w.status, written(s, f, ctx, req, c, d).await?),
            None => Err(unexpected(Outcome::Documents(docs))),
        },
        Err(_) => reply(w.status, staged(ctx, f, c, &id, &w.staged)?),
    }
}

pub(crate) async fn upsert_document(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let (ctx, c) = prepare(&s, f, &req, Res::Doc, |ctx| collection(f, ctx, &req)).await?;
    limited!(s, &req, &ctx, &abuse::ROW_WRITE, {
        let id = req.path("doc");
        id::check(f.doc_id_param(), &id)?;
        let (data, nested) = data_nested(&ctx, &req, f, &c, true)?;
        let (data, operators, inline) = data.unwrap_or_default();
        let permissions = permissions(&req, Scope::Document)?.or(inline);
        let shown = Staged {
            data: data.clone(),
            ops: operators.clone(),
            permissions: permissions.clone(),
            over_stored: false,
        };
        let op = DocOp::upsert(id, data, operators, permissions);
        write_one(
            &s,
            f,
            &ctx,
            &req,
            &c,
            OneWrite {
                op,
                nested,
                status: StatusCode::CREATED,
                staged: shown,
            },
        )
        .await
    })
}

pub(crate) async fn update_document(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let (ctx, c) = prepare(&s, f, &req, Res::Doc, |ctx| collection(f, ctx, &req)).await?;
    limited!(s, &req, &ctx, &abuse::ROW_WRITE, {
        let (data, nested) = data_nested(&ctx, &req, f, &c, true)?;
        let perms = permissions(&req, Scope::Document)?;
        if data.is_none() && perms.is_none() {
            return Err(f.error(Error::new(ErrorCode::DocumentMissingPayload, "The document data and permissions are missing. You must provide either document data or permissions to be updated.")));
        }
        let (data, operators, inline) = data.unwrap_or_default();
        let permissions = perms.or(inline);
        let shown = Staged {
            data: data.clone(),
            ops: operators.clone(),
            permissions: permissions.clone(),
            over_stored: true,
        };
        let op = DocOp::update(req.path("doc"), data, operators, permissions);
        write_one(
            &s,
            f,
            &ctx,
            &req,
            &c,
            OneWrite {
                op,
                nested,
                status: StatusCode::OK,
                staged: shown,
            },
        )
        .await
    })
}

pub(crate) async fn delete_document(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let (ctx, _) = prepare(&s, f, &req, Res::Doc, |ctx| collection(f, ctx, &req)).await?;
    limited!(s, &req, &ctx, &abuse::ROW_DELETE, {
        // Applied or staged in the request's transaction: either way the answer is 204.
        let _applied_or_staged = run_ops(
            &s,
            f,
            &ctx,
            &req,
            vec![target(
                &req,
                DocOp::Delete {
                    id: req.path("doc"),
                },
            )],
        )
        .await?;
        no_content()
    })
}

async fn step(s: AppState, f: Flavor, req: Req, down: bool) -> Reply {
    let (ctx, c) = prepare(&s, f, &req, Res::Doc, |ctx| collection(f, ctx, &req)).await?;
    limited!(s, &req, &ctx, &abuse::ROW_WRITE, {
        let value = req.number_opt("value")?.unwrap_or(Value::Int(1));
        if value.as_f64().is_none_or(|v| v <= 0.0) {
            return Err(ApiError(Error::invalid(
                "Invalid `value` param: Value must be a number greater than 0",
            )));
        }
        let by = if down {
            negated(value.clone())
        } else {
            value.clone()
        };
        let bound = req.number_opt(if down { "min" } else { "max" })?;
        let attr = req.path("attr");
        let op = DocOp::Increment {
            id: req.path("doc"),
            attr: attr.clone(),
            by: by.clone(),
            bound,
        };
        // As Appwrite answers a staged step: the amount, under the column's key.
        let staged = Staged {
            data: [(attr.clone(), value.clone())].into_iter().collect(),
            ops: Ops::new(),
            permissions: None,
            over_stored: false,
        };
        write_one(
            &s,
            f,
            &ctx,
            &req,
            &c,
            OneWrite {
                op,
                nested: Vec::new(),
                status: StatusCode::OK,
                staged,
            },
        )
        .await
    })
}

pub(crate) async fn increment(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    step(s, f, req, false).await
}

pub(crate) async fn decrement(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    step(s, f, req, true).await
}
