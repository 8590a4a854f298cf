//! The `[rate_limits]` settings: how many requests each caller may make.
//!
//! Plain data, checked by [`RateLimitSettings::validate`]; `crate::http`
//! turns it into limiters. A caller is a principal as the audit log names
//! it (`api_key:<name>`, `jwt:<sub>`, `anonymous:anonymous`), which is also
//! how `principals` overrides are keyed.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ApiKeySettings, SettingsError};

/// Most requests per second (and burst) any setting may allow.
const MAX_RATE: u32 = 1_000_000;

/// Requests per caller (`[rate_limits]`): a token bucket per principal,
/// checked right after authentication and before any GraphQL work. Over it,
/// HTTP 429 with `Retry-After` and `RATE_LIMITED`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Whether callers are rate limited at all. Default true. Env
    /// `SSM_GATEWAY_RATE_LIMITS__ENABLED`.
    pub enabled: bool,
    /// Requests per second each principal may make, sustained, 1 to
    /// 1000000. Default 20. Env `SSM_GATEWAY_RATE_LIMITS__REQUESTS_PER_SECOND`.
    pub requests_per_second: u32,
    /// Requests a principal may make at once after being idle (the bucket's
    /// size), 1 to 1000000. Default 40. Env `SSM_GATEWAY_RATE_LIMITS__BURST`.
    pub burst: u32,
    /// Limits of particular principals instead of the defaults, keyed by the
    /// principal as the audit log names it: `"api_key:<name>"`,
    /// `"jwt:<sub>"` or `"anonymous:anonymous"`, e.g.
    /// `"api_key:dashboard" = { requests_per_second = 100, burst = 200 }`.
    /// Default none. File only.
    pub principals: BTreeMap<String, PrincipalRate>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            requests_per_second: 20,
            burst: 40,
            principals: BTreeMap::new(),
        }
    }
}

/// One principal's limit (an entry of `rate_limits.principals`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct PrincipalRate {
    /// Requests per second, sustained, 1 to 1000000.
    pub requests_per_second: u32,
    /// The bucket's size, 1 to 1000000.
    pub burst: u32,
}

impl RateLimitSettings {
    /// Checks ranges and override keys. An `api_key:` override must name a
    /// key of `auth.api_keys` unless keys also come from a keys file (which
    /// changes at run time), so a typo is caught rather than ignored.
    pub(crate) fn validate(
        &self,
        api_keys: &[ApiKeySettings],
        has_keys_file: bool,
    ) -> Result<(), SettingsError> {
        check_rate(
            "rate_limits",
            PrincipalRate {
                requests_per_second: self.requests_per_second,
                burst: self.burst,
            },
        )?;
        for (principal, rate) in &self.principals {
            let at = format!("rate_limits.principals.{principal:?}");
            check_rate(&at, *rate)?;
            check_principal(principal, api_keys, has_keys_file)
                .map_err(|reason| SettingsError::new(&at, reason))?;
        }
        Ok(())
    }
}

fn check_rate(at: &str, rate: PrincipalRate) -> Result<(), SettingsError> {
    for (key, value) in [
        ("requests_per_second", rate.requests_per_second),
        ("burst", rate.burst),
    ] {
        if !(1..=MAX_RATE).contains(&value) {
            return Err(SettingsError::new(
                format!("{at}.{key}"),
                format!("must be 1 to {MAX_RATE} (got {value})"),
            ));
        }
    }
    Ok(())
}

/// Whether `principal` is a principal's name as the audit log writes it.
fn check_principal(
    principal: &str,
    api_keys: &[ApiKeySettings],
    has_keys_file: bool,
) -> Result<(), String> {
    let shape = "a principal as the audit log names it: \"api_key:<name>\", \"jwt:<sub>\" or \
                 \"anonymous:anonymous\"";
    match principal.split_once(':') {
        Some(("api_key", name)) if !name.is_empty() => {
            if has_keys_file || api_keys.iter().any(|k| k.name == name) {
                Ok(())
            } else {
                Err(format!(
                    "no API key is named {name:?} in auth.api_keys (and there is no \
                     auth.api_keys_file)"
                ))
            }
        }
        Some(("jwt", sub)) if !sub.is_empty() => Ok(()),
        Some(("anonymous", "anonymous")) => Ok(()),
        _ => Err(format!("must be {shape} (got {principal:?})")),
    }
}
