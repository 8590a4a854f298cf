//! The live roots: the `sessionEvents` subscription and the
//! `terminateSession` mutation. The streaming is in [`crate::live`], the
//! termination in [`crate::sessions`]; here are arguments, authorization
//! hooks and GraphQL types.

use std::sync::Arc;

use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, Object, SimpleObject, Subscription,
};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::types::{Session, SessionFilterInput, node_id};
use crate::accounts::Account;
use crate::auth::Scope;
use crate::error::ApiError;
use crate::instruments::{InFlight, Metrics};
use crate::live::{EventKind, LiveHub, LiveItem};
use crate::model::{SessionFilter, SourceKey};
use crate::paging::RequestBudget;
use crate::sessions::{Located, SessionService, TerminateTarget};
use crate::upstream::{SessionRef, UpstreamError};

/// What the live roots read from the schema data besides the services.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// `live.terminate_enabled`.
    pub terminate_enabled: bool,
}

/// The subscriptions one WebSocket connection may still open: put in the
/// connection's data by the WebSocket layer, one per connection. (A
/// per-principal limit joins it once callers are authenticated.)
#[derive(Clone, Debug)]
pub struct SubscriptionSlots {
    semaphore: Arc<Semaphore>,
    max: u32,
    metrics: Metrics,
}

impl SubscriptionSlots {
    pub fn new(max: u32, metrics: Metrics) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max as usize)),
            max,
            metrics,
        }
    }

    /// A slot, held for as long as the subscription's stream lives (and
    /// counted in `gateway_subscriptions_active` as long).
    fn take(&self) -> Result<(OwnedSemaphorePermit, InFlight), ApiError> {
        let permit = self
            .semaphore
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManySubscriptions(self.max))?;
        Ok((permit, self.metrics.subscription_active()))
    }
}

/// What happened to a session.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum SessionEventKind {
    /// The session appeared in the Active list (or was already there, with
    /// `includeExisting`).
    Started,
    /// Its status changed (Connecting, Connected, Disconnected, ...).
    Changed,
    /// It left the Active list: terminated, failed or timed out.
    Ended,
}

impl From<EventKind> for SessionEventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Started => Self::Started,
            EventKind::Changed => Self::Changed,
            EventKind::Ended => Self::Ended,
        }
    }
}

/// A change to an Active session, seen by the gateway's poll of its
/// account and region.
#[derive(SimpleObject)]
pub struct SessionEvent {
    /// What happened.
    kind: SessionEventKind,
    /// The session after the change; for `ENDED`, as last seen while active.
    session: Session,
    /// When the poll that saw the change ended.
    at: DateTime<Utc>,
}

/// The subscription root.
pub struct Subscription;

/// Live Session Manager activity across the configured accounts and regions.
#[Subscription]
impl Subscription {
    /// Changes to Active sessions, as they are seen: `STARTED` when a
    /// session appears in the Active list, `CHANGED` when its status
    /// changes, `ENDED` when it leaves the list. With `includeExisting`,
    /// first a `STARTED` for each matching session already active.
    ///
    /// `accounts`, `regions` and `filter` pick sessions exactly as for the
    /// `sessions` query (an unknown account is `ACCOUNT_NOT_FOUND`). An event
    /// is sent when the filter matches the session before or after the
    /// change, so a subscriber also learns that a session left its view.
    ///
    /// The gateway polls each (account, region) once per Active cache TTL
    /// (at least once a second by default), whatever the number of
    /// subscribers; events arrive within about one interval. When a source
    /// cannot be read, a `next` message with `data: null` and an error with
    /// `extensions { code account region }` is sent, and the stream goes
    /// on. Over WebSocket on `/graphql` (graphql-transport-ws, or the legacy
    /// graphql-ws).
    async fn session_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Accounts to watch, by id or alias (default: all configured).")]
        accounts: Option<Vec<ID>>,
        #[graphql(desc = "Regions to watch (default: each account's configured regions).")]
        regions: Option<Vec<String>>,
        #[graphql(desc = "Only sessions matching all of these (before or after the change).")]
        filter: Option<SessionFilterInput>,
        #[graphql(
            default_with = "Some(false)",
            desc = "First send STARTED for every matching session already active."
        )]
        include_existing: Option<bool>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<SessionEvent>> + use<>>
    {
        let hub = ctx.data::<Arc<LiveHub>>()?;
        let filter = filter
            .map(SessionFilterInput::into_model)
            .transpose()
            .map_err(|e| ApiError::from(e).extend())?
            .unwrap_or_else(SessionFilter::default);
        let slot = ctx
            .data_opt::<SubscriptionSlots>()
            .map(SubscriptionSlots::take)
            .transpose()
            .map_err(|e| e.extend())?;
        let accounts: Option<Vec<String>> =
            accounts.map(|ids| ids.into_iter().map(|id| id.0).collect());
        let caller = super::query::caller(ctx)?;
        let items = hub
            .subscribe(
                accounts.as_deref(),
                regions.as_deref(),
                &|account| caller.can_read(account),
                filter,
                include_existing.unwrap_or(false),
            )
            .map_err(|e| e.extend())?;
        Ok(items.map(move |item| {
            // The slot is released when the stream is dropped.
            let _slot = &slot;
            match item {
                LiveItem::Event(event) => Ok(SessionEvent {
                    kind: event.kind.into(),
                    session: Session::from(Located {
                        session: SessionRef::owned(event.session),
                        account: event.account,
                        region: event.region,
                    }),
                    at: event.at,
                }),
                LiveItem::SourceFailed { source, error } => Err(source_failed(&source, error)),
            }
        }))
    }
}

/// The error of a source that could not be read: code, account, region.
fn source_failed(source: &SourceKey, error: UpstreamError) -> async_graphql::Error {
    let api = tracing::warn_span!(
        "source",
        account = %source.account,
        region = %source.region
    )
    .in_scope(|| ApiError::from(error));
    let message = format!(
        "{} (account {}, region {}); its events resume when it can be read again",
        api, source.account, source.region
    );
    let code = api.code();
    async_graphql::Error::new(message).extend_with(|_, ext| {
        ext.set("code", code);
        ext.set("account", source.account.as_str());
        ext.set("region", source.region.as_str());
    })
}

/// The input of `terminateSession`.
#[derive(InputObject)]
pub struct TerminateSessionInput {
    /// The session's global id (`Session.id`).
    id: ID,
}

/// What `terminateSession` did.
pub struct TerminateSessionPayload {
    target: TerminateTarget,
}

/// What `terminateSession` did.
#[Object]
impl TerminateSessionPayload {
    /// The SSM session id that was terminated.
    async fn session_id(&self) -> &str {
        self.target.session_id.as_str()
    }

    /// The session as SSM now lists it (usually in History, `TERMINATED`);
    /// null if it cannot be found. Read when selected: it costs a lookup.
    async fn session(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Session>> {
        let service = ctx.data::<Arc<SessionService>>()?;
        let found = service
            .find(
                super::query::caller(ctx)?,
                self.target.key.account.as_str(),
                self.target.key.region.as_str(),
                self.target.session_id.as_str(),
                ctx.data::<RequestBudget>()?,
            )
            .await
            .map_err(|e| e.extend())?;
        Ok(found.map(Session::from))
    }
}

/// The mutation root.
pub struct Mutation;

/// Changes to Session Manager sessions. Mutations are accepted over POST only.
#[Object]
impl Mutation {
    /// Ends a session (SSM `TerminateSession`) and closes its data
    /// connection; it cannot be resumed. Idempotent: terminating an ended
    /// session succeeds. A malformed id is `BAD_USER_INPUT`; an account no
    /// longer configured is `ACCOUNT_NOT_FOUND`; `FORBIDDEN` when the caller
    /// may not, or when the gateway has it turned off
    /// (`live.terminate_enabled`). Afterwards cached pages of the session's
    /// account and region are dropped, and `sessionEvents` subscribers get
    /// `ENDED` at the next poll at the latest.
    async fn terminate_session(
        &self,
        ctx: &Context<'_>,
        input: TerminateSessionInput,
    ) -> async_graphql::Result<TerminateSessionPayload> {
        let options = ctx.data::<LiveOptions>()?;
        let service = ctx.data::<Arc<SessionService>>()?;
        let hub = ctx.data::<Arc<LiveHub>>()?;
        let target = async {
            if !options.terminate_enabled {
                return Err(ApiError::Forbidden(
                    "terminateSession is turned off on this gateway (live.terminate_enabled)"
                        .to_owned(),
                ));
            }
            let (account, region, session_id) = node_id::decode(&input.id.0)?;
            let target = service.terminate_target(account, region, session_id)?;
            authorize_terminate(ctx, &target.account)?;
            service.terminate(&target, &audit_name(ctx)).await?;
            Ok(target)
        }
        .await
        .map_err(|e: ApiError| e.extend())?;
        hub.poke(&target.key);
        Ok(TerminateSessionPayload { target })
    }
}

/// The one place `terminateSession` is authorized: the caller's
/// `sessions:terminate` scope on `account` (`FORBIDDEN` otherwise). An
/// account the caller can neither read nor terminate in is
/// `ACCOUNT_NOT_FOUND`, exactly as an unconfigured one.
fn authorize_terminate(ctx: &Context<'_>, account: &Account) -> Result<(), ApiError> {
    let caller = super::query::caller(ctx)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("no caller: {}", e.message)))?;
    let principal = &caller.principal;
    if principal.can_in(Scope::SessionsTerminate, account) {
        return Ok(());
    }
    if !caller.can_read(account) {
        return Err(ApiError::AccountNotFound(account.id.to_string()));
    }
    Err(ApiError::Forbidden(format!(
        "{principal} lacks the scope sessions:terminate in account {}",
        account.alias
    )))
}

/// Who the audit line names: the principal (never a credential).
fn audit_name(ctx: &Context<'_>) -> String {
    super::query::caller(ctx).map_or_else(|_| "unknown".to_owned(), |c| c.principal.to_string())
}
