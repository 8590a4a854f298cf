//! The query root: argument checking, routing, the pager, then edges.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, ID, Object, PathSegment};

use super::Gateway;
use super::error::ApiError;
use super::types::{
    Account, LazyCursor, Node, PageInfo, Session, SessionConnection, SessionEdge,
    SessionFilterInput, SessionState, node_id,
};
use crate::accounts::Source;
use crate::cursor::{Cursor, Fingerprint, SourcePosition};
use crate::model::{self, Region, SessionFilter, SessionId};
use crate::paging::{ListQuery, SourceReader, call_budget, read_window};
use crate::upstream::UpstreamError;

/// The service's bounds on `MaxResults`.
const PAGE_SIZE_RANGE: std::ops::RangeInclusive<i32> = 1..=200;

/// The query root.
pub struct Query;

/// Reads Session Manager sessions across the configured accounts and regions.
#[Object]
impl Query {
    /// The accounts this gateway reads, in configuration order.
    async fn accounts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Account>> {
        let gateway = ctx.data::<Arc<Gateway>>()?;
        Ok(gateway
            .registry
            .accounts()
            .iter()
            .cloned()
            .map(Account)
            .collect())
    }

    /// Session Manager sessions as a Relay connection over SSM
    /// `DescribeSessions`, merged across accounts and regions: newest
    /// `startDate` first, ties by account id, then region, then upstream order.
    ///
    /// Sources: `accounts` (ids or aliases; default all configured accounts)
    /// in `regions` (default each account's configured regions). Every source
    /// is queried concurrently and costs at least one upstream call per
    /// window, so narrow both when you can. An unknown account is
    /// `ACCOUNT_NOT_FOUND`.
    ///
    /// Paging is forward only, as SSM's is: `first` (default 50, at most
    /// 1000; 0 is allowed) sessions after the cursor `after`. `last` and
    /// `before` are refused with `BAD_USER_INPUT`. `pageSize` is the upstream
    /// `MaxResults` (1 to 200, default 200), the boto3 paginator's
    /// `PageSize`; `first` is its `MaxItems` and `after` its `StartingToken`.
    /// A cursor is valid only with the `state`, `filter`, accounts and regions
    /// it was minted for (else `INVALID_CURSOR`); resuming costs at most one
    /// re-fetch of the upstream page each source's position points into.
    ///
    /// Partial failure: when a source fails (throttled, access denied,
    /// unreachable), the others' sessions still come back, and `errors` holds
    /// one entry per failed source with `extensions { code account region }`.
    /// `hasNextPage` is then true and the cursors resume the failed source
    /// where it stopped, so paging on retries it (its sessions may then come
    /// later than newer ones already shown); or query that source alone.
    #[allow(clippy::too_many_arguments)]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Active sessions, or the History of ended ones.")] state: SessionState,
        #[graphql(desc = "Only sessions matching all of these.")] filter: Option<
            SessionFilterInput,
        >,
        #[graphql(desc = "Accounts to read, by id or alias (default: all configured).")]
        accounts: Option<Vec<ID>>,
        #[graphql(desc = "Regions to read (default: each account's configured regions).")]
        regions: Option<Vec<String>>,
        #[graphql(desc = "How many sessions at most (default 50, at most 1000).")] first: Option<
            i32,
        >,
        #[graphql(
            desc = "Continue after this cursor (an edge's `cursor` or `pageInfo.endCursor`)."
        )]
        after: Option<String>,
        #[graphql(desc = "Upstream page size, `MaxResults` (1 to 200, default 200).")]
        page_size: Option<i32>,
        #[graphql(desc = "Not supported: SSM pages forward only. Refused with BAD_USER_INPUT.")]
        last: Option<i32>,
        #[graphql(desc = "Not supported: SSM pages forward only. Refused with BAD_USER_INPUT.")]
        before: Option<String>,
    ) -> async_graphql::Result<SessionConnection> {
        let gateway = ctx.data::<Arc<Gateway>>()?;
        let args = SessionsArgs {
            state,
            filter,
            accounts: accounts.map(|ids| ids.into_iter().map(|id| id.0).collect()),
            regions,
            first,
            after,
            page_size,
            backward: last.is_some() || before.is_some(),
            want_has_next: ctx
                .look_ahead()
                .field("pageInfo")
                .field("hasNextPage")
                .exists(),
        };
        let (connection, failures) = sessions(gateway, args).await.map_err(|e| e.extend())?;
        for (source, error) in failures {
            ctx.add_error(source_error(ctx, &source, error));
        }
        Ok(connection)
    }

    /// One session by account (id or alias), region and session id: Active
    /// sessions are searched first, then History. Null when there is none.
    async fn session(
        &self,
        ctx: &Context<'_>,
        account: ID,
        region: String,
        session_id: String,
    ) -> async_graphql::Result<Option<Session>> {
        let gateway = ctx.data::<Arc<Gateway>>()?;
        find_session(gateway, &account.0, &region, &session_id)
            .await
            .map_err(|e| e.extend())
    }

    /// Any object by its global id (Relay). Sessions are the only nodes.
    /// A malformed id is `BAD_USER_INPUT`; an account no longer configured is
    /// `ACCOUNT_NOT_FOUND`.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        let gateway = ctx.data::<Arc<Gateway>>()?;
        let found = async {
            let (account, region, session_id) = node_id::decode(&id.0)?;
            find_session(
                gateway,
                account.as_str(),
                region.as_str(),
                session_id.as_str(),
            )
            .await
        }
        .await
        .map_err(|e: ApiError| e.extend())?;
        Ok(found.map(Node::Session))
    }
}

struct SessionsArgs {
    state: SessionState,
    filter: Option<SessionFilterInput>,
    accounts: Option<Vec<String>>,
    regions: Option<Vec<String>>,
    first: Option<i32>,
    after: Option<String>,
    page_size: Option<i32>,
    backward: bool,
    want_has_next: bool,
}

#[tracing::instrument(
    name = "sessions",
    skip_all,
    fields(state = ?args.state, first = args.first, page_size = args.page_size, resumed = args.after.is_some(), sources)
)]
async fn sessions(
    gateway: &Gateway,
    args: SessionsArgs,
) -> Result<(SessionConnection, Vec<(Source, UpstreamError)>), ApiError> {
    if args.backward {
        return Err(ApiError::BadUserInput(
            "`last` and `before` are not supported: SSM pages forward only; use `first` and `after`"
                .to_owned(),
        ));
    }
    let limits = &gateway.limits;
    let first = match args.first {
        None => limits.default_first as usize,
        Some(n) if n < 0 => {
            return Err(ApiError::BadUserInput(format!(
                "`first` must not be negative (got {n})"
            )));
        }
        Some(n) if n as u32 > limits.max_first => {
            return Err(ApiError::BadUserInput(format!(
                "`first` must be at most {} (got {n})",
                limits.max_first
            )));
        }
        Some(n) => n as usize,
    };
    let page_size = match args.page_size {
        None => limits.default_page_size,
        Some(n) if PAGE_SIZE_RANGE.contains(&n) => n as u8,
        Some(n) => {
            return Err(ApiError::BadUserInput(format!(
                "`pageSize` must be between 1 and 200 (got {n})"
            )));
        }
    };
    let filter = args
        .filter
        .map(SessionFilterInput::into_model)
        .transpose()?
        .unwrap_or_else(SessionFilter::default);
    let sources = gateway
        .registry
        .select(args.accounts.as_deref(), args.regions.as_deref())?;
    tracing::Span::current().record("sources", sources.len());
    let query = ListQuery {
        state: args.state.into(),
        filter,
    };
    let mut parts = query.canonical_parts();
    for source in &sources {
        parts.push(format!("{}/{}", source.key.account, source.key.region).into_bytes());
    }
    let fingerprint = Fingerprint::of(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let positions = match &args.after {
        None => vec![SourcePosition::Start; sources.len()],
        Some(after) => {
            gateway
                .cursors
                .decode(after, fingerprint, sources.len())?
                .sources
        }
    };

    let budget = call_budget(first, page_size);
    let mut readers: Vec<SourceReader> = sources
        .iter()
        .zip(positions)
        .map(|(source, position)| {
            SourceReader::new(
                Arc::clone(&source.reader),
                query.clone(),
                position,
                page_size,
                budget,
            )
        })
        .collect();
    let window = read_window(&mut readers, first, args.want_has_next).await?;
    tracing::debug!(
        edges = window.items.len(),
        calls = window.calls,
        failed = window.failures.len(),
        "window read"
    );

    let edges: Vec<SessionEdge> = window
        .items
        .into_iter()
        .map(|item| {
            let source = &sources[item.source];
            SessionEdge {
                node: Session {
                    inner: item.session,
                    account: source.account.clone(),
                    region: source.key.region.clone(),
                },
                cursor: LazyCursor {
                    codec: Arc::clone(&gateway.cursors),
                    cursor: Cursor {
                        fingerprint,
                        sources: item.after,
                    },
                },
            }
        })
        .collect();
    let page_info = PageInfo {
        has_previous_page: args.after.is_some(),
        has_next_page: window.has_next_page,
        start: edges.first().map(|e| e.cursor.clone()),
        end: edges.last().map(|e| e.cursor.clone()),
    };
    let failures = window
        .failures
        .into_iter()
        .map(|(i, e)| (sources[i].clone(), e))
        .collect();
    Ok((SessionConnection { edges, page_info }, failures))
}

/// The `errors` entry for one failed source: its code, account and region.
fn source_error(
    ctx: &Context<'_>,
    source: &Source,
    error: UpstreamError,
) -> async_graphql::ServerError {
    // The conversion logs the cause; the span puts the source on that line.
    let api = tracing::warn_span!(
        "source",
        account = %source.key.account,
        region = %source.key.region
    )
    .in_scope(|| ApiError::from(error));
    let mut err = api
        .extend_with(|_, ext| {
            ext.set("account", source.key.account.as_str());
            ext.set("region", source.key.region.as_str());
        })
        .into_server_error(ctx.item.pos);
    err.message = format!(
        "{} (account {}, region {}); its sessions are missing from this page",
        err.message, source.key.account, source.key.region
    );
    err.path = ctx
        .path_node
        .map(|p| {
            p.to_string_vec()
                .into_iter()
                .map(PathSegment::Field)
                .collect()
        })
        .unwrap_or_default();
    err
}

/// Looks one session up by id in one source: Active first, then History.
async fn find_session(
    gateway: &Gateway,
    account: &str,
    region: &str,
    session_id: &str,
) -> Result<Option<Session>, ApiError> {
    let session_id = SessionId::parse(session_id)?;
    let registry = &gateway.registry;
    let account_ref = registry
        .account(account)
        .ok_or_else(|| ApiError::AccountNotFound(account.to_owned()))?;
    let region = Region::parse(region)?;
    let source = registry.source(account_ref, &region).ok_or_else(|| {
        ApiError::BadUserInput(format!(
            "region {region} is not read in account {}",
            account_ref.id
        ))
    })?;
    for state in [model::SessionState::Active, model::SessionState::History] {
        let query = ListQuery {
            state,
            filter: SessionFilter {
                session_id: Some(session_id.clone()),
                ..SessionFilter::default()
            },
        };
        let page_size = gateway.limits.default_page_size;
        let mut reader = [SourceReader::new(
            Arc::clone(&source.reader),
            query,
            SourcePosition::Start,
            page_size,
            call_budget(1, page_size),
        )];
        let window = read_window(&mut reader, 1, false).await?;
        if let Some(item) = window.items.into_iter().next() {
            return Ok(Some(Session {
                inner: item.session,
                account: source.account.clone(),
                region,
            }));
        }
        if let Some((_, e)) = window.failures.into_iter().next() {
            return Err(e.into());
        }
    }
    Ok(None)
}
