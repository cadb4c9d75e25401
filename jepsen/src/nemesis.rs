//! The nemesis: a seeded, randomized schedule of faults. It waits a while, picks a fault of an
//! enabled kind, injects it, holds it, heals it, and again until the run's time is up. Each
//! start and stop is an `info` event of the `nemesis` process in every workload's history.

use crate::history::{Process, Type};
use crate::recorder::Recorder;
use faults::{Cluster, Fault};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub const KINDS: &[&str] = &[
    "kill",
    "pause",
    "partition",
    "loss",
    "delay",
    "clock",
    "disk",
    "membership",
    "lose-unsynced",
];

/// What a kind needs of the cluster: network namespaces, libfaketime.
pub fn needs_net(kinds: &[String]) -> bool {
    // A node added in place of a removed one takes over its host (address and ports), so
    // the clients' view of the nodes does not change.
    kinds
        .iter()
        .any(|k| ["partition", "loss", "delay", "membership"].contains(&k.as_str()))
}

pub fn needs_clock(kinds: &[String]) -> bool {
    kinds.iter().any(|k| k == "clock")
}

pub fn needs_disk(kinds: &[String]) -> bool {
    kinds.iter().any(|k| k == "disk")
}

pub fn needs_lazyfs(kinds: &[String]) -> bool {
    kinds.iter().any(|k| k == "lose-unsynced")
}

/// A minority: at most (n − 1) / 2 nodes, at least one.
fn minority(rng: &mut StdRng, ids: &[u64], leader: Option<u64>) -> Vec<u64> {
    let most = ((ids.len() - 1) / 2).max(1);
    let k = rng.gen_range(1..=most);
    let mut pick: Vec<u64> = ids.to_vec();
    pick.shuffle(rng);
    // Half the time the leader is among them: losing it is the interesting case. (Every draw
    // is made whatever the cluster looks like, so one seed gives one sequence of draws.)
    let with_leader = rng.gen_bool(0.5);
    if let (Some(l), true) = (leader, with_leader) {
        pick.retain(|x| *x != l);
        pick.insert(0, l);
    }
    pick.truncate(k);
    pick
}

/// The next fault of one of `kinds`; `next_id` is the id a node added now would get.
pub fn next(
    rng: &mut StdRng,
    kinds: &[String],
    ids: &[u64],
    leader: Option<u64>,
    next_id: u64,
) -> Fault {
    let kind = kinds.choose(rng).expect("at least one kind");
    match kind.as_str() {
        "membership" => Fault::Membership {
            removed: minority(rng, ids, leader)[0],
            added: next_id,
        },
        "kill" => Fault::Kill {
            nodes: minority(rng, ids, leader),
        },
        "pause" => Fault::Pause {
            nodes: minority(rng, ids, leader),
        },
        "loss" => Fault::Loss {
            percent: rng.gen_range(10..=40),
        },
        "delay" => Fault::Delay {
            ms: rng.gen_range(20..=300),
            jitter_ms: rng.gen_range(0..=100),
        },
        "disk" => Fault::Disk {
            nodes: minority(rng, ids, leader),
            probability: [0.05, 0.5, 1.0][rng.gen_range(0..3)],
        },
        // A power cut of a minority, or a third of the time of every node at once: what
        // was acknowledged was fsynced, so it must survive even that.
        "lose-unsynced" => Fault::LoseUnsynced {
            nodes: match rng.gen_range(0..3) {
                0 => ids.to_vec(),
                _ => minority(rng, ids, leader),
            },
        },
        "clock" => Fault::Skew {
            nodes: minority(rng, ids, leader),
            seconds: rng.gen_range(1..=120) * if rng.gen_bool(0.5) { 1 } else { -1 },
        },
        _ => {
            let mut shuffled = ids.to_vec();
            shuffled.shuffle(rng);
            match rng.gen_range(0..4) {
                0 => {
                    let small = minority(rng, ids, leader);
                    let rest: Vec<u64> =
                        ids.iter().copied().filter(|x| !small.contains(x)).collect();
                    Fault::split("majority", &[small, rest])
                }
                1 => Fault::isolate("isolate-leader", leader.unwrap_or(shuffled[0]), ids),
                2 => Fault::bridge(&shuffled),
                _ => {
                    let leader_side = rng.gen_bool(0.5);
                    let one = leader.filter(|_| leader_side).unwrap_or(shuffled[0]);
                    let rest: Vec<u64> = ids.iter().copied().filter(|x| *x != one).collect();
                    if rng.gen_bool(0.5) {
                        Fault::one_way(&[one], &rest)
                    } else {
                        Fault::one_way(&rest, &[one])
                    }
                }
            }
        }
    }
}

/// A fault that was in force from `start` to `end` (ns since the run began).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Window {
    pub name: String,
    pub start: u64,
    pub end: u64,
    pub fault: Fault,
}

fn record(recorders: &[Arc<Recorder>], f: &str, value: serde_json::Value) {
    for r in recorders {
        r.push(Type::Info, Process::Nemesis, f, value.clone(), None, None);
    }
}

/// Runs the schedule until `until`; returns the faults' windows. Errors while injecting or
/// healing are recorded and end the schedule (the run's verdict reports them).
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    recorders: Vec<Arc<Recorder>>,
    kinds: Vec<String>,
    seed: u64,
    start: Instant,
    until: Instant,
) -> (Vec<Window>, Vec<String>) {
    let mut rng: StdRng = rand::SeedableRng::seed_from_u64(seed);
    let (mut windows, mut errors) = (Vec::new(), Vec::new());
    if kinds.is_empty() {
        return (windows, errors);
    }
    let now_ns = || start.elapsed().as_nanos() as u64;
    loop {
        let quiet = Duration::from_millis(rng.gen_range(1_000..4_000));
        let hold = Duration::from_millis(rng.gen_range(2_000..8_000));
        if Instant::now() + quiet + hold > until {
            break;
        }
        tokio::time::sleep(quiet).await;
        let mut c = cluster.lock().await;
        let leader = c.leader().await;
        let fault = next(&mut rng, &kinds, &c.ids(), leader, c.next_id());
        let value = serde_json::to_value(&fault).expect("fault json");
        let name = fault.name();
        record(&recorders, &format!("start-{name}"), value.clone());
        let begun = now_ns();
        if let Err(e) = c.inject(&fault).await {
            errors.push(format!("injecting {name}: {e:#}"));
            let _ = c.heal(&fault).await;
            break;
        }
        drop(c);
        tokio::time::sleep(hold).await;
        let mut c = cluster.lock().await;
        let healed = c.heal(&fault).await;
        record(&recorders, &format!("stop-{name}"), value);
        windows.push(Window {
            name: name.clone(),
            start: begun,
            end: now_ns(),
            fault,
        });
        if let Err(e) = healed {
            errors.push(format!("healing {name}: {e:#}"));
            break;
        }
    }
    (windows, errors)
}
