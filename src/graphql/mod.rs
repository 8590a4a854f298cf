//! The GraphQL API: schema, resolvers, and the codes on every error.
//!
//! The schema is code-first; `schema.graphql` at the repository root is its
//! printed form (`ssm-session-gateway schema`), pinned by a test. Resolvers
//! read the [`SessionService`] from the schema data and turn its answers into
//! the types of [`types`]; they never see the pager or the SDK.

mod compiled;
mod cost;
mod error;
mod executor;
mod live;
mod query;
mod types;

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextResolve,
    NextValidation, ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Response, Schema, SchemaBuilder, ServerError, ServerResult, ValidationResult, Value, Variables,
};

pub use executor::{Documents, Executed, Executor, Parsed, operation_type};
pub use live::{LiveOptions, Mutation, Subscription, SubscriptionSlots};
pub use query::Query;

use crate::error::code;
use crate::instruments::Metrics;
use crate::live::LiveHub;
use crate::nodes::NodeLoader;
use crate::sessions::SessionService;
use crate::settings::{HttpSettings, Limits};
use cost::{CostGuard, CostModel};

/// The schema type served.
pub type GatewaySchema = Schema<Query, Mutation, Subscription>;

fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query, Mutation, Subscription).register_output_type::<types::Node>()
}

/// Deepest nesting of lists and objects in one input value (async-graphql's
/// recursive-depth limit), and most directives on one field.
const MAX_RECURSIVE_DEPTH: usize = 32;
const MAX_DIRECTIVES_PER_FIELD: usize = 4;

/// How long the node DataLoader gathers keys before one batch call.
const NODE_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// The schema with its data and limits, ready to execute requests: the
/// full schema and its fast twin (see [`executor`]), over the same data.
pub fn schema(
    service: Arc<SessionService>,
    nodes: NodeLoader,
    hub: Arc<LiveHub>,
    options: LiveOptions,
    http: &HttpSettings,
    limits: &Limits,
    metrics: Metrics,
) -> Arc<Executor> {
    let cost = Arc::new(CostModel::new(service.registry().clone(), limits.clone()));
    // One DataLoader for the process: it batches the node keys resolvers ask
    // for within its delay (a page of sessions, or concurrent requests);
    // the cache is the loader's own, shared by all requests to this process.
    // The delay is the batching window: long enough that a page's keys,
    // registered while its items resolve, land in one batch even on a busy
    // machine (async-graphql's 1 ms default split a page of 50 into several
    // calls under load), short beside a DescribeInstanceInformation call.
    let nodes = Arc::new(DataLoader::new(nodes, tokio::spawn).delay(NODE_BATCH_WINDOW));
    let build = || {
        builder()
            .data(Arc::clone(&service))
            .data(Arc::clone(&nodes))
            .data(Arc::clone(&hub))
            .data(options.clone())
            .limit_depth(http.max_query_depth)
            .limit_complexity(limits.max_complexity as usize)
            .limit_recursive_depth(MAX_RECURSIVE_DEPTH)
            .limit_directives(MAX_DIRECTIVES_PER_FIELD)
    };
    let finish = |builder: SchemaBuilder<Query, Mutation, Subscription>| {
        if http.introspection {
            builder.finish()
        } else {
            builder.disable_introspection().finish()
        }
    };
    // Spans: `request` (the operation) > `parse`, `validation`,
    // `execute` > `field` for each non-leaf field (`sessions`, …), in
    // which the upstream calls' spans nest. The fast schema has no
    // extension: its executor opens `request` and the root fields open
    // their own `field` spans (see `executor`).
    let full = finish(
        build()
            .extension(async_graphql::extensions::Tracing)
            .extension(CostGuard(Arc::clone(&cost)))
            .extension(ErrorCodes),
    );
    let fast = finish(build());
    let validator = finish(build().extension(executor::ValidateOnly));
    Arc::new(Executor::new(
        fast,
        full,
        validator,
        cost,
        metrics,
        service,
        limits.max_complexity as usize,
        http.compiled_execution,
    ))
}

/// The schema in SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// Gives every error a stable `extensions.code`: parse and validation
/// failures get theirs here, and so do errors async-graphql raises while
/// coercing field arguments (a malformed `DateTime`, say), choosing the
/// operation, or refusing a subscription over HTTP, which carry no code of
/// their own. Errors resolvers raise already have one and are left alone;
/// any other error without a code is a bug of ours: it reads `INTERNAL`
/// and "internal error", and its message goes to the log ([`internal`]).
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

/// Whether an error without a code is async-graphql's own complaint about an
/// argument's value, raised while coercing it for a resolver (the messages
/// of `InputValueError`; a test pins them).
fn is_coercion_error(message: &str) -> bool {
    message.starts_with("Failed to parse \"") || message.starts_with("Expected input type \"")
}

/// Whether an error without a code is async-graphql's refusal to pick an
/// operation (several in the document, no or an unknown `operationName`).
fn is_operation_choice_error(message: &str) -> bool {
    message.starts_with("Operation name required") || message.starts_with("Unknown operation named")
}

/// Whether an error without a code is async-graphql's refusal to run a
/// subscription where one answer is all there is (HTTP).
fn is_subscription_over_http(message: &str) -> bool {
    message.starts_with("Subscriptions are not supported on this transport")
}

/// What a client that sent a subscription over HTTP is told
/// (`BAD_REQUEST`).
const SUBSCRIPTION_OVER_HTTP: &str = "subscriptions run over a WebSocket on /graphql \
     (subprotocol graphql-transport-ws), not over HTTP";

/// An error without a code that is none of async-graphql's known
/// complaints: a bug of ours. The client reads `INTERNAL` and "internal
/// error", as for `ApiError::Internal`; the message, which may name the
/// gateway's types or data, goes to the log. An error with a code is left
/// alone.
pub(crate) fn internal(err: &mut ServerError) {
    if !set_code(err, code::INTERNAL) {
        return;
    }
    tracing::error!(
        error = %err.message,
        path = ?err.path,
        "a GraphQL error without a code (a bug); the client reads \"internal error\""
    );
    err.message = "internal error".to_owned();
}

/// Gives `err` `code` unless it has one; whether it did.
pub(crate) fn set_code(err: &mut ServerError, code: &'static str) -> bool {
    let ext = err.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_some() {
        return false;
    }
    ext.set("code", code);
    true
}

fn with_code(mut err: ServerError, code: &'static str) -> ServerError {
    set_code(&mut err, code);
    err
}

#[async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, code::GRAPHQL_PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    // A value of the wrong type for an argument or variable
                    // (an unknown enum value, say) is bad input, not a bad
                    // document; async-graphql reports both from validation
                    // and only its message tells them apart. A test pins it.
                    let code = if e.message.starts_with("Invalid value for argument") {
                        code::BAD_USER_INPUT
                    } else {
                        code::GRAPHQL_VALIDATION_FAILED
                    };
                    with_code(e, code)
                })
                .collect()
        })
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        next.run(ctx, info).await.map_err(|mut e| {
            if is_coercion_error(&e.message) {
                set_code(&mut e, code::BAD_USER_INPUT);
            } else {
                internal(&mut e);
            }
            e
        })
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        response.errors = std::mem::take(&mut response.errors)
            .into_iter()
            .map(|mut e| {
                if is_operation_choice_error(&e.message) {
                    with_code(e, code::OPERATION_RESOLUTION_FAILURE)
                } else if is_subscription_over_http(&e.message) {
                    e.message = SUBSCRIPTION_OVER_HTTP.to_owned();
                    with_code(e, code::BAD_REQUEST)
                } else {
                    internal(&mut e);
                    e
                }
            })
            .collect();
        response
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Request};

    struct Probe;

    #[Object]
    impl Probe {
        /// A resolver error without a code: a bug of ours.
        async fn broken(&self) -> async_graphql::Result<i32> {
            Err("something went wrong".into())
        }
        async fn double(&self, n: i32) -> i32 {
            n * 2
        }
    }

    async fn codes(query: &str, variables: serde_json::Value) -> Vec<String> {
        let schema = Schema::build(Probe, EmptyMutation, EmptySubscription)
            .extension(ErrorCodes)
            .finish();
        let request = Request::new(query).variables(Variables::from_json(variables));
        let response = schema.execute(request).await;
        response
            .errors
            .iter()
            .map(|e| {
                e.extensions
                    .as_ref()
                    .and_then(|x| x.get("code"))
                    .map(|v| v.to_string().trim_matches('"').to_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[tokio::test]
    async fn every_error_gets_a_code_and_a_codeless_one_is_internal() {
        let none = serde_json::json!({});
        assert_eq!(codes("{ broken }", none.clone()).await, ["INTERNAL"]);
        // What went wrong stays in the log.
        let schema = Schema::build(Probe, EmptyMutation, EmptySubscription)
            .extension(ErrorCodes)
            .finish();
        let broken = schema.execute("{ broken }").await;
        assert_eq!(broken.errors[0].message, "internal error");
        assert_eq!(
            codes("{ double(n: 1", none.clone()).await,
            ["GRAPHQL_PARSE_FAILED"]
        );
        assert_eq!(
            codes("{ nope }", none.clone()).await,
            ["GRAPHQL_VALIDATION_FAILED"]
        );
        assert_eq!(
            codes("{ double(n: \"x\") }", none.clone()).await,
            ["BAD_USER_INPUT"]
        );
        assert_eq!(
            codes(
                "query($n: Int!) { double(n: $n) }",
                serde_json::json!({ "n": "x" })
            )
            .await,
            ["BAD_USER_INPUT"]
        );
        assert_eq!(
            codes("query A { double(n: 1) } query B { double(n: 2) }", none).await,
            ["OPERATION_RESOLUTION_FAILURE"]
        );
    }

    #[test]
    fn the_messages_codes_depend_on_are_async_graphqls() {
        use async_graphql::{InputType, InputValueError};
        let custom = InputValueError::<i32>::custom("nope").into_server_error(Default::default());
        assert!(is_coercion_error(&custom.message), "{}", custom.message);
        let expected = InputValueError::<i32>::expected_type(Value::Null)
            .into_server_error(Default::default());
        assert!(is_coercion_error(&expected.message), "{}", expected.message);
        let _ = <i32 as InputType>::type_name();
        assert!(!is_coercion_error("Data `Foo` does not exist."));
    }

    /// A subscription over HTTP: `BAD_REQUEST`, saying where subscriptions
    /// run (async-graphql's own message is pinned by this test).
    #[tokio::test]
    async fn a_subscription_over_http_is_a_bad_request() {
        struct Ticks;
        #[async_graphql::Subscription]
        impl Ticks {
            async fn ticks(&self) -> impl futures_util::Stream<Item = i32> {
                futures_util::stream::iter([1])
            }
        }
        let schema = Schema::build(Probe, EmptyMutation, Ticks)
            .extension(ErrorCodes)
            .finish();
        let response = schema.execute("subscription { ticks }").await;
        let error = &response.errors[0];
        assert_eq!(error.message, SUBSCRIPTION_OVER_HTTP);
        let code = error.extensions.as_ref().and_then(|x| x.get("code"));
        assert_eq!(
            code.map(ToString::to_string).as_deref(),
            Some("\"BAD_REQUEST\"")
        );
    }
}
