//! Typed settings: one struct tree, each field documented with its default.
//!
//! Everything the gateway needs to start is here; `main` builds it from the
//! command line (a settings file with env overrides joins it when accounts
//! come in). Secrets live in [`Secret`], which never prints.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

/// A value that must not reach logs or error messages. `Debug` and
/// `Display` print `[redacted]`; [`Secret::expose`] is the only way in.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret<T>(T);

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
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server listens on. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Key that signs cursors (HMAC-SHA256), at least 32 bytes. Every replica
    /// behind one load balancer must share it, so any replica resumes any
    /// cursor. Unset: a random key per process, with a warning at start-up
    /// (cursors then die with the process). Env: `SSM_GATEWAY_CURSOR_KEY`.
    #[serde(default)]
    pub cursor_key: Option<Secret<String>>,
    /// Paging limits of the `sessions` connection.
    #[serde(default)]
    pub limits: Limits,
    /// HTTP limits.
    #[serde(default)]
    pub http: HttpSettings,
    /// How the gateway reaches AWS: base region, endpoint, retries, timeouts.
    #[serde(default)]
    pub aws: AwsSettings,
    /// Regions an account reads when its own `regions` is empty.
    #[serde(default)]
    pub default_regions: Vec<String>,
    /// The AWS accounts the gateway reads sessions from.
    #[serde(default)]
    pub accounts: Vec<AccountSettings>,
}

/// How the gateway reaches AWS.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Region of the base credentials and of STS. Default: the first of
    /// `default_regions`, else the default chain's region.
    pub region: Option<String>,
    /// Overrides the SSM and STS endpoints (a VPC endpoint, the emulator).
    pub endpoint_url: Option<String>,
    /// SDK attempts per call, first included; retries back off with jitter. Default 3.
    pub max_attempts: u32,
    /// Bound on one attempt, in seconds. Default 5.
    pub attempt_timeout_secs: u64,
    /// Bound on a whole call with its retries, in seconds. Default 15.
    pub operation_timeout_secs: u64,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            max_attempts: 3,
            attempt_timeout_secs: 5,
            operation_timeout_secs: 15,
        }
    }
}

/// One AWS account the gateway reads, and how it gets credentials there:
/// `role_arn` (assumed from the base credentials), or `profile` (a named
/// profile of the shared config files), or neither (the base credentials
/// themselves, i.e. the gateway's own account).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// The 12-digit account id.
    pub id: String,
    /// A short unique name callers may use instead of the id, e.g. `prod`.
    pub alias: String,
    /// Role to assume in the account, `arn:aws:iam::<id>:role/<name>`.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// External id the role's trust policy requires, if any.
    #[serde(default)]
    pub external_id: Option<Secret<String>>,
    /// Role session name, shown in the account's CloudTrail. Default `ssm-session-gateway`.
    #[serde(default)]
    pub session_name: Option<String>,
    /// Lifetime of the assumed-role credentials, 900 to 43200 s. Default 3600.
    #[serde(default)]
    pub session_duration_secs: Option<u32>,
    /// A named profile instead of a role.
    #[serde(default)]
    pub profile: Option<String>,
    /// Regions to read; empty means `default_regions`.
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

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            cursor_key: None,
            limits: Limits::default(),
            http: HttpSettings::default(),
            aws: AwsSettings::default(),
            default_regions: Vec::new(),
            accounts: Vec::new(),
        }
    }
}

/// Paging limits of the `sessions` connection.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// `first` when the query leaves it out. Default 50.
    pub default_first: u32,
    /// The largest `first` accepted. Default 1000.
    pub max_first: u32,
    /// `pageSize` (upstream `MaxResults`) when the query leaves it out.
    /// Default 200, the service maximum: SSM's rate limits count calls, not
    /// sessions, so full pages cost the fewest calls per session.
    pub default_page_size: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_first: 50,
            max_first: 1000,
            default_page_size: 200,
        }
    }
}

/// HTTP server limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Largest request body accepted, in bytes (larger: HTTP 413). Default
    /// 192 KiB: room for the largest cursor the gateway mints
    /// ([`crate::cursor::MAX_CURSOR_LEN`]) with the query around it.
    pub body_limit_bytes: usize,
    /// Deepest selection set accepted. Default 12.
    pub max_query_depth: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 192 * 1024,
            max_query_depth: 12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
