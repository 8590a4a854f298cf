//! Reading a forward window of sessions out of paged upstream results.
//!
//! This is where a Relay connection meets SSM's `NextToken` paging. A
//! [`SourceReader`] walks one source (one account and region) page by page
//! and knows, after every session it hands out, the [`SourcePosition`] to
//! resume just past it: the token of the page holding the *next* session, the
//! page size, how many of that page's sessions are already consumed, and the
//! id of the last session handed out. Those positions go into cursors, so
//! resuming costs at most one re-fetch of the page a cursor points into, never
//! a walk from the start.
//!
//! Invariants:
//! - A page is consumed in upstream order; a resumed page skips past the
//!   cursor's `last_id` when that id is still in the page (so a page whose
//!   contents shifted does not repeat or drop sessions around the cursor), and
//!   falls back to the recorded position otherwise.
//! - When the session handed out ends its upstream page, the position points
//!   straight at the next page's token (`skip = 0`), so the next request need
//!   not re-fetch a page it has finished.
//! - Upstream pages may be short or empty while a token remains; the reader
//!   keeps fetching, bounded by the request's [`SourceBudget`] for that
//!   source (`limits.max_upstream_calls_per_source`), so neither a
//!   misbehaving upstream nor a greedy request can spend a source's calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;

use crate::cache::Freshness;
use crate::cursor::{FingerprintBuilder, LastId, SourcePosition};
use crate::model::{Session, SessionFilter, SessionState, SourceKey};
use crate::upstream::{
    Page, PageRequest, SessionRef, SessionSource, UpstreamError, UpstreamErrorKind,
};

/// What a window reads: the arguments that change the answer (and so go into
/// the cursor's fingerprint).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListQuery {
    pub state: SessionState,
    pub filter: SessionFilter,
}

impl ListQuery {
    /// Adds the canonical parts of the query to a cursor fingerprint.
    pub fn fingerprint_parts(&self, fingerprint: &mut FingerprintBuilder) {
        fingerprint
            .part(&[b"sessions/v1"])
            .part(&[self.state.as_str().as_bytes()]);
        for (key, value) in self.filter.to_pairs() {
            fingerprint
                .part(&[key.as_bytes()])
                .part(&[value.as_bytes()]);
        }
    }
}

/// Why a window could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    /// Upstream refused the token stored in the caller's cursor (expired, or
    /// the data behind it is gone): the cursor is no longer usable.
    #[error("the cursor's upstream position is no longer valid")]
    StaleCursor(#[source] UpstreamError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A reader used its source's budget (reported per source by
    /// [`read_window`], never returned by it).
    #[error("the request used its {limit} upstream calls on a source")]
    OverBudget { limit: usize },
}

/// What one request may still spend on one source: shared by every window
/// and lookup of the request that reads that source, so aliases cannot
/// multiply it.
#[derive(Debug)]
pub struct SourceBudget {
    limit: usize,
    used: AtomicUsize,
}

impl SourceBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes one call from the budget; false when none is left.
    fn try_spend(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used < self.limit).then_some(used + 1)
            })
            .is_ok()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Calls spent so far.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One request's budgets, one per source it reads, each of `limit` calls.
#[derive(Debug)]
pub struct RequestBudget {
    limit: usize,
    sources: Mutex<HashMap<SourceKey, Arc<SourceBudget>, crate::cache::Hasher>>,
}

impl RequestBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            // Room for a fan-out over a few accounts and regions without
            // growing as it goes.
            sources: Mutex::new(HashMap::with_capacity_and_hasher(
                8,
                crate::cache::Hasher::default(),
            )),
        }
    }

    /// The budget of `source` within this request.
    pub fn for_source(&self, source: &SourceKey) -> Arc<SourceBudget> {
        // A std Mutex: nothing awaits while it is held.
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources
            .entry(source.clone())
            .or_insert_with(|| SourceBudget::new(self.limit))
            .clone()
    }

    /// Upstream calls spent in all, per source.
    pub fn spent(&self) -> Vec<(SourceKey, usize)> {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let mut spent: Vec<_> = sources.iter().map(|(k, b)| (k.clone(), b.used())).collect();
        spent.sort();
        spent
    }
}

/// Why a source is missing from a window.
#[derive(Debug)]
pub enum SourceFailure {
    /// The source failed upstream.
    Upstream(UpstreamError),
    /// The request spent its `limit` calls on the source.
    OverBudget { limit: usize },
}

/// One session of a window: which source it came from, and the sources'
/// positions that changed with it, so that where every source resumes just
/// past it (the edge's cursor) is the window's items' changes up to it
/// ([`Window::after`]).
#[derive(Clone, Debug)]
pub struct Item {
    pub session: SessionRef,
    /// Index into the readers the window was read from.
    pub source: usize,
    pub changes: Changes,
}

/// Positions that changed, by reader index: mostly the taken source's
/// alone; every source's in a window's first item.
#[derive(Clone, Debug)]
pub enum Changes {
    One(usize, SourcePosition),
    Many(Vec<(usize, SourcePosition)>),
}

impl Changes {
    /// Applies these changes to `positions` (one per reader).
    pub fn apply_to(&self, positions: &mut [SourcePosition]) {
        self.each(|i, position| {
            if let Some(slot) = positions.get_mut(i) {
                *slot = position.clone();
            }
        });
    }

    /// Calls `f` with each changed reader's index and new position.
    pub fn each(&self, mut f: impl FnMut(usize, &SourcePosition)) {
        match self {
            Self::One(i, position) => f(*i, position),
            Self::Many(changes) => changes.iter().for_each(|(i, position)| f(*i, position)),
        }
    }
}

enum State {
    /// A page still to fetch, from a cursor or from the previous page's token.
    Pending {
        token: Option<Arc<str>>,
        page_size: u8,
        skip: u32,
        last_id: Option<LastId>,
        /// The token came from a caller's cursor: refusal means a stale cursor.
        from_cursor: bool,
    },
    Loaded {
        page_size: u8,
        /// The token the page was fetched with.
        token: Option<Arc<str>>,
        /// The page, shared with the page cache (never copied whole).
        page: Arc<Page>,
        /// Index of the next session to hand out.
        next: usize,
        next_token: Option<Arc<str>>,
    },
    Exhausted,
}

/// Walks one source forward from a position; see the module docs.
pub struct SourceReader {
    source: Arc<dyn SessionSource>,
    query: ListQuery,
    /// `MaxResults` for pages this reader fetches fresh.
    page_size: u8,
    state: State,
    /// The last session handed out (or the cursor's), for positions: its
    /// id and id hash, computed once when it is taken. Tokens and ids are
    /// shared (`Arc<str>`): every edge's cursor holds every source's
    /// position, so they are cloned once per edge and source.
    last_taken: LastId,
    calls: usize,
    budget: Arc<SourceBudget>,
    /// Whether the position may have changed since a window last recorded
    /// it (every change of state or of the last session sets it).
    moved: bool,
}

impl SourceReader {
    /// A reader starting at `position`, fetching new pages `page_size` at a time.
    pub fn new(
        source: Arc<dyn SessionSource>,
        query: ListQuery,
        position: SourcePosition,
        page_size: u8,
        budget: Arc<SourceBudget>,
    ) -> Self {
        let mut last_taken = LastId::None;
        let state = match position {
            SourcePosition::Start => State::Pending {
                token: None,
                page_size,
                skip: 0,
                last_id: None,
                from_cursor: false,
            },
            SourcePosition::InPage {
                token,
                page_size: cursor_page_size,
                skip,
                last_id,
            } => {
                last_taken = last_id.clone();
                State::Pending {
                    token,
                    page_size: cursor_page_size,
                    skip,
                    last_id: Some(last_id),
                    from_cursor: true,
                }
            }
            SourcePosition::Exhausted => State::Exhausted,
        };
        Self {
            source,
            query,
            page_size,
            state,
            last_taken,
            calls: 0,
            budget,
            moved: true,
        }
    }

    /// Upstream calls made so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The next session without consuming it, fetching pages as needed;
    /// `None` once the source has no more sessions. On an error the reader
    /// stays where it was, so its [`position`](Self::position) retries.
    pub async fn peek(&mut self) -> Result<Option<&Session>, PagingError> {
        loop {
            match &mut self.state {
                State::Exhausted => return Ok(None),
                State::Loaded {
                    page,
                    next,
                    next_token,
                    ..
                } => {
                    if *next < page.sessions.len() {
                        break;
                    }
                    self.moved = true;
                    self.state = match next_token.take() {
                        Some(token) => State::Pending {
                            token: Some(token),
                            page_size: self.page_size,
                            skip: 0,
                            last_id: None,
                            from_cursor: false,
                        },
                        None => State::Exhausted,
                    };
                }
                State::Pending { .. } => {
                    if !self.budget.try_spend() {
                        return Err(PagingError::OverBudget {
                            limit: self.budget.limit(),
                        });
                    }
                    self.fetch().await?;
                }
            }
        }
        match &self.state {
            State::Loaded { page, next, .. } => Ok(page.sessions.get(*next)),
            _ => Ok(None),
        }
    }

    /// What [`peek`](Self::peek) would return when it needs no upstream
    /// call: `Some(head)` (`head` `None` once the source has no more), or
    /// `None` when a page must be fetched first.
    fn ready(&self) -> Option<Option<&Session>> {
        match &self.state {
            State::Exhausted => Some(None),
            State::Loaded {
                page,
                next,
                next_token,
                ..
            } => match page.sessions.get(*next) {
                Some(session) => Some(Some(session)),
                // `peek` would turn this into `Exhausted`; the position is
                // `Exhausted` either way.
                None if next_token.is_none() => Some(None),
                None => None,
            },
            State::Pending { .. } => None,
        }
    }

    /// Consumes the session [`peek`](Self::peek) returned; `None` when there
    /// is none (call `peek` first).
    pub fn take(&mut self) -> Option<SessionRef> {
        let State::Loaded { page, next, .. } = &mut self.state else {
            return None;
        };
        let session = SessionRef::new(Arc::clone(page), *next)?;
        *next += 1;
        self.last_taken = LastId::of_hashed(session.session_id.shared(), session.id_hash());
        self.moved = true;
        Some(session)
    }

    /// Where to resume this source to get its next session again.
    pub fn position(&self) -> SourcePosition {
        match &self.state {
            State::Exhausted => SourcePosition::Exhausted,
            State::Pending {
                token,
                page_size,
                skip,
                last_id,
                ..
            } => match last_id
                .clone()
                .or_else(|| Some(self.last_taken.clone()).filter(|last| !last.is_none()))
            {
                None if token.is_none() && *skip == 0 => SourcePosition::Start,
                last_id => SourcePosition::InPage {
                    token: token.clone(),
                    page_size: *page_size,
                    skip: *skip,
                    last_id: last_id.unwrap_or(LastId::None),
                },
            },
            State::Loaded {
                page_size,
                token,
                page,
                next,
                next_token,
            } => {
                let last_id = self.last_taken.clone();
                if *next < page.sessions.len() {
                    SourcePosition::InPage {
                        token: token.clone(),
                        page_size: *page_size,
                        skip: u32::try_from(*next).unwrap_or(u32::MAX),
                        last_id,
                    }
                } else if let Some(next_token) = next_token {
                    // The page is finished: point straight at the next one.
                    SourcePosition::InPage {
                        token: Some(next_token.clone()),
                        page_size: self.page_size,
                        skip: 0,
                        last_id,
                    }
                } else {
                    SourcePosition::Exhausted
                }
            }
        }
    }

    async fn fetch(&mut self) -> Result<(), PagingError> {
        let State::Pending {
            token,
            page_size,
            skip,
            last_id,
            from_cursor,
        } = &self.state
        else {
            return Ok(());
        };
        let (skip, from_cursor) = (*skip, *from_cursor);
        let last_id = last_id.clone();
        let token = token.clone();
        let request = PageRequest {
            state: self.query.state,
            filter: self.query.filter.clone(),
            page_size: *page_size,
            token: token.as_deref().map(str::to_owned),
        };
        self.calls += 1;
        Freshness::note_upstream_read();
        // On an error the state stays Pending: the position still names this page.
        let page = match self.source.describe_sessions_shared(&request).await {
            Ok(page) => page,
            Err(e) if from_cursor && e.kind == UpstreamErrorKind::InvalidToken => {
                return Err(PagingError::StaleCursor(e));
            }
            Err(e) => return Err(e.into()),
        };
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let next = match last_id.and_then(|last| find(&page, &last, skip)) {
            Some(found) => {
                // Known by its hash only (a version 3 cursor): now by its id,
                // whose hash is the one `find` matched.
                if let LastId::Hash(hash) = self.last_taken {
                    self.last_taken =
                        LastId::of_hashed(page.sessions[found].session_id.shared(), hash);
                }
                found + 1
            }
            None => skip.min(page.sessions.len()),
        };
        self.moved = true;
        self.state = State::Loaded {
            page_size: request.page_size,
            token,
            next_token: page.next_token.as_deref().map(Into::into),
            page,
            next,
        };
        Ok(())
    }
}

/// Where the session `last` names is in `page`: mostly just before `skip`
/// (the page is as it was), else anywhere (the page shifted).
fn find(page: &Page, last: &LastId, skip: usize) -> Option<usize> {
    if last.is_none() {
        return None;
    }
    let is_last = |s: &Session| last.is(s.session_id.as_str());
    skip.checked_sub(1)
        .filter(|&i| page.sessions.get(i).is_some_and(is_last))
        .or_else(|| page.sessions.iter().position(is_last))
}

/// A forward window of at most `first` sessions, merged across sources.
#[derive(Debug)]
pub struct Window {
    pub items: Vec<Item>,
    /// False only when no further session exists. `None` when not asked for.
    pub has_next_page: Option<bool>,
    /// Sources that failed while the window was read, by reader index: their
    /// sessions are missing from it, and the cursors resume them where they
    /// stopped.
    pub failures: Vec<(usize, SourceFailure)>,
    /// Upstream calls the window cost, all sources together.
    pub calls: usize,
    /// Where every source stands after the window (the last item's `after`
    /// when there are items): what an empty window stopped by its budget
    /// resumes from.
    pub positions: Vec<SourcePosition>,
}

#[cfg(test)]
impl Window {
    /// Where every source resumes just past item `k` (the edge's cursor):
    /// the changes of items `0..=k` applied in order.
    pub fn after(&self, k: usize) -> Vec<SourcePosition> {
        let mut positions = vec![SourcePosition::Start; self.positions.len()];
        for item in &self.items[..=k] {
            item.changes.apply_to(&mut positions);
        }
        positions
    }
}

/// The merge order: newest `startDate` first (a session without one last),
/// then the lower source index, so ties between sources are deterministic;
/// within a source, upstream order is kept as it comes.
type HeadKey = (i128, usize);

/// The merge order of a `startDate` as one number, smaller first: the
/// newest first, none last. The same order as `Reverse(start)`, in a
/// single comparison (a window compares a head per source per item).
fn merge_order(start: Option<DateTime<Utc>>) -> i128 {
    match start {
        // Seconds, then nanoseconds (below 2^32, leap seconds included),
        // as chrono orders them.
        Some(t) => -((i128::from(t.timestamp()) << 32) | i128::from(t.timestamp_subsec_nanos())),
        None => i128::MAX,
    }
}

/// Each reader's head key as last seen, so that taking a session recomputes
/// only the head of the reader it came from. `None` for a reader whose head
/// is not known yet (or changed); `Some(None)` for one with no head (ended,
/// or failed).
struct Heads(Vec<Option<Option<HeadKey>>>);

impl Heads {
    fn new(readers: usize) -> Self {
        Self(vec![None; readers])
    }

    /// Forgets reader `i`'s head (a session was taken from it).
    fn moved(&mut self, i: usize) {
        self.0[i] = None;
    }
}

/// The head key of reader `i` when its head is in a page already read
/// (`Some(None)`: no head), `None` when it must fetch first.
fn ready_key(reader: &SourceReader, i: usize) -> Option<Option<HeadKey>> {
    reader
        .ready()
        .map(|head| head.map(|s| (merge_order(s.start_date), i)))
}

/// The reader whose head comes next, fetching what is needed: when some
/// live reader's head is not in a page already read, every live reader is
/// peeked at once (so a fan-out costs one round trip, not one per source);
/// a failing source is recorded in `failed` and left out from then on.
/// `None` when no reader has a head. Mostly only the reader last taken from
/// is looked at: no future, no allocation.
async fn next_head(
    readers: &mut [SourceReader],
    failed: &mut [Option<SourceFailure>],
    heads: &mut Heads,
) -> Result<Option<usize>, PagingError> {
    let mut must_fetch = false;
    for (i, head) in heads.0.iter_mut().enumerate() {
        if head.is_some() {
            continue;
        }
        if failed[i].is_some() {
            *head = Some(None);
            continue;
        }
        match ready_key(&readers[i], i) {
            Some(key) => *head = Some(key),
            None => must_fetch = true,
        }
    }
    if must_fetch {
        let peeked = peek_all(readers, failed).await?;
        for (head, key) in heads.0.iter_mut().zip(peeked) {
            *head = Some(key);
        }
    }
    Ok(heads.0.iter().flatten().flatten().min().map(|&(_, i)| i))
}

/// Peeks every live reader at once and returns each one's head key; a
/// failing source is recorded in `failed` and left out from then on.
async fn peek_all(
    readers: &mut [SourceReader],
    failed: &mut [Option<SourceFailure>],
) -> Result<Vec<Option<HeadKey>>, PagingError> {
    let results = join_all(readers.iter_mut().zip(failed.iter()).enumerate().map(
        |(i, (reader, failed))| async move {
            if failed.is_some() {
                return Ok(None);
            }
            reader
                .peek()
                .await
                .map(|head| head.map(|s| (merge_order(s.start_date), i)))
        },
    ))
    .await;
    let mut heads = Vec::with_capacity(results.len());
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(head) => heads.push(head),
            Err(PagingError::Upstream(e)) => {
                failed[i] = Some(SourceFailure::Upstream(e));
                heads.push(None);
            }
            Err(PagingError::OverBudget { limit, .. }) => {
                failed[i] = Some(SourceFailure::OverBudget { limit });
                heads.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(heads)
}

/// Reads up to `first` sessions merged from `readers`, filling across short
/// pages. With `want_has_next`, looks ahead (at most one page per source,
/// plus any empty ones) to answer `hasNextPage` exactly.
///
/// A source that fails is left out of the window and reported in
/// `failures`; the window fails as a whole only when nothing could be read
/// and every source failed, or when a cursor's token is refused.
pub async fn read_window(
    readers: &mut [SourceReader],
    first: usize,
    want_has_next: bool,
) -> Result<Window, PagingError> {
    let mut failed: Vec<Option<SourceFailure>> = readers.iter().map(|_| None).collect();
    let mut items = Vec::with_capacity(first.min(1024));
    let mut heads = Heads::new(readers.len());
    let mut ended = false;
    while items.len() < first {
        let Some(best) = next_head(readers, &mut failed, &mut heads).await? else {
            ended = true;
            break;
        };
        heads.moved(best);
        if let Some(session) = readers[best].take() {
            // Only positions that may have changed are recorded (mostly the
            // taken source's); every one with the window's first item.
            let first_item = items.is_empty();
            let (mut one, mut many) = (None, Vec::new());
            for (i, reader) in readers.iter_mut().enumerate() {
                if first_item || reader.moved {
                    reader.moved = false;
                    let change = (i, reader.position());
                    match one.take() {
                        None if many.is_empty() => one = Some(change),
                        None => many.push(change),
                        Some(earlier) => many.extend([earlier, change]),
                    }
                }
            }
            let changes = match one {
                Some((i, position)) => Changes::One(i, position),
                None => Changes::Many(many),
            };
            items.push(Item {
                session,
                source: best,
                changes,
            });
        }
    }
    let failures: Vec<(usize, SourceFailure)> = failed
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| e.map(|e| (i, e)))
        .collect();
    // Nothing read and every source failed upstream: the window fails. (A
    // source stopped by its budget has made progress: the window comes back
    // empty with its positions, so paging can go on from there.)
    if items.is_empty()
        && !readers.is_empty()
        && failures.len() == readers.len()
        && failures
            .iter()
            .all(|(_, f)| matches!(f, SourceFailure::Upstream(_)))
    {
        let (_, first_failure) = failures.into_iter().next().expect("one failure per reader");
        let SourceFailure::Upstream(e) = first_failure else {
            unreachable!("all failures are upstream ones")
        };
        return Err(PagingError::Upstream(e));
    }
    let has_next_page = if !failures.is_empty() {
        // A failed source may hold more: never a false "no more".
        Some(true)
    } else if ended {
        Some(false)
    } else if items.len() < first {
        // Not ended and nothing failed: cannot happen; "maybe" is safe.
        Some(true)
    } else if want_has_next {
        let mut look_ahead_failed: Vec<Option<SourceFailure>> =
            readers.iter().map(|_| None).collect();
        // Nothing failed in the window: `heads` still holds every reader's.
        match next_head(readers, &mut look_ahead_failed, &mut heads).await {
            Err(e) if items.is_empty() => return Err(e),
            Ok(head) if look_ahead_failed.iter().all(Option::is_none) => Some(head.is_some()),
            // The sessions in hand are good; a failed look-ahead only means
            // "maybe more", never a false "no more".
            result => {
                tracing::warn!(
                    error = ?result.err(),
                    failed = look_ahead_failed.iter().filter(|f| f.is_some()).count(),
                    "look-ahead for hasNextPage failed; answering true"
                );
                Some(true)
            }
        }
    } else {
        None
    };
    Ok(Window {
        items,
        has_next_page,
        failures,
        calls: readers.iter().map(SourceReader::calls).sum(),
        positions: readers.iter().map(SourceReader::position).collect(),
    })
}

#[cfg(test)]
mod tests {
    //! The pager against a scripted source: the parts the emulator cannot
    //! easily be made to do (fail on cue, answer endless empty pages).

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::model::SessionId;

    fn start_date() -> impl proptest::strategy::Strategy<Value = Option<DateTime<Utc>>> {
        use proptest::prelude::*;
        // Whole seconds across the representable range, a few shared
        // seconds (ties on the fraction), and leap-second fractions.
        let seconds = prop_oneof![
            -8_334_601_228_800i64..8_210_266_876_800,
            Just(0i64),
            Just(1_700_000_000i64),
        ];
        let nanos = prop_oneof![
            0u32..1_000_000_000,
            1_000_000_000u32..2_000_000_000,
            Just(0u32)
        ];
        proptest::option::weighted(0.9, (seconds, nanos))
            .prop_map(|t| t.and_then(|(secs, nanos)| DateTime::from_timestamp(secs, nanos)))
    }

    proptest::proptest! {
        #[test]
        fn merge_order_orders_as_reversed_start_dates(a in start_date(), b in start_date()) {
            proptest::prop_assert_eq!(
                merge_order(a).cmp(&merge_order(b)),
                std::cmp::Reverse(a).cmp(&std::cmp::Reverse(b)),
                "{:?} {:?}", a, b
            );
        }
    }

    /// Answers each request with the next scripted result, recording requests.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<Page, UpstreamErrorKind>>>,
        requests: Mutex<Vec<PageRequest>>,
    }

    #[async_trait]
    impl SessionSource for Scripted {
        async fn describe_sessions(&self, request: &PageRequest) -> Result<Page, UpstreamError> {
            self.requests.lock().unwrap().push(request.clone());
            match self.answers.lock().unwrap().pop_front() {
                Some(Ok(page)) => Ok(page),
                Some(Err(kind)) => Err(UpstreamError::new(kind, anyhow::anyhow!("scripted"))),
                None => panic!("unscripted request {request:?}"),
            }
        }
    }

    fn session(id: &str) -> Session {
        Session::new(SessionId::parse(id).unwrap())
    }

    fn page(ids: &[&str], next: Option<&str>) -> Result<Page, UpstreamErrorKind> {
        Ok(Page::new(
            ids.iter().map(|id| session(id)).collect(),
            next.map(str::to_owned),
        ))
    }

    fn reader(source: &Arc<Scripted>, position: SourcePosition, budget: usize) -> SourceReader {
        reader_with(source, position, SourceBudget::new(budget))
    }

    fn reader_with(
        source: &Arc<Scripted>,
        position: SourcePosition,
        budget: Arc<SourceBudget>,
    ) -> SourceReader {
        let query = ListQuery {
            state: SessionState::History,
            filter: SessionFilter::default(),
        };
        SourceReader::new(source.clone(), query, position, 3, budget)
    }

    fn upstream_kind(failure: &SourceFailure) -> Option<UpstreamErrorKind> {
        match failure {
            SourceFailure::Upstream(e) => Some(e.kind),
            SourceFailure::OverBudget { .. } => None,
        }
    }

    fn scripted(answers: Vec<Result<Page, UpstreamErrorKind>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(answers.into()),
            ..Default::default()
        })
    }

    fn ids(window: &Window) -> Vec<&str> {
        window
            .items
            .iter()
            .map(|i| i.session.session_id.as_str())
            .collect()
    }

    #[tokio::test]
    async fn fills_across_short_and_empty_pages_and_records_positions() {
        let source = scripted(vec![
            page(&["a"], Some("t1")),
            page(&[], Some("t2")),
            page(&["b", "c"], Some("t3")),
        ]);
        let mut r = reader(&source, SourcePosition::Start, 10);
        let w = read_window(std::slice::from_mut(&mut r), 2, false)
            .await
            .unwrap();
        assert_eq!(ids(&w), ["a", "b"]);
        assert_eq!(w.calls, 3);
        // "a" ended its page: resume straight at the next token.
        assert_eq!(
            w.after(0)[0],
            SourcePosition::InPage {
                token: Some("t1".into()),
                page_size: 3,
                skip: 0,
                last_id: "a".into()
            }
        );
        // "b" is mid-page: re-fetch "t2"'s successor page and skip one.
        assert_eq!(
            w.after(1)[0],
            SourcePosition::InPage {
                token: Some("t2".into()),
                page_size: 3,
                skip: 1,
                last_id: "b".into()
            }
        );
        assert_eq!(w.has_next_page, None, "no look-ahead unless asked");
    }

    #[tokio::test]
    async fn resumes_past_last_id_even_when_the_page_shifted() {
        // The cursor says: page "t1", one consumed, last was "b". Two
        // sessions arrived in front since, so "b" is now third.
        let source = scripted(vec![page(&["x", "a", "b", "c"], None)]);
        let position = SourcePosition::InPage {
            token: Some("t1".into()),
            page_size: 4,
            skip: 2,
            last_id: "b".into(),
        };
        let mut r = reader(&source, position, 10);
        let w = read_window(std::slice::from_mut(&mut r), 5, true)
            .await
            .unwrap();
        assert_eq!(ids(&w), ["c"]);
        assert_eq!(w.has_next_page, Some(false));
        let sent = source.requests.lock().unwrap();
        assert_eq!(sent[0].token.as_deref(), Some("t1"));
        assert_eq!(
            sent[0].page_size, 4,
            "the cursor's page size re-fetches its page"
        );
    }

    #[tokio::test]
    async fn a_last_id_known_by_its_hash_resumes_as_the_id_does() {
        // A version 3 cursor carries the hash of the last id. In place
        // (just before `skip`), shifted, and gone: as with the id.
        for (sessions, expected) in [
            (&["a", "b", "c"][..], &["c"][..]),
            (&["x", "a", "b", "c"][..], &["c"][..]),
            (&["a", "c", "d"][..], &["d"][..]),
        ] {
            let source = scripted(vec![page(sessions, None)]);
            let position = SourcePosition::InPage {
                token: Some("t1".into()),
                page_size: 4,
                skip: 2,
                last_id: LastId::Hash(crate::cursor::id_hash("b")),
            };
            let mut r = reader(&source, position, 10);
            let w = read_window(std::slice::from_mut(&mut r), 5, true)
                .await
                .unwrap();
            assert_eq!(ids(&w), expected, "{sessions:?}");
        }
        // Found, the hash becomes the id again (for cursors of versions 1
        // and 2), even when the window takes nothing from this source.
        let source = scripted(vec![page(&["a", "b", "c"], None)]);
        let position = SourcePosition::InPage {
            token: None,
            page_size: 4,
            skip: 2,
            last_id: LastId::Hash(crate::cursor::id_hash("b")),
        };
        let mut r = reader(&source, position, 10);
        r.peek().await.unwrap();
        let SourcePosition::InPage { last_id, skip, .. } = r.position() else {
            panic!("{:?}", r.position())
        };
        assert_eq!((last_id.id(), skip), (Some("b"), 2));
    }

    #[tokio::test]
    async fn falls_back_to_the_position_when_last_id_is_gone() {
        let source = scripted(vec![page(&["a", "c", "d"], None)]);
        let position = SourcePosition::InPage {
            token: None,
            page_size: 3,
            skip: 2,
            last_id: "b".into(),
        };
        let mut r = reader(&source, position, 10);
        let w = read_window(std::slice::from_mut(&mut r), 5, false)
            .await
            .unwrap();
        assert_eq!(ids(&w), ["d"]);
    }

    #[tokio::test]
    async fn an_exhausted_position_costs_nothing() {
        let source = scripted(vec![]);
        let mut r = reader(&source, SourcePosition::Exhausted, 10);
        let w = read_window(std::slice::from_mut(&mut r), 5, true)
            .await
            .unwrap();
        assert!(w.items.is_empty());
        assert_eq!(w.has_next_page, Some(false));
        assert_eq!(w.calls, 0);
    }

    #[tokio::test]
    async fn look_ahead_skips_empty_pages_to_answer_exactly() {
        let source = scripted(vec![
            page(&["a", "b"], Some("t1")),
            page(&[], Some("t2")),
            page(&[], None),
        ]);
        let mut r = reader(&source, SourcePosition::Start, 10);
        let w = read_window(std::slice::from_mut(&mut r), 2, true)
            .await
            .unwrap();
        assert_eq!(w.has_next_page, Some(false));
        assert_eq!(w.calls, 3);
    }

    #[tokio::test]
    async fn endless_empty_pages_stop_at_the_budget() {
        let mut answers = vec![page(&["a"], Some("t"))];
        answers.extend((0..20).map(|_| page(&[], Some("t"))));
        let source = scripted(answers);
        // With a session in hand: return it, "maybe more", and say which
        // source ran out.
        let mut r = reader(&source, SourcePosition::Start, 5);
        let w = read_window(std::slice::from_mut(&mut r), 3, true)
            .await
            .unwrap();
        assert_eq!(ids(&w), ["a"]);
        assert_eq!(w.has_next_page, Some(true));
        assert_eq!(w.calls, 5);
        assert!(matches!(
            w.failures.as_slice(),
            [(0, SourceFailure::OverBudget { limit: 5 })]
        ));
        // With nothing in hand: an empty window, the failure, and where to
        // resume (past the empty pages already read).
        let mut r = reader(&source, SourcePosition::Start, 5);
        let w = read_window(std::slice::from_mut(&mut r), 3, true)
            .await
            .unwrap();
        assert!(w.items.is_empty());
        assert_eq!(w.failures.len(), 1);
        assert_eq!(w.has_next_page, Some(true));
        assert!(matches!(
            &w.positions[0],
            SourcePosition::InPage { token: Some(t), .. } if &**t == "t"
        ));
    }

    #[tokio::test]
    async fn windows_of_one_request_share_a_sources_budget() {
        let pages = (0..10).map(|i| page(&["x"], Some(if i < 9 { "t" } else { "u" })));
        let source = scripted(pages.collect());
        let shared = SourceBudget::new(4);
        // Two windows (two aliases, say) on one source: 4 calls in all.
        let mut first = reader_with(&source, SourcePosition::Start, shared.clone());
        let w = read_window(std::slice::from_mut(&mut first), 3, false)
            .await
            .unwrap();
        assert_eq!(w.items.len(), 3);
        let mut second = reader_with(&source, SourcePosition::Start, shared.clone());
        let w = read_window(std::slice::from_mut(&mut second), 3, false)
            .await
            .unwrap();
        assert_eq!(w.items.len(), 1, "one call left for the second window");
        assert!(matches!(
            w.failures.as_slice(),
            [(0, SourceFailure::OverBudget { .. })]
        ));
        assert_eq!(shared.used(), 4);
        assert_eq!(source.requests.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_request_budget_is_per_source() {
        use crate::model::{AccountId, Region};
        let key = |r: &str| SourceKey {
            account: AccountId::parse("111122223333").unwrap(),
            region: Region::parse(r).unwrap(),
        };
        let budget = RequestBudget::new(2);
        assert!(budget.for_source(&key("us-east-1")).try_spend());
        assert!(budget.for_source(&key("us-east-1")).try_spend());
        assert!(!budget.for_source(&key("us-east-1")).try_spend());
        assert!(budget.for_source(&key("eu-west-1")).try_spend());
        assert_eq!(
            budget.spent(),
            [(key("eu-west-1"), 1), (key("us-east-1"), 2)]
        );
    }

    #[tokio::test]
    async fn a_refused_cursor_token_is_a_stale_cursor_but_a_fresh_one_is_not() {
        let source = scripted(vec![Err(UpstreamErrorKind::InvalidToken)]);
        let position = SourcePosition::InPage {
            token: Some("old".into()),
            page_size: 3,
            skip: 1,
            last_id: "a".into(),
        };
        let mut r = reader(&source, position, 10);
        assert!(matches!(
            read_window(std::slice::from_mut(&mut r), 2, false).await,
            Err(PagingError::StaleCursor(_))
        ));

        // A token upstream just gave us is refused mid-window: the session in
        // hand comes back, the failure is reported, and the position retries.
        let source = scripted(vec![
            page(&["a"], Some("t1")),
            Err(UpstreamErrorKind::InvalidToken),
        ]);
        let mut r = reader(&source, SourcePosition::Start, 10);
        let w = read_window(std::slice::from_mut(&mut r), 2, false)
            .await
            .unwrap();
        assert_eq!(ids(&w), ["a"]);
        assert_eq!(w.failures.len(), 1);
        assert_eq!(
            upstream_kind(&w.failures[0].1),
            Some(UpstreamErrorKind::InvalidToken)
        );
        assert_eq!(w.has_next_page, Some(true));
        assert_eq!(
            w.after(0)[0],
            SourcePosition::InPage {
                token: Some("t1".into()),
                page_size: 3,
                skip: 0,
                last_id: "a".into()
            }
        );
    }

    #[tokio::test]
    async fn upstream_errors_fail_the_window_but_not_a_full_one_look_ahead() {
        let source = scripted(vec![Err(UpstreamErrorKind::Throttled)]);
        let mut r = reader(&source, SourcePosition::Start, 10);
        assert!(matches!(
            read_window(std::slice::from_mut(&mut r), 2, false).await,
            Err(PagingError::Upstream(e)) if e.kind == UpstreamErrorKind::Throttled
        ));

        let source = scripted(vec![
            page(&["a", "b"], Some("t1")),
            Err(UpstreamErrorKind::Throttled),
        ]);
        let mut r = reader(&source, SourcePosition::Start, 10);
        let w = read_window(std::slice::from_mut(&mut r), 2, true)
            .await
            .unwrap();
        assert_eq!(ids(&w), ["a", "b"]);
        assert_eq!(w.has_next_page, Some(true));
    }

    fn dated(id: &str, secs: i64) -> Session {
        Session {
            start_date: chrono::DateTime::from_timestamp(secs, 0),
            ..session(id)
        }
    }

    fn dated_page(items: &[(&str, i64)], next: Option<&str>) -> Result<Page, UpstreamErrorKind> {
        Ok(Page::new(
            items.iter().map(|(id, t)| dated(id, *t)).collect(),
            next.map(str::to_owned),
        ))
    }

    #[tokio::test]
    async fn sources_merge_newest_first_with_ties_to_the_lower_source() {
        let a = scripted(vec![dated_page(
            &[("a1", 50), ("a2", 30), ("a3", 10)],
            None,
        )]);
        let b = scripted(vec![
            dated_page(&[("b1", 40), ("b2", 30)], Some("bt")),
            dated_page(&[("b3", 20)], None),
        ]);
        let mut readers = vec![
            reader(&a, SourcePosition::Start, 10),
            reader(&b, SourcePosition::Start, 10),
        ];
        let w = read_window(&mut readers, 4, true).await.unwrap();
        assert_eq!(ids(&w), ["a1", "b1", "a2", "b2"]);
        assert_eq!(
            w.items.iter().map(|i| i.source).collect::<Vec<_>>(),
            [0, 1, 0, 1]
        );
        assert_eq!(w.has_next_page, Some(true));
        // After "b2" (the end of b's first page), both positions are in the
        // cursor: a mid-page, b straight at its next page.
        assert_eq!(
            w.after(3),
            vec![
                SourcePosition::InPage {
                    token: None,
                    page_size: 3,
                    skip: 2,
                    last_id: "a2".into()
                },
                SourcePosition::InPage {
                    token: Some("bt".into()),
                    page_size: 3,
                    skip: 0,
                    last_id: "b2".into()
                },
            ]
        );
        // Resuming from that cursor yields the rest, in order.
        let a = scripted(vec![dated_page(
            &[("a1", 50), ("a2", 30), ("a3", 10)],
            None,
        )]);
        let b = scripted(vec![dated_page(&[("b3", 20)], None)]);
        let after = w.after(3);
        let mut readers = vec![
            reader(&a, after[0].clone(), 10),
            reader(&b, after[1].clone(), 10),
        ];
        let w = read_window(&mut readers, 10, true).await.unwrap();
        assert_eq!(ids(&w), ["b3", "a3"]);
        assert_eq!(w.has_next_page, Some(false));
    }

    #[tokio::test]
    async fn an_edge_records_every_position_that_moved_with_it() {
        // a's second page is empty: reaching its third page moves a's
        // position while b's session is taken, and b1's edge records it.
        let a = scripted(vec![
            dated_page(&[("a1", 50)], Some("at2")),
            dated_page(&[], Some("at3")),
            dated_page(&[("a3", 10)], None),
        ]);
        let b = scripted(vec![dated_page(&[("b1", 40), ("b2", 30), ("b3", 5)], None)]);
        let mut readers = vec![
            reader(&a, SourcePosition::Start, 10),
            reader(&b, SourcePosition::Start, 10),
        ];
        let w = read_window(&mut readers, 10, true).await.unwrap();
        assert_eq!(ids(&w), ["a1", "b1", "b2", "a3", "b3"]);
        let at = |token: Option<&str>, skip: u32, last: &str| SourcePosition::InPage {
            token: token.map(Into::into),
            page_size: 3,
            skip,
            last_id: last.into(),
        };
        let expected = [
            [at(Some("at2"), 0, "a1"), at(None, 0, "")],
            [at(Some("at3"), 0, "a1"), at(None, 1, "b1")],
            [at(Some("at3"), 0, "a1"), at(None, 2, "b2")],
            [SourcePosition::Exhausted, at(None, 2, "b2")],
            [SourcePosition::Exhausted, SourcePosition::Exhausted],
        ];
        for (k, positions) in expected.iter().enumerate() {
            assert_eq!(w.after(k), positions.to_vec(), "after item {k}");
        }
        // The first item carries every source, b1 both (a moved), b2 its own.
        assert!(matches!(&w.items[0].changes, Changes::Many(c) if c.len() == 2));
        assert!(matches!(&w.items[1].changes, Changes::Many(c) if c.len() == 2));
        assert!(matches!(w.items[2].changes, Changes::One(1, _)));
    }

    #[tokio::test]
    async fn a_failed_source_is_reported_and_resumed_where_it_stopped() {
        let a = scripted(vec![dated_page(&[("a1", 50), ("a2", 30)], None)]);
        let b = scripted(vec![
            dated_page(&[("b1", 40)], Some("bt")),
            Err(UpstreamErrorKind::Throttled),
        ]);
        let mut readers = vec![
            reader(&a, SourcePosition::Start, 10),
            reader(&b, SourcePosition::Start, 10),
        ];
        let w = read_window(&mut readers, 5, true).await.unwrap();
        assert_eq!(ids(&w), ["a1", "b1", "a2"]);
        assert_eq!(w.failures.len(), 1);
        assert_eq!(w.failures[0].0, 1);
        assert_eq!(
            w.has_next_page,
            Some(true),
            "the failed source may hold more"
        );
        assert_eq!(
            w.after(2)[1],
            SourcePosition::InPage {
                token: Some("bt".into()),
                page_size: 3,
                skip: 0,
                last_id: "b1".into()
            },
            "b resumes at the page that failed"
        );
    }

    #[tokio::test]
    async fn when_every_source_fails_the_window_fails() {
        let a = scripted(vec![Err(UpstreamErrorKind::AccessDenied)]);
        let b = scripted(vec![Err(UpstreamErrorKind::Throttled)]);
        let mut readers = vec![
            reader(&a, SourcePosition::Start, 10),
            reader(&b, SourcePosition::Start, 10),
        ];
        assert!(matches!(
            read_window(&mut readers, 5, true).await,
            Err(PagingError::Upstream(e)) if e.kind == UpstreamErrorKind::AccessDenied
        ));
    }
}
