//! An SSM emulator that speaks the real AWS wire protocol, so the real
//! `aws-sdk-ssm` client, the aws CLI and boto3 talk to it unchanged (point
//! their endpoint URL at it). moto and LocalStack implement none of the
//! Session Manager APIs; this does. ssm-session-gateway's `demo` and tests
//! run against it, and it imports nothing from the gateway.
//!
//! It serves `DescribeSessions`, `DescribeInstanceInformation` and
//! `TerminateSession` over AWS JSON 1.1 (`POST /`), from a [`Dataset`] of
//! sessions and managed nodes per (account, region), and STS `AssumeRole` and
//! `GetCallerIdentity` over AWS Query (`POST /`, form-encoded). Every request
//! must carry a valid SigV4 signature. The account comes from the access key
//! id: a configured [`StaticCredential`], or temporary credentials its STS
//! issued for a configured [`RoleSpec`] (the role's account); the region
//! comes from the signature's credential scope. `GET /_emulator/stats`
//! reports call counts as JSON; `POST /_emulator/sessions` and `PATCH
//! /_emulator/sessions/{account}/{region}/{id}` start a session and change
//! its status (see `control`), and [`Churn`] does so on its own.
//!
//! [`Faults`] add latency, throttling and server errors to a share of SSM
//! requests, drawn from a seeded PRNG; they can change while serving
//! ([`Emulator::set_faults`]), never touch STS, and are counted
//! (`throttled`, `failed`).
//!
//! Tests can also make one request fail on purpose with the header
//! `x-emulator-fault: InternalServerError` (a 500) or
//! `x-emulator-fault: ThrottlingException` (a retryable 400); it acts after
//! authentication, so the request is counted like any other.
//!
//! # Layout
//! - [`cli`]: the fault and data flags of the `ssm-emulator` binary, shared
//!   with programs that embed the emulator;
//! - [`wire`]: the AWS JSON 1.1 and AWS Query protocols (operations, replies,
//!   error bodies);
//! - [`auth`]: SigV4 `Authorization` parsing, credential lookup (static and
//!   issued) and verification;
//! - [`sigv4`]: the SigV4 signature, recomputed as AWS does;
//! - [`sts`]: AssumeRole validation and authorization, STS XML results;
//! - [`ssm`]: DescribeSessions validation, filtering and paging;
//! - [`terminate`]: TerminateSession (Active to History, idempotent);
//! - [`control`]: the control endpoints and churn;
//! - [`nodes`]: DescribeInstanceInformation validation, filtering and paging;
//! - [`token`]: signed, expiring NextTokens;
//! - [`faults`]: seeded latency, throttling and server errors;
//! - [`data`]: session and node records and the seeded data generator.
//!
//! Invariants: a request never panics the emulator whatever its input; every
//! reply has the protocol's headers; counters are exact (a request is counted
//! in flight from arrival until its response is built, even if the client
//! goes away meanwhile).

mod auth;
pub mod cli;
mod control;
mod data;
mod faults;
mod nodes;
mod sigv4;
mod ssm;
mod sts;
mod terminate;
mod token;
mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SubsecRound as _, Utc};
use serde_json::{Value, json};

pub use auth::StaticCredential;
pub use control::{Churn, DEFAULT_CHURN_PACE};
pub use data::{
    AccessType, DEMO_SEED, DataSpec, Dataset, NodeRecord, OutputUrl, PingStatus, PlatformType,
    ResourceType, SessionRecord, SessionState, SessionStatus, SourceSpec,
};
pub use faults::{Faults, Latency, parse_ratio};
pub use nodes::DEFAULT_NODE_MAX_RESULTS;
pub use ssm::DEFAULT_MAX_RESULTS;
pub use sts::{DEFAULT_ROLE_DURATION, RoleSpec};

use auth::{Caller, Credentials, Principal};
use faults::{FaultState, Outcome};
use nodes::{DescribeInstanceInformation, NodePaging};
use sigv4::SignedRequest;
use ssm::{DescribeSessions, Paging};
use sts::{AssumeRole, Roles};
use terminate::TerminateSession;
use token::TokenKey;
use wire::{AwsError, Operation, Protocol, QueryError};

/// The demo access key (AWS's documentation example key).
pub const DEMO_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const DEMO_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// The account [`DEMO_ACCESS_KEY_ID`] acts in.
pub const DEMO_ACCOUNT_ID: &str = "111122223333";
pub const DEMO_REGION: &str = "us-east-1";
/// The demo dataset's accounts; the first is [`DEMO_ACCOUNT_ID`].
pub const DEMO_ACCOUNT_IDS: [&str; 3] = [DEMO_ACCOUNT_ID, "444455556666", "777788889999"];

/// Demo credentials: [`DEMO_ACCESS_KEY_ID`] for the demo account, and one key
/// for each other demo account (`AKIAEMULATOR<last 8 digits>`, secret
/// `emulator-secret-<account>`). Reaching an account through
/// [`demo_roles`] is the other way.
pub fn demo_credentials() -> Vec<StaticCredential> {
    let mut credentials = vec![StaticCredential::new(
        DEMO_ACCESS_KEY_ID,
        DEMO_SECRET_ACCESS_KEY,
        DEMO_ACCOUNT_ID,
    )];
    for account in &DEMO_ACCOUNT_IDS[1..] {
        credentials.push(StaticCredential::new(
            &format!("AKIAEMULATOR{}", &account[4..]),
            &format!("emulator-secret-{account}"),
            account,
        ));
    }
    credentials
}

/// The name of the demo role in every demo account.
pub const DEMO_ROLE_NAME: &str = "SessionGatewayReader";
/// The demo account whose role requires an external id:
/// [`DEMO_EXTERNAL_ID`].
pub const DEMO_EXTERNAL_ID_ACCOUNT: &str = "444455556666";
/// The external id the role in [`DEMO_EXTERNAL_ID_ACCOUNT`] requires.
pub const DEMO_EXTERNAL_ID: &str = "ssm-session-gateway-demo";

/// `arn:aws:iam::<account>:role/SessionGatewayReader`.
pub fn demo_role_arn(account_id: &str) -> String {
    format!("arn:aws:iam::{account_id}:role/{DEMO_ROLE_NAME}")
}

/// One role per demo account ([`demo_role_arn`]), assumable with any valid
/// signature; the one in [`DEMO_EXTERNAL_ID_ACCOUNT`] also requires
/// [`DEMO_EXTERNAL_ID`].
pub fn demo_roles() -> Vec<RoleSpec> {
    DEMO_ACCOUNT_IDS
        .iter()
        .map(|account| {
            let external_id = (*account == DEMO_EXTERNAL_ID_ACCOUNT).then_some(DEMO_EXTERNAL_ID);
            RoleSpec::new(&demo_role_arn(account), external_id)
        })
        .collect()
}

/// How an [`Emulator`] behaves.
#[derive(Clone)]
pub struct EmulatorConfig {
    pub dataset: Dataset,
    /// The access keys accepted, each mapped to its account.
    pub credentials: Vec<StaticCredential>,
    /// The roles STS `AssumeRole` grants; the credentials it issues act in
    /// the role's account.
    pub roles: Vec<RoleSpec>,
    /// `None`: issued credentials live `DurationSeconds` (default
    /// [`DEFAULT_ROLE_DURATION`]). `Some(ttl)`: they live `ttl` instead (the
    /// reply's `Expiration` says so), so tests can watch them expire.
    pub sts_credential_ttl_override: Option<Duration>,
    /// `None`: full pages. `Some(seed)`: short pages, as real SSM may return
    /// (pages shorter than MaxResults, empty ones, a trailing empty page),
    /// drawn deterministically from the seed.
    pub short_pages: Option<u64>,
    /// Added to every request, STS included (inside the handler, so counted
    /// in flight); on top of any [`Faults::latency`], which is SSM-only.
    pub latency: Option<Duration>,
    /// Simulated upstream trouble for SSM requests; changeable while serving
    /// with [`Emulator::set_faults`].
    pub faults: Faults,
    /// NextToken lifetime; older tokens get `InvalidNextToken`.
    pub token_ttl: Duration,
    /// Key that signs NextTokens; `None` draws a random one per emulator.
    pub token_secret: Option<[u8; 32]>,
    /// `Some`: NextTokens are issued, and their age measured, at this
    /// instant instead of the time of the request, so the same page asked
    /// for twice gets the same token (tests that compare two gateways'
    /// answers byte for byte, cursors included). `None` (default): now.
    pub token_clock: Option<DateTime<Utc>>,
    /// `Some`: while serving, sessions start, change status and end on their
    /// own ([`Churn`]), so a dashboard moves. `None` (default): the data
    /// changes only through the control endpoints and `TerminateSession`.
    pub churn: Option<Churn>,
}

/// Never prints the token secret, nor every session.
impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("sessions", &self.dataset.len())
            .field("credentials", &self.credentials)
            .field("roles", &self.roles)
            .field(
                "sts_credential_ttl_override",
                &self.sts_credential_ttl_override,
            )
            .field("short_pages", &self.short_pages)
            .field("latency", &self.latency)
            .field("faults", &self.faults)
            .field("token_ttl", &self.token_ttl)
            .field("token_secret", &self.token_secret.map(|_| "<redacted>"))
            .field("token_clock", &self.token_clock)
            .field("churn", &self.churn)
            .finish()
    }
}

/// Default NextToken lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl EmulatorConfig {
    /// A config with no faults: full pages, no latency, 1 h tokens with a
    /// random key, and no roles.
    pub fn new(dataset: Dataset, credentials: Vec<StaticCredential>) -> Self {
        Self {
            dataset,
            credentials,
            roles: Vec::new(),
            sts_credential_ttl_override: None,
            short_pages: None,
            latency: None,
            faults: Faults::default(),
            token_ttl: DEFAULT_TOKEN_TTL,
            token_secret: None,
            token_clock: None,
            churn: None,
        }
    }

    /// The demo dataset around `anchor` with the [`demo_credentials`] and
    /// the [`demo_roles`].
    pub fn demo(anchor: DateTime<Utc>) -> Self {
        Self {
            roles: demo_roles(),
            ..Self::new(Dataset::demo(anchor), demo_credentials())
        }
    }
}

/// The emulator; cheap to clone (all clones share one state).
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.max_in_flight())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// std locks, not tokio's: nothing awaits while holding them.
    dataset: RwLock<Dataset>,
    credentials: Credentials,
    roles: Roles,
    sts_credential_ttl_override: Option<Duration>,
    tokens: TokenKey,
    short_pages: Option<u64>,
    latency: Option<Duration>,
    /// std lock: held only to read or draw, never across an await.
    faults: Mutex<FaultState>,
    token_ttl: Duration,
    token_clock: Option<DateTime<Utc>>,
    churn: Option<Churn>,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Requests answered `ThrottlingException` (drawn or injected by header).
    throttled: AtomicU64,
    /// Requests answered `InternalServerError` (drawn or injected by header).
    failed: AtomicU64,
    /// Only implemented operations are keys, and only configured accounts
    /// sub-keys, so client input cannot grow this.
    calls: Mutex<HashMap<Operation, OperationCalls>>,
}

#[derive(Debug, Default, Clone)]
struct OperationCalls {
    total: u64,
    by_account: HashMap<String, u64>,
}

/// Counts a request in flight for as long as it lives.
impl Stats {
    /// The call counters. A poisoned lock still holds valid counts (no
    /// update spans a panic), so it is used as is.
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<Operation, OperationCalls>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a Stats) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        let secret = config.token_secret.unwrap_or_else(rand::random);
        Self {
            inner: Arc::new(Inner {
                dataset: RwLock::new(config.dataset),
                credentials: Credentials::new(config.credentials),
                roles: Roles::new(config.roles),
                sts_credential_ttl_override: config.sts_credential_ttl_override,
                tokens: TokenKey::new(secret),
                short_pages: config.short_pages,
                latency: config.latency,
                faults: Mutex::new(FaultState::new(config.faults)),
                token_ttl: config.token_ttl,
                token_clock: config.token_clock,
                churn: config.churn,
                stats: Stats::default(),
            }),
        }
    }

    /// The whole emulator: `POST /` for AWS requests, `GET /_emulator/stats`,
    /// and the control endpoints (`/_emulator/sessions`, see [`control`]).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", post(handle_aws))
            .route("/_emulator/stats", get(handle_stats))
            .route("/_emulator/sessions", post(control::start_session))
            .route(
                "/_emulator/sessions/{account}/{region}/{session_id}",
                axum::routing::patch(control::set_status),
            )
            .with_state(self.clone())
    }

    /// Serves on an already-bound listener until `shutdown` resolves; runs
    /// churn meanwhile when configured.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let churn = self
            .inner
            .churn
            .map(|churn| tokio::spawn(control::churn(self.clone(), churn)));
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(churn) = churn {
            churn.abort();
        }
        served
    }

    /// Requests that targeted `operation` (e.g. "DescribeSessions"), whether
    /// or not they were authenticated and valid.
    pub fn calls(&self, operation: &str) -> u64 {
        self.with_calls(operation, |c| c.total)
    }

    /// Requests for `operation` authenticated as `account_id`; for
    /// `AssumeRole`, authenticated requests for a configured role of
    /// `account_id` (granted or not).
    pub fn calls_for(&self, operation: &str, account_id: &str) -> u64 {
        self.with_calls(operation, |c| {
            c.by_account.get(account_id).copied().unwrap_or(0)
        })
    }

    fn with_calls(&self, operation: &str, f: impl FnOnce(&OperationCalls) -> u64) -> u64 {
        let calls = self.inner.stats.calls();
        Operation::ALL
            .into_iter()
            .find(|op| op.name() == operation)
            .and_then(|op| calls.get(&op))
            .map_or(0, f)
    }

    /// Requests answered `ThrottlingException` since start (or the last
    /// reset), whether drawn from [`Faults`] or asked for by header.
    pub fn throttled(&self) -> u64 {
        self.inner.stats.throttled.load(Ordering::SeqCst)
    }

    /// Requests answered `InternalServerError` since start (or the last
    /// reset), whether drawn from [`Faults`] or asked for by header.
    pub fn failed(&self) -> u64 {
        self.inner.stats.failed.load(Ordering::SeqCst)
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.fault_state().faults().clone()
    }

    /// Replaces the faults for the requests that arrive from now on; the
    /// draws restart from `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        *self.fault_state() = FaultState::new(faults);
    }

    /// A poisoned lock still holds a valid state (draws are single
    /// assignments), so it is used as is.
    fn fault_state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> u64 {
        self.inner.stats.in_flight.load(Ordering::SeqCst)
    }

    /// Most requests served at once since start (or the last reset).
    pub fn max_in_flight(&self) -> u64 {
        self.inner.stats.max_in_flight.load(Ordering::SeqCst)
    }

    /// Zeroes the call counts; the high-water mark restarts from the requests
    /// in flight now.
    pub fn reset_stats(&self) {
        let stats = &self.inner.stats;
        stats.calls().clear();
        stats.throttled.store(0, Ordering::SeqCst);
        stats.failed.store(0, Ordering::SeqCst);
        stats
            .max_in_flight
            .store(stats.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Adds (or replaces, by instance id) a managed node while serving.
    pub fn insert_node(&self, account_id: &str, region: &str, node: NodeRecord) {
        self.inner
            .dataset
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert_node(account_id, region, node);
    }

    /// Adds (or replaces, by session id) a session while serving.
    pub fn insert_session(&self, account_id: &str, region: &str, session: SessionRecord) {
        // A panic elsewhere cannot leave the dataset half-written (inserts
        // are single Vec operations), so a poisoned lock is still usable.
        self.inner
            .dataset
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account_id, region, session);
    }

    /// Sets the status of one session (and its end date, when the status
    /// ends it); the session as changed, or `None` when there is none.
    pub fn change_status(
        &self,
        account_id: &str,
        region: &str,
        session_id: &str,
        status: SessionStatus,
    ) -> Option<SessionRecord> {
        let mut dataset = self
            .inner
            .dataset
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut session = dataset
            .sessions(account_id, region)
            .iter()
            .find(|s| s.session_id == session_id)?
            .clone();
        session.status = status;
        session.end_date = match status {
            SessionStatus::Terminated | SessionStatus::Failed => Some(
                session
                    .end_date
                    .unwrap_or_else(|| Utc::now().max(session.start_date)),
            ),
            _ => None,
        };
        dataset.insert(account_id, region, session.clone());
        Some(session)
    }

    /// One churn change in a source drawn from `rng`.
    fn churn_step(&self, rng: &mut data::SplitMix64) {
        let mut dataset = self
            .inner
            .dataset
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let sources: Vec<(String, String)> = dataset
            .sources()
            .map(|(a, r)| (a.to_owned(), r.to_owned()))
            .collect();
        if sources.is_empty() {
            return;
        }
        let (account, region) = &sources[rng.below(sources.len() as u64) as usize];
        if let Some(change) = control::next_change(
            rng,
            dataset.sessions(account, region),
            Utc::now().trunc_subsecs(3),
        ) {
            tracing::debug!(
                account = %account,
                region = %region,
                session_id = %change.session_id,
                status = change.status.as_str(),
                "churn"
            );
            dataset.insert(account, region, change);
        }
    }

    fn count(&self, operation: Operation, account_id: Option<&str>) {
        let mut calls = self.inner.stats.calls();
        let entry = calls.entry(operation).or_default();
        match account_id {
            None => entry.total += 1,
            Some(account) => *entry.by_account.entry(account.to_owned()).or_default() += 1,
        }
    }

    fn stats_json(&self) -> Value {
        let calls = self.inner.stats.calls();
        let calls: serde_json::Map<String, Value> = calls
            .iter()
            .map(|(op, c)| {
                (
                    op.name().to_owned(),
                    json!({"total": c.total, "by_account": c.by_account}),
                )
            })
            .collect();
        json!({
            "in_flight": self.in_flight(),
            "max_in_flight": self.max_in_flight(),
            "throttled": self.throttled(),
            "failed": self.failed(),
            "calls": calls,
        })
    }

    /// An AWS JSON 1.1 (SSM) request, after its protocol was recognised.
    fn handle_json(&self, request: &SignedRequest<'_>) -> Result<Value, AwsError> {
        let operation = Operation::from_target(request.headers)?;
        self.count(operation, None);
        let caller = self
            .inner
            .credentials
            .authenticate(request, "ssm", Utc::now())
            .map_err(auth::AuthError::json)?
            .caller;
        self.count(operation, Some(&caller.account_id));
        let fault = wire::injected_fault(request.headers).or_else(|| {
            let outcome = self.fault_state().outcome();
            match outcome {
                Outcome::Serve => None,
                Outcome::Throttle => Some(AwsError::throttling()),
                Outcome::Fail => Some(AwsError::internal("Injected fault: internal server error.")),
            }
        });
        if let Some(fault) = fault {
            let counter = if fault.code == "ThrottlingException" {
                &self.inner.stats.throttled
            } else {
                &self.inner.stats.failed
            };
            counter.fetch_add(1, Ordering::SeqCst);
            return Err(fault);
        }
        match operation {
            Operation::DescribeSessions => self.describe_sessions(&caller, request.body),
            Operation::DescribeInstanceInformation => {
                self.describe_instance_information(&caller, request.body)
            }
            Operation::TerminateSession => self.terminate_session(&caller, request.body),
            Operation::AssumeRole | Operation::GetCallerIdentity => {
                Err(AwsError::unknown_operation(operation.name()))
            }
        }
    }

    /// An AWS Query (STS) request: the operation and its result XML.
    fn handle_query(&self, request: &SignedRequest<'_>) -> Result<(Operation, String), QueryError> {
        let form = sts::parse_form(request.body);
        let operation = Operation::from_form(&form)?;
        self.count(operation, None);
        let now = Utc::now();
        let principal = self
            .inner
            .credentials
            .authenticate(request, "sts", now)
            .map_err(auth::AuthError::query)?;
        let result = match operation {
            Operation::GetCallerIdentity => {
                self.count(operation, Some(&principal.caller.account_id));
                sts::caller_identity_result(&principal)
            }
            Operation::AssumeRole => self.assume_role(&principal, &form, now)?,
            Operation::DescribeSessions
            | Operation::DescribeInstanceInformation
            | Operation::TerminateSession => {
                return Err(QueryError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "InvalidAction",
                    format!("{} is not an STS action", operation.name()),
                ));
            }
        };
        Ok((operation, result))
    }

    fn assume_role(
        &self,
        principal: &Principal,
        form: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<String, QueryError> {
        let request = AssumeRole::parse(form)?;
        // Counted by the role's account once the role is known to be
        // configured, so client input cannot grow the stats.
        if self.inner.roles.get(&request.role_arn).is_some() {
            self.count(Operation::AssumeRole, Some(&request.role.account_id));
        }
        request.authorize(&self.inner.roles, principal)?;
        let ttl = self
            .inner
            .sts_credential_ttl_override
            .unwrap_or(request.duration);
        let issued = self.inner.credentials.issue(
            &request.role.account_id,
            request.assumed_arn(),
            request.assumed_role_id(),
            ttl,
            now,
        );
        tracing::debug!(
            role_arn = %request.role_arn,
            access_key_id = %issued.access_key_id,
            expiration = %issued.expiration,
            "emulator issued temporary credentials"
        );
        Ok(sts::assume_role_result(&issued))
    }

    fn describe_sessions(&self, caller: &Caller, body: &[u8]) -> Result<Value, AwsError> {
        let request = DescribeSessions::parse(body)?;
        let paging = Paging {
            tokens: &self.inner.tokens,
            token_ttl: self.inner.token_ttl,
            short_pages: self.inner.short_pages,
            now: self.inner.token_clock.unwrap_or_else(Utc::now),
        };
        let dataset = self
            .inner
            .dataset
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        request.run(
            caller,
            dataset.sessions(&caller.account_id, &caller.region),
            &paging,
        )
    }

    fn terminate_session(&self, caller: &Caller, body: &[u8]) -> Result<Value, AwsError> {
        let request = TerminateSession::parse(body)?;
        let mut dataset = self
            .inner
            .dataset
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(request.run(&mut dataset, &caller.account_id, &caller.region, Utc::now()))
    }

    fn describe_instance_information(
        &self,
        caller: &Caller,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let request = DescribeInstanceInformation::parse(body)?;
        let paging = NodePaging {
            tokens: &self.inner.tokens,
            token_ttl: self.inner.token_ttl,
            now: self.inner.token_clock.unwrap_or_else(Utc::now),
        };
        let dataset = self
            .inner
            .dataset
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        request.run(
            caller,
            dataset.nodes(&caller.account_id, &caller.region),
            &paging,
        )
    }
}

async fn handle_aws(
    State(emulator): State<Emulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&emulator.inner.stats);
    if let Some(latency) = emulator.inner.latency {
        tokio::time::sleep(latency).await;
    }
    if Protocol::of(&headers) == Protocol::AwsJson11 {
        // Drawn under the lock, slept after it is released.
        let latency = emulator.fault_state().latency();
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
    }
    let request_id = wire::request_id();
    let request = SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or_default(),
        headers: &headers,
        body: &body,
    };
    let result = match Protocol::of(&headers) {
        Protocol::AwsJson11 => emulator.handle_json(&request),
        Protocol::AwsQuery => {
            return match emulator.handle_query(&request) {
                Ok((operation, result)) => wire::query_ok(operation.name(), &result, &request_id),
                Err(error) => {
                    tracing::debug!(code = error.code, message = %error.message, %request_id, "emulator STS error reply");
                    error.into_response(&request_id)
                }
            };
        }
        Protocol::Other => Err(wire::unsupported_content_type()),
    };
    match result {
        Ok(body) => wire::ok(&request_id, &body),
        Err(error) => {
            tracing::debug!(code = error.code, message = %error.message, %request_id, "emulator error reply");
            error.into_response(&request_id)
        }
    }
}

async fn handle_stats(State(emulator): State<Emulator>) -> Response {
    axum::Json(emulator.stats_json()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = EmulatorConfig::demo(Utc::now());
        config.token_secret = Some([0xab; 32]);
        let printed = format!("{config:?} {:?}", Emulator::new(config.clone()));
        assert!(!printed.contains(DEMO_SECRET_ACCESS_KEY), "{printed}");
        assert!(printed.contains(DEMO_EXTERNAL_ID), "roles are not secret");
        assert!(
            !printed.contains("171, 171"),
            "token secret bytes: {printed}"
        );
        assert!(printed.contains(DEMO_ACCESS_KEY_ID));
    }
}
