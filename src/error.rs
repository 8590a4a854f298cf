//! The errors clients see, and which error type to use where.
//!
//! - Adapters and internals (`upstream`, `cache`, `accounts` set-up) use
//!   `anyhow` with `.context(..)`, or their own small enums
//!   ([`UpstreamError`], [`CursorError`], [`PagingError`], [`RoutingError`],
//!   [`InvalidInput`]) where callers must tell cases apart.
//! - The sessions service and the resolvers return [`ApiError`]: each
//!   variant maps to one stable `extensions.code`, and its message is safe to
//!   show a client. Whatever detail the client must not see (upstream
//!   messages, internal causes) is logged, once, with its whole chain, when
//!   it is converted here.
//! - `crate::graphql` turns an `ApiError` into a GraphQL error, and gives
//!   every error async-graphql raises itself (parse, validation, coercion)
//!   a code too. An error that reaches a client without a code is our bug:
//!   it reads `INTERNAL` and "internal error", and its message is logged
//!   (`crate::graphql::internal`).
//! - Errors before any GraphQL work (media types, body limits, missing or
//!   bad credentials: `UNAUTHENTICATED`, a caller over its rate:
//!   `RATE_LIMITED`) are answered by `crate::http` with
//!   an HTTP status and the same body shape.

use std::sync::Arc;

use crate::accounts::RoutingError;
use crate::cursor::CursorError;
use crate::model::InvalidInput;
use crate::paging::PagingError;
use crate::upstream::{UpstreamError, UpstreamErrorKind};

/// `extensions.code` values. Part of the public contract: never renamed.
pub mod code {
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    pub const INVALID_CURSOR: &str = "INVALID_CURSOR";
    pub const ACCOUNT_NOT_FOUND: &str = "ACCOUNT_NOT_FOUND";
    /// A connection already holds as many subscriptions as it may.
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "TOO_MANY_SUBSCRIPTIONS";
    pub const UPSTREAM_THROTTLED: &str = "UPSTREAM_THROTTLED";
    pub const UPSTREAM_UNAVAILABLE: &str = "UPSTREAM_UNAVAILABLE";
    pub const UPSTREAM_ACCESS_DENIED: &str = "UPSTREAM_ACCESS_DENIED";
    pub const INTERNAL: &str = "INTERNAL";
    /// Missing, malformed, expired or unknown credentials: HTTP 401 with
    /// `WWW-Authenticate: Bearer`, and no `data`.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The caller is authenticated but lacks the scope an operation needs
    /// (a field error), or the operation is turned off on this gateway. An
    /// account the caller may not read is never `FORBIDDEN`: it is
    /// `ACCOUNT_NOT_FOUND`, as if it did not exist.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// The document has several operations and `operationName` names none
    /// of them (or is missing).
    pub const OPERATION_RESOLUTION_FAILURE: &str = "OPERATION_RESOLUTION_FAILURE";
    /// The request would cost (or did cost) a source more upstream calls
    /// than `limits.max_upstream_calls_per_source`.
    pub const COST_LIMIT_EXCEEDED: &str = "COST_LIMIT_EXCEEDED";
    /// The request ran past `http.request_timeout_secs`.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// The response would be larger than `http.max_response_bytes`.
    pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";
    /// Too many requests in flight: retry after the `Retry-After` delay.
    pub const OVERLOADED: &str = "OVERLOADED";
    /// An automatic persisted query's hash the gateway does not hold: send
    /// the document with it (Apollo's code).
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    /// A persisted query's hash that is not its document's SHA-256.
    pub const PERSISTED_QUERY_HASH_MISMATCH: &str = "PERSISTED_QUERY_HASH_MISMATCH";
    /// Persisted queries are off, or the request's version is not 1.
    pub const PERSISTED_QUERY_NOT_SUPPORTED: &str = "PERSISTED_QUERY_NOT_SUPPORTED";
    /// An operation that is not on the safelist (`persisted_queries.safelist`),
    /// sent as a document or as a hash.
    pub const OPERATION_NOT_IN_SAFELIST: &str = "OPERATION_NOT_IN_SAFELIST";
    /// Safelist mode with `persisted_queries.require_id`: the request sent a
    /// document; operations run by their hash alone (Apollo's code).
    pub const PERSISTED_QUERY_ID_REQUIRED: &str = "PERSISTED_QUERY_ID_REQUIRED";
    /// The caller is over its request rate (`[rate_limits]`): HTTP 429 with
    /// `Retry-After`, or an error on the subscription it tried to start.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";

    /// HTTP-level refusals before any GraphQL work, each with its status:
    /// a request the gateway cannot read (400), an `Accept` it cannot
    /// answer (406), a body type it does not take (415), a mutation over
    /// GET (405).
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";

    /// Every code above (a unit test keeps it complete).
    pub const ALL: &[&str] = &[
        BAD_USER_INPUT,
        INVALID_CURSOR,
        ACCOUNT_NOT_FOUND,
        TOO_MANY_SUBSCRIPTIONS,
        UPSTREAM_THROTTLED,
        UPSTREAM_UNAVAILABLE,
        UPSTREAM_ACCESS_DENIED,
        INTERNAL,
        UNAUTHENTICATED,
        FORBIDDEN,
        GRAPHQL_PARSE_FAILED,
        GRAPHQL_VALIDATION_FAILED,
        OPERATION_RESOLUTION_FAILURE,
        COST_LIMIT_EXCEEDED,
        TIMEOUT,
        RESPONSE_TOO_LARGE,
        OVERLOADED,
        RATE_LIMITED,
        PERSISTED_QUERY_NOT_FOUND,
        PERSISTED_QUERY_HASH_MISMATCH,
        PERSISTED_QUERY_NOT_SUPPORTED,
        OPERATION_NOT_IN_SAFELIST,
        PERSISTED_QUERY_ID_REQUIRED,
        BAD_REQUEST,
        NOT_ACCEPTABLE,
        UNSUPPORTED_MEDIA_TYPE,
        METHOD_NOT_ALLOWED,
    ];

    /// `code` if it is one of ours, else `OTHER`: a metric label never
    /// takes a value a client could make up.
    pub fn bounded(code: &str) -> &'static str {
        ALL.iter().find(|k| **k == code).copied().unwrap_or("OTHER")
    }
}

/// An error the service or a resolver returns to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An argument breaks the documented rules; the message names it.
    #[error("{0}")]
    BadUserInput(String),
    /// The `after` cursor is not one this gateway minted for these arguments,
    /// or its upstream position has expired.
    #[error("{0}")]
    InvalidCursor(String),
    /// No configured account has this id or alias, or the caller may not
    /// read it: the two are indistinguishable on purpose.
    #[error("no configured account has the id or alias {0:?}")]
    AccountNotFound(String),
    /// The caller may not do this; the message says why.
    #[error("{0}")]
    Forbidden(String),
    /// One subscription more than a connection may hold.
    #[error("this connection already holds {0} subscriptions, the most it may; complete one first")]
    TooManySubscriptions(u32),
    #[error("SSM is throttling requests; retry after a short wait")]
    UpstreamThrottled,
    /// The request spent its upstream calls on one source (while running;
    /// refusals before running are raised by the cost estimate).
    #[error(
        "this request reached its limit of {limit} upstream calls in account {account}, region {region}"
    )]
    CostLimitExceeded {
        account: String,
        region: String,
        limit: usize,
    },
    #[error("SSM could not be reached or failed; retry later")]
    UpstreamUnavailable,
    #[error("the gateway is not permitted to read these sessions")]
    UpstreamAccessDenied,
    /// A bug or an unexpected upstream answer; details are in the log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The stable `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUserInput(_) => code::BAD_USER_INPUT,
            Self::InvalidCursor(_) => code::INVALID_CURSOR,
            Self::AccountNotFound(_) => code::ACCOUNT_NOT_FOUND,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::TooManySubscriptions(_) => code::TOO_MANY_SUBSCRIPTIONS,
            Self::UpstreamThrottled => code::UPSTREAM_THROTTLED,
            Self::CostLimitExceeded { .. } => code::COST_LIMIT_EXCEEDED,
            Self::UpstreamUnavailable => code::UPSTREAM_UNAVAILABLE,
            Self::UpstreamAccessDenied => code::UPSTREAM_ACCESS_DENIED,
            Self::Internal(_) => code::INTERNAL,
        }
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        Self::BadUserInput(e.to_string())
    }
}

impl From<RoutingError> for ApiError {
    fn from(e: RoutingError) -> Self {
        match e {
            RoutingError::AccountNotFound(name) => Self::AccountNotFound(name),
            RoutingError::BadRegion(reason) => Self::BadUserInput(reason),
        }
    }
}

impl From<CursorError> for ApiError {
    fn from(e: CursorError) -> Self {
        Self::InvalidCursor(format!("invalid cursor: {e}"))
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        Arc::new(e).into()
    }
}

/// An upstream failure shared by several fields (every node key of one
/// failed `DescribeInstanceInformation`).
impl From<Arc<UpstreamError>> for ApiError {
    fn from(e: Arc<UpstreamError>) -> Self {
        // The client gets the kind; the log gets the SDK's whole story.
        tracing::warn!(kind = ?e.kind, cause = format!("{:#}", e.cause()), "upstream call failed");
        match e.kind {
            UpstreamErrorKind::Throttled => Self::UpstreamThrottled,
            UpstreamErrorKind::Unavailable => Self::UpstreamUnavailable,
            UpstreamErrorKind::AccessDenied => Self::UpstreamAccessDenied,
            UpstreamErrorKind::InvalidInput => {
                Self::BadUserInput("SSM refused the request parameters".to_owned())
            }
            UpstreamErrorKind::InvalidToken | UpstreamErrorKind::Internal => {
                Self::Internal(anyhow::Error::new(e))
            }
        }
    }
}

impl From<PagingError> for ApiError {
    fn from(e: PagingError) -> Self {
        match e {
            PagingError::StaleCursor(cause) => {
                tracing::info!(
                    cause = format!("{:#}", cause.cause()),
                    "upstream refused a cursor's token"
                );
                Self::InvalidCursor(
                    "the cursor has expired upstream; start again without `after`".to_owned(),
                )
            }
            PagingError::Upstream(e) => e.into(),
            // Reported per source with its names; should it surface alone,
            // it is still the same code.
            PagingError::OverBudget { limit } => Self::CostLimitExceeded {
                account: String::new(),
                region: String::new(),
                limit,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::code;

    #[test]
    fn every_code_is_listed_once_and_others_are_bounded() {
        let source = include_str!("error.rs");
        let module = &source[source.find("pub mod code {").unwrap()..];
        let module = &module[..module.find("\n}\n").unwrap()];
        let declared: Vec<&str> = module
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter(|l| l.contains(": &str = \""))
            .map(|l| l.split('"').nth(1).unwrap())
            .collect();
        let mut listed = code::ALL.to_vec();
        listed.sort_unstable();
        listed.dedup();
        assert_eq!(listed.len(), code::ALL.len(), "a code listed twice");
        let mut declared_sorted = declared.clone();
        declared_sorted.sort_unstable();
        assert_eq!(declared_sorted, listed, "code::ALL misses a code");
        assert_eq!(code::bounded("INVALID_CURSOR"), "INVALID_CURSOR");
        assert_eq!(code::bounded("something a client made up"), "OTHER");
    }
}
