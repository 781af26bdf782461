//! The flusher: a thread that makes pipelined group commits durable while
//! their callers go on working.
//!
//! A group applied without durability (see `committer`) counts in
//! [`Progress::applied`]; the flusher wakes, makes every such group durable
//! with one durable redb commit ([`Committer::flush`]) and moves
//! [`Progress`]'s durable count up to what it covered. [`Progress::sync`]
//! waits for that. Invariant: `durable <= applied`, and both only grow.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::committer::Committer;
use crate::error::Result;
use crate::journal::Failure;
use crate::Shared;

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

    /// The first `covered` groups are durable, or will never be.
    pub(crate) fn durable_up_to(&self, covered: u64, failure: Option<Failure>) {
        let mut state = self.lock();
        state.durable = state.durable.max(covered);
        if failure.is_some() {
            state.failed = failure;
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

    /// Waits until there is something to flush; `false` once asked to stop
    /// with nothing left.
    fn wait_for_work(&self) -> bool {
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
}

/// Fails the log if the flusher panics: nothing else would make the
/// applied groups durable, so the later ones must not be either, and the
/// waiting `sync` calls must end.
struct FailOnPanic<'a> {
    committer: &'a Committer,
}

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let failure = self.committer.fail(
                "the thread making pipelined commits durable panicked; reopen the log to recover"
                    .into(),
            );
            let covered = self.committer.progress.applied();
            self.committer
                .progress
                .durable_up_to(covered, Some(failure));
        }
    }
}

/// The flusher thread; dropping the handle flushes what is left and stops it.
pub(crate) struct FlusherHandle {
    committer: Arc<Committer>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FlusherHandle {
    /// Starts the flusher of `committer`.
    pub(crate) fn start(
        shared: Arc<Shared>,
        committer: Arc<Committer>,
    ) -> std::io::Result<FlusherHandle> {
        let thread = std::thread::Builder::new()
            .name("leat-flusher".into())
            .spawn({
                let committer = committer.clone();
                move || {
                    let _panicking = FailOnPanic {
                        committer: &committer,
                    };
                    while committer.progress.wait_for_work() {
                        committer.flush(&shared);
                    }
                }
            })?;
        Ok(FlusherHandle {
            committer,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Drop for FlusherHandle {
    fn drop(&mut self) {
        self.committer.progress.lock().stop = true;
        self.committer.progress.changed.notify_all();
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}
