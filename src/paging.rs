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
//!   keeps fetching, bounded by a per-request call budget so a misbehaving
//!   upstream cannot make one request loop.

use std::sync::Arc;

use crate::cursor::SourcePosition;
use crate::model::{Session, SessionFilter, SessionState};
use crate::upstream::{Page, PageRequest, SessionSource, UpstreamError, UpstreamErrorKind};

/// What a window reads: the arguments that change the answer (and so go into
/// the cursor's fingerprint).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListQuery {
    pub state: SessionState,
    pub filter: SessionFilter,
}

impl ListQuery {
    /// Canonical bytes of the query, for the cursor fingerprint.
    pub fn canonical_parts(&self) -> Vec<Vec<u8>> {
        let mut parts = vec![
            b"sessions/v1".to_vec(),
            self.state.as_str().as_bytes().to_vec(),
        ];
        for (key, value) in self.filter.to_pairs() {
            parts.push(key.as_bytes().to_vec());
            parts.push(value.into_bytes());
        }
        parts
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
    /// The request used its upstream call budget ([`call_budget`]): SSM
    /// kept answering short or empty pages with a token.
    #[error("gave up after {0} upstream calls in one request")]
    CallBudgetExhausted(usize),
}

/// How many upstream calls one window may make: enough for `first` sessions
/// in pages half full on average, plus slack for a re-fetch, a look-ahead and
/// a run of empty pages.
pub fn call_budget(first: usize, page_size: u8) -> usize {
    4 * first.div_ceil(usize::from(page_size.max(1))) + 16
}

/// One session handed out, and where to resume just past it.
#[derive(Clone, Debug)]
pub struct Item {
    pub session: Session,
    pub after: SourcePosition,
}

enum State {
    /// A page still to fetch, from a cursor or from the previous page's token.
    Pending {
        token: Option<String>,
        page_size: u8,
        skip: u32,
        last_id: Option<String>,
        /// The token came from a caller's cursor: refusal means a stale cursor.
        from_cursor: bool,
    },
    Loaded {
        page_size: u8,
        /// The token the page was fetched with.
        token: Option<String>,
        sessions: Vec<Session>,
        /// Index of the next session to hand out.
        next: usize,
        next_token: Option<String>,
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
    calls: usize,
    budget: usize,
}

impl SourceReader {
    /// A reader starting at `position`, fetching new pages `page_size` at a time.
    pub fn new(
        source: Arc<dyn SessionSource>,
        query: ListQuery,
        position: SourcePosition,
        page_size: u8,
        budget: usize,
    ) -> Self {
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
            } => State::Pending {
                token,
                page_size: cursor_page_size,
                skip,
                last_id: Some(last_id),
                from_cursor: true,
            },
            SourcePosition::Exhausted => State::Exhausted,
        };
        Self {
            source,
            query,
            page_size,
            state,
            calls: 0,
            budget,
        }
    }

    /// Upstream calls made so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The next session without consuming it, fetching pages as needed;
    /// `None` once the source has no more sessions.
    pub async fn peek(&mut self) -> Result<Option<&Session>, PagingError> {
        loop {
            match &mut self.state {
                State::Exhausted => return Ok(None),
                State::Loaded {
                    sessions,
                    next,
                    next_token,
                    ..
                } => {
                    if *next < sessions.len() {
                        break;
                    }
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
                    if self.calls >= self.budget {
                        return Err(PagingError::CallBudgetExhausted(self.calls));
                    }
                    self.fetch().await?;
                }
            }
        }
        match &self.state {
            State::Loaded { sessions, next, .. } => Ok(sessions.get(*next)),
            _ => Ok(None),
        }
    }

    /// Consumes the session [`peek`](Self::peek) returned, with the position
    /// just past it; `None` when there is none (call `peek` first).
    pub fn take(&mut self) -> Option<Item> {
        let State::Loaded {
            page_size,
            token,
            sessions,
            next,
            next_token,
        } = &mut self.state
        else {
            return None;
        };
        let session = sessions.get(*next)?.clone();
        *next += 1;
        let last_id = session.session_id.as_str().to_owned();
        let after = if *next < sessions.len() {
            SourcePosition::InPage {
                token: token.clone(),
                page_size: *page_size,
                skip: u32::try_from(*next).unwrap_or(u32::MAX),
                last_id,
            }
        } else if let Some(next_token) = next_token {
            SourcePosition::InPage {
                token: Some(next_token.clone()),
                page_size: self.page_size,
                skip: 0,
                last_id,
            }
        } else {
            SourcePosition::Exhausted
        };
        Some(Item { session, after })
    }

    async fn fetch(&mut self) -> Result<(), PagingError> {
        let State::Pending {
            token,
            page_size,
            skip,
            last_id,
            from_cursor,
        } = std::mem::replace(&mut self.state, State::Exhausted)
        else {
            return Ok(());
        };
        let request = PageRequest {
            state: self.query.state,
            filter: self.query.filter.clone(),
            page_size,
            token,
        };
        self.calls += 1;
        let Page {
            sessions,
            next_token,
        } = match self.source.describe_sessions(&request).await {
            Ok(page) => page,
            Err(e) if from_cursor && e.kind == UpstreamErrorKind::InvalidToken => {
                return Err(PagingError::StaleCursor(e));
            }
            Err(e) => return Err(e.into()),
        };
        let next = match last_id
            .and_then(|id| sessions.iter().position(|s| s.session_id.as_str() == id))
        {
            Some(found) => found + 1,
            None => usize::try_from(skip)
                .unwrap_or(usize::MAX)
                .min(sessions.len()),
        };
        self.state = State::Loaded {
            page_size,
            token: request.token,
            sessions,
            next,
            next_token,
        };
        Ok(())
    }
}

/// A forward window of at most `first` sessions.
#[derive(Debug)]
pub struct Window {
    pub items: Vec<Item>,
    /// False only when no further session exists. `None` when not asked for.
    pub has_next_page: Option<bool>,
    /// Upstream calls the window cost.
    pub calls: usize,
}

/// Reads up to `first` sessions from `reader`, filling across short pages.
/// With `want_has_next`, looks ahead (at most one page, plus any empty ones)
/// to answer `hasNextPage` exactly.
pub async fn read_window(
    reader: &mut SourceReader,
    first: usize,
    want_has_next: bool,
) -> Result<Window, PagingError> {
    let mut items = Vec::with_capacity(first.min(1024));
    while items.len() < first {
        match reader.peek().await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Ok(Window {
                    items,
                    has_next_page: Some(false),
                    calls: reader.calls(),
                });
            }
            // Out of budget with sessions in hand: return them; the last
            // cursor resumes where this stopped.
            Err(PagingError::CallBudgetExhausted(_)) if !items.is_empty() => {
                return Ok(Window {
                    items,
                    has_next_page: Some(true),
                    calls: reader.calls(),
                });
            }
            Err(e) => return Err(e),
        }
        if let Some(item) = reader.take() {
            items.push(item);
        }
    }
    let has_next_page = if want_has_next {
        match reader.peek().await {
            Ok(next) => Some(next.is_some()),
            Err(e) if items.is_empty() => return Err(e),
            // The sessions in hand are good; failing the look-ahead (out of
            // budget, or an upstream error) only means "maybe more", never a
            // false "no more".
            Err(e) => {
                tracing::warn!(error = %e, "look-ahead for hasNextPage failed; answering true");
                Some(true)
            }
        }
    } else {
        None
    };
    Ok(Window {
        items,
        has_next_page,
        calls: reader.calls(),
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
        Session {
            session_id: SessionId::parse(id).unwrap(),
            target: None,
            status: None,
            start_date: None,
            end_date: None,
            document_name: None,
            owner: None,
            reason: None,
            details: None,
            output_url: None,
            max_session_duration_minutes: None,
            access_type: None,
        }
    }

    fn page(ids: &[&str], next: Option<&str>) -> Result<Page, UpstreamErrorKind> {
        Ok(Page {
            sessions: ids.iter().map(|id| session(id)).collect(),
            next_token: next.map(str::to_owned),
        })
    }

    fn reader(source: &Arc<Scripted>, position: SourcePosition, budget: usize) -> SourceReader {
        let query = ListQuery {
            state: SessionState::History,
            filter: SessionFilter::default(),
        };
        SourceReader::new(source.clone(), query, position, 3, budget)
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
        let w = read_window(&mut r, 2, false).await.unwrap();
        assert_eq!(ids(&w), ["a", "b"]);
        assert_eq!(w.calls, 3);
        // "a" ended its page: resume straight at the next token.
        assert_eq!(
            w.items[0].after,
            SourcePosition::InPage {
                token: Some("t1".into()),
                page_size: 3,
                skip: 0,
                last_id: "a".into()
            }
        );
        // "b" is mid-page: re-fetch "t2"'s successor page and skip one.
        assert_eq!(
            w.items[1].after,
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
        let w = read_window(&mut r, 5, true).await.unwrap();
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
    async fn falls_back_to_the_position_when_last_id_is_gone() {
        let source = scripted(vec![page(&["a", "c", "d"], None)]);
        let position = SourcePosition::InPage {
            token: None,
            page_size: 3,
            skip: 2,
            last_id: "b".into(),
        };
        let mut r = reader(&source, position, 10);
        let w = read_window(&mut r, 5, false).await.unwrap();
        assert_eq!(ids(&w), ["d"]);
    }

    #[tokio::test]
    async fn an_exhausted_position_costs_nothing() {
        let source = scripted(vec![]);
        let mut r = reader(&source, SourcePosition::Exhausted, 10);
        let w = read_window(&mut r, 5, true).await.unwrap();
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
        let w = read_window(&mut r, 2, true).await.unwrap();
        assert_eq!(w.has_next_page, Some(false));
        assert_eq!(w.calls, 3);
    }

    #[tokio::test]
    async fn endless_empty_pages_stop_at_the_budget() {
        let mut answers = vec![page(&["a"], Some("t"))];
        answers.extend((0..20).map(|_| page(&[], Some("t"))));
        let source = scripted(answers);
        // With a session in hand: return it, "maybe more".
        let mut r = reader(&source, SourcePosition::Start, 5);
        let w = read_window(&mut r, 3, true).await.unwrap();
        assert_eq!(ids(&w), ["a"]);
        assert_eq!(w.has_next_page, Some(true));
        assert_eq!(w.calls, 5);
        // With nothing in hand: an error, not an empty page that claims more.
        let mut r = reader(&source, SourcePosition::Start, 5);
        assert!(matches!(
            read_window(&mut r, 3, true).await,
            Err(PagingError::CallBudgetExhausted(_))
        ));
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
            read_window(&mut r, 2, false).await,
            Err(PagingError::StaleCursor(_))
        ));

        let source = scripted(vec![
            page(&["a"], Some("t1")),
            Err(UpstreamErrorKind::InvalidToken),
        ]);
        let mut r = reader(&source, SourcePosition::Start, 10);
        assert!(matches!(
            read_window(&mut r, 2, false).await,
            Err(PagingError::Upstream(e)) if e.kind == UpstreamErrorKind::InvalidToken
        ));
    }

    #[tokio::test]
    async fn upstream_errors_fail_the_window_but_not_a_full_one_look_ahead() {
        let source = scripted(vec![Err(UpstreamErrorKind::Throttled)]);
        let mut r = reader(&source, SourcePosition::Start, 10);
        assert!(matches!(
            read_window(&mut r, 2, false).await,
            Err(PagingError::Upstream(e)) if e.kind == UpstreamErrorKind::Throttled
        ));

        let source = scripted(vec![
            page(&["a", "b"], Some("t1")),
            Err(UpstreamErrorKind::Throttled),
        ]);
        let mut r = reader(&source, SourcePosition::Start, 10);
        let w = read_window(&mut r, 2, true).await.unwrap();
        assert_eq!(ids(&w), ["a", "b"]);
        assert_eq!(w.has_next_page, Some(true));
    }

    #[test]
    fn the_budget_grows_with_the_pages_a_window_needs() {
        assert_eq!(call_budget(0, 200), 16);
        assert_eq!(call_budget(50, 200), 20);
        assert_eq!(call_budget(1000, 1), 4016);
    }
}
