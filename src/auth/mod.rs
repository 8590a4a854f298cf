//! Who is calling, and what they may see: authentication of the
//! `Authorization: Bearer <token>` header and per-account grants.
//!
//! [`Authenticator::authenticate`] is the one entry point: it turns a
//! request's header into a [`Principal`] (an API key's name, a JWT's
//! subject, or the anonymous caller) with its [`Grants`], or an
//! [`AuthError`] whose message is safe to send (it never holds the token).
//! Resolvers then ask the principal what it may do:
//! [`Principal::can`] per account and scope, [`Principal::readable_accounts`]
//! for the account list, and [`Principal::identity_key`] for cache keys.
//!
//! A token is a JWT when it is three dot-separated base64url parts and JWT
//! is configured, otherwise an API key. Work on a request is bounded before
//! any is done: a header over [`MAX_HEADER_BYTES`] is refused unread.
//!
//! On the request path: `crate::http` authenticates every GraphQL request
//! before any other work and puts the principal in the request data;
//! `crate::sessions` filters accounts by it. The `[auth]` settings and their
//! validation live in `crate::settings` (below this module).
//!
//! # Layout
//! - [`principal`]: principals, grants, scopes, identity keys.
//! - [`api_keys`]: API keys by SHA-256, constant-time lookup, reload on SIGHUP.
//! - [`jwt`]: JWT verification against a cached, refreshed JWKS.

pub mod api_keys;
pub mod jwt;
pub mod principal;

use std::sync::Arc;

use axum::http::HeaderValue;

pub use crate::settings::{ApiKeySettings, AuthSettings, GrantSettings, JwtSettings};
pub use api_keys::ApiKeys;
pub use jwt::{HttpJwksSource, JwksSource, JwtVerifier};
pub use principal::{AccountSet, Grant, Grants, IdentityKey, Principal, PrincipalKind, Scope};

use crate::settings::Settings;

/// The longest `Authorization` header (and bare token) looked at; longer
/// ones are refused before any parsing, hashing or signature work.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The `extensions.code` of every authentication failure.
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";

/// Why a caller is not authenticated. The message is safe to send to the
/// client and to log: it never contains the token or any part of it. Every
/// variant maps to HTTP 401 with `WWW-Authenticate: Bearer` and
/// `extensions.code` [`UNAUTHENTICATED`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header (or an empty one), and anonymous access is off.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    /// A scheme other than `Bearer` (e.g. `Basic`).
    #[error("unsupported authorization scheme: use Bearer")]
    NotBearer,
    /// Longer than [`MAX_HEADER_BYTES`].
    #[error("the Authorization header is too large")]
    TooLarge,
    /// Not UTF-8, no token after `Bearer`, or characters no token has.
    #[error("malformed Authorization header")]
    Malformed,
    /// No configured API key has this hash.
    #[error("unknown API key")]
    UnknownKey,
    /// The API key's `expires` has passed, or the JWT's `exp`.
    #[error("the credentials have expired")]
    Expired,
    /// A JWT that does not verify; the reason is a fixed phrase.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// A JWT arrived before the JWKS was ever fetched.
    #[error("signing keys not yet available; retry shortly")]
    KeysUnavailable,
}

impl AuthError {
    /// The client-facing code: always [`UNAUTHENTICATED`].
    pub fn code(&self) -> &'static str {
        UNAUTHENTICATED
    }

    /// A short stable reason for logs and metrics (`expired`, `unknown_key`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotBearer => "not_bearer",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Expired => "expired",
            Self::InvalidToken(_) => "invalid_token",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Turns credentials into principals: API keys, JWTs, and anonymous access.
pub struct Authenticator {
    /// The anonymous principal, when `auth.allow_anonymous` is on.
    anonymous: Option<Principal>,
    keys: Arc<ApiKeys>,
    jwt: Option<Arc<JwtVerifier>>,
}

/// The background work of an [`Authenticator`]: JWKS refresh and SIGHUP
/// reload. Dropping it stops both.
pub struct AuthTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AuthTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Authenticator {
    /// From validated settings: reads `auth.api_keys_file` (an error if it
    /// cannot be read or is invalid) and sets up JWT verification; fetches
    /// nothing yet (see [`Authenticator::start`]).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        let keys = Arc::new(ApiKeys::load(auth, &settings.accounts)?);
        let jwt = auth
            .jwt
            .as_ref()
            .map(JwtVerifier::from_settings)
            .transpose()?
            .map(Arc::new);
        let anonymous = auth
            .allow_anonymous
            .then(|| principal::to_grants(&auth.anonymous_grants));
        Ok(Self::new(keys, jwt, anonymous))
    }

    /// From parts; `anonymous` is `Some(grants)` when anonymous access is on.
    pub fn new(
        keys: Arc<ApiKeys>,
        jwt: Option<Arc<JwtVerifier>>,
        anonymous: Option<Grants>,
    ) -> Self {
        Self {
            anonymous: anonymous.map(Principal::anonymous),
            keys,
            jwt,
        }
    }

    /// Starts the background work: the first JWKS fetch and its refreshes,
    /// and reloading the keys file on SIGHUP (Unix). Call inside a tokio
    /// runtime; keep the result for as long as the gateway runs.
    pub fn start(&self) -> anyhow::Result<AuthTasks> {
        let mut tasks = Vec::new();
        if let Some(jwt) = &self.jwt {
            tasks.push(jwt.spawn_refresh());
        }
        #[cfg(unix)]
        tasks.push(api_keys::reload_on_sighup(self.keys.clone())?);
        Ok(AuthTasks(tasks))
    }

    /// The API keys, e.g. to reload them.
    pub fn api_keys(&self) -> &Arc<ApiKeys> {
        &self.keys
    }

    /// The JWT verifier, when JWT is configured.
    pub fn jwt(&self) -> Option<&Arc<JwtVerifier>> {
        self.jwt.as_ref()
    }

    /// The principal of a request's `Authorization` header. No header, or an
    /// empty one, is the anonymous principal when allowed; any other header
    /// must hold valid `Bearer` credentials, anonymous access or not.
    pub async fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Principal, AuthError> {
        let Some(value) = header else {
            return self.anonymous();
        };
        let bytes = value.as_bytes();
        if bytes.len() > MAX_HEADER_BYTES {
            return Err(AuthError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| AuthError::Malformed)?;
        let text = text.trim_matches(|c| c == ' ' || c == '\t');
        if text.is_empty() {
            return self.anonymous();
        }
        let (scheme, token) = text.split_once([' ', '\t']).unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        self.authenticate_token(token.trim_start_matches([' ', '\t']))
            .await
    }

    /// The principal of a bare token (no `Bearer`), e.g. from a WebSocket
    /// `connection_init` payload.
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_HEADER_BYTES {
            return Err(AuthError::TooLarge);
        }
        // RFC 6750's b64token is narrower; any visible ASCII is allowed so
        // that API keys of any alphabet work, but never spaces or controls.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::Malformed);
        }
        match &self.jwt {
            Some(jwt) if looks_like_jwt(token) => jwt.verify(token).await,
            _ => self.keys.authenticate(token, chrono::Utc::now()),
        }
    }

    fn anonymous(&self) -> Result<Principal, AuthError> {
        self.anonymous.clone().ok_or(AuthError::Missing)
    }
}

/// Three non-empty dot-separated base64url parts: a JWS compact JWT.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        let b64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if part.is_empty() || !part.bytes().all(b64url) {
            return false;
        }
    }
    parts == 3
}

#[cfg(test)]
mod tests;
