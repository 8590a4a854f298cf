//! DescribeSessions `NextToken`s: opaque, signed, expiring cursors.
//!
//! A token is `base64url(payload || HMAC-SHA256(secret, payload))`. The
//! payload holds:
//! - the request [`Fingerprint`] (account, region, state, filters), so a token
//!   only continues the listing it came from;
//! - the issue time, so tokens older than the TTL are refused;
//! - a [`Cursor`]: the sort key of the last session returned (keyset paging,
//!   so sessions inserted ahead of it later do not shift the next page) and a
//!   page counter (so two consecutive empty pages get different tokens and
//!   different short-page draws).
//!
//! MaxResults is deliberately not bound: a client may change it between pages.
//! Only the emulator instance holding the secret can mint or read tokens; a
//! token from another instance fails its MAC like any forgery.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Longer strings cannot be ours; refuse before decoding them.
const MAX_TOKEN_CHARS: usize = 1024;

/// Identifies one listing: tokens are only valid for the same fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint(pub(crate) [u8; 16]);

impl Fingerprint {
    /// `filters` are `(key, raw value)` pairs; their order does not matter, as
    /// filters AND together.
    pub(crate) fn of(
        account_id: &str,
        region: &str,
        state: &str,
        filters: &[(&str, &str)],
    ) -> Self {
        let mut filters = filters.to_vec();
        filters.sort_unstable();
        let mut hash = Sha256::new();
        // Length-prefixed fields, so ("ab","c") and ("a","bc") differ.
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        field(account_id.as_bytes());
        field(region.as_bytes());
        field(state.as_bytes());
        for (key, value) in &filters {
            field(key.as_bytes());
            field(value.as_bytes());
        }
        let digest = hash.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }
}

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Cursor {
    /// Sort key of the last session returned so far; `None` before the first.
    pub(crate) after: Option<Position>,
    /// How many pages of this listing were served before the one this cursor
    /// fetches.
    pub(crate) page: u32,
}

/// A session's place in DescribeSessions order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) start_date: DateTime<Utc>,
    pub(crate) session_id: String,
}

/// Why a token was refused; each becomes an `InvalidNextToken`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("The specified NextToken is not valid.")]
    Malformed,
    #[error(
        "The specified NextToken was issued for a different request (account, region, state or filters)."
    )]
    Foreign,
    #[error("The specified NextToken has expired.")]
    Stale,
}

/// Mints and opens tokens with one secret.
pub(crate) struct TokenKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub(crate) fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; 32 bytes cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC accepts any key length")
    }

    pub(crate) fn seal(
        &self,
        fingerprint: Fingerprint,
        cursor: &Cursor,
        issued_at: DateTime<Utc>,
    ) -> String {
        let mut payload = Vec::with_capacity(64);
        payload.push(VERSION);
        payload.extend_from_slice(&issued_at.timestamp_millis().to_be_bytes());
        payload.extend_from_slice(&fingerprint.0);
        payload.extend_from_slice(&cursor.page.to_be_bytes());
        match &cursor.after {
            None => payload.push(0),
            Some(pos) => {
                payload.push(1);
                payload.extend_from_slice(&pos.start_date.timestamp().to_be_bytes());
                payload.extend_from_slice(&pos.start_date.timestamp_subsec_nanos().to_be_bytes());
                // Session ids are at most 96 bytes by the model; clamp anyway
                // so an oversized id inserted by a test cannot wrap the length.
                let id = pos.session_id.as_bytes();
                let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
                payload.extend_from_slice(&len.to_be_bytes());
                payload.extend_from_slice(&id[..usize::from(len)]);
            }
        }
        let mut mac = self.mac();
        mac.update(&payload);
        payload.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// Checks a token's signature, then that it belongs to `fingerprint`, then
    /// its age, and returns its cursor.
    pub(crate) fn open(
        &self,
        token: &str,
        fingerprint: Fingerprint,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Cursor, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed)?;
        let split = bytes
            .len()
            .checked_sub(MAC_LEN)
            .ok_or(TokenError::Malformed)?;
        let (payload, tag) = bytes.split_at(split);
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_slice(tag).map_err(|_| TokenError::Malformed)?;

        // Signed by us, so the layout is ours; still parse defensively.
        let mut r = Reader(payload);
        if r.u8()? != VERSION {
            return Err(TokenError::Malformed);
        }
        let issued_ms = i64::from_be_bytes(r.array()?);
        let found = Fingerprint(r.array()?);
        let page = u32::from_be_bytes(r.array()?);
        let after = match r.u8()? {
            0 => None,
            1 => {
                let secs = i64::from_be_bytes(r.array()?);
                let nanos = u32::from_be_bytes(r.array()?);
                let len = u16::from_be_bytes(r.array()?);
                let id = r.take(usize::from(len))?;
                Some(Position {
                    start_date: DateTime::from_timestamp(secs, nanos)
                        .ok_or(TokenError::Malformed)?,
                    session_id: String::from_utf8(id.to_vec())
                        .map_err(|_| TokenError::Malformed)?,
                })
            }
            _ => return Err(TokenError::Malformed),
        };
        if !r.0.is_empty() {
            return Err(TokenError::Malformed);
        }

        if found != fingerprint {
            return Err(TokenError::Foreign);
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let age_ms = now.timestamp_millis().saturating_sub(issued_ms);
        if age_ms > ttl_ms {
            return Err(TokenError::Stale);
        }
        Ok(Cursor { after, page })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_724_925_600 + secs, 0).unwrap()
    }

    fn fp() -> Fingerprint {
        Fingerprint::of("111122223333", "us-east-1", "History", &[("Owner", "x")])
    }

    fn cursor() -> Cursor {
        Cursor {
            after: Some(Position {
                start_date: Utc.timestamp_opt(1_724_000_000, 123_000_000).unwrap(),
                session_id: "alice-0123456789abcdef0".into(),
            }),
            page: 7,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn round_trips() {
        let key = TokenKey::new([1; 32]);
        let token = key.seal(fp(), &cursor(), t(0));
        assert_eq!(key.open(&token, fp(), t(10), HOUR), Ok(cursor()));
        let first = Cursor::default();
        let token = key.seal(fp(), &first, t(0));
        assert_eq!(key.open(&token, fp(), t(0), HOUR), Ok(first));
    }

    #[test]
    fn is_not_a_readable_offset() {
        let token = TokenKey::new([1; 32]).seal(fp(), &cursor(), t(0));
        assert!(!token.contains("alice"));
        assert!(token.parse::<u64>().is_err());
    }

    #[test]
    fn refuses_other_secret() {
        let token = TokenKey::new([1; 32]).seal(fp(), &cursor(), t(0));
        let other = TokenKey::new([2; 32]);
        assert_eq!(
            other.open(&token, fp(), t(0), HOUR),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn refuses_every_single_bit_flip() {
        let key = TokenKey::new([1; 32]);
        let token = key.seal(fp(), &cursor(), t(0));
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[i] ^= 1 << bit;
                let tampered = URL_SAFE_NO_PAD.encode(tampered);
                assert_eq!(
                    key.open(&tampered, fp(), t(0), HOUR),
                    Err(TokenError::Malformed),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn refuses_garbage() {
        let key = TokenKey::new([1; 32]);
        for garbage in [
            "",
            "x",
            "!!!!",
            "20",
            &"A".repeat(2000),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(
                key.open(garbage, fp(), t(0), HOUR),
                Err(TokenError::Malformed),
                "{garbage:?}"
            );
        }
        let token = key.seal(fp(), &cursor(), t(0));
        assert_eq!(
            key.open(&token[..token.len() - 4], fp(), t(0), HOUR),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn refuses_foreign_listing() {
        let key = TokenKey::new([1; 32]);
        let token = key.seal(fp(), &cursor(), t(0));
        let others = [
            Fingerprint::of("444455556666", "us-east-1", "History", &[("Owner", "x")]),
            Fingerprint::of("111122223333", "eu-west-1", "History", &[("Owner", "x")]),
            Fingerprint::of("111122223333", "us-east-1", "Active", &[("Owner", "x")]),
            Fingerprint::of("111122223333", "us-east-1", "History", &[("Owner", "y")]),
            Fingerprint::of("111122223333", "us-east-1", "History", &[]),
            Fingerprint::of(
                "111122223333",
                "us-east-1",
                "History",
                &[("Owner", "x"), ("Target", "i-1")],
            ),
        ];
        for other in others {
            assert_eq!(
                key.open(&token, other, t(0), HOUR),
                Err(TokenError::Foreign)
            );
        }
    }

    #[test]
    fn filter_order_does_not_matter_but_boundaries_do() {
        let a = Fingerprint::of("1", "r", "Active", &[("Owner", "x"), ("Target", "y")]);
        let b = Fingerprint::of("1", "r", "Active", &[("Target", "y"), ("Owner", "x")]);
        assert_eq!(a, b);
        let c = Fingerprint::of("1", "r", "Active", &[("Owner", "xT"), ("arget", "y")]);
        assert_ne!(a, c);
    }

    #[test]
    fn expires_after_ttl() {
        let key = TokenKey::new([1; 32]);
        let token = key.seal(fp(), &cursor(), t(0));
        assert!(key.open(&token, fp(), t(3600), HOUR).is_ok());
        assert_eq!(
            key.open(&token, fp(), t(3601), HOUR),
            Err(TokenError::Stale)
        );
    }
}
