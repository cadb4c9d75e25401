//! The Databases (`/v1/databases`: collections, attributes, documents) and TablesDB
//! (`/v1/tablesdb`: tables, columns, rows) services: one set of handlers over one storage,
//! seen through two vocabularies.

use crate::auth::{authorize, Ctx};
use crate::error::ApiError;
use crate::params::{data_from_json, new_id, now_ms, Req};
use crate::{render, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Router};
use model::command::{AttributePatch, Data, DocOp, DocTarget};
use model::permission::{self, Scope};
use model::query::{Spec, DEFAULT_LIMIT};
use model::schema::{
    AttrKind, Attribute, Collection, Database, Index, IndexKind, Order, TransactionStatus,
};
use model::{id, Command, Error, ErrorCode, Outcome, Transaction, Value};
use serde_json::{json, Map, Value as Json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Legacy,
    Tables,
}

impl Flavor {
    fn base(self) -> &'static str {
        match self {
            Flavor::Legacy => "/v1/databases",
            Flavor::Tables => "/v1/tablesdb",
        }
    }
    fn coll_seg(self) -> &'static str {
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
    fn docs_key(self) -> &'static str {
        match self {
            Flavor::Legacy => "documents",
            Flavor::Tables => "rows",
        }
    }
    fn coll_id_param(self) -> &'static str {
        match self {
            Flavor::Legacy => "collectionId",
            Flavor::Tables => "tableId",
        }
    }
    fn doc_id_param(self) -> &'static str {
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
    pub fn parent_id_key(self) -> &'static str {
        match self {
            Flavor::Legacy => "$collectionId",
            Flavor::Tables => "$tableId",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Flavor::Legacy => "legacy",
            Flavor::Tables => "tablesdb",
        }
    }

    /// Renames a storage error into this API's vocabulary.
    fn error(self, e: Error) -> ApiError {
        match self {
            Flavor::Legacy => ApiError(e),
            Flavor::Tables => {
                let message = e
                    .message
                    .replace("Document", "Row")
                    .replace("document", "row")
                    .replace("Attribute", "Column")
                    .replace("attribute", "column")
                    .replace("Collection", "Table")
                    .replace("collection", "table");
                ApiError(Error::new(e.code.for_tables(), message))
            }
        }
    }

    fn scopes(self, what: Res, write: bool) -> &'static [&'static str] {
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
enum Res {
    Db,
    Coll,
    Attr,
    Index,
    Doc,
}

type Reply = Result<Response, ApiError>;

pub fn router(f: Flavor) -> Router<AppState> {
    let b = f.base();
    let c = format!("{b}/{{db}}/{}/{{coll}}", f.coll_seg());
    let a = format!("{c}/{}", f.attrs_key());
    let d = format!("{c}/{}", f.docs_key());
    Router::new()
        .route(b, get(list_databases).post(create_database))
        .route(
            &format!("{b}/transactions"),
            get(list_transactions).post(create_transaction),
        )
        .route(
            &format!("{b}/transactions/{{tx}}"),
            get(get_transaction)
                .patch(update_transaction)
                .delete(delete_transaction),
        )
        .route(
            &format!("{b}/transactions/{{tx}}/operations"),
            post(create_operations),
        )
        .route(
            &format!("{b}/{{db}}"),
            get(get_database)
                .put(update_database)
                .delete(delete_database),
        )
        .route(
            &format!("{b}/{{db}}/{}", f.coll_seg()),
            get(list_collections).post(create_collection),
        )
        .route(
            &c,
            get(get_collection)
                .put(update_collection)
                .delete(delete_collection),
        )
        .route(&a, get(list_attributes))
        .route(
            &format!("{a}/{{key}}"),
            get(get_attribute)
                .post(create_attribute)
                .delete(delete_attribute),
        )
        .route(&format!("{a}/{{kind}}/{{key}}"), patch(update_attribute))
        .route(
            &format!("{c}/indexes"),
            get(list_indexes).post(create_index),
        )
        .route(
            &format!("{c}/indexes/{{key}}"),
            get(get_index).delete(delete_index),
        )
        .route(
            &d,
            get(list_documents)
                .post(create_documents)
                .put(upsert_documents)
                .patch(update_documents)
                .delete(delete_documents),
        )
        .route(
            &format!("{d}/{{doc}}"),
            get(get_document)
                .put(upsert_document)
                .patch(update_document)
                .delete(delete_document),
        )
        .route(&format!("{d}/{{doc}}/{{attr}}/increment"), patch(increment))
        .route(&format!("{d}/{{doc}}/{{attr}}/decrement"), patch(decrement))
        .layer(Extension(f))
}

fn reply(status: StatusCode, body: Json) -> Reply {
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

fn no_content() -> Reply {
    Ok((
        StatusCode::NO_CONTENT,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=UTF-8",
        )],
    )
        .into_response())
}

/// Authorises, then waits for a linearizable view of the state.
async fn enter(
    s: &AppState,
    f: Flavor,
    req: &Req,
    what: Res,
    write: bool,
) -> Result<Ctx, ApiError> {
    s.backend.read_barrier().await?;
    authorize(s, req, f.scopes(what, write))
}

async fn propose(s: &AppState, f: Flavor, cmd: Command) -> Result<Outcome, ApiError> {
    match s.backend.write(cmd).await? {
        Outcome::Failed(e) => Err(f.error(e)),
        o => Ok(o),
    }
}

fn unexpected(o: Outcome) -> ApiError {
    tracing::error!(outcome = ?o, "unexpected outcome for command");
    ApiError::new(ErrorCode::GeneralServerError, "Server Error")
}

fn database(s: &AppState, ctx: &Ctx, id: &str) -> Result<Database, ApiError> {
    s.backend
        .reader()
        .database(&ctx.project, id)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::DatabaseNotFound,
                format!("Database with the requested ID '{id}' could not be found."),
            )
        })
}

fn collection(s: &AppState, f: Flavor, ctx: &Ctx, req: &Req) -> Result<Collection, ApiError> {
    let db = req.path("db");
    database(s, ctx, &db)?;
    let id = req.path("coll");
    s.backend
        .reader()
        .collection(&ctx.project, &db, &id)?
        .ok_or_else(|| {
            f.error(Error::new(
                ErrorCode::CollectionNotFound,
                format!("Collection with the requested ID '{id}' could not be found."),
            ))
        })
}

/// Filters, orders and pages a metadata list (databases, collections, …) with `queries[]`.
fn page_json(items: Vec<Json>, req: &Req) -> Result<(Vec<Json>, u64), ApiError> {
    let spec = Spec::parse(&req.queries()?)?;
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
                        format!("Document '{id}' for the 'cursor' value not found."),
                    )
                })?;
            match &spec.cursor {
                Some(model::query::Cursor::After(_)) => pos + 1,
                _ => pos.saturating_sub(
                    spec.limit.unwrap_or(DEFAULT_LIMIT) as usize + spec.offset as usize,
                ),
            }
        }
    };
    let out = matched
        .into_iter()
        .skip(start + spec.offset as usize)
        .take(spec.limit.unwrap_or(DEFAULT_LIMIT) as usize)
        .map(|(_, j)| j)
        .collect();
    Ok((out, total))
}

fn list_reply(req: &Req, key: &str, items: Vec<Json>) -> Reply {
    let (page, total) = page_json(items, req)?;
    let total = if req.want_total()? { total } else { 0 };
    reply(StatusCode::OK, json!({ "total": total, key: page }))
}

// ---- databases ----

async fn list_databases(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Db, false).await?;
    let dbs = s.backend.reader().list_databases(&ctx.project)?;
    list_reply(
        &req,
        "databases",
        dbs.iter().map(render::database).collect(),
    )
}

async fn create_database(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Db, true).await?;
    let now = now_ms();
    let database = Database {
        id: req.id_req("databaseId")?,
        name: req.text_req("name", 128)?,
        enabled: req.bool_opt("enabled")?.unwrap_or(true),
        kind: f.kind().to_string(),
        created_at: now,
        updated_at: now,
    };
    match propose(
        &s,
        f,
        Command::CreateDatabase {
            project: ctx.project,
            database,
        },
    )
    .await?
    {
        Outcome::Database(d) => reply(StatusCode::CREATED, render::database(&d)),
        o => Err(unexpected(o)),
    }
}

async fn get_database(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Db, false).await?;
    reply(
        StatusCode::OK,
        render::database(&database(&s, &ctx, &req.path("db"))?),
    )
}

async fn update_database(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Db, true).await?;
    let name = match req.has("name") {
        true => Some(req.text_req("name", 128)?),
        false => None,
    };
    let cmd = Command::UpdateDatabase {
        project: ctx.project,
        id: req.path("db"),
        name,
        enabled: req.bool_opt("enabled")?,
        now: now_ms(),
    };
    match propose(&s, f, cmd).await? {
        Outcome::Database(d) => reply(StatusCode::OK, render::database(&d)),
        o => Err(unexpected(o)),
    }
}

async fn delete_database(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Db, true).await?;
    propose(
        &s,
        f,
        Command::DeleteDatabase {
            project: ctx.project,
            id: req.path("db"),
        },
    )
    .await?;
    no_content()
}

// ---- collections / tables ----

fn permissions(req: &Req, scope: Scope) -> Result<Option<Vec<String>>, ApiError> {
    match req.strings_opt("permissions")? {
        Some(p) => Ok(Some(permission::normalize(&p, scope)?)),
        None => Ok(None),
    }
}

async fn list_collections(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Coll, false).await?;
    let db = req.path("db");
    database(&s, &ctx, &db)?;
    let colls = s.backend.reader().list_collections(&ctx.project, &db)?;
    list_reply(
        &req,
        f.coll_seg(),
        colls.iter().map(|c| render::collection(c, f)).collect(),
    )
}

async fn create_collection(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Coll, true).await?;
    let now = now_ms();
    let mut attributes = Vec::new();
    for item in req.array_opt(f.attrs_key())?.unwrap_or_default() {
        let obj = item.as_object().cloned().ok_or_else(|| {
            ApiError(Error::invalid(format!(
                "Invalid `{}` param: items must be objects",
                f.attrs_key()
            )))
        })?;
        let sub = Req::from_object(obj);
        let kind = sub.str_req("type")?;
        let kind = match (kind.as_str(), sub.str_opt("format")?.as_deref()) {
            ("string", Some("email")) => AttrKind::Email,
            ("string", Some("url")) => AttrKind::Url,
            ("string", Some("ip")) => AttrKind::Ip,
            ("string", Some("enum")) => AttrKind::Enum,
            ("double", _) => AttrKind::Float,
            (k, _) => AttrKind::from_route(k)
                .ok_or_else(|| ApiError(Error::invalid(format!("Invalid column type \"{k}\"."))))?,
        };
        attributes.push(attribute_from(&sub, kind, now, false)?);
    }
    let mut indexes = Vec::new();
    for item in req.array_opt("indexes")?.unwrap_or_default() {
        let obj = item.as_object().cloned().ok_or_else(|| {
            ApiError(Error::invalid(
                "Invalid `indexes` param: items must be objects",
            ))
        })?;
        indexes.push(index_from(&Req::from_object(obj), f, now)?);
    }
    let collection = Collection {
        id: req.id_req(f.coll_id_param())?,
        database: req.path("db"),
        name: req.text_req("name", 128)?,
        enabled: req.bool_opt("enabled")?.unwrap_or(true),
        permissions: permissions(&req, Scope::Collection)?.unwrap_or_default(),
        document_security: req.bool_opt(f.security_key())?.unwrap_or(false),
        attributes,
        indexes,
        created_at: now,
        updated_at: now,
    };
    match propose(
        &s,
        f,
        Command::CreateCollection {
            project: ctx.project,
            collection,
        },
    )
    .await?
    {
        Outcome::Collection(c) => reply(StatusCode::CREATED, render::collection(&c, f)),
        o => Err(unexpected(o)),
    }
}

async fn get_collection(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Coll, false).await?;
    reply(
        StatusCode::OK,
        render::collection(&collection(&s, f, &ctx, &req)?, f),
    )
}

async fn update_collection(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Coll, true).await?;
    let name = match req.has("name") {
        true => Some(req.text_req("name", 128)?),
        false => None,
    };
    let cmd = Command::UpdateCollection {
        project: ctx.project,
        database: req.path("db"),
        id: req.path("coll"),
        name,
        permissions: permissions(&req, Scope::Collection)?,
        document_security: req.bool_opt(f.security_key())?,
        enabled: req.bool_opt("enabled")?,
        now: now_ms(),
    };
    match propose(&s, f, cmd).await? {
        Outcome::Collection(c) => reply(StatusCode::OK, render::collection(&c, f)),
        o => Err(unexpected(o)),
    }
}

async fn delete_collection(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Coll, true).await?;
    let cmd = Command::DeleteCollection {
        project: ctx.project,
        database: req.path("db"),
        id: req.path("coll"),
    };
    propose(&s, f, cmd).await?;
    no_content()
}

// ---- attributes / columns ----

fn value_param(req: &Req, name: &str) -> Result<Option<Value>, ApiError> {
    match req.params.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => Value::from_json(v).map(Some).ok_or_else(|| {
            ApiError(Error::invalid(format!(
                "Invalid `{name}` param: Value must be a scalar"
            )))
        }),
    }
}

fn attribute_from(
    req: &Req,
    kind: AttrKind,
    now: i64,
    required_param: bool,
) -> Result<Attribute, ApiError> {
    let key = req.str_req("key")?;
    id::check_key("key", &key)?;
    let required = if required_param {
        req.bool_req("required")?
    } else {
        req.bool_opt("required")?.unwrap_or(false)
    };
    let size = match kind {
        AttrKind::String | AttrKind::Varchar => Some(
            req.uint_opt("size")?
                .ok_or_else(|| ApiError(Error::invalid("Param \"size\" is not optional.")))?,
        ),
        _ => None,
    };
    let elements = match kind {
        AttrKind::Enum => req
            .strings_opt("elements")?
            .ok_or_else(|| ApiError(Error::invalid("Param \"elements\" is not optional.")))?,
        _ => vec![],
    };
    let (min, max) = match kind {
        AttrKind::Integer | AttrKind::Bigint | AttrKind::Float => {
            (req.number_opt("min")?, req.number_opt("max")?)
        }
        _ => (None, None),
    };
    Ok(Attribute {
        key,
        kind,
        required,
        array: req.bool_opt("array")?.unwrap_or(false),
        size,
        min,
        max,
        default: value_param(req, "default")?,
        elements,
        encrypt: req.bool_opt("encrypt")?.unwrap_or(false),
        created_at: now,
        updated_at: now,
    })
}

async fn list_attributes(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Attr, false).await?;
    let c = collection(&s, f, &ctx, &req)?;
    list_reply(
        &req,
        f.attrs_key(),
        c.attributes.iter().map(render::attribute).collect(),
    )
}

async fn create_attribute(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Attr, true).await?;
    let route = req.path("key");
    let kind = AttrKind::from_route(&route).ok_or_else(|| crate::error::ApiError::new(ErrorCode::GeneralRouteNotFound, "Route not found. Please ensure the endpoint is configured correctly and that the API route is valid for this SDK version. Refer to the API docs for more details."))?;
    let attribute = attribute_from(&req, kind, now_ms(), true)?;
    let cmd = Command::CreateAttribute {
        project: ctx.project,
        database: req.path("db"),
        collection: req.path("coll"),
        attribute,
    };
    match propose(&s, f, cmd).await? {
        Outcome::Attribute(a) => reply(StatusCode::ACCEPTED, render::attribute(&a)),
        o => Err(unexpected(o)),
    }
}

async fn get_attribute(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Attr, false).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let key = req.path("key");
    let a = c.attribute(&key).ok_or_else(|| {
        f.error(Error::new(
            ErrorCode::AttributeNotFound,
            format!("Attribute with the requested key '{key}' could not be found."),
        ))
    })?;
    reply(StatusCode::OK, render::attribute(a))
}

async fn update_attribute(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Attr, true).await?;
    let kind_route = req.path("kind");
    let kind = AttrKind::from_route(&kind_route)
        .ok_or_else(|| ApiError::new(ErrorCode::GeneralRouteNotFound, "Route not found."))?;
    let new_key = req.str_opt("newKey")?;
    if let Some(k) = &new_key {
        id::check_key("newKey", k)?;
    }
    let patch = AttributePatch {
        required: Some(req.bool_req("required")?),
        default: match req.params.get("default") {
            None => None,
            Some(Json::Null) => Some(Value::Null),
            Some(_) => value_param(&req, "default")?,
        },
        size: req.uint_opt("size")?,
        min: req.number_opt("min")?,
        max: req.number_opt("max")?,
        elements: req.strings_opt("elements")?,
        new_key,
    };
    let cmd = Command::UpdateAttribute {
        project: ctx.project,
        database: req.path("db"),
        collection: req.path("coll"),
        key: req.path("key"),
        kind,
        patch,
        now: now_ms(),
    };
    match propose(&s, f, cmd).await? {
        Outcome::Attribute(a) => reply(StatusCode::OK, render::attribute(&a)),
        o => Err(unexpected(o)),
    }
}

async fn delete_attribute(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Attr, true).await?;
    let cmd = Command::DeleteAttribute {
        project: ctx.project,
        database: req.path("db"),
        collection: req.path("coll"),
        key: req.path("key"),
        now: now_ms(),
    };
    propose(&s, f, cmd).await?;
    no_content()
}

// ---- indexes ----

fn index_from(req: &Req, f: Flavor, now: i64) -> Result<Index, ApiError> {
    let key = req.str_req("key")?;
    id::check_key("key", &key)?;
    let kind_s = req.str_req("type")?;
    let kind = IndexKind::parse(&kind_s).ok_or_else(|| {
        ApiError(Error::invalid(format!(
            "Invalid `type` param: Value must be one of (key, fulltext, unique); got \"{kind_s}\""
        )))
    })?;
    let attributes = req
        .strings_opt(f.index_attrs_key())?
        .or(req.strings_opt("attributes")?)
        .ok_or_else(|| {
            ApiError(Error::invalid(format!(
                "Param \"{}\" is not optional.",
                f.index_attrs_key()
            )))
        })?;
    let orders = req
        .strings_opt("orders")?
        .unwrap_or_default()
        .iter()
        .map(|o| {
            Order::parse(o).ok_or_else(|| {
                ApiError(Error::invalid(
                    "Invalid `orders` param: Value must be one of (ASC, DESC)",
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lengths = req
        .array_opt("lengths")?
        .unwrap_or_default()
        .iter()
        .map(|v| v.as_u64().unwrap_or(0) as u32)
        .collect();
    Ok(Index {
        key,
        kind,
        attributes,
        orders,
        lengths,
        created_at: now,
        updated_at: now,
    })
}

async fn list_indexes(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Index, false).await?;
    let c = collection(&s, f, &ctx, &req)?;
    list_reply(
        &req,
        "indexes",
        c.indexes.iter().map(|i| render::index(i, f)).collect(),
    )
}

async fn create_index(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Index, true).await?;
    let index = index_from(&req, f, now_ms())?;
    let cmd = Command::CreateIndex {
        project: ctx.project,
        database: req.path("db"),
        collection: req.path("coll"),
        index,
    };
    match propose(&s, f, cmd).await? {
        Outcome::Index(i) => reply(StatusCode::ACCEPTED, render::index(&i, f)),
        o => Err(unexpected(o)),
    }
}

async fn get_index(State(s): State<AppState>, Extension(f): Extension<Flavor>, req: Req) -> Reply {
    let ctx = enter(&s, f, &req, Res::Index, false).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let key = req.path("key");
    let i = c.index(&key).ok_or_else(|| {
        f.error(Error::new(
            ErrorCode::IndexNotFound,
            format!("Index with the requested key '{key}' could not be found."),
        ))
    })?;
    reply(StatusCode::OK, render::index(i, f))
}

async fn delete_index(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Index, true).await?;
    let cmd = Command::DeleteIndex {
        project: ctx.project,
        database: req.path("db"),
        collection: req.path("coll"),
        key: req.path("key"),
        now: now_ms(),
    };
    propose(&s, f, cmd).await?;
    no_content()
}

// ---- documents / rows ----

fn missing_data(f: Flavor, msg: &str) -> ApiError {
    f.error(Error::new(ErrorCode::DocumentMissingData, msg))
}

/// `$permissions` carried inside row data (bulk items, operations, `data`), normalised.
fn inline_permissions(m: &Map<String, Json>) -> Result<Option<Vec<String>>, ApiError> {
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
fn negated(v: Value) -> Value {
    match v {
        Value::Int(i) => Value::Int(-i),
        v => Value::Float(-v.as_f64().unwrap_or(0.0)),
    }
}

/// One bulk item: `$id` (or generated), `$permissions`, and the data.
fn bulk_item(f: Flavor, item: &Json) -> Result<(String, Data, Option<Vec<String>>), ApiError> {
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
    let perms = inline_permissions(obj)?;
    Ok((
        id,
        data_from_json(obj, ErrorCode::DocumentInvalidStructure).map_err(|e| f.error(e.0))?,
        perms,
    ))
}

/// Row data and the `$permissions` it may carry inline.
type DataAndPermissions = (Data, Option<Vec<String>>);

fn data_param(req: &Req, f: Flavor) -> Result<Option<DataAndPermissions>, ApiError> {
    match req.object_opt("data")? {
        None => Ok(None),
        Some(m) => {
            let perms = inline_permissions(&m)?;
            Ok(Some((
                data_from_json(&m, ErrorCode::DocumentInvalidStructure)
                    .map_err(|e| f.error(e.0))?,
                perms,
            )))
        }
    }
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
fn staged_ops(s: &AppState, ctx: &Ctx, req: &Req) -> Result<Option<Vec<DocTarget>>, ApiError> {
    let Some(id) = req.str_opt("transactionId")? else {
        return Ok(None);
    };
    let t = s
        .backend
        .reader()
        .transaction(&ctx.project, &id)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TransactionNotFound,
                format!("Transaction with the requested ID '{id}' could not be found."),
            )
        })?;
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
    if let Some(tx) = req.str_opt("transactionId")? {
        let cmd = Command::StageOperations {
            project: ctx.project.clone(),
            id: tx,
            ops,
            now: now_ms(),
        };
        return match propose(s, f, cmd).await? {
            Outcome::Transaction(t) => Ok(Err(t)),
            o => Err(unexpected(o)),
        };
    }
    let cmd = Command::Documents {
        project: ctx.project.clone(),
        ops,
        now: now_ms(),
    };
    match propose(s, f, cmd).await? {
        Outcome::Documents(d) => Ok(Ok(d)),
        o => Err(unexpected(o)),
    }
}

fn list_of(f: Flavor, c: &Collection, docs: &[model::Document]) -> Json {
    json!({ "total": docs.len(), f.docs_key(): docs.iter().map(|d| render::document(d, c, f, None)).collect::<Vec<_>>() })
}

/// The body answered for a staged write: the row as it would be, without stored fields.
fn staged(f: Flavor, c: &Collection, id: &str, data: &Data) -> Json {
    let mut m = Map::new();
    m.insert("$id".into(), json!(id));
    m.insert(f.parent_id_key().into(), json!(c.id));
    m.insert("$databaseId".into(), json!(c.database));
    for (k, v) in data {
        m.insert(k.clone(), v.to_json());
    }
    Json::Object(m)
}

async fn list_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, false).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let mut spec = Spec::parse(&req.queries()?)?;
    spec.validate(&c)?;
    let page = match staged_ops(&s, &ctx, &req)? {
        Some(staged) => {
            s.backend
                .reader()
                .find_staged(&ctx.project, &c, &spec, &staged, now_ms())?
        }
        None => s.backend.reader().find(&ctx.project, &c, &spec)?,
    };
    let total = if req.want_total()? { page.total } else { 0 };
    let docs: Vec<Json> = page
        .documents
        .iter()
        .map(|d| render::document(d, &c, f, spec.select.as_deref()))
        .collect();
    reply(
        StatusCode::OK,
        json!({ "total": total, f.docs_key(): docs }),
    )
}

async fn create_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let bulk = req.array_opt(f.docs_key())?;
    match (bulk, req.has("data")) {
        (Some(_), true) => Err(ApiError::new(
            ErrorCode::GeneralBadRequest,
            format!(
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
                return Err(ApiError::new(ErrorCode::GeneralBadRequest, format!("Param \"{}\" is not allowed when creating multiple {}, set \"$id\" on each instead.", f.doc_id_param(), f.docs_key())));
            }
            if items.len() > 1000 {
                return Err(ApiError(Error::invalid(format!(
                    "Invalid `{}` param: Value must a valid array no longer than 1000 items",
                    f.docs_key()
                ))));
            }
            let mut ops = Vec::new();
            for item in &items {
                let (id, data, permissions) = bulk_item(f, item)?;
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
            let (data, inline_perms) = data_param(&req, f)?.unwrap_or_default();
            let permissions = permissions(&req, Scope::Document)?.or(inline_perms);
            let op = DocOp::Create {
                id: id.clone(),
                data: data.clone(),
                permissions,
            };
            match run_ops(&s, f, &ctx, &req, vec![target(&req, op)]).await? {
                Ok(docs) => match docs.first() {
                    Some(d) => reply(StatusCode::CREATED, render::document(d, &c, f, None)),
                    None => Err(unexpected(Outcome::Documents(docs))),
                },
                Err(_) => reply(StatusCode::CREATED, staged(f, &c, &id, &data)),
            }
        }
    }
}

async fn upsert_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let items = req.array_opt(f.docs_key())?.ok_or_else(|| {
        ApiError(Error::invalid(format!(
            "Param \"{}\" is not optional.",
            f.docs_key()
        )))
    })?;
    let mut ops = Vec::new();
    for item in &items {
        let (id, data, permissions) = bulk_item(f, item)?;
        ops.push(target(
            &req,
            DocOp::Upsert {
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

fn bulk_spec(req: &Req, c: &Collection) -> Result<Spec, ApiError> {
    let mut spec = Spec::parse(&req.queries()?)?;
    spec.validate(c)?;
    Ok(spec)
}

async fn update_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let spec = bulk_spec(&req, &c)?;
    let (data, _) = data_param(&req, f)?.unwrap_or_default();
    match run_ops(
        &s,
        f,
        &ctx,
        &req,
        vec![target(&req, DocOp::UpdateWhere { spec, data })],
    )
    .await?
    {
        Ok(docs) => reply(StatusCode::OK, list_of(f, &c, &docs)),
        Err(_) => reply(StatusCode::OK, json!({ "total": 0, f.docs_key(): [] })),
    }
}

async fn delete_documents(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let spec = bulk_spec(&req, &c)?;
    match run_ops(
        &s,
        f,
        &ctx,
        &req,
        vec![target(&req, DocOp::DeleteWhere { spec })],
    )
    .await?
    {
        Ok(docs) => reply(StatusCode::OK, list_of(f, &c, &docs)),
        Err(_) => reply(StatusCode::OK, json!({ "total": 0, f.docs_key(): [] })),
    }
}

async fn get_document(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, false).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let mut spec = Spec::parse(&req.queries()?)?;
    spec.validate(&c)?;
    let id = req.path("doc");
    let found = match staged_ops(&s, &ctx, &req)? {
        Some(staged) => {
            s.backend
                .reader()
                .document_staged(&ctx.project, &c, &id, &staged, now_ms())?
        }
        None => s.backend.reader().document(&ctx.project, &c, &id)?,
    };
    let d = found.ok_or_else(|| {
        f.error(Error::new(
            ErrorCode::DocumentNotFound,
            format!("Document with the requested ID '{id}' could not be found."),
        ))
    })?;
    reply(
        StatusCode::OK,
        render::document(&d, &c, f, spec.select.as_deref()),
    )
}

/// A single-row write: the op, the success status, and what to answer if it is staged.
struct OneWrite {
    op: DocOp,
    status: StatusCode,
    staged: Data,
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
    match run_ops(s, f, ctx, req, vec![target(req, w.op)]).await? {
        Ok(docs) => match docs.first() {
            Some(d) => reply(w.status, render::document(d, c, f, None)),
            None => Err(unexpected(Outcome::Documents(docs))),
        },
        Err(_) => reply(w.status, staged(f, c, &id, &w.staged)),
    }
}

async fn upsert_document(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let id = req.path("doc");
    id::check(f.doc_id_param(), &id)?;
    let (data, inline) = data_param(&req, f)?.unwrap_or_default();
    let permissions = permissions(&req, Scope::Document)?.or(inline);
    let op = DocOp::Upsert {
        id,
        data: data.clone(),
        permissions,
    };
    write_one(
        &s,
        f,
        &ctx,
        &req,
        &c,
        OneWrite {
            op,
            status: StatusCode::CREATED,
            staged: data,
        },
    )
    .await
}

async fn update_document(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let data = data_param(&req, f)?;
    let perms = permissions(&req, Scope::Document)?;
    if data.is_none() && perms.is_none() {
        return Err(f.error(Error::new(ErrorCode::DocumentMissingPayload, "The document data and permissions are missing. You must provide either document data or permissions to be updated.")));
    }
    let (data, inline) = data.unwrap_or_default();
    let op = DocOp::Update {
        id: req.path("doc"),
        data: data.clone(),
        permissions: perms.or(inline),
    };
    write_one(
        &s,
        f,
        &ctx,
        &req,
        &c,
        OneWrite {
            op,
            status: StatusCode::OK,
            staged: data,
        },
    )
    .await
}

async fn delete_document(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    collection(&s, f, &ctx, &req)?;
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
}

async fn step(s: AppState, f: Flavor, req: Req, down: bool) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let c = collection(&s, f, &ctx, &req)?;
    let value = req.number_opt("value")?.unwrap_or(Value::Int(1));
    if value.as_f64().is_none_or(|v| v <= 0.0) {
        return Err(ApiError(Error::invalid(
            "Invalid `value` param: Value must be a number greater than 0",
        )));
    }
    let by = if down { negated(value) } else { value };
    let bound = req.number_opt(if down { "min" } else { "max" })?;
    let attr = req.path("attr");
    let op = DocOp::Increment {
        id: req.path("doc"),
        attr: attr.clone(),
        by: by.clone(),
        bound,
    };
    let staged = [(attr, by)].into_iter().collect();
    write_one(
        &s,
        f,
        &ctx,
        &req,
        &c,
        OneWrite {
            op,
            status: StatusCode::OK,
            staged,
        },
    )
    .await
}

async fn increment(State(s): State<AppState>, Extension(f): Extension<Flavor>, req: Req) -> Reply {
    step(s, f, req, false).await
}

async fn decrement(State(s): State<AppState>, Extension(f): Extension<Flavor>, req: Req) -> Reply {
    step(s, f, req, true).await
}

// ---- transactions ----

async fn list_transactions(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, false).await?;
    let txs = s.backend.reader().list_transactions(&ctx.project)?;
    list_reply(
        &req,
        "transactions",
        txs.iter().map(render::transaction).collect(),
    )
}

async fn create_transaction(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let ttl = req.uint_opt("ttl")?.unwrap_or(300);
    if !(60..=3600).contains(&ttl) {
        return Err(ApiError(Error::invalid(
            "Invalid `ttl` param: Value must be a valid range between 60 and 3,600",
        )));
    }
    let now = now_ms();
    let transaction = Transaction {
        id: new_id(),
        status: TransactionStatus::Pending,
        operations: vec![],
        expires_at: now + ttl as i64 * 1000,
        created_at: now,
        updated_at: now,
    };
    match propose(
        &s,
        f,
        Command::CreateTransaction {
            project: ctx.project,
            transaction,
        },
    )
    .await?
    {
        Outcome::Transaction(t) => reply(StatusCode::CREATED, render::transaction(&t)),
        o => Err(unexpected(o)),
    }
}

async fn get_transaction(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, false).await?;
    let id = req.path("tx");
    let t = s
        .backend
        .reader()
        .transaction(&ctx.project, &id)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TransactionNotFound,
                format!("Transaction with the requested ID '{id}' could not be found."),
            )
        })?;
    reply(StatusCode::OK, render::transaction(&t))
}

async fn update_transaction(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let commit = req.bool_opt("commit")?.unwrap_or(false);
    let rollback = req.bool_opt("rollback")?.unwrap_or(false);
    let (project, id, now) = (ctx.project, req.path("tx"), now_ms());
    let cmd = match (commit, rollback) {
        (true, true) => {
            return Err(ApiError::new(
                ErrorCode::GeneralBadRequest,
                "Cannot commit and rollback at the same time",
            ))
        }
        (false, false) => {
            return Err(ApiError::new(
                ErrorCode::GeneralBadRequest,
                "Either commit or rollback must be true",
            ))
        }
        (true, false) => Command::CommitTransaction { project, id, now },
        (false, true) => Command::RollbackTransaction { project, id, now },
    };
    // Commit errors keep Appwrite's legacy (document) vocabulary on both APIs.
    match propose(&s, Flavor::Legacy, cmd).await? {
        Outcome::Transaction(t) => reply(StatusCode::OK, render::transaction(&t)),
        o => Err(unexpected(o)),
    }
}

async fn delete_transaction(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    propose(
        &s,
        f,
        Command::DeleteTransaction {
            project: ctx.project,
            id: req.path("tx"),
        },
    )
    .await?;
    no_content()
}

fn op_error(msg: impl Into<String>) -> ApiError {
    ApiError(Error::invalid(format!(
        "Invalid `operations` param: {}",
        msg.into()
    )))
}

/// Parses one operation object of `createOperations` into document ops.
fn parse_operation(item: &Json) -> Result<Vec<DocTarget>, ApiError> {
    let o = item
        .as_object()
        .ok_or_else(|| op_error("each operation must be an object"))?;
    let s = |k: &str| {
        o.get(k)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let action = s("action").ok_or_else(|| op_error("`action` is required"))?;
    let database = s("databaseId").ok_or_else(|| op_error("`databaseId` is required"))?;
    let collection = s("tableId")
        .or_else(|| s("collectionId"))
        .ok_or_else(|| op_error("`tableId` is required"))?;
    let row = s("rowId").or_else(|| s("documentId"));
    let need_row = || -> Result<String, ApiError> {
        let r = row
            .clone()
            .ok_or_else(|| op_error("`rowId` is required for this action"))?;
        id::check("rowId", &r)?;
        Ok(r)
    };
    let data = o.get("data").cloned().unwrap_or(Json::Null);
    let obj = |v: &Json| -> Result<Map<String, Json>, ApiError> {
        v.as_object()
            .cloned()
            .ok_or_else(|| op_error("`data` must be an object"))
    };
    let queries = |m: &Map<String, Json>| -> Result<Spec, ApiError> {
        let q: Vec<String> = match m.get("queries") {
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        Ok(Spec::parse(&q)?)
    };
    let t = |op: DocOp| DocTarget {
        database: database.clone(),
        collection: collection.clone(),
        op,
    };
    let ops = match action.as_str() {
        "create" | "update" | "upsert" => {
            let m = obj(&data)?;
            let (id, d, p) = (
                need_row()?,
                data_from_json(&m, ErrorCode::DocumentInvalidStructure)?,
                inline_permissions(&m)?,
            );
            vec![t(match action.as_str() {
                "create" => DocOp::Create {
                    id,
                    data: d,
                    permissions: p,
                },
                "update" => DocOp::Update {
                    id,
                    data: d,
                    permissions: p,
                },
                _ => DocOp::Upsert {
                    id,
                    data: d,
                    permissions: p,
                },
            })]
        }
        "delete" => vec![t(DocOp::Delete { id: need_row()? })],
        "increment" | "decrement" => {
            let m = obj(&data)?;
            let attr = m
                .get("column")
                .or_else(|| m.get("attribute"))
                .and_then(|v| v.as_str())
                .ok_or_else(|| op_error("`data.column` is required"))?
                .to_string();
            let value = m
                .get("value")
                .and_then(Value::from_json)
                .unwrap_or(Value::Int(1));
            let by = if action == "decrement" {
                negated(value)
            } else {
                value
            };
            let bound = m
                .get(if action == "decrement" { "min" } else { "max" })
                .and_then(Value::from_json)
                .filter(|v| !v.is_null());
            vec![t(DocOp::Increment {
                id: need_row()?,
                attr,
                by,
                bound,
            })]
        }
        "bulkCreate" | "bulkUpsert" => {
            let items = data
                .as_array()
                .cloned()
                .ok_or_else(|| op_error("`data` must be an array of rows"))?;
            let mut out = Vec::new();
            for item in &items {
                let (id, d, p) = bulk_item(Flavor::Tables, item)?;
                out.push(t(if action == "bulkCreate" {
                    DocOp::Create {
                        id,
                        data: d,
                        permissions: p,
                    }
                } else {
                    DocOp::Upsert {
                        id,
                        data: d,
                        permissions: p,
                    }
                }));
            }
            out
        }
        "bulkUpdate" => {
            let m = obj(&data)?;
            let d = match m.get("data") {
                Some(Json::Object(d)) => data_from_json(d, ErrorCode::DocumentInvalidStructure)?,
                _ => Data::new(),
            };
            vec![t(DocOp::UpdateWhere {
                spec: queries(&m)?,
                data: d,
            })]
        }
        "bulkDelete" => vec![t(DocOp::DeleteWhere {
            spec: queries(&obj(&data)?)?,
        })],
        other => return Err(op_error(format!("unknown action \"{other}\""))),
    };
    Ok(ops)
}

async fn create_operations(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc, true).await?;
    let items = req.array_opt("operations")?.unwrap_or_default();
    if items.is_empty() {
        return Err(ApiError::new(
            ErrorCode::GeneralBadRequest,
            "Operations array cannot be empty",
        ));
    }
    let mut ops = Vec::new();
    for item in &items {
        ops.extend(parse_operation(item)?);
    }
    let cmd = Command::StageOperations {
        project: ctx.project,
        id: req.path("tx"),
        ops,
        now: now_ms(),
    };
    match propose(&s, Flavor::Legacy, cmd).await? {
        Outcome::Transaction(t) => reply(StatusCode::CREATED, render::transaction(&t)),
        o => Err(unexpected(o)),
    }
}
