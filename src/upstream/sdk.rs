//! The real [`SessionSource`]: `aws-sdk-ssm` over HTTP, to AWS or to the
//! emulator (the same code path; only the endpoint differs).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::identity::IdentityCache;
use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types as sdk;
use chrono::{DateTime, Utc};

use super::limit::LocalThrottle;
use super::nodes::{MAX_IDS_PER_CALL, NodeSource};
use super::{
    Page, PageRequest, SessionSource, SessionTerminator, UpstreamError, UpstreamErrorKind,
};
use crate::instruments::{Metrics, SourceLabels};
use crate::model::{
    AccessType, AccountId, InstanceId, ManagedNode, OutputUrl, PingStatus, PlatformType,
    Region as ModelRegion, ResourceType, Session, SessionId, SessionState, SessionStatus,
};
use crate::settings::{AwsSettings, RetryMode};

/// How to reach SSM in one region.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub region: String,
    /// Overrides the AWS endpoint (the emulator, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Fixed credentials (the demo's); `None` uses the default chain
    /// (environment, profile, web identity, instance metadata).
    pub static_credentials: Option<Credentials>,
    /// SDK attempts per call, first one included; retries back off
    /// exponentially with jitter (the SDK's standard mode).
    pub max_attempts: u32,
    /// Adaptive retries also rate-limit the client while it is throttled.
    pub adaptive_retries: bool,
    /// First and longest retry backoff.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Bound on one attempt, and on a whole call with its retries.
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
}

impl ClientSettings {
    /// `aws` (endpoint, retries, timeouts; its defaults are the only ones)
    /// for `region`, with the default credential chain unless
    /// `static_credentials` is set afterwards.
    pub fn new(region: impl Into<String>, aws: &AwsSettings) -> Self {
        Self {
            region: region.into(),
            endpoint_url: aws.endpoint_url.clone(),
            static_credentials: None,
            max_attempts: aws.max_attempts,
            adaptive_retries: aws.retry_mode == RetryMode::Adaptive,
            initial_backoff: Duration::from_millis(aws.initial_backoff_ms),
            max_backoff: Duration::from_millis(aws.max_backoff_ms),
            attempt_timeout: Duration::from_secs(aws.attempt_timeout_secs),
            operation_timeout: Duration::from_secs(aws.operation_timeout_secs),
        }
    }
}

/// Builds an SSM client with aws-config (region, credentials, endpoint,
/// retries, timeouts from `settings`).
pub async fn ssm_client(settings: &ClientSettings) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&sdk_config(settings).await)
}

/// The shared AWS configuration of `settings`: what every SSM client and the
/// STS AssumeRole providers are built from, so they share one HTTP client and
/// one identity cache.
pub async fn sdk_config(settings: &ClientSettings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        // One identity cache for every client built from this config, so an
        // account's credentials (an STS call when assumed) are fetched once
        // and shared by all of its regions' clients; without it each client
        // makes its own cache.
        .identity_cache(IdentityCache::lazy().build())
        .retry_config(
            if settings.adaptive_retries {
                RetryConfig::adaptive()
            } else {
                RetryConfig::standard()
            }
            .with_max_attempts(settings.max_attempts)
            .with_initial_backoff(settings.initial_backoff)
            .with_max_backoff(settings.max_backoff),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(settings.attempt_timeout)
                .operation_timeout(settings.operation_timeout)
                .build(),
        );
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    // The SDK's default HTTPS client, set explicitly so that each source's
    // client can wrap it (`limit::LimitedHttpClient`) and share its pool.
    loader = loader.http_client(base_http_client());
    if let Some(credentials) = &settings.static_credentials {
        loader = loader.credentials_provider(credentials.clone());
    }
    loader.load().await
}

/// The HTTPS client the SDK would pick by default (hyper 1 with rustls on
/// aws-lc), built once per [`sdk_config`].
fn base_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::{Builder, tls};
    Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https()
}

/// [`SessionSource`] over one SDK client (one account and region).
#[derive(Clone, Debug)]
pub struct SdkSessionSource {
    client: aws_sdk_ssm::Client,
    /// For logs and traces: every span of an upstream call names its
    /// account and region.
    account: String,
    region: String,
    /// Every call is counted and timed, labelled with its source.
    metrics: Metrics,
    labels: SourceLabels,
}

impl SdkSessionSource {
    /// A source whose logs and metrics name `account` and `region`. Its
    /// metrics go nowhere until [`SdkSessionSource::with_metrics`].
    pub fn new(client: aws_sdk_ssm::Client, account: &AccountId, region: &ModelRegion) -> Self {
        Self {
            client,
            account: account.to_string(),
            region: region.to_string(),
            labels: SourceLabels::new(account.as_str(), region.as_str()),
            metrics: Metrics::new(),
        }
    }

    /// Records this source's calls in `metrics` (the application's).
    pub(crate) fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts and times one call (its retries included).
    fn record<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: &Result<T, UpstreamError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind.label(),
        };
        self.metrics
            .upstream_call(&self.labels, operation, outcome, started.elapsed());
    }
}

#[async_trait]
impl SessionSource for SdkSessionSource {
    #[tracing::instrument(
        name = "ssm.describe_sessions",
        skip_all,
        fields(
            account = %self.account,
            region = %self.region,
            operation = "DescribeSessions",
            state = request.state.as_str(),
            page_size = request.page_size,
            resumed = request.token.is_some()
        )
    )]
    async fn describe_sessions(&self, request: &PageRequest) -> Result<Page, UpstreamError> {
        let started = Instant::now();
        let result = self.describe_sessions_once(request).await;
        self.record("DescribeSessions", started, &result);
        result
    }
}

impl SdkSessionSource {
    async fn describe_sessions_once(&self, request: &PageRequest) -> Result<Page, UpstreamError> {
        let state = match request.state {
            SessionState::Active => sdk::SessionState::Active,
            SessionState::History => sdk::SessionState::History,
        };
        let filters: Vec<sdk::SessionFilter> = request
            .filter
            .to_pairs()
            .into_iter()
            .map(|(key, value)| {
                sdk::SessionFilter::builder()
                    .key(sdk::SessionFilterKey::from(key))
                    .value(value)
                    .build()
                    .map_err(|e| UpstreamError::new(UpstreamErrorKind::Internal, e))
            })
            .collect::<Result<_, _>>()?;
        let output = self
            .client
            .describe_sessions()
            .state(state)
            .max_results(i32::from(request.page_size))
            .set_filters((!filters.is_empty()).then_some(filters))
            .set_next_token(request.token.clone())
            .send()
            .await
            .map_err(classify)?;
        let sessions = output
            .sessions()
            .iter()
            .filter_map(|s| {
                let session = convert(s);
                if session.is_none() {
                    tracing::warn!("SSM returned a session without a usable SessionId; skipped");
                }
                session
            })
            .collect::<Vec<_>>();
        tracing::debug!(
            items = sessions.len(),
            more = output.next_token().is_some(),
            "page"
        );
        // An empty token is no token: following it could only loop.
        let next_token = output
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(Page::new(sessions, next_token))
    }
}

/// The same client type ends sessions; the registry builds a separate one
/// when the account has a `terminate_role_arn`.
#[async_trait]
impl SessionTerminator for SdkSessionSource {
    #[tracing::instrument(
        name = "ssm.terminate_session",
        skip_all,
        fields(account = %self.account, region = %self.region, session_id = %session_id)
    )]
    async fn terminate_session(&self, session_id: &SessionId) -> Result<(), UpstreamError> {
        // The model's TerminateSessionError names only InternalServerError;
        // AccessDeniedException, ThrottlingException and the rest arrive as
        // unmodeled errors, which `classify` sorts by their error code.
        self.client
            .terminate_session()
            .session_id(session_id.as_str())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// Pages of one `DescribeInstanceInformation` lookup followed before giving
/// up. Fifty ids fit one page of 50; the service may still answer in short
/// pages, but a token that never ends is a fault, not something to follow.
const MAX_NODE_PAGES: usize = 20;

/// The same client reads managed nodes: one `DescribeInstanceInformation`
/// per [`MAX_IDS_PER_CALL`] ids (filter `InstanceIds`, `MaxResults` 50),
/// following `NextToken`.
#[async_trait]
impl NodeSource for SdkSessionSource {
    #[tracing::instrument(
        name = "ssm.describe_instance_information",
        skip_all,
        fields(
            account = %self.account,
            region = %self.region,
            operation = "DescribeInstanceInformation",
            ids = ids.len()
        )
    )]
    async fn describe_instances(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<ManagedNode>, UpstreamError> {
        let mut nodes = Vec::new();
        for chunk in ids.chunks(MAX_IDS_PER_CALL) {
            let filter = sdk::InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(chunk.iter().map(|i| i.as_str().to_owned()).collect()))
                .build()
                .map_err(|e| UpstreamError::new(UpstreamErrorKind::Internal, e))?;
            let mut token: Option<String> = None;
            for page in 0.. {
                if page == MAX_NODE_PAGES {
                    return Err(UpstreamError::new(
                        UpstreamErrorKind::Internal,
                        anyhow::anyhow!(
                            "DescribeInstanceInformation still had a NextToken after \
                             {MAX_NODE_PAGES} pages for {} ids",
                            chunk.len()
                        ),
                    ));
                }
                let started = Instant::now();
                let result = self
                    .client
                    .describe_instance_information()
                    .filters(filter.clone())
                    .max_results(MAX_IDS_PER_CALL as i32)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(classify);
                self.record("DescribeInstanceInformation", started, &result);
                let output = result?;
                nodes.extend(
                    output
                        .instance_information_list()
                        .iter()
                        .filter_map(convert_node),
                );
                match output.next_token().filter(|t| !t.is_empty()) {
                    Some(next) => token = Some(next.to_owned()),
                    None => break,
                }
            }
        }
        tracing::debug!(found = nodes.len(), "nodes");
        Ok(nodes)
    }
}

/// Sorts an SDK error into the kinds callers act on, keeping it as the cause.
pub fn classify<E, R>(err: SdkError<E, R>) -> UpstreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let kind = match &err {
        // Our own per-source rate limit refused to send it.
        SdkError::DispatchFailure(_) if cause::<LocalThrottle>(&err).is_some() => {
            UpstreamErrorKind::Throttled
        }
        // Resolving the account's credentials (an STS AssumeRole) fails
        // before anything is sent: a refused role is access denied, not an
        // outage.
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
            match cause::<CredentialsError>(&err) {
                Some(CredentialsError::ProviderTimedOut(_)) => UpstreamErrorKind::Unavailable,
                Some(_) => UpstreamErrorKind::AccessDenied,
                None if matches!(err, SdkError::DispatchFailure(_)) => {
                    UpstreamErrorKind::Unavailable
                }
                None => UpstreamErrorKind::Internal,
            }
        }
        SdkError::TimeoutError(_) => UpstreamErrorKind::Unavailable,
        SdkError::ServiceError(ctx) => kind_of_code(ctx.err().code()),
        _ => UpstreamErrorKind::Internal,
    };
    UpstreamError::new(kind, anyhow::Error::new(err))
}

/// The first error of type `T` in `err`'s chain of causes, if any.
fn cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// Error codes the SSM endpoint answers with, by kind. Codes not listed here
/// are `Internal`: unknown, so worth a look in the log.
pub(super) fn kind_of_code(code: Option<&str>) -> UpstreamErrorKind {
    match code.unwrap_or_default() {
        "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            UpstreamErrorKind::Throttled
        }
        "InvalidNextToken" => UpstreamErrorKind::InvalidToken,
        "ValidationException"
        | "InvalidFilterKey"
        | "SerializationException"
        | "InvalidInstanceId"
        | "InvalidInstanceInformationFilterValue" => UpstreamErrorKind::InvalidInput,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignature"
        | "InvalidSignatureException" => UpstreamErrorKind::AccessDenied,
        "InternalServerError" | "InternalFailure" | "ServiceUnavailable" => {
            UpstreamErrorKind::Unavailable
        }
        _ => UpstreamErrorKind::Internal,
    }
}

/// Maps an SDK session into the model; `None` without a valid `SessionId`.
fn convert(s: &sdk::Session) -> Option<Session> {
    let session_id = SessionId::parse(s.session_id()?).ok()?;
    Some(Session {
        session_id,
        target: s.target().map(str::to_owned),
        status: s.status().and_then(|v| SessionStatus::parse(v.as_str())),
        start_date: s.start_date().and_then(to_chrono),
        end_date: s.end_date().and_then(to_chrono),
        document_name: s.document_name().map(str::to_owned),
        owner: s.owner().map(str::to_owned),
        reason: s.reason().map(str::to_owned),
        details: s.details().map(str::to_owned),
        output_url: s.output_url().map(|u| OutputUrl {
            s3_output_url: u.s3_output_url().map(str::to_owned),
            cloud_watch_output_url: u.cloud_watch_output_url().map(str::to_owned),
        }),
        max_session_duration_minutes: s.max_session_duration().and_then(|m| m.parse().ok()),
        access_type: s.access_type().and_then(|a| AccessType::parse(a.as_str())),
    })
}

/// Maps an SDK node into the model; `None` without a valid `InstanceId`.
fn convert_node(n: &sdk::InstanceInformation) -> Option<ManagedNode> {
    let Some(instance_id) = n.instance_id().and_then(|i| InstanceId::parse(i).ok()) else {
        tracing::warn!("SSM returned a node without a usable InstanceId; skipped");
        return None;
    };
    Some(ManagedNode {
        instance_id,
        computer_name: n.computer_name().map(str::to_owned),
        platform_type: n
            .platform_type()
            .and_then(|p| PlatformType::parse(p.as_str())),
        platform_name: n.platform_name().map(str::to_owned),
        ping_status: n.ping_status().and_then(|p| PingStatus::parse(p.as_str())),
        ip_address: n.ip_address().map(str::to_owned),
        agent_version: n.agent_version().map(str::to_owned),
        resource_type: n
            .resource_type()
            .and_then(|r| ResourceType::parse(r.as_str())),
        last_ping_date_time: n.last_ping_date_time().and_then(to_chrono),
    })
}

/// SSM's timestamps are epoch seconds as JSON numbers, at most millisecond
/// precise; parsed through an `f64` they gain noise in the nanoseconds
/// (`.938999891`), so they are rounded back to the millisecond.
fn to_chrono(t: &aws_sdk_ssm::primitives::DateTime) -> Option<DateTime<Utc>> {
    let millis = (i64::from(t.subsec_nanos()) + 500_000) / 1_000_000;
    DateTime::from_timestamp(t.secs(), 0).map(|d| d + chrono::Duration::milliseconds(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rounded_to_the_millisecond() {
        let t =
            aws_sdk_ssm::primitives::DateTime::from_fractional_secs(1_795_815_325, 0.938_999_891);
        assert_eq!(
            to_chrono(&t).map(|d| d.to_rfc3339()),
            Some("2026-11-27T21:35:25.939+00:00".to_owned())
        );
        let whole = aws_sdk_ssm::primitives::DateTime::from_secs(1_795_815_325);
        assert_eq!(
            to_chrono(&whole).map(|d| d.timestamp_subsec_nanos()),
            Some(0)
        );
    }

    #[test]
    fn error_codes_sort_into_kinds() {
        assert_eq!(
            kind_of_code(Some("ThrottlingException")),
            UpstreamErrorKind::Throttled
        );
        assert_eq!(
            kind_of_code(Some("InvalidNextToken")),
            UpstreamErrorKind::InvalidToken
        );
        assert_eq!(
            kind_of_code(Some("InvalidFilterKey")),
            UpstreamErrorKind::InvalidInput
        );
        assert_eq!(
            kind_of_code(Some("UnrecognizedClientException")),
            UpstreamErrorKind::AccessDenied
        );
        assert_eq!(
            kind_of_code(Some("InternalServerError")),
            UpstreamErrorKind::Unavailable
        );
        assert_eq!(
            kind_of_code(Some("SomethingNew")),
            UpstreamErrorKind::Internal
        );
        assert_eq!(kind_of_code(None), UpstreamErrorKind::Internal);
    }
}
