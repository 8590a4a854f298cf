//! The query root: argument checking, then the pager, then edges.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, Object};

use super::Gateway;
use super::error::ApiError;
use super::types::{
    LazyCursor, PageInfo, Session, SessionConnection, SessionEdge, SessionFilterInput, SessionState,
};
use crate::cursor::{Cursor, Fingerprint, SourcePosition};
use crate::model::SessionFilter;
use crate::paging::{ListQuery, SourceReader, call_budget, read_window};

/// The service's bounds on `MaxResults`.
const PAGE_SIZE_RANGE: std::ops::RangeInclusive<i32> = 1..=200;

/// The query root.
pub struct Query;

/// Reads Session Manager sessions.
#[Object]
impl Query {
    /// Session Manager sessions, newest `startDate` first, as a Relay
    /// connection over SSM `DescribeSessions`.
    ///
    /// Paging is forward only, as SSM's is: `first` (default 50, at most
    /// 1000; 0 is allowed) sessions after the cursor `after`. `last` and
    /// `before` are refused with `BAD_USER_INPUT`. `pageSize` is the upstream
    /// `MaxResults` (1 to 200, default 200), the boto3 paginator's
    /// `PageSize`; `first` is its `MaxItems` and `after` its `StartingToken`.
    /// A cursor is valid only with the `state` and `filter` it was minted for
    /// (else `INVALID_CURSOR`); resuming costs at most one re-fetch of the
    /// upstream page it points into.
    #[allow(clippy::too_many_arguments)]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Active sessions, or the History of ended ones.")] state: SessionState,
        #[graphql(desc = "Only sessions matching all of these.")] filter: Option<
            SessionFilterInput,
        >,
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
        sessions(gateway, args).await.map_err(|e| e.extend())
    }
}

struct SessionsArgs {
    state: SessionState,
    filter: Option<SessionFilterInput>,
    first: Option<i32>,
    after: Option<String>,
    page_size: Option<i32>,
    backward: bool,
    want_has_next: bool,
}

#[tracing::instrument(
    name = "sessions",
    skip_all,
    fields(state = ?args.state, first = args.first, page_size = args.page_size, resumed = args.after.is_some())
)]
async fn sessions(gateway: &Gateway, args: SessionsArgs) -> Result<SessionConnection, ApiError> {
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
    let query = ListQuery {
        state: args.state.into(),
        filter,
    };
    let parts = query.canonical_parts();
    let fingerprint = Fingerprint::of(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let position = match &args.after {
        None => SourcePosition::Start,
        Some(after) => {
            let mut cursor = gateway.cursors.decode(after, fingerprint, 1)?;
            cursor.sources.pop().unwrap_or(SourcePosition::Start)
        }
    };

    let mut reader = SourceReader::new(
        Arc::clone(&gateway.source),
        query,
        position,
        page_size,
        call_budget(first, page_size),
    );
    let window = read_window(&mut reader, first, args.want_has_next).await?;
    tracing::debug!(
        edges = window.items.len(),
        calls = window.calls,
        "window read"
    );

    let edges: Vec<SessionEdge> = window
        .items
        .into_iter()
        .map(|item| SessionEdge {
            node: Session(item.session),
            cursor: LazyCursor {
                codec: Arc::clone(&gateway.cursors),
                cursor: Cursor {
                    fingerprint,
                    sources: vec![item.after],
                },
            },
        })
        .collect();
    let page_info = PageInfo {
        has_previous_page: args.after.is_some(),
        has_next_page: window.has_next_page,
        start: edges.first().map(|e| e.cursor.clone()),
        end: edges.last().map(|e| e.cursor.clone()),
    };
    Ok(SessionConnection { edges, page_info })
}
