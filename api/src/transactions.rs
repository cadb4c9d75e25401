//! Transactions: create, stage operations, commit (one Raft entry) or roll back.

use crate::auth::Who;
use crate::common::{
    bulk_item, enter, enter_write, inline_permissions, list_reply, load_transaction, negated,
    no_content, propose, reply, unexpected, Flavor, Reply, Res,
};
use crate::error::ApiError;
use crate::params::{data_from_json, new_id, patch_from_json, Req};
use model::msg;

use crate::{abuse, render, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use model::command::TransactionOp;
use model::command::{Data, DocOp, DocTarget, Ops};
use model::query::Spec;
use model::{id, Error, ErrorCode, Op, Outcome, Value};
use serde_json::{Map, Value as Json};

pub(crate) async fn list_transactions(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc).await?;
    // A key sees the project's; a user their own; a guest has none.
    let txs = match &ctx.who {
        Who::Key => ctx.view.list_transactions(&ctx.project)?,
        Who::User { user, .. } => ctx.view.user_transactions(&ctx.project, &user.id)?,
        Who::Guest => Vec::new(),
    };
    list_reply(
        &req,
        "transactions",
        txs.iter().map(render::transaction).collect(),
    )
}

pub(crate) async fn create_transaction(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Doc).await?;
    // Counted like a row write (users', per IP; keys are not limited).
    limited!(s, &req, &ctx, &abuse::ROW_WRITE, {
        let ttl = req.uint_opt("ttl")?.unwrap_or(300);
        if !(60..=3600).contains(&ttl) {
            return Err(ApiError(Error::invalid(
                "Invalid `ttl` param: Value must be a valid range between 60 and 3,600",
            )));
        }
        let op = TransactionOp::Create {
            id: new_id(),
            ttl_ms: ttl as i64 * 1000,
        };
        match propose(&s, f, &ctx, Op::Transactions(op)).await? {
            Outcome::Transaction(t) => reply(StatusCode::CREATED, render::transaction(&t)),
            o => Err(unexpected(o)),
        }
    })
}

pub(crate) async fn get_transaction(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter(&s, f, &req, Res::Doc).await?;
    let t = load_transaction(&ctx, &req.path("tx"))?;
    reply(StatusCode::OK, render::transaction(&t))
}

pub(crate) async fn update_transaction(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Doc).await?;
    let commit = req.bool_opt("commit")?.unwrap_or(false);
    let rollback = req.bool_opt("rollback")?.unwrap_or(false);
    let id = req.path("tx");
    let op = match (commit, rollback) {
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
        (true, false) => TransactionOp::Commit { id },
        (false, true) => TransactionOp::Rollback { id },
    };
    // Commit errors keep Appwrite's legacy (document) vocabulary on both APIs.
    match propose(&s, Flavor::Legacy, &ctx, Op::Transactions(op)).await? {
        Outcome::Transaction(t) => reply(StatusCode::OK, render::transaction(&t)),
        o => Err(unexpected(o)),
    }
}

pub(crate) async fn delete_transaction(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Doc).await?;
    // Whose it is, apply decides on the committed state (this view may lag).
    let op = TransactionOp::Delete { id: req.path("tx") };
    propose(&s, f, &ctx, Op::Transactions(op)).await?;
    no_content()
}

fn op_error(msg: impl Into<model::error::Message>) -> ApiError {
    ApiError(Error::invalid(
        msg.into().prefixed("Invalid `operations` param: "),
    ))
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
        let spec = Spec::parse(&q)?;
        spec.random_order()?;
        Ok(spec)
    };
    let t = |op: DocOp| DocTarget {
        database: database.clone(),
        collection: collection.clone(),
        op,
    };
    let ops = match action.as_str() {
        "create" => {
            let m = obj(&data)?;
            vec![t(DocOp::Create {
                id: need_row()?,
                data: data_from_json(&m, ErrorCode::DocumentInvalidStructure)?,
                permissions: inline_permissions(&m)?,
            })]
        }
        "update" | "upsert" => {
            let m = obj(&data)?;
            let (id, p) = (need_row()?, inline_permissions(&m)?);
            let (d, ops) = patch_from_json(&m, ErrorCode::DocumentInvalidStructure)?;
            vec![t(match action.as_str() {
                "update" => DocOp::update(id, d, ops, p),
                _ => DocOp::upsert(id, d, ops, p),
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
            let upsert = action == "bulkUpsert";
            for item in &items {
                let (id, (d, ops, p)) = bulk_item(Flavor::Tables, item, upsert)?;
                out.push(t(match upsert {
                    true => DocOp::upsert(id, d, ops, p),
                    false => DocOp::Create {
                        id,
                        data: d,
                        permissions: p,
                    },
                }));
            }
            out
        }
        "bulkUpdate" => {
            let m = obj(&data)?;
            let (d, ops) = match m.get("data") {
                Some(Json::Object(d)) => patch_from_json(d, ErrorCode::DocumentInvalidStructure)?,
                _ => (Data::new(), Ops::new()),
            };
            vec![t(DocOp::update_where(queries(&m)?, d, ops))]
        }
        "bulkDelete" => vec![t(DocOp::DeleteWhere {
            spec: queries(&obj(&data)?)?,
        })],
        other => return Err(op_error(msg!("unknown action \"{}\"", other))),
    };
    Ok(ops)
}

pub(crate) async fn create_operations(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_write(&s, f, &req, Res::Doc).await?;
    limited!(s, &req, &ctx, &abuse::ROW_WRITE, {
        let items = req.array_opt("operations")?.unwrap_or_default();
        if items.is_empty() {
            return Err(ApiError::new(
                ErrorCode::GeneralBadRequest,
                "Operations array cannot be empty",
            ));
        }
        let mut ops = Vec::new();
        for item in &items {
            // Bulk actions are a key's, in a transaction as outside one.
            let bulk = item
                .get("action")
                .and_then(|a| a.as_str())
                .is_some_and(|a| a.starts_with("bulk"));
            if bulk && !ctx.is_key() {
                return Err(ApiError::new(
                    ErrorCode::UserUnauthorized,
                    "The current user is not authorized to perform the requested action.",
                ));
            }
            ops.extend(parse_operation(item)?);
        }
        let op = TransactionOp::Stage {
            id: req.path("tx"),
            ops,
        };
        match propose(&s, Flavor::Legacy, &ctx, Op::Transactions(op)).await? {
            Outcome::Transaction(t) => reply(StatusCode::CREATED, render::transaction(&t)),
            o => Err(unexpected(o)),
        }
    })
}
