//! `loadgen realtime BASE PROJECT KEY SESSIONS SUBSCRIBERS TABLES RATE SECONDS`: opens
//! SUBSCRIBERS WebSocket connections to BASE (`http://host:port/v1`), each as one of the users
//! whose session values are in the file SESSIONS (one per line, round robin), each subscribed
//! to one of TABLES tables (`tablesdb.bench.tables.t<i>.rows`, round robin); prints
//! `{"subscribed": N}` and waits for a line on stdin; then creates RATE rows per second for
//! SECONDS, spread over the tables, with an API key, each row holding the time it was sent
//! (`t0`, ms). Every event received is timed against its row's `t0` (send → receipt) and
//! against the event's `timestamp` (the leader's stamp → receipt). Prints one JSON line with
//! the writes, the events expected and received, and both latencies' p50/p99.

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(serde::Deserialize)]
struct Msg<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    data: Option<Data<'a>>,
}

#[derive(serde::Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    timestamp: Option<&'a str>,
    payload: Option<Payload>,
    user: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct Payload {
    t0: Option<f64>,
}

#[derive(Default)]
struct Seen {
    from_send: Vec<f64>,
    from_stamp: Vec<f64>,
    closed: usize,
}

/// Parses Appwrite's UTC timestamp (`2026-01-01T00:00:00.123+00:00`) to epoch ms, without a
/// date library: days from the civil date.
fn stamp_ms(ts: &str) -> Option<f64> {
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.strip_suffix("+00:00")?;
    let mut t = time.split(':');
    let (h, mi) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let s = t.next()?.parse::<f64>().ok()?;
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days as f64 * 24.0 + h) * 60.0 + mi) * 60_000.0 + s * 1000.0)
}

async fn subscriber(
    base: String,
    project: String,
    session: String,
    channel: String,
    seen: Arc<Mutex<Seen>>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<()> {
    let url = format!(
        "{}/realtime?project={}",
        base.replacen("http://", "ws://", 1),
        project
    );
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("cookie", format!("a_session_{project}={session}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut subscribed = false;
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        // Only the fields timed are decoded; the rest is skipped without being kept.
        let m: Msg = serde_json::from_str(text.as_str())?;
        match m.kind {
            "connected" => {
                if m.data.as_ref().is_none_or(|d| d.user.is_none()) {
                    bail!("not signed in");
                }
                let sub =
                    serde_json::json!({"type": "subscribe", "data": [{"channels": [channel]}]});
                ws.send(Message::Text(sub.to_string().into())).await?;
            }
            "response" if !subscribed => {
                subscribed = true;
                let _ = ready.send(()).await;
            }
            "event" => {
                let now = now_ms();
                let Some(data) = m.data else { continue };
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(t0) = data.payload.and_then(|p| p.t0) {
                    s.from_send.push(now - t0);
                }
                if let Some(ts) = data.timestamp.and_then(stamp_ms) {
                    s.from_stamp.push(now - ts);
                }
            }
            "error" => eprintln!("realtime error: {}", text.as_str()),
            _ => {}
        }
    }
    seen.lock().unwrap_or_else(|p| p.into_inner()).closed += 1;
    Ok(())
}

pub async fn run(args: &[String]) -> Result<()> {
    let [base, project, key, sessions, subscribers, tables, rate, seconds] = args else {
        bail!("usage: loadgen realtime BASE PROJECT KEY SESSIONS SUBSCRIBERS TABLES RATE SECONDS");
    };
    let sessions: Vec<String> = std::fs::read_to_string(sessions)
        .context("SESSIONS")?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let subscribers: usize = subscribers.parse().context("SUBSCRIBERS")?;
    let tables: usize = tables.parse().context("TABLES")?;
    let rate: f64 = rate.parse().context("RATE")?;
    let seconds: f64 = seconds.parse().context("SECONDS")?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(subscribers.max(1));
    // Opened a few hundred at a time, as clients arriving would.
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    for i in 0..subscribers {
        let (base, project, seen, ready) = (
            base.clone(),
            project.clone(),
            seen.clone(),
            ready_tx.clone(),
        );
        let session = sessions[i % sessions.len()].clone();
        let channel = format!("tablesdb.bench.tables.t{}.rows", i % tables);
        let permit = gate.clone().acquire_owned().await?;
        tokio::spawn(async move {
            let r = tokio::spawn(subscriber(base, project, session, channel, seen, ready));
            drop(permit);
            if let Ok(Err(e)) = r.await {
                eprintln!("subscriber: {e:#}");
            }
        });
        if (i + 1) % 200 == 0 {
            for _ in 0..200 {
                tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
                    .await
                    .context("subscribing took over a minute")?;
            }
        }
    }
    for _ in 0..subscribers % 200 {
        tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .context("subscribing took over a minute")?;
    }
    println!("{}", serde_json::json!({ "subscribed": subscribers }));
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()?;
    let writes = (rate * seconds).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let write_lat = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..writes {
        ticker.tick().await;
        let url = format!("{base}/tablesdb/bench/tables/t{}/rows", i % tables);
        let (http, key, project) = (http.clone(), key.clone(), project.clone());
        let (write_lat, failed) = (write_lat.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = now_ms();
            let body = serde_json::json!({"rowId": "unique()", "data": {"t0": t0}});
            let res = http
                .post(&url)
                .header("x-appwrite-project", project)
                .header("x-appwrite-key", key)
                .json(&body)
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    write_lat
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(now_ms() - t0);
                }
                _ => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut from_send = s.from_send.clone();
    let mut from_stamp = s.from_stamp.clone();
    from_send.sort_by(f64::total_cmp);
    from_stamp.sort_by(f64::total_cmp);
    let mut wl = write_lat.lock().unwrap_or_else(|p| p.into_inner()).clone();
    wl.sort_by(f64::total_cmp);
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    let per_table = subscribers.div_ceil(tables.max(1));
    println!(
        "{}",
        serde_json::json!({
            "writes": writes - failed,
            "failed_writes": failed,
            "write_seconds": wall,
            "writes_per_second": (writes - failed) as f64 / wall,
            "write_p50_ms": percentile(&wl, 0.5),
            "write_p99_ms": percentile(&wl, 0.99),
            "events_expected": (writes - failed) * per_table,
            "events_received": from_send.len(),
            "subscribers_closed": s.closed,
            "send_to_receipt_p50_ms": percentile(&from_send, 0.5),
            "send_to_receipt_p99_ms": percentile(&from_send, 0.99),
            "stamp_to_receipt_p50_ms": percentile(&from_stamp, 0.5),
            "stamp_to_receipt_p99_ms": percentile(&from_stamp, 0.99),
        })
    );
    std::process::exit(0);
}
