//! Appwrite's response models, rendered from stored entities.

use crate::common::Flavor;
use model::schema::{AttrKind, Attribute, Collection, Database, Document, Index};
use model::time::format_ms;
use model::{Transaction, Value};
use serde_json::{json, Map, Value as Json};

pub fn database(d: &Database) -> Json {
    json!({
        "$id": d.id,
        "name": d.name,
        "$createdAt": format_ms(d.created_at),
        "$updatedAt": format_ms(d.updated_at),
        "enabled": d.enabled,
        "type": d.kind,
        "status": "ready",
    })
}

pub fn attribute(a: &Attribute) -> Json {
    let mut m = Map::new();
    m.insert("key".into(), json!(a.key));
    m.insert("type".into(), json!(a.kind.wire_type()));
    m.insert("status".into(), json!("available"));
    m.insert("error".into(), json!(""));
    m.insert("required".into(), json!(a.required));
    m.insert("array".into(), json!(a.array));
    m.insert("$createdAt".into(), json!(format_ms(a.created_at)));
    m.insert("$updatedAt".into(), json!(format_ms(a.updated_at)));
    if let Some(f) = a.kind.format() {
        m.insert("format".into(), json!(f));
    }
    match a.kind {
        AttrKind::String | AttrKind::Varchar => {
            m.insert("size".into(), json!(a.size.unwrap_or(0)));
            m.insert("encrypt".into(), json!(a.encrypt));
        }
        AttrKind::Text | AttrKind::Mediumtext | AttrKind::Longtext => {
            m.insert("encrypt".into(), json!(a.encrypt));
        }
        AttrKind::Integer | AttrKind::Bigint => {
            m.insert(
                "min".into(),
                a.min
                    .as_ref()
                    .map(Value::to_json)
                    .unwrap_or(json!(i64::MIN)),
            );
            m.insert(
                "max".into(),
                a.max
                    .as_ref()
                    .map(Value::to_json)
                    .unwrap_or(json!(i64::MAX)),
            );
        }
        AttrKind::Float => {
            m.insert(
                "min".into(),
                a.min
                    .as_ref()
                    .map(Value::to_json)
                    .unwrap_or(json!(-f64::MAX)),
            );
            m.insert(
                "max".into(),
                a.max
                    .as_ref()
                    .map(Value::to_json)
                    .unwrap_or(json!(f64::MAX)),
            );
        }
        AttrKind::Enum => {
            m.insert("elements".into(), json!(a.elements));
        }
        _ => {}
    }
    m.insert(
        "default".into(),
        a.default.as_ref().map(Value::to_json).unwrap_or(Json::Null),
    );
    Json::Object(m)
}

pub fn index(i: &Index, f: Flavor) -> Json {
    let mut m = Map::new();
    m.insert("$id".into(), json!(i.key));
    m.insert("$createdAt".into(), json!(format_ms(i.created_at)));
    m.insert("$updatedAt".into(), json!(format_ms(i.updated_at)));
    m.insert("key".into(), json!(i.key));
    m.insert("type".into(), json!(i.kind.as_str()));
    m.insert("status".into(), json!(i.status.as_str()));
    let error = match &i.status {
        model::schema::IndexStatus::Failed { error } => error.as_str(),
        _ => "",
    };
    m.insert("error".into(), json!(error));
    m.insert(f.index_attrs_key().into(), json!(i.attributes));
    m.insert("lengths".into(), json!(i.lengths));
    m.insert(
        "orders".into(),
        json!(i.orders.iter().map(|o| o.as_str()).collect::<Vec<_>>()),
    );
    Json::Object(m)
}

pub fn collection(c: &Collection, f: Flavor) -> Json {
    let mut m = Map::new();
    m.insert("$id".into(), json!(c.id));
    m.insert("$createdAt".into(), json!(format_ms(c.created_at)));
    m.insert("$updatedAt".into(), json!(format_ms(c.updated_at)));
    m.insert("$permissions".into(), json!(c.permissions));
    m.insert("databaseId".into(), json!(c.database));
    m.insert("name".into(), json!(c.name));
    m.insert("enabled".into(), json!(c.enabled));
    m.insert(f.security_key().into(), json!(c.document_security));
    m.insert(
        f.attrs_key().into(),
        Json::Array(c.visible_attributes().map(|a| column(c, a, f)).collect()),
    );
    m.insert(
        "indexes".into(),
        Json::Array(c.indexes.iter().map(|i| index(i, f)).collect()),
    );
    m.insert("bytesMax".into(), json!(model::schema::BYTES_MAX));
    m.insert("bytesUsed".into(), json!(c.bytes_used()));
    Json::Object(m)
}

/// A document/row: system fields, then every (or every selected) attribute at the top level.
pub fn document(d: &Document, c: &Collection, f: Flavor, select: Option<&[String]>) -> Json {
    let mut m = Map::new();
    m.insert("$id".into(), json!(d.id));
    m.insert("$sequence".into(), json!(d.sequence.to_string()));
    m.insert(f.parent_id_key().into(), json!(c.id));
    m.insert("$databaseId".into(), json!(c.database));
    m.insert("$createdAt".into(), json!(format_ms(d.created_at)));
    m.insert("$updatedAt".into(), json!(format_ms(d.updated_at)));
    m.insert("$permissions".into(), json!(d.permissions));
    let wanted = |k: &str| select.is_none_or(|s| s.iter().any(|x| x == "*" || x == k));
    // A relationship end shows the related id where the row keeps it, and nothing else
    // unless loaded (`select("key.*")`); a one-way relationship's twin never shows.
    let shown = |k: &str| c.relation(k).is_none_or(|r| r.shows_id());
    for a in &c.attributes {
        if wanted(&a.key) && shown(&a.key) {
            let v = d.data.get(&a.key).map(Value::to_json).unwrap_or(Json::Null);
            m.insert(a.key.clone(), v);
        }
    }
    // A write's answer is rendered with the schema of the node that took it, which may lag
    // the one the write was applied with by a moment: the document's own fields count too.
    for (k, v) in &d.data {
        if wanted(k) && shown(k) && !m.contains_key(k) {
            m.insert(k.clone(), v.to_json());
        }
    }
    Json::Object(m)
}

/// A relationship attribute (`attributeRelationship`/`columnRelationship`).
pub fn relationship(a: &Attribute, r: &model::schema::Relationship, f: Flavor) -> Json {
    let mut m = match attribute(a) {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    m.insert(f.related_key().into(), json!(r.related));
    m.insert("relationType".into(), json!(r.kind.as_str()));
    m.insert("twoWay".into(), json!(r.two_way));
    m.insert("twoWayKey".into(), json!(r.two_way_key));
    m.insert("onDelete".into(), json!(r.on_delete.as_str()));
    m.insert(
        "side".into(),
        json!(match r.side {
            model::schema::Side::Parent => "parent",
            model::schema::Side::Child => "child",
        }),
    );
    Json::Object(m)
}

/// Attribute `a` of `c`, as the model of its type.
pub fn column(c: &Collection, a: &Attribute, f: Flavor) -> Json {
    match c.relation(&a.key) {
        Some(r) => relationship(a, r, f),
        None => attribute(a),
    }
}

pub fn transaction(t: &Transaction) -> Json {
    json!({
        "$id": t.id,
        "$createdAt": format_ms(t.created_at),
        "$updatedAt": format_ms(t.updated_at),
        "status": t.status.as_str(),
        "operations": t.operations.len(),
        "expiresAt": format_ms(t.expires_at),
    })
}
