//! Where the IPAM state lives: one compare-and-swap primitive over the
//! whole state, and an in-memory store for tests.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::state::{IpamState, Revision};
use super::IpamError;

/// A store of the whole [`IpamState`] with compare-and-swap.
///
/// Every change is: `load`, compute a new state, `compare_and_swap`
/// against the loaded revision, and on a miss start over. A store must
/// make the swap atomic against every other writer, in this process or
/// any other.
pub trait IpamStore: Send + Sync {
    /// The current state and its revision; an empty state and
    /// [`Revision::ABSENT`] when nothing was ever stored.
    fn load(&self) -> impl Future<Output = Result<(IpamState, Revision), IpamError>> + Send;

    /// Replaces the state with `new` if it is still at `expected`;
    /// `Ok(false)` when someone else changed it first.
    fn compare_and_swap(
        &self,
        expected: Revision,
        new: &IpamState,
    ) -> impl Future<Output = Result<bool, IpamError>> + Send;
}

impl<S: IpamStore> IpamStore for Arc<S> {
    fn load(&self) -> impl Future<Output = Result<(IpamState, Revision), IpamError>> + Send {
        (**self).load()
    }

    fn compare_and_swap(
        &self,
        expected: Revision,
        new: &IpamState,
    ) -> impl Future<Output = Result<bool, IpamError>> + Send {
        (**self).compare_and_swap(expected, new)
    }
}

/// A store in memory, shared by clones of one `Arc`; revisions count
/// writes. For tests, it can be told to miss the next swaps.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Stored>,
    forced_misses: AtomicU32,
}

#[derive(Debug, Default)]
struct Stored {
    state: IpamState,
    writes: u64,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Makes the next `n` swaps report a conflict, as if another writer
    /// had won each time.
    pub fn force_misses(&self, n: u32) {
        self.forced_misses.store(n, Ordering::SeqCst);
    }

    /// Number of successful swaps so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        // A panic while holding the lock cannot leave `Stored` half
        // written (each write is one assignment), so poisoning is moot.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn revision(writes: u64) -> Revision {
        if writes == 0 {
            Revision::ABSENT
        } else {
            Revision::new(writes.to_string())
        }
    }
}

impl IpamStore for MemStore {
    async fn load(&self) -> Result<(IpamState, Revision), IpamError> {
        let stored = self.lock();
        Ok((stored.state.clone(), MemStore::revision(stored.writes)))
    }

    async fn compare_and_swap(
        &self,
        expected: Revision,
        new: &IpamState,
    ) -> Result<bool, IpamError> {
        let forced = self
            .forced_misses
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if forced.is_ok() {
            return Ok(false);
        }
        let mut stored = self.lock();
        if MemStore::revision(stored.writes) != expected {
            return Ok(false);
        }
        stored.state = new.clone();
        stored.writes += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn swap_succeeds_only_at_the_loaded_revision() {
        let store = MemStore::new();
        let (state, rev) = store.load().await.unwrap();
        assert_eq!(rev, Revision::ABSENT);
        let mut next = state.clone();
        next.handles.clear();
        assert!(store.compare_and_swap(rev.clone(), &next).await.unwrap());
        assert!(!store.compare_and_swap(rev, &next).await.unwrap());
        let (_, rev) = store.load().await.unwrap();
        store.force_misses(1);
        assert!(!store.compare_and_swap(rev.clone(), &next).await.unwrap());
        assert!(store.compare_and_swap(rev, &next).await.unwrap());
        assert_eq!(store.writes(), 2);
    }
}
