//! The `[auth]` settings: API keys, JWT, anonymous access, and their grants.
//!
//! Deserialized as part of [`crate::settings::Settings`] (and, for
//! `[[api_keys]]`, from `auth.api_keys_file`); checked by
//! [`AuthSettings::validate`], which names the bad key in every message and
//! never prints a hash or a key. Plain data: `crate::auth` turns it into
//! principals and grants (settings sit below auth on the request path).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use super::{AccountSettings, SettingsError};
use crate::model::Scope;

/// Who may call the gateway (`[auth]`). `serve` refuses to start unless at
/// least one of `api_keys`, `api_keys_file`, `jwt` or `allow_anonymous` is
/// set ([`AuthSettings::is_configured`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Let requests without an `Authorization` header through, with
    /// `anonymous_grants`. A request with a bad header is refused all the
    /// same. Default false. Env `SSM_GATEWAY_AUTH__ALLOW_ANONYMOUS`.
    pub allow_anonymous: bool,
    /// What an anonymous caller may do, e.g.
    /// `[{ accounts = ["sandbox"], scopes = ["sessions:read"] }]`. Only with
    /// `allow_anonymous`. Default none. File only.
    pub anonymous_grants: Vec<GrantSettings>,
    /// A TOML file of more keys, `[[api_keys]]` tables shaped as
    /// `[[auth.api_keys]]`, re-read on SIGHUP (mount it from a Kubernetes
    /// Secret). A reload that fails keeps the keys in use and logs why.
    /// Default unset. Env `SSM_GATEWAY_AUTH__API_KEYS_FILE`.
    pub api_keys_file: Option<PathBuf>,
    /// API keys (`[[auth.api_keys]]`), by the SHA-256 of the key. Default
    /// none. File only.
    pub api_keys: Vec<ApiKeySettings>,
    /// JWTs from an OIDC provider (`[auth.jwt]`). Default unset: no JWTs.
    pub jwt: Option<JwtSettings>,
}

/// One grant: `scopes` in `accounts`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct GrantSettings {
    /// Account ids or aliases of configured accounts, or `"*"` for all.
    /// Not empty.
    pub accounts: Vec<String>,
    /// `sessions:read` and/or `sessions:terminate`. Not empty.
    pub scopes: Vec<Scope>,
}

/// One API key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// The caller's name, in logs and cache keys: 1 to 64 of
    /// `A-Z a-z 0-9 _ - .`; unique across the settings and the keys file.
    pub name: String,
    /// The SHA-256 of the key, 64 hex digits (`printf %s "$KEY" | sha256sum`),
    /// or a list of them: during a rotation, the old key's and the new one's.
    /// Each hash belongs to one name only.
    #[serde(deserialize_with = "one_or_many")]
    pub sha256: Vec<String>,
    /// What the key may do. Not empty.
    pub grants: Vec<GrantSettings>,
    /// When the key stops working, RFC 3339 with an offset, e.g.
    /// `"2027-06-30T00:00:00Z"` (a TOML date-time works too). Default never.
    #[serde(default, deserialize_with = "rfc3339")]
    pub expires: Option<DateTime<Utc>>,
}

/// JWTs from an OIDC provider: who signs them, for whom, with which keys,
/// and how their claims become grants.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The `iss` every token must carry, exactly. Required. Env
    /// `SSM_GATEWAY_AUTH__JWT__ISSUER`.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Required, not
    /// empty. Env `SSM_GATEWAY_AUTH__JWT__AUDIENCES` (a comma list).
    pub audiences: Vec<String>,
    /// Where the provider publishes its signing keys (JWKS): `https://`, or
    /// `http://` to a loopback address only. Required. Env
    /// `SSM_GATEWAY_AUTH__JWT__JWKS_URL`.
    pub jwks_url: String,
    /// Accepted `alg` values: asymmetric only, of RS256 RS384 RS512 PS256
    /// PS384 PS512 ES256 ES384 (HS* and `none` are refused). Default
    /// `["RS256"]`. Env `SSM_GATEWAY_AUTH__JWT__ALGORITHMS` (a comma list).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim whose values (a string or a list of strings) select grants
    /// in `claim_grants`. Default `groups`. Env
    /// `SSM_GATEWAY_AUTH__JWT__GRANTS_CLAIM`.
    #[serde(default = "default_grants_claim")]
    pub grants_claim: String,
    /// Grants per value of `grants_claim` (`[auth.jwt.claim_grants]`, e.g.
    /// `platform-team = [{ accounts = ["platform"], scopes = ["sessions:read"] }]`);
    /// a token gets the union of its values' grants, and values not listed
    /// grant nothing. Default none. File only.
    #[serde(default)]
    pub claim_grants: BTreeMap<String, Vec<GrantSettings>>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds, 0 to 300. Default
    /// 30. Env `SSM_GATEWAY_AUTH__JWT__LEEWAY_SECS`.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// How often the JWKS is fetched again, in seconds, 10 to 86400. Default
    /// 600. Env `SSM_GATEWAY_AUTH__JWT__JWKS_REFRESH_SECS`.
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// The shortest time between two fetches, in seconds, 1 to
    /// `jwks_refresh_secs`: a token with an unknown `kid` fetches the JWKS at
    /// once, but no more often than this, so a flood of made-up `kid`s
    /// cannot hammer the provider. Default 30. Env
    /// `SSM_GATEWAY_AUTH__JWT__JWKS_MIN_REFRESH_SECS`.
    #[serde(default = "default_jwks_min_refresh_secs")]
    pub jwks_min_refresh_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}
fn default_grants_claim() -> String {
    "groups".to_owned()
}
fn default_leeway_secs() -> u64 {
    30
}
fn default_jwks_refresh_secs() -> u64 {
    600
}
fn default_jwks_min_refresh_secs() -> u64 {
    30
}

/// A string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    OneOrMany::deserialize(deserializer)
        .map(|v| match v {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        })
        .map_err(|_| serde::de::Error::custom("expected a hex string or a list of them"))
}

/// An RFC 3339 date-time with an offset, as a string or a TOML date-time.
fn rfc3339<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Toml(toml::value::Datetime),
    }
    let text = match Raw::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom("expected an RFC 3339 date-time such as \"2027-06-30T00:00:00Z\"")
    })? {
        Raw::Text(s) => s,
        Raw::Toml(dt) => dt.to_string(),
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|dt| Some(dt.with_timezone(&Utc)))
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "expected an RFC 3339 date-time with an offset such as \"2027-06-30T00:00:00Z\" (got {text:?})"
            ))
        })
}

/// The ids and aliases of the configured accounts, which grants may name.
#[derive(Clone, Debug, Default)]
pub(crate) struct KnownAccounts(HashSet<String>);

impl KnownAccounts {
    pub(crate) fn new(accounts: &[AccountSettings]) -> Self {
        Self(
            accounts
                .iter()
                .flat_map(|a| [a.id.clone(), a.alias.clone()])
                .collect(),
        )
    }
}

impl AuthSettings {
    /// Whether any way in is configured. `serve` refuses to start without one.
    pub fn is_configured(&self) -> bool {
        !self.api_keys.is_empty()
            || self.api_keys_file.is_some()
            || self.jwt.is_some()
            || self.allow_anonymous
    }

    /// Checks `[auth]`; grants may only name `accounts`' ids and aliases.
    pub(crate) fn validate(&self, accounts: &[AccountSettings]) -> Result<(), SettingsError> {
        let known = KnownAccounts::new(accounts);
        if !self.allow_anonymous && !self.anonymous_grants.is_empty() {
            return Err(SettingsError::new(
                "auth.anonymous_grants",
                "only applies with auth.allow_anonymous = true",
            ));
        }
        validate_grants(
            "auth.anonymous_grants",
            &self.anonymous_grants,
            &known,
            true,
        )?;
        if let Some(path) = &self.api_keys_file
            && path.as_os_str().is_empty()
        {
            return Err(SettingsError::new(
                "auth.api_keys_file",
                "must not be empty",
            ));
        }
        validate_api_keys(
            "auth.api_keys",
            &self.api_keys,
            &known,
            &mut KeyUniqueness::default(),
        )?;
        if let Some(jwt) = &self.jwt {
            jwt.validate(&known)?;
        }
        Ok(())
    }
}

/// Names and hashes seen so far, across the settings and the keys file.
#[derive(Default)]
pub(crate) struct KeyUniqueness {
    names: HashSet<String>,
    hashes: HashSet<[u8; 32]>,
}

/// Checks a list of API keys at `at` (e.g. `auth.api_keys`), and that no
/// name or hash repeats one in `seen`, which it extends.
pub(crate) fn validate_api_keys(
    at: &str,
    keys: &[ApiKeySettings],
    known: &KnownAccounts,
    seen: &mut KeyUniqueness,
) -> Result<(), SettingsError> {
    for (i, key) in keys.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let name_ok = (1..=64).contains(&key.name.len())
            && key
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !name_ok {
            return Err(SettingsError::new(
                format!("{at}.name"),
                format!("must be 1 to 64 of A-Z a-z 0-9 _ - . (got {:?})", key.name),
            ));
        }
        if !seen.names.insert(key.name.clone()) {
            return Err(SettingsError::new(
                format!("{at}.name"),
                format!("duplicate key name {:?}", key.name),
            ));
        }
        if key.sha256.is_empty() {
            return Err(SettingsError::new(
                format!("{at}.sha256"),
                "must hold at least one hash",
            ));
        }
        for (j, hex) in key.sha256.iter().enumerate() {
            // Never print the value: a key pasted here by mistake is a secret.
            let hash = parse_sha256_hex(hex).ok_or_else(|| {
                SettingsError::new(
                    format!("{at}.sha256[{j}]"),
                    format!(
                        "must be 64 hex digits, the SHA-256 of the key, not the key (got {} characters; value not shown)",
                        hex.chars().count()
                    ),
                )
            })?;
            if !seen.hashes.insert(hash) {
                return Err(SettingsError::new(
                    format!("{at}.sha256[{j}]"),
                    "duplicate hash: each key belongs to one name only",
                ));
            }
        }
        if key.grants.is_empty() {
            return Err(SettingsError::new(
                format!("{at}.grants"),
                "must hold at least one grant",
            ));
        }
        validate_grants(&format!("{at}.grants"), &key.grants, known, false)?;
    }
    Ok(())
}

fn validate_grants(
    at: &str,
    grants: &[GrantSettings],
    known: &KnownAccounts,
    may_be_empty: bool,
) -> Result<(), SettingsError> {
    if grants.is_empty() && !may_be_empty {
        return Err(SettingsError::new(at, "must hold at least one grant"));
    }
    for (i, grant) in grants.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if grant.accounts.is_empty() {
            return Err(SettingsError::new(
                format!("{at}.accounts"),
                "must name at least one account id or alias, or \"*\"",
            ));
        }
        for (j, account) in grant.accounts.iter().enumerate() {
            if account != "*" && !known.0.contains(account) {
                return Err(SettingsError::new(
                    format!("{at}.accounts[{j}]"),
                    format!(
                        "no configured account has the id or alias {account:?} (\"*\" means all)"
                    ),
                ));
            }
        }
        if grant.scopes.is_empty() {
            return Err(SettingsError::new(
                format!("{at}.scopes"),
                "must hold at least one of \"sessions:read\", \"sessions:terminate\"",
            ));
        }
    }
    Ok(())
}

impl JwtSettings {
    fn validate(&self, known: &KnownAccounts) -> Result<(), SettingsError> {
        if self.issuer.trim().is_empty() {
            return Err(SettingsError::new("auth.jwt.issuer", "must not be empty"));
        }
        if self.audiences.is_empty() {
            return Err(SettingsError::new(
                "auth.jwt.audiences",
                "must name at least one audience",
            ));
        }
        for (i, aud) in self.audiences.iter().enumerate() {
            if aud.trim().is_empty() {
                return Err(SettingsError::new(
                    format!("auth.jwt.audiences[{i}]"),
                    "must not be empty",
                ));
            }
        }
        check_jwks_url(&self.jwks_url).map_err(|r| SettingsError::new("auth.jwt.jwks_url", r))?;
        if self.algorithms.is_empty() {
            return Err(SettingsError::new(
                "auth.jwt.algorithms",
                "must name at least one algorithm",
            ));
        }
        for (i, alg) in self.algorithms.iter().enumerate() {
            parse_algorithm(alg)
                .map_err(|r| SettingsError::new(format!("auth.jwt.algorithms[{i}]"), r))?;
        }
        if self.grants_claim.trim().is_empty() {
            return Err(SettingsError::new(
                "auth.jwt.grants_claim",
                "must not be empty",
            ));
        }
        for (value, grants) in &self.claim_grants {
            validate_grants(
                &format!("auth.jwt.claim_grants.{value}"),
                grants,
                known,
                false,
            )?;
        }
        if self.leeway_secs > 300 {
            return Err(SettingsError::new(
                "auth.jwt.leeway_secs",
                format!("must be 0 to 300 (got {})", self.leeway_secs),
            ));
        }
        if !(10..=86_400).contains(&self.jwks_refresh_secs) {
            return Err(SettingsError::new(
                "auth.jwt.jwks_refresh_secs",
                format!("must be 10 to 86400 (got {})", self.jwks_refresh_secs),
            ));
        }
        if !(1..=self.jwks_refresh_secs).contains(&self.jwks_min_refresh_secs) {
            return Err(SettingsError::new(
                "auth.jwt.jwks_min_refresh_secs",
                format!(
                    "must be 1 to auth.jwt.jwks_refresh_secs = {} (got {})",
                    self.jwks_refresh_secs, self.jwks_min_refresh_secs
                ),
            ));
        }
        Ok(())
    }

    /// `algorithms`, parsed (only valid after [`AuthSettings::validate`]).
    pub(crate) fn parsed_algorithms(&self) -> Vec<jsonwebtoken::Algorithm> {
        self.algorithms
            .iter()
            .filter_map(|a| parse_algorithm(a).ok())
            .collect()
    }
}

/// 64 hex digits (either case) as 32 bytes.
pub(crate) fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// An accepted JWT algorithm name: asymmetric only.
pub(crate) fn parse_algorithm(name: &str) -> Result<jsonwebtoken::Algorithm, String> {
    use jsonwebtoken::Algorithm::*;
    Ok(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "HS256" | "HS384" | "HS512" => {
            return Err(format!(
                "{name} is symmetric (a shared secret); only asymmetric algorithms are accepted: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384"
            ));
        }
        other => {
            return Err(format!(
                "unsupported algorithm {other:?}; one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384"
            ));
        }
    })
}

/// `https://host/...`, or `http://` to a loopback host (a JWKS over plain
/// HTTP elsewhere would let anyone on the path mint tokens).
fn check_jwks_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| format!("must be an https:// URL (got {url:?})"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") => Ok(()),
        Some("http") => Err(format!(
            "must be https:// (plain http:// only to a loopback address) (got {url:?})"
        )),
        _ => Err(format!("must be an https:// URL (got {url:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_parses_either_case_and_only_64_digits() {
        let lower = "ab".repeat(32);
        assert_eq!(parse_sha256_hex(&lower), Some([0xab; 32]));
        assert_eq!(parse_sha256_hex(&lower.to_uppercase()), Some([0xab; 32]));
        assert_eq!(parse_sha256_hex(&"ab".repeat(31)), None);
        assert_eq!(parse_sha256_hex(&format!("{}zz", "ab".repeat(31))), None);
        assert_eq!(parse_sha256_hex(&format!("{}+1", "ab".repeat(31))), None);
        // Multi-byte characters are not hex digits (and do not panic).
        assert_eq!(parse_sha256_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn only_asymmetric_algorithms() {
        for ok in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
        ] {
            assert!(parse_algorithm(ok).is_ok(), "{ok}");
        }
        for bad in [
            "HS256", "HS384", "HS512", "none", "None", "EdDSA", "rs256", "",
        ] {
            assert!(parse_algorithm(bad).is_err(), "{bad}");
        }
        assert!(
            parse_algorithm("HS256")
                .expect_err("symmetric")
                .contains("symmetric")
        );
    }

    #[test]
    fn jwks_urls_are_https_or_loopback_http() {
        for ok in [
            "https://login.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(check_jwks_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "ftp://example.com/jwks",
            "https:///jwks",
            "/jwks",
            "",
        ] {
            assert!(check_jwks_url(bad).is_err(), "{bad}");
        }
    }
}
