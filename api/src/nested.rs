//! Nested writes of related rows (Appwrite's `createDocumentRelationships` and
//! `updateDocumentRelationships`): a relationship value may hold a row (an object) instead of
//! a row's id. Each such row becomes a write of its own in the same all-or-nothing command,
//! ahead of the row that names it: a create when it does not exist yet (its permissions, when
//! it names none, those of the row it is nested in), an update of the fields it sends when it
//! exists and they differ, nothing when they do not. Its place in the value takes its id, and
//! the outer row's write makes the link as for an id. Nested rows may nest rows in turn, three
//! levels with the outer row, as Appwrite allows; deeper values are left out, as there.
//!
//! Whether a nested row exists is read from this node's view; if that changes before the
//! command applies, the create or update fails and so does the whole write, leaving nothing.

use crate::auth::Ctx;
use crate::common::{fields, inline_permissions, Flavor};
use crate::error::ApiError;
use crate::params::new_id;
use model::command::{DocOp, DocTarget};
use model::schema::Collection;
use model::{id, msg, Error, ErrorCode};
use serde_json::{Map, Value as Json};

/// Levels of rows one write reaches, the outer row included (Appwrite's `RELATION_MAX_DEPTH`).
const MAX_DEPTH: usize = 3;

/// Replaces the rows nested in `data` (a write of a row of `c`) by their ids, and answers the
/// writes they need, innermost first. `inherited`: the permissions a created nested row gets
/// when it names none (the outer write's; `None` lets apply give the creator's defaults).
pub(crate) fn take(
    ctx: &Ctx,
    f: Flavor,
    c: &Collection,
    data: &mut Map<String, Json>,
    inherited: &Option<Vec<String>>,
) -> Result<Vec<DocTarget>, ApiError> {
    let mut out = Vec::new();
    walk(ctx, f, c, data, inherited, 1, &mut out)?;
    Ok(out)
}

fn walk(
    ctx: &Ctx,
    f: Flavor,
    c: &Collection,
    data: &mut Map<String, Json>,
    inherited: &Option<Vec<String>>,
    depth: usize,
    out: &mut Vec<DocTarget>,
) -> Result<(), ApiError> {
    for (key, rel) in &c.relations {
        if !rel.visible() {
            continue;
        }
        let Some(value) = data.get_mut(key) else {
            continue;
        };
        let nests = match &*value {
            Json::Object(_) => true,
            Json::Array(items) => items.iter().any(Json::is_object),
            _ => false,
        };
        if !nests {
            continue;
        }
        if depth >= MAX_DEPTH {
            data.remove(key);
            continue;
        }
        let related = ctx
            .view
            .collection(&ctx.project, &c.database, &rel.related)?
            .ok_or_else(|| {
                f.error(Error::new(
                    ErrorCode::CollectionNotFound,
                    "Collection with the requested ID could not be found.",
                ))
            })?;
        match value {
            Json::Object(row) => {
                let id = write(ctx, f, &related, row, inherited, depth, out)?;
                *value = Json::String(id);
            }
            Json::Array(items) => {
                for item in items.iter_mut() {
                    if let Json::Object(row) = item {
                        let id = write(ctx, f, &related, row, inherited, depth, out)?;
                        *item = Json::String(id);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The writes one nested row of `c` needs (its own nested rows' first); answers its id.
fn write(
    ctx: &Ctx,
    f: Flavor,
    c: &Collection,
    row: &mut Map<String, Json>,
    inherited: &Option<Vec<String>>,
    depth: usize,
    out: &mut Vec<DocTarget>,
) -> Result<String, ApiError> {
    let id = match row.get("$id") {
        None => new_id(),
        Some(Json::String(s)) if s == model::id::UNIQUE => new_id(),
        Some(Json::String(s)) => {
            id::check("$id", s)?;
            s.clone()
        }
        Some(_) => {
            return Err(f.error(Error::new(
                ErrorCode::DocumentInvalidStructure,
                msg!("Invalid document structure: Attribute \"$id\" has invalid type."),
            )))
        }
    };
    let permissions = inline_permissions(row)?;
    let own = permissions.clone().or_else(|| inherited.clone());
    walk(ctx, f, c, row, &own, depth + 1, out)?;
    let (data, _, _) = fields(f, row, false)?;
    // A row the caller may not read is, to them, not there (as Appwrite reads it under the
    // caller's permissions): creating it fails as a duplicate, and nothing is learnt of its
    // fields by whether an update would be needed.
    let readable = |d: &model::Document| match ctx.roles() {
        Some(roles) => c.grants(Some(d), "read", &roles),
        None => true,
    };
    let op = match ctx.view.document(&ctx.project, c, &id)?.filter(readable) {
        None => Some(DocOp::Create {
            id: id.clone(),
            data,
            permissions: own,
        }),
        Some(stored) => {
            let changed = data.iter().any(|(k, v)| stored.data.get(k) != Some(v))
                || permissions
                    .as_ref()
                    .is_some_and(|p| *p != stored.permissions);
            changed.then(|| DocOp::Update {
                id: id.clone(),
                data,
                permissions,
            })
        }
    };
    if let Some(op) = op {
        out.push(DocTarget {
            database: c.database.clone(),
            collection: c.id.clone(),
            op,
        });
    }
    Ok(id)
}
