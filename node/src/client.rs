//! The operator commands' HTTP client.

use anyhow::{anyhow, Result};
use serde_json::Value;

pub struct Client {
    pub endpoint: String,
    http: reqwest::Client,
    headers: Vec<(String, String)>,
}

impl Client {
    pub fn new(endpoint: &str, project: &str, key: &str) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Client {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http,
            headers: vec![
                ("x-appwrite-project".into(), project.into()),
                ("x-appwrite-key".into(), key.into()),
            ],
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}/v1{}", self.endpoint, path);
        let mut req = self.http.request(method, &url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| anyhow!("{url}: {e}"))?;
        let status = res.status();
        let text = res.text().await?;
        let json: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = json
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| json.to_string());
            return Err(anyhow!("{status}: {msg}"));
        }
        Ok(json)
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}
