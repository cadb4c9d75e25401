//! The console's usage and log routes of the Databases and TablesDB services:
//! `getUsage`/`listUsage`, `getCollectionUsage`/`getTableUsage` from the replicated usage
//! counters (`model::usage`), and `listLogs`, `listCollectionLogs`/`listTableLogs`,
//! `listDocumentLogs`/`listRowLogs` from the audit trail (`model::audit`). Keys only: Appwrite
//! serves them to the console, and a trail of who wrote what from where is not for end users.
//!
//! Reads are counted here, where they are served, and reach the counters through the log
//! (`Reads::flush`), so every node answers the same figures.

use crate::auth::Ctx;
use crate::common::{collection, database, enter_scoped, key_only, reply, Flavor, Reply};
use crate::error::ApiError;
use crate::params::{now_ms, Req};
use crate::AppState;
use crate::Backend;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Router};
use model::audit::{self, Entry};
use model::command::{Actor, Envelope, Op, ReadCount, UsageOp, MAX_READ_COUNTS};
use model::query::{Filter, Spec};
use model::schema::Order;
use model::usage::{Metric, Period, Range, Scope};
use model::{msg, Error, ErrorCode};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub fn router(f: Flavor) -> Router<AppState> {
    let b = f.base();
    let c = format!("{b}/{{db}}/{}/{{coll}}", f.coll_seg());
    let r = Router::new()
        .route(&format!("{b}/usage"), get(list_usage))
        .route(&format!("{b}/{{db}}/usage"), get(database_usage))
        .route(&format!("{c}/usage"), get(collection_usage))
        .route(&format!("{c}/logs"), get(collection_logs))
        .route(
            &format!("{c}/{}/{{doc}}/logs", f.docs_key()),
            get(document_logs),
        );
    // TablesDB has no database log route.
    match f {
        Flavor::Legacy => r.route(&format!("{b}/{{db}}/logs"), get(database_logs)),
        Flavor::Tables => r,
    }
    .layer(Extension(f))
}

const USAGE_SCOPES: &[&str] = &["collections.read", "tables.read"];

async fn enter_console(s: &AppState, req: &Req, scopes: &[&str]) -> Result<Ctx, ApiError> {
    let ctx = enter_scoped(s, req, scopes).await?;
    key_only(&ctx)?;
    Ok(ctx)
}

fn range(req: &Req) -> Result<Range, ApiError> {
    Ok(Range::parse(req.str_opt("range")?.as_deref())?)
}

/// One metric of a scope over the range: its figure per bucket, oldest first.
fn series(ctx: &Ctx, scope: &Scope, metric: Metric, r: &Range) -> Result<Json, ApiError> {
    Ok(Json::Array(
        counted(ctx, scope, metric, r)?
            .into_iter()
            .map(|(b, v)| json!({ "value": v, "date": r.period.date(b) }))
            .collect(),
    ))
}

/// A scope's counter in each bucket of the range, as (bucket start, value). Buckets that
/// ended before the database or collection was made are 0: counters are kept by id, and a
/// deleted one's figures stay until retention removes them, so one made again with its id
/// would otherwise show them.
fn counted(
    ctx: &Ctx,
    scope: &Scope,
    metric: Metric,
    r: &Range,
) -> Result<Vec<(i64, i64)>, ApiError> {
    let buckets = r.bucket_starts(now_ms());
    let values = ctx
        .view
        .usage_series(&ctx.project, scope, metric, r.period, &buckets)?;
    let made = match scope {
        Scope::Project => None,
        Scope::Database(d) => ctx.view.database(&ctx.project, d)?.map(|d| d.created_at),
        Scope::Collection(d, c) => ctx
            .view
            .collection(&ctx.project, d, c)?
            .map(|c| c.created_at),
    };
    Ok(buckets
        .into_iter()
        .zip(values)
        .map(|(b, v)| {
            let ended = (b + r.period.secs()).saturating_mul(1000);
            (
                b,
                if made.is_some_and(|m| ended <= m) {
                    0
                } else {
                    v
                },
            )
        })
        .collect())
}

/// What the project's databases hold now: databases, collections, rows, bytes of row data.
struct Held {
    databases: u64,
    collections: u64,
    rows: u64,
}

fn held(ctx: &Ctx, db: Option<&str>) -> Result<Held, ApiError> {
    let dbs: Vec<String> = match db {
        Some(d) => vec![d.to_string()],
        None => ctx
            .view
            .list_databases(&ctx.project)?
            .into_iter()
            .map(|d| d.id)
            .collect(),
    };
    let mut h = Held {
        databases: dbs.len() as u64,
        collections: 0,
        rows: 0,
    };
    for d in &dbs {
        for c in ctx.view.list_collections(&ctx.project, d)? {
            h.collections += 1;
            h.rows += ctx.view.rows(&ctx.project, d, &c.id)?;
        }
    }
    Ok(h)
}

fn storage(ctx: &Ctx, scope: &Scope) -> Result<i64, ApiError> {
    Ok(ctx.view.usage_storage(&ctx.project, scope)?.max(0))
}

/// The figures of the project's databases (`Scope::Project`, `usageDatabases`) or of one
/// database (`usageDatabase`): what they hold now, and each metric's series over the range.
fn figures(ctx: &Ctx, scope: &Scope, r: &Range) -> Result<Json, ApiError> {
    let db = match scope {
        Scope::Database(d) => Some(d.as_str()),
        _ => None,
    };
    let h = held(ctx, db)?;
    let collections = series(ctx, scope, Metric::Collections, r)?;
    let documents = series(ctx, scope, Metric::Documents, r)?;
    // The project's read and write figures are named in the plural.
    let ops = match db {
        Some(_) => "database",
        None => "databases",
    };
    let mut m = json!({
        "range": r.name,
        "collectionsTotal": h.collections,
        "tablesTotal": h.collections,
        "documentsTotal": h.rows,
        "rowsTotal": h.rows,
        "storageTotal": storage(ctx, scope)?,
        format!("{ops}ReadsTotal"): total(ctx, scope, Metric::Reads, r)?,
        format!("{ops}WritesTotal"): total(ctx, scope, Metric::Writes, r)?,
        "collections": collections,
        "tables": collections,
        "documents": documents,
        "rows": documents,
        "storage": series(ctx, scope, Metric::Storage, r)?,
        format!("{ops}Reads"): series(ctx, scope, Metric::Reads, r)?,
        format!("{ops}Writes"): series(ctx, scope, Metric::Writes, r)?,
    });
    if db.is_none() {
        m["databasesTotal"] = json!(h.databases);
        m["databases"] = series(ctx, scope, Metric::Databases, r)?;
    }
    Ok(m)
}

/// The reads or writes of the range, summed (what the console shows beside the series; a
/// count of operations has no running total to show instead).
fn total(ctx: &Ctx, scope: &Scope, metric: Metric, r: &Range) -> Result<i64, ApiError> {
    Ok(counted(ctx, scope, metric, r)?
        .into_iter()
        .map(|(_, v)| v)
        .sum())
}

async fn list_usage(
    State(s): State<AppState>,
    Extension(_f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_console(&s, &req, USAGE_SCOPES).await?;
    let r = range(&req)?;
    reply(StatusCode::OK, figures(&ctx, &Scope::Project, &r)?)
}

async fn database_usage(
    State(s): State<AppState>,
    Extension(_f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_console(&s, &req, USAGE_SCOPES).await?;
    let r = range(&req)?;
    let db = database(&ctx, &req.path("db"))?.id;
    reply(StatusCode::OK, figures(&ctx, &Scope::Database(db), &r)?)
}

async fn collection_usage(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_console(&s, &req, USAGE_SCOPES).await?;
    let r = range(&req)?;
    let c = collection(f, &ctx, &req)?;
    let rows = ctx.view.rows(&ctx.project, &c.database, &c.id)?;
    let docs = series(
        &ctx,
        &Scope::Collection(c.database.clone(), c.id.clone()),
        Metric::Documents,
        &r,
    )?;
    let body = match f {
        Flavor::Legacy => json!({ "range": r.name, "documentsTotal": rows, "documents": docs }),
        Flavor::Tables => json!({ "range": r.name, "rowsTotal": rows, "rows": docs }),
    };
    reply(StatusCode::OK, body)
}

async fn database_logs(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_console(&s, &req, &["databases.read"]).await?;
    let db = database(&ctx, &req.path("db"))?.id;
    logs(&ctx, f, &req, audit::resource(&db, None, None))
}

async fn collection_logs(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_console(&s, &req, USAGE_SCOPES).await?;
    let c = collection(f, &ctx, &req)?;
    logs(
        &ctx,
        f,
        &req,
        audit::resource(&c.database, Some(&c.id), None),
    )
}

async fn document_logs(
    State(s): State<AppState>,
    Extension(f): Extension<Flavor>,
    req: Req,
) -> Reply {
    let ctx = enter_console(&s, &req, &["documents.read", "rows.read"]).await?;
    let c = collection(f, &ctx, &req)?;
    let id = req.path("doc");
    if ctx.view.document(&ctx.project, &c, &id)?.is_none() {
        return Err(f.error(Error::new(
            ErrorCode::DocumentNotFound,
            msg!(
                "Document with the requested ID '{}' could not be found.",
                id
            ),
        )));
    }
    logs(
        &ctx,
        f,
        &req,
        audit::resource(&c.database, Some(&c.id), Some(&id)),
    )
}

/// A resource's entries, newest first, paged by `limit` and `offset` (the only queries
/// Appwrite takes here), with their total.
fn logs(ctx: &Ctx, f: Flavor, req: &Req, resource: String) -> Reply {
    let asked = Spec::parse(&req.queries()?).map_err(ApiError)?;
    if !asked.filters.is_empty()
        || !asked.orders.is_empty()
        || asked.cursor.is_some()
        || asked.random.is_some()
        || asked.select.is_some()
    {
        return Err(ApiError(Error::new(
            ErrorCode::GeneralQueryInvalid,
            "Invalid `queries` param: Only limit and offset queries are allowed",
        )));
    }
    let spec = Spec {
        filters: vec![Filter::equal("resource", &resource)],
        orders: vec![("$sequence".to_string(), Order::Desc)],
        limit: Some(asked.limit.unwrap_or(25)),
        offset: asked.offset,
        ..Spec::default()
    };
    let page = ctx
        .view
        .find(&ctx.project, audit::collection(), &spec, true)?;
    let logs: Vec<Json> = page
        .documents
        .iter()
        .map(|d| entry_json(ctx, f, &Entry::from_document(d)))
        .collect::<Result<_, ApiError>>()?;
    reply(StatusCode::OK, json!({ "total": page.total, "logs": logs }))
}

fn entry_json(ctx: &Ctx, f: Flavor, e: &Entry) -> Result<Json, ApiError> {
    let (email, name) = match e.user_type.as_str() {
        "user" => crate::auth::load_user(&*ctx.view, &ctx.project, &e.user_id)?
            .map(|u| (u.email, u.name))
            .unwrap_or_default(),
        "keys" => (
            format!("app.{}@service.localhost", ctx.project),
            String::new(),
        ),
        _ => Default::default(),
    };
    let event = match f {
        Flavor::Legacy => e.event.clone(),
        Flavor::Tables => audit::tablesdb_event(&e.event),
    };
    Ok(json!({
        "event": event,
        "userId": e.user_id,
        "userEmail": email,
        "userName": name,
        "mode": e.mode,
        "userType": e.user_type,
        "ip": e.ip,
        "time": model::time::format_ms(e.created_at),
        "osCode": "", "osName": "", "osVersion": "",
        "clientType": "", "clientCode": "", "clientName": "", "clientVersion": "",
        "clientEngine": "", "clientEngineVersion": "",
        "deviceName": "", "deviceBrand": "", "deviceModel": "",
        "countryCode": "--", "countryName": "Unknown",
    }))
}

/// Reads served by this node and not yet reported, by project, database and hour.
#[derive(Default)]
pub struct Reads(Mutex<HashMap<(String, String, i64), u64>>);

impl Reads {
    /// Counts one read of a database's documents. Past `MAX_READ_COUNTS` distinct keys
    /// waiting, a new key is dropped rather than growing the table (a flush empties it).
    pub(crate) fn count(&self, project: &str, database: &str) {
        let hour = Period::Hour.bucket(now_ms());
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let k = (project.to_string(), database.to_string(), hour);
        if let Some(n) = m.get_mut(&k) {
            *n += 1;
        } else if m.len() < MAX_READ_COUNTS {
            m.insert(k, 1);
        }
    }

    /// Proposes what was counted, one entry per project; what could not be committed is
    /// counted again for the next flush.
    async fn flush(&self, backend: &Arc<dyn Backend>) {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let mut by_project: HashMap<String, Vec<ReadCount>> = HashMap::new();
        for ((project, database, hour), reads) in taken {
            by_project.entry(project).or_default().push(ReadCount {
                database,
                hour,
                reads,
            });
        }
        for (project, counts) in by_project {
            let env = Envelope::new(
                project.clone(),
                crate::params::new_request_id(),
                Actor::Operator,
                Op::Usage(UsageOp::Reads {
                    counts: counts.clone(),
                }),
            );
            // A refusal is final; a write that did not get through is counted again.
            if let Err(e) = backend.write(env).await {
                {
                    tracing::debug!(error = ?e, "read counts not committed; kept for the next flush");
                    let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
                    for c in counts {
                        let k = (project.clone(), c.database, c.hour);
                        if let Some(n) = m.get_mut(&k) {
                            *n += c.reads;
                        } else if m.len() < MAX_READ_COUNTS {
                            m.insert(k, c.reads);
                        }
                    }
                }
            }
        }
    }

    /// Flushes every `READS_FLUSH_SECS` while the node lives.
    /// The task holds neither: it ends once the router (and its state) is gone.
    pub(crate) fn start(reads: &Arc<Reads>, backend: &Arc<dyn Backend>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (reads, backend) = (Arc::downgrade(reads), Arc::downgrade(backend));
        rt.spawn(async move {
            let period = std::time::Duration::from_secs(model::usage::READS_FLUSH_SECS);
            loop {
                tokio::time::sleep(period).await;
                let (Some(reads), Some(backend)) = (reads.upgrade(), backend.upgrade()) else {
                    return;
                };
                reads.flush(&backend).await;
            }
        });
    }
}
