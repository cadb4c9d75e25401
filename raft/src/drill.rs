//! Drills against a running node (`basalt drill partition` without `--local`): a node told to
//! isolate itself refuses every node-to-node request, in and out, until the time is up, as a
//! network partition would cut it off; its clients still reach it, as in a real partition.
//! Gossip is left alone (it only colours `cluster status`' health column).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A state that ends by itself: until when it holds, if it does (a drill's isolation, a
/// leader's hand-over).
#[derive(Debug, Default)]
pub(crate) struct Until(Mutex<Option<Instant>>);

impl Until {
    pub(crate) const fn new() -> Until {
        Until(Mutex::new(None))
    }

    /// Holds for `d` from now (a later call replaces an earlier one).
    pub(crate) fn set(&self, d: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + d);
    }

    pub(crate) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn active(&self) -> bool {
        let until = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Resolves once it no longer holds (ended, or cleared), checking every 10 ms.
    pub(crate) async fn passed(&self) {
        while self.active() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// This process's isolation (one node per process).
static NODE: Until = Until::new();

/// Cuts this node off from its peers for `d` (a later call replaces an earlier one).
pub fn isolate(d: Duration) {
    NODE.set(d);
}

/// Whether a drill has this node cut off now.
pub fn isolated() -> bool {
    NODE.active()
}

/// The reason peers are told.
pub const ISOLATED: &str = "isolated by an operator drill";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_ends_by_itself() {
        // A value of its own: the process-wide one would cut off other tests' nodes.
        let i = Until::new();
        assert!(!i.active());
        i.set(Duration::from_millis(50));
        assert!(i.active());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!i.active());
    }
}
