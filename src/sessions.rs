//! The sessions service: what the resolvers ask for, in domain terms.
//!
//! [`SessionService::list`] checks a window's arguments against the limits,
//! picks its (account, region) sources, fingerprints the query, decodes
//! `after`, reads the window through the pager and returns edges with their
//! (not yet encoded) cursors. [`SessionService::find`] looks one session up.
//! Resolvers turn the answers into GraphQL types and nothing more; they never
//! see the pager, the cursor codec or the SDK.
//!
//! Every method takes the [`Caller`], and authorization by account happens
//! here, not in the resolvers: a caller sees only the accounts it may read
//! (`sessions:read`); naming any other is `ACCOUNT_NOT_FOUND`, exactly as
//! for an account not configured, and costs no upstream call. A caller with
//! `sessions:read` in no account at all is `FORBIDDEN`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::accounts::{Account, AccountRegistry, Source};
use crate::auth::{Principal, Scope};
use crate::cache::Freshness;
use crate::cursor::{
    Cursor, CursorCodec, Fingerprint, FingerprintBuilder, PAGE_SIZE_RANGE, SourcePosition,
};
use crate::error::ApiError;
use crate::model::{AccountId, Region, SessionFilter, SessionId, SessionState, SourceKey};
use crate::paging::{Changes, ListQuery, RequestBudget, SourceFailure, SourceReader, read_window};
use crate::settings::Limits;
use crate::upstream::{SessionRef, UpstreamError};

/// Who a request is for, and what serving it read (for the audit line).
/// One per request, put in the GraphQL request data by `crate::http`.
pub struct Caller {
    /// The authenticated principal; decides which accounts are visible.
    pub principal: Principal,
    /// What the service read on this caller's behalf.
    pub usage: Usage,
}

impl Caller {
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            usage: Usage::default(),
        }
    }

    /// Whether the caller may read `account`'s sessions (and so see it).
    pub fn can_read(&self, account: &Account) -> bool {
        self.principal.can_in(Scope::SessionsRead, account)
    }
}

/// The accounts a request touched and the upstream pages the service read
/// for it (through the page cache, so some may have been cache hits).
#[derive(Default)]
pub struct Usage {
    // A std Mutex: nothing awaits while it is held.
    accounts: Mutex<BTreeSet<String>>,
    pages: AtomicU64,
}

impl Usage {
    fn record(&self, sources: &[Source], pages: u64) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.extend(sources.iter().map(|s| s.account.alias.clone()));
        }
        self.pages.fetch_add(pages, Ordering::Relaxed);
    }

    /// Aliases of the accounts read, sorted.
    pub fn accounts(&self) -> Vec<String> {
        self.accounts
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Upstream pages read.
    pub fn pages(&self) -> u64 {
        self.pages.load(Ordering::Relaxed)
    }
}

/// Reads sessions for the resolvers.
pub struct SessionService {
    /// The configured accounts and a session source per (account, region).
    registry: Arc<AccountRegistry>,
    /// Signs and verifies cursors; one key across all replicas.
    cursors: Arc<CursorCodec>,
    /// Defaults and bounds of `first` and `pageSize`.
    limits: Limits,
}

/// A window request, as the `sessions` field's arguments give it.
#[derive(Clone)]
pub struct ListArgs {
    pub state: SessionState,
    pub filter: SessionFilter,
    /// Account ids or aliases; `None`: all configured.
    pub accounts: Option<Vec<String>>,
    /// Regions; `None`: each account's configured regions.
    pub regions: Option<Vec<String>>,
    pub first: Option<i32>,
    pub after: Option<String>,
    pub page_size: Option<i32>,
    /// `last` or `before` was given: refused, SSM pages forward only.
    pub backward: bool,
    /// Whether `hasNextPage` is wanted (it may cost a look-ahead call).
    pub want_has_next: bool,
}

/// A session to terminate: its account and region, checked to be
/// configured, and its id.
#[derive(Clone, Debug)]
pub struct TerminateTarget {
    pub account: Arc<Account>,
    pub key: SourceKey,
    pub session_id: SessionId,
}

/// A session with the account and region it was read in.
pub struct Located {
    /// Shared with the page it was read from.
    pub session: SessionRef,
    pub account: Arc<Account>,
    pub region: Region,
}

/// One edge of a window: the session, and the sources' positions that
/// changed with it. The cursor that resumes after it holds every source's
/// position: the changes of the edges up to it ([`Listing::cursors`]).
pub struct Edge {
    pub node: Located,
    pub changes: Changes,
}

/// A window of sessions, and the sources that failed while reading it.
pub struct Listing {
    pub edges: Vec<Edge>,
    /// What the edges' cursors are bound to.
    pub fingerprint: Fingerprint,
    /// How many sources each cursor holds a position for.
    pub sources: usize,
    /// `None` when not asked for.
    pub has_next_page: Option<bool>,
    /// Sources left out of the window, each with why (reported per source).
    pub failures: Vec<(Source, SourceFailure)>,
    /// When a budget stopped the window before its first session: where
    /// to resume (`pageInfo.endCursor` of the empty page), so paging goes on.
    pub resume: Option<Cursor>,
}

impl Listing {
    /// Every edge's cursor, in order: each edge's changes applied over
    /// the previous edge's positions.
    pub fn cursors(&self) -> Vec<Cursor> {
        let mut positions = vec![SourcePosition::Start; self.sources];
        self.edges
            .iter()
            .map(|edge| {
                edge.changes.apply_to(&mut positions);
                Cursor {
                    fingerprint: self.fingerprint,
                    sources: positions.clone(),
                }
            })
            .collect()
    }
}

impl SessionService {
    pub fn new(registry: Arc<AccountRegistry>, cursors: Arc<CursorCodec>, limits: Limits) -> Self {
        Self {
            registry,
            cursors,
            limits,
        }
    }

    /// The configured accounts and their sources.
    pub fn registry(&self) -> &Arc<AccountRegistry> {
        &self.registry
    }

    /// The configured accounts `caller` may read, in configuration order.
    pub fn accounts(&self, caller: &Caller) -> Vec<Arc<Account>> {
        self.registry
            .accounts()
            .iter()
            .filter(|a| caller.can_read(a))
            .cloned()
            .collect()
    }

    /// `FORBIDDEN` unless `caller` may read sessions in at least one account.
    fn require_read(&self, caller: &Caller) -> Result<(), ApiError> {
        if self.registry.accounts().iter().any(|a| caller.can_read(a)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{} lacks the scope sessions:read in every account",
                caller.principal
            )))
        }
    }

    /// The codec edges' cursors are encoded with.
    pub fn cursors(&self) -> &Arc<CursorCodec> {
        &self.cursors
    }

    /// One window of sessions across the sources `args` names.
    #[tracing::instrument(
        name = "sessions",
        skip_all,
        fields(state = ?args.state, first = args.first, page_size = args.page_size, resumed = args.after.is_some(), sources)
    )]
    pub async fn list(
        &self,
        caller: &Caller,
        args: ListArgs,
        budget: &RequestBudget,
    ) -> Result<Listing, ApiError> {
        self.require_read(caller)?;
        if args.backward {
            return Err(ApiError::BadUserInput(
                "`last` and `before` are not supported: SSM pages forward only; use `first` and `after`"
                    .to_owned(),
            ));
        }
        let first = self.first(args.first)?;
        let page_size = self.page_size(args.page_size)?;
        let sources =
            self.registry
                .select(args.accounts.as_deref(), args.regions.as_deref(), |a| {
                    caller.can_read(a)
                })?;
        tracing::Span::current().record("sources", sources.len());
        let query = ListQuery {
            state: args.state,
            filter: args.filter,
        };
        let fingerprint = fingerprint(&query, sources.iter().map(|s| &s.key));
        let positions = match &args.after {
            None => vec![SourcePosition::Start; sources.len()],
            Some(after) => {
                let positions = self
                    .cursors
                    .decode(after, fingerprint, sources.len())?
                    .sources;
                Freshness::note_resumed();
                positions
            }
        };

        let mut readers: Vec<SourceReader> = sources
            .iter()
            .zip(positions)
            .map(|(source, position)| {
                SourceReader::new(
                    Arc::clone(&source.reader),
                    query.clone(),
                    position,
                    page_size,
                    budget.for_source(&source.key),
                )
            })
            .collect();
        let window = read_window(&mut readers, first, args.want_has_next).await;
        caller.usage.record(&sources, readers_calls(&readers));
        let window = window?;
        tracing::debug!(
            edges = window.items.len(),
            calls = window.calls,
            failed = window.failures.len(),
            "window read"
        );
        let stopped_by_budget = window
            .failures
            .iter()
            .any(|(_, f)| matches!(f, SourceFailure::OverBudget { .. }));
        let resume = (window.items.is_empty() && stopped_by_budget).then(|| Cursor {
            fingerprint,
            sources: window.positions.clone(),
        });
        let edges = window
            .items
            .into_iter()
            .map(|item| {
                let source = &sources[item.source];
                Edge {
                    node: Located {
                        session: item.session,
                        account: source.account.clone(),
                        region: source.key.region.clone(),
                    },
                    changes: item.changes,
                }
            })
            .collect();
        let failures = window
            .failures
            .into_iter()
            .map(|(i, e)| (sources[i].clone(), e))
            .collect();
        Ok(Listing {
            edges,
            fingerprint,
            sources: sources.len(),
            has_next_page: window.has_next_page,
            failures,
            resume,
        })
    }

    /// One session by account (id or alias), region and session id: Active
    /// sessions are searched first, then History.
    /// An account `caller` may not read is `ACCOUNT_NOT_FOUND`, as an
    /// unconfigured one is.
    pub async fn find(
        &self,
        caller: &Caller,
        account: &str,
        region: &str,
        session_id: &str,
        budget: &RequestBudget,
    ) -> Result<Option<Located>, ApiError> {
        self.require_read(caller)?;
        let session_id = SessionId::parse(session_id)?;
        let account_ref = self
            .registry
            .visible_account(account, |a| caller.can_read(a))
            .ok_or_else(|| ApiError::AccountNotFound(account.to_owned()))?;
        let region = Region::parse(region)?;
        let source = self.registry.source(account_ref, &region).ok_or_else(|| {
            ApiError::BadUserInput(format!(
                "region {region} is not read in account {}",
                account_ref.id
            ))
        })?;
        for state in [SessionState::Active, SessionState::History] {
            let query = ListQuery {
                state,
                filter: SessionFilter {
                    session_id: Some(session_id.clone()),
                    ..SessionFilter::default()
                },
            };
            let page_size = self.limits.default_page_size;
            let mut reader = [SourceReader::new(
                Arc::clone(&source.reader),
                query,
                SourcePosition::Start,
                page_size,
                budget.for_source(&source.key),
            )];
            let window = read_window(&mut reader, 1, false).await;
            caller
                .usage
                .record(std::slice::from_ref(&source), readers_calls(&reader));
            let window = window?;
            if let Some(item) = window.items.into_iter().next() {
                return Ok(Some(Located {
                    session: item.session,
                    account: source.account.clone(),
                    region,
                }));
            }
            if let Some((_, failure)) = window.failures.into_iter().next() {
                return Err(failure_error(failure, &source));
            }
        }
        Ok(None)
    }

    /// The session a global id names, in a configured account and region
    /// (`ACCOUNT_NOT_FOUND` for an account no longer configured,
    /// `BAD_USER_INPUT` for a malformed id or a region not read there).
    pub fn terminate_target(
        &self,
        account: AccountId,
        region: Region,
        session_id: SessionId,
    ) -> Result<TerminateTarget, ApiError> {
        let account_ref = self
            .registry
            .account(account.as_str())
            .ok_or_else(|| ApiError::AccountNotFound(account.to_string()))?;
        let source = self.registry.source(account_ref, &region).ok_or_else(|| {
            ApiError::BadUserInput(format!("region {region} is not read in account {account}"))
        })?;
        Ok(TerminateTarget {
            account: source.account,
            key: source.key,
            session_id,
        })
    }

    /// Ends a session through SSM `TerminateSession` (idempotent: an ended
    /// session succeeds again), writes the audit line, and drops the
    /// source's cached pages. Authorization is the caller's business,
    /// before this.
    pub async fn terminate(&self, target: &TerminateTarget, caller: &str) -> Result<(), ApiError> {
        let outcome = match self.registry.terminator(&target.key) {
            Some(terminator) => terminator.terminate_session(&target.session_id).await,
            None => Err(UpstreamError::new(
                crate::upstream::UpstreamErrorKind::Internal,
                anyhow::anyhow!(
                    "no terminator for {}/{}",
                    target.key.account,
                    target.key.region
                ),
            )),
        };
        // Dropped whatever the outcome: a failed call may still have ended it.
        self.registry.invalidate(&target.key).await;
        let result = outcome.map_err(ApiError::from);
        tracing::info!(
            target: "audit",
            action = "terminateSession",
            caller,
            account = %target.key.account,
            region = %target.key.region,
            session_id = %target.session_id,
            outcome = match &result {
                Ok(()) => "terminated",
                Err(e) => e.code(),
            },
            "audit"
        );
        result
    }

    fn first(&self, first: Option<i32>) -> Result<usize, ApiError> {
        let max = self.limits.max_first;
        match first {
            None => Ok(self.limits.default_first as usize),
            Some(n) if n < 0 => Err(ApiError::BadUserInput(format!(
                "`first` must not be negative (got {n})"
            ))),
            Some(n) if n as u32 > max => Err(ApiError::BadUserInput(format!(
                "`first` must be at most {max} (got {n})"
            ))),
            Some(n) => Ok(n as usize),
        }
    }

    fn page_size(&self, page_size: Option<i32>) -> Result<u8, ApiError> {
        match page_size {
            None => Ok(self.limits.default_page_size),
            Some(n) => u8::try_from(n)
                .ok()
                .filter(|n| PAGE_SIZE_RANGE.contains(n))
                .ok_or_else(|| {
                    ApiError::BadUserInput(format!(
                        "`pageSize` must be between {} and {} (got {n})",
                        PAGE_SIZE_RANGE.start(),
                        PAGE_SIZE_RANGE.end()
                    ))
                }),
        }
    }
}

/// The client's error for one failed source.
pub fn failure_error(failure: SourceFailure, source: &Source) -> ApiError {
    match failure {
        SourceFailure::Upstream(e) => e.into(),
        SourceFailure::OverBudget { limit } => ApiError::CostLimitExceeded {
            account: source.key.account.to_string(),
            region: source.key.region.to_string(),
            limit,
        },
    }
}

/// What a cursor is bound to: the query (state and filter) and the exact
/// list of sources, in canonical order.
fn fingerprint<'a>(query: &ListQuery, sources: impl Iterator<Item = &'a SourceKey>) -> Fingerprint {
    let mut fingerprint = FingerprintBuilder::default();
    query.fingerprint_parts(&mut fingerprint);
    for key in sources {
        // The part `account/region`.
        fingerprint.part(&[
            key.account.as_str().as_bytes(),
            b"/",
            key.region.as_str().as_bytes(),
        ]);
    }
    fingerprint.finish()
}

/// Upstream pages `readers` fetched (each through the page cache).
fn readers_calls(readers: &[SourceReader]) -> u64 {
    readers.iter().map(|r| r.calls() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_its_documented_parts() {
        // Cursors already handed out carry fingerprints computed from these
        // parts: they must not change.
        let query = ListQuery {
            state: SessionState::History,
            filter: SessionFilter {
                owner: Some("arn:aws:iam::111111111111:user/x".into()),
                target: Some("i-0123456789abcdef0".into()),
                ..SessionFilter::default()
            },
        };
        let keys = [("111111111111", "eu-west-1"), ("222222222222", "us-east-1")].map(
            |(account, region)| SourceKey {
                account: AccountId::parse(account).unwrap(),
                region: Region::parse(region).unwrap(),
            },
        );
        let mut parts: Vec<Vec<u8>> = vec![b"sessions/v1".to_vec(), b"History".to_vec()];
        for (key, value) in query.filter.to_pairs() {
            parts.push(key.as_bytes().to_vec());
            parts.push(value.into_bytes());
        }
        parts.push(b"111111111111/eu-west-1".to_vec());
        parts.push(b"222222222222/us-east-1".to_vec());
        let expected = Fingerprint::of(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(fingerprint(&query, keys.iter()), expected);
        assert_ne!(fingerprint(&query, keys[..1].iter()), expected);
    }
}
