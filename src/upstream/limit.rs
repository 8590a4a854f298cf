//! A rate limit on upstream calls per (account, region), shared by every
//! caller, enforced where every SDK attempt passes: the HTTP client.
//!
//! SSM's rate limits are per account and region and shared with everything
//! else in the account (console, automation, other tools). One noisy caller
//! must not make SSM throttle an account for everyone, so each source's SSM
//! client gets its own [`LimitedHttpClient`]: every request it sends, the
//! SDK's retries included (a limiter around the whole call would miss
//! those), first waits for a token of that source's bucket. A call that
//! would wait longer than the allowed time fails at once with
//! [`LocalThrottle`], which the adapter reports as `UPSTREAM_THROTTLED`
//! without reaching SSM.
//!
//! With `[redis]`, the bucket is shared by every replica: a GCRA script in
//! Redis (one key per source, Redis's own clock) decides, so the limit
//! holds in total, not per replica. While Redis is unavailable each replica
//! falls back to its own bucket (the limit then holds per replica).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::instruments::{Metrics, SourceLabels};
use crate::model::SourceKey;
use crate::shared::Shared;

/// One source's bucket: `per_second` calls a second, in bursts of as many.
pub struct UpstreamLimiter {
    bucket: DefaultDirectRateLimiter,
    clock: DefaultClock,
    max_wait: Duration,
    per_second: u32,
    /// The bucket shared by the replicas, and its key.
    shared: Option<(Shared, String)>,
    /// Where each acquisition is counted (`gateway_upstream_limiter_total`).
    metrics: Option<(Metrics, SourceLabels)>,
}

impl fmt::Debug for UpstreamLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamLimiter")
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

/// A call refused by the local limiter: it would have waited too long.
#[derive(Debug, thiserror::Error)]
#[error("upstream call rate limit reached for this account and region (waited {waited:?})")]
pub struct LocalThrottle {
    pub waited: Duration,
}

impl UpstreamLimiter {
    pub fn new(per_second: u32, max_wait: Duration) -> Arc<Self> {
        Self::build(per_second, max_wait, None)
    }

    /// [`UpstreamLimiter::new`], counting each acquisition (immediate,
    /// after a wait, or refused) for `source` in `metrics`.
    pub fn observed(
        per_second: u32,
        max_wait: Duration,
        metrics: Metrics,
        source: SourceLabels,
    ) -> Arc<Self> {
        Self::build(per_second, max_wait, Some((metrics, source)))
    }

    fn build(
        per_second: u32,
        max_wait: Duration,
        metrics: Option<(Metrics, SourceLabels)>,
    ) -> Arc<Self> {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        Arc::new(Self {
            bucket: RateLimiter::direct_with_clock(Quota::per_second(rate), clock.clone()),
            clock,
            max_wait,
            per_second: rate.get(),
            shared: None,
            metrics,
        })
    }

    /// This limiter, with the bucket of `source` shared by every replica
    /// through `shared` (when given; `self` must not be shared yet).
    pub fn shared_by(
        mut self: Arc<Self>,
        shared: Option<&Shared>,
        source: &SourceKey,
    ) -> Arc<Self> {
        if let (Some(shared), Some(this)) = (shared, Arc::get_mut(&mut self)) {
            this.shared = Some((shared.clone(), shared.source_key("rate", source, "")));
        }
        self
    }

    fn count(&self, outcome: &'static str) {
        if let Some((metrics, source)) = &self.metrics {
            metrics.upstream_limiter(source, outcome);
        }
    }

    /// Counts a call let through, after waiting or not.
    fn admitted(&self, waited: bool) -> Result<(), LocalThrottle> {
        self.count(if waited { "waited" } else { "immediate" });
        Ok(())
    }

    /// Sleeps `wait` for the next token, unless that would take the call
    /// past `max_wait` since it `started`: then it is refused.
    async fn wait_or_refuse(&self, started: Instant, wait: Duration) -> Result<(), LocalThrottle> {
        let waited = started.elapsed();
        if waited + wait > self.max_wait {
            self.count("refused");
            return Err(LocalThrottle { waited });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Waits for this source's turn; fails when that would take longer than
    /// the allowed wait (counted from the first try).
    pub async fn acquire(&self) -> Result<(), LocalThrottle> {
        let started = Instant::now();
        let mut waits = false;
        if let Some((shared, key)) = &self.shared {
            loop {
                match shared
                    .store()
                    .rate(key, self.per_second, self.per_second)
                    .await
                {
                    Ok(None) => return self.admitted(waits),
                    Ok(Some(wait)) => {
                        self.wait_or_refuse(started, wait).await?;
                        waits = true;
                    }
                    // Redis unavailable: this replica's own bucket.
                    Err(_) => break,
                }
            }
        }
        loop {
            match self.bucket.check() {
                Ok(()) => return self.admitted(waits),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    self.wait_or_refuse(started, wait).await?;
                    waits = true;
                }
            }
        }
    }
}

/// An HTTP client whose every request first takes a token of `limiter`.
#[derive(Debug, Clone)]
pub struct LimitedHttpClient {
    inner: SharedHttpClient,
    limiter: Arc<UpstreamLimiter>,
}

impl LimitedHttpClient {
    pub fn new(inner: SharedHttpClient, limiter: Arc<UpstreamLimiter>) -> Self {
        Self { inner, limiter }
    }
}

impl HttpClient for LimitedHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(LimitedConnector {
            inner: self.inner.http_connector(settings, components),
            limiter: self.limiter.clone(),
        })
    }
}

#[derive(Debug)]
struct LimitedConnector {
    inner: SharedHttpConnector,
    limiter: Arc<UpstreamLimiter>,
}

impl HttpConnector for LimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let limiter = self.limiter.clone();
        HttpConnectorFuture::new(async move {
            if let Err(refused) = limiter.acquire().await {
                // A "user" error: the SDK does not retry it (a retry would
                // only queue behind the same bucket).
                return Err(ConnectorError::user(Box::new(refused)));
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_passes_then_calls_wait_their_turn() {
        let limiter = UpstreamLimiter::new(10, Duration::from_secs(1));
        let started = Instant::now();
        for _ in 0..10 {
            limiter.acquire().await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_millis(50), "the burst");
        for _ in 0..3 {
            limiter.acquire().await.unwrap();
        }
        // Three more at 10/s: at least about 0.3 s.
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_call_that_would_wait_too_long_fails_at_once() {
        let limiter = UpstreamLimiter::new(1, Duration::from_millis(100));
        limiter.acquire().await.unwrap();
        let started = Instant::now();
        let refused = limiter.acquire().await.unwrap_err();
        assert!(refused.waited < Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
