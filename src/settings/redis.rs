//! `[redis]`: the shared store that lets several replicas cost SSM like one
//! (see `src/shared/`). Absent: everything stays in process.

use serde::Deserialize;

use super::{Secret, SettingsError};

/// A Redis server shared by every replica behind one load balancer: second
/// level of the page and node caches, single-flight across replicas, the
/// shared upstream rate limit, one subscription poller per source and the
/// invalidation after `terminateSession`. Without this section (the
/// default) every replica keeps all of that in process. Redis is never a
/// single point of failure: when it is unreachable or slow, each replica
/// falls back to its own caches and limits and reconnects with back-off.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]` or `rediss://...` (TLS,
    /// verified against the system's roots). Required. A secret: it may
    /// hold a password. Env `SSM_GATEWAY_REDIS__URL` (setting it alone
    /// turns Redis on).
    // Defaulted so that a missing url is reported as `redis.url` by the
    // validation, not as a secret that failed to parse.
    #[serde(default = "no_url")]
    pub url: Secret<String>,
    /// Prefix of every key and channel, so that several gateways (or other
    /// tenants) can share one Redis. 1 to 64 of A-Z a-z 0-9 _ - : . Default
    /// `ssm-gateway:`. Replicas that should share must use the same. Env
    /// `SSM_GATEWAY_REDIS__KEY_PREFIX`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// How long one Redis command may take, in milliseconds, 1 to 10000;
    /// past it the request goes on without Redis (first level, then AWS).
    /// Default 250. Env `SSM_GATEWAY_REDIS__COMMAND_TIMEOUT_MS`.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// How long connecting may take, in milliseconds, 1 to 60000. Default
    /// 1000. Env `SSM_GATEWAY_REDIS__CONNECT_TIMEOUT_MS`.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest pause between two reconnection attempts while Redis is
    /// down, in milliseconds, 100 to 60000 (attempts start 100 ms apart and
    /// double). Default 5000. Env `SSM_GATEWAY_REDIS__MAX_BACKOFF_MS`.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Single-flight across replicas: how long the replica that took a
    /// page's lease may take to publish it before the lease expires (a
    /// holder that dies frees it then), in milliseconds, 100 to 60000.
    /// Default 10000. Env `SSM_GATEWAY_REDIS__LEASE_MS`.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How long other replicas wait for the lease holder's page before they
    /// ask AWS themselves, in milliseconds, 0 to 60000. Default 2000. Env
    /// `SSM_GATEWAY_REDIS__LEASE_WAIT_MS`.
    #[serde(default = "default_lease_wait_ms")]
    pub lease_wait_ms: u64,
}

fn no_url() -> Secret<String> {
    Secret::new(String::new())
}
fn default_key_prefix() -> String {
    "ssm-gateway:".to_owned()
}
fn default_command_timeout_ms() -> u64 {
    250
}
fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_max_backoff_ms() -> u64 {
    5000
}
fn default_lease_ms() -> u64 {
    10_000
}
fn default_lease_wait_ms() -> u64 {
    2000
}

impl RedisSettings {
    /// Settings with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url.into()),
            key_prefix: default_key_prefix(),
            command_timeout_ms: default_command_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            lease_ms: default_lease_ms(),
            lease_wait_ms: default_lease_wait_ms(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let url = self.url.expose();
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"));
        if rest.is_none_or(str::is_empty) {
            // The URL may hold a password: say what is wrong, not what it is.
            return Err(SettingsError::new(
                "redis.url",
                "must be a redis:// or rediss:// URL with a host (value not shown)",
            ));
        }
        if ::redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err() {
            return Err(SettingsError::new(
                "redis.url",
                "is not a valid Redis URL (value not shown)",
            ));
        }
        let prefix_ok = (1..=64).contains(&self.key_prefix.len())
            && self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c));
        if !prefix_ok {
            return Err(SettingsError::new(
                "redis.key_prefix",
                format!(
                    "must be 1 to 64 of A-Z a-z 0-9 _ - : . (got {:?})",
                    self.key_prefix
                ),
            ));
        }
        for (key, value, min, max) in [
            (
                "redis.command_timeout_ms",
                self.command_timeout_ms,
                1,
                10_000,
            ),
            (
                "redis.connect_timeout_ms",
                self.connect_timeout_ms,
                1,
                60_000,
            ),
            ("redis.max_backoff_ms", self.max_backoff_ms, 100, 60_000),
            ("redis.lease_ms", self.lease_ms, 100, 60_000),
            ("redis.lease_wait_ms", self.lease_wait_ms, 0, 60_000),
        ] {
            if !(min..=max).contains(&value) {
                return Err(SettingsError::new(
                    key,
                    format!("must be {min} to {max} (got {value})"),
                ));
            }
        }
        Ok(())
    }
}
