//! The state a broker's clones, its committing callers and its background
//! threads share, and the wake-up of readers waiting at a partition's end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, RwLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::catalog::Catalog;

/// What the broker handles, the committing callers and the maintenance thread share.
pub(crate) struct Shared {
    pub db: redb::Database,
    pub path: PathBuf,
    pub catalog: RwLock<Catalog>,
    pub arrivals: Arrivals,
    /// Held by a retention or compaction pass: one runs at a time.
    pub maintenance: Mutex<()>,
}

/// Wakes readers waiting for new events: threads blocked in
/// [`wait_until`](Arrivals::wait_until), and the tasks of pending
/// [`Arrival`](crate::Arrival) futures.
#[derive(Default)]
pub(crate) struct Arrivals {
    commits: Mutex<u64>,
    changed: Condvar,
    /// The wakers of pending `Arrival` futures, by their id; a future
    /// removes its own when it is dropped.
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
pub(crate) struct Wakers {
    next_id: u64,
    pub by_id: HashMap<u64, Waker>,
}

impl Arrivals {
    pub(crate) fn notify(&self) {
        let mut commits = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        *commits += 1;
        self.changed.notify_all();
        drop(commits);
        let wakers = std::mem::take(&mut self.wakers().by_id);
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    pub(crate) fn wakers(&self) -> std::sync::MutexGuard<'_, Wakers> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh id for an `Arrival` future.
    pub(crate) fn waker_id(&self) -> u64 {
        let mut w = self.wakers();
        w.next_id += 1;
        w.next_id
    }

    pub(crate) fn wait_until(&self, timeout: Duration, ready: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut commits = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if ready() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            commits = self
                .changed
                .wait_timeout(commits, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
