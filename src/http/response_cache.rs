//! Whole-response cache for identical reads.
//!
//! Dashboards send the same query with the same variables over and over.
//! A query's serialized response is kept under a key of everything that can
//! change it: the caller's identity (the principal's
//! [`identity_key`](crate::auth::Principal::identity_key): its kind, name and
//! grants, never the raw `Authorization` header, so two keys of one name
//! during a rotation share entries and two principals never do), the
//! document (as sent, surrounding white space trimmed), the operation name
//! and the variables (canonical JSON). A warm hit skips parsing, validation
//! and execution: it is a hash and a map lookup.
//!
//! An entry lives no longer than the shortest remaining lifetime of the page
//! data the response used (see [`crate::cache::Freshness`]), or the Active
//! TTL when it used none (introspection, `accounts`). Responses with errors
//! or stale data are never kept, nor are mutations or subscriptions.
//!
//! A response that resumes a listing from a cursor is kept only from its
//! second request on. Those are the one-time reads of the cache: someone
//! paging through history sends each cursor once, and keeping each page
//! cost about 7 % of the gateway's CPU per page (bench/run.sh). First
//! pages, the ones dashboards poll, are kept at once. [`Doorkeeper`]
//! remembers which keys came once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use moka::Expiry;
use moka::future::Cache;

use tokio::sync::broadcast;

use crate::cache::INVALIDATE;
use crate::settings::{CacheLayer, CacheSettings};
use crate::shared::Shared;

/// A response cache key: a BLAKE3 hash of the parts (in-process only, so
/// the hash is this build's choice; BLAKE3 is several times cheaper than
/// SHA-256 on every request, hit or miss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseKey([u8; 32]);

impl ResponseKey {
    /// The key of one request; `scope` is the caller's identity key.
    pub fn new(
        scope: Option<&[u8]>,
        query: &str,
        operation_name: Option<&str>,
        variables: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        let mut hash = blake3::Hasher::new();
        let mut part = |bytes: &[u8]| {
            // Length-prefixed, so no two different splits hash alike.
            hash.update(&(bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        part(scope.unwrap_or_default());
        part(query.trim().as_bytes());
        part(operation_name.unwrap_or_default().as_bytes());
        // serde_json's maps are ordered by key: this is canonical.
        let variables = variables
            .filter(|v| !v.is_empty())
            .map(|v| serde_json::to_vec(v).unwrap_or_default())
            .unwrap_or_default();
        part(&variables);
        Self(*hash.finalize().as_bytes())
    }
}

#[derive(Debug)]
struct Entry {
    body: Bytes,
    ttl: Duration,
}

struct OwnTtl;

impl Expiry<ResponseKey, std::sync::Arc<Entry>> for OwnTtl {
    fn expire_after_create(
        &self,
        _key: &ResponseKey,
        value: &std::sync::Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The keys of responses asked for once: a fixed table of 64-bit key
/// fingerprints, one per slot, a newer key taking an older one's slot. A
/// key found in its slot was asked for before. Forgetting (a slot taken
/// over) only delays keeping a response by one more request; a false
/// "asked before" needs two keys alike in 64 bits.
struct Doorkeeper {
    slots: Box<[AtomicU64]>,
}

impl Doorkeeper {
    /// 64 Ki slots (512 KiB): the keys of the last tens of thousands of
    /// one-time requests.
    const SLOTS: usize = 1 << 16;

    fn new() -> Self {
        Self {
            slots: (0..Self::SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether `key` was seen before; notes it as seen either way.
    fn seen_before(&self, key: &ResponseKey) -> bool {
        let [a, b, c, d, e, f, g, h, ..] = key.0;
        // 0 marks an empty slot.
        let print = u64::from_le_bytes([a, b, c, d, e, f, g, h]).max(1);
        let [i, j, k, l, ..] = key.0[8..] else {
            return false;
        };
        let index = u32::from_le_bytes([i, j, k, l]) as usize % Self::SLOTS;
        let Some(slot) = self.slots.get(index) else {
            return false;
        };
        slot.swap(print, Ordering::Relaxed) == print
    }
}

/// Serialized responses by [`ResponseKey`].
pub struct ResponseCache {
    entries: Cache<ResponseKey, std::sync::Arc<Entry>, crate::cache::Hasher>,
    /// Resumed listings asked for once, not kept yet.
    once: Doorkeeper,
    /// The lifetime of a response that used no cached data.
    default_ttl: Duration,
}

impl ResponseCache {
    /// `None` when `settings.responses` is off. Sized by
    /// [`CacheSettings::bytes_for`].
    pub fn new(settings: &CacheSettings) -> Option<Self> {
        settings.responses.then(|| Self {
            entries: Cache::builder()
                .max_capacity(settings.bytes_for(CacheLayer::Responses))
                .weigher(|_, e: &std::sync::Arc<Entry>| {
                    u32::try_from(e.body.len() + 64).unwrap_or(u32::MAX)
                })
                .expire_after(OwnTtl)
                .build_with_hasher(crate::cache::Hasher::default()),
            default_ttl: Duration::from_secs(settings.active_ttl_secs),
            once: Doorkeeper::new(),
        })
    }

    /// The cached body for `key`, if fresh.
    pub async fn get(&self, key: &ResponseKey) -> Option<Bytes> {
        self.entries.get(key).await.map(|e| e.body.clone())
    }

    /// Drops every response: after a write (a mutation) any of them may
    /// show what is no longer so. Responses are keyed by a hash, so which
    /// ones read the changed source is not known; they live seconds anyway.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }

    /// With Redis: drops every response whenever any replica publishes an
    /// invalidation (a `terminateSession` there), as this replica's own
    /// mutations do. Ends when the cache is dropped.
    pub fn follow_invalidations(self: &std::sync::Arc<Self>, shared: &Shared) {
        let cache = std::sync::Arc::downgrade(self);
        let shared = shared.clone();
        let mut messages = shared.store().messages();
        tokio::spawn(async move {
            loop {
                let drop_all = match messages.recv().await {
                    Ok(m) => shared.channel_kind(&m.channel, INVALIDATE).is_some(),
                    // Some messages were missed: any may have been one.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                match cache.upgrade() {
                    Some(cache) if drop_all => cache.invalidate_all(),
                    Some(_) => {}
                    None => return,
                }
            }
        });
    }

    /// Keeps `body` for the data's remaining lifetime (`None`: it used no
    /// cached data, so the default); a zero lifetime keeps nothing. A
    /// `resumed` listing (from a cursor) is kept from its second request
    /// on. Returns whether `body` was kept.
    pub async fn put(
        &self,
        key: ResponseKey,
        body: Bytes,
        data_lifetime: Option<Duration>,
        resumed: bool,
    ) -> bool {
        let ttl = data_lifetime.unwrap_or(self.default_ttl);
        if ttl.is_zero() || (resumed && !self.once.seen_before(&key)) {
            return false;
        }
        self.entries
            .insert(key, std::sync::Arc::new(Entry { body, ttl }))
            .await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(json: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn keys_tell_apart_everything_that_changes_the_answer() {
        let q = "{ sessions(state: ACTIVE) { nodes { sessionId } } }";
        let base = ResponseKey::new(
            None,
            q,
            None,
            Some(&vars(serde_json::json!({"a": 1, "b": 2}))),
        );
        // Same variables in another order, and surrounding white space: same key.
        assert_eq!(
            base,
            ResponseKey::new(
                None,
                &format!("  {q}\n"),
                None,
                Some(&vars(serde_json::json!({"b": 2, "a": 1})))
            )
        );
        for other in [
            ResponseKey::new(
                Some(b"Bearer x"),
                q,
                None,
                Some(&vars(serde_json::json!({"a": 1, "b": 2}))),
            ),
            ResponseKey::new(
                None,
                q,
                Some("Op"),
                Some(&vars(serde_json::json!({"a": 1, "b": 2}))),
            ),
            ResponseKey::new(
                None,
                q,
                None,
                Some(&vars(serde_json::json!({"a": 1, "b": 3}))),
            ),
            ResponseKey::new(
                None,
                "{ accounts { id } }",
                None,
                Some(&vars(serde_json::json!({"a": 1, "b": 2}))),
            ),
        ] {
            assert_ne!(base, other);
        }
        // No variables and empty variables are the same request.
        assert_eq!(
            ResponseKey::new(None, q, None, None),
            ResponseKey::new(None, q, None, Some(&serde_json::Map::new()))
        );
    }

    #[tokio::test]
    async fn entries_live_no_longer_than_their_data() {
        let cache = ResponseCache::new(&CacheSettings {
            active_ttl_secs: 5,
            ..CacheSettings::default()
        })
        .unwrap();
        let key = ResponseKey::new(None, "{ a }", None, None);
        cache
            .put(
                key,
                Bytes::from_static(b"x"),
                Some(Duration::from_millis(100)),
                false,
            )
            .await;
        assert!(cache.get(&key).await.is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cache.get(&key).await.is_none());
        cache
            .put(key, Bytes::from_static(b"x"), Some(Duration::ZERO), false)
            .await;
        assert!(cache.get(&key).await.is_none());
    }

    #[tokio::test]
    async fn resumed_listings_are_kept_from_their_second_request() {
        let cache = ResponseCache::new(&CacheSettings::default()).unwrap();
        let ttl = Some(Duration::from_secs(60));
        let (first, paged) = (
            ResponseKey::new(None, "{ a }", None, None),
            ResponseKey::new(None, "{ b }", None, None),
        );
        // A first page is kept at once.
        assert!(cache.put(first, Bytes::from_static(b"1"), ttl, false).await);
        assert!(cache.get(&first).await.is_some());
        // A resumed one only when asked for again.
        assert!(!cache.put(paged, Bytes::from_static(b"2"), ttl, true).await);
        assert!(cache.get(&paged).await.is_none());
        assert!(cache.put(paged, Bytes::from_static(b"2"), ttl, true).await);
        assert_eq!(cache.get(&paged).await.as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn the_doorkeeper_remembers_keys_until_their_slot_is_taken() {
        let once = Doorkeeper::new();
        let keys: Vec<ResponseKey> = (0..1000)
            .map(|i| ResponseKey::new(None, &format!("{{ f{i} }}"), None, None))
            .collect();
        assert!(keys.iter().all(|k| !once.seen_before(k)));
        // 1000 keys in 64 Ki slots: nearly all still there.
        let remembered = keys.iter().filter(|k| once.seen_before(k)).count();
        assert!(remembered > 980, "{remembered}");
        // A key sharing a slot with another takes it over.
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a[0] = 1;
        b[0] = 2;
        let (a, b) = (ResponseKey(a), ResponseKey(b));
        assert!(!once.seen_before(&a));
        assert!(!once.seen_before(&b));
        assert!(!once.seen_before(&a), "b took a's slot");
    }
}
