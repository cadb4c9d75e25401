//! `basalt cluster rolling-restart`: restarts every member one at a time, followers first and
//! the leader last, with the operator's own command (`systemctl restart basalt`, `kubectl
//! delete pod`, ...), and goes on to the next only once the one restarted is ready again and
//! has caught up. Before each restart every other member must be ready, so the cluster keeps
//! a quorum throughout: requests fail only at the node that is restarting.

use crate::client::Client;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How often readiness and progress are looked at.
const POLL: Duration = Duration::from_millis(200);

struct Member {
    id: u64,
    client: Client,
}

/// The members (`cluster status` through `endpoint`), the leader last.
async fn members(console: &Client, key: &str) -> Result<Vec<Member>> {
    let status = console.get("/cluster/status").await?;
    let leader = status["leader"].as_u64();
    let mut out = Vec::new();
    for m in status["members"].as_array().into_iter().flatten() {
        let id = m["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("a member without an id"))?;
        let http = m["http"]
            .as_str()
            .ok_or_else(|| anyhow!("member {id} has no HTTP address"))?;
        out.push(Member {
            id,
            client: Client::new(http, "console", key)?,
        });
    }
    out.sort_by_key(|m| (Some(m.id) == leader, m.id));
    Ok(out)
}

/// If the member answers `GET /v1/health/ready` with 200: when its process started.
async fn started_at(m: &Member) -> Option<i64> {
    let body = m.client.get("/health/ready").await.ok()?;
    Some(body["started"].as_i64().unwrap_or(0))
}

/// Whether the member answers `GET /v1/health/ready` with 200.
async fn ready(m: &Member) -> bool {
    started_at(m).await.is_some()
}

/// The member's own applied index, as its status says.
async fn applied(m: &Member) -> Option<u64> {
    let status = m.client.get("/cluster/status").await.ok()?;
    status["members"]
        .as_array()?
        .iter()
        .find(|x| x["id"].as_u64() == Some(m.id))?["applied"]
        .as_u64()
}

async fn until<F, Fut>(within: Duration, what: &str, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        if Instant::now() > deadline {
            bail!("{what} within {} s", within.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Restarts each member with `command` (`{id}` replaced by its node id; run by `sh -c`, with
/// `BASALT_NODE_ID` set too), waiting up to `per_node` for each step. Answers what each
/// restart took.
pub async fn rolling_restart(
    endpoint: &str,
    key: &str,
    command: &str,
    per_node: Duration,
) -> Result<Value> {
    let console = Client::new(endpoint, "console", key)?;
    let members = members(&console, key)
        .await
        .context("reading the membership")?;
    let started = Instant::now();
    let mut done = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let others: Vec<&Member> = members.iter().filter(|o| o.id != m.id).collect();
        // The others keep a quorum while this one is down.
        let others = &others;
        until(
            per_node,
            "the other members were not all ready",
            move || async move {
                for o in others {
                    if !ready(o).await {
                        return false;
                    }
                }
                true
            },
        )
        .await
        .with_context(|| format!("before restarting node {}", m.id))?;
        eprintln!("[{}/{}] restarting node {}", i + 1, members.len(), m.id);
        let before = started_at(m).await;
        let t0 = Instant::now();
        let run = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command.replace("{id}", &m.id.to_string()))
            .env("BASALT_NODE_ID", m.id.to_string())
            .status();
        let status = tokio::time::timeout(per_node, run)
            .await
            .map_err(|_| anyhow!("the restart command for node {} did not finish", m.id))?
            .with_context(|| format!("running the restart command for node {}", m.id))?;
        if !status.success() {
            bail!("the restart command for node {} failed ({status})", m.id);
        }
        let restarted = t0.elapsed();
        // Back: ready, as a process started after the one before (a command that returns
        // before the old process has stopped must not let the next node go down too), and
        // applied as far as a member that stayed up had when it came back.
        until(
            per_node,
            "the restarted node was not ready",
            move || async move {
                started_at(m)
                    .await
                    .is_some_and(|s| before.is_none_or(|b| s > b))
            },
        )
        .await
        .with_context(|| format!("node {}", m.id))?;
        let mut target = None;
        for o in others {
            if let Some(a) = applied(o).await {
                target = Some(target.unwrap_or(0).max(a));
            }
        }
        let target = target.ok_or_else(|| anyhow!("no other member told its applied index"))?;
        until(
            per_node,
            "the restarted node did not catch up",
            move || async move { applied(m).await.is_some_and(|a| a >= target) },
        )
        .await
        .with_context(|| format!("node {}", m.id))?;
        let back = t0.elapsed();
        eprintln!(
            "[{}/{}] node {} restarted in {:.1} s, ready and caught up (index {target}) after {:.1} s",
            i + 1,
            members.len(),
            m.id,
            restarted.as_secs_f64(),
            back.as_secs_f64()
        );
        done.push(json!({
            "node": m.id,
            "restart_ms": restarted.as_millis() as u64,
            "ready_ms": back.as_millis() as u64,
        }));
    }
    Ok(json!({
        "restarted": done,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    }))
}
