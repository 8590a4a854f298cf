//! The page cache between the pager and SSM: a hundred frontends polling one
//! view cost SSM one call per page per TTL.
//!
//! [`CachedSource`] wraps one (account, region) [`SessionSource`] and asks a
//! shared [`PageCache`] first. Keys hold everything that changes the answer:
//! account, region, state, filter, page size and token (the operation is
//! implied: this cache holds only `DescribeSessions` pages).
//!
//! - **TTL by kind:** Active pages live `cache.active_ttl_secs` (default 5 s),
//!   History pages `cache.history_ttl_secs` (default 60 s).
//! - **Single-flight:** concurrent misses for one key make one upstream call
//!   and share its result (moka's `try_get_with`), its error included.
//! - **Errors are not data:** a failure is never stored as a page. It is
//!   remembered for `cache.failure_backoff_ms`, during which callers of that
//!   key get the same failure without asking SSM again.
//! - **Stale-if-error:** a page stays in a second cache for
//!   `cache.stale_if_error_secs` past its expiry; when SSM is throttled,
//!   failing or unreachable, that copy is served and the request's
//!   [`Freshness`] says so (the response then carries `extensions.stale`).
//! - **Bounded in bytes:** entries are weighed by their approximate size.
//!
//! - **Second level (with `[redis]`):** a first-level miss asks Redis
//!   (values [`encode`]d, with their fetch time, so a page lives its TTL in
//!   total, not per level); a miss there takes the page's lease (`SET NX
//!   PX`) and the holder alone calls SSM and stores the page; the other
//!   replicas poll for it every [`LEASE_POLL`] up to `redis.lease_wait_ms`,
//!   then call SSM themselves; when the lease is gone without a page (the
//!   holder failed, or died and its lease expired), the next one takes it. Pages live in Redis their TTL plus the
//!   stale window, and an expired one is served under the same
//!   stale-if-error rule. Each source has a generation counter, read with
//!   the page in one `MGET`; [`PageCache::invalidate_everywhere`] bumps it,
//!   so every replica's next read misses, and publishes the invalidation so
//!   that every replica drops its first level too. When Redis is
//!   unavailable, all of this is skipped: first level, then SSM.
//!
//! What a request used is collected in a task-local [`Freshness`]: the
//! shortest remaining lifetime of the pages it read (the response cache keeps
//! a response no longer than that) and any stale pages it was served.

use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::instruments::{CacheEvent, CacheKind, Metrics};
use crate::model::{Session, SessionState, SourceKey};
use crate::settings::{CacheLayer, CacheSettings};
use crate::shared::{Shared, decode, encode, now_ms};
use crate::upstream::{Page, PageRequest, SessionSource, UpstreamError, UpstreamErrorKind};

/// Version of a page stored in the second level (bump on any change of
/// [`StoredPage`] or of the types in it).
const PAGE_VERSION: u8 = 1;
/// How often a replica waiting on another's lease looks for its page.
pub const LEASE_POLL: Duration = Duration::from_millis(20);
/// The channel kind of invalidations (payload: `account:region`).
pub const INVALIDATE: &str = "invalidate";

tokio::task_local! {
    static FRESHNESS: Arc<Freshness>;
}

/// What the data behind one response looked like: collected while a request
/// executes, read by the HTTP layer afterwards.
#[derive(Debug, Default)]
pub struct Freshness {
    inner: Mutex<FreshnessInner>,
}

#[derive(Debug, Default)]
struct FreshnessInner {
    read_upstream: bool,
    resumed: bool,
    shortest_remaining: Option<Duration>,
    stale: Vec<StaleUse>,
}

/// A page served past its TTL because SSM failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleUse {
    pub source: SourceKey,
    /// How long ago the page was fetched.
    pub age: Duration,
}

impl Freshness {
    /// Runs `fut` with a fresh collector; returns its output and what it used.
    pub async fn collect<F: Future>(fut: F) -> (F::Output, Arc<Freshness>) {
        let freshness = Arc::new(Freshness::default());
        let output = FRESHNESS.scope(freshness.clone(), fut).await;
        (output, freshness)
    }

    /// How long a response built from this data may be kept: `None` when
    /// it read no upstream data at all; zero when some of it did not come
    /// through the cache (live data is not kept), else the shortest
    /// remaining lifetime of the cached pages it used.
    pub fn lifetime(&self) -> Option<Duration> {
        let inner = self.lock();
        if inner.read_upstream {
            Some(inner.shortest_remaining.unwrap_or(Duration::ZERO))
        } else {
            inner.shortest_remaining
        }
    }

    /// Notes that the request read upstream data (cached or not); the pager
    /// calls it for every page it asks for.
    pub fn note_upstream_read() {
        let _ = FRESHNESS.try_with(|f| f.lock().read_upstream = true);
    }

    /// Notes that the request resumed a listing from a cursor (a page past
    /// the first): the response cache keeps such answers only once asked
    /// for twice ([`crate::http::ResponseCache::put`]).
    pub fn note_resumed() {
        let _ = FRESHNESS.try_with(|f| f.lock().resumed = true);
    }

    /// Whether the request resumed a listing from a cursor.
    pub fn resumed(&self) -> bool {
        self.lock().resumed
    }

    /// The stale pages served, if any.
    pub fn stale(&self) -> Vec<StaleUse> {
        self.lock().stale.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FreshnessInner> {
        // Only plain values are written under this lock; a panic cannot leave
        // them half-updated.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes data used that stays valid for `remaining` at most (a response
    /// built from it is kept no longer).
    pub fn note_lifetime(remaining: Duration) {
        let _ = FRESHNESS.try_with(|f| {
            let mut inner = f.lock();
            inner.shortest_remaining = Some(
                inner
                    .shortest_remaining
                    .map_or(remaining, |r| r.min(remaining)),
            );
        });
    }

    fn record_stale(source: &SourceKey, age: Duration) {
        let _ = FRESHNESS.try_with(|f| {
            let mut inner = f.lock();
            inner.shortest_remaining = Some(Duration::ZERO);
            inner.stale.push(StaleUse {
                source: source.clone(),
                age,
            });
        });
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PageKey {
    source: SourceKey,
    request: PageRequest,
}

/// A [`PageKey`] borrowed from its parts: a hit looks its page up without
/// copying the filter and token first. Hashes exactly as `PageKey` does
/// (derived `Hash` hashes the fields in order).
#[derive(Hash)]
struct PageKeyRef<'a> {
    source: &'a SourceKey,
    request: &'a PageRequest,
}

impl moka::Equivalent<PageKey> for PageKeyRef<'_> {
    fn equivalent(&self, key: &PageKey) -> bool {
        *self.source == key.source && *self.request == key.request
    }
}

/// A page and when it was fetched.
#[derive(Debug)]
struct Entry {
    /// Shared with readers: a hit copies no session.
    page: Arc<Page>,
    fetched_at: Instant,
    ttl: Duration,
}

/// Per-entry lifetimes: each page lives its own TTL (fresh cache), or its
/// TTL plus the stale window (stale cache).
struct Lifetime {
    stale_window: Duration,
}

impl Expiry<PageKey, Arc<Entry>> for Lifetime {
    fn expire_after_create(
        &self,
        _key: &PageKey,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // What is left of it: a page from the second level was fetched
        // earlier, perhaps by another replica.
        Some((value.ttl + self.stale_window).saturating_sub(value.fetched_at.elapsed()))
    }
}

/// A page as the second level holds it.
#[derive(Serialize, Deserialize)]
struct StoredPage<P> {
    /// The source's generation when the read began: a page of an older
    /// generation was read before a write and is a miss.
    generation: i64,
    /// When it was fetched, in ms since the epoch (the fetching replica's
    /// clock).
    fetched_at_ms: u64,
    page: P,
}

/// What the second level said about a key.
enum Second {
    /// A page within its TTL.
    Fresh(Arc<Entry>),
    /// Nothing fresh; perhaps an expired page (for stale-if-error), and the
    /// generation to store a new page under.
    Miss {
        stale: Option<Arc<Entry>>,
        generation: i64,
        /// Whether the page's lease is held (when asked).
        leased: bool,
    },
    /// Redis is unavailable: do without.
    Unavailable,
}

/// A failed load: the error, and any expired page the second level had.
#[derive(Clone)]
struct LoadError {
    error: UpstreamError,
    stale: Option<Arc<Entry>>,
}

/// The caches shared by every source of one gateway.
pub struct PageCache {
    fresh: Cache<PageKey, Arc<Entry>, Hasher>,
    stale: Cache<PageKey, Arc<Entry>, Hasher>,
    failures: Cache<PageKey, UpstreamError, Hasher>,
    active_ttl: Duration,
    history_ttl: Duration,
    stale_window: Duration,
    /// The second level, when `[redis]` is configured.
    shared: Option<Shared>,
    /// Hits, misses, single-flight joins and stale serves.
    metrics: Metrics,
}

/// The caches' key hasher: keys are hashed on every lookup (a page key is
/// a filter and a token, some hundred bytes), and foldhash does it in a
/// fraction of SipHash's time. Seeded per cache at random, so keys cannot
/// be chosen to collide without knowing the seed.
pub type Hasher = foldhash::fast::RandomState;

/// Approximate bytes a page takes, for the caches' weighers.
fn weigh(page: &Page) -> u32 {
    let strings = |s: &Session| {
        [
            s.target.as_deref(),
            s.document_name.as_deref(),
            s.owner.as_deref(),
            s.reason.as_deref(),
            s.details.as_deref(),
        ]
        .iter()
        .flatten()
        .map(|v| v.len())
        .sum::<usize>()
            + s.session_id.as_str().len()
    };
    // Each session may also get a memo (`upstream::Memos`): its fields as
    // JSON with their names, about its strings again (the owner twice, for
    // `ownerName`) and some 400 bytes of names, dates, id and offsets; and
    // its id's hash (8 bytes).
    let memo = |s: &Session| strings(s) + s.owner.as_deref().map_or(0, str::len) + 408;
    let bytes: usize = page
        .sessions
        .iter()
        .map(|s| std::mem::size_of::<Session>() + strings(s) + memo(s))
        .sum::<usize>()
        + page.next_token.as_ref().map_or(0, String::len)
        + 256;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl PageCache {
    /// Caches sized and timed by `settings` (see [`CacheSettings::bytes_for`]).
    pub fn new(settings: &CacheSettings, metrics: Metrics) -> Self {
        let stale_window = Duration::from_secs(settings.stale_if_error_secs);
        Self {
            fresh: Cache::builder()
                .max_capacity(settings.bytes_for(CacheLayer::FreshPages))
                .weigher(|_, e: &Arc<Entry>| weigh(&e.page))
                .expire_after(Lifetime {
                    stale_window: Duration::ZERO,
                })
                .support_invalidation_closures()
                .build_with_hasher(Hasher::default()),
            stale: Cache::builder()
                .max_capacity(settings.bytes_for(CacheLayer::StalePages))
                .weigher(|_, e: &Arc<Entry>| weigh(&e.page))
                .expire_after(Lifetime { stale_window })
                .support_invalidation_closures()
                .build_with_hasher(Hasher::default()),
            failures: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_millis(settings.failure_backoff_ms.max(1)))
                .support_invalidation_closures()
                .build_with_hasher(Hasher::default()),
            active_ttl: Duration::from_secs(settings.active_ttl_secs),
            history_ttl: Duration::from_secs(settings.history_ttl_secs),
            stale_window,
            metrics,
            shared: None,
        }
    }

    /// Adds the second level shared by the replicas.
    pub fn with_shared(mut self, shared: Option<Shared>) -> Self {
        self.shared = shared;
        self
    }

    /// Drops `source`'s pages here ([`PageCache::invalidate_source`]) and
    /// in every replica: its generation moves on (the second level's pages
    /// become misses) and every replica is told to drop its first level.
    /// Without Redis, or while it is down, only this replica's.
    pub async fn invalidate_everywhere(&self, source: &SourceKey) {
        self.invalidate_source(source);
        if let Some(shared) = &self.shared {
            let bumped = shared
                .store()
                .incr(&shared.source_key("gen", source, ""))
                .await;
            let told = shared
                .store()
                .publish(
                    &shared.key(INVALIDATE, ""),
                    format!("{}:{}", source.account, source.region).as_bytes(),
                )
                .await;
            if bumped.is_err() || told.is_err() {
                tracing::warn!(
                    account = %source.account,
                    region = %source.region,
                    "redis unavailable: other replicas keep this source's pages until they expire"
                );
            }
        }
    }

    /// Drops every page of `source`, fresh and stale, and its remembered
    /// failures: after a write (`TerminateSession`) its lists have changed,
    /// and the next read must ask SSM. A load already in flight may still
    /// store what it read before the write; it lives one TTL at most.
    pub fn invalidate_source(&self, source: &SourceKey) {
        for result in [
            {
                let source = source.clone();
                self.fresh
                    .invalidate_entries_if(move |k, _| k.source == source)
                    .map(drop)
            },
            {
                let source = source.clone();
                self.stale
                    .invalidate_entries_if(move |k, _| k.source == source)
                    .map(drop)
            },
            {
                let source = source.clone();
                self.failures
                    .invalidate_entries_if(move |k, _| k.source == source)
                    .map(drop)
            },
        ] {
            if let Err(e) = result {
                // Only possible without `support_invalidation_closures`,
                // which every cache here is built with.
                tracing::error!(error = %e, "cannot invalidate cached pages");
            }
        }
    }

    fn count(&self, event: CacheEvent) {
        self.metrics.cache(CacheKind::Page, event, 1);
    }

    fn ttl(&self, state: SessionState) -> Duration {
        match state {
            SessionState::Active => self.active_ttl,
            SessionState::History => self.history_ttl,
        }
    }

    async fn page(
        &self,
        source: &SourceKey,
        inner: &Arc<dyn SessionSource>,
        request: &PageRequest,
    ) -> Result<Arc<Page>, UpstreamError> {
        let ttl = self.ttl(request.state);
        if ttl.is_zero() {
            return inner.describe_sessions_shared(request).await;
        }
        let borrowed = PageKeyRef { source, request };
        if let Some(entry) = self.fresh.get(&borrowed).await {
            self.count(CacheEvent::Hit);
            Freshness::note_lifetime(ttl.saturating_sub(entry.fetched_at.elapsed()));
            return Ok(Arc::clone(&entry.page));
        }
        let key = PageKey {
            source: source.clone(),
            request: request.clone(),
        };
        // Whether this caller's load ran: if not, another caller's call in
        // flight answered it (a single-flight join).
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let (error, second_stale) = match self.failures.get(&key).await {
            Some(recent) => {
                // The shared failure of a call made moments ago.
                self.count(CacheEvent::Join);
                (recent, None)
            }
            None => {
                let load = async {
                    loaded.store(true, std::sync::atomic::Ordering::Relaxed);
                    match self.load(source, inner, request, ttl).await {
                        Ok(entry) => {
                            self.stale.insert(key.clone(), entry.clone()).await;
                            Ok(entry)
                        }
                        Err(e) => {
                            // Remembered briefly so that callers of this key
                            // share the failure instead of retrying it at once.
                            self.failures.insert(key.clone(), e.error.clone()).await;
                            Err(e)
                        }
                    }
                };
                let outcome = self.fresh.try_get_with(key.clone(), load).await;
                self.count(if loaded.load(std::sync::atomic::Ordering::Relaxed) {
                    CacheEvent::Miss
                } else {
                    CacheEvent::Join
                });
                match outcome {
                    Ok(entry) => {
                        Freshness::note_lifetime(ttl.saturating_sub(entry.fetched_at.elapsed()));
                        return Ok(Arc::clone(&entry.page));
                    }
                    Err(shared) => (shared.error.clone(), shared.stale.clone()),
                }
            }
        };
        let stale_allowed = matches!(
            error.kind,
            UpstreamErrorKind::Throttled | UpstreamErrorKind::Unavailable
        );
        if !stale_allowed {
            return Err(error);
        }
        let local = self.stale.get(&key).await;
        for entry in local.into_iter().chain(second_stale) {
            let age = entry.fetched_at.elapsed();
            if age < entry.ttl + self.stale_window {
                tracing::warn!(
                    account = %source.account,
                    region = %source.region,
                    age_secs = age.as_secs(),
                    error = %error,
                    "serving a stale page"
                );
                Freshness::record_stale(source, age);
                self.count(CacheEvent::Stale);
                return Ok(Arc::clone(&entry.page));
            }
        }
        Err(error)
    }

    /// A first-level miss: the second level, else SSM (as the lease holder,
    /// after waiting for one, or because Redis is unavailable).
    async fn load(
        &self,
        source: &SourceKey,
        inner: &Arc<dyn SessionSource>,
        request: &PageRequest,
        ttl: Duration,
    ) -> Result<Arc<Entry>, LoadError> {
        let Some(shared) = &self.shared else {
            return fetch(inner, request, ttl)
                .await
                .map_err(|error| LoadError { error, stale: None });
        };
        let digest = request_digest(request);
        let page_key = shared.source_key("page", source, &format!(":{digest}"));
        let gen_key = shared.source_key("gen", source, "");
        let lease_key = shared.source_key("lease", source, &format!(":{digest}"));
        let (mut stale, mut generation) =
            match self.second(shared, &page_key, &gen_key, None, ttl).await {
                Second::Fresh(entry) => {
                    self.metrics.cache(CacheKind::PageRedis, CacheEvent::Hit, 1);
                    return Ok(entry);
                }
                Second::Miss {
                    stale, generation, ..
                } => {
                    self.metrics
                        .cache(CacheKind::PageRedis, CacheEvent::Miss, 1);
                    (stale, Some(generation))
                }
                Second::Unavailable => (None, None),
            };
        let store = shared.store();
        let holder = shared.replica();
        let deadline = Instant::now() + shared.lease_wait;
        'lease: while let Some(current) = generation {
            match store.lease(&lease_key, holder, shared.lease).await {
                Ok(true) => {
                    let fetched = fetch(inner, request, ttl).await;
                    if let Ok(entry) = &fetched {
                        self.publish(shared, &page_key, current, entry, ttl).await;
                    }
                    let _ = store.release(&lease_key, holder).await;
                    return fetched.map_err(|error| LoadError { error, stale });
                }
                Ok(false) => {}
                Err(_) => {
                    generation = None;
                    break;
                }
            }
            // Another replica is asking SSM: wait for its page while its
            // lease lasts (gone without a page: it failed or died; take
            // the lease), up to the bound.
            loop {
                if Instant::now() >= deadline {
                    tracing::debug!(
                        account = %source.account,
                        region = %source.region,
                        "no page from the lease holder in time: asking SSM"
                    );
                    self.metrics.redis_lease_wait("timed_out");
                    break 'lease;
                }
                tokio::time::sleep(LEASE_POLL).await;
                match self
                    .second(shared, &page_key, &gen_key, Some(&lease_key), ttl)
                    .await
                {
                    Second::Fresh(entry) => {
                        self.metrics.redis_lease_wait("published");
                        return Ok(entry);
                    }
                    Second::Miss {
                        stale: s,
                        generation: g,
                        leased,
                    } => {
                        stale = s.or(stale);
                        generation = Some(g);
                        if !leased {
                            self.metrics.redis_lease_wait("took_over");
                            continue 'lease;
                        }
                    }
                    Second::Unavailable => {
                        generation = None;
                        break 'lease;
                    }
                }
            }
        }
        let fetched = fetch(inner, request, ttl).await;
        if let (Ok(entry), Some(generation)) = (&fetched, generation) {
            self.publish(shared, &page_key, generation, entry, ttl)
                .await;
        }
        fetched.map_err(|error| LoadError { error, stale })
    }

    /// The second level's answer for one page.
    /// With `lease_key`, also whether that lease is held now.
    async fn second(
        &self,
        shared: &Shared,
        page_key: &str,
        gen_key: &str,
        lease_key: Option<&str>,
        ttl: Duration,
    ) -> Second {
        let mut keys = vec![page_key.to_owned(), gen_key.to_owned()];
        keys.extend(lease_key.map(str::to_owned));
        let Ok(values) = shared.store().get_many(&keys).await else {
            return Second::Unavailable;
        };
        let mut values = values.into_iter();
        let (stored, generation) = (values.next().flatten(), values.next().flatten());
        // Without a lease key, "held" (nothing to act on).
        let leased = lease_key.is_none() || values.next().flatten().is_some();
        // An unreadable generation (not ours) counts as 0, like an absent one.
        let generation = generation
            .and_then(|g| std::str::from_utf8(&g).ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        let Some(stored) = stored.and_then(|b| decode::<StoredPage<Page>>(PAGE_VERSION, &b)) else {
            return Second::Miss {
                stale: None,
                generation,
                leased,
            };
        };
        if stored.generation != generation {
            return Second::Miss {
                stale: None,
                generation,
                leased,
            };
        }
        let age = Duration::from_millis(now_ms().saturating_sub(stored.fetched_at_ms));
        let entry = Arc::new(Entry {
            page: Arc::new(stored.page),
            fetched_at: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            ttl,
        });
        if age < ttl {
            Second::Fresh(entry)
        } else {
            Second::Miss {
                stale: Some(entry),
                generation,
                leased,
            }
        }
    }

    /// Stores a page SSM just gave in the second level, for its TTL plus
    /// the stale window.
    async fn publish(
        &self,
        shared: &Shared,
        page_key: &str,
        generation: i64,
        entry: &Entry,
        ttl: Duration,
    ) {
        let stored = StoredPage {
            generation,
            fetched_at_ms: now_ms()
                .saturating_sub(u64::try_from(entry.fetched_at.elapsed().as_millis()).unwrap_or(0)),
            page: entry.page.as_ref(),
        };
        if let Some(bytes) = encode(PAGE_VERSION, &stored) {
            let _ = shared
                .store()
                .set(page_key, &bytes, ttl + self.stale_window)
                .await;
        }
    }
}

/// One call to SSM, as a cache entry.
async fn fetch(
    inner: &Arc<dyn SessionSource>,
    request: &PageRequest,
    ttl: Duration,
) -> Result<Arc<Entry>, UpstreamError> {
    let page = inner.describe_sessions_shared(request).await?;
    Ok(Arc::new(Entry {
        page,
        fetched_at: Instant::now(),
        ttl,
    }))
}

/// A short name for a request within its source (state, filter, page size,
/// token), for second-level keys: SHA-256 of its debug form, 128 bits in
/// hex. The form may change between versions; the page version is part of
/// the key, and a changed form is only a miss.
fn request_digest(request: &PageRequest) -> String {
    let digest = Sha256::digest(format!("v{PAGE_VERSION}:{request:?}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A [`SessionSource`] that asks the [`PageCache`] first.
pub struct CachedSource {
    key: SourceKey,
    inner: Arc<dyn SessionSource>,
    cache: Arc<PageCache>,
}

impl CachedSource {
    pub fn new(key: SourceKey, inner: Arc<dyn SessionSource>, cache: Arc<PageCache>) -> Self {
        Self { key, inner, cache }
    }
}

#[async_trait]
impl SessionSource for CachedSource {
    async fn describe_sessions(&self, request: &PageRequest) -> Result<Page, UpstreamError> {
        self.cache
            .page(&self.key, &self.inner, request)
            .await
            .map(Arc::unwrap_or_clone)
    }

    async fn describe_sessions_shared(
        &self,
        request: &PageRequest,
    ) -> Result<Arc<Page>, UpstreamError> {
        self.cache.page(&self.key, &self.inner, request).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::model::{AccountId, Region, SessionFilter, SessionId};

    /// Counts calls; answers a page naming its account, or fails on cue.
    struct Counting {
        calls: AtomicUsize,
        delay: Duration,
        fail: Mutex<Option<UpstreamErrorKind>>,
        label: &'static str,
    }

    impl Counting {
        fn new(label: &'static str) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
                delay: Duration::from_millis(20),
                fail: Mutex::new(None),
                label,
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn fail_with(&self, kind: Option<UpstreamErrorKind>) {
            *self.fail.lock().unwrap() = kind;
        }
    }

    #[async_trait]
    impl SessionSource for Counting {
        async fn describe_sessions(&self, _: &PageRequest) -> Result<Page, UpstreamError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if let Some(kind) = *self.fail.lock().unwrap() {
                return Err(UpstreamError::new(kind, anyhow::anyhow!("scripted")));
            }
            let session = Session::new(SessionId::parse(format!("{}-1", self.label)).unwrap());
            Ok(Page::new(vec![session], None))
        }
    }

    fn key(account: &str) -> SourceKey {
        SourceKey {
            account: AccountId::parse(account).unwrap(),
            region: Region::parse("us-east-1").unwrap(),
        }
    }

    fn request(state: SessionState) -> PageRequest {
        PageRequest {
            state,
            filter: SessionFilter::default(),
            page_size: 50,
            token: None,
        }
    }

    fn settings() -> CacheSettings {
        CacheSettings {
            active_ttl_secs: 1,
            history_ttl_secs: 60,
            stale_if_error_secs: 60,
            failure_backoff_ms: 200,
            ..CacheSettings::default()
        }
    }

    fn cached(account: &str, inner: &Arc<Counting>, cache: &Arc<PageCache>) -> CachedSource {
        CachedSource::new(key(account), inner.clone(), cache.clone())
    }

    fn id(page: &Page) -> &str {
        page.sessions[0].session_id.as_str()
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_call() {
        let metrics = Metrics::new();
        let cache = Arc::new(PageCache::new(&settings(), metrics.clone()));
        let inner = Counting::new("a");
        let source = Arc::new(cached("111111111111", &inner, &cache));
        let req = request(SessionState::History);
        // Collected first: a lazy `map` would spawn each call only after
        // the previous one was awaited, and nothing would be concurrent.
        let calls: Vec<_> = (0..200)
            .map(|_| {
                let source = source.clone();
                let req = req.clone();
                tokio::spawn(async move { source.describe_sessions(&req).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().is_ok());
        }
        assert_eq!(inner.calls(), 1);
        // One caller went upstream; the others joined its call (or, if they
        // came after it ended, hit its page).
        let count = |event: &str| {
            let line = format!("gateway_cache_events_total{{layer=\"page\",event=\"{event}\"}} ");
            metrics
                .render()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(line.as_str())
                        .map(|v| v.parse::<u64>().unwrap())
                })
                .unwrap_or(0)
        };
        assert_eq!(count("miss"), 1);
        assert_eq!(count("join") + count("hit"), 199);
        assert!(count("join") > 0);
    }

    #[test]
    fn a_borrowed_key_hashes_and_compares_as_the_key() {
        use std::hash::BuildHasher as _;
        let hasher = std::collections::hash_map::RandomState::new();
        let source = SourceKey {
            account: AccountId::parse("111111111111").unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
        };
        let mut request = request(SessionState::History);
        request.token = Some("t".into());
        request.filter.owner = Some("arn:aws:iam::111111111111:user/x".into());
        let key = PageKey {
            source: source.clone(),
            request: request.clone(),
        };
        let borrowed = PageKeyRef {
            source: &source,
            request: &request,
        };
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(&borrowed));
        assert!(moka::Equivalent::equivalent(&borrowed, &key));
        let mut other = request.clone();
        other.token = None;
        let other = PageKeyRef {
            source: &source,
            request: &other,
        };
        assert!(!moka::Equivalent::equivalent(&other, &key));
    }

    #[tokio::test]
    async fn pages_are_kept_apart_by_source_and_request() {
        let cache = Arc::new(PageCache::new(&settings(), Metrics::new()));
        let (a, b) = (Counting::new("a"), Counting::new("b"));
        let sa = cached("111111111111", &a, &cache);
        let sb = cached("222222222222", &b, &cache);
        let req = request(SessionState::History);
        assert_eq!(id(&sa.describe_sessions(&req).await.unwrap()), "a-1");
        assert_eq!(id(&sb.describe_sessions(&req).await.unwrap()), "b-1");
        assert_eq!(id(&sa.describe_sessions(&req).await.unwrap()), "a-1");
        let mut other = req.clone();
        other.page_size = 51;
        sa.describe_sessions(&other).await.unwrap();
        assert_eq!((a.calls(), b.calls()), (2, 1));
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl_and_report_what_is_left() {
        let cache = Arc::new(PageCache::new(&settings(), Metrics::new()));
        let inner = Counting::new("a");
        let source = cached("111111111111", &inner, &cache);
        let req = request(SessionState::Active);
        let ((), used) = Freshness::collect(async {
            source.describe_sessions(&req).await.unwrap();
        })
        .await;
        let left = used.lifetime().unwrap();
        assert!(left <= Duration::from_secs(1) && left > Duration::from_millis(500));
        source.describe_sessions(&req).await.unwrap();
        assert_eq!(inner.calls(), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        source.describe_sessions(&req).await.unwrap();
        assert_eq!(inner.calls(), 2, "the Active TTL of 1 s has passed");
    }

    #[tokio::test]
    async fn errors_are_shared_briefly_but_never_cached_as_data() {
        let cache = Arc::new(PageCache::new(&settings(), Metrics::new()));
        let inner = Counting::new("a");
        let source = cached("111111111111", &inner, &cache);
        let req = request(SessionState::History);
        inner.fail_with(Some(UpstreamErrorKind::AccessDenied));
        assert!(source.describe_sessions(&req).await.is_err());
        // Within the back-off: the same failure, no new call.
        assert!(source.describe_sessions(&req).await.is_err());
        assert_eq!(inner.calls(), 1);
        inner.fail_with(None);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(id(&source.describe_sessions(&req).await.unwrap()), "a-1");
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test]
    async fn an_expired_page_is_served_stale_when_upstream_fails() {
        let cache = Arc::new(PageCache::new(&settings(), Metrics::new()));
        let inner = Counting::new("a");
        let source = cached("111111111111", &inner, &cache);
        let req = request(SessionState::Active);
        source.describe_sessions(&req).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        inner.fail_with(Some(UpstreamErrorKind::Throttled));
        let (page, used) = Freshness::collect(source.describe_sessions(&req)).await;
        assert_eq!(id(&page.unwrap()), "a-1");
        let stale = used.stale();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].source, key("111111111111"));
        assert!(stale[0].age >= Duration::from_secs(1));
        assert_eq!(used.lifetime(), Some(Duration::ZERO));
        // Access denied is not an outage: no stale data for it.
        let cache = Arc::new(PageCache::new(&settings(), Metrics::new()));
        let inner = Counting::new("a");
        let source = cached("111111111111", &inner, &cache);
        source.describe_sessions(&req).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        inner.fail_with(Some(UpstreamErrorKind::AccessDenied));
        assert!(source.describe_sessions(&req).await.is_err());
    }

    #[tokio::test]
    async fn invalidating_a_source_drops_its_pages_only() {
        let cache = Arc::new(PageCache::new(&settings(), Metrics::new()));
        let (a, b) = (Counting::new("a"), Counting::new("b"));
        let sa = cached("111111111111", &a, &cache);
        let sb = cached("222222222222", &b, &cache);
        for state in [SessionState::Active, SessionState::History] {
            sa.describe_sessions(&request(state)).await.unwrap();
            sb.describe_sessions(&request(state)).await.unwrap();
        }
        cache.invalidate_source(&key("111111111111"));
        for state in [SessionState::Active, SessionState::History] {
            sa.describe_sessions(&request(state)).await.unwrap();
            sb.describe_sessions(&request(state)).await.unwrap();
        }
        assert_eq!((a.calls(), b.calls()), (4, 2));
    }

    #[tokio::test]
    async fn a_zero_ttl_turns_caching_off() {
        let cache = Arc::new(PageCache::new(
            &CacheSettings {
                active_ttl_secs: 0,
                ..settings()
            },
            Metrics::new(),
        ));
        let inner = Counting::new("a");
        let source = cached("111111111111", &inner, &cache);
        let req = request(SessionState::Active);
        source.describe_sessions(&req).await.unwrap();
        let (_, used) = Freshness::collect(async {
            Freshness::note_upstream_read();
            source.describe_sessions(&req).await
        })
        .await;
        assert_eq!(inner.calls(), 2);
        assert_eq!(
            used.lifetime(),
            Some(Duration::ZERO),
            "live data is not kept"
        );
    }
}
