//! Processors' synchronous calls to external services.
//!
//! A deployment declares the origins its processor may call
//! (`--call https://api.example.com`, `calls = [...]` in topologies); a
//! guest reaches them through the `leat:processor/http` import, and nothing
//! else.
//!
//! # Guarantees
//!
//! - A request goes out only to a declared origin: the same scheme, host and
//!   port. Anything else is refused before a connection is made, with an
//!   error that names the declared origins.
//! - A host name that resolves to a loopback, private, link-local or other
//!   non-public address is refused, unless the origin names an address
//!   itself (`http://10.0.0.5:8080`) or `localhost`: a declared public name
//!   cannot be pointed at the host's own network by its DNS.
//! - Redirects are not followed: the guest sees the `3xx` response and may
//!   call its `Location` if that origin is declared.
//! - Each call ends within its timeout, which never outlasts the batch's
//!   time limit, and reads at most [`CallLimits::max_response_bytes`] of
//!   body; no proxy from the environment is used.
//! - Every request carries an `Idempotency-Key` ([`idempotency_key`]) that
//!   names the input event it is made for and its rank among that event's
//!   calls: the same on every retry and replay of that event, so a service
//!   can recognise a request it has already carried out. The host sets it;
//!   a guest's own header of that name is replaced.
//!
//! A batch may run more than once (it is retried after a failure, and
//! replayed after a crash before its commit), so an external effect is
//! at-least-once: exactly-once holds for what the host commits, and for the
//! outside world when the service deduplicates by that key.

#![deny(missing_docs)]

mod origin;

#[cfg(feature = "client")]
mod client;

pub use origin::{Host, Origin, OriginError, Scheme};

#[cfg(feature = "client")]
pub use client::{undeclared, CallError, Client, Method, Request, Response};

use serde::{Deserialize, Serialize};

/// The name of the header every call carries.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// What one deployment's calls are held to. Every field has a safe default;
/// a deploy request may omit any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallLimits {
    /// The longest one call may take, connection included, in milliseconds.
    /// A call never outlasts the batch's own time limit either.
    pub timeout_ms: u64,
    /// The largest response body a call reads; a larger one fails the call.
    pub max_response_bytes: u64,
    /// How many calls of one `send-all` run at once, per instance.
    pub concurrency: u32,
    /// Calls one guest call (one batch) may make; past it calls are refused.
    pub max_calls_per_batch: u32,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            timeout_ms: 2_000,
            max_response_bytes: 1 << 20,
            concurrency: 8,
            max_calls_per_batch: 10_000,
        }
    }
}

/// The most a deployment may set each limit to.
impl CallLimits {
    /// The longest timeout a deployment may ask for (a batch's own limit is
    /// shorter by default anyway).
    pub const MAX_TIMEOUT_MS: u64 = 60_000;
    /// The largest response a deployment may allow: the body is held in the
    /// host, then copied into the guest.
    pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;
    /// Each concurrent call is a thread.
    pub const MAX_CONCURRENCY: u32 = 64;

    /// Checks the limits, naming the first one out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout_ms == 0 || self.timeout_ms > Self::MAX_TIMEOUT_MS {
            return Err(format!(
                "the call timeout must be 1 to {} ms (not {})",
                Self::MAX_TIMEOUT_MS,
                self.timeout_ms
            ));
        }
        if self.max_response_bytes == 0 || self.max_response_bytes > Self::MAX_RESPONSE_BYTES {
            return Err(format!(
                "the largest call response must be 1 to {} bytes (not {})",
                Self::MAX_RESPONSE_BYTES,
                self.max_response_bytes
            ));
        }
        if self.concurrency == 0 || self.concurrency > Self::MAX_CONCURRENCY {
            return Err(format!(
                "call concurrency must be 1 to {} (not {})",
                Self::MAX_CONCURRENCY,
                self.concurrency
            ));
        }
        if self.max_calls_per_batch == 0 {
            return Err("calls per batch must be at least 1".into());
        }
        Ok(())
    }
}

/// The `Idempotency-Key` of the `index`-th call (from 0) that `processor`
/// makes for the event at `offset` of `stream`'s partition `partition`.
///
/// Stream and processor names are made of ASCII letters, digits, `.`, `_`
/// and `-`, so `/` cannot occur in them: two different calls never share a
/// key, and the key is a valid header value as it is.
pub fn idempotency_key(
    processor: &str,
    stream: &str,
    partition: u32,
    offset: u64,
    index: u32,
) -> String {
    format!("leat/{processor}/{stream}/{partition}/{offset}/{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_valid_and_bounded() {
        CallLimits::default().validate().unwrap();
        let bad = [
            CallLimits {
                timeout_ms: 0,
                ..Default::default()
            },
            CallLimits {
                max_response_bytes: CallLimits::MAX_RESPONSE_BYTES + 1,
                ..Default::default()
            },
            CallLimits {
                concurrency: 0,
                ..Default::default()
            },
            CallLimits {
                max_calls_per_batch: 0,
                ..Default::default()
            },
        ];
        for l in bad {
            assert!(l.validate().is_err(), "{l:?}");
        }
    }

    #[test]
    fn limits_fields_default_one_by_one() {
        let l: CallLimits = serde_json::from_str(r#"{"timeout_ms": 50}"#).unwrap();
        assert_eq!(l.timeout_ms, 50);
        assert_eq!(l.concurrency, CallLimits::default().concurrency);
        assert!(serde_json::from_str::<CallLimits>(r#"{"timeout": 50}"#).is_err());
    }

    #[test]
    fn key_names_the_event_and_the_rank() {
        assert_eq!(
            idempotency_key("enrich", "orders", 3, 42, 1),
            "leat/enrich/orders/3/42/1"
        );
        assert_ne!(
            idempotency_key("a", "b-1", 2, 3, 0),
            idempotency_key("a-b", "1", 2, 3, 0)
        );
    }
}
