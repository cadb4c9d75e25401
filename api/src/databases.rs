//! The Databases (`/v1/databases`: collections, attributes, documents) and TablesDB
//! (`/v1/tablesdb`: tables, columns, rows) services: one set of handlers over one storage,
//! seen through two vocabularies.

use crate::auth::Ctx;
use crate::common::{
    collection, database, enter, enter_write, list_reply, no_content, permissions, propose, reply,
    unexpected, Flavor, Reply, Res,
};
use crate::error::ApiError;
use crate::params::Req;
use crate::{render, rows, transactions, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Extension, Router};
use model::command::AttributePatch;
use model::command::SchemaOp;
use model::msg;
use model::permission::Scope;
use model::schema::{
    AttrKind, Attribute, Collection, Database, Index, IndexKind, OnDelete, Order, RelationType,
    Relationship, Side,
};
use model::{id, Error, ErrorCode, Op, Outcome, Value};
use serde_json::Value as Json;

pub fn router(f: Flavor) -> Router<AppState> {
    let b = f.base();
    let c = format!("{b}/{{db}}/{}/{{coll}}", f.coll_seg());
    let a = format!("{c}/{}", f.attrs_key());
    let d = format!("{c}/{}", f.docs_key());
    Router::new()
        .route(b, get(list_databases).post(create_database))
        .route(
            &format!("{b}/transactions"),
            get(transactions::list_transactions).post(transactions::create_transaction),
        )
        .route(
            &format!("{b}/transactions/{{tx}}"),
            get(transactions::get_transaction)
                .patch(transactions::update_transaction)
                .delete(transactions::delete_transaction),
        )
        .route(
            &format!("{b}/transactions/{{tx}}/operations"),
            post(transactions::create_operations),
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
            get(rows::list_documents)
                .post(rows::create_documents)
                .put(rows::upsert_documents)
                .patch(rows::update_documents)
                .delete(rows::delete_documents),
        )
        .route(
            &format!("{d}/{{doc}}"),
            get(rows::get_document)
                .put(rows::upsert_document)
                .patch(rows::update_document)
                .delete(rows::delete_document),
        )
        .route(
            &format!("{d}/{{doc}}/{{attr}}/increment"),
            patch(rows::increment),
        )
        .route(
            &format!("{d}/{{doc}}/{{attr}}/decrement"),
            patch(rows::decrement),
        )
        .layer(Extension(f))
}

// ---- databases ----

async fn list_databases(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Db).await?;
    let dbs = ctx.view.list_databases(&ctx.project)?;
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
    let ctx = enter_write(&s, f, &req, Res::Db).await?;
    let database = Database {
        id: req.id_req("databaseId")?,
        name: req.text_req("name", 128)?,
        enabled: req.bool_opt("enabled")?.unwrap_or(true),
        kind: f.kind().to_string(),
        created_at: 0,
        updated_at: 0,
    };
    match propose(
        &s,
        f,
        &ctx,
        Op::Schema(SchemaOp::CreateDatabase { database }),
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
    let ctx = enter(&s, f, &req, Res::Db).await?;
    reply(
        StatusCode::OK,
        render::database(&database(&ctx, &req.path("db"))?),
    )
}

async fn update_database(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Db).await?;
    let name = match req.has("name") {
        true => Some(req.text_req("name", 128)?),
        false => None,
    };
    let op = SchemaOp::UpdateDatabase {
        id: req.path("db"),
        name,
        enabled: req.bool_opt("enabled")?,
    };
    match propose(&s, f, &ctx, Op::Schema(op)).await? {
        Outcome::Database(d) => reply(StatusCode::OK, render::database(&d)),
        o => Err(unexpected(o)),
    }
}

async fn delete_database(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Db).await?;
    let op = SchemaOp::DeleteDatabase { id: req.path("db") };
    propose(&s, f, &ctx, Op::Schema(op)).await?;
    no_content()
}

// ---- collections / tables ----

async fn list_collections(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Coll).await?;
    let db = req.path("db");
    database(&ctx, &db)?;
    let colls = ctx.view.list_collections(&ctx.project, &db)?;
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
    let ctx = enter_write(&s, f, &req, Res::Coll).await?;
    let mut attributes = Vec::new();
    for item in req.array_opt(f.attrs_key())?.unwrap_or_default() {
        let obj = item.as_object().cloned().ok_or_else(|| {
            ApiError(Error::invalid(msg!(
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
                .ok_or_else(|| ApiError(Error::invalid(msg!("Invalid column type \"{}\".", k))))?,
        };
        attributes.push(attribute_from(&sub, kind, false)?);
    }
    let mut indexes = Vec::new();
    for item in req.array_opt("indexes")?.unwrap_or_default() {
        let obj = item.as_object().cloned().ok_or_else(|| {
            ApiError(Error::invalid(
                "Invalid `indexes` param: items must be objects",
            ))
        })?;
        indexes.push(index_from(&Req::from_object(obj), f)?);
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
        reshapes: vec![],
        relations: Default::default(),
        created_at: 0,
        updated_at: 0,
    };
    match propose(
        &s,
        f,
        &ctx,
        Op::Schema(SchemaOp::CreateCollection { collection }),
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
    let ctx = enter(&s, f, &req, Res::Coll).await?;
    reply(
        StatusCode::OK,
        render::collection(&collection(f, &ctx, &req)?, f),
    )
}

async fn update_collection(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Coll).await?;
    let name = match req.has("name") {
        true => Some(req.text_req("name", 128)?),
        false => None,
    };
    let op = SchemaOp::UpdateCollection {
        database: req.path("db"),
        id: req.path("coll"),
        name,
        permissions: permissions(&req, Scope::Collection)?,
        document_security: req.bool_opt(f.security_key())?,
        enabled: req.bool_opt("enabled")?,
    };
    match propose(&s, f, &ctx, Op::Schema(op)).await? {
        Outcome::Collection(c) => reply(StatusCode::OK, render::collection(&c, f)),
        o => Err(unexpected(o)),
    }
}

async fn delete_collection(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Coll).await?;
    let op = SchemaOp::DeleteCollection {
        database: req.path("db"),
        id: req.path("coll"),
    };
    propose(&s, f, &ctx, Op::Schema(op)).await?;
    no_content()
}

// ---- attributes / columns ----

fn value_param(req: &Req, name: &str) -> Result<Option<Value>, ApiError> {
    match req.params.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => Value::from_json(v).map(Some).ok_or_else(|| {
            ApiError(Error::invalid(msg!(
                "Invalid `{}` param: Value must be a scalar",
                name
            )))
        }),
    }
}

fn attribute_from(req: &Req, kind: AttrKind, required_param: bool) -> Result<Attribute, ApiError> {
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
        created_at: 0,
        updated_at: 0,
    })
}

async fn list_attributes(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Attr).await?;
    let c = collection(f, &ctx, &req)?;
    list_reply(
        &req,
        f.attrs_key(),
        c.visible_attributes()
            .map(|a| render::column(&c, a, f))
            .collect(),
    )
}

async fn create_attribute(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Attr).await?;
    let route = req.path("key");
    if route == "relationship" {
        return create_relationship(&s, f, &ctx, &req).await;
    }
    let kind = AttrKind::from_route(&route).ok_or_else(|| crate::error::ApiError::new(ErrorCode::GeneralRouteNotFound, "Route not found. Please ensure the endpoint is configured correctly and that the API route is valid for this SDK version. Refer to the API docs for more details."))?;
    let attribute = attribute_from(&req, kind, true)?;
    let op = SchemaOp::CreateAttribute {
        database: req.path("db"),
        collection: req.path("coll"),
        attribute,
    };
    match propose(&s, f, &ctx, Op::Schema(op)).await? {
        Outcome::Attribute(a) => reply(StatusCode::ACCEPTED, render::attribute(&a)),
        o => Err(unexpected(o)),
    }
}

async fn get_attribute(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Attr).await?;
    let c = collection(f, &ctx, &req)?;
    let key = req.path("key");
    let a = c
        .visible_attributes()
        .find(|a| a.key == key)
        .ok_or_else(|| {
            f.error(Error::new(
                ErrorCode::AttributeNotFound,
                msg!(
                    "Attribute with the requested key '{}' could not be found.",
                    key
                ),
            ))
        })?;
    reply(StatusCode::OK, render::column(&c, a, f))
}

/// `POST …/attributes/relationship`: the attribute and its twin on the related collection.
async fn create_relationship(s: &AppState, f: Flavor, ctx: &Ctx, req: &Req) -> Reply {
    let related_param = format!("{}Id", f.related_key());
    let related = req.str_req(&related_param)?;
    id::check(&related_param, &related)?;
    let kind_s = req.str_req("type")?;
    let kind = RelationType::parse(&kind_s).ok_or_else(|| {
        ApiError(Error::invalid(msg!(
            "Invalid `type` param: Value must be one of (oneToOne, manyToOne, manyToMany, oneToMany); got \"{}\"",
            kind_s
        )))
    })?;
    let on_delete = match req.str_opt("onDelete")? {
        None => OnDelete::Restrict,
        Some(o) => OnDelete::parse(&o).ok_or_else(|| {
            ApiError(Error::invalid(
                "Invalid `onDelete` param: Value must be one of (cascade, restrict, setNull)",
            ))
        })?,
    };
    // Appwrite's defaults: the related collection's id, and this collection's.
    let key = req.str_opt("key")?.unwrap_or_else(|| related.clone());
    id::check_key("key", &key)?;
    let two_way_key = req
        .str_opt("twoWayKey")?
        .unwrap_or_else(|| req.path("coll"));
    id::check_key("twoWayKey", &two_way_key)?;
    let relationship = Relationship {
        related,
        kind,
        two_way: req.bool_opt("twoWay")?.unwrap_or(false),
        two_way_key,
        on_delete,
        side: Side::Parent,
        index: None,
    };
    let op = SchemaOp::CreateRelationship {
        database: req.path("db"),
        collection: req.path("coll"),
        key,
        relationship: relationship.clone(),
    };
    match propose(s, f, ctx, Op::Schema(op)).await? {
        Outcome::Attribute(a) => reply(
            StatusCode::ACCEPTED,
            render::relationship(&a, &relationship, f),
        ),
        o => Err(unexpected(o)),
    }
}

/// `PATCH …/attributes/relationship/{key}` (Databases) and `…/columns/{key}/relationship`
/// (TablesDB): `onDelete` and a new key.
async fn update_relationship(s: &AppState, f: Flavor, ctx: &Ctx, req: &Req, key: String) -> Reply {
    let c = collection(f, ctx, req)?;
    let Some(mut rel) = c.relation(&key).filter(|r| r.visible()).cloned() else {
        return Err(f.error(Error::new(
            ErrorCode::AttributeNotFound,
            msg!(
                "Attribute with the requested key '{}' could not be found.",
                key
            ),
        )));
    };
    let on_delete = match req.str_opt("onDelete")? {
        None => None,
        Some(o) => Some(OnDelete::parse(&o).ok_or_else(|| {
            ApiError(Error::invalid(
                "Invalid `onDelete` param: Value must be one of (cascade, restrict, setNull)",
            ))
        })?),
    };
    let new_key = req.str_opt("newKey")?;
    if let Some(k) = &new_key {
        id::check_key("newKey", k)?;
    }
    let op = SchemaOp::UpdateRelationship {
        database: req.path("db"),
        collection: req.path("coll"),
        key,
        on_delete,
        new_key,
    };
    match propose(s, f, ctx, Op::Schema(op)).await? {
        Outcome::Attribute(a) => {
            if let Some(od) = on_delete {
                rel.on_delete = od;
            }
            reply(StatusCode::OK, render::relationship(&a, &rel, f))
        }
        o => Err(unexpected(o)),
    }
}

async fn update_attribute(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Attr).await?;
    let kind_route = req.path("kind");
    // Relationships: `…/attributes/relationship/{key}` (Databases, and what the 27.x SDKs send
    // for TablesDB too), `…/columns/{key}/relationship` (TablesDB's spec; a column named like
    // a type route is a relationship when it is one).
    match (f, kind_route.as_str(), req.path("key").as_str()) {
        (_, "relationship", key) => {
            return update_relationship(&s, f, &ctx, &req, key.to_string()).await
        }
        (Flavor::Tables, key, "relationship")
            if AttrKind::from_route(key).is_none()
                || collection(f, &ctx, &req)?.relation(key).is_some() =>
        {
            return update_relationship(&s, f, &ctx, &req, key.to_string()).await
        }
        _ => {}
    }
    let kind = AttrKind::from_route(&kind_route)
        .ok_or_else(|| ApiError::new(ErrorCode::GeneralRouteNotFound, "Route not found."))?;
    let new_key = req.str_opt("newKey")?;
    if let Some(k) = &new_key {
        id::check_key("newKey", k)?;
    }
    let patch = AttributePatch {
        required: Some(req.bool_req("required")?),
        default: match req.params.get("default") {
            // Appwrite's spatial updates always set the default: left out, it goes.
            None if kind.shape().is_some() => Some(Value::Null),
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
    let op = SchemaOp::UpdateAttribute {
        database: req.path("db"),
        collection: req.path("coll"),
        key: req.path("key"),
        kind,
        patch,
    };
    match propose(&s, f, &ctx, Op::Schema(op)).await? {
        Outcome::Attribute(a) => reply(StatusCode::OK, render::attribute(&a)),
        o => Err(unexpected(o)),
    }
}

async fn delete_attribute(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Attr).await?;
    let op = SchemaOp::DeleteAttribute {
        database: req.path("db"),
        collection: req.path("coll"),
        key: req.path("key"),
    };
    propose(&s, f, &ctx, Op::Schema(op)).await?;
    no_content()
}

// ---- indexes ----

fn index_from(req: &Req, f: Flavor) -> Result<Index, ApiError> {
    let key = req.str_req("key")?;
    id::check_key("key", &key)?;
    let kind_s = req.str_req("type")?;
    let kind = IndexKind::parse(&kind_s).ok_or_else(|| {
        ApiError(Error::invalid(msg!(
            "Invalid `type` param: Value must be one of (key, fulltext, unique, spatial); got \"{}\"",
            kind_s
        )))
    })?;
    let attributes = req
        .strings_opt(f.index_attrs_key())?
        .or(req.strings_opt("attributes")?)
        .ok_or_else(|| {
            ApiError(Error::invalid(msg!(
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
    // Whole numbers or null (Appwrite's `Nullable(Integer)`); 0 and null both mean "the
    // whole value".
    let bad_lengths = || {
        ApiError(Error::invalid(
            "Invalid `lengths` param: Value must a valid array no longer than 100 items and Value must be a valid signed 32-bit integer between -2,147,483,648 and 2,147,483,647 or null",
        ))
    };
    let lengths = req
        .array_opt("lengths")?
        .unwrap_or_default()
        .iter()
        .map(|v| match v {
            serde_json::Value::Null => Ok(0),
            v => v
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(bad_lengths),
        })
        .collect::<Result<Vec<i64>, _>>()?;
    if lengths.len() > 100 {
        return Err(bad_lengths());
    }
    if lengths.len() > attributes.len() {
        return Err(f.error(Error::new(
            ErrorCode::IndexInvalid,
            "Invalid index lengths. Count of lengths must be equal or less than the number of attributes.",
        )));
    }
    if let Some(n) = lengths.iter().find(|n| **n < 0) {
        let at = lengths.iter().position(|x| x == n).unwrap_or(0);
        return Err(f.error(Error::new(
            ErrorCode::IndexInvalid,
            msg!(
                "Negative index length provided for {}",
                attributes.get(at).map(String::as_str).unwrap_or("")
            ),
        )));
    }
    let lengths = lengths.into_iter().map(|n| n as u32).collect();
    Ok(Index {
        key,
        kind,
        attributes,
        orders,
        lengths,
        status: Default::default(),
        created_at: 0,
        updated_at: 0,
    })
}

async fn list_indexes(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Index).await?;
    let c = collection(f, &ctx, &req)?;
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
    let ctx = enter_write(&s, f, &req, Res::Index).await?;
    let index = index_from(&req, f)?;
    let op = SchemaOp::CreateIndex {
        database: req.path("db"),
        collection: req.path("coll"),
        index,
    };
    match propose(&s, f, &ctx, Op::Schema(op)).await? {
        Outcome::Index(i) => reply(StatusCode::ACCEPTED, render::index(&i, f)),
        o => Err(unexpected(o)),
    }
}

async fn get_index(State(s): State<AppState>, Extension(f): Extension<Flavor>, req: Req) -> Reply {
    let ctx = enter(&s, f, &req, Res::Index).await?;
    let c = collection(f, &ctx, &req)?;
    let key = req.path("key");
    let i = c.index(&key).ok_or_else(|| {
        f.error(Error::new(
            ErrorCode::IndexNotFound,
            msg!("Index with the requested key '{}' could not be found.", key),
        ))
    })?;
    reply(StatusCode::OK, render::index(i, f))
}

async fn delete_index(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Index).await?;
    let op = SchemaOp::DeleteIndex {
        database: req.path("db"),
        collection: req.path("coll"),
        key: req.path("key"),
    };
    propose(&s, f, &ctx, Op::Schema(op)).await?;
    no_content()
}
