//! Who is calling, and proof of it: the SigV4 `Authorization` header names
//! an access key id, which maps to an account (a configured
//! [`StaticCredential`], or temporary credentials the emulator's STS issued),
//! and a credential scope whose region picks the data to read. The signature
//! is recomputed with the key's secret ([`super::sigv4`]) and must match;
//! temporary credentials must also come with their session token
//! (`X-Amz-Security-Token`) and be unexpired.
//!
//! Failures are protocol-neutral [`AuthError`]s: SSM (AWS JSON) and STS (AWS
//! Query) name the same failure differently, see [`AuthError::json`] and
//! [`AuthError::query`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use chrono::{DateTime, Utc};

use super::sigv4::{self, Scope, SignError, SignedRequest};
use super::wire::{AwsError, QueryError};

/// A long-term access key the emulator accepts, and the account it acts in.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: String,
}

impl StaticCredential {
    pub fn new(access_key_id: &str, secret_access_key: &str, account_id: &str) -> Self {
        Self {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            account_id: account_id.to_owned(),
        }
    }
}

/// Never prints the secret.
impl fmt::Debug for StaticCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// An authenticated caller: whose data a request reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) account_id: String,
    pub(crate) region: String,
}

/// Who signed a request, as `GetCallerIdentity` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) caller: Caller,
    /// `arn:aws:iam::<account>:root` for a static key,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>` for issued ones.
    pub(crate) arn: String,
    /// The account id for a static key, `<role id>:<session>` for issued ones.
    pub(crate) user_id: String,
}

/// Why a request was not authenticated, whatever its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that does not parse, or a missing date.
    Incomplete(String),
    /// The signature does not match, or was made for another service or day.
    Signature(String),
    /// Unknown access key, or a session token missing or not the one issued.
    UnknownKey,
    /// Temporary credentials past their expiration.
    Expired,
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. \
Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
const EXPIRED_TOKEN: &str = "The security token included in the request is expired";

impl AuthError {
    /// As SSM (AWS JSON 1.1) answers it.
    pub(crate) fn json(self) -> AwsError {
        match self {
            Self::Missing => AwsError::missing_authentication_token(),
            Self::Incomplete(m) => AwsError::incomplete_signature(m),
            Self::Signature(m) => AwsError::invalid_signature(m),
            Self::UnknownKey => AwsError::unrecognized_client(),
            Self::Expired => AwsError::expired_token(EXPIRED_TOKEN),
        }
    }

    /// As STS (AWS Query) answers it.
    pub(crate) fn query(self) -> QueryError {
        let (status, code, message) = match self {
            Self::Missing => (
                StatusCode::FORBIDDEN,
                "MissingAuthenticationToken",
                "Request is missing Authentication Token".to_owned(),
            ),
            Self::Incomplete(m) => (StatusCode::BAD_REQUEST, "IncompleteSignature", m),
            Self::Signature(m) => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", m),
            Self::UnknownKey => (
                StatusCode::FORBIDDEN,
                "InvalidClientTokenId",
                INVALID_TOKEN.to_owned(),
            ),
            Self::Expired => (
                StatusCode::BAD_REQUEST,
                "ExpiredToken",
                EXPIRED_TOKEN.to_owned(),
            ),
        };
        QueryError::new(status, code, message)
    }
}

impl From<SignError> for AuthError {
    fn from(e: SignError) -> Self {
        match e {
            SignError::MissingSignedHeader(name) => {
                Self::Signature(format!("'{name}' is in SignedHeaders but not in the request."))
            }
            SignError::BadDate => Self::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                    .to_owned(),
            ),
        }
    }
}

/// The parts of `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=..., Signature=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub(crate) access_key_id: String,
    pub(crate) date: String,
    pub(crate) region: String,
    pub(crate) service: String,
    pub(crate) signed_headers: Vec<String>,
    pub(crate) signature: String,
}

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

impl Authorization {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, AuthError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let value = value
            .to_str()
            .map_err(|_| AuthError::Incomplete("Authorization header is not ASCII.".into()))?;
        Self::parse(value)
    }

    pub(crate) fn parse(value: &str) -> Result<Self, AuthError> {
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| {
                AuthError::Incomplete(format!(
                    "Authorization header requires the {ALGORITHM} algorithm."
                ))
            })?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let Some((name, value)) = part.trim().split_once('=') else {
                return Err(AuthError::Incomplete(format!(
                    "Authorization header element '{}' is not a name=value pair.",
                    part.trim()
                )));
            };
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let missing = |what: &str| {
            AuthError::Incomplete(format!(
                "Authorization header requires '{what}' parameter. Authorization={value}"
            ))
        };
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;

        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, terminator] = scope[..] else {
            return Err(AuthError::Incomplete(format!(
                "Credential should be scoped to a valid region, not '{credential}'."
            )));
        };
        let valid_date = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
        if access_key_id.is_empty()
            || !valid_date
            || region.is_empty()
            || service.is_empty()
            || terminator != "aws4_request"
        {
            return Err(AuthError::Incomplete(format!(
                "Credential should be scoped with AKID/YYYYMMDD/region/service/aws4_request, not '{credential}'."
            )));
        }
        let is_hex = !signature.is_empty() && signature.bytes().all(|b| b.is_ascii_hexdigit());
        if signed_headers.is_empty() || !is_hex {
            return Err(AuthError::Incomplete(
                "Authorization header has an empty SignedHeaders or a non-hex Signature.".into(),
            ));
        }
        Ok(Self {
            access_key_id: access_key_id.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers: signed_headers.split(';').map(str::to_owned).collect(),
            signature: signature.to_owned(),
        })
    }
}

/// Temporary credentials issued by the emulator's STS `AssumeRole`.
#[derive(Clone)]
pub(crate) struct IssuedCredential {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: String,
    pub(crate) expiration: DateTime<Utc>,
    /// The role's account: requests signed with these read its data.
    pub(crate) account_id: String,
    pub(crate) arn: String,
    pub(crate) user_id: String,
}

/// Never prints the secret nor the token.
impl fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("account_id", &self.account_id)
            .field("arn", &self.arn)
            .finish_non_exhaustive()
    }
}

/// Issued credentials are forgotten this long after they expire (until then
/// they are answered `ExpiredToken`, not "unknown"), so the map stays bounded
/// by the AssumeRole rate.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What a lookup needs of either kind of credential.
struct Known {
    secret: String,
    session_token: Option<String>,
    expiration: Option<DateTime<Utc>>,
    account_id: String,
    arn: String,
    user_id: String,
}

/// The access keys the emulator accepts: configured ones and issued ones.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    by_access_key: HashMap<String, StaticCredential>,
    /// A std lock: nothing awaits while holding it.
    issued: RwLock<HashMap<String, IssuedCredential>>,
}

/// `len` characters drawn from `alphabet`.
fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(alphabet[usize::from(rand::random::<u16>()) % alphabet.len()]))
        .collect()
}

const UPPER_B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Credentials {
    pub(crate) fn new(credentials: Vec<StaticCredential>) -> Self {
        Self {
            by_access_key: credentials
                .into_iter()
                .map(|c| (c.access_key_id.clone(), c))
                .collect(),
            issued: RwLock::default(),
        }
    }

    /// Issues temporary credentials for `account_id` valid for `ttl` from
    /// `now`: an `ASIA...` key id, a random secret and session token.
    pub(crate) fn issue(
        &self,
        account_id: &str,
        arn: String,
        user_id: String,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> IssuedCredential {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let credential = IssuedCredential {
            access_key_id: format!("ASIA{}", random_string(UPPER_B32, 16)),
            secret_access_key: random_string(SECRET_CHARS, 40),
            session_token: format!("IQoJemulator{}", random_string(SECRET_CHARS, 180)),
            expiration: now
                .checked_add_signed(ttl)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            account_id: account_id.to_owned(),
            arn,
            user_id,
        };
        let forget = chrono::Duration::from_std(FORGET_AFTER).unwrap_or(chrono::Duration::MAX);
        let mut issued = self.issued.write().unwrap_or_else(PoisonError::into_inner);
        issued.retain(|_, c| c.expiration + forget > now);
        issued.insert(credential.access_key_id.clone(), credential.clone());
        credential
    }

    fn lookup(&self, access_key_id: &str) -> Option<Known> {
        if let Some(c) = self.by_access_key.get(access_key_id) {
            return Some(Known {
                secret: c.secret_access_key.clone(),
                session_token: None,
                expiration: None,
                account_id: c.account_id.clone(),
                arn: format!("arn:aws:iam::{}:root", c.account_id),
                user_id: c.account_id.clone(),
            });
        }
        let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
        issued.get(access_key_id).map(|c| Known {
            secret: c.secret_access_key.clone(),
            session_token: Some(c.session_token.clone()),
            expiration: Some(c.expiration),
            account_id: c.account_id.clone(),
            arn: c.arn.clone(),
            user_id: c.user_id.clone(),
        })
    }

    /// Resolves and verifies the signer of a request to `service`: the key
    /// must be known, its session token (if temporary) sent, the signature
    /// match, and temporary credentials be unexpired at `now`.
    pub(crate) fn authenticate(
        &self,
        request: &SignedRequest<'_>,
        service: &str,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        let auth = Authorization::from_headers(request.headers)?;
        if auth.service != service {
            return Err(AuthError::Signature(format!(
                "Credential should be scoped to correct service: '{service}'."
            )));
        }
        let known = self
            .lookup(&auth.access_key_id)
            .ok_or(AuthError::UnknownKey)?;
        if let Some(token) = &known.session_token {
            let sent = request
                .headers
                .get("x-amz-security-token")
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !sigv4::constant_time_eq(sent, token.as_bytes()) {
                return Err(AuthError::UnknownKey);
            }
        }
        let date = sigv4::amz_date(request.headers)?;
        if !date.starts_with(&auth.date) {
            return Err(AuthError::Signature(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
                auth.date,
                &date[..8]
            )));
        }
        let scope = Scope {
            date: &auth.date,
            region: &auth.region,
            service,
        };
        let expected = sigv4::signature(request, &auth.signed_headers, &scope, &known.secret)?;
        let sent = auth.signature.to_ascii_lowercase();
        if !sigv4::constant_time_eq(expected.as_bytes(), sent.as_bytes()) {
            return Err(AuthError::Signature(MISMATCH.to_owned()));
        }
        if known.expiration.is_some_and(|expiry| expiry <= now) {
            return Err(AuthError::Expired);
        }
        Ok(Principal {
            caller: Caller {
                account_id: known.account_id,
                region: auth.region,
            },
            arn: known.arn,
            user_id: known.user_id,
        })
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const GOOD: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240829/eu-west-1/ssm/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0123abcd";

    #[test]
    fn parses_sdk_header() {
        let auth = Authorization::parse(GOOD).unwrap();
        assert_eq!(auth.access_key_id, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(auth.date, "20240829");
        assert_eq!(auth.region, "eu-west-1");
        assert_eq!(auth.service, "ssm");
        assert_eq!(
            auth.signed_headers,
            ["content-type", "host", "x-amz-date", "x-amz-target"]
        );
        assert_eq!(auth.signature, "0123abcd");
    }

    #[test]
    fn rejects_garbled_headers() {
        for bad in [
            "",
            "Bearer abc",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256X Credential=A/20240829/r/ssm/aws4_request, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=A/20240829/r/ssm/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=A/20240829/r/ssm, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=A/2024/r/ssm/aws4_request, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=/20240829/r/ssm/aws4_request, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=A/20240829//ssm/aws4_request, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=A/20240829/r/ssm/aws4_request, SignedHeaders=host, Signature=xyz",
            "AWS4-HMAC-SHA256 Credential=A/20240829/r/ssm/aws4_request, SignedHeaders, Signature=ab",
        ] {
            let err = Authorization::parse(bad).unwrap_err();
            assert!(matches!(err, AuthError::Incomplete(_)), "{bad:?}");
            assert_eq!(err.json().code, "IncompleteSignatureException", "{bad:?}");
        }
    }

    const BODY: &[u8] = b"{\"State\":\"Active\"}";

    fn now() -> DateTime<Utc> {
        "2024-08-29T10:00:00Z".parse().unwrap()
    }

    /// Headers for a request signed as `key`/`secret` in eu-west-1 (with a
    /// session token if given).
    fn signed(key: &str, secret: &str, service: &str, token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:4566"));
        h.insert("x-amz-date", HeaderValue::from_static("20240829T100000Z"));
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("AmazonSSM.DescribeSessions"),
        );
        let mut names = vec!["host", "x-amz-date", "x-amz-target"];
        if let Some(token) = token {
            h.insert(
                "x-amz-security-token",
                HeaderValue::from_str(token).unwrap(),
            );
            names.push("x-amz-security-token");
        }
        let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        let scope = Scope {
            date: "20240829",
            region: "eu-west-1",
            service,
        };
        let sig = sigv4::signature(&request(&h), &names, &scope, secret).unwrap();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={key}/20240829/eu-west-1/{service}/aws4_request, SignedHeaders={}, Signature={sig}",
            names.join(";")
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
        h
    }

    fn request(headers: &HeaderMap) -> SignedRequest<'_> {
        SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body: BODY,
        }
    }

    fn creds() -> Credentials {
        Credentials::new(vec![StaticCredential::new(
            "AKIAIOSFODNN7EXAMPLE",
            "s3cret",
            "111122223333",
        )])
    }

    fn code(result: Result<Principal, AuthError>) -> &'static str {
        result.unwrap_err().json().code
    }

    #[test]
    fn maps_access_key_to_account_and_scope_to_region() {
        let creds = creds();
        let h = signed("AKIAIOSFODNN7EXAMPLE", "s3cret", "ssm", None);
        let principal = creds.authenticate(&request(&h), "ssm", now()).unwrap();
        assert_eq!(
            principal.caller,
            Caller {
                account_id: "111122223333".into(),
                region: "eu-west-1".into()
            }
        );
        assert_eq!(principal.arn, "arn:aws:iam::111122223333:root");
        let h = signed("AKIAUNKNOWN", "s3cret", "ssm", None);
        assert_eq!(
            code(creds.authenticate(&request(&h), "ssm", now())),
            "UnrecognizedClientException"
        );
        let none = HeaderMap::new();
        assert_eq!(
            code(creds.authenticate(&request(&none), "ssm", now())),
            "MissingAuthenticationTokenException"
        );
        let h = signed("AKIAIOSFODNN7EXAMPLE", "s3cret", "ssm", None);
        assert_eq!(
            creds
                .authenticate(&request(&h), "sts", now())
                .unwrap_err()
                .query()
                .code,
            "SignatureDoesNotMatch"
        );
    }

    #[test]
    fn wrong_secret_or_altered_request_is_refused() {
        let creds = creds();
        let h = signed("AKIAIOSFODNN7EXAMPLE", "wrong", "ssm", None);
        let err = creds.authenticate(&request(&h), "ssm", now()).unwrap_err();
        assert_eq!(err, AuthError::Signature(MISMATCH.into()));
        let json = err.clone().json();
        assert_eq!(
            (json.status, json.code),
            (StatusCode::FORBIDDEN, "InvalidSignatureException")
        );
        assert!(
            json.message
                .starts_with("The request signature we calculated")
        );
        let query = err.query();
        assert_eq!(
            (query.status, query.code),
            (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
        );

        let h = signed("AKIAIOSFODNN7EXAMPLE", "s3cret", "ssm", None);
        let altered = SignedRequest {
            body: b"{\"State\":\"History\"}",
            ..request(&h)
        };
        assert_eq!(
            code(creds.authenticate(&altered, "ssm", now())),
            "InvalidSignatureException"
        );
        let mut redated = h.clone();
        redated.insert("x-amz-date", HeaderValue::from_static("20240830T100000Z"));
        assert_eq!(
            code(creds.authenticate(&request(&redated), "ssm", now())),
            "InvalidSignatureException"
        );
    }

    #[test]
    fn issued_credentials_need_their_token_and_expire() {
        let creds = creds();
        let ttl = Duration::from_secs(900);
        let issued = creds.issue(
            "444455556666",
            "arn:aws:sts::444455556666:assumed-role/R/s".into(),
            "AROAEXAMPLE:s".into(),
            ttl,
            now(),
        );
        assert!(issued.access_key_id.starts_with("ASIA"));
        assert_eq!(issued.access_key_id.len(), 20);
        assert!(!format!("{issued:?}").contains(&issued.secret_access_key));
        let key = issued.access_key_id.as_str();
        let secret = issued.secret_access_key.as_str();

        let h = signed(key, secret, "ssm", Some(&issued.session_token));
        let principal = creds.authenticate(&request(&h), "ssm", now()).unwrap();
        assert_eq!(principal.caller.account_id, "444455556666");
        assert_eq!(principal.user_id, "AROAEXAMPLE:s");

        for token in [None, Some("IQoJwrong")] {
            let h = signed(key, secret, "ssm", token);
            let err = creds.authenticate(&request(&h), "ssm", now()).unwrap_err();
            assert_eq!(err, AuthError::UnknownKey, "{token:?}");
            assert_eq!(err.query().code, "InvalidClientTokenId");
        }

        let h = signed(key, secret, "ssm", Some(&issued.session_token));
        let later = now() + chrono::Duration::seconds(900);
        let err = creds.authenticate(&request(&h), "ssm", later).unwrap_err();
        assert_eq!(err.clone().json().code, "ExpiredTokenException");
        assert_eq!(err.query().code, "ExpiredToken");
        // Issuing again an hour after expiry forgets the old key.
        let much_later = later + chrono::Duration::seconds(3601);
        creds.issue("1", "a".into(), "u".into(), ttl, much_later);
        assert_eq!(
            code(creds.authenticate(&request(&h), "ssm", much_later)),
            "UnrecognizedClientException"
        );
    }

    #[test]
    fn debug_hides_secret() {
        let c = StaticCredential::new("AKID", "very-secret", "1");
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
