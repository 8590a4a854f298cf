//! How an HTTP request's GraphQL runs cheaply, with every error as the full
//! schema gives it.
//!
//! async-graphql sends every field of every object through the extension
//! chain as soon as a schema has one extension, whether or not it hooks
//! field resolution: a boxed future per extension per field, a registry
//! lookup per field and a formatted type name per list item. A page of 50
//! sessions has about a thousand of them. So there are two schemas over the
//! same data:
//!
//! - the *full* schema, with [`ErrorCodes`](super::ErrorCodes) and
//!   [`CostGuard`](super::cost::CostGuard): WebSockets, and any HTTP request
//!   that does not run as it should (below);
//! - the *fast* schema, with no extension at all, which runs HTTP requests
//!   after the executor did what the extensions would: the cost estimate
//!   before execution (from the same [`CostModel`]), and the codes of field
//!   errors after it (the rules of `ErrorCodes`).
//!
//! A request the fast schema cannot answer exactly as the full one does is
//! given to the full schema instead, which is then the answer: a document
//! that does not parse, an estimate over the limit (the full schema reports
//! validation errors first, then the refusal), and any request error (data
//! null, errors without a path: nothing executed, so running it again runs
//! nothing twice). Field errors, which come from execution, never cause a
//! second run.
//!
//! Traces keep their shape: the executor opens the operation's `request`
//! span and the root resolvers their `field` span ([`FastPath`] in the
//! request data tells them to), so upstream calls nest as on the full
//! schema; fields below the root get no span of their own.
//!
//! Documents are parsed once: [`Documents`] keeps parsed documents by their
//! text (bounded; the least used go first), and the HTTP layer asks it
//! whether an operation is a mutation from the same parse.

use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Request, Response, ServerError, Value};
use tracing::Instrument as _;

use super::GatewaySchema;
use super::cost::CostModel;
use crate::error::code;
use crate::instruments::{CacheEvent, CacheKind, Metrics};
use crate::sessions::Caller;

/// Memory bound of the parsed documents kept (each weighed at four times
/// its text, about what its syntax tree takes).
const PARSED_DOCUMENTS_BYTES: u64 = 16 * 1024 * 1024;

/// Parsed documents by their text.
pub struct Documents {
    parsed: moka::future::Cache<Arc<str>, Arc<ExecutableDocument>>,
    /// Counts hits and misses (`gateway_cache_events_total{layer="document"}`).
    metrics: Metrics,
}

impl Documents {
    /// Empty, counting into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            parsed: moka::future::Cache::builder()
                .max_capacity(PARSED_DOCUMENTS_BYTES)
                .weigher(|text: &Arc<str>, _| {
                    u32::try_from(text.len().saturating_mul(4) + 256).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }
}

impl Documents {
    /// The parsed `query`; `None` when it does not parse (the full schema
    /// then says why).
    pub async fn parse(&self, query: &str) -> Option<Arc<ExecutableDocument>> {
        if let Some(document) = self.parsed.get(query).await {
            self.metrics.cache(CacheKind::Document, CacheEvent::Hit, 1);
            return Some(document);
        }
        self.metrics.cache(CacheKind::Document, CacheEvent::Miss, 1);
        let document = Arc::new(async_graphql::parser::parse_query(query).ok()?);
        self.parsed
            .insert(Arc::from(query), Arc::clone(&document))
            .await;
        Some(document)
    }
}

/// The type of the operation `operation_name` picks in `document` (the only
/// one when `None`); `None` when it picks none (execution reports that).
pub fn operation_type(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<OperationType> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| op.node.ty)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// In the data of a request the fast schema runs: its root resolvers then
/// open the `field` spans the full schema's `Tracing` extension would.
pub struct FastPath;

/// Runs HTTP requests: the fast schema when it can, the full one otherwise.
pub struct Executor {
    fast: GatewaySchema,
    full: GatewaySchema,
    cost: Arc<CostModel>,
    documents: Documents,
}

impl Executor {
    pub(super) fn new(
        fast: GatewaySchema,
        full: GatewaySchema,
        cost: Arc<CostModel>,
        metrics: Metrics,
    ) -> Self {
        Self {
            fast,
            full,
            cost,
            documents: Documents::new(metrics),
        }
    }

    /// The full schema (WebSockets run on it).
    pub fn schema(&self) -> &GatewaySchema {
        &self.full
    }

    /// The parsed documents.
    pub fn documents(&self) -> &Documents {
        &self.documents
    }

    /// Executes the request `request` builds (with its data: the caller and
    /// its budget) for `caller`; `document` is its query parsed by
    /// [`Executor::documents`] (`None`: it does not parse). `request` is
    /// called a second time only when the full schema must answer after all.
    pub async fn execute(
        &self,
        caller: &Caller,
        document: Option<Arc<ExecutableDocument>>,
        request: impl Fn() -> Request,
    ) -> Response {
        let mut first = request();
        let Some(document) = document else {
            return self.full.execute(first).await;
        };
        let visible = |account: &crate::accounts::Account| caller.can_read(account);
        let estimate = self.cost.estimate(
            &document,
            first.operation_name.as_deref(),
            &first.variables,
            &visible,
        );
        if self.cost.check(&estimate).is_some() {
            return self.full.execute(first).await;
        }
        first.set_parsed_query((*document).clone());
        // The operation's span, as the full schema's `Tracing` names it.
        let span = tracing::info_span!(target: "async_graphql::graphql", "request");
        let mut response = self
            .fast
            .execute(first.data(FastPath))
            .instrument(span)
            .await;
        let request_error = response.data == Value::Null
            && !response.errors.is_empty()
            && response.errors.iter().all(|e| e.path.is_empty());
        if request_error {
            return self.full.execute(request()).await;
        }
        for error in &mut response.errors {
            give_code(error);
        }
        response
    }
}

/// What `ErrorCodes` gives an error without a code that execution raised.
fn give_code(error: &mut ServerError) {
    let code = if super::is_coercion_error(&error.message) {
        code::BAD_USER_INPUT
    } else {
        code::INTERNAL
    };
    let ext = error.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_none() {
        ext.set("code", code);
    }
}
