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

use std::path::{Path, PathBuf};

use leat_runtime::{StateEntries, StateError, StateStore};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};

/// (scope, key) → value: the committed state.
const STATE: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("state");
/// scope → the next changelog offset to apply (see the module's invariants).
const APPLIED: TableDefinition<&str, u64> = TableDefinition::new("applied");

/// One processor's state cache.
pub(crate) struct StateCache {
    path: PathBuf,
    db: Database,
}

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
    /// Opens (or creates) the cache of `processor` in `dir`.
    pub(crate) fn open(dir: &Path, processor: &str) -> Result<StateCache> {
        let path = dir.join(format!("{processor}.redb"));
        let fail = |reason: String| Error::Cache {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| fail(e.to_string()))?;
        let cache = StateCache { path, db };
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
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
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
