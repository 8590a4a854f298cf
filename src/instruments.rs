//! The gateway's metrics: every name, its labels, and the recorder behind
//! them, rendered as Prometheus text on the admin port's `/metrics`.
//!
//! **One recorder per [`crate::app::Application`], never a global one.** The
//! `metrics` crate's macros report to a process-wide recorder, installed
//! once; a test binary runs dozens of gateways at once, and they would all
//! count into it. So nothing here is installed globally: each application
//! owns a [`Metrics`] (a `PrometheusRecorder` and its handle, shared by
//! `Arc`), hands clones to whatever records (the HTTP layer, the caches, the
//! node loader, each SDK client's interceptor), and renders only its own
//! counts. The `metrics` macros are not used anywhere; a library that used
//! them would report to the (absent) global recorder, i.e. nowhere.
//!
//! **Labels stay bounded.** Every label value comes from a closed set (route,
//! status, outcome, error code, cache layer and event) or from the
//! configuration (account id, region, SDK operation name). Nothing a client
//! sends (session ids, operation names, variables) becomes a label.
//!
//! **Handles are registered once.** Registering a metric builds its key
//! (label strings included) and looks it up in the recorder's registry;
//! the metrics every request records keep their handles here after the
//! first time, so recording is an atomic add.
//!
//! The README's metrics table lists every name here; keep them in step.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata, Recorder as _, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// `gateway_http_requests_total{route, method, status}`.
pub const HTTP_REQUESTS: &str = "gateway_http_requests_total";
/// `gateway_http_request_duration_seconds{route}`.
pub const HTTP_DURATION: &str = "gateway_http_request_duration_seconds";
/// `gateway_http_requests_in_flight`.
pub const HTTP_IN_FLIGHT: &str = "gateway_http_requests_in_flight";
/// `gateway_graphql_operations_total{outcome}`.
pub const GRAPHQL_OPERATIONS: &str = "gateway_graphql_operations_total";
/// `gateway_graphql_errors_total{code}`.
pub const GRAPHQL_ERRORS: &str = "gateway_graphql_errors_total";
/// `gateway_graphql_compiled_total{outcome}`.
pub const GRAPHQL_COMPILED: &str = "gateway_graphql_compiled_total";
/// `gateway_upstream_calls_total{account, region, operation, outcome}`.
pub const UPSTREAM_CALLS: &str = "gateway_upstream_calls_total";
/// `gateway_upstream_call_duration_seconds{account, region, operation}`.
pub const UPSTREAM_DURATION: &str = "gateway_upstream_call_duration_seconds";
/// `gateway_upstream_retries_total{account, region, operation}`.
pub const UPSTREAM_RETRIES: &str = "gateway_upstream_retries_total";
/// `gateway_upstream_throttles_total{account, region, operation}`.
pub const UPSTREAM_THROTTLES: &str = "gateway_upstream_throttles_total";
/// `gateway_upstream_limiter_total{account, region, outcome}`.
pub const UPSTREAM_LIMITER: &str = "gateway_upstream_limiter_total";
/// `gateway_rate_limited_total{transport}`.
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
/// `gateway_safelist_reloads_total{outcome}`.
pub const SAFELIST_RELOADS: &str = "gateway_safelist_reloads_total";
/// `gateway_credential_resolutions_total{account, outcome}`.
pub const CREDENTIALS: &str = "gateway_credential_resolutions_total";
/// `gateway_cache_events_total{layer, event}`.
pub const CACHE_EVENTS: &str = "gateway_cache_events_total";
/// `gateway_dataloader_batch_size`.
pub const DATALOADER_BATCH: &str = "gateway_dataloader_batch_size";
/// `gateway_redis_up`: 1 while the shared store answers, 0 while not.
pub const REDIS_UP: &str = "gateway_redis_up";
/// `gateway_redis_fallbacks_total{reason}`.
pub const REDIS_FALLBACKS: &str = "gateway_redis_fallbacks_total";
/// `gateway_redis_lease_waits_total{outcome}`.
pub const REDIS_LEASE_WAITS: &str = "gateway_redis_lease_waits_total";
/// `gateway_websockets_open`.
pub const WEBSOCKETS_OPEN: &str = "gateway_websockets_open";
/// `gateway_http_connections_open`.
pub const HTTP_CONNECTIONS_OPEN: &str = "gateway_http_connections_open";
/// `gateway_websockets_connecting`.
pub const WEBSOCKETS_CONNECTING: &str = "gateway_websockets_connecting";
/// `gateway_websocket_connections_total{outcome}`.
pub const WEBSOCKET_CONNECTIONS: &str = "gateway_websocket_connections_total";
/// `gateway_subscriptions_active`.
pub const SUBSCRIPTIONS_ACTIVE: &str = "gateway_subscriptions_active";
/// `gateway_build_info{version}`.
pub const BUILD_INFO: &str = "gateway_build_info";

/// Buckets of the latency histograms, in seconds: SSM answers in tens to
/// hundreds of milliseconds; retries with backoff take seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of the DataLoader batch sizes (keys per batch).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A cache layer, for [`CACHE_EVENTS`]. `PersistedQuery` stays last:
/// [`CacheKind::COUNT`] sizes the table of counters by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheKind {
    /// Upstream `DescribeSessions` pages (`src/cache.rs`).
    Page,
    /// Managed nodes (`src/nodes.rs`).
    Node,
    /// Whole responses (`src/http/response_cache.rs`).
    Response,
    /// Pages in Redis, the second level shared by replicas.
    PageRedis,
    /// Managed nodes in Redis.
    NodeRedis,
    /// Parsed GraphQL documents, by their text (`src/graphql/executor.rs`).
    Document,
    /// Compiled plans of validated operations, kept with their parsed
    /// document (`src/graphql/compiled.rs`): `hit` reused one, `miss`
    /// collected one (the operation's first compiled request, or its
    /// `@skip`/`@include` variables changed).
    Plan,
    /// Automatic persisted queries sent by hash alone
    /// (`src/http/persisted.rs`): `hit` ran the document, `miss` answered
    /// `PERSISTED_QUERY_NOT_FOUND`.
    PersistedQuery,
}

impl CacheKind {
    /// How many layers there are (the last one's index, plus one).
    const COUNT: usize = Self::PersistedQuery as usize + 1;

    fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Node => "node",
            Self::Response => "response",
            Self::PageRedis => "page_redis",
            Self::NodeRedis => "node_redis",
            Self::Document => "document",
            Self::Plan => "plan",
            Self::PersistedQuery => "persisted_query",
        }
    }
}

/// What happened in a cache, for [`CACHE_EVENTS`]. `Once` stays last:
/// [`CacheEvent::COUNT`] sizes the table of counters by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheEvent {
    /// Answered from the cache.
    Hit,
    /// Not in the cache: this caller went upstream.
    Miss,
    /// Not in the cache, but another caller's call in flight answered it
    /// (single-flight).
    Join,
    /// Expired, and served anyway because upstream failed (stale-if-error).
    Stale,
    /// Not kept: a response resuming from a cursor, asked for the first
    /// time (the response cache keeps it from its second request).
    Once,
}

impl CacheEvent {
    /// How many events there are (the last one's index, plus one).
    const COUNT: usize = Self::Once as usize + 1;

    fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Join => "join",
            Self::Stale => "stale",
            Self::Once => "once",
        }
    }
}

/// How a rate-limited request came, for [`RATE_LIMITED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `POST` or `GET /graphql`: answered 429.
    Http,
    /// A subscription started over a WebSocket (answered with an `error`
    /// message for that operation), or a `connection_init` (its socket
    /// closed with 1013).
    WebSocket,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::WebSocket => "websocket",
        }
    }
}

/// One application's metrics. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// [`CACHE_EVENTS`] by layer and event.
    cache_events: [[OnceLock<metrics::Counter>; CacheEvent::COUNT]; CacheKind::COUNT],
    /// [`HTTP_IN_FLIGHT`].
    in_flight: OnceLock<metrics::Gauge>,
    /// Counters with one label whose value is static, by (name, label, value).
    labelled: RwLock<HashMap<(&'static str, &'static str, &'static str), metrics::Counter>>,
    /// [`HTTP_REQUESTS`] and [`HTTP_DURATION`] by route, method and status.
    http: RwLock<Vec<HttpHandles>>,
}

/// The handles one kind of HTTP request records into.
struct HttpHandles {
    route: Box<str>,
    method: Box<str>,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// At most this many (route, method, status) handles are kept; past it
/// (not with the gateway's routes) each request registers its own.
const MAX_HTTP_HANDLES: usize = 256;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh recorder with every metric described and `gateway_build_info`
    /// set.
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = [HTTP_DURATION, UPSTREAM_DURATION]
            .into_iter()
            .fold(builder, |b, name| {
                b.set_buckets_for_metric(Matcher::Full(name.to_owned()), LATENCY_BUCKETS)
                    .expect("the latency buckets are not empty")
            })
            .set_buckets_for_metric(Matcher::Full(DATALOADER_BATCH.to_owned()), BATCH_BUCKETS)
            .expect("the batch buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Self {
            inner: Arc::new(Inner {
                recorder,
                handle,
                cache_events: Default::default(),
                in_flight: OnceLock::new(),
                labelled: RwLock::default(),
                http: RwLock::default(),
            }),
        };
        metrics.describe();
        metrics
            .gauge(
                BUILD_INFO,
                vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
            )
            .set(1.0);
        for gauge in [
            HTTP_IN_FLIGHT,
            HTTP_CONNECTIONS_OPEN,
            WEBSOCKETS_OPEN,
            WEBSOCKETS_CONNECTING,
            SUBSCRIPTIONS_ACTIVE,
        ] {
            metrics.gauge(gauge, Vec::new()).set(0.0);
        }
        metrics
    }

    fn describe(&self) {
        let r = &self.inner.recorder;
        let counters: [(&'static str, &'static str); 15] = [
            (
                REDIS_FALLBACKS,
                "Redis operations done without (Redis down, too slow, or refusing), by reason: down, timeout, error.",
            ),
            (
                REDIS_LEASE_WAITS,
                "Waits on another replica's single-flight lease, by outcome: published (its page came), took_over (its lease ended without a page), timed_out (asked SSM after redis.lease_wait_ms).",
            ),
            (
                HTTP_REQUESTS,
                "HTTP requests answered, by route, method and status.",
            ),
            (
                GRAPHQL_OPERATIONS,
                "GraphQL operations, by outcome: ok, partial (data and errors), error, cached (answered by the response cache).",
            ),
            (
                GRAPHQL_ERRORS,
                "GraphQL errors returned, by extensions.code.",
            ),
            (
                GRAPHQL_COMPILED,
                "Validated HTTP queries the compiled path answered (answered) or left to the schema (declined).",
            ),
            (
                UPSTREAM_CALLS,
                "Calls to SSM (retries included), by account, region, operation and outcome.",
            ),
            (
                UPSTREAM_RETRIES,
                "SDK attempts beyond the first of a call, by account, region and operation.",
            ),
            (
                UPSTREAM_THROTTLES,
                "SDK attempts answered with a throttling error, by account, region and operation.",
            ),
            (
                RATE_LIMITED,
                "Requests refused for their caller's rate ([rate_limits]), by transport: http (429) or websocket (a subscription start or a connection_init).",
            ),
            (
                SAFELIST_RELOADS,
                "Reads of a changed safelist manifest (persisted_queries.safelist_reload_secs), by outcome: ok (in use), error (the previous list kept).",
            ),
            (
                CREDENTIALS,
                "Resolutions of an account's credentials (STS AssumeRole, profile or base chain), by outcome.",
            ),
            (
                CACHE_EVENTS,
                "Cache lookups by layer (page, node, response, and with Redis page_redis, node_redis) and event (hit, miss, join, stale).",
            ),
            (
                UPSTREAM_LIMITER,
                "SDK attempts through the per-(account, region) rate limiter, by outcome: immediate, waited, refused.",
            ),
            (
                WEBSOCKET_CONNECTIONS,
                "WebSocket connections by how their start ended: accepted, refused, init_timeout, bad_request, closed, shutdown, rate_limited, caller_limit, overloaded (the upgrade refused).",
            ),
        ];
        for (name, help) in counters {
            r.describe_counter(name.into(), None, SharedString::const_str(help));
        }
        r.describe_histogram(
            HTTP_DURATION.into(),
            Some(Unit::Seconds),
            SharedString::const_str("Time to answer an HTTP request, by route."),
        );
        r.describe_histogram(
            UPSTREAM_DURATION.into(),
            Some(Unit::Seconds),
            SharedString::const_str(
                "Time of one call to SSM, retries and backoff included, by account, region and operation.",
            ),
        );
        r.describe_histogram(
            DATALOADER_BATCH.into(),
            None,
            SharedString::const_str("Managed-node keys per DataLoader batch."),
        );
        r.describe_gauge(
            HTTP_IN_FLIGHT.into(),
            None,
            SharedString::const_str("HTTP requests being answered now."),
        );
        r.describe_gauge(
            REDIS_UP.into(),
            None,
            SharedString::const_str("1 while Redis (the store replicas share) answers, 0 while the replica runs without it."),
        );
        r.describe_gauge(
            WEBSOCKETS_OPEN.into(),
            None,
            SharedString::const_str("WebSockets open now (past connection_init)."),
        );
        r.describe_gauge(
            HTTP_CONNECTIONS_OPEN.into(),
            None,
            SharedString::const_str("TCP connections the GraphQL listener serves now, idle keep-alive ones included (http.max_connections bounds them; upgraded WebSockets leave the count)."),
        );
        r.describe_gauge(
            WEBSOCKETS_CONNECTING.into(),
            None,
            SharedString::const_str("WebSockets upgraded and not yet past connection_init; with gateway_websockets_open, what live.max_connections bounds."),
        );
        r.describe_gauge(
            SUBSCRIPTIONS_ACTIVE.into(),
            None,
            SharedString::const_str("GraphQL subscriptions running now."),
        );
        r.describe_gauge(
            BUILD_INFO.into(),
            None,
            SharedString::const_str("Always 1; the version is in the labels."),
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Drains histogram samples into their buckets; the admin server calls
    /// it periodically, so samples do not pile up between scrapes.
    pub fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> metrics::Counter {
        self.inner
            .recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> metrics::Gauge {
        self.inner
            .recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> metrics::Histogram {
        self.inner
            .recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    /// A counter with one label of a static value, registered once.
    fn labelled_counter(
        &self,
        name: &'static str,
        label: &'static str,
        value: &'static str,
    ) -> metrics::Counter {
        let key = (name, label, value);
        let labelled = &self.inner.labelled;
        if let Some(counter) = labelled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return counter.clone();
        }
        let counter = self.counter(name, vec![Label::new(label, value)]);
        labelled
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, counter.clone());
        counter
    }

    /// One HTTP request answered. `route` is the matched route pattern.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let matches =
            |h: &&HttpHandles| &*h.route == route && &*h.method == method && h.status == status;
        let http = &self.inner.http;
        if let Some(handles) = http
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(matches)
        {
            handles.requests.increment(1);
            handles.duration.record(seconds);
            return;
        }
        let handles = HttpHandles {
            route: route.into(),
            method: method.into(),
            status,
            requests: self.counter(
                HTTP_REQUESTS,
                vec![
                    Label::new("route", route.to_owned()),
                    Label::new("method", method.to_owned()),
                    Label::new("status", status.to_string()),
                ],
            ),
            duration: self.histogram(HTTP_DURATION, vec![Label::new("route", route.to_owned())]),
        };
        handles.requests.increment(1);
        handles.duration.record(seconds);
        let mut http = http.write().unwrap_or_else(PoisonError::into_inner);
        if http.len() < MAX_HTTP_HANDLES && !http.iter().any(|h| matches(&h)) {
            http.push(handles);
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        let gauge = self
            .inner
            .in_flight
            .get_or_init(|| self.gauge(HTTP_IN_FLIGHT, Vec::new()))
            .clone();
        gauge.increment(1.0);
        InFlight(gauge)
    }

    /// Counts an open WebSocket (past `connection_init`) until the guard
    /// drops.
    pub fn websocket_open(&self) -> InFlight {
        self.up_while_held(WEBSOCKETS_OPEN)
    }

    /// Counts a connection the GraphQL listener serves until the guard
    /// drops.
    pub fn http_connection_open(&self) -> InFlight {
        self.up_while_held(HTTP_CONNECTIONS_OPEN)
    }

    /// Counts an upgraded WebSocket not yet past `connection_init` until
    /// the guard drops.
    pub fn websocket_connecting(&self) -> InFlight {
        self.up_while_held(WEBSOCKETS_CONNECTING)
    }

    /// Counts a running subscription until the guard drops.
    pub fn subscription_active(&self) -> InFlight {
        self.up_while_held(SUBSCRIPTIONS_ACTIVE)
    }

    /// How a WebSocket's start ended: `accepted`, `refused` (4403),
    /// `init_timeout` (4408), `bad_request` (4400), `closed` (the peer
    /// left first), `shutdown`, `rate_limited` or `caller_limit` (1013),
    /// or `overloaded` (the upgrade answered 503).
    pub fn websocket_connection(&self, outcome: &'static str) {
        self.counter(WEBSOCKET_CONNECTIONS, vec![Label::new("outcome", outcome)])
            .increment(1);
    }

    fn up_while_held(&self, name: &'static str) -> InFlight {
        let gauge = self.gauge(name, Vec::new());
        gauge.increment(1.0);
        InFlight(gauge)
    }

    /// One executed operation by outcome, and its errors by code (codes
    /// already bounded by the caller: `error::code::bounded`).
    pub fn graphql_operation(
        &self,
        outcome: &'static str,
        codes: impl IntoIterator<Item = &'static str>,
    ) {
        self.labelled_counter(GRAPHQL_OPERATIONS, "outcome", outcome)
            .increment(1);
        for code in codes {
            self.labelled_counter(GRAPHQL_ERRORS, "code", code)
                .increment(1);
        }
    }

    /// One validated HTTP query the compiled path `answered` or `declined`.
    pub fn graphql_compiled(&self, outcome: &'static str) {
        self.labelled_counter(GRAPHQL_COMPILED, "outcome", outcome)
            .increment(1);
    }

    /// One upstream call (retries included) and how long it took.
    pub fn upstream_call(
        &self,
        source: &SourceLabels,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        let mut labels = source.labels(operation);
        self.histogram(UPSTREAM_DURATION, labels.clone())
            .record(elapsed.as_secs_f64());
        labels.push(Label::new("outcome", outcome));
        self.counter(UPSTREAM_CALLS, labels).increment(1);
    }

    /// An SDK attempt beyond a call's first.
    pub fn upstream_retry(&self, source: &SourceLabels, operation: &str) {
        self.counter(UPSTREAM_RETRIES, source.labels(operation))
            .increment(1);
    }

    /// An SDK attempt answered with a throttling error.
    pub fn upstream_throttle(&self, source: &SourceLabels, operation: &str) {
        self.counter(UPSTREAM_THROTTLES, source.labels(operation))
            .increment(1);
    }

    /// One attempt's turn at its source's rate limiter: `immediate`,
    /// `waited` or `refused` (`UPSTREAM_THROTTLED`, nothing sent).
    pub fn upstream_limiter(&self, source: &SourceLabels, outcome: &'static str) {
        self.counter(
            UPSTREAM_LIMITER,
            vec![
                Label::new("account", source.account.clone()),
                Label::new("region", source.region.clone()),
                Label::new("outcome", outcome),
            ],
        )
        .increment(1);
    }

    /// One request refused for its caller's rate (`RATE_LIMITED`). Not by
    /// principal: callers are unbounded (JWT subjects); the audit log names
    /// them.
    pub fn rate_limited(&self, transport: Transport) {
        self.counter(
            RATE_LIMITED,
            vec![Label::new("transport", transport.as_str())],
        )
        .increment(1);
    }

    /// One read of a changed safelist manifest: in use (`ok`) or not.
    pub fn safelist_reload(&self, ok: bool) {
        self.counter(
            SAFELIST_RELOADS,
            vec![Label::new("outcome", if ok { "ok" } else { "error" })],
        )
        .increment(1);
    }

    /// One resolution of an account's credentials.
    pub fn credentials(&self, account: &str, ok: bool) {
        self.counter(
            CREDENTIALS,
            vec![
                Label::new("account", account.to_owned()),
                Label::new("outcome", if ok { "ok" } else { "error" }),
            ],
        )
        .increment(1);
    }

    /// `n` cache events of one kind in one layer.
    pub fn cache(&self, layer: CacheKind, event: CacheEvent, n: u64) {
        if n == 0 {
            return;
        }
        let register = || {
            self.counter(
                CACHE_EVENTS,
                vec![
                    Label::new("layer", layer.as_str()),
                    Label::new("event", event.as_str()),
                ],
            )
        };
        match self
            .inner
            .cache_events
            .get(layer as usize)
            .and_then(|events| events.get(event as usize))
        {
            Some(slot) => slot.get_or_init(register).increment(n),
            // A layer or event added without growing the table.
            None => register().increment(n),
        }
    }

    /// Whether Redis answers now.
    pub fn redis_up(&self, up: bool) {
        self.gauge(REDIS_UP, Vec::new())
            .set(if up { 1.0 } else { 0.0 });
    }

    /// One Redis operation done without: `down`, `timeout` or `error`.
    pub fn redis_fallback(&self, reason: &'static str) {
        self.counter(REDIS_FALLBACKS, vec![Label::new("reason", reason)])
            .increment(1);
    }

    /// One wait on another replica's lease: `published`, `took_over` or
    /// `timed_out`.
    pub fn redis_lease_wait(&self, outcome: &'static str) {
        self.counter(REDIS_LEASE_WAITS, vec![Label::new("outcome", outcome)])
            .increment(1);
    }

    /// The number of keys in one DataLoader batch.
    pub fn dataloader_batch(&self, keys: usize) {
        self.histogram(DATALOADER_BATCH, Vec::new())
            .record(keys as f64);
    }
}

/// The account and region labels of one upstream source, made once.
#[derive(Clone, Debug)]
pub struct SourceLabels {
    account: SharedString,
    region: SharedString,
}

impl SourceLabels {
    pub fn new(account: &str, region: &str) -> Self {
        Self {
            account: SharedString::from(account.to_owned()),
            region: SharedString::from(region.to_owned()),
        }
    }

    fn labels(&self, operation: &str) -> Vec<Label> {
        vec![
            Label::new("account", self.account.clone()),
            Label::new("region", self.region.clone()),
            Label::new("operation", operation.to_owned()),
        ]
    }
}

/// Decrements its gauge on drop (requests in flight, open sockets, running
/// subscriptions).
pub struct InFlight(metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_application_counts_alone() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.cache(CacheKind::Page, CacheEvent::Hit, 2);
        assert!(
            a.render()
                .contains("gateway_cache_events_total{layer=\"page\",event=\"hit\"} 2"),
            "{}",
            a.render()
        );
        assert!(!b.render().contains("gateway_cache_events_total{"));
    }

    #[test]
    fn rate_limit_refusals_are_counted_by_transport() {
        let m = Metrics::new();
        m.rate_limited(Transport::Http);
        m.rate_limited(Transport::Http);
        m.rate_limited(Transport::WebSocket);
        let text = m.render();
        assert!(
            text.contains("gateway_rate_limited_total{transport=\"http\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("gateway_rate_limited_total{transport=\"websocket\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn unknown_codes_do_not_become_labels() {
        let m = Metrics::new();
        let code = crate::error::code::bounded("SOMETHING_A_CLIENT_MADE_UP");
        m.graphql_operation("error", [code, crate::error::code::BAD_USER_INPUT]);
        let text = m.render();
        assert!(!text.contains("SOMETHING_A_CLIENT_MADE_UP"), "{text}");
        assert!(
            text.contains("gateway_graphql_errors_total{code=\"OTHER\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gateway_graphql_errors_total{code=\"BAD_USER_INPUT\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn handles_registered_once_keep_counting() {
        // Every one of these keeps its handle after the first call: the
        // counts must be those of registering each time.
        let m = Metrics::new();
        for _ in 0..3 {
            m.cache(CacheKind::PersistedQuery, CacheEvent::Miss, 2);
            m.graphql_compiled("answered");
            m.graphql_operation("ok", []);
            m.http_request("/graphql", "POST", 200, Duration::from_millis(3));
            drop(m.in_flight());
        }
        m.http_request("/graphql", "POST", 400, Duration::from_millis(3));
        m.http_request("/graphql", "GET", 200, Duration::from_millis(3));
        let _held = m.in_flight();
        let text = m.render();
        for line in [
            "gateway_cache_events_total{layer=\"persisted_query\",event=\"miss\"} 6",
            "gateway_graphql_compiled_total{outcome=\"answered\"} 3",
            "gateway_graphql_operations_total{outcome=\"ok\"} 3",
            "gateway_http_requests_total{route=\"/graphql\",method=\"POST\",status=\"200\"} 3",
            "gateway_http_requests_total{route=\"/graphql\",method=\"POST\",status=\"400\"} 1",
            "gateway_http_requests_total{route=\"/graphql\",method=\"GET\",status=\"200\"} 1",
            "gateway_http_request_duration_seconds_count{route=\"/graphql\"} 5",
            "gateway_http_requests_in_flight 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
