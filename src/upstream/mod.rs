//! The upstream boundary: every call to AWS goes through the traits here.
//!
//! Resolvers and the pager depend on [`SessionSource`], never on the SDK, so
//! that tests can put the emulator (over real HTTP, preferred) or a fake
//! behind it, and so that a cache can later wrap it without the callers
//! knowing. [`sdk`] holds the real implementation over `aws-sdk-ssm`.
//!
//! Errors are sorted into the few kinds a caller can act on
//! ([`UpstreamErrorKind`]); the SDK error stays attached as the source, so the
//! log keeps the whole chain while the client sees only the kind.

pub mod attempts;
pub mod credentials;
pub mod limit;
pub mod nodes;
pub mod sdk;

use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::model::{Session, SessionFilter, SessionId, SessionState};

/// One `DescribeSessions` request: one upstream page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageRequest {
    pub state: SessionState,
    pub filter: SessionFilter,
    /// `MaxResults`, 1..=200.
    pub page_size: u8,
    /// The upstream `NextToken`; `None` for the first page.
    pub token: Option<String>,
}

/// One upstream page. It may hold fewer than `page_size` sessions, even none,
/// while `next_token` is set: the service is allowed to answer that way.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Page {
    pub sessions: Vec<Session>,
    pub next_token: Option<String>,
    /// What a layer above derives from each session once, while the page
    /// is shared: not part of the page's value (a copy, a comparison or
    /// the shared cache's serialized form leaves it out).
    #[serde(skip)]
    pub memos: Memos,
}

impl Page {
    pub fn new(sessions: Vec<Session>, next_token: Option<String>) -> Self {
        Self {
            sessions,
            next_token,
            memos: Memos::default(),
        }
    }

    /// The hash of session `index`'s id ([`crate::cursor::id_hash`]),
    /// computed once for the page; `None` past its end.
    pub fn id_hash(&self, index: usize) -> Option<u64> {
        self.memos
            .id_hashes
            .get_or_init(|| {
                self.sessions
                    .iter()
                    .map(|s| crate::cursor::id_hash(s.session_id.as_str()))
                    .collect()
            })
            .get(index)
            .copied()
    }
}

/// One slot per session of a [`Page`], each filled at most once with bytes
/// derived from that session alone: the compiled writer keeps there the
/// JSON of the session's fields (`graphql::compiled`), so that every later
/// request reading the session from the cached page copies it instead of
/// writing it again. Opaque here; the slots are made on first use. A page's
/// sessions do not change once it is shared, which is what makes this sound.
///
/// The page's session ids' hashes ([`crate::cursor::id_hash`], what a
/// cursor carries for the last session it read) are kept here too,
/// computed for the whole page the first time one is asked for.
#[derive(Default)]
pub struct Memos {
    slots: OnceLock<Box<[MemoSlot]>>,
    id_hashes: OnceLock<Box<[u64]>>,
}

/// One session's memo: empty until first filled, then fixed.
pub type MemoSlot = OnceLock<Box<[u8]>>;

impl Memos {
    /// The slot of session `index` of `len`; `None` past the end.
    fn slot(&self, index: usize, len: usize) -> Option<&MemoSlot> {
        self.slots
            .get_or_init(|| (0..len).map(|_| OnceLock::new()).collect())
            .get(index)
    }
}

/// A copy starts without memos: they are derived, and cheap to derive again.
impl Clone for Memos {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Memos are derived from the sessions, which the page compares already.
impl PartialEq for Memos {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Memos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let filled = self.slots.get().map_or(0, |slots| {
            slots.iter().filter(|s| s.get().is_some()).count()
        });
        write!(f, "Memos({filled} filled)")
    }
}

/// One session of a page, shared with the page (and so with the page
/// cache) instead of copied: a window of 50 sessions costs 50 reference
/// counts, not 50 copies of a dozen strings.
#[derive(Clone)]
pub struct SessionRef {
    page: Arc<Page>,
    /// Always a valid index into `page.sessions`.
    index: usize,
}

impl SessionRef {
    /// Session `index` of `page`; `None` past its end.
    pub fn new(page: Arc<Page>, index: usize) -> Option<Self> {
        (index < page.sessions.len()).then_some(Self { page, index })
    }

    /// A session that is not in a page (a live event's).
    pub fn owned(session: Session) -> Self {
        let page = Page::new(vec![session], None);
        Self {
            page: Arc::new(page),
            index: 0,
        }
    }

    /// The session's memo slot in its page ([`Memos`]).
    pub fn memo(&self) -> Option<&MemoSlot> {
        self.page.memos.slot(self.index, self.page.sessions.len())
    }

    /// The hash of the session's id ([`crate::cursor::id_hash`]), from its
    /// page.
    pub fn id_hash(&self) -> u64 {
        self.page
            .id_hash(self.index)
            .unwrap_or_else(|| crate::cursor::id_hash(self.session_id.as_str()))
    }
}

impl std::ops::Deref for SessionRef {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.page.sessions[self.index]
    }
}

impl fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Session::fmt(self, f)
    }
}

/// Reads pages of sessions from one account and region.
#[async_trait]
pub trait SessionSource: Send + Sync {
    /// Fetches one page of `DescribeSessions`.
    async fn describe_sessions(&self, request: &PageRequest) -> Result<Page, UpstreamError>;

    /// The same page, shared: a cache hands out the page it holds instead
    /// of a copy of its (up to 200) sessions. The pager reads through this.
    async fn describe_sessions_shared(
        &self,
        request: &PageRequest,
    ) -> Result<std::sync::Arc<Page>, UpstreamError> {
        self.describe_sessions(request)
            .await
            .map(std::sync::Arc::new)
    }
}

/// Ends sessions in one account and region (`TerminateSession`). A trait
/// of its own, apart from [`SessionSource`], because it may use other
/// credentials (an account's `terminate_role_arn`) and is never cached.
#[async_trait]
pub trait SessionTerminator: Send + Sync {
    /// Ends the session; succeeds too when it had already ended (SSM's
    /// `TerminateSession` is idempotent).
    async fn terminate_session(&self, session_id: &SessionId) -> Result<(), UpstreamError>;
}

/// What went wrong upstream, in the terms a caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Rate limited; retry later (the SDK already retried with backoff).
    Throttled,
    /// The service refused our parameters. The gateway validates its input
    /// first, so this is a gap in that validation or a model change.
    InvalidInput,
    /// The `NextToken` was refused: expired, or minted for another request.
    InvalidToken,
    /// The credentials lack permission, or were not recognized.
    AccessDenied,
    /// Timeouts, connection failures, 5xx answers.
    Unavailable,
    /// Anything else: a response we could not read, an unexpected error code.
    Internal,
}

impl UpstreamErrorKind {
    /// The kind as a metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::InvalidInput => "invalid_input",
            Self::InvalidToken => "invalid_token",
            Self::AccessDenied => "access_denied",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::InvalidInput => "refused the request parameters",
            Self::InvalidToken => "refused the paging token",
            Self::AccessDenied => "denied access",
            Self::Unavailable => "unavailable",
            Self::Internal => "failed unexpectedly",
        }
    }
}

/// An upstream failure: its kind, and the underlying cause for the log.
/// Cheap to clone (the cause is shared), so one failure can answer every
/// caller that waited on the same upstream call.
#[derive(Clone, Debug)]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    source: Arc<anyhow::Error>,
}

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind, source: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            source: Arc::new(source.into()),
        }
    }

    /// The underlying cause with its whole chain, for logs.
    pub fn cause(&self) -> &anyhow::Error {
        &self.source
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SSM {}", self.kind.describe())
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref().as_ref())
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::SessionId;

    #[test]
    fn a_pages_id_hashes_are_its_sessions_ids_hashed() {
        let ids = ["s-0", "alice-0123456789abcdef0", "é-ü", "x"];
        let page = Arc::new(Page::new(
            ids.iter()
                .map(|id| Session::new(SessionId::parse(*id).unwrap()))
                .collect(),
            None,
        ));
        for (i, id) in ids.iter().enumerate() {
            let session = SessionRef::new(Arc::clone(&page), i).unwrap();
            assert_eq!(session.id_hash(), crate::cursor::id_hash(id), "{id}");
        }
        assert_eq!(page.id_hash(ids.len()), None);
        // A copy derives them again, for its own sessions.
        let mut copy = (*page).clone();
        copy.sessions.swap(0, 1);
        assert_eq!(copy.id_hash(0), Some(crate::cursor::id_hash(ids[1])));
    }
}
