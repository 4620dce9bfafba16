//! The agent's revision: one counter that every change it sees advances —
//! an object added, changed or removed in the datastore, an endpoint
//! attached or detached on this node — with a way to wait for the next one.
//!
//! Writers advance the counter *after* their change is visible, while
//! still holding the lock that guards it. So a reader that reads revision
//! `r` first and then takes its snapshots sees every change numbered `r`
//! or lower (and perhaps later ones): claiming `r` for what it computes
//! from those snapshots is never an overstatement.

use tokio::sync::watch;

/// The shared counter. Cloning is cheap; clones share the count.
#[derive(Debug, Clone)]
pub struct Revision(watch::Sender<u64>);

impl Default for Revision {
    fn default() -> Self {
        Revision(watch::Sender::new(0))
    }
}

impl Revision {
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest revision.
    pub fn current(&self) -> u64 {
        *self.0.borrow()
    }

    /// Advances the counter by one and wakes every subscriber; returns the
    /// new revision.
    pub fn advance(&self) -> u64 {
        let mut next = 0;
        self.0.send_modify(|r| {
            *r += 1;
            next = *r;
        });
        next
    }

    /// A receiver that sees every later advance (as changed).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advances_and_wakes_subscribers() {
        let rev = Revision::new();
        let mut rx = rev.subscribe();
        assert_eq!(rev.current(), 0);
        let clone = rev.clone();
        assert_eq!(clone.advance(), 1);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 1);
        assert_eq!(rev.advance(), 2);
        assert_eq!(rev.current(), 2);
    }
}
