//! Placement by region (`basalt cluster placement`): which members vote, which are read
//! replicas (Raft learners), and which may campaign for the lead. The policy is Raft state
//! (`ClusterOp::SetPlacement`); the leader reconciles the membership with it
//! (`RaftNode::reconcile_placement`) and every node decides from it whether to campaign. What
//! is here is the pure part: given the members as the leader sees them, the voters it wants.

use model::schema::Placement;
use std::collections::{BTreeMap, BTreeSet};

/// Voters the reconciler makes, at most: beyond seven, every write waits on more replicas for
/// no region-loss tolerance a policy can ask for.
pub const MAX_VOTERS: usize = 7;

/// A member as the leader sees it.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub region: String,
    /// Its `--zone` within the region (empty: none).
    pub zone: String,
    pub voter: bool,
    /// Answered this node lately (this node itself: always).
    pub healthy: bool,
    /// Its log is close behind the leader's: a learner may be promoted.
    pub caught_up: bool,
}

/// The voters the policy wants of these members, or `None` to change nothing now.
///
/// - Nothing changes while a voter is unhealthy: a change then would be decided on a partial
///   view and could leave too few voters reachable to commit it (the operator removes a member
///   that is gone for good with `basalt cluster remove`).
/// - Candidates are the healthy members of voting regions: voters, and learners caught up.
/// - A policy with voters in three regions or more must survive the loss of any one region:
///   the voters are then spread so that no region holds as many as a quorum needs from the
///   others (e.g. one node of a region with two stays a read replica when the others have one
///   each), preferring an odd count (an even one tolerates no more failures), the most voters
///   up to `MAX_VOTERS`, and the fewest changes.
/// - Otherwise (one or two voting regions, or no policy): every candidate, up to `MAX_VOTERS`.
/// - Within a region, current voters are kept first; new ones are taken from the zones with
///   the fewest voters, so a zone's loss takes as few as it can.
/// - The leader keeps its vote (leadership moves first: see `should_campaign`/hand-over).
/// - A plan never leaves fewer than two voters (or the current count, if fewer): a policy
///   naming a region with no member yet, or misspelt, must not shrink the cluster to its
///   leader alone, one failure away from an outage.
pub fn plan_voters(policy: &Placement, members: &[Member], leader: u64) -> Option<BTreeSet<u64>> {
    if members.iter().any(|m| m.voter && !m.healthy) {
        return None;
    }
    let current: BTreeSet<u64> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    // Candidates by region, current voters first, then by id.
    let mut by_region: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in members {
        if policy.votes(&m.region) && m.healthy && (m.voter || m.caught_up) {
            by_region.entry(&m.region).or_default().push(m);
        }
    }
    for ms in by_region.values_mut() {
        ms.sort_by_key(|m| (!m.voter, m.id != leader, m.id));
        *ms = spread_zones(ms);
    }
    let counts = if policy.survives_region_loss() {
        spread(&by_region, &current)
    } else {
        None
    };
    let mut wanted: BTreeSet<u64> = match counts {
        Some(counts) => by_region
            .iter()
            .zip(counts)
            .flat_map(|((_, ms), c)| ms.iter().take(c).map(|m| m.id))
            .collect(),
        None => {
            let mut all: Vec<&Member> = by_region.values().flatten().copied().collect();
            all.sort_by_key(|m| (!m.voter, m.id != leader, m.id));
            all.into_iter().take(MAX_VOTERS).map(|m| m.id).collect()
        }
    };
    wanted.insert(leader);
    if wanted.len() < current.len().min(2) {
        return None;
    }
    (wanted != current).then_some(wanted)
}

/// `ms` (current voters first) reordered so that after the voters come, in turn, candidates
/// of the zones least represented so far.
fn spread_zones<'a>(ms: &[&'a Member]) -> Vec<&'a Member> {
    let mut out: Vec<&Member> = ms.iter().copied().filter(|m| m.voter).collect();
    let mut rest: Vec<&Member> = ms.iter().copied().filter(|m| !m.voter).collect();
    while !rest.is_empty() {
        let taken = |zone: &str| out.iter().filter(|m| m.zone == zone).count();
        let (i, _) = rest
            .iter()
            .enumerate()
            .min_by_key(|(i, m)| (taken(&m.zone), *i))
            .expect("not empty");
        out.push(rest.remove(i));
    }
    out
}

/// Whether voters counted so per region leave a quorum when any one region is lost.
pub fn survives_region_loss(counts: &[usize]) -> bool {
    let total: usize = counts.iter().sum();
    let quorum = total / 2 + 1;
    total > 0 && counts.iter().all(|c| total - c >= quorum)
}

/// How many voters to take from each region (in `by_region`'s order) so that losing any one
/// leaves a quorum; `None` if no choice does (fewer than three regions have candidates).
fn spread(by_region: &BTreeMap<&str, Vec<&Member>>, current: &BTreeSet<u64>) -> Option<Vec<usize>> {
    // Losing any region leaves a quorum only if no region holds more than a third-ish: at most
    // three per region within seven voters; the first eight regions are enough to choose from.
    let caps: Vec<usize> = by_region
        .values()
        .take(8)
        .map(|ms| ms.len().min(3))
        .collect();
    let mut best: Option<((bool, usize, usize), Vec<usize>)> = None;
    let mut counts = vec![0usize; caps.len()];
    loop {
        let total: usize = counts.iter().sum();
        if total <= MAX_VOTERS && survives_region_loss(&counts) {
            let kept: usize = by_region
                .values()
                .zip(&counts)
                .map(|(ms, c)| {
                    ms.iter()
                        .take(*c)
                        .filter(|m| current.contains(&m.id))
                        .count()
                })
                .sum();
            let score = (total % 2 == 1, total, kept);
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, counts.clone()));
            }
        }
        // The next combination, like an odometer.
        let mut i = 0;
        loop {
            if i == counts.len() {
                return best.map(|(_, mut c)| {
                    c.resize(by_region.len(), 0);
                    c
                });
            }
            if counts[i] < caps[i] {
                counts[i] += 1;
                break;
            }
            counts[i] = 0;
            i += 1;
        }
    }
}

/// The regions the leader should be in: the policy's leader region, else every voting one.
pub fn preferred(policy: &Placement, region: &str) -> bool {
    match &policy.leader_region {
        Some(r) => r == region,
        None => policy.votes(region),
    }
}

/// Whether a voter of `region` may campaign: always in a preferred region; elsewhere only
/// while no preferred voter is healthy, or the cluster has been leaderless for long enough that
/// the preferred ones evidently cannot win (so a preference never costs availability).
pub fn should_campaign(
    policy: &Placement,
    region: &str,
    preferred_voter_healthy: bool,
    leaderless_too_long: bool,
) -> bool {
    preferred(policy, region) || !preferred_voter_healthy || leaderless_too_long
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(voters: &[&str], leader: Option<&str>) -> Placement {
        Placement {
            voters: voters.iter().map(|s| s.to_string()).collect(),
            learners: vec![],
            leader_region: leader.map(str::to_string),
        }
    }

    fn m(id: u64, region: &str, voter: bool) -> Member {
        Member {
            id,
            region: region.into(),
            zone: String::new(),
            voter,
            healthy: true,
            caught_up: true,
        }
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn no_policy_makes_every_caught_up_member_a_voter() {
        let ms = [m(1, "default", true), m(2, "default", false)];
        assert_eq!(
            plan_voters(&Placement::default(), &ms, 1),
            Some(set(&[1, 2]))
        );
        let mut lagging = ms.clone();
        lagging[1].caught_up = false;
        assert_eq!(plan_voters(&Placement::default(), &lagging, 1), None);
    }

    #[test]
    fn read_replica_regions_never_vote() {
        let p = Placement {
            learners: vec!["eu".into()],
            ..policy(&["us"], None)
        };
        let ms = [
            m(1, "us", true),
            m(2, "us", false),
            m(3, "eu", true),
            m(4, "ap", false),
        ];
        // Node 3 is demoted (kept as a learner by the caller), node 4's region is unnamed.
        assert_eq!(plan_voters(&p, &ms, 1), Some(set(&[1, 2])));
    }

    #[test]
    fn three_regions_are_spread_so_any_one_can_be_lost() {
        let p = policy(&["a", "b", "c"], None);
        // Two in a, one each in b and c: four voters would not survive losing a.
        let ms = [
            m(1, "a", true),
            m(2, "a", true),
            m(3, "b", false),
            m(4, "c", false),
        ];
        let plan = plan_voters(&p, &ms, 1).unwrap();
        assert_eq!(plan, set(&[1, 3, 4]));
        // Two each in a and b, one in c: five voters survive losing any region.
        let ms = [
            m(1, "a", true),
            m(2, "a", false),
            m(3, "b", false),
            m(4, "b", false),
            m(5, "c", false),
        ];
        assert_eq!(plan_voters(&p, &ms, 1), Some(set(&[1, 2, 3, 4, 5])));
        // Already spread: nothing to do.
        let ms = [
            m(1, "a", true),
            m(2, "a", false),
            m(3, "b", true),
            m(4, "c", true),
        ];
        assert_eq!(plan_voters(&p, &ms, 3), None);
    }

    #[test]
    fn regions_still_missing_do_not_stop_a_cluster_growing() {
        let p = policy(&["a", "b", "c"], None);
        let ms = [m(1, "a", true), m(2, "b", false)];
        assert_eq!(plan_voters(&p, &ms, 1), Some(set(&[1, 2])));
    }

    #[test]
    fn nothing_changes_while_a_voter_is_down_and_the_leader_keeps_its_vote() {
        let p = policy(&["a", "b", "c"], None);
        let mut ms = vec![
            m(1, "a", true),
            m(2, "b", true),
            m(3, "c", true),
            m(4, "c", false),
        ];
        ms[2].healthy = false;
        assert_eq!(plan_voters(&p, &ms, 1), None);
        // The leader in a region that no longer votes keeps its vote until it hands over.
        let p = policy(&["a"], None);
        let ms = [m(1, "a", true), m(2, "b", true), m(3, "a", false)];
        assert_eq!(plan_voters(&p, &ms, 2), Some(set(&[1, 2, 3])));
        assert_eq!(plan_voters(&p, &ms, 1), Some(set(&[1, 3])));
        // Never down to the leader alone (a misspelt region, one not deployed yet).
        let p = policy(&["typo"], None);
        let ms = [m(1, "a", true), m(2, "a", true), m(3, "a", true)];
        assert_eq!(plan_voters(&p, &ms, 1), None);
    }

    #[test]
    fn new_voters_come_from_the_zones_with_fewest() {
        let p = policy(&["a", "b", "c"], None);
        let z = |mut m: Member, zone: &str| {
            m.zone = zone.into();
            m
        };
        // Region a may take two voters: node 1 votes in zone a1; node 3 (zone a2) is taken
        // before node 2 (a1, a lower id).
        let ms = [
            z(m(1, "a", true), "a1"),
            z(m(2, "a", false), "a1"),
            z(m(3, "a", false), "a2"),
            m(4, "b", true),
            m(5, "b", false),
            m(6, "c", true),
        ];
        assert_eq!(plan_voters(&p, &ms, 1), Some(set(&[1, 3, 4, 5, 6])));
    }

    #[test]
    fn survival_arithmetic() {
        assert!(survives_region_loss(&[1, 1, 1]));
        assert!(survives_region_loss(&[2, 2, 1]));
        assert!(!survives_region_loss(&[2, 1, 1]));
        assert!(!survives_region_loss(&[1, 1]));
        assert!(survives_region_loss(&[3, 2, 2]));
        assert!(!survives_region_loss(&[]));
    }

    #[test]
    fn only_preferred_regions_campaign_while_one_of_theirs_is_healthy() {
        let p = policy(&["a", "b", "c"], Some("a"));
        assert!(should_campaign(&p, "a", true, false));
        assert!(!should_campaign(&p, "b", true, false));
        assert!(should_campaign(&p, "b", false, false));
        assert!(should_campaign(&p, "b", true, true));
        assert!(preferred(&Placement::default(), "anywhere"));
    }
}
