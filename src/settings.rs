//! Typed settings: one struct tree, each field documented with its default
//! and its environment variable.
//!
//! Everything the gateway needs to start is here. [`Settings::load`] reads
//! it; [`Settings::validate`] checks it, naming the bad key in every message.
//! Secrets live in [`Secret`], which never prints, not even in errors.
//!
//! # Settings file
//!
//! One TOML file (`serve --config PATH`, or `SSM_GATEWAY_CONFIG`); see
//! `config/example.toml`. Each key takes the first of, highest first:
//!
//! 1. the command line (`serve --listen` only);
//! 2. an environment variable `SSM_GATEWAY_<KEY>`, a nested key's parts
//!    joined by `__` (`SSM_GATEWAY_LIMITS__MAX_FIRST`,
//!    `SSM_GATEWAY_AWS__ENDPOINT_URL`); names are case-insensitive after the
//!    prefix;
//! 3. the file;
//! 4. the default stated on the field.
//!
//! Env values of string keys (`listen`, `cursor_key`, `aws.region`,
//! `aws.endpoint_url`, `auth.api_keys_file`, `auth.jwt.issuer`, ...) are
//! taken verbatim; `default_regions` is a comma
//! list (or a TOML array); other values are parsed as a TOML scalar when
//! they parse as one, else taken as a string. An unknown `SSM_GATEWAY_*`
//! variable is an error, so a typo never goes unnoticed; the one exception
//! is `SSM_GATEWAY_CONFIG`, which names the file. `accounts`,
//! `auth.api_keys`, `auth.anonymous_grants`, `auth.jwt.claim_grants` and
//! `rate_limits.principals` are set in the file only: env cannot add,
//! remove or change an account, a key, a grant or a caller's limit.
//!
//! The file is not required: without one the gateway runs on defaults and
//! env, with no accounts.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::cursor::{MAX_CURSOR_LEN, MIN_KEY_LEN};
use crate::model::{AccountId, MAX_PAGE_SIZE, Region};

mod auth;
mod rate_limits;
mod redis;

pub use auth::{ApiKeySettings, AuthSettings, GrantSettings, JwtSettings};
pub(crate) use auth::{KeyUniqueness, KnownAccounts, parse_sha256_hex, validate_api_keys};
pub use rate_limits::{PrincipalRate, RateLimitSettings};
pub use redis::RedisSettings;

/// A value that must not reach logs or error messages. `Debug` and
/// `Display` print `[redacted]`; [`Secret::expose`] is the only way in.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize), serde(transparent))]
pub struct Secret<T>(T);

/// By hand rather than derived: a derived impl passes the inner type's error
/// through, and serde's "invalid type: integer `1234`" would print the secret.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer)
            .map(Self)
            .map_err(|_| serde::de::Error::custom("invalid secret (a string; value not shown)"))
    }
}

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The gateway's settings.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server listens on. Default `127.0.0.1:8080`. Env
    /// `SSM_GATEWAY_LISTEN`; `serve --listen` overrides both.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the admin listener: `/livez`, `/readyz` and `/metrics`,
    /// apart from the public port, e.g. `0.0.0.0:9090`. Default unset (no
    /// admin listener). Env `SSM_GATEWAY_ADMIN_LISTEN`.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// On SIGTERM, how long the gateway keeps accepting new connections
    /// while `/readyz` already answers 503, so load balancers stop sending
    /// before the port closes, in seconds, 0 to 300. Default 5. Env
    /// `SSM_GATEWAY_SHUTDOWN_DELAY_SECS`.
    #[serde(default = "default_shutdown_delay_secs")]
    pub shutdown_delay_secs: u64,
    /// After that, how long requests in flight get to finish before the
    /// gateway exits anyway, in seconds, 0 to 3600. Default 25 (with the
    /// delay, within Kubernetes' default 30 s grace period). Env
    /// `SSM_GATEWAY_SHUTDOWN_GRACE_SECS`.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Log line format on stderr: `text` (for people), `json` (one object
    /// per line, with `trace_id` and `span_id` inside a traced request), or
    /// `auto`: text when stderr is a terminal, JSON otherwise (a container).
    /// Default `auto`. Env `SSM_GATEWAY_LOG_FORMAT`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// OpenTelemetry trace export (`[otlp]`); each field states its default
    /// and env variable.
    #[serde(default)]
    pub otlp: OtlpSettings,
    /// Key that signs cursors (keyed BLAKE3, and HMAC-SHA256 for format 1), at
    /// least 32 bytes. Every replica behind one load balancer must share it,
    /// so any replica resumes any cursor. Unset: a random key per process, with a warning at start-up
    /// (cursors then die with the process). Default unset. Env
    /// `SSM_GATEWAY_CURSOR_KEY`: prefer it to the file, which is often
    /// readable by more people than the key should be.
    #[serde(default)]
    pub cursor_key: Option<Secret<String>>,
    /// Cursor wire version written: 3 (the default: a BLAKE3 tag, last
    /// session ids as hashes), 2 (a BLAKE3 tag, ids in full) or 1
    /// (HMAC-SHA256, as releases before 2026-11-28 wrote). All are always
    /// read. Set the newest version the old replicas read only while
    /// upgrading from a release that cannot read version 3, then remove it.
    /// Env `SSM_GATEWAY_CURSOR_VERSION`.
    #[serde(default = "default_cursor_version")]
    pub cursor_version: u8,
    /// Paging limits of the `sessions` connection (`[limits]`); each field
    /// states its default and env variable.
    #[serde(default)]
    pub limits: Limits,
    /// HTTP limits (`[http]`); each field states its default and env variable.
    #[serde(default)]
    pub http: HttpSettings,
    /// Caching of upstream pages, managed nodes and whole responses
    /// (`[cache]`); each field states its default and env variable.
    #[serde(default)]
    pub cache: CacheSettings,
    /// How the gateway reaches AWS (`[aws]`): base region, endpoint, retries,
    /// timeouts; each field states its default and env variable.
    #[serde(default)]
    pub aws: AwsSettings,
    /// Live sessions (`[live]`): the `sessionEvents` subscription over
    /// WebSocket and the `terminateSession` mutation; each field states its
    /// default and env variable.
    #[serde(default)]
    pub live: LiveSettings,
    /// Regions an account reads when its own `regions` is empty, e.g.
    /// `["eu-west-1", "us-east-1"]`. Default empty. Env
    /// `SSM_GATEWAY_DEFAULT_REGIONS`, a comma list (`eu-west-1,us-east-1`).
    #[serde(default)]
    pub default_regions: Vec<String>,
    /// The AWS accounts the gateway reads sessions from (`[[accounts]]`).
    /// Default none. File only: no env variable sets or changes an account.
    #[serde(default)]
    pub accounts: Vec<AccountSettings>,
    /// Who may call and what they may see (`[auth]`): API keys, JWT,
    /// anonymous access and their grants; see [`crate::auth`]. Default: no
    /// way in ([`AuthSettings::is_configured`] is false). Keys, grants and
    /// `auth.jwt.claim_grants` are set in the file only.
    #[serde(default)]
    pub auth: AuthSettings,
    /// Automatic persisted queries (`[persisted_queries]`); each field
    /// states its default and env variable.
    #[serde(default)]
    pub persisted_queries: PersistedQuerySettings,
    /// A Redis shared by the replicas (`[redis]`): see [`RedisSettings`].
    /// Default none: caches, single-flight, limits and pollers stay in
    /// process. Env `SSM_GATEWAY_REDIS__URL` and the other `redis.*` keys.
    #[serde(default)]
    pub redis: Option<RedisSettings>,
    /// Requests per caller (`[rate_limits]`): defaults and per-principal
    /// overrides; each field states its default and env variable.
    #[serde(default)]
    pub rate_limits: RateLimitSettings,
}

/// Automatic persisted queries (Apollo's protocol): clients send a
/// document's SHA-256 instead of the document (see README, "Persisted
/// queries").
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct PersistedQuerySettings {
    /// Accept `extensions.persistedQuery`. Off: such requests get
    /// `PERSISTED_QUERY_NOT_SUPPORTED` (Apollo Client then sends documents).
    /// Default true. Env `SSM_GATEWAY_PERSISTED_QUERIES__ENABLED`.
    pub enabled: bool,
    /// Memory bound of the documents kept, in bytes (each weighed by its
    /// length), 1 KiB to 1 GiB; the least used go first, and their clients
    /// simply send them again. Default 4 MiB (a few thousand documents).
    /// Env `SSM_GATEWAY_PERSISTED_QUERIES__MAX_BYTES`.
    pub max_bytes: u64,
    /// Safelist mode: the path of an Apollo persisted query manifest (JSON,
    /// `format` `apollo-persisted-query-manifest`, version 1, each
    /// operation's `id` the SHA-256 of its `body`). When set, only its
    /// operations run, for every caller, over HTTP (by hash or as the same
    /// text) and WebSocket; anything else is `OPERATION_NOT_IN_SAFELIST`,
    /// and no other document is registered. Read at start-up: a missing or
    /// malformed file stops the gateway. Default none (any valid document
    /// runs). Env `SSM_GATEWAY_PERSISTED_QUERIES__SAFELIST`.
    pub safelist: Option<PathBuf>,
    /// Safelist mode only: operations run by hash alone. A request that
    /// sends a document (`query`, or a subscription's text), listed or
    /// not, is refused with `PERSISTED_QUERY_ID_REQUIRED`, so no caller's
    /// text is ever parsed. Default false. Env
    /// `SSM_GATEWAY_PERSISTED_QUERIES__REQUIRE_ID`.
    pub require_id: bool,
    /// How often the safelist file is checked for a change, in seconds,
    /// 0 to 3600; 0: no checks (SIGHUP still reads it again). Each check
    /// reads and hashes the file; changed text is parsed and, when valid,
    /// used from then on;
    /// an invalid one is logged and counted
    /// (`gateway_safelist_reloads_total{outcome="error"}`), and the list in
    /// use stays. Default 30. Env
    /// `SSM_GATEWAY_PERSISTED_QUERIES__SAFELIST_RELOAD_SECS`.
    pub safelist_reload_secs: u64,
}

impl Default for PersistedQuerySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 4 * 1024 * 1024,
            safelist: None,
            require_id: false,
            safelist_reload_secs: 30,
        }
    }
}

impl PersistedQuerySettings {
    fn validate(&self) -> Result<(), SettingsError> {
        const RANGE: std::ops::RangeInclusive<u64> = 1024..=1024 * 1024 * 1024;
        if !RANGE.contains(&self.max_bytes) {
            return Err(SettingsError::new(
                "persisted_queries.max_bytes",
                format!(
                    "must be {} to {} (got {})",
                    RANGE.start(),
                    RANGE.end(),
                    self.max_bytes
                ),
            ));
        }
        if self.safelist.is_some() && !self.enabled {
            return Err(SettingsError::new(
                "persisted_queries.safelist",
                "needs persisted_queries.enabled = true (the safelist's operations are run by hash)",
            ));
        }
        if self.safelist_reload_secs > 3600 {
            return Err(SettingsError::new(
                "persisted_queries.safelist_reload_secs",
                format!("must be 0 to 3600 (got {})", self.safelist_reload_secs),
            ));
        }
        if self.require_id && self.safelist.is_none() {
            return Err(SettingsError::new(
                "persisted_queries.require_id",
                "needs persisted_queries.safelist (only a safelist's operations have ids \
                 known before their first request)",
            ));
        }
        Ok(())
    }
}

/// The format of log lines.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("must be auto, text or json (got {s:?})")),
        }
    }
}

/// OpenTelemetry traces over OTLP/HTTP (protobuf). Export is on when
/// `endpoint` is set here, or when the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is; the other standard
/// variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
/// `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`) apply as usual.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSettings {
    /// The collector's base URL, e.g. `http://otel-collector:4318` (spans go
    /// to `/v1/traces` under it), `http://` or `https://`. Default unset:
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else no export. Env
    /// `SSM_GATEWAY_OTLP__ENDPOINT`.
    pub endpoint: Option<String>,
    /// The `service.name` of exported spans. Default unset:
    /// `OTEL_SERVICE_NAME`, else `ssm-session-gateway`. Env
    /// `SSM_GATEWAY_OTLP__SERVICE_NAME`.
    pub service_name: Option<String>,
}

/// How the gateway reaches AWS.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Region of the base credentials and of STS. Default: the first of
    /// `default_regions`, else the default chain's region (`AWS_REGION`, the
    /// profile). Env `SSM_GATEWAY_AWS__REGION`.
    pub region: Option<String>,
    /// Overrides the SSM and STS endpoints (a VPC endpoint, the emulator), an
    /// `http://` or `https://` URL. Default unset (the AWS endpoints). Env
    /// `SSM_GATEWAY_AWS__ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// SDK attempts per call, first included, 1 to 10; retries back off with
    /// jitter. Default 3. Env `SSM_GATEWAY_AWS__MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// Bound on one attempt, in seconds, above 0. Default 5. Env
    /// `SSM_GATEWAY_AWS__ATTEMPT_TIMEOUT_SECS`.
    pub attempt_timeout_secs: u64,
    /// Bound on a whole call with its retries, in seconds, above 0. Default
    /// 15. Env `SSM_GATEWAY_AWS__OPERATION_TIMEOUT_SECS`.
    pub operation_timeout_secs: u64,
    /// The SDK's retry mode: `standard` (exponential backoff with jitter) or
    /// `adaptive` (also rate-limits the client when throttled, which suits
    /// SSM's low limits). Default `adaptive`. Env `SSM_GATEWAY_AWS__RETRY_MODE`.
    pub retry_mode: RetryMode,
    /// First retry backoff, in milliseconds, 1 to 10000; later ones grow
    /// exponentially with jitter up to `max_backoff_ms`. Default 200 (SSM
    /// throttling clears in about a second). Env
    /// `SSM_GATEWAY_AWS__INITIAL_BACKOFF_MS`.
    pub initial_backoff_ms: u64,
    /// Longest retry backoff, in milliseconds, at least `initial_backoff_ms`.
    /// Default 5000. Env `SSM_GATEWAY_AWS__MAX_BACKOFF_MS`.
    pub max_backoff_ms: u64,
    /// Upstream calls per second to any one (account, region), shared by
    /// all callers, SDK retries included (every attempt waits its turn), 1
    /// to 100; bursts of as many. Keeps one noisy caller from making SSM
    /// throttle an account for everyone. Default 5, well under SSM's own
    /// quotas. Env `SSM_GATEWAY_AWS__MAX_CALLS_PER_SECOND`.
    pub max_calls_per_second: u32,
    /// How long a call may wait for its turn, in milliseconds, 0 to 10000;
    /// longer and it fails `UPSTREAM_THROTTLED` without reaching SSM.
    /// Default 1000. Env `SSM_GATEWAY_AWS__MAX_CALL_WAIT_MS`.
    pub max_call_wait_ms: u64,
}

/// The SDK's retry modes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    Standard,
    Adaptive,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            max_attempts: 3,
            attempt_timeout_secs: 5,
            operation_timeout_secs: 15,
            retry_mode: RetryMode::Adaptive,
            initial_backoff_ms: 200,
            max_backoff_ms: 5000,
            max_calls_per_second: 5,
            max_call_wait_ms: 1000,
        }
    }
}

/// Caching. SSM's session APIs have low rate limits and dashboards poll:
/// these keep the gateway's cost to SSM independent of how many look.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// How long an upstream page of Active sessions is served from cache, in
    /// seconds, 0 to 300 (0: not cached). Default 5: Active lists change by
    /// the minute, and 5 s bounds how stale a dashboard can be while
    /// collapsing every poll within that window into one call. Env
    /// `SSM_GATEWAY_CACHE__ACTIVE_TTL_SECS`.
    pub active_ttl_secs: u64,
    /// The same for History pages, 0 to 3600. Default 60: ended sessions do
    /// not change; only new ones arrive at the front. Env
    /// `SSM_GATEWAY_CACHE__HISTORY_TTL_SECS`.
    pub history_ttl_secs: u64,
    /// How long after expiry a page may still be served when SSM fails
    /// (throttled, 5xx, timeout), marked stale in the response `extensions`,
    /// in seconds, 0 to 3600 (0: never). Default 300. Env
    /// `SSM_GATEWAY_CACHE__STALE_IF_ERROR_SECS`.
    pub stale_if_error_secs: u64,
    /// After an upstream failure, how long the same page is not asked for
    /// again (callers share the failure), in milliseconds, 0 to 60000.
    /// Default 1000. Env `SSM_GATEWAY_CACHE__FAILURE_BACKOFF_MS`.
    pub failure_backoff_ms: u64,
    /// How long a managed node (`DescribeInstanceInformation`) is cached, in
    /// seconds, 0 to 3600. Default 60. Env `SSM_GATEWAY_CACHE__NODE_TTL_SECS`.
    pub node_ttl_secs: u64,
    /// Memory bound of all caches together, in bytes (approximate: entries
    /// are weighed by their size). Default 64 MiB. Env
    /// `SSM_GATEWAY_CACHE__MAX_BYTES`.
    pub max_bytes: u64,
    /// Cache whole responses of identical query operations (same document,
    /// operation, variables and caller), for no longer than the shortest TTL
    /// of the data they used. Default true. Env
    /// `SSM_GATEWAY_CACHE__RESPONSES`.
    pub responses: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            active_ttl_secs: 5,
            history_ttl_secs: 60,
            stale_if_error_secs: 300,
            failure_backoff_ms: 1000,
            node_ttl_secs: 60,
            max_bytes: 64 * 1024 * 1024,
            responses: true,
        }
    }
}

/// The caches that share `cache.max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheLayer {
    /// Upstream pages within their TTL.
    FreshPages,
    /// Expired pages kept for stale-if-error (mostly the same pages).
    StalePages,
    /// Managed nodes: few and small (a few hundred bytes each).
    Nodes,
    /// Whole serialized responses.
    Responses,
}

impl CacheSettings {
    /// Each cache's share of `max_bytes`, in eighths: pages 3 + 3 (fresh and
    /// stale), nodes 1, responses 1. The one place the split is decided, so
    /// the shares always add up to the whole.
    pub fn bytes_for(&self, layer: CacheLayer) -> u64 {
        let eighths = match layer {
            CacheLayer::FreshPages | CacheLayer::StalePages => 3,
            CacheLayer::Nodes | CacheLayer::Responses => 1,
        };
        self.max_bytes / 8 * eighths
    }
}

impl CacheSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        for (key, value, max) in [
            ("cache.active_ttl_secs", self.active_ttl_secs, 300),
            ("cache.history_ttl_secs", self.history_ttl_secs, 3600),
            ("cache.stale_if_error_secs", self.stale_if_error_secs, 3600),
            ("cache.failure_backoff_ms", self.failure_backoff_ms, 60_000),
            ("cache.node_ttl_secs", self.node_ttl_secs, 3600),
        ] {
            if value > max {
                return Err(SettingsError::new(
                    key,
                    format!("must be 0 to {max} (got {value})"),
                ));
            }
        }
        if self.max_bytes < 1024 * 1024 {
            return Err(SettingsError::new(
                "cache.max_bytes",
                format!("must be at least 1 MiB (got {})", self.max_bytes),
            ));
        }
        Ok(())
    }
}

/// One AWS account the gateway reads, and how it gets credentials there:
/// `role_arn` (assumed from the base credentials), or `profile` (a named
/// profile of the shared config files), or neither (the base credentials
/// themselves, i.e. the gateway's own account). Set in the file only (no
/// env variables).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// The 12-digit account id. Required; unique.
    pub id: String,
    /// A short unique name callers may use instead of the id, e.g. `prod`:
    /// 1 to 64 of `A-Z a-z 0-9 _ -`, and not 12 digits (so it never reads as
    /// an id). Required; unique.
    pub alias: String,
    /// Role to assume in the account, `arn:aws:iam::<id>:role/<name>` (the
    /// account in the ARN must be `id`). Default unset: no role.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// External id the role's trust policy requires, if any: 2 to 1224 of
    /// `\w+=,.@:/-`. Only with `role_arn`. Default unset.
    #[serde(default)]
    pub external_id: Option<Secret<String>>,
    /// Role session name, shown in the account's CloudTrail: 2 to 64 of
    /// `\w+=,.@-`. Only with `role_arn`. Default `ssm-session-gateway`.
    #[serde(default)]
    pub session_name: Option<String>,
    /// Lifetime of the assumed-role credentials, 900 to 43200 s (and no more
    /// than the role's own maximum). Only with `role_arn`. Default 3600.
    #[serde(default)]
    pub session_duration_secs: Option<u32>,
    /// A second role in the account, used only by `terminateSession`
    /// (`ssm:TerminateSession`), so that the reading role stays read-only:
    /// `arn:aws:iam::<id>:role/<name>`, assumed from the base credentials
    /// (with this account's `external_id` and `session_name`, if set).
    /// Default unset: sessions are terminated with the account's reading
    /// credentials (`role_arn`, `profile` or the base credentials).
    #[serde(default)]
    pub terminate_role_arn: Option<String>,
    /// A named profile of the shared config files, instead of a role (not
    /// both). Default unset.
    #[serde(default)]
    pub profile: Option<String>,
    /// Regions to read, no duplicates. Default empty, meaning
    /// `default_regions`; one of the two must name a region.
    #[serde(default)]
    pub regions: Vec<String>,
}

impl AccountSettings {
    /// The regions this account is read in.
    pub fn effective_regions<'a>(&'a self, defaults: &'a [String]) -> &'a [String] {
        if self.regions.is_empty() {
            defaults
        } else {
            &self.regions
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_shutdown_delay_secs() -> u64 {
    5
}

fn default_shutdown_grace_secs() -> u64 {
    25
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: None,
            shutdown_delay_secs: default_shutdown_delay_secs(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            log_format: LogFormat::default(),
            otlp: OtlpSettings::default(),
            cursor_key: None,
            cursor_version: default_cursor_version(),
            limits: Limits::default(),
            http: HttpSettings::default(),
            cache: CacheSettings::default(),
            aws: AwsSettings::default(),
            live: LiveSettings::default(),
            default_regions: Vec::new(),
            accounts: Vec::new(),
            auth: AuthSettings::default(),
            persisted_queries: PersistedQuerySettings::default(),
            redis: None,
            rate_limits: RateLimitSettings::default(),
        }
    }
}

/// Paging limits of the `sessions` connection.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// `first` when the query leaves it out, 1 to `max_first`. Default 50.
    /// Env `SSM_GATEWAY_LIMITS__DEFAULT_FIRST`.
    pub default_first: u32,
    /// The largest `first` accepted, at most 10000. Default 1000. Env
    /// `SSM_GATEWAY_LIMITS__MAX_FIRST`.
    pub max_first: u32,
    /// `pageSize` (upstream `MaxResults`) when the query leaves it out.
    /// Default 200, the service maximum: SSM's rate limits count calls, not
    /// sessions, so full pages cost the fewest calls per session. 1 to 200.
    /// Env `SSM_GATEWAY_LIMITS__DEFAULT_PAGE_SIZE`.
    pub default_page_size: u8,
    /// Most upstream calls one request may cost any one (account, region)
    /// source, 1 to 1000. A request whose estimate (every page counted as a
    /// miss) exceeds it is refused before it runs (`COST_LIMIT_EXCEEDED`);
    /// while it runs, a window that reaches it stops there and says so. A
    /// one-page query over every source costs each source one or two calls,
    /// so it is allowed however many sources there are. Default 10: SSM's
    /// rate limits are per account and region and shared with everything
    /// else there. Env `SSM_GATEWAY_LIMITS__MAX_UPSTREAM_CALLS_PER_SOURCE`.
    pub max_upstream_calls_per_source: u32,
    /// Most fields at the root of one operation (aliases and fragments
    /// counted), 1 to 1000. Default 20. Env
    /// `SSM_GATEWAY_LIMITS__MAX_ROOT_FIELDS`.
    pub max_root_fields: u32,
    /// Most complexity one operation may have (async-graphql's measure:
    /// each field 1, a connection its `first` times its selection), at
    /// least 100. Default 25000 (a 1000-session page of every field fits).
    /// Env `SSM_GATEWAY_LIMITS__MAX_COMPLEXITY`.
    pub max_complexity: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_first: 50,
            max_first: 1000,
            default_page_size: MAX_PAGE_SIZE,
            max_upstream_calls_per_source: 10,
            max_root_fields: 20,
            max_complexity: 25_000,
        }
    }
}

fn default_cursor_version() -> u8 {
    3
}

/// The HTTP server: limits, browsers (CORS), introspection.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Largest request body accepted, in bytes (larger: HTTP 413), and
    /// largest WebSocket message or frame (larger: the socket is closed
    /// with 1009). Default
    /// 192 KiB: room for the largest cursor the gateway mints
    /// ([`crate::cursor::MAX_CURSOR_LEN`]) with the query around it; at
    /// least twice that. Env `SSM_GATEWAY_HTTP__BODY_LIMIT_BYTES`.
    pub body_limit_bytes: usize,
    /// Deepest selection set accepted, at least 1. Default 15: the depth of
    /// the standard introspection query (graphql-js 16's, which GraphiQL's
    /// docs explorer and most tools send); the deepest data query is 5. Env
    /// `SSM_GATEWAY_HTTP__MAX_QUERY_DEPTH`.
    pub max_query_depth: usize,
    /// Browser origins allowed to call `/graphql` from another site (CORS),
    /// each `scheme://host[:port]` exactly as the browser sends it, e.g.
    /// `"https://console.example.com"`. Preflights are answered for these
    /// origins only, allowing `GET`, `POST` and the `Authorization` and
    /// `Content-Type` headers. Default none: no cross-origin access. Env
    /// `SSM_GATEWAY_HTTP__CORS_ALLOWED_ORIGINS` (a comma list).
    pub cors_allowed_origins: Vec<String>,
    /// Whether the schema answers introspection (`__schema`, `__type`),
    /// which GraphiQL and code generators use. Default true. Env
    /// `SSM_GATEWAY_HTTP__INTROSPECTION`.
    pub introspection: bool,
    /// Headers GraphiQL sends with every query it runs, e.g. the demo's
    /// `Authorization: Bearer demo-admin`. Set by code (the demo), not read
    /// from files or the environment: a real deployment's credentials belong
    /// to each user, never to the page.
    #[serde(skip)]
    pub graphiql_default_headers: Vec<(String, String)>,
    /// Deadline of one GraphQL request, in seconds, 1 to 300: past it the
    /// request is answered `TIMEOUT` rather than left hanging. Default 30.
    /// Env `SSM_GATEWAY_HTTP__REQUEST_TIMEOUT_SECS`.
    pub request_timeout_secs: u64,
    /// Most GraphQL requests executing at once, 1 to 100000; beyond it a
    /// request is answered 503 `OVERLOADED` with `Retry-After` at once.
    /// Default 512. Env `SSM_GATEWAY_HTTP__MAX_IN_FLIGHT`.
    pub max_in_flight: usize,
    /// TCP connections the GraphQL listener serves at once, 1 to 1000000,
    /// idle keep-alive ones included (WebSockets, once upgraded, count
    /// towards `live.max_connections` instead). At the limit the gateway
    /// accepts no more until one closes: new ones wait in the listen
    /// backlog, and the gateway logs a warning. It keeps a flood of idle
    /// connections from taking every file descriptor, which would stop the
    /// gateway accepting anything. Default 4096 (with
    /// `live.max_connections`, under common open-file limits; raise both
    /// with the limit). Env `SSM_GATEWAY_HTTP__MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// Largest response body, in bytes, at least 64 KiB: a larger one is
    /// answered `RESPONSE_TOO_LARGE` instead. Default 2 MiB. Env
    /// `SSM_GATEWAY_HTTP__MAX_RESPONSE_BYTES`.
    pub max_response_bytes: usize,
    /// How long a client may take to send a request body, in seconds, 1 to
    /// 300 (slower: 408). Default 10. Env
    /// `SSM_GATEWAY_HTTP__BODY_READ_TIMEOUT_SECS`.
    pub body_read_timeout_secs: u64,
    /// How long a client may take to send a request's line and headers, in
    /// seconds, 1 to 300; slower, the connection is closed. Over HTTP/1.1
    /// this is also how long a keep-alive connection may sit idle between
    /// requests (hyper uses one timer for both), and over HTTP/2 how long a
    /// connection may have no request in flight, so behind a proxy that
    /// reuses connections (ingress-nginx, an ALB) keep the proxy's upstream
    /// keep-alive timeout below it. Default 65: above the 60 s idle timeout
    /// of an ALB and ingress-nginx's upstream keep-alive, so the gateway is
    /// never the side that drops a pooled connection. Env
    /// `SSM_GATEWAY_HTTP__HEADER_READ_TIMEOUT_SECS`.
    pub header_read_timeout_secs: u64,
    /// Whether queries of the common shape (root `sessions` fields selecting
    /// scalars of the connection, its edges, nodes and page info) skip
    /// async-graphql's per-field execution and are written straight to JSON
    /// once their document has been validated, with the same answers and
    /// errors. Default true; false runs every request through the schema.
    /// Env `SSM_GATEWAY_HTTP__COMPILED_EXECUTION`.
    pub compiled_execution: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 192 * 1024,
            max_query_depth: 15,
            cors_allowed_origins: Vec::new(),
            introspection: true,
            graphiql_default_headers: Vec::new(),
            request_timeout_secs: 30,
            max_in_flight: 512,
            max_connections: 4096,
            max_response_bytes: 2 * 1024 * 1024,
            body_read_timeout_secs: 10,
            header_read_timeout_secs: 65,
            compiled_execution: true,
        }
    }
}

/// Live sessions: the `sessionEvents` subscription (GraphQL over WebSocket
/// on `/graphql`, subprotocols `graphql-transport-ws` and the legacy
/// `graphql-ws`) and the `terminateSession` mutation.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct LiveSettings {
    /// Whether `terminateSession` may end sessions. Default false: until
    /// callers are authenticated, anyone who reaches the gateway could end
    /// any session, so it is off unless turned on here; while off the
    /// mutation answers `FORBIDDEN`. Env `SSM_GATEWAY_LIVE__TERMINATE_ENABLED`.
    pub terminate_enabled: bool,
    /// The shortest interval between two reads of one (account, region)'s
    /// Active list by the subscription poller, in milliseconds, 10 to
    /// 300000. A poller reads once per `max(cache.active_ttl_secs, this)`,
    /// through the page cache. Default 1000. Env
    /// `SSM_GATEWAY_LIVE__MIN_POLL_INTERVAL_MS`.
    pub min_poll_interval_ms: u64,
    /// How often the server sends each WebSocket a protocol ping
    /// (`{"type":"ping"}` for graphql-transport-ws, `{"type":"ka"}` for the
    /// legacy graphql-ws), in milliseconds, 100 to 300000. Default 25000:
    /// under the idle timeouts of common load balancers (AWS ALB and nginx
    /// 60 s, GCP 30 s). Env `SSM_GATEWAY_LIVE__PING_INTERVAL_MS`.
    pub ping_interval_ms: u64,
    /// How long a new WebSocket may take to send `connection_init`, in
    /// milliseconds, 10 to 60000; past it the socket is closed with 4408.
    /// Default 10000. Env `SSM_GATEWAY_LIVE__INIT_TIMEOUT_MS`.
    pub init_timeout_ms: u64,
    /// Subscriptions one WebSocket may hold open at once, 1 to 1000; one
    /// more is refused with `TOO_MANY_SUBSCRIPTIONS`. Default 20. Env
    /// `SSM_GATEWAY_LIVE__MAX_SUBSCRIPTIONS_PER_CONNECTION`.
    pub max_subscriptions_per_connection: u32,
    /// WebSockets one replica holds open at once, those still waiting for
    /// `connection_init` included, 1 to 1000000: the upgrade of one more is
    /// answered HTTP 503 `OVERLOADED` with `Retry-After: 1`. It bounds the
    /// memory and file descriptors anyone who reaches the port can take
    /// (an idle socket costs about 12 KiB, BENCHMARKS.md; keep the
    /// process's open-file limit above this plus `http.max_connections`).
    /// Default 4096. Env `SSM_GATEWAY_LIVE__MAX_CONNECTIONS`.
    pub max_connections: u32,
    /// WebSockets one caller (principal) may hold open on one replica, 1 to
    /// 1000000: a `connection_init` past it closes its socket with 1013
    /// (try again later), so that no one caller takes every socket. Default
    /// 100 (a browser holds one a tab; raise it for a service that holds
    /// one per user of its own). Env
    /// `SSM_GATEWAY_LIVE__MAX_CONNECTIONS_PER_CALLER`.
    pub max_connections_per_caller: u32,
    /// On shutdown, how long open WebSockets get to close (each is sent a
    /// 1001 "going away" close at once), in milliseconds, 0 to 60000.
    /// Default 5000. Env `SSM_GATEWAY_LIVE__SHUTDOWN_GRACE_MS`.
    pub shutdown_grace_ms: u64,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            terminate_enabled: false,
            min_poll_interval_ms: 1000,
            ping_interval_ms: 25_000,
            init_timeout_ms: 10_000,
            max_subscriptions_per_connection: 20,
            max_connections: 4096,
            max_connections_per_caller: 100,
            shutdown_grace_ms: 5000,
        }
    }
}

impl LiveSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        for (key, value, min, max) in [
            (
                "live.min_poll_interval_ms",
                self.min_poll_interval_ms,
                10,
                300_000,
            ),
            ("live.ping_interval_ms", self.ping_interval_ms, 100, 300_000),
            ("live.init_timeout_ms", self.init_timeout_ms, 10, 60_000),
            (
                "live.max_subscriptions_per_connection",
                u64::from(self.max_subscriptions_per_connection),
                1,
                1000,
            ),
            (
                "live.max_connections",
                u64::from(self.max_connections),
                1,
                1_000_000,
            ),
            (
                "live.max_connections_per_caller",
                u64::from(self.max_connections_per_caller),
                1,
                1_000_000,
            ),
            ("live.shutdown_grace_ms", self.shutdown_grace_ms, 0, 60_000),
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

/// Prefix of the env variables that override settings.
pub const ENV_PREFIX: &str = "SSM_GATEWAY_";
/// The env variable naming the settings file (read by `serve`, not here).
pub const CONFIG_ENV: &str = "SSM_GATEWAY_CONFIG";

/// Settings that cannot be used: which file, which key, why. The reason
/// never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SettingsError {
    /// The settings file, when one was read.
    pub file: Option<PathBuf>,
    /// Where the bad value sits, e.g. `accounts[1].id` or, for an env
    /// variable, `limits.max_first (SSM_GATEWAY_LIMITS__MAX_FIRST)`; empty
    /// when the error is about the file as a whole.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl SettingsError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: None,
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn in_file(mut self, file: Option<&Path>) -> Self {
        self.file = file.map(Path::to_path_buf);
        self
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(file) = &self.file {
            out.push_str(&format!("{}: ", file.display()));
        }
        if !self.key.is_empty() {
            out.push_str(&format!("{}: ", self.key));
        }
        out.push_str(&self.reason);
        out
    }
}

/// How an env value becomes a TOML value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EnvKind {
    /// Verbatim: addresses, URLs and secrets are never reinterpreted.
    String,
    /// A comma list of strings, or a TOML array.
    List,
    /// A TOML scalar (number, boolean) when it parses as one, else a string.
    Scalar,
}

/// Every key an env variable may set, dotted. [`FILE_ONLY`] keys are not
/// here on purpose; a test checks that every other leaf of [`Settings`] is.
const ENV_KEYS: &[(&str, EnvKind)] = &[
    ("listen", EnvKind::String),
    ("admin_listen", EnvKind::String),
    ("shutdown_delay_secs", EnvKind::Scalar),
    ("shutdown_grace_secs", EnvKind::Scalar),
    ("log_format", EnvKind::String),
    ("otlp.endpoint", EnvKind::String),
    ("otlp.service_name", EnvKind::String),
    ("cursor_key", EnvKind::String),
    ("cursor_version", EnvKind::Scalar),
    ("default_regions", EnvKind::List),
    ("limits.default_first", EnvKind::Scalar),
    ("limits.max_first", EnvKind::Scalar),
    ("limits.default_page_size", EnvKind::Scalar),
    ("limits.max_upstream_calls_per_source", EnvKind::Scalar),
    ("limits.max_root_fields", EnvKind::Scalar),
    ("limits.max_complexity", EnvKind::Scalar),
    ("http.body_limit_bytes", EnvKind::Scalar),
    ("http.max_query_depth", EnvKind::Scalar),
    ("http.cors_allowed_origins", EnvKind::List),
    ("http.introspection", EnvKind::Scalar),
    ("http.compiled_execution", EnvKind::Scalar),
    ("http.request_timeout_secs", EnvKind::Scalar),
    ("http.max_in_flight", EnvKind::Scalar),
    ("http.max_connections", EnvKind::Scalar),
    ("http.max_response_bytes", EnvKind::Scalar),
    ("http.body_read_timeout_secs", EnvKind::Scalar),
    ("http.header_read_timeout_secs", EnvKind::Scalar),
    ("aws.region", EnvKind::String),
    ("aws.endpoint_url", EnvKind::String),
    ("aws.max_attempts", EnvKind::Scalar),
    ("aws.attempt_timeout_secs", EnvKind::Scalar),
    ("aws.operation_timeout_secs", EnvKind::Scalar),
    ("aws.retry_mode", EnvKind::String),
    ("aws.initial_backoff_ms", EnvKind::Scalar),
    ("aws.max_backoff_ms", EnvKind::Scalar),
    ("aws.max_calls_per_second", EnvKind::Scalar),
    ("aws.max_call_wait_ms", EnvKind::Scalar),
    ("cache.active_ttl_secs", EnvKind::Scalar),
    ("cache.history_ttl_secs", EnvKind::Scalar),
    ("cache.stale_if_error_secs", EnvKind::Scalar),
    ("cache.failure_backoff_ms", EnvKind::Scalar),
    ("cache.node_ttl_secs", EnvKind::Scalar),
    ("cache.max_bytes", EnvKind::Scalar),
    ("cache.responses", EnvKind::Scalar),
    ("auth.allow_anonymous", EnvKind::Scalar),
    ("auth.api_keys_file", EnvKind::String),
    ("auth.jwt.issuer", EnvKind::String),
    ("auth.jwt.audiences", EnvKind::List),
    ("auth.jwt.jwks_url", EnvKind::String),
    ("auth.jwt.algorithms", EnvKind::List),
    ("auth.jwt.grants_claim", EnvKind::String),
    ("auth.jwt.leeway_secs", EnvKind::Scalar),
    ("auth.jwt.jwks_refresh_secs", EnvKind::Scalar),
    ("auth.jwt.jwks_min_refresh_secs", EnvKind::Scalar),
    ("live.terminate_enabled", EnvKind::Scalar),
    ("live.min_poll_interval_ms", EnvKind::Scalar),
    ("live.ping_interval_ms", EnvKind::Scalar),
    ("live.init_timeout_ms", EnvKind::Scalar),
    ("live.max_subscriptions_per_connection", EnvKind::Scalar),
    ("live.max_connections", EnvKind::Scalar),
    ("live.max_connections_per_caller", EnvKind::Scalar),
    ("live.shutdown_grace_ms", EnvKind::Scalar),
    ("persisted_queries.enabled", EnvKind::Scalar),
    ("persisted_queries.max_bytes", EnvKind::Scalar),
    ("persisted_queries.safelist", EnvKind::String),
    ("persisted_queries.require_id", EnvKind::Scalar),
    ("persisted_queries.safelist_reload_secs", EnvKind::Scalar),
    ("redis.url", EnvKind::String),
    ("redis.key_prefix", EnvKind::String),
    ("redis.command_timeout_ms", EnvKind::Scalar),
    ("redis.connect_timeout_ms", EnvKind::Scalar),
    ("redis.max_backoff_ms", EnvKind::Scalar),
    ("redis.lease_ms", EnvKind::Scalar),
    ("redis.lease_wait_ms", EnvKind::Scalar),
    ("rate_limits.enabled", EnvKind::Scalar),
    ("rate_limits.requests_per_second", EnvKind::Scalar),
    ("rate_limits.burst", EnvKind::Scalar),
];

/// Keys set in the file only: lists of tables (accounts, keys, grants) that
/// an env variable could not express well, and that decide who sees what.
const FILE_ONLY: &[&str] = &[
    "accounts",
    "auth.api_keys",
    "auth.anonymous_grants",
    "auth.jwt.claim_grants",
    "rate_limits.principals",
];

impl Settings {
    /// Defaults, then the file at `path` (if any), then `SSM_GATEWAY_*` env
    /// variables of this process; validated. `path` is usually
    /// `serve --config` or `SSM_GATEWAY_CONFIG`, which this does not read.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                SettingsError::new("", format!("cannot read the settings file: {e}"))
                    .in_file(Some(path))
            })?,
            None => String::new(),
        };
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|k| k.starts_with(ENV_PREFIX)) else {
                continue;
            };
            let value = value
                .into_string()
                .map_err(|_| SettingsError::new(key, "not valid UTF-8").in_file(path))?;
            env.push((key.to_owned(), value));
        }
        Self::from_sources(path, &text, env)
    }

    /// [`Settings::load`] without I/O: `text` is the file's contents (empty
    /// for no file), `file` its name for messages, `env` the process's
    /// variables (those without the `SSM_GATEWAY_` prefix are ignored).
    pub fn from_sources<I, K, V>(
        file: Option<&Path>,
        text: &str,
        env: I,
    ) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| syntax_error(text, &e).in_file(file))?;
        // Sorted so that, of two spellings of one key, the outcome is stable.
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| {
                k.as_ref().starts_with(ENV_PREFIX) && !k.as_ref().eq_ignore_ascii_case(CONFIG_ENV)
            })
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        overrides.sort();
        let mut from_env = Vec::new();
        for (var, value) in &overrides {
            let dotted = apply_env(&mut table, var, value).map_err(|e| e.in_file(file))?;
            from_env.push((dotted, var.as_str()));
        }
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let reason = e.inner().message().to_owned();
                SettingsError::new(name_env(&from_env, key), reason).in_file(file)
            })?;
        settings
            .validate()
            .map_err(|e| SettingsError::new(name_env(&from_env, e.key), e.reason).in_file(file))?;
        Ok(settings)
    }

    /// Checks what the types cannot: ranges, formats, uniqueness, and that
    /// each account's credentials make sense. The first problem found is
    /// returned, naming its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(key) = &self.cursor_key {
            let len = key.expose().len();
            if len < MIN_KEY_LEN {
                return Err(SettingsError::new(
                    "cursor_key",
                    format!("must be at least {} bytes (got {len})", MIN_KEY_LEN),
                ));
            }
        }
        if !matches!(self.cursor_version, 1..=3) {
            return Err(SettingsError::new(
                "cursor_version",
                format!("must be 1, 2 or 3 (got {})", self.cursor_version),
            ));
        }
        for (key, value, max) in [
            ("shutdown_delay_secs", self.shutdown_delay_secs, 300),
            ("shutdown_grace_secs", self.shutdown_grace_secs, 3600),
        ] {
            if value > max {
                return Err(SettingsError::new(
                    key,
                    format!("must be 0 to {max} (got {value})"),
                ));
            }
        }
        self.otlp.validate()?;
        self.limits.validate()?;
        self.http.validate()?;
        self.aws.validate()?;
        self.cache.validate()?;
        self.live.validate()?;
        self.persisted_queries.validate()?;
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        check_regions("default_regions", &self.default_regions)?;

        let mut ids = HashSet::new();
        let mut aliases = HashSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            let at = format!("accounts[{i}]");
            account.validate(&at, &self.default_regions)?;
            if !ids.insert(account.id.as_str()) {
                return Err(SettingsError::new(
                    format!("{at}.id"),
                    format!("duplicate account id {:?}", account.id),
                ));
            }
            if !aliases.insert(account.alias.as_str()) {
                return Err(SettingsError::new(
                    format!("{at}.alias"),
                    format!("duplicate alias {:?}", account.alias),
                ));
            }
        }
        // After the accounts: grants name them.
        self.auth.validate(&self.accounts)?;
        self.rate_limits
            .validate(&self.auth.api_keys, self.auth.api_keys_file.is_some())
    }
}

impl Settings {
    /// What `serve` needs beyond [`Settings::validate`]: at least one
    /// account to read, and a way to authenticate callers (API keys, a keys
    /// file, JWT, or anonymous access said out loud). (A settings value can be valid and still serve
    /// nothing; tests and tools load such settings on purpose.)
    pub fn validate_for_serve(&self) -> Result<(), SettingsError> {
        if self.accounts.is_empty() {
            return Err(SettingsError::new(
                "accounts",
                "no accounts configured: add at least one [[accounts]] to the settings file \
                 (see config/example.toml)",
            ));
        }
        if !self.auth.is_configured() {
            return Err(SettingsError::new(
                "auth",
                "no way to authenticate callers: configure [[auth.api_keys]], \
                 auth.api_keys_file or [auth.jwt], or set auth.allow_anonymous = true \
                 (see config/example.toml)",
            ));
        }
        Ok(())
    }
}

impl Limits {
    fn validate(&self) -> Result<(), SettingsError> {
        const MAX_FIRST: u32 = 10_000;
        if !(1..=MAX_FIRST).contains(&self.max_first) {
            return Err(SettingsError::new(
                "limits.max_first",
                format!("must be 1 to {MAX_FIRST} (got {})", self.max_first),
            ));
        }
        if !(1..=self.max_first).contains(&self.default_first) {
            return Err(SettingsError::new(
                "limits.default_first",
                format!(
                    "must be 1 to limits.max_first = {} (got {})",
                    self.max_first, self.default_first
                ),
            ));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.default_page_size) {
            return Err(SettingsError::new(
                "limits.default_page_size",
                format!(
                    "must be 1 to {MAX_PAGE_SIZE} (got {})",
                    self.default_page_size
                ),
            ));
        }
        for (key, value, range) in [
            (
                "limits.max_upstream_calls_per_source",
                self.max_upstream_calls_per_source,
                1..=1000,
            ),
            ("limits.max_root_fields", self.max_root_fields, 1..=1000),
            ("limits.max_complexity", self.max_complexity, 100..=u32::MAX),
        ] {
            if !range.contains(&value) {
                return Err(SettingsError::new(
                    key,
                    format!("must be {} to {} (got {value})", range.start(), range.end()),
                ));
            }
        }
        Ok(())
    }
}

impl HttpSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        let min = 2 * MAX_CURSOR_LEN;
        if self.body_limit_bytes < min {
            return Err(SettingsError::new(
                "http.body_limit_bytes",
                format!(
                    "must be at least {min}, twice the longest cursor (got {})",
                    self.body_limit_bytes
                ),
            ));
        }
        if self.max_query_depth == 0 {
            return Err(SettingsError::new(
                "http.max_query_depth",
                "must be at least 1 (got 0)",
            ));
        }
        for (i, origin) in self.cors_allowed_origins.iter().enumerate() {
            check_origin(origin)
                .map_err(|r| SettingsError::new(format!("http.cors_allowed_origins[{i}]"), r))?;
        }
        for (key, value, range) in [
            (
                "http.request_timeout_secs",
                self.request_timeout_secs,
                1..=300,
            ),
            (
                "http.body_read_timeout_secs",
                self.body_read_timeout_secs,
                1..=300,
            ),
            (
                "http.header_read_timeout_secs",
                self.header_read_timeout_secs,
                1..=300,
            ),
            ("http.max_in_flight", self.max_in_flight as u64, 1..=100_000),
            (
                "http.max_connections",
                self.max_connections as u64,
                1..=1_000_000,
            ),
        ] {
            if !range.contains(&value) {
                return Err(SettingsError::new(
                    key,
                    format!("must be {} to {} (got {value})", range.start(), range.end()),
                ));
            }
        }
        if self.max_response_bytes < 64 * 1024 {
            return Err(SettingsError::new(
                "http.max_response_bytes",
                format!("must be at least 65536 (got {})", self.max_response_bytes),
            ));
        }
        Ok(())
    }
}

/// A browser origin: `http(s)://host[:port]`, nothing after it.
fn check_origin(origin: &str) -> Result<(), String> {
    let shape = format!(
        "must be an origin such as \"https://console.example.com\": scheme, host and optional port, no path (got {origin:?})"
    );
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| shape.clone())?;
    let ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if ok { Ok(()) } else { Err(shape) }
}

impl OtlpSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if let Some(url) = &self.endpoint {
            check_url("otlp.endpoint", url)?;
        }
        if self
            .service_name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(SettingsError::new("otlp.service_name", "must not be empty"));
        }
        Ok(())
    }
}

/// An `http://` or `https://` URL with something after the scheme.
fn check_url(key: &str, url: &str) -> Result<(), SettingsError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(str::is_empty) {
        return Err(SettingsError::new(
            key,
            format!("must be an http:// or https:// URL (got {url:?})"),
        ));
    }
    Ok(())
}

impl AwsSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if let Some(region) = &self.region {
            check_region("aws.region", region)?;
        }
        if let Some(url) = &self.endpoint_url {
            check_url("aws.endpoint_url", url)?;
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(SettingsError::new(
                "aws.max_attempts",
                format!("must be 1 to 10 (got {})", self.max_attempts),
            ));
        }
        for (key, secs) in [
            ("aws.attempt_timeout_secs", self.attempt_timeout_secs),
            ("aws.operation_timeout_secs", self.operation_timeout_secs),
        ] {
            if secs == 0 {
                return Err(SettingsError::new(key, "must be above 0 (got 0)"));
            }
        }
        if !(1..=10_000).contains(&self.initial_backoff_ms) {
            return Err(SettingsError::new(
                "aws.initial_backoff_ms",
                format!("must be 1 to 10000 (got {})", self.initial_backoff_ms),
            ));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(SettingsError::new(
                "aws.max_backoff_ms",
                format!(
                    "must be at least aws.initial_backoff_ms ({}) (got {})",
                    self.initial_backoff_ms, self.max_backoff_ms
                ),
            ));
        }
        if !(1..=100).contains(&self.max_calls_per_second) {
            return Err(SettingsError::new(
                "aws.max_calls_per_second",
                format!("must be 1 to 100 (got {})", self.max_calls_per_second),
            ));
        }
        if self.max_call_wait_ms > 10_000 {
            return Err(SettingsError::new(
                "aws.max_call_wait_ms",
                format!("must be 0 to 10000 (got {})", self.max_call_wait_ms),
            ));
        }
        Ok(())
    }
}

impl AccountSettings {
    /// Checks this account alone; `at` is its key, e.g. `accounts[1]`.
    fn validate(&self, at: &str, default_regions: &[String]) -> Result<(), SettingsError> {
        let err = |field: &str, reason: String| SettingsError::new(format!("{at}.{field}"), reason);
        if !is_account_id(&self.id) {
            return Err(err("id", format!("must be 12 digits (got {:?})", self.id)));
        }
        let alias_ok = (1..=64).contains(&self.alias.len())
            && self
                .alias
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !alias_ok {
            return Err(err(
                "alias",
                format!("must be 1 to 64 of A-Z a-z 0-9 _ - (got {:?})", self.alias),
            ));
        }
        if is_account_id(&self.alias) {
            return Err(err(
                "alias",
                format!(
                    "must not be 12 digits, which read as an account id (got {:?})",
                    self.alias
                ),
            ));
        }
        match &self.role_arn {
            Some(arn) => {
                let Some(account) = role_arn_account(arn) else {
                    return Err(err(
                        "role_arn",
                        format!(
                            "must look like arn:aws:iam::<12 digits>:role/<name> (got {arn:?})"
                        ),
                    ));
                };
                if account != self.id {
                    return Err(err(
                        "role_arn",
                        format!("names account {account}, not this account's id {}", self.id),
                    ));
                }
                if self.profile.is_some() {
                    return Err(err(
                        "profile",
                        "set with role_arn; an account uses one or the other".to_owned(),
                    ));
                }
            }
            None => {
                for (field, set) in [
                    ("external_id", self.external_id.is_some()),
                    ("session_name", self.session_name.is_some()),
                    (
                        "session_duration_secs",
                        self.session_duration_secs.is_some(),
                    ),
                ] {
                    if set {
                        return Err(err(field, "only applies with role_arn".to_owned()));
                    }
                }
            }
        }
        if let Some(external_id) = &self.external_id {
            let value = external_id.expose();
            let ok = (2..=1224).contains(&value.chars().count())
                && value
                    .chars()
                    .all(|c| is_iam_char(c) || c == ':' || c == '/');
            if !ok {
                // The value is a secret: say what is wrong, never what it is.
                return Err(err(
                    "external_id",
                    "must be 2 to 1224 of A-Z a-z 0-9 _ + = , . @ : / - (value not shown)"
                        .to_owned(),
                ));
            }
        }
        if let Some(name) = &self.session_name {
            let ok = (2..=64).contains(&name.len()) && name.chars().all(is_iam_char);
            if !ok {
                return Err(err(
                    "session_name",
                    format!("must be 2 to 64 of A-Z a-z 0-9 _ + = , . @ - (got {name:?})"),
                ));
            }
        }
        if let Some(secs) = self.session_duration_secs
            && !(900..=43_200).contains(&secs)
        {
            return Err(err(
                "session_duration_secs",
                format!("must be 900 to 43200 (got {secs})"),
            ));
        }
        if let Some(profile) = &self.profile
            && profile.trim().is_empty()
        {
            return Err(err("profile", "must not be empty".to_owned()));
        }
        if let Some(arn) = &self.terminate_role_arn {
            match role_arn_account(arn) {
                None => {
                    return Err(err(
                        "terminate_role_arn",
                        format!(
                            "must look like arn:aws:iam::<12 digits>:role/<name> (got {arn:?})"
                        ),
                    ));
                }
                Some(account) if account != self.id => {
                    return Err(err(
                        "terminate_role_arn",
                        format!("names account {account}, not this account's id {}", self.id),
                    ));
                }
                Some(_) => {}
            }
        }
        check_regions(&format!("{at}.regions"), &self.regions)?;
        if self.effective_regions(default_regions).is_empty() {
            return Err(err(
                "regions",
                "no region: set this account's regions or default_regions".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A TOML syntax error as `line L, column C: message`. toml's own `Display`
/// quotes the offending line, which may hold a secret; this does not.
fn syntax_error(text: &str, error: &toml::de::Error) -> SettingsError {
    let reason = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            SettingsError::new("", format!("line {line}, column {column}: {reason}"))
        }
        None => SettingsError::new("", reason.to_owned()),
    }
}

/// Sets the key `var` names in `table`; returns the key, dotted.
fn apply_env(table: &mut toml::Table, var: &str, raw: &str) -> Result<String, SettingsError> {
    let name = var
        .get(ENV_PREFIX.len()..)
        .unwrap_or_default()
        .to_lowercase();
    let dotted = name.split("__").collect::<Vec<_>>().join(".");
    let Some(&(_, kind)) = ENV_KEYS.iter().find(|(key, _)| *key == dotted) else {
        let file_only = FILE_ONLY.iter().find(|key| {
            dotted == **key
                || dotted
                    .strip_prefix(**key)
                    .is_some_and(|rest| rest.starts_with('.'))
        });
        let reason = if let Some(key) = file_only {
            format!("{key} is set in the settings file only")
        } else {
            let known: Vec<String> = ENV_KEYS
                .iter()
                .map(|(key, _)| format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase()))
                .collect();
            format!(
                "unknown setting; known: {}, and {CONFIG_ENV}",
                known.join(", ")
            )
        };
        return Err(SettingsError::new(var, reason));
    };
    let value = match kind {
        EnvKind::String => toml::Value::String(raw.to_owned()),
        EnvKind::List if raw.trim_start().starts_with('[') => raw
            .parse::<toml::Value>()
            .map_err(|e| SettingsError::new(var, format!("not a TOML array: {}", e.message())))?,
        EnvKind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        EnvKind::Scalar => match raw.parse::<toml::Value>() {
            Ok(value) if !value.is_table() => value,
            _ => toml::Value::String(raw.to_owned()),
        },
    };
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let leaf = parts.pop().unwrap_or_default();
    let mut here = table;
    let mut path = String::new();
    for part in parts {
        path = if path.is_empty() {
            part.to_owned()
        } else {
            format!("{path}.{part}")
        };
        let entry = here
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        here = entry.as_table_mut().ok_or_else(|| {
            SettingsError::new(
                path.clone(),
                format!("must be a table, for {var} to set a key in it"),
            )
        })?;
    }
    here.insert(leaf.to_owned(), value);
    Ok(dotted)
}

/// `key`, followed by the env variable that set it (or its parent), if any.
fn name_env(from_env: &[(String, &str)], key: String) -> String {
    let set_by = from_env.iter().find(|(dotted, _)| {
        key.strip_prefix(dotted.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    });
    match set_by {
        Some((_, var)) => format!("{key} ({var})"),
        None => key,
    }
}

fn is_account_id(s: &str) -> bool {
    AccountId::parse(s).is_ok()
}

/// IAM's `[\w+=,.@-]`, with `\w` the ASCII word characters.
fn is_iam_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// The account of `arn:aws[a-z-]*:iam::<12 digits>:role/<path/name>`, if
/// `arn` is one.
fn role_arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_, partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let partition_ok = partition
        .strip_prefix("aws")
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
    let name = resource.strip_prefix("role/")?;
    let name_ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name.chars().all(|c| is_iam_char(c) || c == '/');
    (arn_ == "arn"
        && partition_ok
        && service == "iam"
        && region.is_empty()
        && is_account_id(account)
        && name_ok)
        .then_some(account)
}

fn check_region(key: &str, region: &str) -> Result<(), SettingsError> {
    Region::parse(region).map(drop).map_err(|_| {
        SettingsError::new(
            key,
            format!("must be an AWS region like us-east-1 (got {region:?})"),
        )
    })
}

fn check_regions(key: &str, regions: &[String]) -> Result<(), SettingsError> {
    let mut seen = HashSet::new();
    for (i, region) in regions.iter().enumerate() {
        check_region(&format!("{key}[{i}]"), region)?;
        if !seen.insert(region.as_str()) {
            return Err(SettingsError::new(
                format!("{key}[{i}]"),
                format!("duplicate region {region:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: [(&str, &str); 0] = [];

    fn from_text(text: &str) -> Result<Settings, SettingsError> {
        Settings::from_sources(Some(Path::new("gateway.toml")), text, NO_ENV)
    }

    /// The error for `text`, checked to name the file and `key`.
    fn error_for(text: &str, key: &str) -> String {
        let e = from_text(text).expect_err("should be rejected");
        assert_eq!(e.key, key, "{e}");
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("gateway.toml: {key}: ")),
            "{message}"
        );
        message
    }

    /// One valid account, then `extra` lines in it.
    fn account(extra: &str) -> String {
        format!(
            "default_regions = [\"eu-west-1\"]\n[[accounts]]\nid = \"111111111111\"\nalias = \"prod\"\n{extra}\n"
        )
    }

    #[test]
    fn the_body_limit_admits_every_cursor_we_mint() {
        assert!(HttpSettings::default().body_limit_bytes > 2 * crate::cursor::MAX_CURSOR_LEN);
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        let settings = Settings {
            cursor_key: Some(s),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn the_example_file_loads_and_is_valid() {
        let text = include_str!("../config/example.toml");
        let settings = Settings::from_sources(Some(Path::new("example.toml")), text, NO_ENV)
            .unwrap_or_else(|e| panic!("{e}"));
        let aliases: Vec<&str> = settings.accounts.iter().map(|a| a.alias.as_str()).collect();
        assert_eq!(aliases, ["prod", "staging", "shared-services"]);
        assert_eq!(settings.admin_listen.map(|a| a.port()), Some(9090));
        assert_eq!(
            (settings.shutdown_delay_secs, settings.shutdown_grace_secs),
            (5, 25)
        );
        assert_eq!(settings.log_format, LogFormat::Json);
        // The commented-out trace export is valid too, once uncommented.
        let exporting = text
            .replace("# endpoint = ", "endpoint = ")
            .replace("# service_name = ", "service_name = ");
        let otlp = Settings::from_sources(None, &exporting, NO_ENV)
            .unwrap_or_else(|e| panic!("{e}"))
            .otlp;
        assert_eq!(otlp.endpoint.as_deref(), Some("http://otel-collector:4318"));
        assert_eq!(otlp.service_name.as_deref(), Some("ssm-session-gateway"));
        assert!(settings.accounts[0].external_id.is_some());
        assert_eq!(
            settings.accounts[1].effective_regions(&settings.default_regions),
            ["eu-central-1"]
        );
        assert!(settings.accounts[2].role_arn.is_none());
        let auth = &settings.auth;
        assert!(auth.is_configured());
        assert_eq!(auth.api_keys.len(), 2);
        assert_eq!(auth.api_keys[0].sha256.len(), 2);
        assert!(auth.api_keys[1].expires.is_some());
        let jwt = auth.jwt.as_ref().expect("jwt example");
        assert_eq!(jwt.claim_grants.len(), 2);
        assert_eq!(
            settings.http.cors_allowed_origins,
            ["https://console.example.com"]
        );
        assert!(settings.http.introspection);
        assert_eq!(
            settings.rate_limits.principals["api_key:dashboard"],
            PrincipalRate {
                requests_per_second: 50,
                burst: 100
            }
        );
        // The commented-out keys are valid too, once uncommented.
        let uncommented = text
            .replace("allow_anonymous = false", "allow_anonymous = true")
            .replace("# anonymous_grants", "anonymous_grants")
            .replace("# api_keys_file", "api_keys_file")
            .replace("# \"jwt:ci-bot", "\"jwt:ci-bot")
            .replace("# header_read_timeout_secs", "header_read_timeout_secs")
            .replace("# enabled = true", "enabled = true")
            .replace("# requests_per_second = 20", "requests_per_second = 20")
            .replace("# burst = 40", "burst = 40");
        let settings =
            Settings::from_sources(None, &uncommented, NO_ENV).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.auth.anonymous_grants.len(), 1);
        assert!(settings.auth.api_keys_file.is_some());
        assert_eq!(settings.rate_limits.principals.len(), 2);
        assert_eq!(settings.http.header_read_timeout_secs, 65);
        // The commented-out profile account is valid too, once uncommented.
        let uncommented = text.replace("# [[accounts]]", "[[accounts]]").replace(
            "# id = \"444444444444\"\n# alias = \"sandbox\"\n# profile = \"sandbox-readonly\"\n# regions",
            "id = \"444444444444\"\nalias = \"sandbox\"\nprofile = \"sandbox-readonly\"\nregions",
        );
        let settings =
            Settings::from_sources(None, &uncommented, NO_ENV).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            settings.accounts[3].profile.as_deref(),
            Some("sandbox-readonly")
        );
    }

    #[test]
    fn no_file_and_no_env_is_the_defaults() {
        let settings = Settings::from_sources(None, "", NO_ENV).expect("defaults are valid");
        assert_eq!(settings.listen, default_listen());
        assert_eq!(settings.limits, Limits::default());
        assert_eq!(settings.aws, AwsSettings::default());
        assert!(settings.accounts.is_empty());
    }

    #[test]
    fn env_overrides_the_file_which_overrides_the_defaults() {
        let text = "listen = \"0.0.0.0:9000\"\n[limits]\nmax_first = 500\ndefault_first = 20\n[aws]\nregion = \"eu-west-1\"\n";
        let env = [
            ("SSM_GATEWAY_LIMITS__MAX_FIRST", "700"),
            ("SSM_GATEWAY_AWS__ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("SSM_GATEWAY_DEFAULT_REGIONS", "us-east-1, us-gov-west-1"),
            (
                "SSM_GATEWAY_cursor_key",
                "0123456789012345678901234567890123456789",
            ),
            ("SSM_GATEWAY_CONFIG", "ignored: names the file"),
            ("HOME", "/root"),
        ];
        let settings = Settings::from_sources(None, text, env).expect("valid");
        assert_eq!(settings.listen.to_string(), "0.0.0.0:9000"); // file
        assert_eq!(settings.limits.max_first, 700); // env over file
        assert_eq!(settings.limits.default_first, 20); // file
        assert_eq!(settings.limits.default_page_size, 200); // default
        assert_eq!(settings.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            settings.aws.endpoint_url.as_deref(),
            Some("http://127.0.0.1:4566")
        );
        assert_eq!(settings.default_regions, ["us-east-1", "us-gov-west-1"]);
        // All digits, yet kept a string: string keys are taken verbatim.
        let key = settings.cursor_key.expect("set by env");
        assert_eq!(key.expose(), "0123456789012345678901234567890123456789");
    }

    #[test]
    fn env_lists_may_be_toml_arrays_and_scalars_fall_back_to_strings() {
        let env = [
            ("SSM_GATEWAY_DEFAULT_REGIONS", "[\"eu-west-1\"]"),
            ("SSM_GATEWAY_LISTEN", "[::1]:8081"),
        ];
        let settings = Settings::from_sources(None, "", env).expect("valid");
        assert_eq!(settings.default_regions, ["eu-west-1"]);
        assert_eq!(settings.listen.to_string(), "[::1]:8081");
        let e = Settings::from_sources(None, "", [("SSM_GATEWAY_LIMITS__MAX_FIRST", "lots")])
            .expect_err("not a number");
        assert_eq!(
            e.key, "limits.max_first (SSM_GATEWAY_LIMITS__MAX_FIRST)",
            "{e}"
        );
    }

    #[test]
    fn redis_is_off_by_default_and_its_url_alone_turns_it_on() {
        let settings = Settings::from_sources(None, "", Vec::<(&str, &str)>::new()).expect("valid");
        assert_eq!(settings.redis, None);
        let env = [(
            "SSM_GATEWAY_REDIS__URL",
            "rediss://:pw@redis.internal:6380/2",
        )];
        let settings = Settings::from_sources(None, "", env).expect("valid");
        let redis = settings.redis.expect("on");
        assert_eq!(redis.url.expose(), "rediss://:pw@redis.internal:6380/2");
        assert_eq!(
            redis,
            RedisSettings::new("rediss://:pw@redis.internal:6380/2")
        );
        let text = "[redis]\nurl = \"redis://127.0.0.1\"\nlease_wait_ms = 500\n";
        let settings =
            Settings::from_sources(None, text, Vec::<(&str, &str)>::new()).expect("valid");
        assert_eq!(settings.redis.expect("on").lease_wait_ms, 500);
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_showing_it() {
        for url in ["http://:hunter2@redis:6379", "redis://", "hunter2"] {
            let e = Settings::from_sources(None, "", [("SSM_GATEWAY_REDIS__URL", url)])
                .expect_err("bad url");
            assert_eq!(e.key, "redis.url (SSM_GATEWAY_REDIS__URL)", "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let e = Settings::from_sources(None, "[redis]\nlease_ms = 5\n", Vec::<(&str, &str)>::new())
            .expect_err("no url");
        assert!(e.to_string().contains("url"), "{e}");
        let text = "[redis]\nurl = \"redis://h\"\nkey_prefix = \"a b\"\n";
        let e = Settings::from_sources(None, text, Vec::<(&str, &str)>::new()).expect_err("prefix");
        assert_eq!(e.key, "redis.key_prefix");
    }

    #[test]
    fn a_safelist_is_a_path_and_needs_persisted_queries() {
        let settings = Settings::from_sources(
            None,
            "",
            [("SSM_GATEWAY_PERSISTED_QUERIES__SAFELIST", "/etc/ops.json")],
        )
        .expect("valid");
        assert_eq!(
            settings.persisted_queries.safelist,
            Some(PathBuf::from("/etc/ops.json"))
        );
        let text = "[persisted_queries]\nenabled = false\nsafelist = \"/etc/ops.json\"\n";
        let e = Settings::from_sources(None, text, Vec::<(&str, &str)>::new())
            .expect_err("safelist without persisted queries");
        assert_eq!(e.key, "persisted_queries.safelist", "{e}");
    }

    #[test]
    fn require_id_needs_a_safelist() {
        let settings = Settings::from_sources(
            None,
            "[persisted_queries]\nsafelist = \"/etc/ops.json\"\n",
            [("SSM_GATEWAY_PERSISTED_QUERIES__REQUIRE_ID", "true")],
        )
        .expect("valid");
        assert!(settings.persisted_queries.require_id);
        assert!(!Settings::default().persisted_queries.require_id);
        let e = Settings::from_sources(
            None,
            "[persisted_queries]\nrequire_id = true\n",
            Vec::<(&str, &str)>::new(),
        )
        .expect_err("require_id without a safelist");
        assert_eq!(e.key, "persisted_queries.require_id", "{e}");
        assert!(e.reason.contains("persisted_queries.safelist"), "{e}");
    }

    #[test]
    fn the_safelist_reload_period_is_bounded() {
        assert_eq!(
            Settings::default().persisted_queries.safelist_reload_secs,
            30
        );
        let settings = Settings::from_sources(
            None,
            "",
            [("SSM_GATEWAY_PERSISTED_QUERIES__SAFELIST_RELOAD_SECS", "0")],
        )
        .expect("0: read at start-up only");
        assert_eq!(settings.persisted_queries.safelist_reload_secs, 0);
        let e = Settings::from_sources(
            None,
            "[persisted_queries]\nsafelist_reload_secs = 3601\n",
            Vec::<(&str, &str)>::new(),
        )
        .expect_err("over an hour");
        assert_eq!(e.key, "persisted_queries.safelist_reload_secs", "{e}");
    }

    #[test]
    fn an_unknown_env_variable_is_named() {
        let e = Settings::from_sources(None, "", [("SSM_GATEWAY_LIMITS__MAX_FRIST", "5")])
            .expect_err("typo");
        assert_eq!(e.key, "SSM_GATEWAY_LIMITS__MAX_FRIST");
        assert!(e.reason.contains("SSM_GATEWAY_LIMITS__MAX_FIRST"), "{e}");
        let e = Settings::from_sources(None, "", [("SSM_GATEWAY_ACCOUNTS", "[]")])
            .expect_err("accounts are file only");
        assert!(e.to_string().contains("settings file only"), "{e}");
    }

    #[test]
    fn an_invalid_value_from_env_names_the_variable() {
        let e = Settings::from_sources(
            None,
            "",
            [("SSM_GATEWAY_DEFAULT_REGIONS", "eu-west-1,mars")],
        )
        .expect_err("not a region");
        assert_eq!(e.key, "default_regions[1] (SSM_GATEWAY_DEFAULT_REGIONS)");
    }

    #[test]
    fn every_settings_key_but_the_file_only_ones_has_an_env_variable() {
        let full = Settings {
            admin_listen: Some(default_listen()),
            otlp: OtlpSettings {
                endpoint: Some("http://localhost:4318".to_owned()),
                service_name: Some("gateway".to_owned()),
            },
            cursor_key: Some(Secret::new("k".repeat(32))),
            default_regions: vec!["eu-west-1".to_owned()],
            aws: AwsSettings {
                region: Some("eu-west-1".to_owned()),
                endpoint_url: Some("http://localhost".to_owned()),
                ..AwsSettings::default()
            },
            auth: AuthSettings {
                api_keys_file: Some(PathBuf::from("/keys.toml")),
                jwt: Some(JwtSettings {
                    issuer: "https://idp".to_owned(),
                    audiences: vec!["gw".to_owned()],
                    jwks_url: "https://idp/jwks".to_owned(),
                    algorithms: vec!["RS256".to_owned()],
                    grants_claim: "groups".to_owned(),
                    claim_grants: Default::default(),
                    leeway_secs: 30,
                    jwks_refresh_secs: 600,
                    jwks_min_refresh_secs: 30,
                }),
                ..AuthSettings::default()
            },
            redis: Some(RedisSettings::new("redis://127.0.0.1:6379")),
            persisted_queries: PersistedQuerySettings {
                safelist: Some(PathBuf::from("/operations.json")),
                ..PersistedQuerySettings::default()
            },
            ..Settings::default()
        };
        let toml::Value::Table(table) = toml::Value::try_from(&full).expect("serializes") else {
            panic!("settings serialize to a table");
        };
        fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (key, value) in table {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value {
                    _ if FILE_ONLY.contains(&key.as_str()) => {}
                    toml::Value::Table(t) => leaves(&key, t, out),
                    _ => out.push(key),
                }
            }
        }
        let mut keys = Vec::new();
        leaves("", &table, &mut keys);
        keys.sort();
        let mut env_keys: Vec<String> = ENV_KEYS.iter().map(|(k, _)| (*k).to_owned()).collect();
        env_keys.sort();
        assert_eq!(
            keys, env_keys,
            "ENV_KEYS must list every key of Settings but FILE_ONLY ones"
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column_but_not_the_line() {
        let e = from_text("listen = \"127.0.0.1:8080\"\ncursor_key = \"hunter2hunter2")
            .expect_err("bad");
        let message = e.to_string();
        assert!(
            message.starts_with("gateway.toml: line 2, column "),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn deserialize_errors_name_the_key_path_and_the_file() {
        let message = error_for(&account("regions = \"eu-west-1\""), "accounts[0].regions");
        assert!(message.contains("expected a sequence"), "{message}");
        error_for("[limits]\nmax_first = \"many\"\n", "limits.max_first");
        error_for("listen = \"nowhere\"\n", "listen");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = from_text(&account("aliass = \"x\"")).expect_err("unknown key");
        assert!(e.key.starts_with("accounts[0]"), "{e}");
        assert!(e.reason.contains("unknown field `aliass`"), "{e}");
        let e = from_text("[limit]\nmax_first = 5\n").expect_err("unknown table");
        assert!(e.reason.contains("unknown field `limit`"), "{e}");
    }

    #[test]
    fn secrets_do_not_print_in_errors() {
        let e = from_text("cursor_key = 123456789\n").expect_err("not a string");
        assert_eq!(e.key, "cursor_key");
        assert!(!e.to_string().contains("123456789"), "{e}");
        let e = from_text(&account(
            "role_arn = \"arn:aws:iam::111111111111:role/r\"\nexternal_id = \"s3cr!t#\"",
        ))
        .expect_err("bad chars");
        assert_eq!(e.key, "accounts[0].external_id");
        assert!(!format!("{e} {e:?}").contains("s3cr!t#"), "{e}");
        let e = from_text("cursor_key = \"short-secret\"\n").expect_err("too short");
        assert!(!format!("{e} {e:?}").contains("short-secret"), "{e}");
    }

    #[test]
    fn cursor_key_is_at_least_32_bytes() {
        error_for("cursor_key = \"0123456789\"\n", "cursor_key");
        error_for("cursor_version = 4\n", "cursor_version");
        error_for("cursor_version = 0\n", "cursor_version");
    }

    #[test]
    fn limits_are_in_range() {
        error_for("[limits]\nmax_first = 10001\n", "limits.max_first");
        error_for(
            "[limits]\nmax_first = 0\ndefault_first = 0\n",
            "limits.max_first",
        );
        error_for("[limits]\ndefault_first = 0\n", "limits.default_first");
        error_for(
            "[limits]\nmax_first = 10\ndefault_first = 11\n",
            "limits.default_first",
        );
        error_for(
            "[limits]\ndefault_page_size = 0\n",
            "limits.default_page_size",
        );
        error_for(
            "[limits]\ndefault_page_size = 201\n",
            "limits.default_page_size",
        );
    }

    #[test]
    fn http_limits_are_in_range() {
        error_for("[http]\nbody_limit_bytes = 1024\n", "http.body_limit_bytes");
        error_for("[http]\nmax_query_depth = 0\n", "http.max_query_depth");
        error_for("[http]\nmax_connections = 0\n", "http.max_connections");
        for origin in [
            "*",
            "console.example.com",
            "https://a.example.com/",
            "https://",
        ] {
            error_for(
                &format!("[http]\ncors_allowed_origins = [{origin:?}]\n"),
                "http.cors_allowed_origins[0]",
            );
        }
    }

    #[test]
    fn the_header_read_timeout_is_in_range() {
        error_for(
            "[http]\nheader_read_timeout_secs = 0\n",
            "http.header_read_timeout_secs",
        );
        let message = error_for(
            "[http]\nheader_read_timeout_secs = 301\n",
            "http.header_read_timeout_secs",
        );
        assert!(message.ends_with("must be 1 to 300 (got 301)"), "{message}");
    }

    #[test]
    fn rate_limits_reject_nonsense_with_the_key_named() {
        let message = error_for(
            "[rate_limits]\nrequests_per_second = 0\n",
            "rate_limits.requests_per_second",
        );
        assert!(
            message.ends_with("must be 1 to 1000000 (got 0)"),
            "{message}"
        );
        error_for("[rate_limits]\nburst = 0\n", "rate_limits.burst");
        error_for(
            "[rate_limits]\nrequests_per_second = -5\n",
            "rate_limits.requests_per_second",
        );
        error_for("[rate_limits]\nper_minute = 5\n", "rate_limits.per_minute");
        // Overrides: in range, complete, and naming a principal.
        let key = "[[auth.api_keys]]\nname = \"dashboard\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\ngrants = [{ accounts = [\"*\"], scopes = [\"sessions:read\"] }]\n";
        error_for(
            &format!(
                "{key}[rate_limits.principals]\n\"api_key:dashboard\" = {{ requests_per_second = 0, burst = 5 }}\n"
            ),
            "rate_limits.principals.\"api_key:dashboard\".requests_per_second",
        );
        error_for(
            &format!(
                "{key}[rate_limits.principals]\n\"api_key:dashboard\" = {{ requests_per_second = 5 }}\n"
            ),
            "rate_limits.principals.api_key:dashboard",
        );
        for principal in ["dashboard", "user:alice", "jwt:", "anonymous:bob"] {
            let message = error_for(
                &format!(
                    "{key}[rate_limits.principals]\n{principal:?} = {{ requests_per_second = 5, burst = 5 }}\n"
                ),
                &format!("rate_limits.principals.{principal:?}"),
            );
            assert!(message.contains("as the audit log names it"), "{message}");
        }
        // A typo in a key's name is caught (there is no keys file).
        let message = error_for(
            &format!(
                "{key}[rate_limits.principals]\n\"api_key:dashbaord\" = {{ requests_per_second = 5, burst = 5 }}\n"
            ),
            "rate_limits.principals.\"api_key:dashbaord\"",
        );
        assert!(message.contains("no API key is named"), "{message}");
        // And the good ones load.
        let settings = from_text(&format!(
            "{key}[rate_limits]\nrequests_per_second = 2\nburst = 3\n[rate_limits.principals]\n\"api_key:dashboard\" = {{ requests_per_second = 50, burst = 100 }}\n\"jwt:alice@example.com\" = {{ requests_per_second = 1, burst = 1 }}\n\"anonymous:anonymous\" = {{ requests_per_second = 1, burst = 2 }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.rate_limits.principals.len(), 3);
        assert!(settings.rate_limits.enabled);
        let off = Settings::from_sources(None, "", [("SSM_GATEWAY_RATE_LIMITS__ENABLED", "false")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!off.rate_limits.enabled);
    }

    #[test]
    fn observability_settings_are_in_range() {
        error_for("shutdown_delay_secs = 301\n", "shutdown_delay_secs");
        error_for("shutdown_grace_secs = 3601\n", "shutdown_grace_secs");
        error_for("log_format = \"xml\"\n", "log_format");
        error_for("[otlp]\nendpoint = \"collector:4318\"\n", "otlp.endpoint");
        error_for("[otlp]\nservice_name = \" \"\n", "otlp.service_name");
        let env = [
            ("SSM_GATEWAY_ADMIN_LISTEN", "0.0.0.0:9090"),
            ("SSM_GATEWAY_SHUTDOWN_DELAY_SECS", "7"),
            ("SSM_GATEWAY_SHUTDOWN_GRACE_SECS", "20"),
            ("SSM_GATEWAY_LOG_FORMAT", "json"),
        ];
        let settings = Settings::from_sources(None, "", env).expect("valid");
        assert_eq!(settings.admin_listen.map(|a| a.port()), Some(9090));
        assert_eq!(
            (settings.shutdown_delay_secs, settings.shutdown_grace_secs),
            (7, 20)
        );
        assert_eq!(settings.log_format, LogFormat::Json);
    }

    #[test]
    fn aws_settings_are_in_range() {
        error_for("[aws]\nmax_attempts = 0\n", "aws.max_attempts");
        error_for("[aws]\nmax_attempts = 11\n", "aws.max_attempts");
        error_for(
            "[aws]\nattempt_timeout_secs = 0\n",
            "aws.attempt_timeout_secs",
        );
        error_for(
            "[aws]\noperation_timeout_secs = 0\n",
            "aws.operation_timeout_secs",
        );
        error_for("[aws]\nregion = \"Europe\"\n", "aws.region");
        error_for(
            "[aws]\nendpoint_url = \"localhost:4566\"\n",
            "aws.endpoint_url",
        );
    }

    #[test]
    fn regions_look_like_regions() {
        // The rule itself is `model::Region::parse`'s, tested there.
        error_for(
            "default_regions = [\"eu-west-1\", \"eu_west_2\"]\n",
            "default_regions[1]",
        );
        error_for(
            "default_regions = [\"eu-west-1\", \"eu-west-1\"]\n",
            "default_regions[1]",
        );
        error_for(
            &account("regions = [\"mars-north-1x\"]"),
            "accounts[0].regions[0]",
        );
        error_for(
            &account("regions = [\"us-east-1\", \"us-east-1\"]"),
            "accounts[0].regions[1]",
        );
    }

    #[test]
    fn account_ids_are_12_digits_and_unique() {
        let message = error_for(
            "default_regions = [\"eu-west-1\"]\n[[accounts]]\nid = \"111111111111\"\nalias = \"a\"\n[[accounts]]\nid = \"12345\"\nalias = \"b\"\n",
            "accounts[1].id",
        );
        assert!(
            message.ends_with("must be 12 digits (got \"12345\")"),
            "{message}"
        );
        let message = error_for(
            "default_regions = [\"eu-west-1\"]\n[[accounts]]\nid = \"111111111111\"\nalias = \"a\"\n[[accounts]]\nid = \"111111111111\"\nalias = \"b\"\n",
            "accounts[1].id",
        );
        assert!(message.contains("duplicate"), "{message}");
    }

    #[test]
    fn aliases_are_short_plain_unique_and_not_ids() {
        error_for(
            &account("").replace("\"prod\"", "\"\""),
            "accounts[0].alias",
        );
        error_for(
            &account("").replace("\"prod\"", "\"pr od\""),
            "accounts[0].alias",
        );
        error_for(
            &account("").replace("\"prod\"", &format!("\"{}\"", "a".repeat(65))),
            "accounts[0].alias",
        );
        error_for(
            &account("").replace("\"prod\"", "\"222222222222\""),
            "accounts[0].alias",
        );
        let message = error_for(
            "default_regions = [\"eu-west-1\"]\n[[accounts]]\nid = \"111111111111\"\nalias = \"prod\"\n[[accounts]]\nid = \"222222222222\"\nalias = \"prod\"\n",
            "accounts[1].alias",
        );
        assert!(message.contains("duplicate alias \"prod\""), "{message}");
    }

    #[test]
    fn role_arns_are_iam_roles_of_the_same_account() {
        for good in [
            "arn:aws:iam::111111111111:role/reader",
            "arn:aws-us-gov:iam::111111111111:role/path/to/reader",
            "arn:aws-cn:iam::111111111111:role/a+b=c,d.e@f_g-h",
        ] {
            assert_eq!(role_arn_account(good), Some("111111111111"), "{good}");
        }
        for bad in [
            "arn:aws:iam::111111111111:user/reader",
            "arn:aws:iam:eu-west-1:111111111111:role/reader",
            "arn:aws:sts::111111111111:role/reader",
            "arn:azure:iam::111111111111:role/reader",
            "arn:aws:iam::11111111111:role/reader",
            "arn:aws:iam::111111111111:role/",
            "arn:aws:iam::111111111111:role/a//b",
            "arn:aws:iam::111111111111:role/a b",
        ] {
            assert_eq!(role_arn_account(bad), None, "{bad}");
        }
        error_for(
            &account("role_arn = \"arn:aws:iam::111111111111:user/x\""),
            "accounts[0].role_arn",
        );
        let message = error_for(
            &account("role_arn = \"arn:aws:iam::222222222222:role/x\""),
            "accounts[0].role_arn",
        );
        assert!(message.contains("222222222222"), "{message}");
    }

    #[test]
    fn terminate_roles_are_roles_of_the_same_account() {
        let ok = from_text(&account(
            "terminate_role_arn = \"arn:aws:iam::111111111111:role/terminator\"",
        ))
        .unwrap();
        assert_eq!(
            ok.accounts[0].terminate_role_arn.as_deref(),
            Some("arn:aws:iam::111111111111:role/terminator")
        );
        error_for(
            &account("terminate_role_arn = \"arn:aws:iam::111111111111:user/x\""),
            "accounts[0].terminate_role_arn",
        );
        error_for(
            &account("terminate_role_arn = \"arn:aws:iam::222222222222:role/x\""),
            "accounts[0].terminate_role_arn",
        );
    }

    #[test]
    fn live_settings_default_off_and_are_bounded() {
        let settings = from_text("").unwrap();
        assert!(!settings.live.terminate_enabled);
        assert_eq!(settings.live, LiveSettings::default());
        let on = Settings::from_sources(
            None,
            "[live]\ninit_timeout_ms = 500",
            [("SSM_GATEWAY_LIVE__TERMINATE_ENABLED", "true")],
        )
        .unwrap();
        assert!(on.live.terminate_enabled);
        assert_eq!(on.live.init_timeout_ms, 500);
        error_for("[live]\nping_interval_ms = 5", "live.ping_interval_ms");
        error_for(
            "[live]\nmax_subscriptions_per_connection = 0",
            "live.max_subscriptions_per_connection",
        );
        let bounded = Settings::from_sources(
            None,
            "[live]\nmax_connections = 500",
            [("SSM_GATEWAY_LIVE__MAX_CONNECTIONS_PER_CALLER", "7")],
        )
        .unwrap();
        assert_eq!(
            (
                bounded.live.max_connections,
                bounded.live.max_connections_per_caller
            ),
            (500, 7)
        );
        error_for("[live]\nmax_connections = 0", "live.max_connections");
        error_for(
            "[live]\nmax_connections_per_caller = 1000001",
            "live.max_connections_per_caller",
        );
    }

    #[test]
    fn role_and_profile_are_exclusive() {
        error_for(
            &account("role_arn = \"arn:aws:iam::111111111111:role/x\"\nprofile = \"p\""),
            "accounts[0].profile",
        );
        error_for(&account("profile = \"\""), "accounts[0].profile");
    }

    #[test]
    fn role_options_need_a_role() {
        error_for(&account("external_id = \"abc\""), "accounts[0].external_id");
        error_for(
            &account("session_name = \"abc\""),
            "accounts[0].session_name",
        );
        error_for(
            &account("session_duration_secs = 3600"),
            "accounts[0].session_duration_secs",
        );
        error_for(
            &account("profile = \"p\"\nsession_name = \"abc\""),
            "accounts[0].session_name",
        );
    }

    #[test]
    fn role_options_are_in_range() {
        let role = "role_arn = \"arn:aws:iam::111111111111:role/x\"\n";
        error_for(
            &account(&format!("{role}external_id = \"a\"")),
            "accounts[0].external_id",
        );
        from_text(&account(&format!("{role}external_id = \"a:b/c@d\""))).expect("valid");
        error_for(
            &account(&format!("{role}session_name = \"a:b\"")),
            "accounts[0].session_name",
        );
        error_for(
            &account(&format!("{role}session_name = \"{}\"", "a".repeat(65))),
            "accounts[0].session_name",
        );
        error_for(
            &account(&format!("{role}session_duration_secs = 899")),
            "accounts[0].session_duration_secs",
        );
        error_for(
            &account(&format!("{role}session_duration_secs = 43201")),
            "accounts[0].session_duration_secs",
        );
    }

    #[test]
    fn every_account_has_a_region() {
        let text = "[[accounts]]\nid = \"111111111111\"\nalias = \"prod\"\n";
        let message = error_for(text, "accounts[0].regions");
        assert!(message.contains("default_regions"), "{message}");
        // Either source will do, env included.
        Settings::from_sources(None, text, [("SSM_GATEWAY_DEFAULT_REGIONS", "eu-west-1")])
            .expect("valid");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Settings::load(Some(Path::new("/nonexistent/gateway.toml"))).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("/nonexistent/gateway.toml: cannot read"),
            "{e}"
        );
    }

    /// Two accounts, then `auth` (TOML lines of `[auth]` and below).
    fn with_auth(auth: &str) -> String {
        format!(
            "default_regions = [\"eu-west-1\"]\n[[accounts]]\nid = \"111111111111\"\nalias = \"prod\"\n[[accounts]]\nid = \"222222222222\"\nalias = \"sandbox\"\n{auth}\n"
        )
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn key(sha256: &str, grants: &str) -> String {
        format!("[[auth.api_keys]]\nname = \"dash\"\nsha256 = {sha256}\ngrants = {grants}\n")
    }

    const READ_ALL: &str = "[{ accounts = [\"*\"], scopes = [\"sessions:read\"] }]";

    #[test]
    fn auth_settings_parse_and_resolve() {
        let text = with_auth(&format!(
            "[auth]\nallow_anonymous = true\nanonymous_grants = [{{ accounts = [\"sandbox\"], scopes = [\"sessions:read\"] }}]\n{}expires = \"2027-06-30T00:00:00Z\"\n[[auth.api_keys]]\nname = \"b\"\nsha256 = [\"{}\", \"{}\"]\ngrants = [{{ accounts = [\"prod\", \"222222222222\"], scopes = [\"sessions:read\", \"sessions:terminate\"] }}]\nexpires = 2027-06-30T02:00:00+02:00\n",
            key(&format!("\"{HASH}\""), READ_ALL),
            "a".repeat(64),
            "B".repeat(64),
        ));
        let settings = from_text(&text).unwrap_or_else(|e| panic!("{e}"));
        let auth = &settings.auth;
        assert!(auth.is_configured());
        assert_eq!(auth.api_keys[0].sha256, [HASH]);
        assert_eq!(auth.api_keys[1].sha256.len(), 2);
        assert_eq!(auth.api_keys[0].expires, auth.api_keys[1].expires);
        assert_eq!(
            auth.api_keys[1].grants[0].scopes,
            [
                crate::model::Scope::SessionsRead,
                crate::model::Scope::SessionsTerminate
            ]
        );
    }

    #[test]
    fn no_auth_is_not_configured() {
        assert!(!Settings::default().auth.is_configured());
        let only_file =
            from_text(&with_auth("[auth]\napi_keys_file = \"/k.toml\"")).expect("valid");
        assert!(only_file.auth.is_configured());
    }

    #[test]
    fn api_key_errors_name_the_hash_and_never_print_it() {
        let message = error_for(
            &with_auth(&key(&format!("[\"{HASH}\", \"my-actual-key\"]"), READ_ALL)),
            "auth.api_keys[0].sha256[1]",
        );
        assert!(message.contains("64 hex digits"), "{message}");
        assert!(!message.contains("my-actual-key"), "{message}");
        error_for(&with_auth(&key("[]", READ_ALL)), "auth.api_keys[0].sha256");
        error_for(
            &with_auth(&format!(
                "{}{}",
                key(&format!("\"{HASH}\""), READ_ALL),
                key(&format!("\"{}\"", "c".repeat(64)), READ_ALL)
            )),
            "auth.api_keys[1].name",
        );
        let dup_hash = key(&format!("\"{HASH}\""), READ_ALL);
        let message = error_for(
            &with_auth(&format!(
                "{dup_hash}{}",
                dup_hash.replace("\"dash\"", "\"other\"")
            )),
            "auth.api_keys[1].sha256[0]",
        );
        assert!(message.contains("duplicate hash"), "{message}");
        error_for(
            &with_auth(&key(&format!("\"{HASH}\""), "[]")),
            "auth.api_keys[0].grants",
        );
        error_for(
            &with_auth(&key(&format!("\"{HASH}\""), READ_ALL).replace("\"dash\"", "\"a b\"")),
            "auth.api_keys[0].name",
        );
        error_for(
            &with_auth(&format!(
                "{}expires = \"tomorrow\"\n",
                key(&format!("\"{HASH}\""), READ_ALL)
            )),
            "auth.api_keys[0].expires",
        );
        error_for(
            &with_auth(&format!(
                "{}secret = \"x\"\n",
                key(&format!("\"{HASH}\""), READ_ALL)
            )),
            "auth.api_keys[0].secret",
        );
    }

    #[test]
    fn grants_name_known_accounts_and_scopes() {
        let h = format!("\"{HASH}\"");
        error_for(
            &with_auth(&key(
                &h,
                "[{ accounts = [\"prdo\"], scopes = [\"sessions:read\"] }]",
            )),
            "auth.api_keys[0].grants[0].accounts[0]",
        );
        error_for(
            &with_auth(&key(
                &h,
                "[{ accounts = [], scopes = [\"sessions:read\"] }]",
            )),
            "auth.api_keys[0].grants[0].accounts",
        );
        error_for(
            &with_auth(&key(&h, "[{ accounts = [\"prod\"], scopes = [] }]")),
            "auth.api_keys[0].grants[0].scopes",
        );
        let message = error_for(
            &with_auth(&key(
                &h,
                "[{ accounts = [\"prod\"], scopes = [\"sessions:write\"] }]",
            )),
            "auth.api_keys[0].grants[0].scopes[0]",
        );
        assert!(message.contains("sessions:read"), "{message}");
        error_for(
            &with_auth(
                "[auth]\nanonymous_grants = [{ accounts = [\"*\"], scopes = [\"sessions:read\"] }]",
            ),
            "auth.anonymous_grants",
        );
    }

    fn jwt(extra: &str) -> String {
        with_auth(&format!(
            "[auth.jwt]\nissuer = \"https://idp.example.com/\"\naudiences = [\"ssm-gateway\"]\njwks_url = \"https://idp.example.com/jwks\"\n{extra}"
        ))
    }

    #[test]
    fn jwt_settings_are_checked() {
        let settings = from_text(&jwt(
            "algorithms = [\"RS256\", \"ES256\"]\n[auth.jwt.claim_grants]\nplatform-team = [{ accounts = [\"prod\"], scopes = [\"sessions:read\"] }]\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let parsed = settings.auth.jwt.expect("set");
        assert_eq!(parsed.grants_claim, "groups");
        assert_eq!(parsed.leeway_secs, 30);
        assert!(parsed.claim_grants.contains_key("platform-team"));
        let message = error_for(
            &jwt("algorithms = [\"RS256\", \"HS256\"]\n"),
            "auth.jwt.algorithms[1]",
        );
        assert!(message.contains("symmetric"), "{message}");
        error_for(&jwt("algorithms = [\"none\"]\n"), "auth.jwt.algorithms[0]");
        error_for(&jwt("algorithms = []\n"), "auth.jwt.algorithms");
        error_for(
            &jwt("").replace(
                "https://idp.example.com/jwks",
                "http://idp.example.com/jwks",
            ),
            "auth.jwt.jwks_url",
        );
        error_for(
            &jwt("").replace("[\"ssm-gateway\"]", "[]"),
            "auth.jwt.audiences",
        );
        error_for(&jwt("leeway_secs = 301\n"), "auth.jwt.leeway_secs");
        error_for(
            &jwt("jwks_refresh_secs = 5\n"),
            "auth.jwt.jwks_refresh_secs",
        );
        error_for(
            &jwt("jwks_refresh_secs = 60\njwks_min_refresh_secs = 61\n"),
            "auth.jwt.jwks_min_refresh_secs",
        );
        error_for(
            &jwt(
                "[auth.jwt.claim_grants]\nteam = [{ accounts = [\"nope\"], scopes = [\"sessions:read\"] }]\n",
            ),
            "auth.jwt.claim_grants.team[0].accounts[0]",
        );
    }

    #[test]
    fn auth_env_overrides_and_file_only_keys() {
        let env = [
            ("SSM_GATEWAY_AUTH__ALLOW_ANONYMOUS", "true"),
            ("SSM_GATEWAY_AUTH__JWT__AUDIENCES", "a,b"),
            ("SSM_GATEWAY_AUTH__JWT__ALGORITHMS", "ES256"),
        ];
        let settings =
            Settings::from_sources(None, &jwt(""), env).unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.auth.allow_anonymous);
        let jwt_settings = settings.auth.jwt.expect("set");
        assert_eq!(jwt_settings.audiences, ["a", "b"]);
        assert_eq!(jwt_settings.algorithms, ["ES256"]);
        let e = Settings::from_sources(None, "", [("SSM_GATEWAY_AUTH__API_KEYS", "[]")])
            .expect_err("file only");
        assert!(
            e.reason
                .contains("auth.api_keys is set in the settings file only"),
            "{e}"
        );
        let e = Settings::from_sources(
            None,
            &jwt(""),
            [("SSM_GATEWAY_AUTH__JWT__ALGORITHMS", "HS256")],
        )
        .expect_err("symmetric");
        assert_eq!(
            e.key,
            "auth.jwt.algorithms[0] (SSM_GATEWAY_AUTH__JWT__ALGORITHMS)"
        );
    }
}
