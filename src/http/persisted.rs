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
//!
//! **Safelist mode** (`persisted_queries.safelist`): the operations of an
//! Apollo persisted query manifest ([`Safelist`]) are the only ones that
//! run. A request names one by hash, or sends its text exactly; anything
//! else is `OPERATION_NOT_IN_SAFELIST`, and nothing is registered. With
//! `persisted_queries.require_id`, a request must name its operation by
//! hash: one that sends a text, listed or not, is
//! `PERSISTED_QUERY_ID_REQUIRED` (Apollo's code), so no caller's text is
//! parsed at all. For service-to-service deployments, where the callers'
//! operations are known when they are built.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
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

/// The operations a safelist allows, by the SHA-256 of their text: an
/// Apollo persisted query manifest, read at start-up and, when its file
/// changes, again ([`Safelist::watch`]).
#[derive(Debug)]
pub struct Safelist {
    operations: arc_swap::ArcSwap<Operations>,
    /// Operations run by hash alone (`persisted_queries.require_id`).
    require_id: bool,
    /// Where the manifest is read from; none for one parsed from text.
    path: Option<std::path::PathBuf>,
    /// The text `operations` were read from, for [`Safelist::watch`].
    seen: Seen,
}

/// A manifest's operations, by the SHA-256 of their text.
type Operations = HashMap<DocumentHash, Arc<str>>;

/// A file's text as last read, by its BLAKE3 hash: what tells one version
/// from the next, whatever its modified time and length say.
type Seen = Option<blake3::Hash>;

/// The manifest format Apollo's tooling writes
/// (`generate-persisted-query-manifest`); other fields are ignored.
#[derive(serde::Deserialize)]
struct Manifest {
    format: String,
    version: u64,
    operations: Vec<ManifestOperation>,
}

#[derive(serde::Deserialize)]
struct ManifestOperation {
    id: String,
    body: String,
    #[serde(default)]
    name: Option<String>,
}

impl Safelist {
    /// The manifest at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = Self::text(path)?;
        Ok(Self {
            operations: arc_swap::ArcSwap::from_pointee(Self::parse_file(path, &text)?),
            require_id: false,
            path: Some(path.to_owned()),
            seen: Some(blake3::hash(text.as_bytes())),
        })
    }

    /// The text of the manifest at `path`.
    fn text(path: &Path) -> anyhow::Result<String> {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the safelist {}", path.display()))
    }

    /// The operations of `text`, read from `path`.
    fn parse_file(path: &Path, text: &str) -> anyhow::Result<Operations> {
        Self::operations(text).with_context(|| format!("the safelist {}", path.display()))
    }

    /// Reads the manifest again on SIGHUP (Unix), as the API keys file is,
    /// and, with `every`, whenever a check that often finds its text
    /// changed (the file is read and hashed: a rewrite of the same length
    /// within the file system's time granularity is a change too): a valid
    /// one is used from then on, an invalid one is logged and counted, and
    /// the list in use stays. Stops when the safelist is dropped. Call
    /// inside a tokio runtime.
    pub fn watch(
        self: &Arc<Self>,
        every: Option<Duration>,
        metrics: crate::instruments::Metrics,
    ) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        // Registered here, before returning: a SIGHUP sent right after is
        // not lost (nor, with no handler yet, fatal).
        #[cfg(unix)]
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let list = Arc::downgrade(self);
        let mut seen = self.seen;
        tokio::spawn(async move {
            let mut tick = every
                .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
            loop {
                let checked = async {
                    match &mut tick {
                        Some(tick) => {
                            tick.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(unix)]
                let hangup = hangups.recv();
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                // SIGHUP reads the file whatever it holds.
                let forced = tokio::select! {
                    () = checked => false,
                    _ = hangup => true,
                };
                if list.strong_count() == 0 {
                    return;
                }
                let text = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || Self::text(&path))
                        .await
                        .unwrap_or_else(|e| Err(anyhow::anyhow!("reading the safelist: {e}")))
                };
                let now: Seen = text.as_ref().ok().map(|t| blake3::hash(t.as_bytes()));
                if now == seen && !forced {
                    continue;
                }
                seen = now;
                let read = text.and_then(|text| Self::parse_file(&path, &text));
                let Some(list) = list.upgrade() else {
                    return;
                };
                match read {
                    Ok(operations) => {
                        tracing::info!(
                            path = %path.display(),
                            operations = operations.len(),
                            "safelist reloaded"
                        );
                        list.operations.store(Arc::new(operations));
                        metrics.safelist_reload(true);
                    }
                    Err(e) => {
                        tracing::error!(
                            error = %format_args!("{e:#}"),
                            "safelist changed but cannot be used; the previous list stays"
                        );
                        metrics.safelist_reload(false);
                    }
                }
            }
        });
        Ok(())
    }

    /// The safelist of a manifest's `text`, with no file behind it.
    #[cfg(test)]
    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(Self {
            operations: arc_swap::ArcSwap::from_pointee(Self::operations(text)?),
            require_id: false,
            path: None,
            seen: None,
        })
    }

    /// The operations of a manifest's text: `format`
    /// `apollo-persisted-query-manifest`, `version` 1, and at least one
    /// operation, each with the SHA-256 of its `body` as its `id` (what
    /// clients send as `sha256Hash`).
    fn operations(text: &str) -> anyhow::Result<Operations> {
        let manifest: Manifest =
            serde_json::from_str(text).context("is not a persisted query manifest")?;
        anyhow::ensure!(
            manifest.format == "apollo-persisted-query-manifest" && manifest.version == 1,
            "is not an apollo-persisted-query-manifest of version 1 (format {:?}, version {})",
            manifest.format,
            manifest.version
        );
        anyhow::ensure!(!manifest.operations.is_empty(), "lists no operation");
        let mut operations = HashMap::with_capacity(manifest.operations.len());
        for operation in manifest.operations {
            let hash = DocumentHash::of(&operation.body);
            if DocumentHash::parse_hex(&operation.id) != Some(hash) {
                anyhow::bail!(
                    "operation {}: its id {:?} is not the SHA-256 of its body",
                    operation.name.as_deref().unwrap_or("(unnamed)"),
                    operation.id
                );
            }
            operations.insert(hash, Arc::from(operation.body));
        }
        Ok(operations)
    }

    /// The document a request runs in safelist mode: its `query` when that
    /// is listed (and is what its hash names, when it sends one); else the
    /// listed document its hash names. With `require_id`, a request that
    /// sends a `query` is refused whatever it is.
    fn resolve(
        &self,
        query: Option<String>,
        persisted: Option<&serde_json::Value>,
    ) -> Result<Option<String>, PersistedQueryError> {
        let hash = persisted.map(parse).transpose()?;
        match (query.filter(|q| !q.is_empty()), hash) {
            (Some(_), _) if self.require_id => Err(PersistedQueryError::IdRequired),
            (Some(query), hash) => {
                let own = DocumentHash::of(&query);
                if hash.is_some_and(|hash| hash != own) {
                    return Err(PersistedQueryError::HashMismatch);
                }
                if !self.operations.load().contains_key(&own) {
                    return Err(PersistedQueryError::NotInSafelist);
                }
                Ok(Some(query))
            }
            (None, Some(hash)) => self
                .operations
                .load()
                .get(&hash)
                .map(|document| Some(document.to_string()))
                .ok_or(PersistedQueryError::NotInSafelist),
            // No document at all: the caller says so, as without a safelist.
            (None, None) => Ok(None),
        }
    }
}

/// Persisted queries as configured: a store, or none (turned off); and the
/// safelist, when one is set.
pub struct PersistedQueries {
    store: Option<Arc<dyn DocumentStore>>,
    safelist: Option<Arc<Safelist>>,
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
    /// Safelist mode, and the operation is not on the list.
    NotInSafelist,
    /// Safelist mode with `require_id`, and the request sent a document.
    IdRequired,
}

impl PersistedQueryError {
    /// The stable `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => code::PERSISTED_QUERY_NOT_FOUND,
            Self::HashMismatch => code::PERSISTED_QUERY_HASH_MISMATCH,
            Self::NotSupported(_) => code::PERSISTED_QUERY_NOT_SUPPORTED,
            Self::Malformed(_) => code::BAD_REQUEST,
            Self::NotInSafelist => code::OPERATION_NOT_IN_SAFELIST,
            Self::IdRequired => code::PERSISTED_QUERY_ID_REQUIRED,
        }
    }

    /// The message. The first two and `IdRequired`'s are Apollo's own
    /// words, which its clients look for.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound => "PersistedQueryNotFound".to_owned(),
            Self::HashMismatch => "provided sha does not match query".to_owned(),
            Self::NotSupported(why) => format!("PersistedQueryNotSupported: {why}"),
            Self::Malformed(why) => format!("extensions.persistedQuery {why}"),
            Self::NotInSafelist => {
                "this gateway runs only the operations on its safelist, sent as their hash \
                 or their exact text"
                    .to_owned()
            }
            Self::IdRequired => "This endpoint does not allow freeform GraphQL requests; \
                                 operations must be sent by ID in the persisted queries \
                                 GraphQL extension."
                .to_owned(),
        }
    }
}

impl PersistedQueries {
    /// As configured: an in-process store of `max_bytes`, in front of
    /// `shared` Redis when there is one; or none.
    /// The safelist is read here: a missing or malformed one is an error.
    pub fn new(settings: &PersistedQuerySettings, shared: Option<&Shared>) -> anyhow::Result<Self> {
        let safelist = match &settings.safelist {
            Some(path) => Some(Arc::new(Safelist {
                require_id: settings.require_id,
                ..Safelist::load(path)?
            })),
            None => None,
        };
        if !settings.enabled {
            return Ok(Self {
                store: None,
                safelist,
            });
        }
        let local = MemoryStore::new(settings.max_bytes);
        let store: Arc<dyn DocumentStore> = match shared {
            Some(shared) => Arc::new(SharedDocuments::new(local, shared.clone())),
            None => Arc::new(local),
        };
        Ok(Self {
            store: Some(store),
            safelist,
        })
    }

    /// Keeps the safelist, if there is one, up to date with its file: on
    /// SIGHUP, and checked every `every` when given (see
    /// [`Safelist::watch`]).
    pub fn watch_safelist(
        &self,
        every: Option<Duration>,
        metrics: crate::instruments::Metrics,
    ) -> std::io::Result<()> {
        match &self.safelist {
            Some(list) => list.watch(every, metrics),
            None => Ok(()),
        }
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
        if let Some(safelist) = &self.safelist {
            return safelist.resolve(query, extensions.and_then(|e| e.get("persistedQuery")));
        }
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
        PersistedQueries::new(&PersistedQuerySettings::default(), None).unwrap()
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
        )
        .unwrap();
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

    fn manifest(operations: &[(&str, &str)]) -> String {
        let operations: Vec<serde_json::Value> = operations
            .iter()
            .map(|(id, body)| json!({ "id": id, "body": body, "name": "Op", "type": "query" }))
            .collect();
        json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": operations,
        })
        .to_string()
    }

    #[test]
    fn a_safelist_is_an_apollo_manifest_with_sha256_ids() {
        let doc = "{ accounts { id } }";
        let list = Safelist::parse(&manifest(&[(&hex(doc), doc)])).unwrap();
        let allows = |text: &str| list.resolve(Some(text.to_owned()), None).is_ok();
        assert!(allows(doc));
        assert!(!allows("{ accounts { alias } }"));
        assert!(!allows("{ accounts { id } } "), "the exact text only");
        // Upper-case hex ids are the same hashes.
        assert!(Safelist::parse(&manifest(&[(&hex(doc).to_uppercase(), doc)])).is_ok());
        for (bad, why) in [
            (manifest(&[(&hex("{ other }"), doc)]), "not the SHA-256"),
            (manifest(&[]), "lists no operation"),
            (
                manifest(&[(&hex(doc), doc)]).replace("apollo-persisted-query-manifest", "x"),
                "version 1",
            ),
            ("[]".to_owned(), "not a persisted query manifest"),
        ] {
            let error = format!("{:#}", Safelist::parse(&bad).unwrap_err());
            assert!(error.contains(why), "{error}");
        }
    }

    /// Persisted queries with a safelist of `doc` alone, written in a
    /// directory of its own named after `name` (returned: the caller
    /// removes it).
    fn safelisted(
        name: &str,
        doc: &str,
        require_id: bool,
    ) -> (PersistedQueries, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("manifest.json");
        std::fs::write(&path, manifest(&[(&hex(doc), doc)])).unwrap();
        let settings = PersistedQuerySettings {
            safelist: Some(path),
            require_id,
            ..PersistedQuerySettings::default()
        };
        (PersistedQueries::new(&settings, None).unwrap(), dir)
    }

    #[tokio::test]
    async fn a_safelist_runs_its_operations_and_refuses_the_rest() {
        let doc = "{ accounts { id } }";
        let other = "{ accounts { alias } }";
        let (apq, dir) = safelisted("safelist", doc, false);
        // Listed: as text, by hash, or both.
        assert_eq!(
            apq.resolve(Some(doc.to_owned()), None).await,
            Ok(Some(doc.to_owned()))
        );
        assert_eq!(
            apq.resolve(None, Some(&persisted(&hex(doc)))).await,
            Ok(Some(doc.to_owned()))
        );
        assert_eq!(
            apq.resolve(Some(doc.to_owned()), Some(&persisted(&hex(doc))))
                .await,
            Ok(Some(doc.to_owned()))
        );
        // Not listed: refused, and not registered by sending it with its hash.
        for _ in 0..2 {
            assert_eq!(
                apq.resolve(Some(other.to_owned()), Some(&persisted(&hex(other))))
                    .await,
                Err(PersistedQueryError::NotInSafelist)
            );
        }
        assert_eq!(
            apq.resolve(None, Some(&persisted(&hex(other)))).await,
            Err(PersistedQueryError::NotInSafelist)
        );
        assert_eq!(
            apq.resolve(Some(other.to_owned()), None).await,
            Err(PersistedQueryError::NotInSafelist)
        );
        // A hash that is not the text's is still a mismatch.
        assert_eq!(
            apq.resolve(Some(doc.to_owned()), Some(&persisted(&hex(other))))
                .await,
            Err(PersistedQueryError::HashMismatch)
        );
        assert_eq!(apq.resolve(None, None).await, Ok(None));
        assert_eq!(
            enabled().resolve(Some(other.to_owned()), None).await,
            Ok(Some(other.to_owned())),
            "no safelist: anything"
        );
        // A missing file stops the gateway.
        let missing = PersistedQueries::new(
            &PersistedQuerySettings {
                safelist: Some(dir.join("none.json")),
                ..PersistedQuerySettings::default()
            },
            None,
        );
        assert!(format!("{:#}", missing.err().unwrap()).contains("cannot read the safelist"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn require_id_runs_listed_operations_by_hash_alone() {
        let doc = "{ accounts { id } }";
        let other = "{ accounts { alias } }";
        let (apq, dir) = safelisted("require-id", doc, true);
        assert_eq!(
            apq.resolve(None, Some(&persisted(&hex(doc)))).await,
            Ok(Some(doc.to_owned()))
        );
        // A text is refused, listed or not, with its hash or without.
        for (query, hash) in [
            (doc, None),
            (doc, Some(doc)),
            (other, None),
            (other, Some(other)),
        ] {
            let extensions = hash.map(|h| persisted(&hex(h)));
            assert_eq!(
                apq.resolve(Some(query.to_owned()), extensions.as_ref())
                    .await,
                Err(PersistedQueryError::IdRequired),
                "{query} {hash:?}"
            );
        }
        assert_eq!(
            apq.resolve(None, Some(&persisted(&hex(other)))).await,
            Err(PersistedQueryError::NotInSafelist)
        );
        // An empty text is no text: the hash decides.
        assert_eq!(
            apq.resolve(Some(String::new()), Some(&persisted(&hex(doc))))
                .await,
            Ok(Some(doc.to_owned()))
        );
        assert_eq!(
            PersistedQueryError::IdRequired.code(),
            "PERSISTED_QUERY_ID_REQUIRED"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
