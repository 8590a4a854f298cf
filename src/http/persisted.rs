//! Automatic persisted queries, as Apollo Client and the Apollo Router speak
//! them: a client sends `extensions.persistedQuery { version: 1, sha256Hash }`
//! instead of the document; the gateway answers `PERSISTED_QUERY_NOT_FOUND`
//! when it does not hold that hash, the client sends the document with the
//! hash once, and the gateway keeps it (after checking that the hash is the
//! document's SHA-256: else `PERSISTED_QUERY_HASH_MISMATCH`). Later requests,
//! POST or GET (short URLs a browser or CDN can use), send the hash alone.
//!
//! What the gateway keeps is only the text of documents, by hash: nothing
//! about callers. A hash names a document, not a permission: every request
//! is authenticated and authorized as if it had sent the document itself,
//! and the resolved document is what the response cache keys on and what
//! the "no mutation over GET" rule looks at.
//!
//! The store is a trait ([`DocumentStore`]): [`MemoryStore`] is the bounded
//! in-process one; with `[redis]`, [`SharedDocuments`] puts Redis behind it,
//! so a document registered through one replica is found by all of them.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::code;
use crate::settings::PersistedQuerySettings;
use crate::shared::Shared;

/// A document's SHA-256, the key of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DocumentHash([u8; 32]);

impl DocumentHash {
    /// The hash of `document`, exactly as sent (no normalization: clients
    /// hash the string they send).
    pub fn of(document: &str) -> Self {
        Self(Sha256::digest(document.as_bytes()).into())
    }

    /// 64 hexadecimal digits (either case), as clients send them.
    pub fn parse_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |b: u8| (b as char).to_digit(16);
            out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
        }
        Some(Self(out))
    }
}

/// Where persisted documents are kept. Implementations bound their size and
/// may forget any document at any time: the client then sends it again.
#[async_trait::async_trait]
pub trait DocumentStore: Send + Sync {
    /// The document registered under `hash`, if still held.
    async fn get(&self, hash: &DocumentHash) -> Option<Arc<str>>;
    /// Keeps `document` under `hash` (already checked to be its SHA-256).
    async fn put(&self, hash: DocumentHash, document: Arc<str>);
}

/// Documents in this process, bounded by their total size.
pub struct MemoryStore {
    entries: moka::future::Cache<DocumentHash, Arc<str>>,
}

impl MemoryStore {
    /// At most about `max_bytes` of documents (each weighed by its length).
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, doc: &Arc<str>| u32::try_from(doc.len() + 64).unwrap_or(u32::MAX))
                .build(),
        }
    }
}

#[async_trait::async_trait]
impl DocumentStore for MemoryStore {
    async fn get(&self, hash: &DocumentHash) -> Option<Arc<str>> {
        self.entries.get(hash).await
    }

    async fn put(&self, hash: DocumentHash, document: Arc<str>) {
        self.entries.insert(hash, document).await;
    }
}

/// How long Redis keeps a document after it was last registered. A client
/// whose hash is no longer known sends the document again (the protocol's
/// normal path), so this bounds Redis's memory, not correctness.
const SHARED_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A [`MemoryStore`] in front of the Redis the replicas share. A document
/// read from Redis is hashed again before use: whatever Redis holds, a hash
/// only ever resolves to the document it is the SHA-256 of. Redis being
/// unavailable is a miss (the client resends the document), never an error.
pub struct SharedDocuments {
    local: MemoryStore,
    shared: Shared,
}

impl SharedDocuments {
    pub fn new(local: MemoryStore, shared: Shared) -> Self {
        Self { local, shared }
    }

    fn key(&self, hash: &DocumentHash) -> String {
        let hex: String = hash.0.iter().map(|b| format!("{b:02x}")).collect();
        self.shared.key("apq", &hex)
    }
}

#[async_trait::async_trait]
impl DocumentStore for SharedDocuments {
    async fn get(&self, hash: &DocumentHash) -> Option<Arc<str>> {
        if let Some(document) = self.local.get(hash).await {
            return Some(document);
        }
        let key = self.key(hash);
        let bytes = self
            .shared
            .store()
            .get_many(std::slice::from_ref(&key))
            .await
            .ok()?
            .pop()??;
        let document: Arc<str> = String::from_utf8(bytes).ok()?.into();
        if DocumentHash::of(&document) != *hash {
            tracing::warn!(
                key,
                "a persisted document in Redis does not match its hash; ignored"
            );
            return None;
        }
        self.local.put(*hash, document.clone()).await;
        Some(document)
    }

    async fn put(&self, hash: DocumentHash, document: Arc<str>) {
        // Redis down: the other replicas will ask their clients again.
        let _ = self
            .shared
            .store()
            .set(&self.key(&hash), document.as_bytes(), SHARED_TTL)
            .await;
        self.local.put(hash, document).await;
    }
}

/// The only protocol version there is.
const VERSION: u64 = 1;

/// Persisted queries as configured: a store, or none (turned off).
pub struct PersistedQueries {
    store: Option<Arc<dyn DocumentStore>>,
}

/// Why a request's persisted query cannot run; each maps to a stable code.
#[derive(Debug, PartialEq, Eq)]
pub enum PersistedQueryError {
    /// The hash is not (or no longer) held: send the document with it.
    NotFound,
    /// The document sent is not what the hash names.
    HashMismatch,
    /// Persisted queries are off, or the version is not 1.
    NotSupported(String),
    /// `persistedQuery` is not `{ version, sha256Hash }`.
    Malformed(String),
}

impl PersistedQueryError {
    /// The stable `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => code::PERSISTED_QUERY_NOT_FOUND,
            Self::HashMismatch => code::PERSISTED_QUERY_HASH_MISMATCH,
            Self::NotSupported(_) => code::PERSISTED_QUERY_NOT_SUPPORTED,
            Self::Malformed(_) => code::BAD_REQUEST,
        }
    }

    /// The message. The first two are Apollo's own words, which its
    /// clients look for.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound => "PersistedQueryNotFound".to_owned(),
            Self::HashMismatch => "provided sha does not match query".to_owned(),
            Self::NotSupported(why) => format!("PersistedQueryNotSupported: {why}"),
            Self::Malformed(why) => format!("extensions.persistedQuery {why}"),
        }
    }
}

impl PersistedQueries {
    /// As configured: an in-process store of `max_bytes`, in front of
    /// `shared` Redis when there is one; or none.
    pub fn new(settings: &PersistedQuerySettings, shared: Option<&Shared>) -> Self {
        if !settings.enabled {
            return Self { store: None };
        }
        let local = MemoryStore::new(settings.max_bytes);
        match shared {
            Some(shared) => Self::with_store(Arc::new(SharedDocuments::new(local, shared.clone()))),
            None => Self::with_store(Arc::new(local)),
        }
    }

    /// Over another store (a shared one, or a test's).
    pub fn with_store(store: Arc<dyn DocumentStore>) -> Self {
        Self { store: Some(store) }
    }

    /// The document a request runs: `query` itself when the request has no
    /// `persistedQuery` extension; else the persisted document, registering
    /// `query` when it comes with its hash. `Ok(None)`: no document at all
    /// (the caller decides what that means).
    pub async fn resolve(
        &self,
        query: Option<String>,
        extensions: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Option<String>, PersistedQueryError> {
        let Some(persisted) = extensions.and_then(|e| e.get("persistedQuery")) else {
            return Ok(query);
        };
        let Some(store) = &self.store else {
            return Err(PersistedQueryError::NotSupported(
                "persisted queries are turned off here; send the document in `query`".to_owned(),
            ));
        };
        let hash = parse(persisted)?;
        match query {
            Some(query) if !query.is_empty() => {
                if DocumentHash::of(&query) != hash {
                    return Err(PersistedQueryError::HashMismatch);
                }
                store.put(hash, Arc::from(query.as_str())).await;
                Ok(Some(query))
            }
            _ => match store.get(&hash).await {
                Some(document) => Ok(Some(document.to_string())),
                None => Err(PersistedQueryError::NotFound),
            },
        }
    }
}

/// The hash of a `persistedQuery` extension, its version checked.
fn parse(value: &serde_json::Value) -> Result<DocumentHash, PersistedQueryError> {
    let object = value
        .as_object()
        .ok_or_else(|| PersistedQueryError::Malformed("must be an object".to_owned()))?;
    match object.get("version").and_then(serde_json::Value::as_u64) {
        Some(VERSION) => {}
        Some(other) => {
            return Err(PersistedQueryError::NotSupported(format!(
                "version {other} is not supported; this gateway speaks version {VERSION}"
            )));
        }
        None => {
            return Err(PersistedQueryError::Malformed(
                "must have `version`: 1".to_owned(),
            ));
        }
    }
    object
        .get("sha256Hash")
        .and_then(serde_json::Value::as_str)
        .and_then(DocumentHash::parse_hex)
        .ok_or_else(|| {
            PersistedQueryError::Malformed(
                "must have `sha256Hash`: the document's SHA-256 as 64 hexadecimal digits"
                    .to_owned(),
            )
        })
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ext(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    fn persisted(hash: &str) -> serde_json::Map<String, serde_json::Value> {
        ext(json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }))
    }

    fn hex(doc: &str) -> String {
        Sha256::digest(doc.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn enabled() -> PersistedQueries {
        PersistedQueries::new(&PersistedQuerySettings::default(), None)
    }

    #[tokio::test]
    async fn hash_first_then_document_then_hash_alone() {
        let apq = enabled();
        let doc = "{ accounts { id } }";
        let only_hash = persisted(&hex(doc));
        assert_eq!(
            apq.resolve(None, Some(&only_hash)).await,
            Err(PersistedQueryError::NotFound)
        );
        assert_eq!(
            apq.resolve(Some(doc.to_owned()), Some(&only_hash)).await,
            Ok(Some(doc.to_owned()))
        );
        assert_eq!(
            apq.resolve(None, Some(&only_hash)).await,
            Ok(Some(doc.to_owned()))
        );
        // Upper-case hex names the same document; an empty query is none.
        let upper = persisted(&hex(doc).to_uppercase());
        assert_eq!(
            apq.resolve(Some(String::new()), Some(&upper)).await,
            Ok(Some(doc.to_owned()))
        );
    }

    #[tokio::test]
    async fn wrong_hashes_versions_and_shapes_are_refused() {
        let apq = enabled();
        let doc = "{ accounts { id } }";
        assert_eq!(
            apq.resolve(Some(doc.to_owned()), Some(&persisted(&hex("{ x }"))))
                .await,
            Err(PersistedQueryError::HashMismatch)
        );
        // The mismatched document was not kept under either hash.
        assert_eq!(
            apq.resolve(None, Some(&persisted(&hex("{ x }")))).await,
            Err(PersistedQueryError::NotFound)
        );
        let v2 = ext(json!({ "persistedQuery": { "version": 2, "sha256Hash": hex(doc) } }));
        assert!(matches!(
            apq.resolve(Some(doc.to_owned()), Some(&v2)).await,
            Err(PersistedQueryError::NotSupported(_))
        ));
        for bad in [
            json!({ "persistedQuery": "abc" }),
            json!({ "persistedQuery": { "sha256Hash": hex(doc) } }),
            json!({ "persistedQuery": { "version": 1 } }),
            json!({ "persistedQuery": { "version": 1, "sha256Hash": "abc" } }),
            json!({ "persistedQuery": { "version": 1, "sha256Hash": "zz".repeat(32) } }),
        ] {
            let result = apq.resolve(None, Some(&ext(bad.clone()))).await;
            assert!(
                matches!(result, Err(PersistedQueryError::Malformed(_))),
                "{bad}: {result:?}"
            );
        }
        // No extension: the query as sent, whatever it is.
        assert_eq!(
            apq.resolve(Some(doc.to_owned()), Some(&ext(json!({ "other": 1 }))))
                .await,
            Ok(Some(doc.to_owned()))
        );
        assert_eq!(apq.resolve(None, None).await, Ok(None));
    }

    #[tokio::test]
    async fn turned_off_says_so() {
        let apq = PersistedQueries::new(
            &PersistedQuerySettings {
                enabled: false,
                ..PersistedQuerySettings::default()
            },
            None,
        );
        let doc = "{ accounts { id } }";
        assert!(matches!(
            apq.resolve(Some(doc.to_owned()), Some(&persisted(&hex(doc))))
                .await,
            Err(PersistedQueryError::NotSupported(_))
        ));
        assert_eq!(
            apq.resolve(Some(doc.to_owned()), None).await,
            Ok(Some(doc.to_owned()))
        );
    }
}
