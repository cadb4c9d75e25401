//! Request parameters as Appwrite's SDKs send them: JSON bodies (also on DELETE) and query
//! strings with `key[0]=…` / `key[]=…` arrays.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request};
use axum::http::HeaderMap;
use model::msg;
use model::{id, Error, ErrorCode, Value};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;

/// Everything a handler reads from a request.
pub struct Req {
    pub headers: HeaderMap,
    pub path: HashMap<String, String>,
    /// Query-string parameters merged with the JSON body (body wins).
    pub params: Map<String, Json>,
    pub method: axum::http::Method,
    /// The route's pattern, e.g. `/v1/account/sessions/{session}`.
    pub route: String,
    /// The address of the connection's peer.
    pub peer: Option<std::net::IpAddr>,
    /// The raw query string (the project is read from it, not from the merged parameters).
    pub query: Option<String>,
}

/// The peer address of a connection, put on each of its requests by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

fn bad(msg: impl Into<model::error::Message>) -> ApiError {
    ApiError(Error::invalid(msg))
}

/// Parses `a=1&b[0]=x&b[1]=y&c[]=z` into JSON values (arrays for bracketed keys).
pub fn parse_query(q: &str) -> Map<String, Json> {
    let mut out = Map::new();
    let mut arrays: Vec<(String, Option<usize>, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if let Some(open) = k.find('[') {
            if k.ends_with(']') {
                let name = k[..open].to_string();
                let idx = k[open + 1..k.len() - 1].parse::<usize>().ok();
                arrays.push((name, idx, v.into_owned()));
                continue;
            }
        }
        out.insert(k.into_owned(), Json::String(v.into_owned()));
    }
    let mut grouped: HashMap<String, Vec<(Option<usize>, usize, String)>> = HashMap::new();
    for (n, (name, idx, v)) in arrays.into_iter().enumerate() {
        grouped.entry(name).or_default().push((idx, n, v));
    }
    for (name, mut items) in grouped {
        items.sort_by_key(|(idx, n, _)| (idx.unwrap_or(usize::MAX), *n));
        out.insert(
            name,
            Json::Array(items.into_iter().map(|(_, _, v)| Json::String(v)).collect()),
        );
    }
    out
}

impl<S: Send + Sync> FromRequest<S> for Req {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let path: HashMap<String, String> = <Path<HashMap<String, String>> as axum::extract::FromRequestParts<S>>::from_request_parts(&mut parts, state)
            .await
            .map(|p| p.0)
            .unwrap_or_default();
        let mut params = parts.uri.query().map(parse_query).unwrap_or_default();
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string());
        let peer = parts.extensions.get::<Peer>().map(|p| p.0.ip());
        let query = parts.uri.query().map(str::to_string);
        let is_get =
            parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD;
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|_| bad("The request body could not be read."))?;
        let is_json = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if !is_get && !bytes.iter().all(|b| b.is_ascii_whitespace()) {
            if !is_json && !bytes.starts_with(b"{") {
                return Err(bad("Request body must be JSON."));
            }
            match serde_json::from_slice::<Json>(&bytes) {
                Ok(Json::Object(m)) => params.extend(m),
                Ok(_) => return Err(bad("Request body must be a JSON object.")),
                Err(e) => return Err(bad(msg!("Invalid JSON body: {}", e))),
            }
        }
        Ok(Req {
            method: parts.method,
            headers: parts.headers,
            path,
            params,
            route,
            peer,
            query,
        })
    }
}

impl Req {
    /// The client's address as this node sees it (forwarded-for headers are not trusted:
    /// any client can write them).
    pub fn ip(&self) -> String {
        self.peer.map(|p| p.to_string()).unwrap_or_default()
    }

    /// The host the request was sent to.
    pub fn host(&self) -> &str {
        self.headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn path(&self, name: &str) -> String {
        self.path.get(name).cloned().unwrap_or_default()
    }

    fn get(&self, name: &str) -> Option<&Json> {
        self.params.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn str_opt(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(msg!(
                "Invalid `{}` param: Value must be a valid string",
                name
            ))),
        }
    }

    pub fn str_req(&self, name: &str) -> Result<String, ApiError> {
        self.str_opt(name)?
            .ok_or_else(|| bad(msg!("Param \"{}\" is not optional.", name)))
    }

    /// A string of 1..=max chars.
    pub fn text_req(&self, name: &str, max: usize) -> Result<String, ApiError> {
        let s = self.str_req(name)?;
        if s.is_empty() || s.chars().count() > max {
            return Err(bad(msg!("Invalid `{}` param: Value must be a valid string and at least 1 chars and no longer than {} chars", name, max)));
        }
        Ok(s)
    }

    /// An id parameter; `unique()` asks for a generated one.
    pub fn id_req(&self, name: &str) -> Result<String, ApiError> {
        let s = self.str_req(name)?;
        if s == id::UNIQUE {
            return Ok(new_id());
        }
        id::check(name, &s)?;
        Ok(s)
    }

    pub fn bool_opt(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(Json::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
            Some(Json::String(s)) if s == "false" || s == "0" => Ok(Some(false)),
            Some(_) => Err(bad(msg!(
                "Invalid `{}` param: Value must be a valid boolean",
                name
            ))),
        }
    }

    pub fn bool_req(&self, name: &str) -> Result<bool, ApiError> {
        self.bool_opt(name)?
            .ok_or_else(|| bad(msg!("Param \"{}\" is not optional.", name)))
    }

    /// A number (JSON or query string), as a model value.
    pub fn number_opt(&self, name: &str) -> Result<Option<Value>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Number(n)) => Ok(Value::from_json(&Json::Number(n.clone()))),
            Some(Json::String(s)) => {
                if let Ok(i) = s.parse::<i64>() {
                    Ok(Some(Value::Int(i)))
                } else if let Ok(f) = s.parse::<f64>() {
                    Ok(Some(Value::Float(f)))
                } else {
                    Err(bad(msg!(
                        "Invalid `{}` param: Value must be a valid number",
                        name
                    )))
                }
            }
            Some(_) => Err(bad(msg!(
                "Invalid `{}` param: Value must be a valid number",
                name
            ))),
        }
    }

    /// A non-negative integer (integral floats accepted, as the SDKs may send `255.0`).
    pub fn uint_opt(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.number_opt(name)? {
            None => Ok(None),
            Some(Value::Int(i)) if i >= 0 => Ok(Some(i as u64)),
            Some(Value::Float(f)) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => {
                Ok(Some(f as u64))
            }
            Some(_) => Err(bad(msg!(
                "Invalid `{}` param: Value must be a valid non-negative integer",
                name
            ))),
        }
    }

    pub fn strings_opt(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Json::String(s) => Ok(s.clone()),
                    _ => Err(bad(msg!(
                        "Invalid `{}` param: Value must be an array of strings",
                        name
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Json::String(s)) => Ok(Some(vec![s.clone()])),
            Some(_) => Err(bad(msg!(
                "Invalid `{}` param: Value must be a valid array",
                name
            ))),
        }
    }

    pub fn object_opt(&self, name: &str) -> Result<Option<Map<String, Json>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Object(m)) => Ok(Some(m.clone())),
            Some(Json::String(s)) => match serde_json::from_str::<Json>(s) {
                Ok(Json::Object(m)) => Ok(Some(m)),
                _ => Err(bad(msg!(
                    "Invalid `{}` param: Value must be a valid object",
                    name
                ))),
            },
            Some(_) => Err(bad(msg!(
                "Invalid `{}` param: Value must be a valid object",
                name
            ))),
        }
    }

    pub fn array_opt(&self, name: &str) -> Result<Option<Vec<Json>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Array(a)) => Ok(Some(a.clone())),
            Some(_) => Err(bad(msg!(
                "Invalid `{}` param: Value must be a valid array",
                name
            ))),
        }
    }

    /// `total=false` asks the server to skip counting.
    pub fn want_total(&self) -> Result<bool, ApiError> {
        Ok(self.bool_opt("total")?.unwrap_or(true))
    }

    pub fn queries(&self) -> Result<Vec<String>, ApiError> {
        Ok(self.strings_opt("queries")?.unwrap_or_default())
    }
}

/// A server-generated id in Appwrite's shape: 13 hex chars of time + 7 random hex chars.
pub fn new_id() -> String {
    use rand::Rng;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut rng = rand::thread_rng();
    format!(
        "{:08x}{:05x}{:07x}",
        now.as_secs(),
        now.subsec_micros(),
        rng.gen_range(0..0x1000_0000u32)
    )
}

/// The proposer's clock, in epoch milliseconds.
/// A new request id: made once where a request arrives, kept across retries of its proposal.
pub fn new_request_id() -> model::RequestId {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    model::RequestId(u128::from_be_bytes(bytes))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Converts client JSON data into model values; objects are refused.
pub fn data_from_json(
    map: &Map<String, Json>,
    code: ErrorCode,
) -> Result<model::command::Data, ApiError> {
    let mut out = model::command::Data::new();
    for (k, v) in map {
        if k.starts_with('$') {
            continue;
        }
        let v = Value::from_json(v).ok_or_else(|| {
            ApiError(Error::new(
                code,
                msg!("Invalid document structure: Attribute \"{}\" has invalid type. Nested objects are not supported.", k),
            ))
        })?;
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// Client data for an update or an upsert: the values, and the operators (Appwrite 1.8+) sent
/// in place of some of them (`model::operator`). An operator that cannot be read is a bad
/// request, as in Appwrite.
pub fn patch_from_json(
    map: &Map<String, Json>,
    code: ErrorCode,
) -> Result<(model::command::Data, model::command::Ops), ApiError> {
    let mut plain = Map::new();
    let mut ops = model::command::Ops::new();
    for (k, v) in map {
        if k.starts_with('$') {
            continue;
        }
        match model::operator::Operator::detect(v) {
            None => {
                plain.insert(k.clone(), v.clone());
            }
            Some(Ok(op)) => {
                ops.insert(k.clone(), op);
            }
            Some(Err(e)) => {
                return Err(ApiError(Error::new(
                    ErrorCode::GeneralBadRequest,
                    // Appwrite says "attribute" on both APIs: the word is an argument, so the
                    // TablesDB wording leaves it.
                    msg!(
                        "Invalid operator for {} \"{}\": {}",
                        "attribute",
                        k,
                        e.text()
                    ),
                )));
            }
        }
    }
    Ok((data_from_json(&plain, code)?, ops))
}

impl Req {
    /// A parameter set built from a JSON object (inline column/index definitions).
    pub fn from_object(params: Map<String, Json>) -> Req {
        Req {
            headers: HeaderMap::new(),
            path: HashMap::new(),
            params,
            method: axum::http::Method::POST,
            route: String::new(),
            peer: None,
            query: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let m = parse_query("queries%5B1%5D=b&queries%5B0%5D=a&total=false&x%5B%5D=1&x%5B%5D=2");
        assert_eq!(m["queries"], serde_json::json!(["a", "b"]));
        assert_eq!(m["total"], serde_json::json!("false"));
        assert_eq!(m["x"], serde_json::json!(["1", "2"]));
    }

    #[test]
    fn generated_ids_are_valid() {
        let a = new_id();
        assert_eq!(a.len(), 20);
        assert!(model::id::is_valid(&a));
        assert_ne!(a, new_id());
    }
}
