//! `basalt drill node|leader|partition|region`: rehearses a failure under a steady write load,
//! then proves what happened. It prints one JSON report: the time to recover (from the fault
//! to the first acknowledged write that was sent after it), the requests that failed while
//! the fault lasted, and the proof that nothing acknowledged was lost: every acknowledged
//! ledger entry read back through every node, exactly once, and `cluster check` consistent.
//!
//! Against a running cluster (`--endpoint`, `--root-key`) the target node does the fault to
//! itself (`POST /v1/cluster/drill`): it dies at once (its supervisor restarts it) or cuts
//! itself off from its peers for `--seconds`. With `--local` the drill starts a throw-away
//! cluster of this binary and does the fault from outside with the `faults` library the
//! jepsen/ harness uses: kill -9 and a restart, or nftables in network namespaces (root).

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use faults::{Cluster, ClusterOptions, Fault};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct DrillArgs {
    /// What fails: `node` (a follower dies), `leader` (the leader dies), `partition` (the
    /// leader is cut off from every peer), `region` (every node of `--region` dies).
    #[arg(value_parser = ["node", "leader", "partition", "region"])]
    pub kind: String,
    /// Rehearse on a throw-away cluster started here (three nodes; `region` puts each in a
    /// region of its own, `partition` needs root for its network namespaces).
    #[arg(long)]
    pub local: bool,
    /// The region `drill region` loses (with --local: r1, r2 or r3; default r1).
    #[arg(long)]
    pub region: Option<String>,
    /// With `region --local` (root): five nodes in three regions (two in r1 and r2, one in
    /// r3), each in a network namespace, this round trip (ms) apart between regions (`100`), or
    /// these between r1-r2, r1-r3 and r2-r3 (`50,100,150`), with voters in all three and the
    /// leader preferred in r1. The report adds write latencies, bounded-staleness and
    /// linearizable read latencies through r3 (r2 if r3 is the region lost; with every read's
    /// staleness checked against the ledger), and how long the lead took to return to r1.
    #[arg(long, value_parser = parse_latencies)]
    pub latency: Option<Latencies>,
    /// With `--latency`: the regions that hold voters (the others hold read replicas), e.g.
    /// `r1` to compare with voters in every region.
    #[arg(long, value_delimiter = ',', default_value = "r1,r2,r3")]
    pub voter_regions: Vec<String>,
    /// How long a partition lasts; how long a crashed node of a running cluster is given to
    /// come back before the drill reports it missing.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent writers keeping the ledger.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub writers: u64,
    #[arg(long, env = "BASALT_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    pub endpoint: String,
    #[arg(long, env = "BASALT_ROOT_KEY", hide_env_values = true)]
    pub root_key: Option<String>,
}

/// Round trips (ms) between regions r1-r2, r1-r3 and r2-r3.
#[derive(Clone, Copy, Debug)]
pub struct Latencies([u64; 3]);

impl Latencies {
    fn between(&self, a: &str, b: &str) -> u64 {
        match (a.min(b), a.max(b)) {
            ("r1", "r2") => self.0[0],
            ("r1", "r3") => self.0[1],
            ("r2", "r3") => self.0[2],
            _ => 0,
        }
    }

    fn furthest(&self) -> u64 {
        self.0.into_iter().max().unwrap_or(0)
    }
}

/// `100` (every pair of regions) or `50,100,150` (r1-r2, r1-r3, r2-r3), each 2 to 2000 ms.
fn parse_latencies(s: &str) -> Result<Latencies, String> {
    let v: Vec<u64> = s
        .split(',')
        .map(|p| p.trim().parse::<u64>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let v = match v.as_slice() {
        [all] => [*all; 3],
        [a, b, c] => [*a, *b, *c],
        _ => return Err("one round trip, or three (r1-r2, r1-r3, r2-r3)".into()),
    };
    if v.iter().any(|ms| !(2..=2000).contains(ms)) {
        return Err("round trips are 2 to 2000 ms".into());
    }
    Ok(Latencies(v))
}

/// A member as `cluster status` shows it.
#[derive(Clone, Debug)]
struct Member {
    id: u64,
    http: String,
    region: String,
}

/// The cluster the drill works on.
enum Target {
    Local(Box<tokio::sync::Mutex<Cluster>>),
    Remote,
}

struct Drill {
    args: DrillArgs,
    target: Target,
    root_key: String,
    http: reqwest::Client,
    /// Where operator calls go; changes when the node it names is taken down.
    console_url: Mutex<String>,
}

/// One ledger write's outcome.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    Failed,
    Unknown,
}

struct Write {
    seq: u64,
    /// The writers' target it went through (an index into them).
    via: usize,
    sent: Duration,
    done: Duration,
    outcome: Outcome,
}

pub async fn run(args: DrillArgs) -> Result<()> {
    let (target, root_key, endpoint) = if args.local {
        let key: String = (0..32)
            .map(|_| format!("{:x}", rand::random::<u8>() % 16))
            .collect();
        let cluster = start_local(&args, &key).await?;
        let url = cluster.nodes[0].url.clone();
        (
            Target::Local(Box::new(tokio::sync::Mutex::new(cluster))),
            key,
            url,
        )
    } else {
        let key = args
            .root_key
            .clone()
            .ok_or_else(|| anyhow!("--root-key (or BASALT_ROOT_KEY) is needed, or --local"))?;
        (
            Target::Remote,
            key,
            args.endpoint.trim_end_matches('/').to_string(),
        )
    };
    let drill = Drill {
        args,
        target,
        root_key,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()?,
        console_url: Mutex::new(endpoint),
    };
    let mut report = drill.rehearse().await;
    if let Target::Local(c) = drill.target {
        let mut c = c.into_inner();
        c.shutdown();
        let dir = c.opts.dir.clone();
        drop(c);
        // The throw-away cluster goes with a clean drill; after a problem its data and logs
        // stay for a look.
        match &mut report {
            Ok(r) if r["ok"] == true => {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Ok(r) => r["kept"] = json!(dir.display().to_string()),
            Err(e) => {
                *e = anyhow!(
                    "{e:#} (the local cluster's data and logs are in {})",
                    dir.display()
                )
            }
        }
    }
    let report = report?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report["ok"] != true {
        bail!("the drill found a problem (see the report)");
    }
    Ok(())
}

/// The regions of a local `--latency` drill's nodes.
const FAR_REGIONS: [&str; 5] = ["r1", "r1", "r2", "r2", "r3"];

async fn start_local(args: &DrillArgs, key: &str) -> Result<Cluster> {
    if args.latency.is_some() && args.kind != "region" {
        bail!("--latency goes with `drill region --local`");
    }
    let netns = args.kind == "partition" || args.latency.is_some();
    if netns && unsafe { libc::geteuid() } != 0 {
        bail!("this local drill needs root (it puts each node in a network namespace)");
    }
    let (nodes, regions): (usize, Vec<String>) = match (args.kind.as_str(), args.latency) {
        ("region", Some(_)) => (5, FAR_REGIONS.iter().map(|r| r.to_string()).collect()),
        ("region", None) => (3, vec!["r1".into(), "r2".into(), "r3".into()]),
        _ => (3, Vec::new()),
    };
    // The proxies delay each direction: half the round trip each way.
    let link_delays = match args.latency {
        Some(rtt) => (0..nodes)
            .flat_map(|a| (0..nodes).map(move |b| (a, b)))
            .filter(|(a, b)| a < b && regions[*a] != regions[*b])
            .map(|(a, b)| (a, b, rtt.between(&regions[a], &regions[b]) / 2))
            .collect(),
        None => Vec::new(),
    };
    let dir = std::env::temp_dir().join(format!(
        "basalt-drill-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    Cluster::start(ClusterOptions {
        nodes,
        binary: std::env::current_exe()?,
        dir,
        netns,
        clock: false,
        root_key: key.to_string(),
        args: vec![
            "--abuse-limits".into(),
            "disabled".into(),
            "--request-timeout".into(),
            "5".into(),
        ],
        // As an operator would: every node is told the furthest round trip between regions
        // (the first has no peer to measure; a joiner measures only its seed before it starts).
        env: match args.latency {
            Some(rtt) => (1..=nodes as u64)
                .map(|id| {
                    (
                        id,
                        "BASALT_ROUND_TRIP_MS".into(),
                        rtt.furthest().to_string(),
                    )
                })
                .collect(),
            None => Vec::new(),
        },
        disk: false,
        lazyfs: false,
        regions,
        link_delays,
    })
    .await
    .context("starting a local cluster")
}

impl Drill {
    fn console(&self) -> String {
        self.console_url.lock().expect("lock").clone()
    }

    async fn operator(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value> {
        let res = self
            .http
            .request(method, format!("{base}/v1{path}"))
            .header("x-appwrite-project", "console")
            .header("x-appwrite-key", &self.root_key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{base}/v1{path}"))?;
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {}", v["message"].as_str().unwrap_or(""));
        }
        Ok(v)
    }

    /// `cluster status` as the console node answers it.
    async fn status_json(&self) -> Result<Value> {
        self.operator(
            &self.console(),
            reqwest::Method::GET,
            "/cluster/status",
            Value::Null,
        )
        .await
    }

    /// The Raft term the console node is in.
    async fn term(&self) -> Result<u64> {
        self.status_json().await?["term"]
            .as_u64()
            .ok_or_else(|| anyhow!("cluster status without a term"))
    }

    async fn status(&self) -> Result<(Option<u64>, Vec<Member>)> {
        let s = self.status_json().await?;
        let members = s["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| Member {
                id: m["id"].as_u64().unwrap_or(0),
                http: m["http"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string(),
                region: m["region"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        Ok((s["leader"].as_u64(), members))
    }

    /// A leader known and every member answering, within `timeout`.
    async fn settled(&self, ids: &[u64], timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((Some(leader), members)) = self.status().await {
                let mut all = true;
                for m in members.iter().filter(|m| ids.contains(&m.id)) {
                    all &= self
                        .operator(
                            &m.http,
                            reqwest::Method::GET,
                            "/cluster/status",
                            Value::Null,
                        )
                        .await
                        // The same leader (an old leader still cut off names itself).
                        .is_ok_and(|s| s["leader"].as_u64() == Some(leader));
                }
                if all {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                bail!("the cluster did not settle within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A `--latency` drill's cluster: voters in `--voter-regions` (read replicas in the
    /// others), the lead preferred in r1; answers once r1 leads and every member agrees.
    async fn place_far(&self) -> Result<()> {
        let voters = &self.args.voter_regions;
        let learners: Vec<&str> = ["r1", "r2", "r3"]
            .into_iter()
            .filter(|r| !voters.iter().any(|v| v == r))
            .collect();
        self.operator(
            &self.console(),
            reqwest::Method::PUT,
            "/cluster/placement",
            json!({ "voters": voters, "learners": learners, "leaderRegion": "r1" }),
        )
        .await?;
        self.lead_in("r1", Duration::from_secs(60))
            .await
            .map(|_| ())
    }

    /// Waits until every member agrees on a leader in `region`; how long that took.
    async fn lead_in(&self, region: &str, timeout: Duration) -> Result<Duration> {
        let began = Instant::now();
        loop {
            let (_, members) = self.status().await.unwrap_or((None, Vec::new()));
            let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
            if let Ok(leader) = self.settled(&ids, Duration::from_secs(5)).await {
                if members.iter().any(|m| m.id == leader && m.region == region) {
                    return Ok(began.elapsed());
                }
            }
            if began.elapsed() > timeout {
                bail!("the lead did not move to region {region} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn rehearse(&self) -> Result<Value> {
        if self.args.latency.is_some() {
            self.place_far().await.context("placing the voters")?;
        }
        let (leader, members) = self.status().await?;
        let leader =
            leader.ok_or_else(|| anyhow!("the cluster has no leader: nothing to rehearse on"))?;
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let victims: Vec<u64> = match self.args.kind.as_str() {
            "leader" | "partition" => vec![leader],
            "node" => vec![*ids
                .iter()
                .find(|id| **id != leader)
                .ok_or_else(|| anyhow!("a one-node cluster has no follower to lose"))?],
            _ => {
                let region = self.args.region.clone().unwrap_or_else(|| "r1".into());
                let v: Vec<u64> = members
                    .iter()
                    .filter(|m| m.region == region)
                    .map(|m| m.id)
                    .collect();
                if v.is_empty() {
                    bail!("no member is in region {region:?}");
                }
                v
            }
        };
        if victims.len() * 2 >= ids.len() && self.args.kind != "partition" {
            // Losing a majority stops every write: there is nothing to recover to until the
            // nodes come back, which a drill of this kind does not wait for.
            bail!("losing nodes {victims:?} of {ids:?} leaves no majority; a drill needs one");
        }
        let survivors: Vec<Member> = members
            .iter()
            .filter(|m| !victims.contains(&m.id))
            .cloned()
            .collect();
        let Some(first) = survivors.first() else {
            bail!("no member would be left to write through");
        };
        *self.console_url.lock().expect("lock") = first.http.clone();

        // The ledger: a table of its own in the drill's project, written by the writers; it
        // and the drill's key go whatever happens.
        let ledger = self.ledger_table().await?;
        let result = self
            .exercise(&ledger, leader, &ids, &victims, &members, &survivors)
            .await;
        let _ = self.drop_ledger(&ledger).await;
        result
    }

    /// The drill proper: load, fault, recovery, heal, proof.
    async fn exercise(
        &self,
        ledger: &Ledger,
        leader: u64,
        ids: &[u64],
        victims: &[u64],
        members: &[Member],
        survivors: &[Member],
    ) -> Result<Value> {
        let targets: Vec<String> = if self.args.kind == "partition" {
            members.iter().map(|m| m.http.clone()).collect()
        } else {
            survivors.iter().map(|m| m.http.clone()).collect()
        };
        let term_before = self.term().await.ok();
        let writes = Arc::new(Mutex::new(Vec::<Write>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // The writers stop however this ends (an error included).
        let _stopper = StopOnDrop(stop.clone());
        let seq = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..self.args.writers {
            let (writes, stop, seq, http) =
                (writes.clone(), stop.clone(), seq.clone(), self.http.clone());
            let (targets, key, table) = (targets.clone(), ledger.key.clone(), ledger.table.clone());
            tasks.push(tokio::spawn(async move {
                let mut k = w as usize;
                while !stop.load(Ordering::Relaxed) {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let via = k % targets.len();
                    let url = format!("{}/v1/tablesdb/drill/tables/{table}/rows", targets[via]);
                    k += 1;
                    let sent = start.elapsed();
                    let res = http
                        .post(url)
                        .header("x-appwrite-project", PROJECT)
                        .header("x-appwrite-key", &key)
                        .json(&json!({ "rowId": "unique()", "data": { "seq": n } }))
                        .send()
                        .await;
                    let outcome = match res {
                        Ok(r) if r.status().is_success() => Outcome::Ok,
                        Ok(r) if r.status().is_client_error() => Outcome::Failed,
                        Err(e) if e.is_connect() => Outcome::Failed,
                        _ => Outcome::Unknown,
                    };
                    if outcome != Outcome::Ok {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    writes.lock().expect("lock").push(Write {
                        seq: n,
                        via,
                        sent,
                        done: start.elapsed(),
                        outcome,
                    });
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Across regions: reads through a member far from the leader (in r3, else r2) while
        // the writers write.
        let far = match self.args.latency {
            Some(_) => {
                let reader = ["r3", "r2"]
                    .iter()
                    .find_map(|r| survivors.iter().find(|m| m.region == *r))
                    .ok_or_else(|| anyhow!("no surviving member outside r1 to read through"))?;
                Some(self.far_reads(&reader.http, ledger, start).await?)
            }
            None => None,
        };

        // Elections while nothing failed are spurious (a timeout too short for the links).
        let term_at_fault = self.term().await.ok();

        // The fault. Recovery is timed from when it is surely in force: once the call that
        // makes it has returned (a kill, the partition's rules, an isolation the node has
        // taken), or, for a node told to crash (it dies a moment after it answers), once it
        // no longer answers. Only writes sent from then on count towards recovery.
        let fault = self.inject(victims, members).await?;
        let t0 = if matches!(self.target, Target::Remote) && self.args.kind != "partition" {
            self.gone_at(members, victims, start).await?
        } else {
            start.elapsed()
        };
        // Recovered: a write sent after the fault was acknowledged.
        let deadline = Instant::now() + Duration::from_secs(60);
        let rto = loop {
            let first = writes
                .lock()
                .expect("lock")
                .iter()
                .filter(|w| w.outcome == Outcome::Ok && w.sent >= t0)
                .map(|w| w.done)
                .min();
            if let Some(done) = first {
                break Some(done - t0);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let leader_after = self.status().await.ok().and_then(|(l, _)| l);
        // Keep the fault a while under load, then heal it.
        let hold = if self.args.kind == "partition" {
            Duration::from_secs(self.args.seconds)
        } else {
            Duration::from_secs(2)
        };
        let held = start.elapsed() - t0;
        if held < hold {
            tokio::time::sleep(hold - held).await;
        }
        let t1 = start.elapsed();
        let healed = self.heal(&fault, victims).await;
        // Across regions: how long after the region is back the lead returns to r1 (the
        // writers still writing).
        let returned = match self.args.latency {
            Some(_) => Some(self.lead_in("r1", Duration::from_secs(60)).await),
            None => None,
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await?;
        }
        let settled = self.settled(ids, Duration::from_secs(60)).await;

        // The proof: every acknowledged entry through every node, once; then the replicas.
        let writes = std::mem::take(&mut *writes.lock().expect("lock"));
        let acked: std::collections::BTreeSet<u64> = writes
            .iter()
            .filter(|w| w.outcome == Outcome::Ok)
            .map(|w| w.seq)
            .collect();
        let failed: std::collections::BTreeSet<u64> = writes
            .iter()
            .filter(|w| w.outcome == Outcome::Failed)
            .map(|w| w.seq)
            .collect();
        let mut per_node = serde_json::Map::new();
        let (mut lost_total, mut dup_total, mut unexpected_total) = (0usize, 0usize, 0usize);
        let mut unreadable = Vec::new();
        let (_, members_now) = self.status().await.unwrap_or((None, members.to_vec()));
        for m in &members_now {
            match self.read_ledger(&m.http, ledger).await {
                Ok(seen) => {
                    let lost = acked.iter().filter(|s| !seen.contains_key(s)).count();
                    let dups = seen.values().filter(|n| **n > 1).count();
                    let unexpected = seen.keys().filter(|s| failed.contains(s)).count();
                    lost_total += lost;
                    dup_total += dups;
                    unexpected_total += unexpected;
                    per_node.insert(
                        m.id.to_string(),
                        json!({ "entries": seen.values().sum::<usize>(), "lost": lost, "duplicates": dups, "failed-but-present": unexpected }),
                    );
                }
                Err(e) => {
                    per_node.insert(m.id.to_string(), json!({ "error": format!("{e:#}") }));
                    unreadable.push(m.id);
                }
            }
        }
        let check = self.check(members_now.len()).await;
        let consistent = check.as_ref().is_ok_and(|c| c["consistent"] == true);

        let regions_of_targets: Vec<&str> = survivors.iter().map(|m| m.region.as_str()).collect();
        let far = far.map(|f| f.report(&writes, t0, &regions_of_targets));
        let far_ok = far.as_ref().is_none_or(|f| f["ok"] == true)
            && returned.as_ref().is_none_or(|r| r.is_ok());
        let during = |w: &&Write| w.sent >= t0 && w.sent < t1;
        let in_fault: Vec<&Write> = writes.iter().filter(during).collect();
        let ok = rto.is_some()
            && healed.is_ok()
            && settled.is_ok()
            && lost_total == 0
            && dup_total == 0
            && unexpected_total == 0
            && unreadable.is_empty()
            && consistent
            && far_ok;
        Ok(json!({
            "drill": self.args.kind,
            "cluster": if self.args.local { "local" } else { "running" },
            "fault": fault_json(&fault),
            "leader-before": leader,
            "term-before": term_before,
            "term-at-fault": term_at_fault,
            "leader-after": leader_after,
            "time-to-recover-ms": rto.map(|d| d.as_millis() as u64),
            "fault-lasted-ms": (t1 - t0).as_millis() as u64,
            "requests": {
                "total": writes.len(),
                "acknowledged": acked.len(),
                "during-fault": in_fault.len(),
                "not-acknowledged-during-fault": in_fault.iter().filter(|w| w.outcome != Outcome::Ok).count(),
                "refused-during-fault": in_fault.iter().filter(|w| w.outcome == Outcome::Failed).count(),
                "unknown-outcome": writes.iter().filter(|w| w.outcome == Outcome::Unknown).count(),
            },
            "ledger": {
                "acknowledged": acked.len(),
                "lost": lost_total,
                "duplicates": dup_total,
                "failed-but-present": unexpected_total,
                "unreadable-through": unreadable,
                "by-node": per_node,
            },
            "cluster-check": match &check {
                Ok(c) => json!({ "consistent": c["consistent"], "applied": c["applied"], "digests": c["digests"] }),
                Err(e) => json!({ "consistent": false, "error": format!("{e:#}") }),
            },
            "across-regions": far.map(|mut f| {
                f["latency-ms"] = json!(self.args.latency.map(|l| {
                    json!({ "r1-r2": l.0[0], "r1-r3": l.0[1], "r2-r3": l.0[2] })
                }));
                f["leader-returned-to-r1-ms"] = match &returned {
                    Some(Ok(d)) => json!(d.as_millis() as u64),
                    Some(Err(e)) => json!(format!("{e:#}")),
                    None => Value::Null,
                };
                f
            }),
            "healed": healed.err().map(|e| format!("{e:#}")),
            "settled": settled.err().map(|e| format!("{e:#}")),
            "ok": ok,
        }))
    }

    async fn inject(&self, victims: &[u64], members: &[Member]) -> Result<Fault> {
        let all: Vec<u64> = members.iter().map(|m| m.id).collect();
        let fault = if self.args.kind == "partition" {
            Fault::isolate("isolate-leader", victims[0], &all)
        } else {
            Fault::Kill {
                nodes: victims.to_vec(),
            }
        };
        match &self.target {
            Target::Local(c) => c.lock().await.inject(&fault).await?,
            Target::Remote => {
                for id in victims {
                    let m = members.iter().find(|m| m.id == *id).expect("a member");
                    let body = if self.args.kind == "partition" {
                        json!({ "fault": "isolate", "seconds": self.args.seconds })
                    } else {
                        json!({ "fault": "crash" })
                    };
                    let crash = self.args.kind != "partition";
                    match self
                        .operator(&m.http, reqwest::Method::POST, "/cluster/drill", body)
                        .await
                    {
                        Ok(_) => {}
                        // The node may have died before its answer left: `gone_at` tells.
                        Err(e) if crash && e.downcast_ref::<reqwest::Error>().is_some() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(fault)
    }

    /// Waits until every victim stops answering; when the last of them was first seen not
    /// answering (since `start`).
    async fn gone_at(
        &self,
        members: &[Member],
        victims: &[u64],
        start: Instant,
    ) -> Result<Duration> {
        let mut gone = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(10);
        for m in members.iter().filter(|m| victims.contains(&m.id)) {
            loop {
                let answered = self
                    .http
                    .get(format!("{}/v1/health/version", m.http))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok();
                if !answered {
                    gone = gone.max(start.elapsed());
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {} was told to crash but still answers", m.id);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(gone)
    }

    /// `cluster check` through a survivor, retried (for up to a minute) until every member
    /// answered and they agree: a member still catching up is not a verdict. The check
    /// waits up to 30 s for each member's digest.
    async fn check(&self, members: usize) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let res = self
                .http
                .post(format!("{}/v1/cluster/check", self.console()))
                .header("x-appwrite-project", "console")
                .header("x-appwrite-key", &self.root_key)
                .timeout(Duration::from_secs(40))
                .json(&json!({}))
                .send()
                .await;
            let last = match res {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await?;
                    let complete = v["digests"].as_object().is_some_and(|d| d.len() == members);
                    if v["consistent"] == true && complete {
                        return Ok(v);
                    }
                    Ok(v)
                }
                Ok(r) => Err(anyhow!("cluster check: {} {}", r.status(), r.text().await?)),
                Err(e) => Err(anyhow!("cluster check: {e}")),
            };
            if Instant::now() > deadline {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn heal(&self, fault: &Fault, victims: &[u64]) -> Result<()> {
        match &self.target {
            Target::Local(c) => c.lock().await.heal(fault).await,
            Target::Remote => {
                // A crashed node is restarted by its supervisor; an isolation ends by itself.
                let ids: Vec<u64> = victims.to_vec();
                self.settled(&ids, Duration::from_secs(self.args.seconds + 60))
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow!("{e:#}: is the node's supervisor restarting it?"))
            }
        }
    }

    /// The drill's project (made once), a key for this drill, and a new ledger table.
    async fn ledger_table(&self) -> Result<Ledger> {
        let console = self.console();
        let made = self
            .operator(
                &console,
                reqwest::Method::POST,
                "/projects",
                json!({ "projectId": PROJECT, "name": "Basalt drills" }),
            )
            .await;
        if let Err(e) = made {
            if !format!("{e}").contains("409") {
                return Err(e.context("creating the drill's project"));
            }
        }
        let key = self
            .operator(
                &console,
                reqwest::Method::POST,
                &format!("/projects/{PROJECT}/keys"),
                json!({ "name": "drill", "scopes": ["databases.read", "databases.write", "tables.read", "tables.write", "columns.write", "rows.read", "rows.write"] }),
            )
            .await
            .context("making the drill's key")?;
        let ledger = Ledger {
            key: key["secret"].as_str().unwrap_or_default().to_string(),
            key_id: key["$id"].as_str().unwrap_or_default().to_string(),
            table: format!("ledger{}", chrono::Utc::now().timestamp_millis()),
        };
        let call = |method: reqwest::Method, path: String, body: Value| {
            self.http
                .request(method, format!("{console}/v1{path}"))
                .header("x-appwrite-project", PROJECT)
                .header("x-appwrite-key", &ledger.key)
                .json(&body)
                .send()
        };
        let r = call(
            reqwest::Method::POST,
            "/tablesdb".into(),
            json!({ "databaseId": "drill", "name": "drill" }),
        )
        .await?;
        if !(r.status().is_success() || r.status().as_u16() == 409) {
            bail!("creating the drill's database: {}", r.text().await?);
        }
        for (path, body) in [
            (
                "/tablesdb/drill/tables".to_string(),
                json!({ "tableId": ledger.table, "name": ledger.table }),
            ),
            (
                format!("/tablesdb/drill/tables/{}/columns/integer", ledger.table),
                json!({ "key": "seq", "required": true }),
            ),
        ] {
            let r = call(reqwest::Method::POST, path.clone(), body).await?;
            if !r.status().is_success() {
                bail!("{path}: {}", r.text().await?);
            }
        }
        Ok(ledger)
    }

    /// How many times each ledger entry is present, read through `base` (a linearizable
    /// read: what the cluster holds, answered by that node).
    async fn read_ledger(
        &self,
        base: &str,
        l: &Ledger,
    ) -> Result<std::collections::BTreeMap<u64, usize>> {
        Ok(self.read_ledger_within(base, l, None).await?.0)
    }

    /// `read_ledger`, with a staleness bound (`X-Basalt-Max-Staleness`) if given; also
    /// answers the largest staleness the node reported (ms).
    async fn read_ledger_within(
        &self,
        base: &str,
        l: &Ledger,
        bound: Option<&str>,
    ) -> Result<(std::collections::BTreeMap<u64, usize>, Option<u64>)> {
        let mut seen = std::collections::BTreeMap::new();
        let mut stale: Option<u64> = None;
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec![
                json!({ "method": "limit", "values": [5000] }).to_string(),
                json!({ "method": "orderAsc", "attribute": "$id", "values": [] }).to_string(),
            ];
            if let Some(c) = &cursor {
                q.push(json!({ "method": "cursorAfter", "values": [c] }).to_string());
            }
            let query: Vec<(&str, &str)> = q.iter().map(|q| ("queries[]", q.as_str())).collect();
            let mut req = self
                .http
                .get(format!("{base}/v1/tablesdb/drill/tables/{}/rows", l.table))
                .query(&query)
                .header("x-appwrite-project", PROJECT)
                .header("x-appwrite-key", &l.key)
                .timeout(Duration::from_secs(30));
            if let Some(b) = bound {
                req = req.header("x-basalt-max-staleness", b);
            }
            let res = req.send().await?;
            if !res.status().is_success() {
                bail!("reading the ledger through {base}: {}", res.text().await?);
            }
            if bound.is_some() {
                let ms = res
                    .headers()
                    .get("x-basalt-staleness-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| anyhow!("a bounded read without X-Basalt-Staleness-Ms"))?;
                stale = Some(stale.map_or(ms, |s| s.max(ms)));
            }
            let page: Value = res.json().await?;
            let rows = page["rows"].as_array().cloned().unwrap_or_default();
            for r in &rows {
                let seq = r["seq"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("a ledger row without seq: {r}"))?;
                *seen.entry(seq).or_insert(0) += 1;
            }
            match rows.last().and_then(|r| r["$id"].as_str()) {
                Some(id) if rows.len() == 5000 => cursor = Some(id.to_string()),
                _ => return Ok((seen, stale)),
            }
        }
    }

    /// Removes this drill's table and key (the project stays for the next drill).
    async fn drop_ledger(&self, l: &Ledger) -> Result<()> {
        let console = self.console();
        self.http
            .delete(format!("{console}/v1/tablesdb/drill/tables/{}", l.table))
            .header("x-appwrite-project", PROJECT)
            .header("x-appwrite-key", &l.key)
            .send()
            .await?;
        self.operator(
            &console,
            reqwest::Method::DELETE,
            &format!("/projects/{PROJECT}/keys/{}", l.key_id),
            Value::Null,
        )
        .await?;
        Ok(())
    }
}

impl Drill {
    /// Reads through a member far from the leader while the writers write: the latency of a
    /// one-row list, with a 2 s staleness bound and linearizable; and whole-ledger reads with
    /// the bound, each kept with what it saw, to check against the writes afterwards.
    async fn far_reads(&self, base: &str, l: &Ledger, start: Instant) -> Result<FarReads> {
        let one = json!({ "method": "limit", "values": [1] }).to_string();
        let timed = |bound: Option<&'static str>| {
            let one = one.clone();
            async move {
                let mut req = self
                    .http
                    .get(format!("{base}/v1/tablesdb/drill/tables/{}/rows", l.table))
                    .query(&[("queries[]", one.as_str()), ("total", "false")])
                    .header("x-appwrite-project", PROJECT)
                    .header("x-appwrite-key", &l.key);
                if let Some(b) = bound {
                    req = req.header("x-basalt-max-staleness", b);
                }
                let t = Instant::now();
                let res = req.send().await?;
                if !res.status().is_success() {
                    bail!("a read through {base}: {}", res.text().await?);
                }
                let _ = res.bytes().await?;
                Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
            }
        };
        let mut out = FarReads::default();
        for _ in 0..40 {
            out.bounded_ms.push(timed(Some(FAR_BOUND)).await?);
        }
        for _ in 0..15 {
            out.linearizable_ms.push(timed(None).await?);
        }
        for _ in 0..20 {
            let sent = start.elapsed();
            let (seen, stale) = self.read_ledger_within(base, l, Some(FAR_BOUND)).await?;
            out.ledger.push(StaleRead {
                sent,
                staleness_ms: stale.unwrap_or(u64::MAX),
                seen: seen.into_keys().collect(),
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(out)
    }
}

/// The staleness bound far reads ask for (`X-Basalt-Max-Staleness`).
const FAR_BOUND: &str = "2s";

/// One bounded read of the whole ledger: when it was sent (since the drill began), the
/// staleness the node answered with, and the entries it saw.
struct StaleRead {
    sent: Duration,
    staleness_ms: u64,
    seen: std::collections::BTreeSet<u64>,
}

#[derive(Default)]
struct FarReads {
    bounded_ms: Vec<f64>,
    linearizable_ms: Vec<f64>,
    ledger: Vec<StaleRead>,
}

/// The `p`th percentile (0-100) of `v`, in ms to a tenth.
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p / 100.0).round() as usize;
    v.get(i).map(|x| (x * 10.0).round() / 10.0)
}

impl FarReads {
    /// The figures, and the check: a read that answered staleness S, sent at t, saw every
    /// write acknowledged before t - S, and S is within the bound.
    fn report(&self, writes: &[Write], fault_at: Duration, via_region: &[&str]) -> Value {
        let bound_ms = api::stale::parse(FAR_BOUND).map_or(0, |d| d.as_millis() as u64);
        let mut violations = Vec::new();
        for r in &self.ledger {
            let horizon = r.sent.saturating_sub(Duration::from_millis(r.staleness_ms));
            let missing: Vec<u64> = writes
                .iter()
                .filter(|w| w.outcome == Outcome::Ok && w.done < horizon)
                .map(|w| w.seq)
                .filter(|s| !r.seen.contains(s))
                .collect();
            if r.staleness_ms > bound_ms || !missing.is_empty() {
                violations.push(json!({
                    "sent-ms": r.sent.as_millis() as u64,
                    "staleness-ms": r.staleness_ms,
                    "missing": missing.len(),
                }));
            }
        }
        let before = |region: Option<&str>| -> Vec<f64> {
            writes
                .iter()
                .filter(|w| w.outcome == Outcome::Ok && w.done < fault_at)
                .filter(|w| region.is_none_or(|r| via_region.get(w.via) == Some(&r)))
                .map(|w| (w.done - w.sent).as_secs_f64() * 1000.0)
                .collect()
        };
        let mut by_region = serde_json::Map::new();
        for r in ["r1", "r2", "r3"] {
            let v = before(Some(r));
            if !v.is_empty() {
                by_region.insert(
                    r.into(),
                    json!({ "p50": percentile(&v, 50.0), "p99": percentile(&v, 99.0), "count": v.len() }),
                );
            }
        }
        let before = before(None);
        let stalenesses: Vec<f64> = self.ledger.iter().map(|r| r.staleness_ms as f64).collect();
        json!({
            "write-ms": { "p50": percentile(&before, 50.0), "p99": percentile(&before, 99.0), "count": before.len() },
            "write-ms-through": by_region,
            "bounded-read-ms": { "p50": percentile(&self.bounded_ms, 50.0), "p99": percentile(&self.bounded_ms, 99.0), "bound": FAR_BOUND },
            "linearizable-read-ms": { "p50": percentile(&self.linearizable_ms, 50.0), "p99": percentile(&self.linearizable_ms, 99.0) },
            "staleness-ms": { "p50": percentile(&stalenesses, 50.0), "max": percentile(&stalenesses, 100.0) },
            "staleness-checked-reads": self.ledger.len(),
            "staleness-violations": violations,
            "ok": violations.is_empty(),
        })
    }
}

/// Sets the flag when dropped: the writers stop however the drill ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The ledger of one drill.
struct Ledger {
    key: String,
    key_id: String,
    table: String,
}

/// The drill's own project.
const PROJECT: &str = "basalt-drill";

fn fault_json(f: &Fault) -> Value {
    serde_json::to_value(f).unwrap_or(Value::Null)
}
