//! The state a broker's clones, its committing callers and its background
//! threads share, and the wake-up of readers waiting at a partition's end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, PartitionCursor};
use crate::segments::Segments;

/// What the broker handles, the committing callers and the maintenance thread share.
pub(crate) struct Shared {
    pub db: redb::Database,
    pub path: PathBuf,
    pub catalog: RwLock<Catalog>,
    /// Held by a retention or compaction pass: one runs at a time.
    pub maintenance: Mutex<()>,
    /// The journal's segments, where the batches are.
    pub segments: Arc<Segments>,
}

impl Shared {
    /// Begins a write transaction on the log's file: see [`begin_write`].
    pub fn begin_write(&self) -> Result<redb::WriteTransaction, redb::TransactionError> {
        begin_write(&self.db)
    }

    /// Commits `txn` durably, once the journal's unsynced records are on
    /// disk: rows it makes durable may point at them (see `segments`).
    pub fn commit(&self, txn: redb::WriteTransaction) -> crate::error::Result<()> {
        self.segments.sync()?;
        txn.commit()?;
        Ok(())
    }
}

/// Begins a write transaction on `db`. Each durable commit records redb's
/// allocator state (quick repair), so that a file left open by a crash
/// opens by loading that state instead of reading every page of the file to
/// rebuild it: `bench/recovery.sh` (BENCHMARKS.md, issue 19) answered 4.25 s
/// after a SIGKILL with a 1.3 GiB log without it.
pub(crate) fn begin_write(
    db: &redb::Database,
) -> Result<redb::WriteTransaction, redb::TransactionError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// A fresh id for a waiter's registrations (unique in the process).
pub(crate) fn waiter_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whom a partition's cursor wakes when its end moves: a thread blocked in
/// [`wait`], or the task of a pending [`Arrival`](crate::Arrival) future.
/// Each reader registers with the cursors of the partitions it waits on
/// only, so a commit wakes only those waiting on a partition it appended to.
pub(crate) enum Sleeper {
    Thread(Arc<Signal>),
    Task(Waker),
}

impl Sleeper {
    pub(crate) fn wake(self) {
        match self {
            Sleeper::Thread(signal) => signal.notify(),
            Sleeper::Task(waker) => waker.wake(),
        }
    }
}

/// The sleepers registered with one cursor, by waiter id.
#[derive(Default)]
pub(crate) struct Sleepers(Mutex<HashMap<u64, Sleeper>>);

impl std::fmt::Debug for Sleepers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sleepers({})", self.lock().len())
    }
}

impl Sleepers {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Sleeper>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(&self, id: u64, sleeper: Sleeper) {
        self.lock().insert(id, sleeper);
    }

    pub(crate) fn deregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Wakes (and forgets) every sleeper. Called after the cursor's end
    /// moved: a sleeper registered before sees the new end once woken, one
    /// registered after sees it when it checks after registering.
    pub(crate) fn wake_all(&self) {
        let sleepers = std::mem::take(&mut *self.lock());
        for sleeper in sleepers.into_values() {
            sleeper.wake();
        }
    }
}

/// A blocked thread's condition variable. Notified under its mutex, so a
/// notification between the waiter's last check and its sleep is not lost.
pub(crate) struct Signal {
    id: u64,
    /// Set by [`WaitInterrupt::interrupt`], cleared by the wait that sees it.
    interrupted: Mutex<bool>,
    changed: Condvar,
}

impl Signal {
    fn notify(&self) {
        let _held = self.lock();
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.interrupted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a thread waits with in [`Broker::wait_for_any_with`](crate::Broker::wait_for_any_with):
/// another thread can end its wait early through a [`WaitInterrupt`].
pub struct Waiter {
    signal: Arc<Signal>,
}

impl Default for Waiter {
    fn default() -> Self {
        Waiter::new()
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("id", &self.signal.id)
            .finish()
    }
}

impl Waiter {
    /// A waiter nobody has interrupted.
    pub fn new() -> Waiter {
        Waiter {
            signal: Arc::new(Signal {
                id: waiter_id(),
                interrupted: Mutex::new(false),
                changed: Condvar::new(),
            }),
        }
    }

    /// A handle that ends this waiter's current or next wait.
    pub fn interrupter(&self) -> WaitInterrupt {
        WaitInterrupt {
            signal: self.signal.clone(),
        }
    }
}

/// Ends the current wait of its [`Waiter`], or, if it is not waiting, its
/// next one (at once): an interrupt is never lost.
#[derive(Clone)]
pub struct WaitInterrupt {
    signal: Arc<Signal>,
}

impl std::fmt::Debug for WaitInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitInterrupt")
            .field("waiter", &self.signal.id)
            .finish()
    }
}

impl WaitInterrupt {
    /// Interrupts the waiter.
    pub fn interrupt(&self) {
        let mut interrupted = self.signal.lock();
        *interrupted = true;
        self.signal.changed.notify_all();
    }

    /// Whether both interrupt the same waiter.
    pub fn same_waiter(&self, other: &WaitInterrupt) -> bool {
        Arc::ptr_eq(&self.signal, &other.signal)
    }
}

/// Whether any cursor's end is past its offset (or its stream was deleted:
/// a read then says so).
pub(crate) fn any_ready(cursors: &[(Arc<PartitionCursor>, u64)]) -> bool {
    cursors.iter().any(|(c, o)| c.ready(*o))
}

/// Registers `id`'s sleeper with each cursor, and takes it back when dropped.
pub(crate) struct Registration<'a> {
    id: u64,
    cursors: &'a [(Arc<PartitionCursor>, u64)],
}

impl<'a> Registration<'a> {
    pub(crate) fn new(
        id: u64,
        cursors: &'a [(Arc<PartitionCursor>, u64)],
        sleeper: impl Fn() -> Sleeper,
    ) -> Self {
        for (c, _) in cursors {
            c.sleepers.register(id, sleeper());
        }
        Registration { id, cursors }
    }

    /// Registers the sleeper again with the cursors whose waking forgot it.
    pub(crate) fn renew(&self, sleeper: impl Fn() -> Sleeper) {
        for (c, _) in self.cursors {
            c.sleepers.register(self.id, sleeper());
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        deregister(self.id, self.cursors);
    }
}

/// The poll of a future that sleepers wake: ready at once, or `register`ed
/// and then looked at again, since a change between the first look and the
/// registration would otherwise go unnoticed (`deregister` then). A waking
/// forgets its sleepers, so each poll registers again.
pub(crate) fn poll_woken(
    ready: impl Fn() -> bool,
    register: impl FnOnce(),
    deregister: impl FnOnce(),
) -> std::task::Poll<()> {
    if ready() {
        return std::task::Poll::Ready(());
    }
    register();
    if ready() {
        deregister();
        return std::task::Poll::Ready(());
    }
    std::task::Poll::Pending
}

/// Registers `waker` as `id`'s sleeper with each cursor.
pub(crate) fn register_task(id: u64, cursors: &[(Arc<PartitionCursor>, u64)], waker: &Waker) {
    for (cursor, _) in cursors {
        cursor.sleepers.register(id, Sleeper::Task(waker.clone()));
    }
}

pub(crate) fn deregister(id: u64, cursors: &[(Arc<PartitionCursor>, u64)]) {
    for (c, _) in cursors {
        c.sleepers.deregister(id);
    }
}

/// Blocks until a cursor's end passes its offset, `waiter` is interrupted,
/// or `timeout` passes; whether a cursor's end is past its offset.
pub(crate) fn wait(
    cursors: &[(Arc<PartitionCursor>, u64)],
    timeout: Duration,
    waiter: &mut Waiter,
) -> bool {
    if any_ready(cursors) {
        return true;
    }
    let signal = &waiter.signal;
    let sleeper = || Sleeper::Thread(signal.clone());
    let registered = Registration::new(signal.id, cursors, sleeper);
    sleep(
        waiter,
        timeout,
        || registered.renew(sleeper),
        || any_ready(cursors),
    )
}

/// Blocks until the catalog's layout is `ready` (checked after registering
/// with `layout`, which the catalog's changes wake), `waiter` is
/// interrupted, or `timeout` passes; whether it is ready.
pub(crate) fn wait_for_layout(
    layout: &Sleepers,
    timeout: Duration,
    waiter: &mut Waiter,
    ready: impl Fn() -> bool,
) -> bool {
    let signal = &waiter.signal;
    let register = || layout.register(signal.id, Sleeper::Thread(signal.clone()));
    let ready = sleep(waiter, timeout, register, ready);
    layout.deregister(waiter.signal.id);
    ready
}

/// Blocks until `ready` (checked after registering with `cursors` and
/// `extra`, whose changes wake it), `waiter` is interrupted, or `timeout`
/// passes; whether it is ready. For a reader whose readiness is more than
/// a partition's end (a queue group's: see `queue_ops`).
pub(crate) fn wait_until(
    cursors: &[(Arc<PartitionCursor>, u64)],
    extra: &Sleepers,
    timeout: Duration,
    waiter: &mut Waiter,
    ready: impl Fn() -> bool,
) -> bool {
    let signal = &waiter.signal;
    let sleeper = || Sleeper::Thread(signal.clone());
    let registered = Registration::new(signal.id, cursors, sleeper);
    let register = || {
        registered.renew(sleeper);
        extra.register(signal.id, sleeper());
    };
    let ready = sleep(waiter, timeout, register, ready);
    extra.deregister(waiter.signal.id);
    ready
}

/// Sleeps on `waiter`'s signal until `ready`, an interrupt or `timeout`.
///
/// `register` registers the signal with whatever makes `ready` true, and
/// is called before each check (under the signal's mutex, so that a
/// change after a check notifies this thread once it sleeps): a waking
/// forgets its sleepers, and it may come late. A commit publishes an end,
/// this thread reads up to it and sleeps again, then the commit wakes the
/// cursor's sleepers: this thread wakes, is not ready, and without
/// registering again it would sleep through every later commit until its
/// timeout (seen as reads in the pipeline bench's latency run waiting
/// their full 5 s at 500,000 events/s).
fn sleep(
    waiter: &Waiter,
    timeout: Duration,
    register: impl Fn(),
    ready: impl Fn() -> bool,
) -> bool {
    let signal = &waiter.signal;
    let deadline = Instant::now().checked_add(timeout);
    let mut interrupted = signal.lock();
    loop {
        register();
        if ready() {
            return true;
        }
        if *interrupted {
            *interrupted = false;
            return false;
        }
        let left = match deadline {
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                deadline - now
            }
            // Further than `Instant` reaches: as good as forever.
            None => Duration::from_secs(u32::MAX as u64),
        };
        interrupted = signal
            .changed
            .wait_timeout(interrupted, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit publishes an end, the reader reads up to it and waits
    /// again, then the commit's waking arrives: the next commit must still
    /// wake the reader.
    #[test]
    fn a_late_waking_for_an_end_already_read_does_not_lose_the_next_one() {
        let cursor = Arc::new(PartitionCursor::new(1, 0, 0, 0));
        let started = Instant::now();
        let reader = std::thread::spawn({
            let cursors = vec![(cursor.clone(), 1)];
            move || wait(&cursors, Duration::from_secs(20), &mut Waiter::new())
        });
        while cursor.sleepers.lock().is_empty() {
            std::thread::yield_now();
        }
        // The late waking of the commit that published 1.
        cursor.sleepers.wake_all();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!reader.is_finished(), "woken with nothing new");
        cursor.publish(2);
        cursor.sleepers.wake_all();
        assert!(reader.join().unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the reader slept through the commit until its timeout"
        );
    }
}
