//! Bounded-staleness reads: how stale this node's applied state may be, provably.
//!
//! A leader knows the last time a quorum acknowledged it (openraft's `millis_since_quorum_ack`,
//! timed from when the acknowledged append was sent). No other leader can have acknowledged a
//! write before that time `q`: electing one needs a vote from that quorum, which acknowledged
//! this leader's term at `q`. So every write acknowledged before `q` sits at an index no
//! higher than this leader's log end `L` as of `q` (a write this leader acknowledged is in its
//! log; one an earlier leader acknowledged was committed, so it is in this leader's log too).
//! Not its commit index: a new leader commits its predecessors' entries only with one of its
//! own, so its commit index can trail a write acknowledged before it was elected. The leader
//! stamps each append it sends with `(L, q)` (gRPC metadata `x-basalt-closed`; an older node
//! ignores it).
//!
//! A follower (or learner) that accepted the append knows: once it has applied L, its state
//! holds every write acknowledged before `q`, in the leader's clock. Read at local wall time
//! `now`, its state is stale by at most `now - q`, converted to this node's clock with the
//! probes' estimate of the leader's clock offset, whose error is at most half the probe's
//! round trip: `staleness <= now - q + ahead + rtt / 2`. The leader itself, once it has applied
//! L, is stale by at most `now - q`.

use std::collections::VecDeque;
use std::sync::Mutex;

/// The metadata key an append's stamp travels under.
pub const STAMP_HEADER: &str = "x-basalt-closed";

/// Stamps a follower keeps while it has not applied that far.
const PENDING: usize = 256;

/// One leader's statement: every write acknowledged before `q` (its wall clock, ms) is at an
/// index no higher than `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub leader: u64,
    pub index: u64,
    pub q: i64,
}

impl Stamp {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.index, self.q)
    }

    pub fn decode(leader: u64, s: &str) -> Option<Stamp> {
        let (index, q) = s.split_once(':')?;
        Some(Stamp {
            leader,
            index: index.parse().ok()?,
            q: q.parse().ok()?,
        })
    }
}

/// What a leader knows of itself: in `term`, a quorum acknowledged it at `q` (wall ms), when
/// its log ended at `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lead {
    pub term: u64,
    pub q: i64,
    pub index: u64,
}

#[derive(Debug, Default)]
struct State {
    /// While this node leads: its term, when a quorum last acknowledged it (wall ms), and its
    /// log end then.
    lead: Option<Lead>,
    /// Stamps received, oldest first, with rising `q`: those not yet applied.
    pending: VecDeque<Stamp>,
    /// The newest stamp this node has applied past.
    applied: Option<Stamp>,
}

/// This node's closed-timestamp bookkeeping.
#[derive(Debug, Default)]
pub struct Closed(Mutex<State>);

impl Closed {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this node knows as leader; `None`: it does not lead.
    pub fn set_lead(&self, lead: Option<Lead>) {
        let mut st = self.state();
        st.lead = match (st.lead, lead) {
            // Never backwards within a term (metrics may arrive out of order).
            (Some(old), Some(new)) if old.term == new.term && old.q > new.q => Some(old),
            (_, l) => l,
        };
    }

    /// The stamp for an append this leader sends in `term`.
    pub fn stamp_for(&self, term: u64) -> Option<String> {
        match self.state().lead {
            Some(l) if l.term == term => Some(format!("{}:{}", l.index, l.q)),
            _ => None,
        }
    }

    /// A stamp from an append this node accepted.
    pub fn received(&self, stamp: Stamp) {
        let mut st = self.state();
        if st
            .applied
            .is_some_and(|a| a.leader == stamp.leader && a.q >= stamp.q)
        {
            return;
        }
        if st
            .pending
            .back()
            .is_some_and(|b| b.leader == stamp.leader && b.q >= stamp.q)
        {
            return;
        }
        if st.pending.len() >= PENDING {
            st.pending.pop_back();
        }
        st.pending.push_back(stamp);
    }

    /// The newest stamp this node's state satisfies, having applied up to `applied`.
    pub fn newest(&self, applied: u64) -> Option<Stamp> {
        let mut st = self.state();
        while st.pending.front().is_some_and(|s| s.index <= applied) {
            let s = st.pending.pop_front();
            st.applied = s;
        }
        st.applied
    }

    /// As leader: what it knows of itself.
    pub fn lead(&self) -> Option<Lead> {
        self.state().lead
    }
}

/// How stale a state satisfying `stamp` is at most, at this node's wall time `now` (ms), given
/// how far the stamping leader's clock runs ahead of this node's (`ahead`, ms) and the round
/// trip of the probe that measured it (`rtt_ms`).
pub fn staleness_ms(now: i64, stamp_q: i64, ahead: i64, rtt_ms: i64) -> u64 {
    // Plus 2 ms for the millisecond clocks and the probe's halved round trip, both floored.
    let bound = now - stamp_q + ahead + (rtt_ms + 1) / 2 + 2;
    bound.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_counts_once_its_index_is_applied() {
        let c = Closed::default();
        let s = |index, q| Stamp {
            leader: 1,
            index,
            q,
        };
        c.received(s(10, 1_000));
        c.received(s(12, 1_100));
        c.received(s(12, 1_050)); // older than the last: ignored
        c.received(s(20, 1_200));
        assert_eq!(c.newest(9), None);
        assert_eq!(c.newest(12), Some(s(12, 1_100)));
        assert_eq!(c.newest(15), Some(s(12, 1_100)));
        assert_eq!(c.newest(25), Some(s(20, 1_200)));
        assert_eq!(Stamp::decode(1, &s(7, 99).encode()), Some(s(7, 99)));
        assert_eq!(Stamp::decode(1, "7"), None);
    }

    #[test]
    fn a_leaders_quorum_time_never_goes_back_within_a_term() {
        let c = Closed::default();
        let lead = |term, q, index| Some(Lead { term, q, index });
        c.set_lead(lead(3, 1_000, 7));
        c.set_lead(lead(3, 900, 8));
        assert_eq!(c.stamp_for(3).as_deref(), Some("7:1000"));
        assert_eq!(c.stamp_for(4), None);
        c.set_lead(lead(4, 900, 9));
        assert_eq!(c.stamp_for(4).as_deref(), Some("9:900"));
        c.set_lead(None);
        assert_eq!(c.lead(), None);
    }

    #[test]
    fn staleness_allows_for_the_clock_estimate() {
        // The leader's clock runs 30 ms ahead, measured over a 100 ms round trip.
        assert_eq!(staleness_ms(10_000, 9_900, 30, 100), 100 + 30 + 50 + 2);
        assert_eq!(staleness_ms(10_000, 10_500, 0, 0), 0);
    }
}
