//! JWTs from an OIDC provider, verified with the provider's published keys
//! (JWKS), and their claims mapped to grants.
//!
//! Invariants:
//! - Only the configured asymmetric algorithms are accepted, and a key is
//!   used only for the algorithm family (and curve) it is: an `HS256` token
//!   "signed" with an RSA public key, an `alg: none` token, or an RSA token
//!   naming an EC key never verifies. JWKS entries of other kinds (`oct`,
//!   `OKP`, encryption keys) are ignored.
//! - The key set is fetched every `jwks_refresh_secs`, and at once when a
//!   token names an unknown `kid`, but never twice within
//!   `jwks_min_refresh_secs`; concurrent callers wait for one fetch. A failed
//!   fetch (unreachable, not 200, not a JWKS, no usable key) keeps the last
//!   good set; before the first good fetch, JWT callers get
//!   [`AuthError::KeysUnavailable`].
//! - `exp`, `nbf`, `iss`, `aud` and `sub` are required and checked, with
//!   `leeway_secs` of clock skew on the times.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use axum::body::Bytes;
use axum::http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::AuthError;
use super::principal::to_grants;
use super::principal::{Grants, Principal, PrincipalKind};
use crate::settings::JwtSettings;

/// Where the JWKS document comes from: the provider over HTTP(S) in
/// production ([`HttpJwksSource`]), a fake in tests.
#[async_trait::async_trait]
pub trait JwksSource: Send + Sync {
    /// The JWKS document's bytes, or why it could not be had.
    async fn fetch(&self) -> anyhow::Result<Bytes>;
}

/// The longest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The bound on one JWKS fetch, connection and body included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches a JWKS over HTTPS (or HTTP, which settings allow to loopback
/// only), with the hyper and rustls (aws-lc-rs) stack the AWS SDK builds.
pub struct HttpJwksSource {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    uri: Uri,
}

impl HttpJwksSource {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().context("auth.jwt.jwks_url is not a URL")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(e) => {
                // Still start: http:// to loopback works, https:// fails each
                // fetch with a certificate error that says why.
                tracing::warn!(error = %e, "no system root certificates; https JWKS fetches will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .context("TLS set-up")?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client, uri })
    }
}

#[async_trait::async_trait]
impl JwksSource for HttpJwksSource {
    async fn fetch(&self) -> anyhow::Result<Bytes> {
        let request = Request::get(self.uri.clone())
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .context("JWKS request")?;
        let fetch = async {
            let response = self
                .client
                .request(request)
                .await
                .context("JWKS endpoint unreachable")?;
            let status = response.status();
            if status != StatusCode::OK {
                anyhow::bail!("JWKS endpoint answered {status}");
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("JWKS body: {e}"))?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .context("JWKS fetch timed out")?
    }
}

/// What kind of key a JWKS entry is, to match it to an `alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
        }
    }
}

struct VerifyingKey {
    key: DecodingKey,
    kind: KeyKind,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
}

/// A fetched JWKS: signing keys by `kid`, and those without one.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyingKey>>,
    without_kid: Vec<Arc<VerifyingKey>>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the signing keys it can use.
    fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(bytes).context("not a JWKS document")?;
        let mut set = KeySet::default();
        for raw in document.keys {
            // One odd key (another kty, an encryption key) must not cost the
            // others: skip what does not parse or does not fit.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
                continue;
            };
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
            {
                continue;
            }
            let parsed = match &jwk.algorithm {
                AlgorithmParameters::RSA(p) => {
                    DecodingKey::from_rsa_components(&p.n, &p.e).map(|k| (k, KeyKind::Rsa))
                }
                AlgorithmParameters::EllipticCurve(p) => {
                    let kind = match p.curve {
                        EllipticCurve::P256 => KeyKind::P256,
                        EllipticCurve::P384 => KeyKind::P384,
                        _ => continue,
                    };
                    DecodingKey::from_ec_components(&p.x, &p.y).map(|k| (k, kind))
                }
                _ => continue,
            };
            let Ok((key, kind)) = parsed else {
                continue;
            };
            // A key for some other algorithm (RSA-OAEP, HS256, ...) is not ours.
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(a) => match signing_algorithm(a) {
                    Some(alg) => Some(alg),
                    None => continue,
                },
            };
            let key = Arc::new(VerifyingKey { key, kind, alg });
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.without_kid.push(key),
            }
        }
        if set.by_kid.is_empty() && set.without_kid.is_empty() {
            anyhow::bail!("the JWKS holds no usable signing key (RSA, or EC P-256/P-384)");
        }
        Ok(set)
    }

    /// The key for a token's `kid`; a token without one may use the only key.
    fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyingKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => match (self.by_kid.len(), self.without_kid.as_slice()) {
                (0, [only]) => Some(only.clone()),
                (1, []) => self.by_kid.values().next().cloned(),
                _ => None,
            },
        }
    }
}

/// The signing algorithm a JWK's `alg` names, if it is one we verify.
fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        _ => return None,
    })
}

/// Verifies JWTs against the provider's JWKS, and maps their claims to
/// grants. Share it as `Arc`; [`JwtVerifier::spawn_refresh`] keeps its keys
/// fresh.
pub struct JwtVerifier {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    grants_claim: String,
    claim_grants: BTreeMap<String, Grants>,
    leeway_secs: u64,
    refresh_every: Duration,
    min_refresh: Duration,
    source: Arc<dyn JwksSource>,
    /// The last good key set; `None` until a fetch succeeds.
    keys: ArcSwapOption<KeySet>,
    /// When a fetch last started. A tokio mutex, held across the fetch, so
    /// that concurrent callers with unknown `kid`s wait for one fetch
    /// rather than each starting their own.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// How the fetches went, for `/readyz?verbose`. A std mutex: held only
    /// to copy a few fields, never across an await.
    fetches: std::sync::Mutex<FetchLog>,
}

/// The outcome of the last JWKS fetches.
#[derive(Default)]
struct FetchLog {
    last_success: Option<std::time::SystemTime>,
    last_error: Option<(std::time::SystemTime, String)>,
    keys: usize,
}

impl JwtVerifier {
    /// A verifier for `settings` (validated) whose keys come from `source`.
    /// Fetches nothing yet: see [`JwtVerifier::spawn_refresh`].
    pub fn new(settings: &JwtSettings, source: Arc<dyn JwksSource>) -> Self {
        Self {
            issuer: settings.issuer.clone(),
            audiences: settings.audiences.clone(),
            algorithms: settings.parsed_algorithms(),
            grants_claim: settings.grants_claim.clone(),
            claim_grants: settings
                .claim_grants
                .iter()
                .map(|(value, grants)| (value.clone(), to_grants(grants)))
                .collect(),
            leeway_secs: settings.leeway_secs,
            refresh_every: Duration::from_secs(settings.jwks_refresh_secs),
            min_refresh: Duration::from_secs(settings.jwks_min_refresh_secs),
            source,
            keys: ArcSwapOption::empty(),
            last_fetch: tokio::sync::Mutex::new(None),
            fetches: std::sync::Mutex::default(),
        }
    }

    /// [`JwtVerifier::new`] over HTTP(S) from `settings.jwks_url`.
    pub fn from_settings(settings: &JwtSettings) -> anyhow::Result<Self> {
        let source = HttpJwksSource::new(&settings.jwks_url)?;
        Ok(Self::new(settings, Arc::new(source)))
    }

    /// Overrides the refresh intervals (tests run them in milliseconds).
    pub fn with_refresh_intervals(mut self, every: Duration, min: Duration) -> Self {
        self.refresh_every = every;
        self.min_refresh = min;
        self
    }

    /// Fetches the JWKS now and every `jwks_refresh_secs` after, until the
    /// task is aborted. Failures are logged; the last good keys stay.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let verifier = self.clone();
        tokio::spawn(async move {
            loop {
                verifier.refresh().await;
                tokio::time::sleep(verifier.refresh_every).await;
            }
        })
    }

    /// Fetches the JWKS unless a fetch started less than the minimum
    /// interval ago. Returns whether a good set was installed.
    pub async fn refresh(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return false;
        }
        *last = Some(Instant::now());
        let result = match self.source.fetch().await {
            Ok(bytes) => KeySet::parse(&bytes),
            Err(e) => Err(e),
        };
        match result {
            Ok(set) => {
                let keys = set.by_kid.len() + set.without_kid.len();
                tracing::debug!(keys, "JWKS fetched");
                let mut log = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
                log.last_success = Some(std::time::SystemTime::now());
                log.keys = keys;
                drop(log);
                self.keys.store(Some(Arc::new(set)));
                true
            }
            Err(e) => {
                let kept = self.keys.load().is_some();
                self.fetches
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .last_error = Some((std::time::SystemTime::now(), format!("{e:#}")));
                tracing::warn!(
                    error = format!("{e:#}"),
                    last_good_keys_kept = kept,
                    "JWKS fetch failed"
                );
                false
            }
        }
    }

    /// The fetcher's state as JSON (`/readyz?verbose`): whether keys are
    /// loaded, how many, and when the last fetch succeeded or failed.
    pub fn status(&self) -> serde_json::Value {
        let log = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
        let rfc3339 =
            |t: std::time::SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
        serde_json::json!({
            "ok": self.has_keys(),
            "keys": log.keys,
            "last_success": log.last_success.map(rfc3339),
            "last_error": log.last_error.as_ref().map(|(at, e)| serde_json::json!({
                "at": rfc3339(*at),
                "error": e,
            })),
        })
    }

    /// Whether a good key set has been fetched.
    pub fn has_keys(&self) -> bool {
        self.keys.load().is_some()
    }

    /// The principal a JWT stands for, after checking its signature and
    /// claims.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken("malformed"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::InvalidToken("algorithm not accepted"));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        if !key.kind.fits(header.alg) || key.alg.is_some_and(|a| a != header.alg) {
            return Err(AuthError::InvalidToken(
                "signing key does not match the algorithm",
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(self.audiences.as_slice());
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::InvalidToken("not yet valid"),
            ErrorKind::InvalidIssuer => AuthError::InvalidToken("wrong issuer"),
            ErrorKind::InvalidAudience => AuthError::InvalidToken("wrong audience"),
            ErrorKind::InvalidSignature => AuthError::InvalidToken("bad signature"),
            ErrorKind::MissingRequiredClaim(_) => {
                AuthError::InvalidToken("missing a required claim")
            }
            ErrorKind::InvalidAlgorithm => AuthError::InvalidToken("algorithm not accepted"),
            _ => AuthError::InvalidToken("malformed"),
        })?;
        let subject = data
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::InvalidToken("missing a required claim"))?;
        let principal = Principal::new(
            PrincipalKind::Jwt,
            subject,
            self.grants_of(data.claims.get(&self.grants_claim)),
        );
        // `exp` is required and was checked; a WebSocket closes at it.
        Ok(
            match data.claims.get("exp").and_then(serde_json::Value::as_u64) {
                Some(exp) => principal
                    .expiring_at(std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp)),
                None => principal,
            },
        )
    }

    /// The union of the grants of each value of the grants claim (a string
    /// or a list of strings; anything else grants nothing).
    fn grants_of(&self, claim: Option<&serde_json::Value>) -> Grants {
        let values: Vec<&str> = match claim {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_str()).collect()
            }
            _ => Vec::new(),
        };
        values
            .into_iter()
            .filter_map(|v| self.claim_grants.get(v))
            .fold(Grants::none(), |all, g| all.union(g))
    }

    /// The key for `kid`, fetching the JWKS again (within the minimum
    /// interval) when it is unknown or none was ever fetched.
    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerifyingKey>, AuthError> {
        if let Some(key) = self.keys.load().as_ref().and_then(|set| set.find(kid)) {
            return Ok(key);
        }
        self.refresh().await;
        match self.keys.load().as_ref() {
            None => Err(AuthError::KeysUnavailable),
            Some(set) => set
                .find(kid)
                .ok_or(AuthError::InvalidToken("unknown signing key")),
        }
    }
}
