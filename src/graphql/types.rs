//! GraphQL output and input types for sessions, and their documentation
//! (taken from the SSM API reference, so GraphiQL explains the fields).

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, Interface, Object, SimpleObject,
};
use chrono::{DateTime, Utc};

use crate::cache::Freshness;
use crate::cursor::{Cursor, CursorCodec};
use crate::error::ApiError;
use crate::nodes::NodeLoader;
use crate::sessions::Located;
use crate::upstream::SessionRef;
use crate::{accounts, model};

/// Which list of sessions to read.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::SessionState")]
pub enum SessionState {
    /// Sessions still running: connected, connecting or disconnected.
    Active,
    /// Ended sessions (terminated, terminating or failed) of roughly the last 30 days.
    History,
}

/// The status of a session.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::SessionStatus")]
pub enum SessionStatus {
    /// The session is connected to the managed node.
    Connected,
    /// The session is connecting.
    Connecting,
    /// The session was disconnected and may be resumed.
    Disconnected,
    /// The session was terminated.
    Terminated,
    /// The session is being terminated.
    Terminating,
    /// The session failed to start.
    Failed,
}

/// How access to the node was granted.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::AccessType")]
pub enum AccessType {
    /// Regular Session Manager access.
    Standard,
    /// Just-in-time node access, approved per request.
    JustInTime,
}

/// Connection status of a node's SSM Agent.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::PingStatus")]
pub enum PingStatus {
    /// The agent is connected to Systems Manager.
    Online,
    /// The agent has not pinged Systems Manager for a while.
    ConnectionLost,
    /// Deprecated by the service and no longer in use.
    #[graphql(deprecation = "The service no longer reports it.")]
    Inactive,
}

/// The operating system platform type of a managed node.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::PlatformType")]
pub enum PlatformType {
    /// Windows.
    Windows,
    /// Linux.
    Linux,
    /// macOS (the service spells it `MacOS`).
    MacOs,
}

/// The type of a managed node: an EC2 instance or a managed (hybrid) instance.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::ResourceType")]
pub enum ResourceType {
    /// An Amazon EC2 instance (`i-…`).
    #[graphql(name = "EC2_INSTANCE")]
    Ec2Instance,
    /// An on-premises server, edge device or VM registered through a hybrid activation (`mi-…`).
    ManagedInstance,
}

/// Filters on a session list; all given filters must hold. Each maps to one
/// `DescribeSessions` filter key.
#[derive(InputObject, Clone, Debug, Default)]
#[graphql(name = "SessionFilter")]
pub struct SessionFilterInput {
    /// Sessions that started at or after this instant (`InvokedAfter`).
    pub invoked_after: Option<DateTime<Utc>>,
    /// Sessions that started before this instant (`InvokedBefore`).
    pub invoked_before: Option<DateTime<Utc>>,
    /// Sessions connected to this target, e.g. `i-0123456789abcdef0` (`Target`, 1 to 400 characters).
    pub target: Option<String>,
    /// Sessions started by this IAM or STS ARN (`Owner`, 1 to 400 characters).
    pub owner: Option<String>,
    /// Sessions in this status (`Status`).
    pub status: Option<SessionStatus>,
    /// The session with this id (`SessionId`, 1 to 96 characters).
    pub session_id: Option<String>,
    /// Sessions granted this way (`AccessType`).
    pub access_type: Option<AccessType>,
}

impl SessionFilterInput {
    /// Checks every value against the service's limits.
    pub fn into_model(self) -> Result<model::SessionFilter, model::InvalidInput> {
        model::SessionFilter {
            invoked_after: self.invoked_after,
            invoked_before: self.invoked_before,
            target: self.target,
            owner: self.owner,
            status: self.status.map(Into::into),
            session_id: self.session_id.map(model::SessionId::parse).transpose()?,
            access_type: self.access_type.map(Into::into),
        }
        .validate()
    }
}

/// A Session Manager session, with the account and region it was read in.
pub struct Session {
    pub inner: SessionRef,
    pub account: Arc<accounts::Account>,
    pub region: model::Region,
}

impl From<Located> for Session {
    fn from(located: Located) -> Self {
        Self {
            inner: located.session,
            account: located.account,
            region: located.region,
        }
    }
}

/// A Session Manager session: a connection to a managed node, in one
/// account and region.
#[Object]
impl Session {
    /// Global id (Relay `Node`): encodes account, region and session id.
    /// Fetch the session again with `node(id:)`.
    async fn id(&self) -> ID {
        ID(node_id::encode(
            &self.account.id,
            &self.region,
            &self.inner.session_id,
        ))
    }

    /// The account the session belongs to.
    async fn account(&self) -> Account {
        Account(self.account.clone())
    }

    /// The region the session was started in.
    async fn region(&self) -> &str {
        self.region.as_str()
    }

    /// The ID of the session.
    async fn session_id(&self) -> &str {
        self.inner.session_id.as_str()
    }

    /// The managed node the session connects to (`i-…` for EC2, `mi-…` for hybrid nodes).
    async fn target(&self) -> Option<&str> {
        self.inner.target.as_deref()
    }

    /// The status of the session. Null if SSM reports a status this schema does not know.
    async fn status(&self) -> Option<SessionStatus> {
        self.inner.status.map(Into::into)
    }

    /// When the session began.
    async fn start_date(&self) -> Option<DateTime<Utc>> {
        self.inner.start_date
    }

    /// When the session was terminated; null while it has not ended.
    async fn end_date(&self) -> Option<DateTime<Utc>> {
        self.inner.end_date
    }

    /// The name of the Session Manager SSM document used to define the
    /// parameters and plugin settings for the session, e.g. `SSM-SessionManagerRunShell`.
    async fn document_name(&self) -> Option<&str> {
        self.inner.document_name.as_deref()
    }

    /// The ID (an IAM user or assumed-role ARN) of the principal that started the session.
    async fn owner(&self) -> Option<&str> {
        self.inner.owner.as_deref()
    }

    /// The reason given for connecting, when one was.
    async fn reason(&self) -> Option<&str> {
        self.inner.reason.as_deref()
    }

    /// Reserved for future use.
    async fn details(&self) -> Option<&str> {
        self.inner.details.as_deref()
    }

    /// Reserved for future use.
    async fn output_url(&self) -> Option<OutputUrl> {
        self.inner.output_url.as_ref().map(|u| OutputUrl {
            s3_output_url: u.s3_output_url.clone(),
            cloud_watch_output_url: u.cloud_watch_output_url.clone(),
        })
    }

    /// The maximum duration of the session, in minutes (1 to 1440).
    async fn max_session_duration(&self) -> Option<u32> {
        self.inner.max_session_duration_minutes
    }

    /// How access to the node was granted.
    async fn access_type(&self) -> Option<AccessType> {
        self.inner.access_type.map(Into::into)
    }

    /// The managed node the session's target names, as
    /// `DescribeInstanceInformation` describes it in the session's account
    /// and region. Null when the target is not a managed node id or is not
    /// registered with Systems Manager there. Loaded in batches per account
    /// and region across the sessions of a request, and cached briefly.
    async fn managed_node(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ManagedNode>> {
        let Some(id) = self
            .inner
            .target
            .as_deref()
            .and_then(|t| model::InstanceId::parse(t).ok())
        else {
            return Ok(None);
        };
        let loader = ctx.data::<Arc<DataLoader<NodeLoader>>>().map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("no node loader in the schema data")).extend()
        })?;
        let source = model::SourceKey {
            account: self.account.id.clone(),
            region: self.region.clone(),
        };
        // Loads run on DataLoader's own task; the response cache learns
        // here, in the request's task, how long node data may be reused.
        Freshness::note_lifetime(loader.loader().lifetime());
        match loader.load_one((source, id)).await {
            Ok(None) => Ok(None),
            Ok(Some(Ok(node))) => Ok(Some(ManagedNode(node))),
            Ok(Some(Err(e))) => Err(ApiError::from(e).extend()),
            Err(never) => match never {},
        }
    }

    /// Whole seconds from start to end; null while the session has not ended.
    async fn duration_seconds(&self) -> Option<i64> {
        duration_seconds(&self.inner)
    }

    /// The person or workload behind `owner`: the user name of an IAM user
    /// ARN, or the session name of an assumed-role ARN.
    async fn owner_name(&self) -> Option<&str> {
        owner_name(self.inner.owner.as_deref())
    }
}

/// `Session.durationSeconds`: whole seconds from start to end.
pub(super) fn duration_seconds(session: &model::Session) -> Option<i64> {
    match (session.start_date, session.end_date) {
        (Some(start), Some(end)) => Some((end - start).num_seconds()),
        _ => None,
    }
}

/// `Session.ownerName`: the last path segment of the owner ARN's resource
/// (what follows the fifth `:`, then the last `/`).
pub(super) fn owner_name(owner: Option<&str>) -> Option<&str> {
    let owner = owner?;
    let colon = owner
        .bytes()
        .enumerate()
        .filter(|&(_, b)| b == b':')
        .nth(4)?
        .0;
    let resource = &owner[colon + 1..];
    let name = match resource.bytes().rposition(|b| b == b'/') {
        Some(slash) => &resource[slash + 1..],
        None => resource,
    };
    Some(name).filter(|s| !s.is_empty())
}

/// A managed node, as `DescribeInstanceInformation` describes it.
pub struct ManagedNode(pub Arc<model::ManagedNode>);

/// A node (EC2 instance, or on-premises server, edge device or VM) that
/// Systems Manager manages, as `DescribeInstanceInformation` describes it.
#[Object]
impl ManagedNode {
    /// The managed node ID (`i-…` or `mi-…`).
    async fn instance_id(&self) -> &str {
        self.0.instance_id.as_str()
    }

    /// The fully qualified host name of the managed node.
    async fn computer_name(&self) -> Option<&str> {
        self.0.computer_name.as_deref()
    }

    /// The operating system platform type. Null if SSM reports a type this schema does not know.
    async fn platform_type(&self) -> Option<PlatformType> {
        self.0.platform_type.map(Into::into)
    }

    /// The name of the operating system platform running on the managed node.
    async fn platform_name(&self) -> Option<&str> {
        self.0.platform_name.as_deref()
    }

    /// Connection status of SSM Agent. Null if SSM reports a status this schema does not know.
    async fn ping_status(&self) -> Option<PingStatus> {
        self.0.ping_status.map(Into::into)
    }

    /// The IP address of the managed node.
    async fn ip_address(&self) -> Option<&str> {
        self.0.ip_address.as_deref()
    }

    /// The version of SSM Agent running on the managed node.
    async fn agent_version(&self) -> Option<&str> {
        self.0.agent_version.as_deref()
    }

    /// The type of instance: an EC2 instance or a managed instance.
    async fn resource_type(&self) -> Option<ResourceType> {
        self.0.resource_type.map(Into::into)
    }

    /// The date and time when the agent last pinged the Systems Manager service.
    async fn last_ping_date_time(&self) -> Option<DateTime<Utc>> {
        self.0.last_ping_date_time
    }
}

/// A configured AWS account.
pub struct Account(pub Arc<accounts::Account>);

/// An AWS account the gateway reads sessions from.
#[Object]
impl Account {
    /// The 12-digit account id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The short name callers may use instead of the id.
    async fn alias(&self) -> &str {
        &self.0.alias
    }

    /// The regions the gateway reads in this account.
    async fn regions(&self) -> Vec<&str> {
        self.0.regions.iter().map(model::Region::as_str).collect()
    }
}

/// An object with a global id (Relay Global Object Identification).
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "The global id."))]
pub enum Node {
    Session(Session),
}

/// Global ids: `base64url("Session:<account>:<region>:<sessionId>")`. Not a
/// secret and not signed: the id only names a session, and reading it again
/// goes through the same routing and permissions as any query.
pub mod node_id {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use crate::model::{AccountId, InvalidInput, Region, SessionId};

    const PREFIX: &str = "Session:";

    pub fn encode(account: &AccountId, region: &Region, session: &SessionId) -> String {
        let mut out = Vec::new();
        encode_into(account, region, session, &mut out);
        // base64url is ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`encode`], appending the id to `out`.
    pub fn encode_into(
        account: &AccountId,
        region: &Region,
        session: &SessionId,
        out: &mut Vec<u8>,
    ) {
        // Account (12), region (at most 25) and session id (at most 96)
        // bytes: the raw id fits a buffer on the stack.
        let mut raw = [0u8; 192];
        let mut len = 0;
        for part in [
            PREFIX.as_bytes(),
            account.as_str().as_bytes(),
            b":",
            region.as_str().as_bytes(),
            b":",
            session.as_str().as_bytes(),
        ] {
            let Some(slot) = raw.get_mut(len..len + part.len()) else {
                // Longer than any valid parts: the slow way.
                let text = format!("{PREFIX}{account}:{region}:{session}");
                out.extend_from_slice(URL_SAFE_NO_PAD.encode(text).as_bytes());
                return;
            };
            slot.copy_from_slice(part);
            len += part.len();
        }
        // The SIMD encoder writes what `URL_SAFE_NO_PAD` writes.
        base64_simd::URL_SAFE_NO_PAD.encode_append(&raw[..len], out);
    }

    /// The parts of a global id, each checked.
    pub fn decode(id: &str) -> Result<(AccountId, Region, SessionId), InvalidInput> {
        let bad = || InvalidInput {
            field: "id",
            reason: "is not a global id this gateway issued".to_owned(),
        };
        let raw = URL_SAFE_NO_PAD.decode(id).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let rest = raw.strip_prefix(PREFIX).ok_or_else(bad)?;
        let mut parts = rest.splitn(3, ':');
        let (Some(account), Some(region), Some(session)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok((
            AccountId::parse(account)?,
            Region::parse(region)?,
            SessionId::parse(session)?,
        ))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ids_round_trip_and_garbage_is_refused() {
            let (a, r, s) = (
                AccountId::parse("111122223333").unwrap(),
                Region::parse("eu-west-1").unwrap(),
                SessionId::parse("alice-0123456789abcdef0").unwrap(),
            );
            let id = encode(&a, &r, &s);
            assert_eq!(decode(&id).unwrap(), (a, r, s));
            for bad in [
                "",
                "%%",
                "U2Vzc2lvbjo",
                "Tm9kZTox",
                &URL_SAFE_NO_PAD.encode("Session:1:eu-west-1:x"),
            ] {
                assert!(decode(bad).is_err(), "{bad}");
            }
        }
    }
}

/// Where a session's output is kept (reserved by the service for future use).
#[derive(SimpleObject)]
pub struct OutputUrl {
    /// Reserved for future use.
    pub s3_output_url: Option<String>,
    /// Reserved for future use.
    pub cloud_watch_output_url: Option<String>,
}

/// A cursor, encoded only when a client selects it (signing costs a MAC).
#[derive(Clone)]
pub struct LazyCursor {
    pub codec: Arc<CursorCodec>,
    pub cursor: Cursor,
}

impl LazyCursor {
    fn encode(&self) -> async_graphql::Result<String> {
        self.codec.encode(&self.cursor).map_err(|e| {
            ApiError::Internal(anyhow::Error::new(e).context("encoding a cursor")).extend()
        })
    }
}

/// Paging state of a connection, as the Relay Cursor Connections spec defines it.
pub struct PageInfo {
    pub has_previous_page: bool,
    pub has_next_page: Option<bool>,
    pub start: Option<LazyCursor>,
    pub end: Option<LazyCursor>,
}

/// Paging state of a connection, as the Relay Cursor Connections spec defines it.
#[Object]
impl PageInfo {
    /// True when `after` was given: the window starts after some session.
    async fn has_previous_page(&self) -> bool {
        self.has_previous_page
    }

    /// False only when no further session exists. Asking for it may cost one
    /// look-ahead upstream call when the window ends exactly where an upstream
    /// page does.
    async fn has_next_page(&self) -> bool {
        // The `sessions` resolver computes it whenever this field is selected;
        // `true` ("maybe") is the safe answer should that ever not happen.
        self.has_next_page.unwrap_or(true)
    }

    /// The cursor of the first edge; null when there are no edges.
    async fn start_cursor(&self) -> async_graphql::Result<Option<String>> {
        self.start.as_ref().map(LazyCursor::encode).transpose()
    }

    /// The cursor of the last edge; null when there are no edges, except
    /// when a `COST_LIMIT_EXCEEDED` stopped the window before its first
    /// session: then it resumes past the upstream pages already read. Pass
    /// it as `after` for the next page.
    async fn end_cursor(&self) -> async_graphql::Result<Option<String>> {
        self.end.as_ref().map(LazyCursor::encode).transpose()
    }
}

/// One session in a connection, with the cursor to resume after it.
pub struct SessionEdge {
    pub node: Session,
    pub cursor: LazyCursor,
}

/// One session in a connection, with the cursor to resume after it.
#[Object]
impl SessionEdge {
    /// Opaque and tamper-evident; pass it as `after` to continue after this
    /// edge. Valid only with the same `state`, `filter`, `accounts` and `regions`.
    async fn cursor(&self) -> async_graphql::Result<String> {
        self.cursor.encode()
    }

    /// The session.
    async fn node(&self) -> &Session {
        &self.node
    }
}

/// A window of sessions, newest `startDate` first; ties by account id, then
/// region, then upstream order.
pub struct SessionConnection {
    pub edges: Vec<SessionEdge>,
    pub page_info: PageInfo,
}

/// A window of sessions, newest `startDate` first; ties by account id, then
/// region, then upstream order.
#[Object]
impl SessionConnection {
    /// The sessions, each with its cursor.
    async fn edges(&self) -> &[SessionEdge] {
        &self.edges
    }

    /// The sessions of `edges`, without cursors.
    async fn nodes(&self) -> Vec<&Session> {
        self.edges.iter().map(|e| &e.node).collect()
    }

    /// Paging state: whether more sessions follow, and the cursors at both ends.
    async fn page_info(&self) -> &PageInfo {
        &self.page_info
    }
}
