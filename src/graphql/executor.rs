//! How an HTTP request's GraphQL runs cheaply, with every error as the full
//! schema gives it.
//!
//! async-graphql sends every field of every object through the extension
//! chain as soon as a schema has one extension, whether or not it hooks
//! field resolution: a boxed future per extension per field, a registry
//! lookup per field and a formatted type name per list item. A page of 50
//! sessions has about a thousand of them. So there are two schemas over the
//! same data (and a third, below, that only validates):
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
//! Most HTTP requests do not execute at all: the [`compiled`](super::compiled)
//! path writes their answer from the model, for operations async-graphql
//! has validated. An operation not validated yet is validated alone first,
//! by the *validator*: the fast schema's twin with [`ValidateOnly`], which
//! ends a request once its validation passed. So a document's first request
//! is compiled too; one that fails validation runs on the fast schema as
//! before, which gives the errors.
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

use std::sync::{Mutex, PoisonError};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
};
use async_graphql::{Request, Response, ServerError, ValidationResult, Value};
use tracing::Instrument as _;

use super::GatewaySchema;
use super::compiled::Plan;
use super::cost::CostModel;
use crate::error::code;
use crate::instruments::{CacheEvent, CacheKind, Metrics};
use crate::paging::RequestBudget;
use crate::sessions::{Caller, SessionService};

/// Memory bound of the parsed documents kept, each weighed at
/// [`Parsed::weight`]: its syntax tree and what its plans may take.
const PARSED_DOCUMENTS_BYTES: u64 = 16 * 1024 * 1024;

/// What a document's plans may take together: this many bytes per byte of
/// its text, plus [`PLAN_BYTES_FLOOR`]. A plan beyond that (thousands of
/// aliases of a short field, say) is collected per request instead, as
/// before plans were kept. A typical page's plan takes about twice its
/// text.
const PLAN_BYTES_PER_TEXT_BYTE: usize = 4;
const PLAN_BYTES_FLOOR: usize = 4096;

/// A parsed document, and which of its operations async-graphql has
/// validated (the compiled path takes only those), with their plans.
pub struct Parsed {
    pub document: ExecutableDocument,
    /// What its kept plans may take together (see [`PLAN_BYTES_PER_TEXT_BYTE`]).
    plan_allowance: usize,
    /// The operations requests picked (by name; `None`: no name given)
    /// that ran without a request error. Requests name few operations; a
    /// short list.
    validated: Mutex<Vec<Validated>>,
}

/// An operation async-graphql validated, and its compiled plan once one
/// was collected.
struct Validated {
    name: Option<String>,
    plan: Option<Arc<Plan>>,
}

impl Parsed {
    fn new(document: ExecutableDocument, text_len: usize) -> Self {
        Self {
            document,
            plan_allowance: text_len
                .saturating_mul(PLAN_BYTES_PER_TEXT_BYTE)
                .saturating_add(PLAN_BYTES_FLOOR),
            validated: Mutex::new(Vec::new()),
        }
    }

    /// What the document cache weighs a document of `text_len` bytes at:
    /// four times its text for its syntax tree, and what its plans may
    /// take.
    fn weight(text_len: usize) -> u32 {
        let tree = text_len.saturating_mul(4).saturating_add(256);
        let plans = text_len
            .saturating_mul(PLAN_BYTES_PER_TEXT_BYTE)
            .saturating_add(PLAN_BYTES_FLOOR);
        u32::try_from(tree.saturating_add(plans)).unwrap_or(u32::MAX)
    }

    fn validated(&self) -> std::sync::MutexGuard<'_, Vec<Validated>> {
        self.validated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `None` when the operation is not validated; else its plan, if one
    /// was kept.
    fn plan(&self, operation_name: Option<&str>) -> Option<Option<Arc<Plan>>> {
        self.validated()
            .iter()
            .find(|v| v.name.as_deref() == operation_name)
            .map(|v| v.plan.clone())
    }

    /// Keeps `plan` for the operation (replacing one collected under
    /// other conditions), when the document's plans then stay within its
    /// allowance; whether it was kept.
    fn keep_plan(&self, operation_name: Option<&str>, plan: &Arc<Plan>) -> bool {
        let mut validated = self.validated();
        let others: usize = validated
            .iter()
            .filter(|v| v.name.as_deref() != operation_name)
            .filter_map(|v| v.plan.as_ref().map(|p| p.bytes()))
            .sum();
        if others.saturating_add(plan.bytes()) > self.plan_allowance {
            return false;
        }
        match validated
            .iter_mut()
            .find(|v| v.name.as_deref() == operation_name)
        {
            Some(validated) => {
                validated.plan = Some(Arc::clone(plan));
                true
            }
            None => false,
        }
    }

    fn set_validated(&self, operation_name: Option<&str>) {
        let mut validated = self.validated();
        if !validated
            .iter()
            .any(|v| v.name.as_deref() == operation_name)
        {
            validated.push(Validated {
                name: operation_name.map(str::to_owned),
                plan: None,
            });
        }
    }
}

/// Parsed documents by their text.
pub struct Documents {
    parsed: moka::future::Cache<Arc<str>, Arc<Parsed>, crate::cache::Hasher>,
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
                .weigher(|text: &Arc<str>, _| Parsed::weight(text.len()))
                .build_with_hasher(crate::cache::Hasher::default()),
        }
    }
}

impl Documents {
    /// The parsed `query`; `None` when it does not parse (the full schema
    /// then says why).
    pub async fn parse(&self, query: &str) -> Option<Arc<Parsed>> {
        if let Some(document) = self.parsed.get(query).await {
            self.metrics.cache(CacheKind::Document, CacheEvent::Hit, 1);
            return Some(document);
        }
        self.metrics.cache(CacheKind::Document, CacheEvent::Miss, 1);
        let document = Arc::new(Parsed::new(
            async_graphql::parser::parse_query(query).ok()?,
            query.len(),
        ));
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
    operation(document, operation_name).map(|op| op.ty)
}

/// The operation `operation_name` names in `document`, leniently: a lone
/// anonymous operation whatever the name, as the mutation checks ask it
/// (could this request run a mutation?). [`picked`] is what async-graphql
/// runs.
fn operation<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The operation async-graphql runs for `operation_name` in `document`;
/// `None` where it refuses to pick one (an anonymous operation asked for by
/// name, a name the document does not have, several operations and no
/// name), a request error.
fn picked<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(_), Some(_)) => None,
        _ => operation(document, operation_name),
    }
}

/// In the data of a request the fast schema runs: its root resolvers then
/// open the `field` spans the full schema's `Tracing` extension would.
pub struct FastPath;

/// What executing a request gave: async-graphql's response, or for the
/// compiled path the response's JSON up to the end of `data`.
pub struct Executed {
    /// The response; its `data` is unused when `body` is set.
    pub response: Response,
    /// `{"data":...` from the compiled path, to be closed by `to_json`.
    body: Option<Vec<u8>>,
    /// Whether the compiled path's `data` is null.
    data_null: bool,
}

impl Executed {
    fn schema(response: Response) -> Self {
        Self {
            response,
            body: None,
            data_null: false,
        }
    }

    /// Whether `data` is null.
    pub fn data_is_null(&self) -> bool {
        match &self.body {
            Some(_) => self.data_null,
            None => self.response.data == Value::Null,
        }
    }

    /// A request error: nothing executed (parse or validation failure,
    /// unknown operation). Field errors always carry a path; these never do.
    pub fn is_request_error(&self) -> bool {
        self.data_is_null()
            && !self.response.errors.is_empty()
            && self.response.errors.iter().all(|e| e.path.is_empty())
    }

    /// The response as JSON, as serde_json writes async-graphql's
    /// `Response`: `data`, then `extensions` and `errors` when not empty.
    /// Call it once: the compiled path's buffer is handed over, not copied.
    pub fn to_json(&mut self) -> serde_json::Result<Vec<u8>> {
        let Some(mut out) = self.body.take() else {
            return serde_json::to_vec(&self.response);
        };
        if !self.response.extensions.is_empty() {
            out.extend_from_slice(b",\"extensions\":");
            serde_json::to_writer(&mut out, &self.response.extensions)?;
        }
        if !self.response.errors.is_empty() {
            out.extend_from_slice(b",\"errors\":");
            serde_json::to_writer(&mut out, &self.response.errors)?;
        }
        out.push(b'}');
        Ok(out)
    }
}

/// Runs HTTP requests: compiled when it can, else the fast schema, else the
/// full one.
pub struct Executor {
    fast: GatewaySchema,
    full: GatewaySchema,
    /// The fast schema's twin with [`ValidateOnly`]: checks an operation
    /// the compiled path has not seen validated yet.
    validator: GatewaySchema,
    cost: Arc<CostModel>,
    documents: Documents,
    service: Arc<SessionService>,
    /// `limits.max_complexity`, which the compiled path checks itself.
    max_complexity: usize,
    /// Whether the compiled path is on (`http.compiled_execution`).
    compiled: bool,
}

impl Executor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        fast: GatewaySchema,
        full: GatewaySchema,
        validator: GatewaySchema,
        cost: Arc<CostModel>,
        metrics: Metrics,
        service: Arc<SessionService>,
        max_complexity: usize,
        compiled: bool,
    ) -> Self {
        Self {
            fast,
            full,
            validator,
            cost,
            documents: Documents::new(metrics),
            service,
            max_complexity,
            compiled,
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
    /// [`Executor::documents`] (`None`: it does not parse), and `budget`
    /// the request's budget should the compiled path answer. `request` is
    /// called a second time only when the full schema must answer after all.
    pub async fn execute(
        &self,
        caller: &Caller,
        budget: RequestBudget,
        document: Option<Arc<Parsed>>,
        request: impl Fn() -> Request,
    ) -> Executed {
        let mut first = request();
        let Some(parsed) = document else {
            return Executed::schema(boxed(self.full.execute(first)).await);
        };
        let operation_name = first.operation_name.as_deref();
        let visible = |account: &crate::accounts::Account| caller.can_read(account);
        let estimate =
            self.cost
                .estimate(&parsed.document, operation_name, &first.variables, &visible);
        if self.cost.check(&estimate).is_some() {
            return Executed::schema(boxed(self.full.execute(first)).await);
        }
        // The operation's span, as the full schema's `Tracing` names it.
        let span = tracing::info_span!(target: "async_graphql::graphql", "request");
        let mut kept = if self.compiled {
            parsed.plan(operation_name)
        } else {
            None
        };
        // An operation not validated yet: validated alone, so that its
        // first request is compiled too instead of running every field's
        // resolver (a new document a request costs ten times a kept one's
        // otherwise). Should it not validate, or not be one async-graphql
        // would pick (then nothing is recorded for the name), the fast
        // schema below gives the errors, as before.
        if self.compiled
            && kept.is_none()
            && picked(&parsed.document, operation_name).is_some()
            && self.validates(&parsed, &first).await
        {
            parsed.set_validated(operation_name);
            kept = Some(None);
        }
        if let Some(kept) = kept {
            let prepared = picked(&parsed.document, operation_name).and_then(|operation| {
                let variables = &first.variables;
                let plan = match kept.filter(|plan| plan.holds(operation, variables)) {
                    Some(plan) => {
                        self.documents
                            .metrics
                            .cache(CacheKind::Plan, CacheEvent::Hit, 1);
                        plan
                    }
                    None => {
                        let plan = Arc::new(Plan::new(&parsed.document, operation, variables)?);
                        // Counted once collected: an operation the compiled
                        // path declines has no plan to miss.
                        self.documents
                            .metrics
                            .cache(CacheKind::Plan, CacheEvent::Miss, 1);
                        parsed.keep_plan(operation_name, &plan);
                        plan
                    }
                };
                plan.prepare(operation, variables, self.max_complexity)
            });
            let answer = match prepared {
                Some(prepared) => {
                    prepared
                        .run(&self.service, caller, &budget)
                        .instrument(span.clone())
                        .await
                }
                None => None,
            };
            if let Some(answer) = answer {
                self.documents.metrics.graphql_compiled("answered");
                let mut response = Response::default();
                response.errors = answer.errors;
                for error in &mut response.errors {
                    give_code(error);
                }
                return Executed {
                    response,
                    body: Some(answer.body),
                    data_null: answer.data_null,
                };
            }
            self.documents.metrics.graphql_compiled("declined");
        }
        let operation_name = first.operation_name.clone();
        first.set_parsed_query(parsed.document.clone());
        let mut response = boxed(self.fast.execute(first.data(FastPath)).instrument(span)).await;
        let request_error = response.data == Value::Null
            && !response.errors.is_empty()
            && response.errors.iter().all(|e| e.path.is_empty());
        if request_error {
            return Executed::schema(boxed(self.full.execute(request())).await);
        }
        // Validated: the compiled path may take this operation from now on.
        parsed.set_validated(operation_name.as_deref());
        for error in &mut response.errors {
            give_code(error);
        }
        Executed::schema(response)
    }

    /// Whether async-graphql validates `request`'s operation in `parsed`
    /// (its limits and validation rules, with the request's variables),
    /// without executing it.
    async fn validates(&self, parsed: &Parsed, request: &Request) -> bool {
        let mut check = Request::new(String::new()).variables(request.variables.clone());
        if let Some(name) = &request.operation_name {
            check = check.operation_name(name.as_str());
        }
        check.set_parsed_query(parsed.document.clone());
        let response = boxed(self.validator.execute(check)).await;
        matches!(&*response.errors, [only] if only.message == VALIDATED)
    }
}

/// A schema's execution, on the heap: async-graphql's future takes
/// kilobytes, and in place it would make every request's future that
/// large, compiled ones and response-cache hits included, copied again at
/// each of axum's layers.
fn boxed<'a>(
    execution: impl Future<Output = Response> + Send + 'a,
) -> futures_util::future::BoxFuture<'a, Response> {
    Box::pin(execution)
}

/// The error [`ValidateOnly`] ends a validated request with.
const VALIDATED: &str = "validated; not executed";

/// An extension that stops a request once it has validated: what it
/// answers is then its validation errors, or [`VALIDATED`] alone.
pub(super) struct ValidateOnly;

impl ExtensionFactory for ValidateOnly {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ValidateOnly)
    }
}

#[async_trait::async_trait]
impl Extension for ValidateOnly {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await?;
        Err(vec![ServerError::new(VALIDATED, None)])
    }
}

/// What `ErrorCodes` gives an error without a code that execution raised.
fn give_code(error: &mut ServerError) {
    if super::is_coercion_error(&error.message) {
        super::set_code(error, code::BAD_USER_INPUT);
    } else {
        super::internal(error);
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Parsed {
        Parsed::new(
            async_graphql::parser::parse_query(text).unwrap(),
            text.len(),
        )
    }

    fn plan(parsed: &Parsed, name: Option<&str>) -> Arc<Plan> {
        let op = operation(&parsed.document, name).unwrap();
        Arc::new(Plan::new(&parsed.document, op, &Default::default()).unwrap())
    }

    #[test]
    fn plans_are_kept_within_their_documents_allowance() {
        // A page's plan is kept, for a validated operation only.
        let text = "query A { sessions(state: HISTORY, first: 5) { edges { cursor node { \
                    id sessionId target status startDate } } pageInfo { hasNextPage } } } \
                    query B { sessions(state: ACTIVE) { nodes { sessionId } } }";
        let page = parsed(text);
        let a = plan(&page, Some("A"));
        assert!(a.bytes() < text.len() * PLAN_BYTES_PER_TEXT_BYTE + PLAN_BYTES_FLOOR);
        assert!(!page.keep_plan(Some("A"), &a));
        page.set_validated(Some("A"));
        page.set_validated(Some("B"));
        assert!(page.keep_plan(Some("A"), &a));
        assert!(page.plan(Some("A")).unwrap().is_some());
        assert!(page.plan(Some("B")).unwrap().is_none());
        assert!(page.plan(Some("C")).is_none());
        let b = plan(&page, Some("B"));
        assert!(page.keep_plan(Some("B"), &b));

        // Two thousand aliases of one short field: a plan many times its
        // text, collected per request rather than kept.
        let aliases: Vec<String> = (0..2000).map(|i| format!("a{i}: id")).collect();
        let text = format!(
            "{{ sessions(state: HISTORY, first: 1) {{ nodes {{ {} }} }} }}",
            aliases.join(" ")
        );
        let wide = parsed(&text);
        wide.set_validated(None);
        let plan = plan(&wide, None);
        assert!(plan.bytes() > text.len() * PLAN_BYTES_PER_TEXT_BYTE + PLAN_BYTES_FLOOR);
        assert!(!wide.keep_plan(None, &plan));
        assert!(wide.plan(None).unwrap().is_none());
        // Weighed with what its plans may take.
        assert!(Parsed::weight(text.len()) as usize > text.len() * 8);
    }
}
