//! The flusher: a thread that makes pipelined group commits durable while
//! their callers go on working.
//!
//! A group applied without durability (see `committer`) counts in the
//! committer's [`Progress`]; the flusher wakes, makes every such group
//! durable with one sync of the journal, or one durable redb commit when a
//! checkpoint is due ([`Committer::flush`]), and moves the durable count up
//! to what it covered, which [`Progress::sync`] waits for.
//!
//! [`Progress`]: crate::progress::Progress
//! [`Progress::sync`]: crate::progress::Progress::sync

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::committer::Committer;
use crate::shared::Shared;

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
            self.committer.progress.fail(failure);
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
        self.committer.progress.stop();
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}
