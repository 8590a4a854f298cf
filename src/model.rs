//! The domain model: what a Session Manager session is, once it has crossed
//! the edge of the gateway.
//!
//! Upstream adapters convert SDK types into these, the GraphQL layer converts
//! these into its output types, and nothing else travels between them. Values
//! are validated when they are built (`parse`), so code further in can trust
//! them: a [`SessionFilter`] always satisfies the service's limits, so an
//! invalid request is refused before it costs an upstream call.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

/// Which list of sessions to read (`DescribeSessions`' required `State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Sessions still running: connected, connecting or disconnected.
    Active,
    /// Ended sessions (terminated, terminating or failed) of roughly the last 30 days.
    History,
}

impl SessionState {
    /// The service's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::History => "History",
        }
    }
}

/// A session's status, as the service reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SessionStatus {
    Connected,
    Connecting,
    Disconnected,
    Terminated,
    Terminating,
    Failed,
}

impl SessionStatus {
    /// Every status, in the service model's order.
    pub const ALL: [Self; 6] = [
        Self::Connected,
        Self::Connecting,
        Self::Disconnected,
        Self::Terminated,
        Self::Terminating,
        Self::Failed,
    ];

    /// The service's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::Connecting => "Connecting",
            Self::Disconnected => "Disconnected",
            Self::Terminated => "Terminated",
            Self::Terminating => "Terminating",
            Self::Failed => "Failed",
        }
    }

    /// Parses the service's spelling; `None` for a value the model does not list.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How a session was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AccessType {
    Standard,
    JustInTime,
}

impl AccessType {
    /// The service's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "Standard",
            Self::JustInTime => "JustInTime",
        }
    }

    /// Parses the service's spelling; `None` for a value the model does not list.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Standard, Self::JustInTime]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A session id (`SessionId`, 1..=96 characters), e.g. `alice-0a1b2c3d4e5f67890`.
/// Shared, not copied: a cursor's position keeps the id of the last session
/// it passed ([`crate::cursor::LastId`]) for a reference count.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// The model's bound on a session id's length.
    pub const MAX_LEN: usize = 96;

    /// Accepts 1..=96 characters.
    pub fn parse(s: impl Into<String>) -> Result<Self, InvalidInput> {
        let s = s.into();
        check_len("sessionId", &s, Self::MAX_LEN)?;
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id, shared.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

// Through `parse`, so that a stored value (the shared cache) is checked
// like any other input.
impl TryFrom<String> for SessionId {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, InvalidInput> {
        Self::parse(s)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0.as_ref().to_owned()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 12-digit AWS account id. Shared, not copied: every source key, page
/// key and edge of a window carries one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(Arc<str>);

impl AccountId {
    /// Accepts exactly 12 ASCII digits.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.into()))
        } else {
            Err(InvalidInput {
                field: "account",
                reason: format!("must be 12 digits (got {s:?})"),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AWS region name such as `us-east-1`. Shared, not copied, as
/// [`AccountId`] is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(Arc<str>);

impl Region {
    /// Accepts names shaped like AWS regions, `^[a-z]{2}(-[a-z]+)+-\d$`:
    /// `us-east-1`, `us-gov-west-1`, `ap-southeast-2`. The settings file
    /// and GraphQL arguments both go through here.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let parts: Vec<&str> = s.split('-').collect();
        let letters = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
        let shaped = match parts.as_slice() {
            [first, middle @ .., last] => {
                first.len() == 2
                    && letters(first)
                    && !middle.is_empty()
                    && middle.iter().all(|p| letters(p))
                    && last.len() == 1
                    && last.bytes().all(|b| b.is_ascii_digit())
            }
            _ => false,
        };
        if shaped {
            Ok(Self(s.into()))
        } else {
            Err(InvalidInput {
                field: "region",
                reason: format!("is not an AWS region name like us-east-1 (got {s:?})"),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One place sessions are read from: an account in a region. Every cache
/// key, cursor position and upstream client is per source.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub account: AccountId,
    pub region: Region,
}

/// The service's bounds on `MaxResults` (`DescribeSessions`): the largest
/// upstream page, and the range `pageSize` and settings accept.
pub const MAX_PAGE_SIZE: u8 = 200;

/// One session, as `DescribeSessions` returns it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub session_id: SessionId,
    /// The managed node (`i-…`, `mi-…`) or other target the session connects to.
    pub target: Option<String>,
    /// `None` only when the service reports a status this model does not know.
    pub status: Option<SessionStatus>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub document_name: Option<String>,
    /// The IAM or STS ARN of whoever started the session.
    pub owner: Option<String>,
    pub reason: Option<String>,
    pub details: Option<String>,
    pub output_url: Option<OutputUrl>,
    /// Minutes, 1..=1440; `None` when not set or not a number.
    pub max_session_duration_minutes: Option<u32>,
    pub access_type: Option<AccessType>,
}

impl Session {
    /// A session with only its id; every other field absent (as the service
    /// may send it).
    pub fn new(session_id: SessionId) -> Self {
        Self {
            session_id,
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
}

/// Where a session's output is kept (reserved by the service for future use).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputUrl {
    pub s3_output_url: Option<String>,
    pub cloud_watch_output_url: Option<String>,
}

/// The filters `DescribeSessions` accepts, typed. Built with
/// [`SessionFilter::validate`], so every value respects the model's bounds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionFilter {
    /// Sessions that started at or after this instant.
    pub invoked_after: Option<DateTime<Utc>>,
    /// Sessions that started before this instant.
    pub invoked_before: Option<DateTime<Utc>>,
    pub target: Option<String>,
    pub owner: Option<String>,
    pub status: Option<SessionStatus>,
    pub session_id: Option<SessionId>,
    pub access_type: Option<AccessType>,
}

/// The model's bound on a filter value's length.
pub const MAX_FILTER_VALUE_LEN: usize = 400;

impl SessionFilter {
    /// Whether `session` passes every filter, as `DescribeSessions` decides
    /// it: the live subscription filters one unfiltered Active list for
    /// every subscriber this way. An unknown value (no start date, no
    /// status) never matches a filter on it.
    pub fn matches(&self, session: &Session) -> bool {
        let start = session.start_date;
        self.invoked_after
            .is_none_or(|t| start.is_some_and(|s| s >= t))
            && self
                .invoked_before
                .is_none_or(|t| start.is_some_and(|s| s < t))
            && self
                .target
                .as_ref()
                .is_none_or(|t| session.target.as_ref() == Some(t))
            && self
                .owner
                .as_ref()
                .is_none_or(|o| session.owner.as_ref() == Some(o))
            && self.status.is_none_or(|s| session.status == Some(s))
            && self
                .session_id
                .as_ref()
                .is_none_or(|id| &session.session_id == id)
            && self
                .access_type
                .is_none_or(|a| session.access_type == Some(a))
    }

    /// Checks the string values against the model (1..=400 characters).
    pub fn validate(self) -> Result<Self, InvalidInput> {
        if let Some(t) = &self.target {
            check_len("filter.target", t, MAX_FILTER_VALUE_LEN)?;
        }
        if let Some(o) = &self.owner {
            check_len("filter.owner", o, MAX_FILTER_VALUE_LEN)?;
        }
        Ok(self)
    }

    /// The filter as the service's `(key, value)` pairs, in a fixed order, so
    /// the same filter always makes the same request (and fingerprint).
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(t) = self.invoked_after {
            pairs.push(("InvokedAfter", format_timestamp(t)));
        }
        if let Some(t) = self.invoked_before {
            pairs.push(("InvokedBefore", format_timestamp(t)));
        }
        if let Some(t) = &self.target {
            pairs.push(("Target", t.clone()));
        }
        if let Some(o) = &self.owner {
            pairs.push(("Owner", o.clone()));
        }
        if let Some(s) = self.status {
            pairs.push(("Status", s.as_str().to_owned()));
        }
        if let Some(id) = &self.session_id {
            pairs.push(("SessionId", id.as_str().to_owned()));
        }
        if let Some(a) = self.access_type {
            pairs.push(("AccessType", a.as_str().to_owned()));
        }
        pairs
    }
}

/// Timestamps go upstream as `2018-08-29T00:00:00Z`, the form the API
/// documents; sub-second precision is kept when there is some.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), InvalidInput> {
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(InvalidInput {
            field,
            reason: format!("must be 1 to {max} characters long (got {len})"),
        });
    }
    Ok(())
}

/// A managed node id: `i-` and 8 or 17 word characters (an EC2 instance),
/// or `mi-` and 17 (a hybrid node), as the SSM model's pattern
/// `(^i-(\w{8}|\w{17})$)|(^mi-\w{17}$)` has it.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// Accepts exactly the model's pattern (`\w` being ASCII letters, digits
    /// and `_`).
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let word = |rest: &str, lens: &[usize]| {
            lens.contains(&rest.len())
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let ok = match (s.strip_prefix("i-"), s.strip_prefix("mi-")) {
            (Some(rest), _) => word(rest, &[8, 17]),
            (_, Some(rest)) => word(rest, &[17]),
            _ => false,
        };
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidInput {
                field: "instanceId",
                reason: format!("is not a managed node id (got {s:?})"),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, InvalidInput> {
        Self::parse(&s)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Connection status of a node's SSM Agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PingStatus {
    Online,
    ConnectionLost,
    /// Deprecated by the service, still in its model.
    Inactive,
}

impl PingStatus {
    /// The service's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::ConnectionLost => "ConnectionLost",
            Self::Inactive => "Inactive",
        }
    }

    /// Parses the service's spelling; `None` for a value the model does not list.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Online, Self::ConnectionLost, Self::Inactive]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A node's operating system family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PlatformType {
    Windows,
    Linux,
    MacOs,
}

impl PlatformType {
    /// The service's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Windows => "Windows",
            Self::Linux => "Linux",
            Self::MacOs => "MacOS",
        }
    }

    /// Parses the service's spelling; `None` for a value the model does not list.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Windows, Self::Linux, Self::MacOs]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What kind of machine a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ResourceType {
    Ec2Instance,
    ManagedInstance,
}

impl ResourceType {
    /// The service's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ec2Instance => "EC2Instance",
            Self::ManagedInstance => "ManagedInstance",
        }
    }

    /// Parses the service's spelling; `None` for a value the model does not list.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Ec2Instance, Self::ManagedInstance]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A managed node, as `DescribeInstanceInformation` describes it (the
/// fields the gateway serves). Enums are `None` for values the model does
/// not list; the rest are `None` where the service leaves them out.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManagedNode {
    pub instance_id: InstanceId,
    pub computer_name: Option<String>,
    pub platform_type: Option<PlatformType>,
    pub platform_name: Option<String>,
    pub ping_status: Option<PingStatus>,
    pub ip_address: Option<String>,
    pub agent_version: Option<String>,
    pub resource_type: Option<ResourceType>,
    pub last_ping_date_time: Option<DateTime<Utc>>,
}

/// A value from a caller that breaks the service's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidInput {
    /// The argument or field at fault, as the caller named it.
    pub field: &'static str,
    pub reason: String,
}

/// What a grant permits in its accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub enum Scope {
    /// List accounts, read sessions and managed nodes.
    #[serde(rename = "sessions:read")]
    SessionsRead,
    /// End sessions (the live-updates issue's `terminateSession`).
    #[serde(rename = "sessions:terminate")]
    SessionsTerminate,
}

impl Scope {
    /// The name used in settings, e.g. `sessions:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionsRead => "sessions:read",
            Self::SessionsTerminate => "sessions:terminate",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_bounded_like_the_service() {
        let long = "x".repeat(MAX_FILTER_VALUE_LEN + 1);
        let err = SessionFilter {
            target: Some(long),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "filter.target");
        assert!(
            SessionFilter {
                owner: Some(String::new()),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(SessionId::parse("x".repeat(97)).is_err());
        assert!(SessionId::parse("alice-0123456789abcdef0").is_ok());
    }

    #[test]
    fn instance_ids_follow_the_model_pattern() {
        for good in [
            "i-0123abcd",
            "i-0123456789abcdef0",
            "mi-0123456789abcdef0",
            "i-ABC_1234",
        ] {
            assert_eq!(InstanceId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "i-",
            "i-0123abc",
            "i-0123456789abcdef",
            "mi-0123abcd",
            "i-0123-abcd",
            "x-0123abcd",
            "i-0123456789abcdef00",
            "arn:aws:ecs:us-east-1:111122223333:task/x",
            "i-0123abcé",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(PlatformType::parse("MacOS"), Some(PlatformType::MacOs));
        assert_eq!(
            ResourceType::parse("EC2Instance"),
            Some(ResourceType::Ec2Instance)
        );
        assert_eq!(PingStatus::parse("Asleep"), None);
    }

    #[test]
    fn account_ids_and_regions_are_parsed_once() {
        assert!(AccountId::parse("111122223333").is_ok());
        for bad in ["", "11112222333", "1111222233334", "11112222333x"] {
            assert!(AccountId::parse(bad).is_err(), "{bad}");
        }
        for good in ["us-east-1", "eu-west-1", "us-gov-west-1", "ap-southeast-2"] {
            assert!(Region::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "US-EAST-1",
            "us-east-x",
            "us--1",
            "us-east-1 ",
            "us-east-12",
            "use-east-1",
            "abc-east-10",
            "us-east-1a",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pairs_use_the_service_spelling_and_a_fixed_order() {
        let t = DateTime::parse_from_rfc3339("2018-08-29T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let f = SessionFilter {
            access_type: Some(AccessType::JustInTime),
            invoked_after: Some(t),
            status: Some(SessionStatus::Connected),
            ..Default::default()
        };
        assert_eq!(
            f.to_pairs(),
            vec![
                ("InvokedAfter", "2018-08-29T00:00:00Z".to_owned()),
                ("Status", "Connected".to_owned()),
                ("AccessType", "JustInTime".to_owned()),
            ]
        );
    }
}
