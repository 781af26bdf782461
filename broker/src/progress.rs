//! How far pipelined group commits are: how many groups were applied
//! without durability, and how many of them are durable. The committer
//! counts a group in [`Progress::applied_one`]; the flusher makes groups
//! durable and reports it with [`Progress::durable_up_to`];
//! [`Progress::sync`] waits for that. Invariant: `durable <= applied`, and
//! both only grow.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::Result;
use crate::journal::Failure;

/// Groups applied without durability and how many of them are durable.
#[derive(Default)]
pub(crate) struct Progress {
    state: Mutex<ProgressState>,
    changed: Condvar,
}

#[derive(Default)]
struct ProgressState {
    applied: u64,
    durable: u64,
    /// Set when a flush failed: nothing more becomes durable.
    failed: Option<Failure>,
    /// The flusher is asked to flush what is left and end.
    stop: bool,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many groups were applied without durability so far.
    pub(crate) fn applied(&self) -> u64 {
        self.lock().applied
    }

    /// One more group was applied without durability: wakes the flusher.
    pub(crate) fn applied_one(&self) {
        self.lock().applied += 1;
        self.changed.notify_all();
    }

    /// The first `covered` groups are durable, or, with a failure, will
    /// never be.
    pub(crate) fn durable_up_to(&self, covered: u64, failure: Option<Failure>) {
        let mut state = self.lock();
        match failure {
            None => state.durable = state.durable.max(covered),
            Some(failure) => {
                state.failed.get_or_insert(failure);
            }
        }
        self.changed.notify_all();
    }

    /// The journal failed: nothing more becomes durable, and every later
    /// `sync` fails (the first failure is kept).
    pub(crate) fn fail(&self, failure: Failure) {
        let mut state = self.lock();
        state.failed.get_or_insert(failure);
        self.changed.notify_all();
    }

    /// Waits until every group applied before the call is durable; fails
    /// if a flush or the journal failed.
    pub(crate) fn sync(&self) -> Result<()> {
        let mut state = self.lock();
        let target = state.applied;
        while state.durable < target && state.failed.is_none() {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        match &state.failed {
            Some(failure) => Err(failure.error()),
            None => Ok(()),
        }
    }

    /// Waits until the first `applied` groups are durable; fails if a flush
    /// or the journal failed before they were.
    pub(crate) fn wait_durable(&self, applied: u64) -> Result<()> {
        let mut state = self.lock();
        while state.durable < applied {
            if let Some(failure) = &state.failed {
                return Err(failure.error());
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Waits until there is something to flush; `false` once asked to stop
    /// with nothing left.
    pub(crate) fn wait_for_work(&self) -> bool {
        let mut state = self.lock();
        loop {
            if state.failed.is_some() {
                return false;
            }
            if state.durable < state.applied {
                return true;
            }
            if state.stop {
                return false;
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Asks the flusher to flush what is left and end.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}
