//! The faults, each with its cure. Node ids are the cluster's (1-based).

use crate::cluster::{Cluster, START_TIMEOUT};
use anyhow::{anyhow, Result};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9; healed by a restart on the same data dir.
    Kill { nodes: Vec<u64> },
    /// SIGSTOP; healed by SIGCONT.
    Pause { nodes: Vec<u64> },
    /// Packets from the first node of each pair to the second are dropped. `shape` names the
    /// topology (`majority`, `isolate-leader`, `bridge`, `one-way`, ...).
    Partition { shape: String, cut: Vec<(u64, u64)> },
    /// A percentage of the packets between nodes is dropped at random.
    Loss { percent: u8 },
    /// Every node-to-node link is slowed: `ms` plus up to `jitter_ms`, each way.
    Delay { ms: u64, jitter_ms: u64 },
    /// The nodes' wall clocks run `seconds` off the real time (libfaketime).
    Skew { nodes: Vec<u64>, seconds: i64 },
    /// Node `removed` leaves the membership (`cluster remove`, then stopped); healed by a fresh
    /// node, id `added`, joining on its host: remove, add and replace, under load.
    Membership { removed: u64, added: u64 },
    /// The nodes' fsync and fdatasync calls fail, each with `probability` (libfiu); a node
    /// should stop itself rather than go on. Healed by a working disk and a restart.
    Disk { nodes: Vec<u64>, probability: f64 },
    /// A power cut: the nodes are killed and every write they had not fsynced is lost (their
    /// data dirs are on lazy file systems). Healed by a restart on what is left.
    LoseUnsynced { nodes: Vec<u64> },
}

impl Fault {
    /// Nodes in different groups cannot reach each other, in either direction.
    pub fn split(shape: &str, groups: &[Vec<u64>]) -> Fault {
        let mut cut = Vec::new();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    cut.extend(a.iter().flat_map(|x| b.iter().map(move |y| (*x, *y))));
                }
            }
        }
        Fault::Partition {
            shape: shape.into(),
            cut,
        }
    }

    /// `node` alone on one side, every other node on the other.
    pub fn isolate(shape: &str, node: u64, all: &[u64]) -> Fault {
        let rest: Vec<u64> = all.iter().copied().filter(|n| *n != node).collect();
        Fault::split(shape, &[vec![node], rest])
    }

    /// Jepsen's bridge: two halves that each reach only the middle node (with 3 nodes: 1 and
    /// 3 cannot talk, 2 reaches both).
    pub fn bridge(all: &[u64]) -> Fault {
        let mid = all.len() / 2;
        let (left, right) = (&all[..mid], &all[mid + 1..]);
        Fault::split("bridge", &[left.to_vec(), right.to_vec()])
    }

    /// Packets from `from` to `to` are dropped; the other way still flows.
    pub fn one_way(from: &[u64], to: &[u64]) -> Fault {
        Fault::Partition {
            shape: "one-way".into(),
            cut: from
                .iter()
                .flat_map(|f| to.iter().filter(move |t| *t != f).map(move |t| (*f, *t)))
                .collect(),
        }
    }

    /// Its short name, as histories and reports group faults.
    pub fn name(&self) -> String {
        match self {
            Fault::Kill { .. } => "kill".into(),
            Fault::Pause { .. } => "pause".into(),
            Fault::Partition { shape, .. } => format!("partition-{shape}"),
            Fault::Loss { .. } => "loss".into(),
            Fault::Delay { .. } => "delay".into(),
            Fault::Skew { .. } => "clock".into(),
            Fault::Disk { .. } => "disk".into(),
            Fault::Membership { .. } => "membership".into(),
            Fault::LoseUnsynced { .. } => "lose-unsynced".into(),
        }
    }

    /// Whether it needs nodes in network namespaces.
    pub fn needs_net(&self) -> bool {
        matches!(
            self,
            Fault::Partition { .. } | Fault::Loss { .. } | Fault::Delay { .. }
        )
    }
}

impl Cluster {
    fn net(&mut self) -> Result<&mut crate::net::Net> {
        self.net
            .as_mut()
            .ok_or_else(|| anyhow!("network faults need the nodes in network namespaces"))
    }

    pub async fn inject(&mut self, f: &Fault) -> Result<()> {
        match f {
            Fault::Kill { nodes } => {
                for id in nodes {
                    self.node(*id)?.kill()?;
                }
            }
            Fault::Pause { nodes } => {
                for id in nodes {
                    self.node(*id)?.pause()?;
                }
            }
            Fault::Partition { cut, .. } => {
                // A node's host is its slot (a node added in place of a removed one takes
                // over the removed one's host), not its id.
                let mut pairs = Vec::new();
                for (a, b) in cut {
                    pairs.push((self.slot(*a)?, self.slot(*b)?));
                }
                self.net()?.block(&pairs)?;
            }
            Fault::Loss { percent } => self.net()?.lose(*percent)?,
            Fault::Delay { ms, jitter_ms } => self.net()?.delay(*ms, *jitter_ms)?,
            Fault::Skew { nodes, seconds } => {
                for id in nodes {
                    self.node(*id)?.skew(*seconds)?;
                }
            }
            Fault::Disk { nodes, probability } => {
                for id in nodes {
                    self.node(*id)?.fail_disk(*probability)?;
                }
            }
            Fault::Membership { removed, .. } => self.remove_member(*removed).await?,
            Fault::LoseUnsynced { nodes } => {
                for id in nodes {
                    self.disk(*id)?;
                }
                // Every node dead first (nothing more reaches a disk; a killed process exits
                // only once its file system has answered what it sent), then the cut, at
                // once for all of them: a power cut, not a rolling crash.
                for id in nodes {
                    let n = self.node(*id)?;
                    if n.alive() {
                        n.kill()?;
                    }
                }
                for id in nodes {
                    self.disk(*id)?.lose_unsynced();
                }
            }
        }
        Ok(())
    }

    /// Undoes `f`: restarts killed nodes, resumes paused ones, heals the network, sets the
    /// clocks right.
    pub async fn heal(&mut self, f: &Fault) -> Result<()> {
        match f {
            Fault::Kill { nodes } | Fault::LoseUnsynced { nodes } => {
                for id in nodes {
                    let n = self.node(*id)?;
                    if !n.alive() {
                        n.start(&[], START_TIMEOUT).await?;
                    }
                }
            }
            Fault::Pause { nodes } => {
                for id in nodes {
                    let n = self.node(*id)?;
                    if n.alive() && !n.up() {
                        n.resume()?;
                    }
                }
            }
            Fault::Partition { .. } | Fault::Loss { .. } | Fault::Delay { .. } => {
                self.net()?.heal()?
            }
            Fault::Skew { nodes, .. } => {
                for id in nodes {
                    self.node(*id)?.skew(0)?;
                }
            }
            Fault::Disk { nodes, .. } => {
                for id in nodes {
                    let n = self.node(*id)?;
                    n.heal_disk()?;
                    if !n.alive() {
                        n.start(&[], START_TIMEOUT).await?;
                    }
                }
            }
            Fault::Membership { removed, added } => {
                if self.is_retired(*removed) && !self.ids().contains(added) {
                    self.add_member(*removed, *added).await?;
                }
            }
        }
        Ok(())
    }
}

impl Cluster {
    /// Undoes every fault at once: the network healed, clocks set right, paused nodes
    /// resumed, stopped ones restarted.
    pub async fn heal_all(&mut self) -> Result<()> {
        if let Some(net) = self.net.as_mut() {
            net.heal()?;
        }
        let retired: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.id())
            .filter(|id| self.is_retired(*id))
            .collect();
        for n in &mut self.nodes {
            // A removed node stays stopped: its host waits for the node that replaces it.
            if retired.contains(&n.id()) {
                continue;
            }
            if n.cfg.clock_file.is_some() {
                n.skew(0)?;
            }
            if n.alive() && !n.up() {
                n.resume()?;
            }
            if n.cfg.fiu.is_some() {
                n.heal_disk()?;
            }
            if !n.alive() {
                n.start(&[], START_TIMEOUT).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cut_both_ways_between_groups_only() {
        let Fault::Partition { cut, .. } = Fault::split("majority", &[vec![1], vec![2, 3]]) else {
            unreachable!()
        };
        let mut cut = cut;
        cut.sort();
        assert_eq!(cut, vec![(1, 2), (1, 3), (2, 1), (3, 1)]);
    }

    #[test]
    fn bridge_leaves_the_middle_node_connected() {
        let Fault::Partition { cut, .. } = Fault::bridge(&[1, 2, 3, 4, 5]) else {
            unreachable!()
        };
        assert!(cut.iter().all(|(a, b)| *a != 3 && *b != 3));
        assert!(cut.contains(&(1, 4)) && cut.contains(&(5, 2)));
        assert!(!cut.contains(&(1, 2)) && !cut.contains(&(4, 5)));
    }

    #[test]
    fn one_way_cuts_one_direction() {
        let Fault::Partition { cut, .. } = Fault::one_way(&[1], &[2, 3]) else {
            unreachable!()
        };
        assert_eq!(cut, vec![(1, 2), (1, 3)]);
    }
}
