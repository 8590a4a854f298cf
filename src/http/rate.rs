//! Requests per caller: a token bucket per principal (`[rate_limits]`).
//!
//! Checked right after authentication and before any GraphQL work (the
//! response cache included: a cached answer is still a request): on
//! `POST`/`GET /graphql`, and on each subscription a WebSocket starts. A
//! refusal says how long until the next request would pass, which becomes
//! `Retry-After`.
//!
//! Callers are keyed by the principal as the audit log names it
//! (`api_key:<name>`, `jwt:<sub>`): an API key's name or a token's subject,
//! never a credential, so a key's rotation keeps its bucket. Principals
//! with an override in `rate_limits.principals` get a bucket of their own,
//! made at start-up; everyone else shares one keyed limiter (governor's,
//! over a `DashMap`) with the default quota.
//!
//! With `[redis]` the buckets are shared by every replica: the same GCRA
//! script as the upstream limiter (`crate::shared`), one key per principal
//! (a hash of its name), so a caller's limit holds in total however the
//! load balancer spreads its requests. While Redis is unavailable each
//! replica falls back to the buckets here (the limit then holds per
//! replica).
//!
//! # Memory
//! The keyed limiter holds one entry per principal seen. JWT subjects are
//! not known in advance, so every [`SWEEP_EVERY`] checks drop the entries
//! whose bucket is full again (governor's `retain_recent`: a caller idle for
//! `burst / requests_per_second` seconds is indistinguishable from a new
//! one) and give the memory back. The map then holds at most the principals
//! active in that window plus those seen since the last sweep.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use sha2::{Digest as _, Sha256};

use crate::settings::{PrincipalRate, RateLimitSettings};
use crate::shared::Shared;

/// Checks between two sweeps of idle callers out of the keyed limiter.
pub const SWEEP_EVERY: u64 = 1024;

type Keyed<C> =
    RateLimiter<String, DashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The request rate of every caller. `C` is a clock (a fake one in tests).
pub struct CallerLimits<C: Clock = DefaultClock> {
    /// `None` when `rate_limits.enabled` is false: every request passes.
    limits: Option<Limits<C>>,
    /// The store replicas share the buckets in (`[redis]`).
    shared: Option<Shared>,
    /// The default rate and the overrides, for the shared buckets.
    default_rate: PrincipalRate,
    rates: HashMap<String, PrincipalRate>,
}

struct Limits<C: Clock> {
    clock: C,
    /// Everyone without an override, by principal.
    default: Keyed<C>,
    /// Principals with an override, each its own bucket.
    overrides: HashMap<String, Direct<C>>,
    /// Checks of `default` so far, to pace the sweeps.
    checks: AtomicU64,
}

/// A request over its caller's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// When the caller's next request would pass.
    pub retry_after: Duration,
}

impl RateLimited {
    /// `retry_after` in whole seconds, rounded up, at least 1: the
    /// `Retry-After` header (which has no fractions).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        let rounded = if self.retry_after.subsec_nanos() > 0 {
            secs + 1
        } else {
            secs
        };
        rounded.max(1)
    }
}

fn quota(rate: PrincipalRate) -> Quota {
    // Validated settings are at least 1; MIN only keeps this total.
    let per_second = NonZeroU32::new(rate.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

impl CallerLimits<DefaultClock> {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> CallerLimits<C> {
    pub fn with_clock(settings: &RateLimitSettings, clock: C) -> Self {
        let default_rate = PrincipalRate {
            requests_per_second: settings.requests_per_second,
            burst: settings.burst,
        };
        if !settings.enabled {
            return Self {
                limits: None,
                shared: None,
                default_rate,
                rates: HashMap::new(),
            };
        }
        let default = quota(default_rate);
        let overrides = settings
            .principals
            .iter()
            .map(|(principal, rate)| {
                (
                    principal.clone(),
                    RateLimiter::direct_with_clock(quota(*rate), clock.clone()),
                )
            })
            .collect();
        Self {
            limits: Some(Limits {
                default: RateLimiter::dashmap_with_clock(default, clock.clone()),
                clock,
                overrides,
                checks: AtomicU64::new(0),
            }),
            shared: None,
            default_rate,
            rates: settings.principals.clone().into_iter().collect(),
        }
    }

    /// These limits, shared by every replica through `shared` (when given).
    pub fn shared_by(mut self, shared: Option<Shared>) -> Self {
        self.shared = shared;
        self
    }

    /// [`CallerLimits::check`] across every replica (with `[redis]`): one
    /// bucket per principal in Redis, this replica's own when Redis is
    /// unavailable.
    pub async fn check_everywhere(&self, principal: &str) -> Result<(), RateLimited> {
        if self.limits.is_none() {
            return Ok(());
        }
        let Some(shared) = &self.shared else {
            return self.check(principal);
        };
        let rate = self
            .rates
            .get(principal)
            .copied()
            .unwrap_or(self.default_rate);
        let digest = Sha256::digest(principal.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        match shared
            .store()
            .rate(
                &shared.key("caller", &name),
                rate.requests_per_second,
                rate.burst,
            )
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(RateLimited { retry_after: wait }),
            Err(_) => self.check(principal),
        }
    }

    /// Takes one request from `principal`'s bucket (the principal as the
    /// audit log names it), or says how long until one is there.
    pub fn check(&self, principal: &str) -> Result<(), RateLimited> {
        let Some(limits) = &self.limits else {
            return Ok(());
        };
        let verdict = match limits.overrides.get(principal) {
            Some(bucket) => bucket.check(),
            None => {
                let checks = limits.checks.fetch_add(1, Ordering::Relaxed) + 1;
                if checks.is_multiple_of(SWEEP_EVERY) {
                    limits.default.retain_recent();
                    limits.default.shrink_to_fit();
                }
                limits.default.check_key(&principal.to_owned())
            }
        };
        verdict.map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(limits.clock.now()),
        })
    }

    /// Principals the keyed limiter holds state for now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.limits.as_ref().map_or(0, |l| l.default.len())
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn settings(rps: u32, burst: u32) -> RateLimitSettings {
        RateLimitSettings {
            requests_per_second: rps,
            burst,
            ..RateLimitSettings::default()
        }
    }

    #[test]
    fn a_caller_gets_its_burst_then_waits_for_the_rate() {
        let clock = FakeRelativeClock::default();
        let limits = CallerLimits::with_clock(&settings(2, 3), clock.clone());
        for _ in 0..3 {
            assert_eq!(limits.check("api_key:a"), Ok(()));
        }
        let refused = limits.check("api_key:a").expect_err("over the burst");
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.retry_after_secs(), 1);
        // Another caller has a bucket of its own.
        assert_eq!(limits.check("api_key:b"), Ok(()));
        clock.advance(Duration::from_millis(500));
        assert_eq!(limits.check("api_key:a"), Ok(()));
        assert!(limits.check("api_key:a").is_err());
    }

    #[test]
    fn an_override_replaces_the_default_for_its_principal_only() {
        let mut settings = settings(1, 1);
        settings.principals.insert(
            "api_key:ci".to_owned(),
            PrincipalRate {
                requests_per_second: 1,
                burst: 5,
            },
        );
        let limits = CallerLimits::with_clock(&settings, FakeRelativeClock::default());
        for _ in 0..5 {
            assert_eq!(limits.check("api_key:ci"), Ok(()));
        }
        assert!(limits.check("api_key:ci").is_err());
        assert_eq!(limits.check("jwt:ci"), Ok(()));
        assert!(limits.check("jwt:ci").is_err());
    }

    #[test]
    fn disabled_lets_everything_through() {
        let limits = CallerLimits::new(&RateLimitSettings {
            enabled: false,
            ..settings(1, 1)
        });
        for _ in 0..100 {
            assert_eq!(limits.check("api_key:a"), Ok(()));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let secs = |ms| {
            RateLimited {
                retry_after: Duration::from_millis(ms),
            }
            .retry_after_secs()
        };
        assert_eq!(secs(0), 1);
        assert_eq!(secs(1), 1);
        assert_eq!(secs(1000), 1);
        assert_eq!(secs(1001), 2);
        assert_eq!(secs(59_500), 60);
    }

    #[test]
    fn idle_callers_are_swept_out_of_memory() {
        let clock = FakeRelativeClock::default();
        let limits = CallerLimits::with_clock(&settings(10, 10), clock.clone());
        let many = SWEEP_EVERY as usize - 1;
        for i in 0..many {
            assert_eq!(limits.check(&format!("jwt:user-{i}")), Ok(()));
        }
        assert_eq!(limits.tracked(), many);
        // Long enough for every bucket to be full again: the next check
        // sweeps them all, keeping only the caller it admits.
        clock.advance(Duration::from_secs(2));
        assert_eq!(limits.check("jwt:late"), Ok(()));
        assert_eq!(limits.tracked(), 1);
        // A caller still inside its window is kept (and still limited).
        for _ in 0..10 {
            let _ = limits.check("jwt:busy");
        }
        assert!(limits.check("jwt:busy").is_err());
        for i in 0..SWEEP_EVERY {
            let _ = limits.check(&format!("jwt:other-{i}"));
        }
        assert!(limits.check("jwt:busy").is_err(), "its state survived");
    }
}
