//! AWS Signature Version 4, recomputed on the server side exactly as AWS does
//! it, so a request signed with the wrong secret (or altered after signing)
//! is told apart from a good one.
//!
//! The signature covers: the method, the canonical URI (each path segment
//! URI-encoded once more, as for every service but S3), the canonical query
//! string (pairs sorted, re-encoded), the headers named in `SignedHeaders`
//! (lower-case names, trimmed values with inner runs of spaces collapsed,
//! repeated headers joined by commas), the payload hash
//! (`x-amz-content-sha256` if sent, else the SHA-256 of the body), and the
//! credential scope `date/region/service/aws4_request` with `X-Amz-Date`.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What the signature is computed over, as the request arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedRequest<'a> {
    pub(crate) method: &'a str,
    /// The raw (still percent-encoded) path.
    pub(crate) path: &'a str,
    /// The raw query string, without `?`.
    pub(crate) query: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

/// The scope a signature was made for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// `YYYYMMDD`.
    pub(crate) date: &'a str,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
}

impl Scope<'_> {
    fn render(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Why a signature could not be computed at all (as opposed to mismatching).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignError {
    /// A header named in `SignedHeaders` is absent or not visible ASCII.
    MissingSignedHeader(String),
    /// `X-Amz-Date` is absent or not `YYYYMMDDTHHMMSSZ`.
    BadDate,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, all
/// others `%XX` in upper case.
fn uri_encode(input: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    uri_encode(path.as_bytes(), true)
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            (
                uri_encode(k.as_bytes(), false),
                uri_encode(v.as_bytes(), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The payload hash the signer used.
pub(crate) fn payload_hash(request: &SignedRequest<'_>) -> String {
    request
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| sha256_hex(request.body), str::to_owned)
}

fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &[String],
) -> Result<String, SignError> {
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = request
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().map(canonical_header_value))
            .collect::<Result<_, _>>()
            .map_err(|_| SignError::MissingSignedHeader(name.clone()))?;
        if values.is_empty() {
            return Err(SignError::MissingSignedHeader(name.clone()));
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.path),
        canonical_query(request.query),
        headers,
        signed_headers.join(";"),
        payload_hash(request),
    ))
}

/// `X-Amz-Date`, checked for shape.
pub(crate) fn amz_date(headers: &HeaderMap) -> Result<&str, SignError> {
    let date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(SignError::BadDate)?;
    let b = date.as_bytes();
    let shaped = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if shaped {
        Ok(date)
    } else {
        Err(SignError::BadDate)
    }
}

/// The hex signature AWS computes for `request`.
pub(crate) fn signature(
    request: &SignedRequest<'_>,
    signed_headers: &[String],
    scope: &Scope<'_>,
    secret: &str,
) -> Result<String, SignError> {
    let date = amz_date(request.headers)?;
    let canonical = canonical_request(request, signed_headers)?;
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{}\n{}",
        scope.render(),
        sha256_hex(canonical.as_bytes())
    );
    let key = [scope.date, scope.region, scope.service, "aws4_request"]
        .iter()
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac(&key, part.as_bytes())
        });
    Ok(hex(&hmac(&key, string_to_sign.as_bytes())))
}

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed signature was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn vanilla_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        h.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        h
    }

    fn scope() -> Scope<'static> {
        Scope {
            date: "20150830",
            region: "us-east-1",
            service: "service",
        }
    }

    fn signed() -> Vec<String> {
        vec!["host".into(), "x-amz-date".into()]
    }

    /// The AWS SigV4 test suite's `get-vanilla` case.
    #[test]
    fn get_vanilla() {
        let headers = vanilla_headers();
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        assert_eq!(
            canonical_request(&request, &signed()).unwrap(),
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            signature(&request, &signed(), &scope(), SECRET).unwrap(),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        // Any change to what is signed changes the signature.
        for changed in [
            SignedRequest {
                method: "POST",
                ..request
            },
            SignedRequest {
                path: "/x",
                ..request
            },
            SignedRequest {
                query: "a=b",
                ..request
            },
            SignedRequest {
                body: b"x",
                ..request
            },
        ] {
            assert_ne!(
                signature(&changed, &signed(), &scope(), SECRET).unwrap(),
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            );
        }
        assert_ne!(
            signature(&request, &signed(), &scope(), "other").unwrap(),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// The test suite's `get-vanilla-query-order-key-case`:
    /// `GET /?Param2=value2&Param1=value1`.
    #[test]
    fn query_pairs_are_sorted() {
        let headers = vanilla_headers();
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &headers,
            body: b"",
        };
        assert_eq!(
            signature(&request, &signed(), &scope(), SECRET).unwrap(),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_missing_ones_refused() {
        let mut headers = vanilla_headers();
        headers.insert("my-header1", HeaderValue::from_static("  value1   a  b "));
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let names = vec!["host".into(), "my-header1".into(), "x-amz-date".into()];
        assert!(
            canonical_request(&request, &names)
                .unwrap()
                .contains("\nmy-header1:value1 a b\n")
        );
        let names = vec!["host".into(), "absent".into()];
        assert_eq!(
            signature(&request, &names, &scope(), SECRET),
            Err(SignError::MissingSignedHeader("absent".into()))
        );
        let mut undated = vanilla_headers();
        undated.remove("x-amz-date");
        let request = SignedRequest {
            headers: &undated,
            ..request
        };
        assert_eq!(
            signature(&request, &signed(), &scope(), SECRET),
            Err(SignError::BadDate)
        );
    }

    #[test]
    fn content_sha256_header_is_the_payload_hash() {
        let mut headers = vanilla_headers();
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        let request = SignedRequest {
            method: "PUT",
            path: "/a b/%2F",
            query: "",
            headers: &headers,
            body: b"ignored",
        };
        let canonical = canonical_request(&request, &signed()).unwrap();
        assert!(canonical.ends_with("\nUNSIGNED-PAYLOAD"), "{canonical}");
        assert!(canonical.starts_with("PUT\n/a%20b/%252F\n"), "{canonical}");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
