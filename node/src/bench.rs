//! `basalt bench`: a load generator over HTTP, as the SDKs would drive the node.
//! Phase 1: N concurrent clients create rows one request at a time (throughput, p50/p99).
//! Phase 2: a table of R rows answers indexed lists (`equal` + `limit(20)` + total) from the
//! same N clients (lists/s, p50/p99), and — for comparison — the same filter on an unindexed
//! column from one client.

use crate::cli::Remote;
use crate::client::Client;
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    remote: Remote,
    /// Concurrent clients in the write phase.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Row creations in the write phase (split across the clients).
    #[arg(long, default_value_t = 4000)]
    writes: usize,
    /// Rows in the query table.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Indexed lists in the query phase (split across the clients).
    #[arg(long, default_value_t = 500)]
    queries: usize,
}

pub fn all_scopes() -> Vec<String> {
    api::ALL_SCOPES.iter().map(|s| s.to_string()).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn summary(mut lat: Vec<Duration>, wall: Duration) -> serde_json::Value {
    lat.sort();
    json!({
        "requests": lat.len(),
        "seconds": wall.as_secs_f64(),
        "per_second": lat.len() as f64 / wall.as_secs_f64().max(1e-9),
        "p50_ms": percentile(&lat, 0.50),
        "p99_ms": percentile(&lat, 0.99),
    })
}

pub async fn run(a: BenchArgs) -> Result<()> {
    let console = a.remote.console()?;
    let project = format!("bench{}", std::process::id());
    console
        .post(
            "/projects",
            json!({ "projectId": project, "name": "bench" }),
        )
        .await
        .context("creating bench project")?;
    let key = console
        .post(
            &format!("/projects/{project}/keys"),
            json!({ "name": "bench", "scopes": all_scopes() }),
        )
        .await?;
    let secret = key["secret"].as_str().context("key secret")?.to_string();
    let c = Arc::new(Client::new(&a.remote.endpoint, &project, &secret)?);
    c.post(
        "/tablesdb",
        json!({ "databaseId": "bench", "name": "bench" }),
    )
    .await?;
    for t in ["writes", "query"] {
        c.post(
            "/tablesdb/bench/tables",
            json!({
                "tableId": t, "name": t,
                "columns": [
                    { "key": "n", "type": "integer", "required": true },
                    { "key": "m", "type": "integer", "required": true },
                    { "key": "name", "type": "varchar", "size": 64, "required": false },
                ],
                "indexes": [ { "key": "by_n", "type": "key", "attributes": ["n"] } ],
            }),
        )
        .await?;
    }

    // Phase 1: concurrent single-row creates.
    let per_client = a.writes.div_ceil(a.clients.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..a.clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let n = (client * per_client + i) as i64;
                let t = Instant::now();
                c.post(
                    "/tablesdb/bench/tables/writes/rows",
                    json!({ "rowId": "unique()", "data": { "n": n, "m": n, "name": format!("row {n}") } }),
                )
                .await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let writes = summary(lat, started.elapsed());

    // Phase 2: fill the query table in bulk, then query it.
    let fill_started = Instant::now();
    let mut next = 0usize;
    while next < a.rows {
        let batch: Vec<_> = (next..(next + 1000).min(a.rows))
            .map(|i| json!({ "$id": format!("r{i}"), "n": (i % 10_000) as i64, "m": (i % 10_000) as i64, "name": format!("row {i}") }))
            .collect();
        next += batch.len();
        c.post(
            "/tablesdb/bench/tables/query/rows",
            json!({ "rows": batch }),
        )
        .await?;
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    // Indexed lists as the SDKs send them by default (`equal` + `limit(20)`, with the total),
    // from the same number of concurrent clients as the write phase.
    let per_client = a.queries.div_ceil(a.clients.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..a.clients {
        let c = c.clone();
        let rows = a.rows;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let k = ((client * per_client + i) * 7919) % 10_000;
                let t = Instant::now();
                let r = c.get(&list_path("n", k)).await?;
                lat.push(t.elapsed());
                let expect = (rows / 10_000 + usize::from(k < rows % 10_000)) as u64;
                anyhow::ensure!(
                    r["total"].as_u64() == Some(expect.min(5000)) || rows < 10_000,
                    "indexed query returned a wrong total: {}",
                    r["total"]
                );
            }
            anyhow::Ok(lat)
        }));
    }
    let mut indexed = Vec::new();
    for t in tasks {
        indexed.extend(t.await??);
    }
    let indexed = summary(indexed, started.elapsed());
    // The same filter on the unindexed column, one client, a tenth as many.
    let mut scanned = Vec::new();
    for i in 0..a.queries / 10 {
        let t = Instant::now();
        c.get(&list_path("m", (i * 7919) % 10_000)).await?;
        scanned.push(t.elapsed());
    }
    let scanned_busy: Duration = scanned.iter().sum();
    let report = json!({
        "endpoint": a.remote.endpoint,
        "write_phase": { "clients": a.clients, "result": writes },
        "query_phase": {
            "rows": a.rows,
            "bulk_fill_seconds": fill_seconds,
            "clients": a.clients,
            "indexed_equal_limit20": indexed,
            "unindexed_equal_same_filter": summary(scanned, scanned_busy),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `equal(attr, k)` + `limit(20)` on the query table, with the total.
fn list_path(attr: &str, k: usize) -> String {
    let equal = json!({ "method": "equal", "attribute": attr, "values": [k] }).to_string();
    let limit = json!({ "method": "limit", "values": [20] }).to_string();
    format!(
        "/tablesdb/bench/tables/query/rows?queries%5B0%5D={}&queries%5B1%5D={}",
        urlencode(&equal),
        urlencode(&limit)
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
