//! `loadgen etcd ENDPOINT CLIENTS OPS VALUE_BYTES`: N clients each put OPS/N keys with a value
//! of VALUE_BYTES bytes through etcd's v3 JSON gateway (`POST /v3/kv/put`; every put is a
//! linearizable Raft write), one request at a time per client. Prints one JSON line:
//! requests, seconds, per_second, p50_ms, p99_ms — the fields `basalt bench` reports.
//!
//! `loadgen realtime ...`: realtime subscribers and a steady write load (see `realtime.rs`).

mod realtime;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("realtime") {
        return realtime::run(&args[2..]).await;
    }
    let [_, target, endpoint, clients, ops, value_bytes] = args.as_slice() else {
        bail!("usage: loadgen etcd ENDPOINT CLIENTS OPS VALUE_BYTES");
    };
    if target != "etcd" {
        bail!("unknown target {target}");
    }
    let clients: usize = clients.parse().context("CLIENTS")?;
    let ops: usize = ops.parse().context("OPS")?;
    let value = base64::engine::general_purpose::STANDARD.encode(vec![b'v'; value_bytes.parse()?]);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/v3/kv/put", endpoint.trim_end_matches('/'));
    let per_client = ops.div_ceil(clients.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, value) = (http.clone(), url.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let key = base64::engine::general_purpose::STANDARD.encode(format!("k{c}-{i}"));
                let body = serde_json::json!({ "key": key, "value": value });
                let t = Instant::now();
                let res = http.post(&url).json(&body).send().await?;
                if !res.status().is_success() {
                    bail!("put failed: {}", res.status());
                }
                res.bytes().await?;
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "{}",
        serde_json::json!({
            "requests": lat.len(), "seconds": wall, "per_second": lat.len() as f64 / wall,
            "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99),
        })
    );
    Ok(())
}
