//! Where a guest's committed state is read: the seam between the host's
//! state imports (which lay the batch's own writes and the uncommitted
//! writes of earlier batches over it, see `imports.rs`) and the log that
//! keeps the state: the embedded log, or Leat on Kafka's local cache.

use leat_broker::Broker;

/// Why a state read failed: the batch fails with it (and is redone).
pub type StateError = Box<dyn std::error::Error + Send + Sync>;

/// State entries (key, value), in key order.
pub type StateEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Committed state, by scope (one per processor and partition index, see
/// [`crate::state_scope`]). Reads only: writes are handed back with a
/// batch's outputs, and the caller commits them with it.
pub trait StateStore: Send + Sync {
    /// The committed value of `key` under `scope`.
    fn get(&self, scope: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    /// Committed entries under `scope` with `start <= key < end` (no end:
    /// to the last key), in key order, at most `limit`.
    fn range(
        &self,
        scope: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<StateEntries, StateError>;
}

/// As applied: a batch reads what its partition's earlier batches
/// committed, pipelined (see [`Broker::applied`]).
impl StateStore for Broker {
    fn get(&self, scope: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.applied()?.state_get(scope, key)?)
    }

    fn range(
        &self,
        scope: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<StateEntries, StateError> {
        Ok(self.applied()?.state_range(scope, start, end, limit)?)
    }
}
