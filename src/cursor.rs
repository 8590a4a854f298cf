//! Opaque, versioned, tamper-evident pagination cursors.
//!
//! A Relay cursor has to let *any* gateway replica resume a connection without
//! server-side state, so everything needed to resume travels inside it: for
//! every upstream source the connection reads (one (account, region) today, up
//! to ~50 merged into one connection later) a [`SourcePosition`], plus a
//! [`Fingerprint`] of the query arguments the cursor was issued for.
//! [`CursorCodec`] turns a [`Cursor`] into a string and back, and is the only
//! way a client-supplied string becomes a `Cursor`.
//!
//! # Wire format (versions 1, 2 and 3)
//!
//! The string is base64url without padding (safe in URLs and JSON unescaped)
//! of these bytes:
//!
//! ```text
//! version      u8 = 3 (or 2, or 1)
//! fingerprint  16 bytes
//! count        varint, number of sources (<= MAX_SOURCES)
//! count times:
//!   tag        u8: 0 = Start, 1 = InPage, 2 = Exhausted
//!   InPage only:
//!     token    varint: 0 = None, n + 1 = Some(n bytes of UTF-8), then the n bytes
//!     page_size u8, 1..=200
//!     skip     varint
//!     last     version 3: u64 little-endian, the id hash of the last id (0: none)
//!              versions 1, 2: varint n, then n bytes of UTF-8 (n = 0: none)
//! mac          version 3: first 16 bytes of BLAKE3-keyed(key3, everything above)
//!              version 2: first 16 bytes of BLAKE3-keyed(key2, DOMAIN || everything above)
//!              version 1: first 16 bytes of HMAC-SHA256(key, DOMAIN || everything above)
//! ```
//!
//! The id hash is 64-bit FNV-1a of the session id's UTF-8 bytes
//! ([`id_hash`]); it only has to tell apart the sessions of one upstream
//! page (at most 200), where a collision has a chance of about 2^-57.
//!
//! `key2` and `key3` are derived from the configured key with BLAKE3's key
//! derivation, each under its own context string, so no two versions' MACs
//! share a key (and version 3 needs no `DOMAIN`: its key is for cursor tags
//! only). Version 3 is written by default: a page of 50 cursors over six
//! sources is hashed and encoded 51 times, and version 3's cursors are
//! about half as long as version 2's (a 64-bit hash for each source's last
//! session id instead of the id), so half as many bytes are hashed, encoded
//! and sent. Version 2 replaced HMAC-SHA256 (a third of a page's
//! instructions) with BLAKE3. All three are read, so cursors minted before
//! an upgrade keep working after it; `cursor_version = 1` or `2` keeps
//! writing that version while replicas that read only it still serve (see
//! [`CursorCodec::writing`]). The version byte picks the MAC to verify, and
//! is itself under that MAC.
//!
//! Varints are unsigned LEB128 of a `u32`: at most 5 bytes, minimally encoded
//! (no trailing `0x80 0x00`), and a fifth byte may carry only the top 4 bits.
//! With the varint and base64 rules the encoding is canonical: one cursor has
//! exactly one string, and a decoded cursor re-encodes to the string it came
//! from. `DOMAIN` is a fixed label, not on the wire, so that a key ever reused
//! for another MAC cannot make one of its tags pass as a cursor's.
//!
//! # Invariants
//!
//! - Decoding never panics, whatever the input: every read is bounds-checked
//!   and every failure is a [`CursorError`]. The input length is checked
//!   before any other work, so an oversized argument costs nothing.
//! - Nothing in a cursor is interpreted until its MAC has been verified (in
//!   constant time), so a client can neither forge a position nor feed the
//!   parser bytes the gateway did not write. The version byte is under the
//!   MAC too, so a version cannot be swapped under a valid tag.
//! - [`CursorCodec::encode`] refuses (rather than emits) anything
//!   [`CursorCodec::decode`] would reject, so every string it returns decodes
//!   back to the same cursor under the same key and arguments.
//!
//! # Why a 128-bit tag
//!
//! Forging a cursor means guessing a tag, and every guess has to be sent to a
//! gateway (there is no offline check without the key): a 2^-128 chance per
//! request is far beyond reach. Truncating HMAC-SHA256 to half its output is
//! the usual, analysed practice (RFC 2104 §5; NIST SP 800-107), and it saves
//! about 21 characters on every edge of every page.
//!
//! # Why the fingerprint
//!
//! A position means something only in the list it was taken from: the
//! upstream `NextToken` was issued for particular filters, and "skip 3 after
//! session X" is about one ordering. Replaying a cursor with other arguments
//! (another state, filter or set of sources) would silently return the wrong
//! page, or an upstream error about the token. The fingerprint, under the MAC,
//! binds a cursor to its arguments, and the source count to the shape of the
//! fan-out; decode reports a mismatch as [`CursorError::WrongArguments`].
//!
//! # Integrity, not confidentiality
//!
//! Cursors are signed, NOT encrypted: whoever holds one can base64-decode it
//! and read the upstream tokens (and, in versions 1 and 2, the last session
//! id of each source). That is acceptable: the holder was already shown that
//! session (the cursor belongs to an edge it received), and an SSM `NextToken` is an opaque value
//! AWS hands to its callers, worth nothing without AWS credentials. Cursors do
//! not expire on their own; they stop working when the key changes (every
//! cursor then fails with [`CursorError::BadSignature`]) or upstream stops
//! accepting the token inside.
//!
//! # Size bound
//!
//! Header 1 + 16 + 1 (count < 128) bytes, MAC 16 bytes. Per source at most
//! 1 (tag) for `Start`/`Exhausted`, and for `InPage` with a token of `t` bytes
//! 1 (tag) + 2 (token length, `t` < 16,383) + `t` + 1 (page size) + 5 (skip) +
//! 1 + 96 (versions 1 and 2: a session id is at most 96 bytes; version 3
//! writes 8) = at most `t` + 106 bytes.
//! Fifty sources each with a 1,000-byte token therefore take at most
//! 18 + 50 × 1,106 + 16 = 55,334 bytes, 73,779 characters of base64.
//! [`MAX_CURSOR_LEN`] is 81,920 characters (61,440 bytes): that case with about
//! 10% to spare, while SSM tokens are typically a few hundred characters, and
//! one source may carry a token of up to [`MAX_TOKEN_LEN`]. Whatever exceeds
//! the bound is refused by `encode` with [`CursorError::TooLarge`].

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Longest cursor string accepted or produced, in characters (see the module
/// doc, "Size bound"). Longer input is rejected before it is even decoded.
pub const MAX_CURSOR_LEN: usize = 80 * 1024;

/// Most sources one cursor may carry (the fan-out is planned for ~50).
pub const MAX_SOURCES: usize = 64;

/// Longest upstream token, in bytes, one source position may carry. Far above
/// real SSM tokens; the overall [`MAX_CURSOR_LEN`] is the binding limit when
/// many sources carry long tokens.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Longest `last_id`, in bytes: an SSM `SessionId` is at most 96 characters.
pub const MAX_ID_LEN: usize = crate::model::SessionId::MAX_LEN;

/// Valid `page_size` values: what SSM `DescribeSessions` accepts as MaxResults.
pub const PAGE_SIZE_RANGE: std::ops::RangeInclusive<u8> = 1..=crate::model::MAX_PAGE_SIZE;

/// Shortest signing key accepted from settings: HMAC-SHA256 wants a key as
/// long as its output.
pub const MIN_KEY_LEN: usize = 32;

/// The wire version written by default: BLAKE3, last ids as hashes.
const VERSION: u8 = 3;
/// The second wire version (BLAKE3, last ids in full), still read, and
/// written on demand.
const VERSION_2: u8 = 2;
/// The first wire version (HMAC-SHA256), still read, and written on demand.
const VERSION_HMAC: u8 = 1;
/// BLAKE3 key-derivation context of the version 2 key.
const KEY2_CONTEXT: &str = "ssm-session-gateway 2026-11-28 cursor tag v2";
/// BLAKE3 key-derivation context of the version 3 key.
const KEY3_CONTEXT: &str = "ssm-session-gateway 2026-11-28 cursor tag v3";
/// Length of the truncated HMAC-SHA256 tag at the end of every cursor.
const TAG_LEN: usize = 16;
const FINGERPRINT_LEN: usize = 16;
/// Shortest well-formed cursor: version, fingerprint, a one-byte count, tag.
const MIN_RAW_LEN: usize = 1 + FINGERPRINT_LEN + 1 + TAG_LEN;
/// A `u32` takes at most 5 LEB128 bytes.
const MAX_VARINT_LEN: usize = 5;
/// Prefixed to the MAC input (not sent) to keep cursor tags apart from any
/// other use of the same key.
const DOMAIN: &[u8] = b"ssm-session-gateway/cursor\0";

const TAG_START: u8 = 0;
const TAG_IN_PAGE: u8 = 1;
const TAG_EXHAUSTED: u8 = 2;

/// 16-byte digest of the canonical query arguments (state, filters,
/// sources...). Computed by the caller with a [`FingerprintBuilder`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

#[cfg(test)]
impl Fingerprint {
    /// The fingerprint of `parts`, each a part of [`FingerprintBuilder`].
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut builder = FingerprintBuilder::default();
        for part in parts {
            builder.part(&[part]);
        }
        builder.finish()
    }
}

/// Builds a [`Fingerprint`] part by part: SHA-256 over the parts, each
/// prefixed with its length as a little-endian `u64`, truncated to 16
/// bytes. The length prefixes make the input unambiguous, so `["ab", "c"]`
/// and `["a", "bc"]` differ. 128 bits is ample: the fingerprint guards
/// against mistakes and replays with other arguments, not against
/// collisions crafted by someone who also holds the MAC key.
#[derive(Default)]
pub struct FingerprintBuilder(Sha256);

impl FingerprintBuilder {
    /// Adds the part that is `pieces` concatenated.
    pub fn part(&mut self, pieces: &[&[u8]]) -> &mut Self {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        self.0.update((len as u64).to_le_bytes());
        for piece in pieces {
            self.0.update(piece);
        }
        self
    }

    pub fn finish(self) -> Fingerprint {
        let digest = self.0.finalize();
        let mut out = [0; FINGERPRINT_LEN];
        out.copy_from_slice(&digest[..FINGERPRINT_LEN]);
        Fingerprint(out)
    }
}

/// Where to resume reading one upstream source.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SourcePosition {
    /// Nothing read from this source yet: start with the first page.
    Start,
    /// Re-fetch the upstream page obtained with `token` (None = the first
    /// page) using `page_size` (1..=200) as MaxResults, then skip past the item
    /// that `last_id` names if it is in that page, else skip the first `skip`
    /// items (the position fallback when the page shifted).
    /// `skip` may be 0 with `last_id` naming the last item of the *previous*
    /// page (when an edge ends its upstream page, the cursor points straight
    /// at the next page's token).
    InPage {
        token: Option<Arc<str>>,
        page_size: u8,
        skip: u32,
        last_id: LastId,
    },
    /// This source has no more items.
    Exhausted,
}

/// The session a position is just past, as far as the position knows it:
/// the id (read from pages, and from cursors of versions 1 and 2), or only
/// its [`id_hash`] (from a version 3 cursor).
#[derive(Clone, Debug)]
pub enum LastId {
    /// No session yet (or the position falls back to `skip` alone).
    None,
    /// A session id and its hash.
    Id { id: Arc<str>, hash: u64 },
    /// The hash of a session id.
    Hash(u64),
}

impl LastId {
    /// The id, and its hash computed once here. An empty id is `None`.
    pub fn of(id: &str) -> Self {
        match id {
            "" => Self::None,
            id => Self::of_shared(&Arc::from(id)),
        }
    }

    /// [`LastId::of`] an id already shared: no copy.
    pub fn of_shared(id: &Arc<str>) -> Self {
        Self::of_hashed(id, id_hash(id))
    }

    /// [`LastId::of_shared`] with the id's [`id_hash`] already known
    /// (a page keeps its sessions' hashes: `upstream::Page::id_hash`).
    pub fn of_hashed(id: &Arc<str>, hash: u64) -> Self {
        debug_assert_eq!(hash, id_hash(id));
        if id.is_empty() {
            return Self::None;
        }
        Self::Id {
            id: Arc::clone(id),
            hash,
        }
    }

    /// What a version 3 cursor carries: the hash, 0 for none. (A real id
    /// whose hash is 0 reads as none: the position then falls back to
    /// `skip`, which is where it is anyway unless the page shifted.)
    pub fn hash(&self) -> u64 {
        match self {
            Self::None => 0,
            Self::Id { hash, .. } | Self::Hash(hash) => *hash,
        }
    }

    /// The id when known; versions 1 and 2 write an unknown one as none.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Id { id, .. } => Some(id),
            Self::None | Self::Hash(_) => None,
        }
    }

    /// Whether this names the session `id`.
    pub fn is(&self, id: &str) -> bool {
        match self {
            Self::None => false,
            Self::Id { id: mine, .. } => **mine == *id,
            Self::Hash(hash) => *hash != 0 && id_hash(id) == *hash,
        }
    }

    /// No session (a decoded hash is never 0: that reads as `None`).
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }
}

/// Equal when they name the same session as far as both know it: ids when
/// both have one, else hashes.
impl PartialEq for LastId {
    fn eq(&self, other: &Self) -> bool {
        match (self.id(), other.id()) {
            (Some(a), Some(b)) => a == b,
            _ => self.hash() == other.hash(),
        }
    }
}

impl Eq for LastId {}

impl From<&str> for LastId {
    fn from(id: &str) -> Self {
        Self::of(id)
    }
}

/// 64-bit FNV-1a of `id`'s UTF-8 bytes: what a version 3 cursor carries
/// for the last session id of a source.
pub fn id_hash(id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    id.bytes()
        .fold(OFFSET, |hash, b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The decoded content of a cursor: one position per source, in the order
/// the connection lists its sources, bound to the arguments' fingerprint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Cursor {
    pub fingerprint: Fingerprint,
    pub sources: Vec<SourcePosition>,
}

/// Why a cursor was refused. The messages are safe to show clients: they say
/// what is wrong with the string, never anything about the key or layout.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("cursor is not valid base64url")]
    NotBase64,
    #[error("cursor is too short")]
    TooShort,
    /// Altered, truncated, or signed with another key (another deployment, or
    /// before a key change).
    #[error("cursor failed its integrity check")]
    BadSignature,
    /// Authentic, but written by a gateway version this one cannot read.
    #[error("cursor version {0} is not supported")]
    UnsupportedVersion(u8),
    /// Authentic but not well-formed: only a gateway bug (or a caller asking
    /// `encode` for something unencodable) gets here. The detail is for logs.
    #[error("cursor is malformed")]
    Malformed(&'static str),
    /// Authentic, but issued for other query arguments or sources.
    #[error("cursor was issued for different arguments")]
    WrongArguments,
    /// Longer than [`MAX_CURSOR_LEN`] or a field bound; from `encode`, the
    /// cursor would not fit.
    #[error("cursor is too large")]
    TooLarge,
}

/// Signs and verifies cursors with a key shared by all replicas.
#[derive(Clone)]
pub struct CursorCodec {
    /// Version 1: HMAC state already keyed; cloned per use so the key
    /// schedule runs once.
    mac: Hmac<Sha256>,
    /// Version 2: the BLAKE3 hasher keyed with its derived key.
    blake: blake3::Hasher,
    /// Version 3: its derived key (hashed in one call: a cursor is far
    /// shorter than one BLAKE3 chunk).
    key3: [u8; blake3::KEY_LEN],
    /// The version `encode` writes.
    write: u8,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even derived state.
        f.debug_struct("CursorCodec").finish_non_exhaustive()
    }
}

impl CursorCodec {
    /// A codec keyed with `key`. Any length works (HMAC hashes long keys);
    /// insisting on at least 32 random bytes is the caller's job.
    pub fn new(key: &[u8]) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
        let blake = blake3::Hasher::new_keyed(&blake3::derive_key(KEY2_CONTEXT, key));
        Self {
            mac,
            blake,
            key3: blake3::derive_key(KEY3_CONTEXT, key),
            write: VERSION,
        }
    }

    /// This codec, writing wire version `version` (1, 2 or 3; anything
    /// else is 3). All are always read. Versions 1 and 2 are for a rolling
    /// upgrade from a release that reads only up to that version: write it
    /// until no such replica serves, then drop the setting.
    pub fn writing(mut self, version: u8) -> Self {
        self.write = match version {
            VERSION_HMAC | VERSION_2 => version,
            _ => VERSION,
        };
        self
    }

    /// A codec with a fresh random 32-byte key from the thread-local CSPRNG.
    /// Its cursors do not survive a restart and are not accepted by other
    /// replicas; the caller should say so in a warning.
    pub fn random() -> Self {
        Self::new(&rand::random::<[u8; 32]>())
    }

    /// Encode and sign `cursor`.
    ///
    /// Fails, rather than emit a cursor `decode` would refuse, when a field is
    /// out of bounds: `page_size` outside 1..=200 is
    /// [`CursorError::Malformed`]; more than [`MAX_SOURCES`] sources, a token
    /// over [`MAX_TOKEN_LEN`] bytes, a `last_id` over [`MAX_ID_LEN`] bytes or
    /// a result over [`MAX_CURSOR_LEN`] characters is [`CursorError::TooLarge`].
    pub fn encode(&self, cursor: &Cursor) -> Result<String, CursorError> {
        let mut out = Vec::new();
        self.encode_into(cursor, &mut Vec::with_capacity(64), &mut out)?;
        // base64url is ASCII.
        String::from_utf8(out).map_err(|_| CursorError::Malformed("not ASCII"))
    }

    /// [`CursorCodec::encode`], appending the string to `out`; `scratch`
    /// is working space a caller encoding many cursors can reuse.
    pub fn encode_into(
        &self,
        cursor: &Cursor,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), CursorError> {
        if cursor.sources.len() > MAX_SOURCES {
            return Err(CursorError::TooLarge);
        }
        let body = scratch;
        body.clear();
        self.put_header(body, cursor.fingerprint, cursor.sources.len());
        for source in &cursor.sources {
            self.put_source(body, source)?;
        }
        self.seal_into(body, out)
    }

    /// A writer of the cursors of one window, whose consecutive edges
    /// differ in a source or two: see [`CursorWriter`].
    pub fn writer(&self, fingerprint: Fingerprint, sources: usize) -> CursorWriter<'_> {
        CursorWriter {
            codec: self,
            fingerprint,
            segments: vec![vec![TAG_START]; sources],
            error: None,
            body: Vec::with_capacity(256),
            spans: Vec::with_capacity(sources),
        }
    }

    /// Version, fingerprint and source count.
    fn put_header(&self, body: &mut Vec<u8>, fingerprint: Fingerprint, sources: usize) {
        body.push(self.write);
        body.extend_from_slice(&fingerprint.0);
        put_len(body, sources);
    }

    /// One source's position, as the version written says.
    fn put_source(&self, body: &mut Vec<u8>, source: &SourcePosition) -> Result<(), CursorError> {
        match source {
            SourcePosition::Start => body.push(TAG_START),
            SourcePosition::Exhausted => body.push(TAG_EXHAUSTED),
            SourcePosition::InPage {
                token,
                page_size,
                skip,
                last_id,
            } => {
                if !PAGE_SIZE_RANGE.contains(page_size) {
                    return Err(CursorError::Malformed("page size out of range"));
                }
                if token.as_ref().is_some_and(|t| t.len() > MAX_TOKEN_LEN)
                    || last_id.id().is_some_and(|id| id.len() > MAX_ID_LEN)
                {
                    return Err(CursorError::TooLarge);
                }
                body.push(TAG_IN_PAGE);
                match token {
                    None => put_varint(body, 0),
                    Some(t) => {
                        put_len(body, t.len() + 1);
                        body.extend_from_slice(t.as_bytes());
                    }
                }
                body.push(*page_size);
                put_varint(body, *skip);
                if self.write == VERSION {
                    body.extend_from_slice(&last_id.hash().to_le_bytes());
                } else {
                    // Known only by its hash (from a version 3 cursor):
                    // none, so the position falls back to `skip`.
                    let id = last_id.id().unwrap_or("");
                    put_len(body, id.len());
                    body.extend_from_slice(id.as_bytes());
                }
            }
        }
        Ok(())
    }

    /// Verify and decode a client-supplied cursor issued for the arguments
    /// with fingerprint `expected` over `expected_sources` sources.
    ///
    /// Checks, in order: length (at most [`MAX_CURSOR_LEN`], before any other
    /// work), base64url, minimum length, MAC (constant time), version, payload
    /// structure (no trailing bytes, page size 1..=200, UTF-8 strings, bounded
    /// lengths), fingerprint, then source count.
    pub fn decode(
        &self,
        s: &str,
        expected: Fingerprint,
        expected_sources: usize,
    ) -> Result<Cursor, CursorError> {
        if s.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLarge);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| CursorError::NotBase64)?;
        if raw.len() < MIN_RAW_LEN {
            return Err(CursorError::TooShort);
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        if !self.verify(body, tag) {
            return Err(CursorError::BadSignature);
        }
        let cursor = parse(body)?;
        if cursor.fingerprint != expected || cursor.sources.len() != expected_sources {
            return Err(CursorError::WrongArguments);
        }
        Ok(cursor)
    }

    /// Append the tag to `body` (version and payload) and base64url it.
    /// Separate from `encode` so tests can sign bodies `encode` would never
    /// write and so reach the checks behind the MAC.
    #[cfg(test)]
    fn seal(&self, mut body: Vec<u8>) -> Result<String, CursorError> {
        let mut out = Vec::new();
        self.seal_into(&mut body, &mut out)?;
        String::from_utf8(out).map_err(|_| CursorError::Malformed("not ASCII"))
    }

    /// Append the tag to `body` and its base64url to `out`.
    fn seal_into(&self, body: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), CursorError> {
        let Some(len) =
            base64::encoded_len(body.len() + TAG_LEN, false).filter(|&len| len <= MAX_CURSOR_LEN)
        else {
            return Err(CursorError::TooLarge);
        };
        let tag = self.tag(body);
        body.extend_from_slice(&tag);
        // The SIMD encoder: the same characters as `URL_SAFE_NO_PAD`, in a
        // fraction of the instructions (51 cursors a page).
        let start = out.len();
        base64_simd::URL_SAFE_NO_PAD.encode_append(&*body, out);
        debug_assert_eq!(out.len() - start, len);
        Ok(())
    }

    /// The tag of `body` under the MAC its version byte names: version 1's
    /// HMAC, version 2's keyed BLAKE3, or for any other byte version 3's
    /// (so a body of an unknown version still has one MAC, and reads as
    /// unsupported only when that MAC holds).
    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut tag = [0; TAG_LEN];
        match body.first() {
            Some(&VERSION_HMAC) => {
                let mut mac = self.mac.clone();
                mac.update(DOMAIN);
                mac.update(body);
                tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
            }
            Some(&VERSION_2) => {
                let mut hasher = self.blake.clone();
                hasher.update(DOMAIN);
                hasher.update(body);
                hasher.finalize_xof().fill(&mut tag);
            }
            _ => {
                let hash = blake3::keyed_hash(&self.key3, body);
                tag.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
            }
        }
        tag
    }

    /// Whether `tag` is `body`'s, compared in constant time.
    fn verify(&self, body: &[u8], tag: &[u8]) -> bool {
        let expected = self.tag(body);
        let difference = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        tag.len() == TAG_LEN && std::hint::black_box(difference) == 0
    }
}

/// Writes the cursors of one window's edges in order. Each source's
/// position is kept encoded, so an edge that changes one source's position
/// re-encodes that source alone; [`CursorWriter::encode_into`] writes what
/// [`CursorCodec::encode_into`] writes for the same positions.
pub struct CursorWriter<'c> {
    codec: &'c CursorCodec,
    fingerprint: Fingerprint,
    /// Each source's position, encoded (`Start` until set).
    segments: Vec<Vec<u8>>,
    /// The first position that could not be encoded; cursors fail with it.
    error: Option<CursorError>,
    /// The body of the positions set so far, valid when `spans` is not
    /// empty: `spans[i]` is where segment `i` lies in it.
    body: Vec<u8>,
    spans: Vec<std::ops::Range<usize>>,
}

impl CursorWriter<'_> {
    /// Source `i` is now at `position`.
    pub fn set(&mut self, i: usize, position: &SourcePosition) {
        let Some(segment) = self.segments.get_mut(i) else {
            self.error = Some(CursorError::Malformed("no such source"));
            return;
        };
        segment.clear();
        if let Err(e) = self.codec.put_source(segment, position) {
            self.error.get_or_insert(e);
        }
        // Mostly the same length (the same page, one more skipped): written
        // over its old place; else the body is laid out again.
        match self.spans.get(i) {
            Some(span) if span.len() == segment.len() => {
                self.body[span.clone()].copy_from_slice(segment);
            }
            _ => self.spans.clear(),
        }
    }

    /// The cursor of the positions set so far, appended to `out`.
    pub fn encode_into(&mut self, out: &mut Vec<u8>) -> Result<(), CursorError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.segments.len() > MAX_SOURCES {
            return Err(CursorError::TooLarge);
        }
        if self.spans.is_empty() {
            let body = &mut self.body;
            body.clear();
            self.codec
                .put_header(body, self.fingerprint, self.segments.len());
            for segment in &self.segments {
                let start = body.len();
                body.extend_from_slice(segment);
                self.spans.push(start..body.len());
            }
        }
        // `seal_into` appends the tag to the body: cut it off again after.
        let len = self.body.len();
        let sealed = self.codec.seal_into(&mut self.body, out);
        self.body.truncate(len);
        sealed
    }
}

/// Parse an authenticated body (version and payload, tag removed).
fn parse(body: &[u8]) -> Result<Cursor, CursorError> {
    let mut r = Reader { rest: body };
    let version = r.u8()?;
    if !matches!(version, VERSION | VERSION_2 | VERSION_HMAC) {
        return Err(CursorError::UnsupportedVersion(version));
    }
    let fingerprint = Fingerprint(r.array()?);
    let count = r.len(MAX_SOURCES, "too many sources")?;
    // Bounded by MAX_SOURCES above, so this cannot be made to over-allocate.
    let mut sources = Vec::with_capacity(count);
    for _ in 0..count {
        let source = match r.u8()? {
            TAG_START => SourcePosition::Start,
            TAG_EXHAUSTED => SourcePosition::Exhausted,
            TAG_IN_PAGE => {
                let token = match r.varint()? {
                    0 => None,
                    n => {
                        // n - 1 cannot underflow: n != 0 here.
                        let len = usize::try_from(n - 1)
                            .ok()
                            .filter(|&len| len <= MAX_TOKEN_LEN)
                            .ok_or(CursorError::Malformed("token too long"))?;
                        Some(r.string(len, "token is not UTF-8")?.into())
                    }
                };
                let page_size = r.u8()?;
                if !PAGE_SIZE_RANGE.contains(&page_size) {
                    return Err(CursorError::Malformed("page size out of range"));
                }
                let skip = r.varint()?;
                let last_id = if version == VERSION {
                    match u64::from_le_bytes(r.array()?) {
                        0 => LastId::None,
                        hash => LastId::Hash(hash),
                    }
                } else {
                    let id_len = r.len(MAX_ID_LEN, "last id too long")?;
                    LastId::of(&r.string(id_len, "last id is not UTF-8")?)
                };
                SourcePosition::InPage {
                    token,
                    page_size,
                    skip,
                    last_id,
                }
            }
            _ => return Err(CursorError::Malformed("unknown source tag")),
        };
        sources.push(source);
    }
    if !r.rest.is_empty() {
        return Err(CursorError::Malformed("trailing bytes"));
    }
    Ok(Cursor {
        fingerprint,
        sources,
    })
}

/// Append `value` as unsigned LEB128.
fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Append a length. Callers bound lengths far below `u32::MAX` first (sources,
/// token, id), so saturating never changes a value actually written.
fn put_len(out: &mut Vec<u8>, len: usize) {
    put_varint(out, u32::try_from(len).unwrap_or(u32::MAX));
}

/// A cursor over the payload where every read checks bounds and fails with a
/// `CursorError` instead of panicking.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CursorError> {
        if n > self.rest.len() {
            return Err(CursorError::Malformed("truncated payload"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CursorError> {
        let (&first, tail) = self
            .rest
            .split_first()
            .ok_or(CursorError::Malformed("truncated payload"))?;
        self.rest = tail;
        Ok(first)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CursorError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Unsigned LEB128 `u32`: at most 5 bytes, minimally encoded, no bits
    /// beyond 32. Rejecting non-minimal forms keeps the encoding canonical.
    fn varint(&mut self) -> Result<u32, CursorError> {
        let mut value: u32 = 0;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.u8()?;
            // The fifth byte holds bits 28..32: only its low 4 bits fit, and
            // it cannot continue.
            if i == MAX_VARINT_LEN - 1 && byte > 0x0f {
                return Err(CursorError::Malformed("varint overflows u32"));
            }
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(CursorError::Malformed("varint not minimally encoded"));
                }
                return Ok(value);
            }
        }
        // Unreachable: the fifth byte either ends the varint or fails above.
        Err(CursorError::Malformed("varint too long"))
    }

    /// A varint length, at most `max`.
    fn len(&mut self, max: usize, too_long: &'static str) -> Result<usize, CursorError> {
        usize::try_from(self.varint()?)
            .ok()
            .filter(|&len| len <= max)
            .ok_or(CursorError::Malformed(too_long))
    }

    fn string(&mut self, len: usize, not_utf8: &'static str) -> Result<String, CursorError> {
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| CursorError::Malformed(not_utf8))
    }
}

#[cfg(test)]
mod tests;
