//! What several replicas share, so that N replicas cost SSM what one does:
//! a store behind the [`Store`] trait ([`RedisStore`] in production,
//! `[redis]`), used through the [`Shared`] handle by the page and node
//! caches (second level, single-flight leases, invalidation), the upstream
//! limiter (one bucket per (account, region) in total) and the live hub
//! (one poller per source, events over pub/sub).
//!
//! Invariants:
//! - **Never a single point of failure.** Every operation is bounded by
//!   `redis.command_timeout_ms` and returns [`Unavailable`] instead of an
//!   error; every caller then does what it does without Redis (first level,
//!   local limiter, local poller, AWS). While the store is down, operations
//!   fail at once without touching the network; a background probe
//!   reconnects with back-off. Each change of state is logged once.
//! - **A value that fails to decode is a miss**, never an error: values
//!   carry a version byte ([`encode`], [`decode`]), so a replica of another
//!   version reads another's value as absent and overwrites it.
//! - **Keys of one source share a hash tag** (`{account:region}`, see
//!   [`Shared::source_key`]) so that the multi-key operations (a page and
//!   its source's generation in one `MGET`) stay within one slot. The
//!   client here speaks to one Redis node (or a primary behind a proxy or
//!   Sentinel-managed address); Redis Cluster is not supported.
//!
//! # Encoding
//!
//! Values are one version byte followed by [postcard]: a compact binary
//! serde format (varints, no field names, about a third of JSON's size for
//! a page of sessions) with a stable, documented wire format since 1.0.
//! It is not self-describing, so the version byte (bumped whenever a
//! stored type changes) is what keeps two builds from misreading each
//! other; a mismatch or any decoding error is a miss.

mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::instruments::Metrics;
use crate::model::SourceKey;
use crate::settings::RedisSettings;

pub use redis_store::RedisStore;

/// The store could not answer in time (down, slow, or refused the
/// command); the caller goes on without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the shared store is unavailable")]
pub struct Unavailable;

/// Whether the store answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreState {
    Up,
    Down,
}

/// A message published by some replica (this one included).
#[derive(Clone, Debug)]
pub struct Message {
    pub channel: String,
    pub payload: Arc<[u8]>,
}

/// The operations replicas share. Every one is bounded in time and never
/// fails a request: [`Unavailable`] means "do without".
#[async_trait]
pub trait Store: Send + Sync {
    /// The values of `keys`, in order; `None` for an absent key.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Unavailable>;
    /// Stores `value` under `key` for `ttl`.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Unavailable>;
    /// Stores each `(key, value)` for `ttl`, in one round trip.
    async fn set_many(
        &self,
        entries: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), Unavailable>;
    /// Adds one to the counter `key` (created at 0); its new value.
    async fn incr(&self, key: &str) -> Result<i64, Unavailable>;
    /// Takes the lease `key` for `holder` for `ttl` (`SET NX PX`), or
    /// renews it when `holder` already has it; whether `holder` has it now.
    async fn lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, Unavailable>;
    /// Gives the lease `key` up, if `holder` has it.
    async fn release(&self, key: &str, holder: &str) -> Result<(), Unavailable>;
    /// Publishes `payload` on `channel`.
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Unavailable>;
    /// One call of the rate limit `key` (`per_second`, bursts of `burst`),
    /// atomically for every replica: `None` when it may go now, else how
    /// long until it may.
    async fn rate(
        &self,
        key: &str,
        per_second: u32,
        burst: u32,
    ) -> Result<Option<Duration>, Unavailable>;
    /// Messages on the channels under the key prefix, as this replica's one
    /// subscriber connection receives them, fanned out in process.
    fn messages(&self) -> broadcast::Receiver<Message>;
    /// Up or down now.
    fn state(&self) -> StoreState;
}

/// The shared store as the gateway's modules use it: the store, the key
/// prefix, this replica's name (lease holder) and the lease timings.
#[derive(Clone)]
pub struct Shared {
    store: Arc<dyn Store>,
    prefix: String,
    replica: Arc<str>,
    /// How long a single-flight lease lasts (a dead holder's expires).
    pub lease: Duration,
    /// How long others wait for the holder before calling AWS themselves.
    pub lease_wait: Duration,
}

impl Shared {
    /// Connects to the Redis `settings` names (lazily: a Redis that is down
    /// at start-up is retried in the background, and the replica runs on
    /// its own meanwhile).
    pub async fn connect(settings: &RedisSettings, metrics: &Metrics) -> anyhow::Result<Self> {
        let store = RedisStore::connect_observed(settings, Some(metrics.clone())).await?;
        Ok(Self::new(Arc::new(store), settings))
    }

    /// Over any store (tests).
    pub fn new(store: Arc<dyn Store>, settings: &RedisSettings) -> Self {
        let replica: String = {
            use rand::Rng as _;
            let mut rng = rand::rng();
            (0..16)
                .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
                .collect()
        };
        Self {
            store,
            prefix: settings.key_prefix.clone(),
            replica: replica.into(),
            lease: Duration::from_millis(settings.lease_ms),
            lease_wait: Duration::from_millis(settings.lease_wait_ms),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// This replica's name, as a lease holder.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// A key of no particular source: `<prefix><kind>:<rest>`.
    pub fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    /// A key about one source: `<prefix><kind>:{<account>:<region>}<rest>`.
    /// The braces are a hash tag: every key of one source maps to one slot.
    pub fn source_key(&self, kind: &str, source: &SourceKey, rest: &str) -> String {
        format!(
            "{}{kind}:{{{}:{}}}{rest}",
            self.prefix, source.account, source.region
        )
    }

    /// Whether `channel` is the one [`Shared::key`] makes for `kind`.
    pub fn channel_kind<'a>(&self, channel: &'a str, kind: &str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(kind)?
            .strip_prefix(':')
    }
}

/// `value` as a stored value: `version`, then postcard.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Option<Vec<u8>> {
    let mut out = vec![version];
    match postcard::to_extend(value, out) {
        Ok(bytes) => {
            out = bytes;
            Some(out)
        }
        Err(e) => {
            // Only a type serde cannot express in postcard (a map with
            // unknown length, say): our bug, but never a request's failure.
            tracing::error!(error = %e, "cannot encode a value for the shared store");
            None
        }
    }
}

/// A stored value, if it is of `version` and decodes; anything else is a
/// miss.
pub fn decode<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((v, rest)) if *v == version => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch, by this replica's clock.
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct V {
        a: u32,
        b: Option<String>,
    }

    #[test]
    fn values_round_trip_and_anything_else_is_a_miss() {
        let v = V {
            a: 7,
            b: Some("x".into()),
        };
        let bytes = encode(3, &v).unwrap();
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<V>(3, &bytes), Some(v));
        assert_eq!(decode::<V>(4, &bytes), None, "another version");
        assert_eq!(decode::<V>(3, &bytes[..2]), None, "truncated");
        assert_eq!(decode::<V>(3, &[]), None, "empty");
        assert_eq!(decode::<V>(3, b"\x03garbage\xff\xff\xff\xff\xff"), None);
    }
}
