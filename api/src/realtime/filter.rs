//! The queries a realtime subscription may carry, as Appwrite allows them: comparisons on the
//! payload's top-level fields (`equal`, `notEqual`, `lessThan[Equal]`, `greaterThan[Equal]`,
//! `isNull`, `isNotNull`), combined with `and`/`or`, and `select(["*"])` (everything). A
//! subscription's queries must all match; a field the payload lacks matches nothing.

use serde_json::Value as Json;
use std::cmp::Ordering;

const ALLOWED: &str = "equal, notEqual, lessThan, lessThanEqual, greaterThan, greaterThanEqual, isNull, isNotNull, and, or, select";

/// How deep `and`/`or` may nest.
const MAX_DEPTH: usize = 3;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Filter {
    /// `select(["*"])`: every event.
    All,
    Equal(String, Vec<Json>),
    NotEqual(String, Vec<Json>),
    Compare(String, Ordering, bool, Json),
    IsNull(String, bool),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

fn unsupported(method: &str) -> String {
    format!("Query method '{method}' is not supported in Realtime queries. Allowed: {ALLOWED}")
}

/// Parses one query (its JSON text, as the SDKs send it).
pub(crate) fn parse(text: &str) -> Result<Filter, String> {
    let v: Json = serde_json::from_str(text).map_err(|_| format!("Invalid query: {text}"))?;
    parse_value(&v, 0)
}

fn parse_value(v: &Json, depth: usize) -> Result<Filter, String> {
    let method = v
        .get("method")
        .and_then(Json::as_str)
        .ok_or_else(|| "Invalid query: the query has no method.".to_string())?;
    let attribute = || -> Result<String, String> {
        v.get("attribute")
            .and_then(Json::as_str)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("Invalid query: {method} needs an attribute."))
    };
    let values: Vec<Json> = match v.get("values") {
        Some(Json::Array(a)) => a.clone(),
        None | Some(Json::Null) => Vec::new(),
        Some(other) => vec![other.clone()],
    };
    let one = |values: &[Json]| -> Result<Json, String> {
        match values {
            [v] => Ok(v.clone()),
            _ => Err(format!("Invalid query: {method} takes exactly one value.")),
        }
    };
    Ok(match method {
        "equal" => Filter::Equal(attribute()?, values),
        "notEqual" => Filter::NotEqual(attribute()?, values),
        "lessThan" => Filter::Compare(attribute()?, Ordering::Less, false, one(&values)?),
        "lessThanEqual" => Filter::Compare(attribute()?, Ordering::Less, true, one(&values)?),
        "greaterThan" => Filter::Compare(attribute()?, Ordering::Greater, false, one(&values)?),
        "greaterThanEqual" => Filter::Compare(attribute()?, Ordering::Greater, true, one(&values)?),
        "isNull" => Filter::IsNull(attribute()?, true),
        "isNotNull" => Filter::IsNull(attribute()?, false),
        "and" | "or" => {
            if depth >= MAX_DEPTH {
                return Err(format!(
                    "Invalid query: and/or nest at most {MAX_DEPTH} deep."
                ));
            }
            let inner = values
                .iter()
                .map(|q| match q {
                    Json::String(s) => serde_json::from_str::<Json>(s)
                        .map_err(|_| format!("Invalid query: {s}"))
                        .and_then(|q| parse_value(&q, depth + 1)),
                    q => parse_value(q, depth + 1),
                })
                .collect::<Result<Vec<_>, _>>()?;
            match method {
                "and" => Filter::And(inner),
                _ => Filter::Or(inner),
            }
        }
        "select" => {
            if values.len() == 1 && values[0] == "*" {
                Filter::All
            } else {
                return Err(
                    "Invalid query: only select([\"*\"]) is supported in Realtime queries."
                        .to_string(),
                );
            }
        }
        other => return Err(format!("Invalid query: {}", unsupported(other))),
    })
}

fn compare(a: &Json, b: &Json) -> Option<Ordering> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Json::String(x), Json::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Strict equality, as Appwrite compares (`===`): `1` and `1.0` are different numbers, as
/// are `1` and `"1"`.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.is_f64() == y.is_f64() && x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

impl Filter {
    pub(crate) fn matches(&self, payload: &Json) -> bool {
        let field = |a: &str| payload.as_object().and_then(|o| o.get(a));
        match self {
            Filter::All => true,
            Filter::Equal(a, values) => field(a).is_some_and(|v| values.iter().any(|x| same(v, x))),
            Filter::NotEqual(a, values) => {
                field(a).is_some_and(|v| !values.iter().any(|x| same(v, x)))
            }
            Filter::Compare(a, want, or_equal, x) => field(a)
                .and_then(|v| compare(v, x))
                .is_some_and(|o| o == *want || (*or_equal && o == Ordering::Equal)),
            Filter::IsNull(a, null) => field(a).is_some_and(|v| v.is_null() == *null),
            Filter::And(all) => all.iter().all(|f| f.matches(payload)),
            Filter::Or(any) => any.iter().any(|f| f.matches(payload)),
        }
    }
}

/// Does a subscription with these filters take this payload? (None: everything.)
pub(crate) fn matches_all(filters: &[Filter], payload: &Json) -> bool {
    filters.contains(&Filter::All) || filters.iter().all(|f| f.matches(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(text: &str) -> Filter {
        parse(text).unwrap()
    }

    #[test]
    fn comparisons_on_top_level_fields() {
        let p = json!({"name": "ann", "age": 30, "score": 1.5, "gone": null});
        assert!(q(r#"{"method":"equal","attribute":"name","values":["bob","ann"]}"#).matches(&p));
        assert!(!q(r#"{"method":"equal","attribute":"age","values":["30"]}"#).matches(&p));
        assert!(!q(r#"{"method":"equal","attribute":"age","values":[30.0]}"#).matches(&p));
        assert!(q(r#"{"method":"notEqual","attribute":"name","values":["bob"]}"#).matches(&p));
        assert!(!q(r#"{"method":"notEqual","attribute":"missing","values":["bob"]}"#).matches(&p));
        assert!(q(r#"{"method":"greaterThan","attribute":"age","values":[29]}"#).matches(&p));
        assert!(!q(r#"{"method":"greaterThan","attribute":"age","values":[30]}"#).matches(&p));
        assert!(q(r#"{"method":"greaterThanEqual","attribute":"age","values":[30]}"#).matches(&p));
        assert!(q(r#"{"method":"lessThan","attribute":"score","values":[2]}"#).matches(&p));
        assert!(q(r#"{"method":"lessThanEqual","attribute":"name","values":["ann"]}"#).matches(&p));
        assert!(!q(r#"{"method":"lessThan","attribute":"name","values":[5]}"#).matches(&p));
        assert!(q(r#"{"method":"isNull","attribute":"gone"}"#).matches(&p));
        assert!(!q(r#"{"method":"isNull","attribute":"missing"}"#).matches(&p));
        assert!(q(r#"{"method":"isNotNull","attribute":"age"}"#).matches(&p));
    }

    #[test]
    fn and_or_nest_as_objects_or_strings() {
        let p = json!({"a": 1, "b": 2});
        let f = q(
            r#"{"method":"or","values":[{"method":"equal","attribute":"a","values":[5]},{"method":"and","values":["{\"method\":\"equal\",\"attribute\":\"a\",\"values\":[1]}",{"method":"equal","attribute":"b","values":[2]}]}]}"#,
        );
        assert!(f.matches(&p));
        assert!(!f.matches(&json!({"a": 1, "b": 3})));
    }

    #[test]
    fn unsupported_methods_and_selects_are_refused() {
        let e = parse(r#"{"method":"contains","attribute":"a","values":[1]}"#).unwrap_err();
        assert_eq!(e, "Invalid query: Query method 'contains' is not supported in Realtime queries. Allowed: equal, notEqual, lessThan, lessThanEqual, greaterThan, greaterThanEqual, isNull, isNotNull, and, or, select");
        let nested = parse(
            r#"{"method":"and","values":[{"method":"search","attribute":"a","values":["x"]}]}"#,
        )
        .unwrap_err();
        assert!(nested.contains("'search' is not supported"));
        assert!(parse(r#"{"method":"select","values":["a"]}"#).is_err());
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"method":"equal","values":[1]}"#).is_err());
        assert_eq!(q(r#"{"method":"select","values":["*"]}"#), Filter::All);
        let deep = r#"{"method":"and","values":[{"method":"and","values":[{"method":"and","values":[{"method":"and","values":[]}]}]}]}"#;
        assert!(parse(deep).is_err());
    }

    #[test]
    fn select_all_takes_everything_else_all_must_match() {
        let p = json!({"a": 1});
        let no = q(r#"{"method":"equal","attribute":"a","values":[2]}"#);
        let yes = q(r#"{"method":"equal","attribute":"a","values":[1]}"#);
        assert!(matches_all(&[], &p));
        assert!(matches_all(std::slice::from_ref(&yes), &p));
        assert!(!matches_all(&[yes, no.clone()], &p));
        assert!(matches_all(&[no, Filter::All], &p));
    }
}
