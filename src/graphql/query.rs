//! The query root: each resolver turns arguments into a service call and
//! the answer into GraphQL types; the work is in [`crate::sessions`]. Each
//! passes the request's [`Caller`] along: which accounts it may see is the
//! service's decision, never a resolver's.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, ID, Object, PathSegment};
use tracing::Instrument as _;

use super::executor::FastPath;
use super::types::{
    Account, LazyCursor, Node, PageInfo, Session, SessionConnection, SessionEdge,
    SessionFilterInput, SessionState, node_id,
};
use crate::accounts::Source;
use crate::error::ApiError;
use crate::model::InvalidInput;
use crate::paging::{RequestBudget, SourceFailure};
use crate::sessions::{Caller, ListArgs, SessionService, failure_error};

/// The query root.
pub struct Query;

/// Reads Session Manager sessions across the configured accounts and regions.
#[Object]
impl Query {
    /// The accounts this gateway reads that the caller may read, in
    /// configuration order.
    async fn accounts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Account>> {
        let service = ctx.data::<Arc<SessionService>>()?;
        Ok(service
            .accounts(caller(ctx)?)
            .into_iter()
            .map(Account)
            .collect())
    }

    /// Session Manager sessions as a Relay connection over SSM
    /// `DescribeSessions`, merged across accounts and regions: newest
    /// `startDate` first, ties by account id, then region, then upstream order.
    ///
    /// Sources: `accounts` (ids or aliases; default all accounts the caller
    /// may read) in `regions` (default each account's configured regions).
    /// Every source is queried concurrently and costs at least one upstream
    /// call per window, so narrow both when you can. An unknown account, or
    /// one the caller may not read, is `ACCOUNT_NOT_FOUND`.
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
    #[graphql(complexity = "connection_complexity(first, child_complexity)")]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Active sessions, or the History of ended ones.")] state: SessionState,
        #[graphql(desc = "Only sessions matching all of these.")] filter: Option<
            SessionFilterInput,
        >,
        #[graphql(desc = "Accounts to read, by id or alias (default: all the caller may read).")]
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
        let service = ctx.data::<Arc<SessionService>>()?;
        let has_previous_page = after.is_some();
        let args = SessionsArgs {
            state,
            filter,
            accounts,
            regions,
            first,
            after,
            page_size,
            last,
            before,
        }
        .into_list_args(
            ctx.look_ahead()
                .field("pageInfo")
                .field("hasNextPage")
                .exists(),
        )
        .map_err(|e| ApiError::from(e).extend())?;
        let listing = service
            .list(caller(ctx)?, args, ctx.data::<RequestBudget>()?)
            .instrument(root_field_span(ctx))
            .await
            .map_err(|e| e.extend())?;
        let cursors = listing.cursors();
        for (source, error) in listing.failures {
            let key = ctx.item.node.response_key().node.as_str();
            ctx.add_error(source_error(ctx.item.pos, key, &source, error));
        }
        let edges: Vec<SessionEdge> = listing
            .edges
            .into_iter()
            .zip(cursors)
            .map(|(edge, cursor)| SessionEdge {
                node: Session::from(edge.node),
                cursor: LazyCursor {
                    codec: Arc::clone(service.cursors()),
                    cursor,
                },
            })
            .collect();
        let resume = listing.resume.map(|cursor| LazyCursor {
            codec: Arc::clone(service.cursors()),
            cursor,
        });
        let page_info = PageInfo {
            has_previous_page,
            has_next_page: listing.has_next_page,
            start: edges.first().map(|e| e.cursor.clone()),
            end: edges.last().map(|e| e.cursor.clone()).or(resume),
        };
        let connection = SessionConnection { edges, page_info };
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
        let service = ctx.data::<Arc<SessionService>>()?;
        let found = service
            .find(
                caller(ctx)?,
                &account.0,
                &region,
                &session_id,
                ctx.data::<RequestBudget>()?,
            )
            .instrument(root_field_span(ctx))
            .await
            .map_err(|e| e.extend())?;
        Ok(found.map(Session::from))
    }

    /// Any object by its global id (Relay). Sessions are the only nodes.
    /// A malformed id is `BAD_USER_INPUT`; an account no longer configured,
    /// or one the caller may not read, is `ACCOUNT_NOT_FOUND`.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        let service = ctx.data::<Arc<SessionService>>()?;
        let caller = caller(ctx)?;
        let found = async {
            let (account, region, session_id) = node_id::decode(&id.0)?;
            let budget = ctx.data::<RequestBudget>().map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("no request budget: {}", e.message))
            })?;
            service
                .find(
                    caller,
                    account.as_str(),
                    region.as_str(),
                    session_id.as_str(),
                    budget,
                )
                .await
        }
        .instrument(root_field_span(ctx))
        .await
        .map_err(|e: ApiError| e.extend())?;
        Ok(found.map(|located| Node::Session(Session::from(located))))
    }
}

/// The arguments of `sessions`, as the resolver and the compiled path
/// both receive them.
pub(super) struct SessionsArgs {
    pub state: SessionState,
    pub filter: Option<SessionFilterInput>,
    pub accounts: Option<Vec<ID>>,
    pub regions: Option<Vec<String>>,
    pub first: Option<i32>,
    pub after: Option<String>,
    pub page_size: Option<i32>,
    pub last: Option<i32>,
    pub before: Option<String>,
}

impl SessionsArgs {
    /// The service's request; a filter out of bounds is refused.
    pub(super) fn into_list_args(self, want_has_next: bool) -> Result<ListArgs, InvalidInput> {
        let filter = self
            .filter
            .map(SessionFilterInput::into_model)
            .transpose()?
            .unwrap_or_default();
        Ok(ListArgs {
            state: self.state.into(),
            filter,
            accounts: self
                .accounts
                .map(|ids| ids.into_iter().map(|id| id.0).collect()),
            regions: self.regions,
            first: self.first,
            after: self.after,
            page_size: self.page_size,
            backward: self.last.is_some() || self.before.is_some(),
            want_has_next,
        })
    }
}

/// The `field` span of a root field the fast schema runs (see
/// [`super::executor`]), under which its upstream calls' spans nest; none
/// on the full schema, whose `Tracing` extension opens its own.
fn root_field_span(ctx: &Context<'_>) -> tracing::Span {
    if ctx.data_opt::<FastPath>().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: "async_graphql::graphql",
        "field",
        path = %ctx.path_node.map(|p| p.to_string()).unwrap_or_default(),
        parent_type = "Query",
    )
}

/// The request's caller, put in the request data by `crate::http`.
pub(super) fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Caller> {
    ctx.data::<Arc<Caller>>()
        .map(|c| c.as_ref())
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("no caller in the request data")).extend())
}

/// A connection's complexity: its selection once per session it may return
/// (negative `first` is refused by the resolver, so it counts as 0).
pub(super) fn connection_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let first = first.map_or(
        crate::settings::Limits::default().default_first as usize,
        |n| usize::try_from(n).unwrap_or(0),
    );
    first
        .max(1)
        .saturating_mul(child_complexity)
        .saturating_add(1)
}

/// The `errors` entry for one failed source of the root field at `pos`
/// with response key `key`: its code, account and region.
pub(super) fn source_error(
    pos: async_graphql::Pos,
    key: &str,
    source: &Source,
    failure: SourceFailure,
) -> async_graphql::ServerError {
    // The conversion logs the cause; the span puts the source on that line.
    let api = tracing::warn_span!(
        "source",
        account = %source.key.account,
        region = %source.key.region
    )
    .in_scope(|| failure_error(failure, source));
    let names_its_source = matches!(api, ApiError::CostLimitExceeded { .. });
    let mut err = api
        .extend_with(|_, ext| {
            ext.set("account", source.key.account.as_str());
            ext.set("region", source.key.region.as_str());
        })
        .into_server_error(pos);
    err.message = format!(
        "{}; its sessions are missing from this page",
        if names_its_source {
            err.message.clone()
        } else {
            format!(
                "{} (account {}, region {})",
                err.message, source.key.account, source.key.region
            )
        }
    );
    err.path = vec![PathSegment::Field(key.to_owned())];
    err
}
