//! The clients' view of the cluster: plain HTTP calls to the Appwrite-compatible API with a
//! project key, each classified as certainly done, certainly not done, or unknown.

use serde_json::{json, Value};
use std::time::Duration;

/// What a call came to.
#[derive(Debug)]
pub enum Reply {
    /// 2xx, with its body.
    Ok(Value),
    /// The server refused it (4xx) or it never reached the server: it did not happen.
    Fail(u16, String),
    /// A timeout, a cut connection, or a 5xx: it may or may not have happened.
    /// (A refused connection is `Fail(0, "connect: …")`.)
    Unknown(String),
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// Base URLs by node (index = node id − 1).
    pub urls: Vec<String>,
    project: String,
    key: String,
}

impl Api {
    pub fn new(urls: Vec<String>, project: &str, key: &str, timeout: Duration) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
            urls,
            project: project.into(),
            key: key.into(),
        }
    }

    /// One call to node `node` (1-based).
    pub async fn call(
        &self,
        node: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let url = format!("{}/v1{path}", self.urls[node as usize - 1]);
        let mut req = self
            .http
            .request(method, &url)
            .header("x-appwrite-project", &self.project)
            .header("x-appwrite-key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = match req.send().await {
            Ok(r) => r,
            // Refused before a byte was sent: nothing happened.
            Err(e) if e.is_connect() => return Reply::Fail(0, format!("connect: {e}")),
            Err(e) if e.is_timeout() => return Reply::Unknown("timeout".into()),
            Err(e) => return Reply::Unknown(format!("{e}")),
        };
        let status = res.status().as_u16();
        let body = match res.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return Reply::Unknown(format!("reading the reply: {e}")),
        };
        let kind = || {
            body["type"]
                .as_str()
                .map_or_else(|| status.to_string(), str::to_string)
        };
        match status {
            200..=299 => Reply::Ok(body),
            400..=499 => Reply::Fail(status, kind()),
            _ => Reply::Unknown(kind()),
        }
    }

    pub async fn get(&self, node: u64, path: &str) -> Reply {
        self.call(node, reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, node: u64, path: &str, body: Value) -> Reply {
        self.call(node, reqwest::Method::POST, path, Some(body))
            .await
    }

    pub async fn put(&self, node: u64, path: &str, body: Value) -> Reply {
        self.call(node, reqwest::Method::PUT, path, Some(body))
            .await
    }

    pub async fn patch(&self, node: u64, path: &str, body: Value) -> Reply {
        self.call(node, reqwest::Method::PATCH, path, Some(body))
            .await
    }

    /// A setup call that must succeed: retried on unknown outcomes for up to a minute
    /// (setup runs before any fault). A 409 (already exists, from a retried create) counts
    /// as done.
    pub async fn setup(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.call(1, method.clone(), path, Some(body.clone())).await {
                Reply::Ok(v) => return Ok(v),
                Reply::Fail(409, _) => return Ok(Value::Null),
                Reply::Fail(s, t) if s != 0 => anyhow::bail!("{path}: {s} {t}"),
                other if std::time::Instant::now() > deadline => {
                    anyhow::bail!("{path}: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// A query as the SDKs encode it.
pub fn query(method: &str, attribute: Option<&str>, values: Value) -> String {
    let mut q = json!({ "method": method, "values": values });
    if let Some(a) = attribute {
        q["attribute"] = json!(a);
    }
    q.to_string()
}

/// The project's database every workload's tables live in.
pub const DB: &str = "jepsen";

pub fn rows_path(table: &str) -> String {
    format!("/tablesdb/{DB}/tables/{table}/rows")
}

/// Creates a table with integer columns (no defaults) and nothing else.
pub async fn create_table(api: &Api, table: &str, columns: &[&str]) -> anyhow::Result<()> {
    api.setup(
        reqwest::Method::POST,
        &format!("/tablesdb/{DB}/tables"),
        json!({ "tableId": table, "name": table, "permissions": [], "rowSecurity": false }),
    )
    .await?;
    for c in columns {
        api.setup(
            reqwest::Method::POST,
            &format!("/tablesdb/{DB}/tables/{table}/columns/integer"),
            json!({ "key": c, "required": false }),
        )
        .await?;
    }
    Ok(())
}
