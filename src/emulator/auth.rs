//! Who is calling: the SigV4 `Authorization` header names an access key id,
//! which the emulator's static credentials map to an account, and a credential
//! scope whose region picks the data to read.
//!
//! Signatures are parsed but not verified yet. Verification will go in
//! [`Credentials::authenticate`]: the matching secret is kept with each
//! credential for that, and the request's method, path, headers and body are
//! what it will need beside the parsed [`Authorization`].

use std::collections::HashMap;
use std::fmt;

use axum::http::{HeaderMap, header};

use super::wire::AwsError;

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
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, AwsError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(AwsError::missing_authentication_token)?;
        let value = value
            .to_str()
            .map_err(|_| AwsError::incomplete_signature("Authorization header is not ASCII."))?;
        Self::parse(value)
    }

    pub(crate) fn parse(value: &str) -> Result<Self, AwsError> {
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| {
                AwsError::incomplete_signature(format!(
                    "Authorization header requires the {ALGORITHM} algorithm."
                ))
            })?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let Some((name, value)) = part.trim().split_once('=') else {
                return Err(AwsError::incomplete_signature(format!(
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
            AwsError::incomplete_signature(format!(
                "Authorization header requires '{what}' parameter. Authorization={value}"
            ))
        };
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;

        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, terminator] = scope[..] else {
            return Err(AwsError::incomplete_signature(format!(
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
            return Err(AwsError::incomplete_signature(format!(
                "Credential should be scoped with AKID/YYYYMMDD/region/service/aws4_request, not '{credential}'."
            )));
        }
        let is_hex = !signature.is_empty() && signature.bytes().all(|b| b.is_ascii_hexdigit());
        if signed_headers.is_empty() || !is_hex {
            return Err(AwsError::incomplete_signature(
                "Authorization header has an empty SignedHeaders or a non-hex Signature.",
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

/// The access keys the emulator accepts.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    by_access_key: HashMap<String, StaticCredential>,
}

impl Credentials {
    pub(crate) fn new(credentials: Vec<StaticCredential>) -> Self {
        Self {
            by_access_key: credentials
                .into_iter()
                .map(|c| (c.access_key_id.clone(), c))
                .collect(),
        }
    }

    /// Resolves the caller of a request to `service`. Signature verification
    /// slots in here, once the credential is found.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        service: &str,
    ) -> Result<Caller, AwsError> {
        let auth = Authorization::from_headers(headers)?;
        if auth.service != service {
            return Err(AwsError::invalid_signature(format!(
                "Credential should be scoped to correct service: '{service}'."
            )));
        }
        let credential = self
            .by_access_key
            .get(&auth.access_key_id)
            .ok_or_else(AwsError::unrecognized_client)?;
        Ok(Caller {
            account_id: credential.account_id.clone(),
            region: auth.region,
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
            assert_eq!(err.code, "IncompleteSignatureException", "{bad:?}");
        }
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn maps_access_key_to_account_and_scope_to_region() {
        let creds = Credentials::new(vec![StaticCredential::new(
            "AKIAIOSFODNN7EXAMPLE",
            "s",
            "111122223333",
        )]);
        let caller = creds.authenticate(&headers(GOOD), "ssm").unwrap();
        assert_eq!(
            caller,
            Caller {
                account_id: "111122223333".into(),
                region: "eu-west-1".into()
            }
        );
        let unknown = GOOD.replace("AKIAIOSFODNN7EXAMPLE", "AKIAUNKNOWN");
        assert_eq!(
            creds
                .authenticate(&headers(&unknown), "ssm")
                .unwrap_err()
                .code,
            "UnrecognizedClientException"
        );
        assert_eq!(
            creds
                .authenticate(&HeaderMap::new(), "ssm")
                .unwrap_err()
                .code,
            "MissingAuthenticationTokenException"
        );
        assert_eq!(
            creds.authenticate(&headers(GOOD), "sts").unwrap_err().code,
            "InvalidSignatureException"
        );
    }

    #[test]
    fn debug_hides_secret() {
        let c = StaticCredential::new("AKID", "very-secret", "1");
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
