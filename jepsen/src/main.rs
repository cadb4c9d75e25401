//! `jepsen`: randomized fault schedules against real Basalt nodes, with checked histories.
//!
//! Each schedule starts a fresh cluster (every node in a network namespace of its own when
//! the faults need one), runs the chosen workloads' clients concurrently through the HTTP API
//! for `--time` seconds while the nemesis injects faults on a schedule drawn from the seed,
//! heals everything, does the final reads, compares every replica (`cluster check`), and
//! checks each workload's history. Results go to `--results/<seed>/`: the histories
//! (`<workload>.jsonl`), `verdict.json`, `timeline.html` and the nodes' logs.

mod api;
mod check;
mod history;
mod nemesis;
mod recorder;
mod report;
mod workload;

use anyhow::{bail, Context, Result};
use clap::Parser;
use faults::{Cluster, ClusterOptions};
use history::{Process, Type};
use rand::{Rng, SeedableRng};
use recorder::Recorder;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::Workload;

#[derive(Parser, Clone, Debug)]
#[command(about = "Fault schedules against real Basalt nodes, with checked histories")]
struct Args {
    /// Seconds of load and faults per schedule.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Faults: `all`, `none`, or a comma-separated list of kill, pause, partition, loss,
    /// delay, clock, disk, membership, lose-unsynced.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Workloads: `all` or a comma-separated list of register, bank, set, counter,
    /// list-append.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Seed of the first schedule; schedule k uses seed + k.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many schedules to run, one after another, each on a fresh cluster.
    #[arg(long, default_value_t = 1)]
    schedules: u64,
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Client processes per workload.
    #[arg(long, default_value_t = 4)]
    concurrency: u64,
    /// Where results go.
    #[arg(long, default_value = "jepsen/results")]
    results: PathBuf,
    /// The `basalt` binary to run.
    #[arg(long, env = "BASALT_BIN")]
    binary: PathBuf,
    /// Keep every node's data dir (by default they are removed after a valid schedule).
    #[arg(long)]
    keep_data: bool,
    /// Extra environment for one node, `ID:NAME=VALUE` (repeatable); e.g. a fault point of a
    /// binary built with them, to see that the harness catches what it should.
    #[arg(long, value_parser = parse_node_env)]
    node_env: Vec<(u64, String, String)>,
}

fn parse_node_env(s: &str) -> Result<(u64, String, String), String> {
    let (id, kv) = s.split_once(':').ok_or("expected ID:NAME=VALUE")?;
    let (k, v) = kv.split_once('=').ok_or("expected ID:NAME=VALUE")?;
    let id = id.parse().map_err(|_| format!("bad node id {id:?}"))?;
    Ok((id, k.to_string(), v.to_string()))
}

fn list(arg: &str, all: &[&str], none_ok: bool) -> Result<Vec<String>> {
    let picked: Vec<String> = match arg {
        "all" => all.iter().map(|s| s.to_string()).collect(),
        "none" if none_ok => Vec::new(),
        _ => arg.split(',').map(|s| s.trim().to_string()).collect(),
    };
    for p in &picked {
        if !all.contains(&p.as_str()) {
            bail!("unknown name {p:?}: expected one of {all:?}");
        }
    }
    Ok(picked)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("jepsen: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let kinds = list(&args.nemesis, nemesis::KINDS, true)?;
    let names = list(&args.workload, workload::NAMES, false)?;
    if !(3..=9).contains(&args.nodes) {
        bail!("--nodes must be between 3 and 9");
    }
    if !(1..=500).contains(&args.concurrency) {
        bail!("--concurrency must be between 1 and 500");
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let root = args.results.join(format!("{stamp}-seed{}", args.seed));
    std::fs::create_dir_all(&root)?;
    let mut verdicts = Vec::new();
    for k in 0..args.schedules {
        let seed = args.seed + k;
        let dir = root.join(format!("seed-{seed}"));
        std::fs::create_dir_all(&dir)?;
        let v = match schedule(&args, &kinds, &names, seed, &dir).await {
            Ok(v) => v,
            Err(e) => json!({ "seed": seed, "valid": false, "error": format!("{e:#}") }),
        };
        std::fs::write(dir.join("verdict.json"), serde_json::to_string_pretty(&v)?)?;
        print_verdict(&v);
        verdicts.push(v);
    }
    let summary = summarize(&verdicts);
    std::fs::write(
        root.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!("results: {}", root.display());
    Ok(summary["valid"] == true)
}

fn print_verdict(v: &Value) {
    let seed = &v["seed"];
    if let Some(e) = v["error"].as_str() {
        println!("seed {seed}: ERROR {e}");
        return;
    }
    for (name, w) in v["workloads"].as_object().into_iter().flatten() {
        let ok = if w["valid"] == true {
            "valid"
        } else {
            "INVALID"
        };
        println!("seed {seed}: {name:9} {ok}");
    }
    println!(
        "seed {seed}: faults {}; cluster check {}; verdict {}",
        v["faults"],
        if v["cluster-check"]["consistent"] == true {
            "consistent"
        } else {
            "MISMATCH"
        },
        if v["valid"] == true {
            "valid"
        } else {
            "INVALID"
        }
    );
}

/// Totals over every schedule, as the note reports them.
fn summarize(verdicts: &[Value]) -> Value {
    let mut avail: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for v in verdicts {
        for (name, a) in v["availability"].as_object().into_iter().flatten() {
            let e = avail.entry(name.clone()).or_default();
            e.0 += a["ok"].as_u64().unwrap_or(0);
            e.1 += a["ops"].as_u64().unwrap_or(0);
        }
    }
    let invalid: Vec<&Value> = verdicts
        .iter()
        .filter(|v| v["valid"] != true)
        .map(|v| &v["seed"])
        .collect();
    json!({
        "valid": invalid.is_empty(),
        "schedules": verdicts.len(),
        "invalid-seeds": invalid,
        "anomalies": verdicts.iter().map(|v| v["anomalies"].as_u64().unwrap_or(0)).sum::<u64>(),
        "acknowledged-lost": verdicts.iter().map(|v| v["acknowledged-lost"].as_u64().unwrap_or(0)).sum::<u64>(),
        "cluster-check-mismatches": verdicts.iter().map(|v| v["cluster-check"]["mismatches"].as_u64().unwrap_or(0)).sum::<u64>(),
        "availability": avail.iter().map(|(k, (ok, all))| (k.clone(), json!({
            "ok": ok, "ops": all, "fraction": if *all == 0 { 0.0 } else { *ok as f64 / *all as f64 },
        }))).collect::<serde_json::Map<_, _>>(),
    })
}

const SCOPES: &[&str] = &[
    "databases.read",
    "databases.write",
    "tables.read",
    "tables.write",
    "columns.read",
    "columns.write",
    "rows.read",
    "rows.write",
];

async fn schedule(
    args: &Args,
    kinds: &[String],
    names: &[String],
    seed: u64,
    dir: &Path,
) -> Result<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let root_key: String = (0..32)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect();
    let opts = ClusterOptions {
        nodes: args.nodes,
        binary: args.binary.clone(),
        dir: dir.join("cluster"),
        netns: nemesis::needs_net(kinds),
        clock: nemesis::needs_clock(kinds),
        disk: nemesis::needs_disk(kinds),
        lazyfs: nemesis::needs_lazyfs(kinds),
        root_key,
        args: vec![
            "--abuse-limits".into(),
            "disabled".into(),
            "--request-timeout".into(),
            "5".into(),
        ],
        env: args.node_env.clone(),
        regions: Vec::new(),
        link_delays: Vec::new(),
    };
    let cluster = Cluster::start(opts).await.context("starting the cluster")?;
    let key = cluster.create_project("jepsen", SCOPES).await?;
    let urls: Vec<String> = cluster.urls().into_iter().map(|(_, u)| u).collect();
    let api = api::Api::new(urls, "jepsen", &key, Duration::from_secs(8));
    api.setup(
        reqwest::Method::POST,
        "/tablesdb",
        json!({ "databaseId": api::DB, "name": "jepsen" }),
    )
    .await?;
    let workloads: Vec<Arc<dyn Workload>> = workload::all()
        .into_iter()
        .filter(|w| names.iter().any(|n| n == w.name()))
        .map(Arc::from)
        .collect();
    for w in &workloads {
        w.setup(&api)
            .await
            .with_context(|| format!("setting up {}", w.name()))?;
    }

    let start = Instant::now();
    let until = start + Duration::from_secs(args.time);
    let recorders: Vec<Arc<Recorder>> = workloads
        .iter()
        .map(|_| Arc::new(Recorder::new(start)))
        .collect();
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let mut clients = Vec::new();
    for (w, rec) in workloads.iter().zip(&recorders) {
        for c in 0..args.concurrency {
            let (w, rec, api) = (w.clone(), rec.clone(), api.clone());
            let nodes = args.nodes as u64;
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                seed ^ (c + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            clients.push(tokio::spawn(async move {
                let mut process = c;
                let node = c % nodes + 1;
                while Instant::now() < until {
                    let (f, value) = w.generate(&mut rng);
                    rec.push(
                        Type::Invoke,
                        Process::Client(process),
                        f,
                        value.clone(),
                        Some(node),
                        None,
                    );
                    let (t, v, e) = w.invoke(&api, node, f, &value).await;
                    rec.push(t, Process::Client(process), f, v, Some(node), e);
                    if t == Type::Info {
                        // Its operation may still be in flight: never reuse the process.
                        process += 1_000;
                    }
                    // A client whose node does not answer backs off, as a real one would (and
                    // a refused connection, being quick, does not flood the history).
                    let pause = if t == Type::Ok { 0..20 } else { 50..150 };
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(pause))).await;
                }
            }));
        }
    }
    let (windows, nemesis_errors) = nemesis::run(
        cluster.clone(),
        recorders.clone(),
        kinds.to_vec(),
        seed,
        start,
        until,
    )
    .await;
    for c in clients {
        c.await?;
    }
    let load_end = start.elapsed().as_nanos() as u64;

    // Heal whatever is left, wait for the whole cluster, then the final reads. An error from
    // here on is recorded, and the histories are still written and checked.
    let mut errors: Vec<String> = nemesis_errors;
    let mut c = cluster.lock().await;
    if let Err(e) = c.heal_all().await {
        errors.push(format!("healing: {e:#}"));
    }
    let ids = c.ids();
    if let Err(e) = c.wait_for_voters(&ids, Duration::from_secs(90)).await {
        errors.push(format!("recovery: {e:#}"));
    }
    drop(c);
    let mut final_errors = Vec::new();
    for (i, (w, rec)) in workloads.iter().zip(&recorders).enumerate() {
        for (k, (f, value)) in w.final_ops().into_iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut attempt = 0u64;
            loop {
                let process = Process::Client(
                    (1 << 40) + (i as u64) * 1_000_000 + k as u64 * 10_000 + attempt,
                );
                let node = attempt % args.nodes as u64 + 1;
                rec.push(Type::Invoke, process, f, value.clone(), Some(node), None);
                let (t, v, e) = w.invoke(&api, node, f, &value).await;
                rec.push(t, process, f, v, Some(node), e.clone());
                if t == Type::Ok {
                    break;
                }
                if Instant::now() > deadline {
                    final_errors.push(format!("{}: final {f} never succeeded: {e:?}", w.name()));
                    break;
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let mut c = cluster.lock().await;
    let check = c.check(Duration::from_secs(60)).await;
    // A node that died without the nemesis killing it (a crash, an abort) is a finding,
    // however well the cluster coped.
    errors.extend(
        c.unexpected_exits()
            .into_iter()
            .map(|(id, how)| format!("node {id} exited by itself: {how}")),
    );
    c.shutdown();
    let panics: Vec<String> = c
        .nodes
        .iter()
        .flat_map(|n| {
            n.logs()
                .lines()
                .filter(|l| l.contains("panicked at"))
                .map(|l| format!("node {}: {l}", n.id()))
                .collect::<Vec<_>>()
        })
        .collect();
    let unsynced_lost = c.unsynced_bytes_lost();
    drop(c);

    let histories: Vec<(&str, Vec<history::Op>)> = workloads
        .iter()
        .zip(&recorders)
        .map(|(w, r)| (w.name(), r.history()))
        .collect();
    let mut verdicts = serde_json::Map::new();
    let mut anomalies = 0u64;
    for ((name, h), w) in histories.iter().zip(&workloads) {
        report::write_history(&dir.join(format!("{name}.jsonl")), h)?;
        let v = w.check(h);
        if v["valid"] != true {
            anomalies += 1;
        }
        verdicts.insert(name.to_string(), v);
    }
    let check_report = match &check {
        Ok(r) => {
            let digests: Vec<&Value> = r["digests"]
                .as_object()
                .map(|d| d.values().collect())
                .unwrap_or_default();
            let most = digests
                .iter()
                .map(|d| digests.iter().filter(|e| *e == d).count())
                .max()
                .unwrap_or(0);
            let mismatches = ids.len() - most;
            json!({ "consistent": r["consistent"] == true && mismatches == 0, "mismatches": mismatches, "report": r })
        }
        Err(e) => {
            json!({ "consistent": false, "mismatches": ids.len(), "error": format!("{e:#}") })
        }
    };
    let lost = verdicts
        .get("set")
        .and_then(|s| s["lost-count"].as_u64())
        .unwrap_or(0);
    errors.extend(final_errors);
    errors.extend(panics);
    let valid = anomalies == 0 && check_report["consistent"] == true && errors.is_empty();
    let verdict = json!({
        "seed": seed,
        "valid": valid,
        "time-s": args.time,
        "nodes": args.nodes,
        "faults": windows.iter().map(|w| w.name.clone()).collect::<Vec<_>>(),
        "workloads": verdicts,
        "anomalies": anomalies,
        "acknowledged-lost": lost,
        // What the lose-unsynced faults dropped (written, never fsynced): proof they cut.
        "unsynced-bytes-lost": unsynced_lost,
        "cluster-check": check_report,
        "availability": report::availability(&histories, &windows, load_end),
        "errors": errors,
        "windows": windows,
    });
    std::fs::write(
        dir.join("timeline.html"),
        report::timeline(&format!("seed {seed}"), &histories, &windows),
    )?;
    if valid && !args.keep_data {
        for id in &ids {
            let _ = std::fs::remove_dir_all(dir.join("cluster").join(format!("node{id}")));
        }
    }
    Ok(verdict)
}
