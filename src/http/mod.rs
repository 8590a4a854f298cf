//! HTTP: GraphQL over HTTP, GraphiQL, and the health check.
//!
//! `POST /graphql` and `GET /graphql` follow the GraphQL-over-HTTP spec:
//! - request bodies are `application/json` (else 415), at most
//!   `http.body_limit_bytes` (else 413);
//! - the response is `application/graphql-response+json` when the client
//!   accepts it, with 400 for a request that could not execute at all (a
//!   parse or validation error: the body then has no `data`), and 200
//!   otherwise; it is `application/json` when the client asks for that or
//!   says nothing (the legacy default), always 200 for a well-formed request;
//!   a client accepting neither gets 406;
//! - `GET` executes queries only (a mutation over GET is 405), and a browser
//!   asking for `text/html` without a query gets GraphiQL ([`crate::graphiql`],
//!   whose assets are mounted here too).
//!
//! Every GraphQL request (POST, and GET with a query) is authenticated
//! first, before content negotiation, the response cache or any GraphQL
//! work: missing, malformed, expired or unknown credentials are HTTP 401
//! with `WWW-Authenticate: Bearer` and `extensions.code` `UNAUTHENTICATED`,
//! and no `data`. Not authenticated: the GraphiQL page (a browser cannot add
//! the header to a page load; GraphiQL sends it with each query), CORS
//! preflights (answered by the CORS layer for `http.cors_allowed_origins`
//! only) and `/healthz`. The principal goes into the request data as a
//! [`Caller`], which the sessions service authorizes by account; the
//! response cache is keyed by the principal's identity, never the header.
//!
//! Right after authentication, each request takes one from its principal's
//! rate limit ([`rate`], `[rate_limits]`): over it, HTTP 429 with
//! `Retry-After` and `extensions.code` `RATE_LIMITED`, before content
//! negotiation, the response cache or any GraphQL work. The server loop
//! ([`serve`]) bounds how long a client may take to send a request's head
//! (`http.header_read_timeout_secs`); the router bounds its body.
//!
//! Each GraphQL request logs one line at target `audit`: principal (never a
//! credential), operation name, accounts read, upstream pages read, outcome
//! and duration.
//!
//! - `GET` with `Upgrade: websocket` is GraphQL over WebSocket (subscriptions;
//!   [`ws`]), authenticated from its `connection_init` payload;
//! - a mutation drops every cached response (what it changed may be in any).
//!
//! The handlers do no GraphQL work of their own beyond that negotiation: the
//! schema executes, and error codes come from [`crate::graphql`].
//!
//! Every request is counted (route, method, status, duration, in flight)
//! and traced: its `http.request` span continues the caller's trace when a
//! W3C `traceparent` header comes with it, and is the root of the GraphQL
//! operation's spans below.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Value, Variables};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

mod negotiate;
mod persisted;
mod rate;
mod response_cache;
mod serve;
mod ws;

use negotiate::{MediaType, accepts_html, negotiate};
use persisted::PersistedQueryError;
pub use persisted::{DocumentStore, PersistedQueries};
pub use rate::CallerLimits;
use rate::RateLimited;
pub use response_cache::ResponseCache;
use response_cache::ResponseKey;
pub use serve::{ConnectionLimits, serve};
pub use ws::Sockets;

use crate::auth::{AuthError, Authenticator, Principal};
use crate::cache::Freshness;
use crate::error::code;
use crate::graphiql::{self, Graphiql};
use crate::graphql::{Executed, Executor, Parsed, operation_type};
use crate::instruments::{CacheEvent, CacheKind, Metrics, Transport};
use crate::paging::RequestBudget;
use crate::sessions::Caller;
use crate::settings::{HttpSettings, Limits, LiveSettings};

/// What the handlers share, behind one `Arc`: axum clones the state for
/// every request (and each extractor), and one shared count costs less
/// than a dozen, each a cache line both cores write.
#[derive(Clone)]
pub struct HttpState(Arc<Shared>);

impl HttpState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for HttpState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`HttpState`].
pub struct Shared {
    /// Runs GraphQL (and holds the schema WebSockets run on).
    pub schema: Arc<Executor>,
    /// Whole responses of identical reads; `None` when turned off.
    pub responses: Option<Arc<ResponseCache>>,
    /// Automatic persisted queries: documents by hash.
    pub persisted: Arc<PersistedQueries>,
    /// Turns each request's `Authorization` header into a principal.
    pub auth: Arc<Authenticator>,
    /// The GraphiQL page a browser gets at `GET /graphql` (with the demo's
    /// key in its headers editor).
    pub graphiql: Arc<Graphiql>,
    /// Open WebSockets, closed on shutdown.
    pub sockets: Sockets,
    /// WebSocket timeouts, pings and limits.
    pub live: LiveSettings,
    /// What one request may take: upstream calls, time, response size, and
    /// room among the requests in flight.
    pub limits: RequestLimits,
    /// Requests per caller (`[rate_limits]`), HTTP and WebSocket alike.
    pub rates: Arc<CallerLimits>,
    /// The application's metrics.
    pub metrics: Metrics,
}

/// The bounds every GraphQL request runs within.
#[derive(Clone)]
pub struct RequestLimits {
    /// Upstream calls per source per request (`RequestBudget`).
    calls_per_source: usize,
    timeout: Duration,
    max_response_bytes: usize,
    /// The largest WebSocket message (and frame) read: the request body's
    /// bound (`http.body_limit_bytes`), since a `subscribe` carries what a
    /// request body does.
    message_bytes: usize,
    /// One permit per request executing; none left: 503.
    in_flight: Arc<Semaphore>,
}

impl RequestLimits {
    pub fn new(http: &HttpSettings, limits: &Limits) -> Self {
        Self {
            calls_per_source: limits.max_upstream_calls_per_source as usize,
            timeout: Duration::from_secs(http.request_timeout_secs),
            max_response_bytes: http.max_response_bytes,
            message_bytes: http.body_limit_bytes,
            in_flight: Arc::new(Semaphore::new(http.max_in_flight)),
        }
    }
}

/// Where GraphQL is served (and GraphiQL, for a browser).
pub const GRAPHQL_PATH: &str = "/graphql";

/// The gateway's routes, each counted and traced (see [`track`] and
/// [`request_span`]).
pub fn router(state: HttpState, http: &HttpSettings) -> Router {
    let metrics = state.metrics.clone();
    let router = Router::new()
        .route(GRAPHQL_PATH, get(graphql_get).post(graphql_post))
        .route("/healthz", get(healthz))
        .merge(graphiql::routes())
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        // A client that trickles its body is cut off (408), so slow clients
        // cannot hold connections and memory.
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            http.body_read_timeout_secs,
        )))
        .layer(middleware::from_fn_with_state(metrics, track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(|response: &Response, _latency: Duration, span: &Span| {
                    span.record("http.response.status_code", response.status().as_u16());
                }),
        )
        .with_state(state);
    match cors(&http.cors_allowed_origins) {
        // Outermost: a preflight is answered before any route or handler.
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for `origins` (validated settings), or none at all when empty: a
/// browser on another origin then cannot read any answer.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .max_age(Duration::from_secs(600)),
    )
}

/// The principal of a request, or the 401 to answer (with its audit line).
async fn authenticate(
    state: &HttpState,
    headers: &HeaderMap,
    started: Instant,
) -> Result<Principal, Response> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let result = match (values.next(), values.next()) {
        // Two headers: which one counts would be a guess.
        (Some(_), Some(_)) => Err(AuthError::Malformed),
        (value, _) => state.auth.authenticate(value).await,
    };
    result.map_err(|e| {
        tracing::info!(
            target: "audit",
            principal = "-",
            outcome = "unauthenticated",
            reason = e.reason(),
            status = 401,
            duration_ms = started.elapsed().as_millis() as u64,
            "request refused"
        );
        unauthenticated(&e)
    })
}

/// Takes one request from the caller's rate limit, or the 429 to answer
/// (with its audit line).
#[allow(clippy::result_large_err)]
async fn check_rate(
    state: &HttpState,
    principal: &Principal,
    started: Instant,
) -> Result<(), Response> {
    state
        .rates
        .check_everywhere(&principal.to_string())
        .await
        .map_err(|limited| {
            tracing::info!(
                target: "audit",
                principal = %principal,
                outcome = "rate_limited",
                status = 429,
                retry_after_secs = limited.retry_after_secs(),
                duration_ms = started.elapsed().as_millis() as u64,
                "request refused"
            );
            state.metrics.rate_limited(Transport::Http);
            rate_limited(limited)
        })
}

/// What every GraphQL request over HTTP passes, in order, before any
/// GraphQL work: authentication (401), the caller's rate limit (429), and
/// content negotiation (406). The caller and the media type to answer in.
async fn admit(
    state: &HttpState,
    headers: &HeaderMap,
    started: Instant,
) -> Result<(Principal, MediaType), Response> {
    let principal = authenticate(state, headers, started).await?;
    check_rate(state, &principal, started).await?;
    let media = negotiate(headers).ok_or_else(not_acceptable)?;
    Ok((principal, media))
}

/// HTTP 429 `RATE_LIMITED` with `Retry-After` (whole seconds, rounded up).
fn rate_limited(limited: RateLimited) -> Response {
    let secs = limited.retry_after_secs();
    let mut response = http_error(
        StatusCode::TOO_MANY_REQUESTS,
        code::RATE_LIMITED,
        &format!("too many requests from this caller; retry in {secs} s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// HTTP 401 for `e`: its message (which never holds the token) and a
/// `WWW-Authenticate: Bearer` challenge, RFC 6750's `invalid_token` when
/// credentials were sent but refused.
fn unauthenticated(e: &AuthError) -> Response {
    let mut response = http_error(
        StatusCode::UNAUTHORIZED,
        code::UNAUTHENTICATED,
        &e.to_string(),
    );
    let challenge = match e {
        AuthError::Missing => r#"Bearer realm="ssm-session-gateway""#,
        _ => r#"Bearer realm="ssm-session-gateway", error="invalid_token""#,
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The route a request matched, as a bounded label.
fn route_of(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

/// Counts a request: in flight while it runs, then by route, method and
/// status, with its duration.
async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = route_of(&request).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let in_flight = metrics.in_flight();
    let response = next.run(request).await;
    drop(in_flight);
    metrics.http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The root span of a request, a child of the caller's span when the
/// request carries a W3C `traceparent` (read by the propagator
/// `telemetry::init` installs; without it, a new trace).
fn request_span(request: &Request) -> Span {
    let route = route_of(request);
    let method = request.method().as_str();
    // Fields as `&str`, not `Display`: each is written once, straight.
    let name = span_name(method, route);
    let span = tracing::info_span!(
        "http.request",
        otel.name = &*name,
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    // Not exporting: the caller's trace id for the log lines.
    crate::telemetry::follow_caller(&span, &parent);
    // Fails when no OpenTelemetry layer is installed (nothing exported).
    let _ = span.set_parent(parent);
    span
}

/// `{method} {route}`, the span name OpenTelemetry's HTTP conventions
/// give a server span; not formatted for the routes most requests take.
fn span_name(method: &str, route: &str) -> std::borrow::Cow<'static, str> {
    match (method, route) {
        ("POST", "/graphql") => "POST /graphql".into(),
        ("GET", "/graphql") => "GET /graphql".into(),
        _ => format!("{method} {route}").into(),
    }
}

const APPLICATION_JSON: &str = "application/json";

/// HTTP 503 `OVERLOADED`, `Retry-After: 1`: the gateway is at one of its
/// capacity limits, and says which in `message`.
fn overloaded(message: &str) -> Response {
    let mut response = http_error(StatusCode::SERVICE_UNAVAILABLE, code::OVERLOADED, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An error before any GraphQL work: a GraphQL-shaped body with a code.
fn http_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(PRIVATE)),
        ],
        body.to_string(),
    )
        .into_response()
}

/// `Cache-Control` of every GraphQL answer: it is for its caller alone
/// (shared caches must not keep it, browsers need not either), GET
/// included.
const PRIVATE: &str = "private, no-store";

/// The answer to a request whose persisted query cannot run. Not found is
/// 200, as Apollo's router answers it (Apollo Client stops using persisted
/// queries on a 400), with no `data` under `application/graphql-response+json`;
/// not supported is a request error (400 there, 200 under
/// `application/json`); a wrong hash, a malformed extension, an operation
/// off the safelist or a document where an id is required is 400.
fn persisted_query_error(e: &PersistedQueryError, media: MediaType) -> Response {
    let status = match e {
        PersistedQueryError::NotFound => StatusCode::OK,
        PersistedQueryError::NotSupported(_) if media == MediaType::Json => StatusCode::OK,
        _ => StatusCode::BAD_REQUEST,
    };
    let error = serde_json::json!({ "message": e.message(), "extensions": { "code": e.code() } });
    let body = match media {
        MediaType::Json => serde_json::json!({ "data": null, "errors": [error] }),
        MediaType::GraphQlResponse => serde_json::json!({ "errors": [error] }),
    };
    graphql_response(status, media, "MISS", Bytes::from(body.to_string()))
}

fn not_acceptable() -> Response {
    http_error(
        StatusCode::NOT_ACCEPTABLE,
        code::NOT_ACCEPTABLE,
        "accept application/graphql-response+json or application/json",
    )
}

/// The body of a GraphQL-over-HTTP POST.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostBody {
    /// Absent when the request names a persisted query by hash.
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn graphql_post(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let (principal, media) = match admit(&state, &headers, started).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !content_type.is_some_and(|ct| ct.eq_ignore_ascii_case(APPLICATION_JSON)) {
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            "send the request as Content-Type: application/json",
        );
    }
    // A JSON array is a batch, which serde would read as a struct's fields
    // in order ("invalid type: map, expected a string"): say what it is.
    if body.trim_ascii_start().starts_with(b"[") {
        return http_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "batched requests (a JSON array) are not supported: send one request, \
             a JSON object, per POST",
        );
    }
    let body: PostBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                code::BAD_REQUEST,
                &format!("the body is not a GraphQL request: {e}"),
            );
        }
    };
    let query = match resolve_document(&state, body.query, body.extensions.as_ref()).await {
        Ok(Some(query)) => query,
        Ok(None) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                code::BAD_REQUEST,
                "the body is not a GraphQL request: missing field `query` \
                 (or `extensions.persistedQuery`)",
            );
        }
        Err(e) => return persisted_query_error(&e, media),
    };
    let parts = RequestParts {
        query,
        document: None,
        operation_name: body.operation_name,
        variables: body.variables,
        extensions: body.extensions,
    };
    // Boxed: in place, its few kilobytes of state would make this
    // handler's future as large, and axum moves that future at each of its
    // layers, every request (a tenth of a response-cache hit's
    // instructions, in copies).
    Box::pin(execute(&state, parts, principal, media, started)).await
}

/// The document a request runs (see [`PersistedQueries::resolve`]),
/// counting persisted queries sent by hash alone: found or not.
async fn resolve_document(
    state: &HttpState,
    query: Option<String>,
    extensions: Option<&JsonObject>,
) -> Result<Option<String>, PersistedQueryError> {
    let by_hash = query.as_deref().is_none_or(str::is_empty)
        && extensions.is_some_and(|e| e.contains_key("persistedQuery"));
    let resolved = state.persisted.resolve(query, extensions).await;
    if by_hash {
        match &resolved {
            Ok(Some(_)) => {
                state
                    .metrics
                    .cache(CacheKind::PersistedQuery, CacheEvent::Hit, 1);
            }
            Err(PersistedQueryError::NotFound) => {
                state
                    .metrics
                    .cache(CacheKind::PersistedQuery, CacheEvent::Miss, 1);
            }
            _ => {}
        }
    }
    resolved
}

/// The query string of a GraphQL-over-HTTP GET.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    /// JSON, URL-encoded.
    variables: Option<String>,
    /// JSON, URL-encoded.
    extensions: Option<String>,
}

async fn graphql_get(
    State(state): State<HttpState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    params: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Ok(upgrade) = upgrade {
        return ws::upgrade(state, &headers, upgrade);
    }
    let Ok(Query(params)) = params else {
        return http_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "malformed query string",
        );
    };
    let started = Instant::now();
    if params.query.is_none() && params.extensions.is_none() {
        if accepts_html(&headers) {
            return state.graphiql.page(&headers);
        }
        return http_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "missing `query` parameter (open this URL in a browser for GraphiQL)",
        );
    }
    let (principal, media) = match admit(&state, &headers, started).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let extensions = match parse_json_object(params.extensions.as_deref(), "extensions") {
        Ok(v) => v,
        Err(response) => return response,
    };
    // A persisted query's document, which the rules below look at: a hash
    // must not smuggle a mutation into a GET.
    let query = match resolve_document(&state, params.query, extensions.as_ref()).await {
        Ok(Some(query)) => query,
        Ok(None) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                code::BAD_REQUEST,
                "missing `query` parameter (or `extensions` with a `persistedQuery`)",
            );
        }
        Err(e) => return persisted_query_error(&e, media),
    };
    let document = state.schema.documents().parse(&query).await;
    if is_mutation(
        document.as_deref().map(|p| &p.document),
        params.operation_name.as_deref(),
    ) {
        let mut response = http_error(
            StatusCode::METHOD_NOT_ALLOWED,
            code::METHOD_NOT_ALLOWED,
            "mutations are only accepted over POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let variables = match parse_json_object(params.variables.as_deref(), "variables") {
        Ok(v) => v,
        Err(response) => return response,
    };
    let parts = RequestParts {
        query,
        document,
        operation_name: params.operation_name,
        variables,
        extensions,
    };
    // Boxed, as in `graphql_post`.
    Box::pin(execute(&state, parts, principal, media, started)).await
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

#[allow(clippy::result_large_err)]
fn parse_json_object(raw: Option<&str>, name: &str) -> Result<Option<JsonObject>, Response> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    serde_json::from_str(raw).map(Some).map_err(|e| {
        http_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            &format!("`{name}` must be a JSON object: {e}"),
        )
    })
}

/// Whether the operation a request would run is a mutation. A document
/// that does not parse (`None`) is left to the executor, which reports it
/// properly.
fn is_mutation(document: Option<&ExecutableDocument>, operation_name: Option<&str>) -> bool {
    document.is_some_and(|document| {
        operation_type(document, operation_name) == Some(OperationType::Mutation)
    })
}

/// A GraphQL request as it came over HTTP.
struct RequestParts {
    query: String,
    /// `query` parsed, when a handler needed it already (GET's mutation check).
    document: Option<Arc<Parsed>>,
    operation_name: Option<String>,
    variables: Option<JsonObject>,
    extensions: Option<JsonObject>,
}

fn build_request(parts: &RequestParts) -> async_graphql::Request {
    let mut request = async_graphql::Request::new(parts.query.clone());
    if let Some(name) = &parts.operation_name {
        request = request.operation_name(name.clone());
    }
    if let Some(vars) = &parts.variables {
        request = request.variables(Variables::from_json(serde_json::Value::Object(
            vars.clone(),
        )));
    }
    if let Some(ext) = &parts.extensions {
        request.extensions = async_graphql::Extensions(
            ext.iter()
                .filter_map(|(k, v)| Value::from_json(v.clone()).ok().map(|v| (k.clone(), v)))
                .collect::<HashMap<_, _>>(),
        );
    }
    request
}

fn graphql_response(
    status: StatusCode,
    media: MediaType,
    cache: &'static str,
    body: Bytes,
) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(media.content_type()),
            ),
            (X_CACHE, HeaderValue::from_static(cache)),
            (header::CACHE_CONTROL, HeaderValue::from_static(PRIVATE)),
        ],
        body,
    )
        .into_response()
}

/// `HIT` when the response cache answered, `MISS` otherwise.
const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");

/// The audit line of one executed (or cache-answered) request.
fn audit(caller: &Caller, operation: Option<&str>, outcome: &str, status: u16, started: Instant) {
    tracing::info!(
        target: "audit",
        principal = %caller.principal,
        operation = operation.unwrap_or("-"),
        accounts = caller.usage.accounts().join(","),
        upstream_pages = caller.usage.pages(),
        outcome,
        status,
        duration_ms = started.elapsed().as_millis() as u64,
        "request served"
    );
}

async fn execute(
    state: &HttpState,
    parts: RequestParts,
    principal: Principal,
    media: MediaType,
    started: Instant,
) -> Response {
    let caller = Arc::new(Caller::new(principal));
    let operation = parts.operation_name.clone();
    let key = state.responses.as_ref().map(|_| {
        ResponseKey::new(
            Some(&caller.principal.identity_key().0),
            &parts.query,
            parts.operation_name.as_deref(),
            parts.variables.as_ref(),
        )
    });
    if let (Some(cache), Some(key)) = (&state.responses, &key) {
        if let Some(body) = cache.get(key).await {
            state.metrics.cache(CacheKind::Response, CacheEvent::Hit, 1);
            state
                .metrics
                .graphql_operation("cached", std::iter::empty());
            audit(&caller, operation.as_deref(), "cache_hit", 200, started);
            return graphql_response(StatusCode::OK, media, "HIT", body);
        }
        state
            .metrics
            .cache(CacheKind::Response, CacheEvent::Miss, 1);
    }
    // Beyond the in-flight cap, refuse at once: queueing would only make
    // every caller wait longer.
    let Ok(_permit) = state.limits.in_flight.clone().try_acquire_owned() else {
        return overloaded("the gateway is at its limit of requests in flight; retry shortly");
    };
    let document = match &parts.document {
        Some(document) => Some(Arc::clone(document)),
        None => state.schema.documents().parse(&parts.query).await,
    };
    let cacheable_operation = !is_mutation(
        document.as_deref().map(|p| &p.document),
        parts.operation_name.as_deref(),
    );
    let request = || {
        build_request(&parts)
            .data(Arc::clone(&caller))
            .data(RequestBudget::new(state.limits.calls_per_source))
    };
    let budget = RequestBudget::new(state.limits.calls_per_source);
    let executed = tokio::time::timeout(
        state.limits.timeout,
        Freshness::collect(state.schema.execute(&caller, budget, document, request)),
    )
    .await;
    if !cacheable_operation && let Some(cache) = &state.responses {
        cache.invalidate_all();
    }
    let Ok((mut executed, freshness)) = executed else {
        return http_error(
            StatusCode::GATEWAY_TIMEOUT,
            code::TIMEOUT,
            &format!(
                "the request did not finish within {} s; ask for less (fewer sessions, \
                 sources or fields) or retry",
                state.limits.timeout.as_secs()
            ),
        );
    };
    let stale = freshness.stale();
    if !stale.is_empty() {
        let notes: Vec<serde_json::Value> = stale
            .iter()
            .map(|s| {
                serde_json::json!({
                    "account": s.source.account.as_str(),
                    "region": s.source.region.as_str(),
                    "ageSeconds": s.age.as_secs(),
                })
            })
            .collect();
        if let Ok(value) = Value::from_json(serde_json::Value::Array(notes)) {
            executed
                .response
                .extensions
                .insert("stale".to_owned(), value);
        }
    }
    let request_error = executed.is_request_error();
    record_operation(&state.metrics, &executed);
    let (status, body) = if media == MediaType::GraphQlResponse && request_error {
        // The spec's request error: no `data` entry at all.
        let mut value = serde_json::to_value(&executed.response).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.remove("data");
        }
        (StatusCode::BAD_REQUEST, serde_json::to_vec(&value))
    } else {
        (StatusCode::OK, executed.to_json())
    };
    let response = &executed.response;
    let outcome = match (response.errors.is_empty(), request_error) {
        (true, _) => "ok",
        (false, true) => "request_error",
        (false, false) => "field_errors",
    };
    audit(
        &caller,
        operation.as_deref(),
        outcome,
        status.as_u16(),
        started,
    );
    let body = match body {
        Ok(body) if body.len() > state.limits.max_response_bytes => {
            let message = format!(
                "the response would be {} bytes, over the limit of {}; ask for fewer \
                 sessions or fields",
                body.len(),
                state.limits.max_response_bytes
            );
            let body = serde_json::json!({
                "data": null,
                "errors": [{ "message": message, "extensions": { "code": code::RESPONSE_TOO_LARGE } }]
            });
            return graphql_response(StatusCode::OK, media, "MISS", Bytes::from(body.to_string()));
        }
        Ok(body) => Bytes::from(body),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a GraphQL response");
            return http_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL,
                "internal error",
            );
        }
    };
    if let (Some(cache), Some(key)) = (&state.responses, key)
        && cacheable_operation
        && response.errors.is_empty()
        && stale.is_empty()
    {
        let resumed = freshness.resumed();
        if !cache
            .put(key, body.clone(), freshness.lifetime(), resumed)
            .await
            && resumed
        {
            state
                .metrics
                .cache(CacheKind::Response, CacheEvent::Once, 1);
        }
    }
    graphql_response(status, media, "MISS", body)
}

/// Counts one executed operation by outcome, and its errors by code.
fn record_operation(metrics: &Metrics, executed: &Executed) {
    let response = &executed.response;
    let outcome = match (response.errors.is_empty(), executed.data_is_null()) {
        (true, _) => "ok",
        (false, false) => "partial",
        (false, true) => "error",
    };
    let codes =
        response.errors.iter().map(
            |e| match e.extensions.as_ref().and_then(|x| x.get("code")) {
                Some(Value::String(s)) => code::bounded(s),
                _ => code::bounded(""),
            },
        );
    metrics.graphql_operation(outcome, codes);
}

async fn healthz() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"status":"ok"}"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_recognized_for_get() {
        let check = |query: &str, name: Option<&str>| {
            let document = async_graphql::parser::parse_query(query).ok();
            is_mutation(document.as_ref(), name)
        };
        assert!(check("mutation { x }", None));
        assert!(!check("{ x }", None));
        assert!(check("query A { x } mutation B { y }", Some("B")));
        assert!(!check("query A { x } mutation B { y }", Some("A")));
        assert!(check("mutation B { y }", None));
        assert!(!check("not graphql", None));
    }
}
