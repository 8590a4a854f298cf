//! Every SDK attempt, seen from inside the SDK: an interceptor on each SSM
//! client (one per account and region) that counts retries and throttles
//! and opens one `ssm.attempt` span per attempt.
//!
//! The SDK retries inside one `send()`, so the caller sees a call, never its
//! attempts; only an interceptor (`aws_smithy_runtime_api`'s `Intercept`)
//! runs once per attempt. The span is opened in `read_before_attempt` and
//! kept in the request's config bag until `read_after_attempt` drops it, so
//! it covers the attempt; its parent is the call's span
//! (`ssm.describe_sessions`, …), current when the attempt starts.

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationError;
use aws_sdk_ssm::operation::describe_sessions::DescribeSessionsError;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use super::UpstreamErrorKind;
use super::sdk::kind_of_code;
use crate::instruments::{Metrics, SourceLabels};

/// The interceptor of one (account, region) client.
#[derive(Debug)]
pub struct AttemptObserver {
    source: SourceLabels,
    account: String,
    region: String,
    metrics: Metrics,
}

impl AttemptObserver {
    pub fn new(account: &str, region: &str, metrics: Metrics) -> Self {
        Self {
            source: SourceLabels::new(account, region),
            account: account.to_owned(),
            region: region.to_owned(),
            metrics,
        }
    }
}

/// The open span of the attempt in flight.
#[derive(Debug)]
struct AttemptSpan(tracing::Span);

impl Storable for AttemptSpan {
    type Storer = StoreReplace<Self>;
}

fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map_or_else(|| "unknown".to_owned(), |m| m.name().to_owned())
}

impl Intercept for AttemptObserver {
    fn name(&self) -> &'static str {
        "AttemptObserver"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        let operation = operation(cfg);
        if attempt > 1 {
            self.metrics.upstream_retry(&self.source, &operation);
        }
        let span = tracing::info_span!(
            "ssm.attempt",
            account = %self.account,
            region = %self.region,
            operation = %operation,
            attempt,
            error_code = tracing::field::Empty,
        );
        cfg.interceptor_state().store_put(AttemptSpan(span));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let code = match context.output_or_error() {
            Some(Err(e)) => e.as_operation_error().and_then(|e| {
                e.downcast_ref::<DescribeSessionsError>()
                    .and_then(|e| e.code())
                    .or_else(|| {
                        e.downcast_ref::<DescribeInstanceInformationError>()
                            .and_then(|e| e.code())
                    })
                    .map(str::to_owned)
            }),
            _ => None,
        };
        if let Some(code) = &code {
            if kind_of_code(Some(code)) == UpstreamErrorKind::Throttled {
                self.metrics
                    .upstream_throttle(&self.source, &operation(cfg));
            }
            if let Some(AttemptSpan(span)) = cfg.load::<AttemptSpan>() {
                span.record("error_code", code.as_str());
            }
        }
        // Dropping the span ends it: the attempt is over.
        cfg.interceptor_state().unset::<AttemptSpan>();
        Ok(())
    }
}
