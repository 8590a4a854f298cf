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
//!   asking for `text/html` without a query gets GraphiQL.
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

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Value, Variables};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

mod negotiate;
mod response_cache;

use negotiate::{MediaType, accepts_html, negotiate};
pub use response_cache::ResponseCache;
use response_cache::ResponseKey;

use crate::cache::Freshness;
use crate::graphql::GatewaySchema;
use crate::instruments::{CacheEvent, CacheKind, Metrics};
use crate::settings::HttpSettings;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub schema: GatewaySchema,
    /// Whole responses of identical reads; `None` when turned off.
    pub responses: Option<Arc<ResponseCache>>,
    /// The application's metrics.
    pub metrics: Metrics,
}

/// The gateway's routes, each counted and traced (see [`track`] and
/// [`request_span`]).
pub fn router(state: HttpState, http: &HttpSettings) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        .layer(middleware::from_fn_with_state(metrics, track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(|response: &Response, _latency: Duration, span: &Span| {
                    span.record("http.response.status_code", response.status().as_u16());
                }),
        )
        .with_state(state)
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
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    // Fails only when no OpenTelemetry layer is installed: nothing to link.
    let _ = span.set_parent(parent);
    span
}

const APPLICATION_JSON: &str = "application/json";

/// An error before any GraphQL work: a GraphQL-shaped body with a code.
fn http_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn not_acceptable() -> Response {
    http_error(
        StatusCode::NOT_ACCEPTABLE,
        "NOT_ACCEPTABLE",
        "accept application/graphql-response+json or application/json",
    )
}

/// The body of a GraphQL-over-HTTP POST.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostBody {
    query: String,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn graphql_post(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !content_type.is_some_and(|ct| ct.eq_ignore_ascii_case(APPLICATION_JSON)) {
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the request as Content-Type: application/json",
        );
    }
    let body: PostBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("the body is not a GraphQL request: {e}"),
            );
        }
    };
    let parts = RequestParts {
        query: body.query,
        operation_name: body.operation_name,
        variables: body.variables,
        extensions: body.extensions,
    };
    execute(&state, parts, &headers, media).await
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
    params: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return http_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "malformed query string",
        );
    };
    let Some(query) = params.query else {
        if accepts_html(&headers) {
            return Html(
                GraphiQLSource::build()
                    .endpoint("/graphql")
                    .title("ssm-session-gateway")
                    .finish(),
            )
            .into_response();
        }
        return http_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "missing `query` parameter (open this URL in a browser for GraphiQL)",
        );
    };
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    if is_mutation(&query, params.operation_name.as_deref()) {
        let mut response = http_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
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
    let extensions = match parse_json_object(params.extensions.as_deref(), "extensions") {
        Ok(v) => v,
        Err(response) => return response,
    };
    let parts = RequestParts {
        query,
        operation_name: params.operation_name,
        variables,
        extensions,
    };
    execute(&state, parts, &headers, media).await
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
            "BAD_REQUEST",
            &format!("`{name}` must be a JSON object: {e}"),
        )
    })
}

/// Whether the operation a GET would run is a mutation. A document that
/// does not parse is left to the executor, which reports it properly.
fn is_mutation(query: &str, operation_name: Option<&str>) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => op.node.ty == OperationType::Mutation,
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .get(name)
            .is_some_and(|op| op.node.ty == OperationType::Mutation),
        (DocumentOperations::Multiple(ops), None) => {
            ops.len() == 1 && ops.values().any(|op| op.node.ty == OperationType::Mutation)
        }
    }
}

/// A GraphQL request as it came over HTTP.
struct RequestParts {
    query: String,
    operation_name: Option<String>,
    variables: Option<JsonObject>,
    extensions: Option<JsonObject>,
}

fn build_request(parts: RequestParts) -> async_graphql::Request {
    let mut request = async_graphql::Request::new(parts.query);
    if let Some(name) = parts.operation_name {
        request = request.operation_name(name);
    }
    if let Some(vars) = parts.variables {
        request = request.variables(Variables::from_json(serde_json::Value::Object(vars)));
    }
    if let Some(ext) = parts.extensions {
        request.extensions = async_graphql::Extensions(
            ext.into_iter()
                .filter_map(|(k, v)| Value::from_json(v).ok().map(|v| (k, v)))
                .collect::<HashMap<_, _>>(),
        );
    }
    request
}

/// The caller's scope for the response cache: who is asking. Until the
/// gateway authorizes callers itself, the credentials presented (the
/// `Authorization` header) stand for it.
fn caller_scope(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
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
        ],
        body,
    )
        .into_response()
}

/// `HIT` when the response cache answered, `MISS` otherwise.
const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");

async fn execute(
    state: &HttpState,
    parts: RequestParts,
    headers: &HeaderMap,
    media: MediaType,
) -> Response {
    let key = state.responses.as_ref().map(|_| {
        ResponseKey::new(
            caller_scope(headers),
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
            return graphql_response(StatusCode::OK, media, "HIT", body);
        }
        state
            .metrics
            .cache(CacheKind::Response, CacheEvent::Miss, 1);
    }
    let cacheable_operation = !is_mutation(&parts.query, parts.operation_name.as_deref());
    let (mut response, freshness) =
        Freshness::collect(state.schema.execute(build_request(parts))).await;
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
            response.extensions.insert("stale".to_owned(), value);
        }
    }
    // A request error: nothing executed (parse or validation failure, unknown
    // operation). Field errors always carry a path; these never do.
    let request_error = response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    record_operation(&state.metrics, &response);
    let (status, body) = if media == MediaType::GraphQlResponse && request_error {
        // The spec's request error: no `data` entry at all.
        let mut value = serde_json::to_value(&response).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.remove("data");
        }
        (StatusCode::BAD_REQUEST, serde_json::to_vec(&value))
    } else {
        (StatusCode::OK, serde_json::to_vec(&response))
    };
    let body = match body {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a GraphQL response");
            return http_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            );
        }
    };
    if let (Some(cache), Some(key)) = (&state.responses, key)
        && cacheable_operation
        && response.errors.is_empty()
        && stale.is_empty()
    {
        cache.put(key, body.clone(), freshness.lifetime()).await;
    }
    graphql_response(status, media, "MISS", body)
}

/// Counts one executed operation by outcome, and its errors by code.
fn record_operation(metrics: &Metrics, response: &async_graphql::Response) {
    let outcome = match (response.errors.is_empty(), response.data == Value::Null) {
        (true, _) => "ok",
        (false, false) => "partial",
        (false, true) => "error",
    };
    let codes: Vec<String> = response
        .errors
        .iter()
        .map(|e| {
            e.extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        })
        .collect();
    metrics.graphql_operation(outcome, codes.iter().map(String::as_str));
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
        assert!(is_mutation("mutation { x }", None));
        assert!(!is_mutation("{ x }", None));
        assert!(is_mutation("query A { x } mutation B { y }", Some("B")));
        assert!(!is_mutation("query A { x } mutation B { y }", Some("A")));
        assert!(!is_mutation("not graphql", None));
    }
}
