//! Schema checks made inside apply: attribute definitions and document values.
//! Deterministic — they depend only on the command and the stored schema.

use model::command::Data;
use model::msg;
use model::schema::{AttrKind, Attribute, Collection};
use model::{Error, ErrorCode, Value};

pub const MAX_STRING_SIZE: u64 = 1_073_741_824;

fn type_error(attr: &Attribute, what: &str) -> Error {
    Error::structure(msg!(
        "Attribute \"{}\" has invalid type. {}",
        attr.key,
        what
    ))
}

fn describe(attr: &Attribute) -> String {
    match attr.kind {
        AttrKind::Integer | AttrKind::Bigint => {
            let min = attr
                .min
                .as_ref()
                .and_then(Value::as_f64)
                .map(|v| v as i64)
                .unwrap_or(i64::MIN);
            let max = attr
                .max
                .as_ref()
                .and_then(Value::as_f64)
                .map(|v| v as i64)
                .unwrap_or(i64::MAX);
            format!("Value must be a valid integer between {min} and {max}")
        }
        AttrKind::Float => {
            let min = attr
                .min
                .as_ref()
                .and_then(Value::as_f64)
                .unwrap_or(-f64::MAX);
            let max = attr
                .max
                .as_ref()
                .and_then(Value::as_f64)
                .unwrap_or(f64::MAX);
            format!("Value must be a valid float between {min} and {max}")
        }
        AttrKind::Boolean => "Value must be a valid boolean".into(),
        AttrKind::Datetime => {
            "Value must be valid date between 0000-01-01 00:00:00 and 9999-12-31 23:59:59.".into()
        }
        AttrKind::Email => "Value must be a valid email address".into(),
        AttrKind::Url => "Value must be a valid URL".into(),
        AttrKind::Ip => "Value must be a valid IP address".into(),
        AttrKind::Enum => format!("Value must be one of ({})", attr.elements.join(", ")),
        AttrKind::Point | AttrKind::Line | AttrKind::Polygon => {
            format!("Value must be a valid {}", attr.kind.wire_type())
        }
        _ => format!(
            "Value must be a valid string and no longer than {} chars",
            attr.max_len().unwrap_or(MAX_STRING_SIZE)
        ),
    }
}

pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
}

pub fn is_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// Checks one scalar against the attribute; returns it normalised.
fn scalar(attr: &Attribute, v: &Value) -> Result<Value, Error> {
    let bad = || type_error(attr, &describe(attr));
    match attr.kind {
        AttrKind::Integer | AttrKind::Bigint => {
            let i = match v {
                Value::Int(i) => *i,
                Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.007e15 => *f as i64,
                _ => return Err(bad()),
            };
            let min = attr.min.as_ref().and_then(Value::as_f64);
            let max = attr.max.as_ref().and_then(Value::as_f64);
            if min.is_some_and(|m| (i as f64) < m) || max.is_some_and(|m| (i as f64) > m) {
                return Err(bad());
            }
            Ok(Value::Int(i))
        }
        AttrKind::Float => {
            let f = v.as_f64().ok_or_else(bad)?;
            if !f.is_finite() {
                return Err(bad());
            }
            let min = attr.min.as_ref().and_then(Value::as_f64);
            let max = attr.max.as_ref().and_then(Value::as_f64);
            if min.is_some_and(|m| f < m) || max.is_some_and(|m| f > m) {
                return Err(bad());
            }
            Ok(Value::Float(f))
        }
        AttrKind::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            _ => Err(bad()),
        },
        AttrKind::Datetime => {
            let s = v.as_str().ok_or_else(bad)?;
            model::time::normalize(s).map(Value::Str).ok_or_else(bad)
        }
        kind => {
            let s = v.as_str().ok_or_else(bad)?;
            if let Some(max) = attr.max_len() {
                if s.chars().count() as u64 > max {
                    return Err(bad());
                }
            }
            let ok = match kind {
                AttrKind::Email => is_email(s),
                AttrKind::Url => is_url(s),
                AttrKind::Ip => s.parse::<std::net::IpAddr>().is_ok(),
                AttrKind::Enum => attr.elements.iter().any(|e| e == s),
                _ => true,
            };
            if ok {
                Ok(v.clone())
            } else {
                Err(bad())
            }
        }
    }
}

/// Checks a (possibly array) value for the attribute. Null is allowed here; `required` is
/// checked by the callers.
pub fn value(attr: &Attribute, v: &Value) -> Result<Value, Error> {
    if attr.kind == AttrKind::Relationship {
        // Checked against the relationship before this (`apply::relations::take_links`):
        // the related id, or a manyToMany parent's list of them.
        return match v {
            Value::Null | Value::Str(_) => Ok(v.clone()),
            Value::Array(items) if items.iter().all(|i| matches!(i, Value::Str(_))) => {
                Ok(v.clone())
            }
            _ => Err(type_error(attr, "Value must be a related document ID")),
        };
    }
    if let (Some(shape), false) = (attr.kind.shape(), v.is_null()) {
        // A geometry is an array of coordinates, never an array of values.
        return model::spatial::check(shape, v).map_err(|m| type_error(attr, &m));
    }
    match (attr.array, v) {
        (_, Value::Null) => Ok(Value::Null),
        (true, Value::Array(items)) => Ok(Value::Array(
            items
                .iter()
                .map(|i| match i {
                    Value::Null | Value::Array(_) => Err(type_error(attr, &describe(attr))),
                    _ => scalar(attr, i),
                })
                .collect::<Result<_, _>>()?,
        )),
        (true, _) => Err(type_error(attr, "Value must be an array")),
        (false, Value::Array(_)) => Err(type_error(attr, &describe(attr))),
        (false, _) => scalar(attr, v),
    }
}

/// Validates client data for a new document: unknown attributes are refused, values are
/// checked and normalised, defaults fill the gaps, required attributes must be present.
pub fn new_document(coll: &Collection, data: &Data) -> Result<Data, Error> {
    let mut out = Data::new();
    for (k, v) in data {
        let attr = coll
            .attribute(k)
            .ok_or_else(|| Error::structure(msg!("Unknown attribute: \"{}\"", k)))?;
        out.insert(k.clone(), value(attr, v)?);
    }
    for attr in &coll.attributes {
        let present = out.get(&attr.key).is_some_and(|v| !v.is_null());
        if !present {
            if attr.required {
                return Err(Error::structure(msg!(
                    "Missing required attribute \"{}\"",
                    attr.key
                )));
            }
            let default = attr.default.clone().unwrap_or(Value::Null);
            out.insert(attr.key.clone(), default);
        }
    }
    Ok(out)
}

/// Merges a partial update into existing data, with the same checks.
pub fn update_document(coll: &Collection, existing: &Data, patch: &Data) -> Result<Data, Error> {
    let mut out = existing.clone();
    for (k, v) in patch {
        let attr = coll
            .attribute(k)
            .ok_or_else(|| Error::structure(msg!("Unknown attribute: \"{}\"", k)))?;
        let v = value(attr, v)?;
        if attr.required && v.is_null() {
            return Err(Error::structure(msg!(
                "Missing required attribute \"{}\"",
                k
            )));
        }
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// `attr` with a spatial default as a value is stored (a bare polygon ring wrapped as its one
/// ring); other defaults are kept as given. The default must already have passed `attribute`.
pub fn settled_default(mut attr: Attribute) -> Result<Attribute, Error> {
    if attr.kind.shape().is_some() {
        if let Some(d) = attr.default.take() {
            attr.default = match d.is_null() {
                true => Some(d),
                false => Some(value(&attr, &d)?),
            };
        }
    }
    Ok(attr)
}

/// Validates an attribute definition (type limits, default, enum elements).
pub fn attribute(attr: &Attribute) -> Result<(), Error> {
    let invalid = |m: model::error::Message| Error::new(ErrorCode::AttributeValueInvalid, m);
    if attr.default.as_ref().is_some_and(|d| !d.is_null()) && (attr.required || attr.array) {
        return Err(Error::new(
            ErrorCode::AttributeDefaultUnsupported,
            "Cannot set default value for array or required attributes.",
        ));
    }
    if attr.kind.shape().is_some() && attr.array {
        return Err(invalid("Spatial attributes cannot be arrays".into()));
    }
    match attr.kind {
        AttrKind::String | AttrKind::Varchar => match attr.size {
            Some(s) if (1..=MAX_STRING_SIZE).contains(&s) => {}
            _ => {
                return Err(Error::invalid(msg!(
                    "Invalid `size` param: Value must be a valid range between 1 and {}",
                    MAX_STRING_SIZE
                )))
            }
        },
        AttrKind::Integer | AttrKind::Bigint | AttrKind::Float => {
            if let (Some(min), Some(max)) = (
                attr.min.as_ref().and_then(Value::as_f64),
                attr.max.as_ref().and_then(Value::as_f64),
            ) {
                if min > max {
                    return Err(invalid(
                        "Minimum value must be lesser than maximum value".into(),
                    ));
                }
            }
        }
        AttrKind::Enum => {
            if attr.elements.is_empty() || attr.elements.len() > 100 {
                return Err(Error::invalid(
                    "Invalid `elements` param: Value must a valid array no longer than 100 items and Value must be a valid string and at least 1 chars and no longer than 255 chars",
                ));
            }
            if attr.elements.iter().any(|e| e.is_empty() || e.len() > 255) {
                return Err(Error::invalid(
                    "Invalid `elements` param: Value must be a valid string and at least 1 chars and no longer than 255 chars",
                ));
            }
        }
        _ => {}
    }
    if let Some(d) = attr.default.as_ref().filter(|d| !d.is_null()) {
        value(attr, d).map_err(|_| {
            invalid(msg!(
                "Invalid default value for attribute \"{}\": {}",
                attr.key,
                describe(attr)
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: AttrKind) -> Attribute {
        Attribute {
            size: (kind == AttrKind::String).then_some(5),
            elements: vec!["x".into(), "y".into()],
            ..Attribute::new("a", kind, 0)
        }
    }

    fn check(a: &Attribute, v: Value, ok: bool) {
        assert_eq!(value(a, &v).is_ok(), ok, "{:?} {v:?}", a.kind);
    }

    #[test]
    fn values() {
        use AttrKind::*;
        check(&attr(String), Value::Str("abcde".into()), true);
        check(&attr(String), Value::Str("abcdef".into()), false);
        check(&attr(String), Value::Str("ééééé".into()), true);
        check(&attr(String), Value::Int(1), false);
        let mut int = attr(Integer);
        int.min = Some(Value::Int(0));
        int.max = Some(Value::Int(10));
        check(&int, Value::Int(10), true);
        check(&int, Value::Int(11), false);
        check(&int, Value::Float(2.0), true);
        check(&int, Value::Float(2.5), false);
        check(&int, Value::Str("1".into()), false);
        check(&attr(Float), Value::Int(3), true);
        check(&attr(Boolean), Value::Bool(true), true);
        check(&attr(Boolean), Value::Int(1), false);
        check(&attr(Datetime), Value::Str("2026-01-01".into()), true);
        check(&attr(Datetime), Value::Str("yesterday".into()), false);
        check(&attr(Email), Value::Str("a@b.co".into()), true);
        check(&attr(Email), Value::Str("a@b".into()), false);
        check(&attr(Url), Value::Str("https://x.io/p".into()), true);
        check(&attr(Url), Value::Str("ftp//x".into()), false);
        check(&attr(Ip), Value::Str("10.0.0.1".into()), true);
        check(&attr(Ip), Value::Str("::1".into()), true);
        check(&attr(Ip), Value::Str("10.0.0.256".into()), false);
        check(&attr(Enum), Value::Str("x".into()), true);
        check(&attr(Enum), Value::Str("z".into()), false);
        let mut arr = attr(Integer);
        arr.array = true;
        check(&arr, Value::Array(vec![Value::Int(1), Value::Int(2)]), true);
        check(&arr, Value::Int(1), false);
        check(&arr, Value::Array(vec![Value::Null]), false);
        check(&attr(Integer), Value::Null, true);
    }

    #[test]
    fn documents() {
        let mut req = attr(AttrKind::String);
        req.key = "name".into();
        req.required = true;
        let mut opt = attr(AttrKind::Integer);
        opt.key = "n".into();
        opt.default = Some(Value::Int(3));
        let coll = Collection {
            id: "c".into(),
            database: "d".into(),
            name: "c".into(),
            enabled: true,
            permissions: vec![],
            document_security: false,
            attributes: vec![req, opt],
            indexes: vec![],
            reshapes: vec![],
            relations: Default::default(),
            created_at: 0,
            updated_at: 0,
        };
        let data: Data = [("name".to_string(), Value::Str("ok".into()))]
            .into_iter()
            .collect();
        let out = new_document(&coll, &data).unwrap();
        assert_eq!(out.get("n"), Some(&Value::Int(3)));
        assert!(new_document(&coll, &Data::new()).is_err());
        let unknown: Data = [("zzz".to_string(), Value::Int(1))].into_iter().collect();
        assert!(new_document(&coll, &unknown).is_err());
        let null_req: Data = [("name".to_string(), Value::Null)].into_iter().collect();
        assert!(update_document(&coll, &out, &null_req).is_err());
    }

    #[test]
    fn definitions() {
        let mut a = attr(AttrKind::Integer);
        a.required = true;
        a.default = Some(Value::Int(1));
        assert_eq!(
            attribute(&a).unwrap_err().code,
            ErrorCode::AttributeDefaultUnsupported
        );
        let mut b = attr(AttrKind::Integer);
        b.min = Some(Value::Int(5));
        b.max = Some(Value::Int(1));
        assert!(attribute(&b).is_err());
        let mut c = attr(AttrKind::Enum);
        c.default = Some(Value::Str("nope".into()));
        assert!(attribute(&c).is_err());
        let mut s = attr(AttrKind::String);
        s.size = Some(0);
        assert!(attribute(&s).is_err());
    }
}
