//! The local cache of a processor's state on this host: one redb file per
//! processor, holding the state of each partition index under its scope
//! (as the embedded log's state table does) and, per scope, how far the
//! changelog has been applied.
//!
//! Invariants:
//! - The cache holds only committed state: a batch's writes are applied
//!   after its Kafka transaction committed, never before, so an aborted
//!   transaction leaves it untouched.
//! - A scope's applied offset is at most the changelog offset of the first
//!   record whose effect the cache lacks (a lower bound, not the exact
//!   position): applying changelog records again, in order, is harmless
//!   (each key ends with its last write), so a restore from there, to the
//!   changelog's end, brings the scope up to date whatever happened in
//!   between (a crash after a commit and before its apply, another host
//!   owning the partition for a while).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use leat_runtime::{StateEntries, StateError, StateStore};
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::topics::{StateLookup, StateTable};

/// The caches open in this process, by file: redb opens a file once per
/// process, and a processor's instances (one run after another) and the
/// server's state queries share it.
static OPEN: Mutex<BTreeMap<PathBuf, Weak<StateCache>>> = Mutex::new(BTreeMap::new());
/// How long an open waits for the last holder of the same file to close it.
const CLOSING_WAIT: Duration = Duration::from_secs(5);

/// (scope, key) → value: the committed state.
const STATE: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("state");
/// scope → the next changelog offset to apply (see the module's invariants).
const APPLIED: TableDefinition<&str, u64> = TableDefinition::new("applied");

/// One processor's state cache.
pub(crate) struct StateCache {
    path: PathBuf,
    db: Database,
    /// When the last durable commit was (`None`: none yet).
    durable_at: Mutex<Option<Instant>>,
}

/// How often the cache commits durably; the commits in between are not
/// synced. A cache need not be durable: its applied offsets are lower
/// bounds (see the module's invariants), so what a crash takes back is
/// read from the changelog again at the next assignment, and this bounds
/// that re-read to about a second of writes. Every commit durable cost a
/// sync of the cache's file after each transaction, before the next poll:
/// word count's p99 in the Kafka Streams benchmark went from 382.9 to 86.1
/// ms (median of 3 rounds; BENCHMARKS.md, issue 13).
const DURABLE_EVERY: Duration = Duration::from_secs(1);

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A state change: `None` deletes the key.
pub(crate) type Change<'a> = (&'a [u8], Option<&'a [u8]>);

impl StateCache {
    /// The cache of `processor` in `dir`, opened (or created) unless this
    /// process has it open already.
    pub(crate) fn open(dir: &Path, processor: &str) -> Result<Arc<StateCache>> {
        StateCache::open_waiting(dir, processor, CLOSING_WAIT)
    }

    /// [`StateCache::open`], waiting at most `wait` for the last holder of
    /// the file in this process to close it.
    fn open_waiting(dir: &Path, processor: &str, wait: Duration) -> Result<Arc<StateCache>> {
        let path = dir.join(format!("{processor}.redb"));
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cache) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(cache);
        }
        let cache = Arc::new(StateCache::create(dir, path.clone(), wait)?);
        open.retain(|_, c| c.strong_count() > 0);
        open.insert(path, Arc::downgrade(&cache));
        Ok(cache)
    }

    /// [`StateCache::open`], if the cache's file exists (never creates it)
    /// and can be opened at once (another process, such as a `leat run` on
    /// the same directory, may hold it: `None`, said in the log).
    pub(crate) fn existing(dir: &Path, processor: &str) -> Option<Arc<StateCache>> {
        if !dir.join(format!("{processor}.redb")).exists() {
            return None;
        }
        match StateCache::open_waiting(dir, processor, Duration::ZERO) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(error = %e.chain(), "state cache not used");
                None
            }
        }
    }

    fn create(dir: &Path, path: PathBuf, wait: Duration) -> Result<StateCache> {
        let fail = |reason: String| Error::Cache {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let started = Instant::now();
        let mut discarded = false;
        let db = loop {
            match Database::create(&path) {
                Ok(db) => break db,
                // The last holder's `Arc` was dropped, and its database is
                // still being closed on that thread.
                Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                // A file no open accepts (a kill while redb created it
                // leaves one without its magic number): the changelog
                // holds everything the cache held, so it starts again.
                Err(DatabaseError::Storage(e)) if !discarded => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "state cache unreadable: discarding it (it is rebuilt from the changelog)");
                    std::fs::remove_file(&path).map_err(|e| fail(e.to_string()))?;
                    discarded = true;
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        };
        let cache = StateCache {
            path,
            db,
            durable_at: Mutex::new(None),
        };
        // Both tables exist from the start, so that reads need not ask.
        cache.write(|txn| {
            txn.open_table(STATE)?;
            txn.open_table(APPLIED)?;
            Ok(())
        })?;
        Ok(cache)
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Cache {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let mut durable_at = self.durable_at.lock().unwrap_or_else(|p| p.into_inner());
        if durable_at.is_some_and(|at| at.elapsed() < DURABLE_EVERY) {
            txn.set_durability(Durability::None)
                .map_err(|e| self.error(e))?;
        } else {
            *durable_at = Some(Instant::now());
        }
        drop(durable_at);
        f(&txn).map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))
    }

    /// The next changelog offset to apply to `scope` (0: none applied).
    pub(crate) fn applied(&self, scope: &str) -> Result<u64> {
        let read = || -> std::result::Result<u64, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(APPLIED)?;
            Ok(table.get(scope)?.map_or(0, |v| v.value()))
        };
        read().map_err(|e| self.error(e))
    }

    /// Applies `changes` to `scope` and, if given, sets its next changelog
    /// offset to apply, in one redb transaction.
    pub(crate) fn apply<'a>(
        &self,
        scope: &str,
        changes: impl IntoIterator<Item = Change<'a>>,
        next: Option<u64>,
    ) -> Result<()> {
        self.write(|txn| {
            let mut state = txn.open_table(STATE)?;
            for (key, value) in changes {
                match value {
                    Some(value) => state.insert((scope, key), value)?,
                    None => state.remove((scope, key))?,
                };
            }
            if let Some(next) = next {
                txn.open_table(APPLIED)?.insert(scope, next)?;
            }
            Ok(())
        })
    }

    /// `scope`'s next changelog offset to apply and its entries `lookup`
    /// matches, from one snapshot (see the module's invariants: the
    /// changelog's records from that offset on, laid over these entries in
    /// order, give the state).
    pub(crate) fn snapshot(
        &self,
        scope: &str,
        lookup: StateLookup<'_>,
    ) -> Result<(u64, StateTable)> {
        let read = || -> std::result::Result<_, redb::Error> {
            let txn = self.db.begin_read()?;
            let applied = txn
                .open_table(APPLIED)?
                .get(scope)?
                .map_or(0, |v| v.value());
            let state = txn.open_table(STATE)?;
            let mut entries = StateTable::new();
            match lookup {
                StateLookup::Key(key) => {
                    if let Some(v) = state.get((scope, key))? {
                        entries.insert(key.to_vec(), v.value().to_vec());
                    }
                }
                StateLookup::Prefix(prefix) => {
                    for row in state.range((scope, prefix)..)? {
                        let (k, v) = row?;
                        let (s, key) = k.value();
                        if s != scope || !key.starts_with(prefix) {
                            break;
                        }
                        entries.insert(key.to_vec(), v.value().to_vec());
                    }
                }
            }
            Ok((applied, entries))
        };
        read().map_err(|e| self.error(e))
    }

    /// Forgets `scope`'s state and applied offset (its changelog is not the
    /// one the cache followed: restored again from its start).
    pub(crate) fn clear(&self, scope: &str) -> Result<()> {
        self.write(|txn| {
            let mut state = txn.open_table(STATE)?;
            let keys: Vec<Vec<u8>> = state
                .range((scope, &[][..])..)?
                .map_while(|row| match row {
                    Ok((k, _)) if k.value().0 == scope => Some(Ok(k.value().1.to_vec())),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<std::result::Result<_, _>>()?;
            for key in keys {
                state.remove((scope, &key[..]))?;
            }
            txn.open_table(APPLIED)?.remove(scope)?;
            Ok(())
        })
    }
}

impl StateStore for StateCache {
    fn get(&self, scope: &str, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, StateError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STATE)?;
        Ok(table.get((scope, key))?.map(|v| v.value().to_vec()))
    }

    fn range(
        &self,
        scope: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> std::result::Result<StateEntries, StateError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STATE)?;
        Ok(leat_runtime::broker::scoped_range(
            &table, scope, start, end, limit,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_cache_file_is_discarded_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        // What a kill while redb creates a file leaves: pages, no magic number.
        std::fs::write(dir.path().join("p.redb"), vec![0u8; 72 << 10]).unwrap();
        let cache = StateCache::open(dir.path(), "p").unwrap();
        assert_eq!(cache.applied("scope").unwrap(), 0);
        cache
            .apply("scope", [(&b"k"[..], Some(&b"v"[..]))], Some(7))
            .unwrap();
        drop(cache);
        // The new file is a cache like any other: it opens and keeps its writes.
        let cache = StateCache::open(dir.path(), "p").unwrap();
        assert_eq!(cache.applied("scope").unwrap(), 7);
    }
}
