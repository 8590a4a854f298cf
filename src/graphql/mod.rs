//! The GraphQL API: schema, resolvers, and the errors clients see.
//!
//! The schema is code-first; `schema.graphql` at the repository root is its
//! printed form (`ssm-session-gateway schema`), pinned by a test. Resolvers
//! read the shared [`Gateway`] from the schema data and call the pager
//! ([`crate::paging`]); they never see the SDK.

pub mod error;
mod query;
pub mod types;

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextResolve, NextValidation,
    ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    EmptyMutation, EmptySubscription, Schema, SchemaBuilder, ServerError, ServerResult,
    ValidationResult, Value, Variables,
};

pub use error::{ApiError, code};
pub use query::Query;

use crate::accounts::AccountRegistry;
use crate::cursor::CursorCodec;
use crate::nodes::NodeLoader;
use crate::settings::{HttpSettings, Limits};

/// The schema type served.
pub type GatewaySchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// What resolvers share: where sessions come from, how cursors are signed,
/// and the paging limits.
pub struct Gateway {
    /// The configured accounts and a session source per (account, region).
    pub registry: Arc<AccountRegistry>,
    /// Signs and verifies cursors; one key across all replicas.
    pub cursors: Arc<CursorCodec>,
    /// Defaults and bounds of `first` and `pageSize`.
    pub limits: Limits,
    /// Looks up (and caches) the managed nodes behind sessions' targets.
    pub nodes: NodeLoader,
}

fn builder() -> SchemaBuilder<Query, EmptyMutation, EmptySubscription> {
    Schema::build(Query, EmptyMutation, EmptySubscription).register_output_type::<types::Node>()
}

/// The schema with its data and limits, ready to execute requests.
pub fn schema(gateway: Arc<Gateway>, http: &HttpSettings) -> GatewaySchema {
    // One DataLoader for the schema: it batches the node keys resolvers ask
    // for within its delay (a page of sessions, or concurrent requests);
    // the cache is the loader's own, shared by all requests to this process.
    let nodes = DataLoader::new(gateway.nodes.clone(), tokio::spawn);
    builder()
        .data(gateway)
        .data(nodes)
        .limit_depth(http.max_query_depth)
        .extension(ErrorCodes)
        .finish()
}

/// The schema in SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// Gives every error a stable `extensions.code`: parse and validation
/// failures get theirs here, and so do errors async-graphql raises while
/// coercing field arguments (a malformed `DateTime`, say), which carry no
/// code of their own. Errors resolvers raise already have one and are left
/// alone.
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

fn with_code(mut err: ServerError, code: &'static str) -> ServerError {
    let ext = err.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_none() {
        ext.set("code", code);
    }
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
        next.run(ctx, info)
            .await
            .map_err(|e| with_code(e, code::BAD_USER_INPUT))
    }
}
