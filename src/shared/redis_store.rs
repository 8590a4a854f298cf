//! [`Store`] over Redis: one multiplexed connection (redis-rs's
//! `ConnectionManager`, which reconnects by itself) for commands, and one
//! subscriber connection per replica whose messages are fanned out in
//! process through a tokio `broadcast`.
//!
//! Health: the store is `Up` or `Down`. A command that times out or loses
//! its connection marks it `Down` (one log line); while down, commands
//! fail at once, without waiting on the network, and a probe task pings
//! with back-off (100 ms, doubling up to `redis.max_backoff_ms`) until an
//! answer marks it `Up` again (one log line). Background tasks hold only
//! weak references: dropping the last `RedisStore` stops them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, RedisError, Script};
use tokio::sync::broadcast;

use super::{Message, Store, StoreState, Unavailable};
use crate::instruments::Metrics;
use crate::settings::RedisSettings;

/// Messages a slow consumer may fall behind before it misses some.
const MESSAGE_CAPACITY: usize = 1024;
/// The first pause between two reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Take the lease, or renew it for its holder. 1 when `ARGV[1]` holds it.
const LEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Delete the lease if `ARGV[1]` holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// GCRA (the generic cell rate algorithm, as `governor` uses in process):
/// the key holds the theoretical arrival time in microseconds of Redis's
/// own clock (`TIME`, so replicas' clocks do not matter). ARGV[1] is the
/// emission interval (1 s / rate), ARGV[2] the burst. Returns 0 when the
/// call may go (and records it), else the microseconds to wait. One key,
/// one script: atomic, and it would run unchanged on a Cluster's slot.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval - burst * interval
if now < allow_at then
  return allow_at - now
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
";

struct Inner {
    connection: ConnectionManager,
    up: AtomicBool,
    timeout: Duration,
    messages: broadcast::Sender<Message>,
    lease: Script,
    release: Script,
    gcra: Script,
    /// `gateway_redis_up` and `gateway_redis_fallbacks_total`.
    metrics: Option<Metrics>,
}

/// The Redis-backed [`Store`].
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl RedisStore {
    /// A store over the Redis `settings` names. Fails only on a URL the
    /// client refuses; an unreachable Redis starts the store `Down`.
    pub async fn connect(settings: &RedisSettings) -> anyhow::Result<Self> {
        Self::connect_observed(settings, None).await
    }

    /// [`RedisStore::connect`], recording its state and fallbacks in
    /// `metrics`.
    pub async fn connect_observed(
        settings: &RedisSettings,
        metrics: Option<Metrics>,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.expose().as_str())
            .context("redis.url cannot be used")?;
        let timeout = Duration::from_millis(settings.command_timeout_ms);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(connect_timeout))
            // Reconnection is the probe's business: one quick try per use.
            .set_number_of_retries(1)
            .set_min_delay(MIN_BACKOFF)
            .set_max_delay(Duration::from_millis(settings.max_backoff_ms));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .context("cannot set up the Redis connection")?;
        let (messages, _) = broadcast::channel(MESSAGE_CAPACITY);
        let inner = Arc::new(Inner {
            connection,
            up: AtomicBool::new(false),
            timeout,
            messages,
            lease: Script::new(LEASE),
            release: Script::new(RELEASE),
            gcra: Script::new(GCRA),
            metrics,
        });
        let first = ping(&inner, connect_timeout).await;
        match first {
            Ok(()) => {
                inner.up.store(true, Ordering::SeqCst);
                inner.observe_up(true);
                tracing::info!(
                    "redis reachable: caches, single-flight, limits and pollers are shared"
                );
            }
            Err(e) => {
                inner.observe_up(false);
                tracing::warn!(error = %e, "redis unreachable at start-up: running on this replica's own caches and limits until it answers");
            }
        }
        let max_backoff = Duration::from_millis(settings.max_backoff_ms);
        tokio::spawn(probe(Arc::downgrade(&inner), max_backoff));
        tokio::spawn(subscribe(
            client,
            Arc::downgrade(&inner),
            format!("{}*", settings.key_prefix),
            connect_timeout,
            max_backoff,
        ));
        Ok(Self { inner })
    }

    /// Runs `command` within the timeout, unless the store is down; a lost
    /// connection or a timeout marks it down.
    async fn run<T, F>(&self, command: F) -> Result<T, Unavailable>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let inner = &self.inner;
        if !inner.up.load(Ordering::SeqCst) {
            inner.fallback("down");
            return Err(Unavailable);
        }
        match tokio::time::timeout(inner.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e))
                if !(e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()) =>
            {
                // Redis answered, with an error: our bug (a script, a
                // type), not an outage. Do without for this call.
                tracing::warn!(error = %e, "redis refused a command");
                inner.fallback("error");
                Err(Unavailable)
            }
            Ok(Err(e)) => {
                inner.fallback("error");
                mark_down(inner, &e.to_string());
                Err(Unavailable)
            }
            Err(_) => {
                inner.fallback("timeout");
                mark_down(inner, "command timed out");
                Err(Unavailable)
            }
        }
    }
}

impl Inner {
    fn observe_up(&self, up: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.redis_up(up);
        }
    }

    fn fallback(&self, reason: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.redis_fallback(reason);
        }
    }
}

fn mark_down(inner: &Inner, why: &str) {
    if inner.up.swap(false, Ordering::SeqCst) {
        inner.observe_up(false);
        tracing::warn!(
            error = why,
            "redis unreachable: falling back to this replica's own caches, limits and pollers"
        );
    }
}

async fn ping(inner: &Inner, timeout: Duration) -> anyhow::Result<()> {
    let mut connection = inner.connection.clone();
    let pong: String =
        tokio::time::timeout(timeout, redis::cmd("PING").query_async(&mut connection))
            .await
            .context("PING timed out")??;
    anyhow::ensure!(pong == "PONG", "unexpected answer to PING");
    Ok(())
}

/// While the store is down, pings with back-off until it answers.
async fn probe(inner: Weak<Inner>, max_backoff: Duration) {
    loop {
        let down = {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            if strong.up.load(Ordering::SeqCst) {
                // Look for the next outage every second, holding no strong
                // reference in between (so that dropping the store ends
                // this task).
                let weak = inner.clone();
                let wait = async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match weak.upgrade() {
                            None => return false,
                            Some(s) if !s.up.load(Ordering::SeqCst) => return true,
                            Some(_) => {}
                        }
                    }
                };
                drop(strong);
                wait.await
            } else {
                true
            }
        };
        if !down {
            return;
        }
        let mut backoff = MIN_BACKOFF;
        loop {
            tokio::time::sleep(backoff).await;
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let timeout = strong.timeout.max(Duration::from_millis(500));
            if ping(&strong, timeout).await.is_ok() {
                if !strong.up.swap(true, Ordering::SeqCst) {
                    strong.observe_up(true);
                    tracing::info!("redis reachable again: sharing resumes");
                }
                break;
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }
}

/// This replica's one subscriber connection: every message under the
/// prefix, into the broadcast; reconnects with back-off when it drops.
async fn subscribe(
    client: redis::Client,
    inner: Weak<Inner>,
    pattern: String,
    connect_timeout: Duration,
    max_backoff: Duration,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(sender) = inner.upgrade().map(|i| i.messages.clone()) else {
            return;
        };
        let connected = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = connected {
            backoff = MIN_BACKOFF;
            tracing::debug!("redis subscriber connected");
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let message = Message {
                    channel: msg.get_channel_name().to_owned(),
                    payload: msg.get_payload_bytes().into(),
                };
                // No receivers is fine: nobody listens yet.
                let _ = sender.send(message);
                if inner.strong_count() == 0 {
                    return;
                }
            }
            tracing::debug!("redis subscriber connection lost");
        }
        drop(sender);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Unavailable> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.inner.connection.clone();
        self.run(async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await })
            .await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Unavailable> {
        let mut c = self.inner.connection.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run(async move { c.pset_ex::<_, _, ()>(key, value, ms).await })
            .await
    }

    async fn set_many(
        &self,
        entries: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), Unavailable> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut c = self.inner.connection.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.pset_ex(key, value.as_slice(), ms).ignore();
        }
        self.run(async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    async fn incr(&self, key: &str) -> Result<i64, Unavailable> {
        let mut c = self.inner.connection.clone();
        self.run(async move { c.incr(key, 1).await }).await
    }

    async fn lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, Unavailable> {
        let mut c = self.inner.connection.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let script = &self.inner.lease;
        self.run(async move {
            let held: i64 = script
                .key(key)
                .arg(holder)
                .arg(ms)
                .invoke_async(&mut c)
                .await?;
            Ok(held == 1)
        })
        .await
    }

    async fn release(&self, key: &str, holder: &str) -> Result<(), Unavailable> {
        let mut c = self.inner.connection.clone();
        let script = &self.inner.release;
        self.run(async move {
            script
                .key(key)
                .arg(holder)
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
        })
        .await
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Unavailable> {
        let mut c = self.inner.connection.clone();
        self.run(async move { c.publish::<_, _, ()>(channel, payload).await })
            .await
    }

    async fn rate(
        &self,
        key: &str,
        per_second: u32,
        burst: u32,
    ) -> Result<Option<Duration>, Unavailable> {
        let mut c = self.inner.connection.clone();
        let interval_us = 1_000_000 / u64::from(per_second.max(1));
        let script = &self.inner.gcra;
        let wait_us: i64 = self
            .run(async move {
                script
                    .key(key)
                    .arg(interval_us)
                    .arg(burst.max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us.unsigned_abs())))
    }

    fn messages(&self) -> broadcast::Receiver<Message> {
        self.inner.messages.subscribe()
    }

    fn state(&self) -> StoreState {
        if self.inner.up.load(Ordering::SeqCst) {
            StoreState::Up
        } else {
            StoreState::Down
        }
    }
}
