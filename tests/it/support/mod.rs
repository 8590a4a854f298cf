//! Shared test plumbing: an emulator and a gateway on loopback ports, wired
//! exactly as in production (`Application::build`: real SDK over HTTP into
//! the emulator, real HTTP into the gateway), and a small HTTP client (and,
//! in [`ws`], a WebSocket one).
//!
//! Gateways are configured with the demo's API keys (`demo-admin`, and
//! `demo-platform` where the account `platform` exists), and every request
//! sends `Authorization: Bearer demo-admin` unless the test passes its own
//! `authorization` header or asks for none ([`TestApp::request_as`]).

pub mod redis;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use ssm_emulator::{
    DEMO_ACCOUNT_ID, DEMO_REGION, DataSpec, Dataset, Emulator, EmulatorConfig, SourceSpec,
    demo_credentials,
};
use ssm_session_gateway::accounts::{Account, AccountRegistry};
use ssm_session_gateway::app::{Application, BaseCredentials};
use ssm_session_gateway::demo::{DEMO_ADMIN_KEY, demo_auth, demo_base_credentials, demo_settings};
use ssm_session_gateway::model::{AccountId, Region, SourceKey};
use ssm_session_gateway::settings::{
    AccountSettings, AwsSettings, RateLimitSettings, Secret, Settings,
};
use ssm_session_gateway::upstream::SessionSource;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The `Authorization` value the helpers send by default.
pub const ADMIN: &str = "Bearer demo-admin";
/// The demo's one-account key (`platform`, `sessions:read`).
pub const PLATFORM: &str = "Bearer demo-platform";

/// The demo's admin key only: for gateways without the `platform` account.
pub fn admin_auth() -> ssm_session_gateway::settings::AuthSettings {
    let mut auth = demo_auth();
    auth.api_keys.retain(|k| k.name == DEMO_ADMIN_KEY);
    auth
}
pub mod process;

/// A fixed "now" for seeded data, so expected answers never drift.
pub fn anchor() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

/// Seeded data for the demo account and region.
pub fn dataset(seed: u64, active: usize, history: usize) -> Dataset {
    Dataset::generate(&DataSpec {
        seed,
        anchor: anchor(),
        sources: vec![SourceSpec::new(
            DEMO_ACCOUNT_ID,
            DEMO_REGION,
            active,
            history,
        )],
    })
}

/// An emulator config over `dataset` with the demo credentials.
pub fn emulator_config(dataset: Dataset) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(dataset, demo_credentials());
    config.token_secret = Some([7; 32]);
    config
}

/// Starts `emulator` on a loopback port; it stops when `stop` fires or drops.
pub async fn serve_emulator(emulator: Emulator) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = emulator
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    (addr, stop)
}

pub fn demo_account() -> AccountId {
    AccountId::parse(DEMO_ACCOUNT_ID).expect("demo account id")
}

pub fn demo_region() -> Region {
    Region::parse(DEMO_REGION).expect("demo region")
}

/// A registry of one source: the demo account (alias `demo`) in the demo region.
pub fn single_registry(source: Arc<dyn SessionSource>) -> AccountRegistry {
    let key = SourceKey {
        account: demo_account(),
        region: demo_region(),
    };
    AccountRegistry::new(
        vec![Account {
            id: demo_account(),
            alias: "demo".to_owned(),
            regions: vec![demo_region()],
        }],
        [(key, source)],
    )
}

/// A gateway and the emulator behind it.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin listener, when the settings asked for one.
    pub admin_addr: Option<SocketAddr>,
    pub emulator: Emulator,
    pub emulator_addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    _stops: Vec<oneshot::Sender<()>>,
}

/// Spawns the emulator with `config` and the gateway over it: one account
/// (the demo account, alias `demo`, read with the base credentials) in the
/// demo region.
pub async fn spawn_app(config: EmulatorConfig) -> TestApp {
    spawn_app_with(config, Settings::default()).await
}

/// [`spawn_app`] with `settings` for everything but the account, the
/// endpoint and the address. These tests count upstream calls, so the page
/// cache keeps nothing (TTLs and failure back-off 0) and the SDK makes one
/// attempt (unless `settings` asks for another number): configuration, not
/// a different wiring.
pub async fn spawn_app_with(config: EmulatorConfig, mut settings: Settings) -> TestApp {
    let emulator = Emulator::new(config);
    let (emulator_addr, emulator_stop) = serve_emulator(emulator.clone()).await;
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.aws.region = Some(DEMO_REGION.to_owned());
    settings.aws.endpoint_url = Some(format!("http://{emulator_addr}"));
    if settings.aws.max_attempts == AwsSettings::default().max_attempts {
        // One attempt, unless the test asks for retries.
        settings.aws.max_attempts = 1;
    }
    if settings.aws.max_calls_per_second == AwsSettings::default().max_calls_per_second {
        // Tests make calls in bursts; the rate limit has tests of its own.
        settings.aws.max_calls_per_second = 100;
    }
    unlimited_callers(&mut settings);
    settings.cache.active_ttl_secs = 0;
    settings.cache.history_ttl_secs = 0;
    settings.cache.failure_backoff_ms = 0;
    // No load balancer to tell: stop accepting at once on shutdown.
    settings.shutdown_delay_secs = 0;
    settings.accounts = vec![AccountSettings {
        id: DEMO_ACCOUNT_ID.to_owned(),
        alias: "demo".to_owned(),
        role_arn: None,
        external_id: None,
        session_name: None,
        session_duration_secs: None,
        terminate_role_arn: None,
        profile: None,
        regions: vec![DEMO_REGION.to_owned()],
    }];
    if settings.cursor_key.is_none() {
        settings.cursor_key = Some(Secret::new("k".repeat(32)));
    }
    if !settings.auth.is_configured() {
        settings.auth = admin_auth();
    }
    let app = Application::build(&settings, BaseCredentials::Static(demo_base_credentials()))
        .await
        .expect("gateway builds");
    start(app, emulator, emulator_addr, Some(emulator_stop))
}

/// Spawns the emulator with `config` and `n` replicas of the gateway over
/// it, each built by `Application::build` from the same settings: the
/// demo's accounts (as [`spawn_multi_with`]), adjusted by `adjust` (which
/// sets `[redis]` where they share one). The first replica owns the
/// emulator: it stops when that one is dropped.
pub async fn spawn_replicas(
    config: EmulatorConfig,
    n: usize,
    adjust: impl FnOnce(&mut Settings),
) -> Vec<TestApp> {
    let emulator = Emulator::new(config);
    let (emulator_addr, emulator_stop) = serve_emulator(emulator.clone()).await;
    let settings = replica_settings(emulator_addr, adjust);
    let mut apps = Vec::new();
    let mut emulator_stop = Some(emulator_stop);
    for _ in 0..n {
        apps.push(replica(&settings, &emulator, emulator_addr, emulator_stop.take()).await);
    }
    apps
}

/// The demo's settings over the emulator at `emulator_addr` as replicas
/// share them (as [`spawn_multi_with`]: one attempt, a high call rate),
/// adjusted by `adjust`.
fn replica_settings(emulator_addr: SocketAddr, adjust: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = demo_settings(SocketAddr::from(([127, 0, 0, 1], 0)), emulator_addr);
    settings.aws.max_attempts = 1;
    settings.aws.max_calls_per_second = 100;
    adjust(&mut settings);
    unlimited_callers(&mut settings);
    settings
}

/// One more gateway with `settings` over `first`'s emulator.
pub async fn replica_of(first: &TestApp, settings: &Settings) -> TestApp {
    let mut settings = settings.clone();
    settings.aws.endpoint_url = Some(format!("http://{}", first.emulator_addr));
    replica(&settings, &first.emulator, first.emulator_addr, None).await
}

async fn replica(
    settings: &Settings,
    emulator: &Emulator,
    emulator_addr: SocketAddr,
    emulator_stop: Option<oneshot::Sender<()>>,
) -> TestApp {
    let app = Application::build(settings, BaseCredentials::Static(demo_base_credentials()))
        .await
        .expect("gateway");
    start(app, emulator.clone(), emulator_addr, emulator_stop)
}

/// Tests send bursts as one caller: unless a test set `[rate_limits]`
/// itself, the per-caller limit is raised out of the way (still on, so
/// every request passes through it). It has tests of its own.
fn unlimited_callers(settings: &mut Settings) {
    if settings.rate_limits == RateLimitSettings::default() {
        settings.rate_limits.requests_per_second = 1_000_000;
        settings.rate_limits.burst = 1_000_000;
    }
}

/// Runs `app` and wraps it, with its emulator, as a [`TestApp`]; the
/// emulator stops with it when `emulator_stop` is given (its owner).
fn start(
    app: Application,
    emulator: Emulator,
    emulator_addr: SocketAddr,
    emulator_stop: Option<oneshot::Sender<()>>,
) -> TestApp {
    let addr = app.local_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        admin_addr,
        emulator,
        emulator_addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _stops: emulator_stop.into_iter().chain([stop]).collect(),
    }
}

/// One GraphQL request through the gateway's router over `registry`, in
/// process (no port): for registries with scripted sources.
pub async fn query_router(registry: AccountRegistry, query: &str, variables: Value) -> Value {
    let settings = Settings {
        auth: admin_auth(),
        ..Settings::default()
    };
    let router = ssm_session_gateway::app::router(&settings, Arc::new(registry)).expect("router");
    let body = json!({ "query": query, "variables": variables }).to_string();
    let req = axum::http::Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", ADMIN)
        .body(axum::body::Body::from(body))
        .expect("request");
    let res = tower::ServiceExt::oneshot(router, req)
        .await
        .expect("answer");
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json")
}

/// Spawns the emulator with `config` and a gateway configured like the
/// demo: three accounts, each through its own role, in two regions.
pub async fn spawn_multi(config: EmulatorConfig) -> TestApp {
    spawn_multi_with(config, |_| {}).await
}

/// [`spawn_multi`] with settings adjusted by `adjust` (TTLs, say).
pub async fn spawn_multi_with(
    config: EmulatorConfig,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let emulator = Emulator::new(config);
    let (emulator_addr, emulator_stop) = serve_emulator(emulator.clone()).await;
    let mut settings = demo_settings(SocketAddr::from(([127, 0, 0, 1], 0)), emulator_addr);
    // Tests count upstream calls: a retry would blur the count. They make
    // calls in bursts; the rate limit has tests of its own.
    settings.aws.max_attempts = 1;
    settings.aws.max_calls_per_second = 100;
    unlimited_callers(&mut settings);
    adjust(&mut settings);
    let app = Application::build(&settings, BaseCredentials::Static(demo_base_credentials()))
        .await
        .expect("gateway");
    start(app, emulator, emulator_addr, Some(emulator_stop))
}

/// [`spawn_multi_with`], and a twin over the same emulator with the same
/// settings (cursor key included) but for `twin`'s changes: two gateways
/// that answer the same requests from the same upstream pages.
pub async fn spawn_twins(
    config: EmulatorConfig,
    adjust: impl FnOnce(&mut Settings),
    twin: impl FnOnce(&mut Settings),
) -> (TestApp, TestApp) {
    let emulator = Emulator::new(config);
    let (emulator_addr, emulator_stop) = serve_emulator(emulator.clone()).await;
    let settings = replica_settings(emulator_addr, adjust);
    let mut other = settings.clone();
    twin(&mut other);
    let first = replica(&settings, &emulator, emulator_addr, Some(emulator_stop)).await;
    let second = replica(&other, &emulator, emulator_addr, None).await;
    (first, second)
}

/// A raw HTTP answer.
pub struct HttpAnswer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `x-cache` header of an answer: `HIT` or `MISS`.
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl TestApp {
    /// Sends any request to the gateway, as `demo-admin` unless `headers`
    /// hold an `authorization` header.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> HttpAnswer {
        let own = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
        let auth = (!own).then_some(ADMIN);
        self.request_as(auth, method, path, headers, body).await
    }

    /// `GET path` on the admin listener (which the settings must have asked for).
    pub async fn admin(&self, path: &str) -> HttpAnswer {
        let addr = self.admin_addr.expect("spawned with admin_listen");
        send(&self.client, addr, Method::GET, path, &[], Bytes::new()).await
    }

    /// Sends any request with `authorization` (none at all when `None`)
    /// besides `headers`.
    pub async fn request_as(
        &self,
        authorization: Option<&str>,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> HttpAnswer {
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
        if let Some(value) = authorization {
            all.push(("authorization", value));
        }
        all.extend_from_slice(headers);
        send(&self.client, self.addr, method, path, &all, body.into()).await
    }

    /// POSTs a GraphQL request as application/json; the parsed response.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_answer(query, variables, &[]).await.json()
    }

    /// POSTs a GraphQL request with extra headers; the whole answer (200 asserted).
    pub async fn graphql_answer(
        &self,
        query: &str,
        variables: Value,
        headers: &[(&str, &str)],
    ) -> HttpAnswer {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        let answer = self.request(Method::POST, "/graphql", &all, body).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        answer
    }

    /// POSTs a GraphQL request with `authorization` (none when `None`); the
    /// whole answer, whatever its status.
    pub async fn graphql_as(
        &self,
        authorization: Option<&str>,
        query: &str,
        variables: Value,
    ) -> HttpAnswer {
        let body = json!({ "query": query, "variables": variables }).to_string();
        self.request_as(
            authorization,
            Method::POST,
            "/graphql",
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Stops the gateway (as SIGTERM would), leaving the emulator running.
    pub fn stop_gateway(&mut self) {
        // The gateway's is the last; a replica without the emulator has one.
        if let Some(stop) = self._stops.pop() {
            let _ = stop.send(());
        }
    }

    /// Sends a JSON request to the emulator's control endpoints; the status
    /// and the JSON answer.
    pub async fn emulator_control(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.emulator_addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let res = self.client.request(req).await.expect("emulator answers");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The gateway's WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql", self.addr)
    }

    /// `DescribeSessions` calls the emulator has served so far.
    pub fn describe_calls(&self) -> u64 {
        self.emulator.calls("DescribeSessions")
    }
}

/// One HTTP request to `addr` through `client`.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> HttpAnswer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(body)).expect("request");
    let res = client.request(req).await.expect("the server answers");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    HttpAnswer {
        status,
        headers,
        body,
    }
}

/// A plain HTTP/1 client for [`send`].
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The `extensions.code` of each error in a response.
pub fn error_codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    e["extensions"]["code"]
                        .as_str()
                        .unwrap_or("<none>")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}
