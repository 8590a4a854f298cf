//! `demo`: the emulator with demo data and the gateway over it, in one
//! process, so GraphiQL shows realistic sessions with no AWS account.
//!
//! The gateway reaches the emulator exactly as it would reach AWS: through
//! aws-sdk-ssm over HTTP, signed with the demo credentials.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use aws_credential_types::Credentials;
use tokio::net::TcpListener;

use ssm_emulator::{self as emulator, Emulator, EmulatorConfig};

use crate::app::{Application, BaseCredentials};
use crate::auth::Scope;
use crate::settings::{
    AccountSettings, ApiKeySettings, AuthSettings, AwsSettings, GrantSettings, HttpSettings,
    LiveSettings, Secret, Settings,
};
use crate::upstream::sdk::ClientSettings;

/// What `demo` can be told.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The gateway's address.
    pub listen: SocketAddr,
    /// The emulator's address (port 0: any free port).
    pub emulator_listen: SocketAddr,
    /// The emulator's data, page shapes and faults.
    pub emulator: EmulatorConfig,
    /// Serve the benchmark baseline route (see [`bench_routes`]).
    pub bench_routes: bool,
    /// The admin listener's address; `None`: no admin listener.
    pub admin_listen: Option<SocketAddr>,
}

/// Longest spin `/_bench/spin/{us}` takes: 100 ms.
pub const MAX_SPIN_US: u64 = 100_000;

/// `PUT /_bench/prebuilt` stores a body; `GET` or `POST` return it as
/// `application/json`. The benchmark stores a GraphQL response there and
/// compares the gateway with serving the same bytes from plain axum.
///
/// `GET` or `POST /_bench/spin/{us}` return the same bytes after keeping
/// the CPU busy for `us` microseconds (at most [`MAX_SPIN_US`]): what the
/// benchmark's wrk, on the gateway's own cores, allows a route that costs
/// that much, the yardstick for the ratios of the GraphQL rows.
pub fn bench_routes() -> axum::Router {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::header;
    use axum::routing::get;
    use std::sync::RwLock;

    type Stored = Arc<RwLock<Bytes>>;
    // The request body is read, as the GraphQL handler reads its own (an
    // unread body would also cost the client its keep-alive connection).
    async fn serve(
        State(stored): State<Stored>,
        _body: Bytes,
    ) -> ([(header::HeaderName, &'static str); 1], Bytes) {
        let body = stored.read().map(|b| b.clone()).unwrap_or_default();
        ([(header::CONTENT_TYPE, "application/json")], body)
    }
    async fn spin(
        State(stored): State<Stored>,
        axum::extract::Path(us): axum::extract::Path<u64>,
        body: Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        if us > MAX_SPIN_US {
            let message = format!("spin at most {MAX_SPIN_US} us");
            return (axum::http::StatusCode::BAD_REQUEST, message).into_response();
        }
        let until = std::time::Instant::now() + std::time::Duration::from_micros(us);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        serve(State(stored), body).await.into_response()
    }
    async fn store(State(stored): State<Stored>, body: Bytes) {
        if let Ok(mut slot) = stored.write() {
            *slot = body;
        }
    }
    axum::Router::new()
        .route("/_bench/prebuilt", get(serve).post(serve).put(store))
        .route("/_bench/spin/{us}", get(spin).post(spin))
        .with_state(Stored::default())
}

/// Client settings that reach an emulator at `addr` with the demo credentials.
pub fn emulator_client_settings(addr: SocketAddr) -> ClientSettings {
    let mut settings = ClientSettings::new(emulator::DEMO_REGION, &AwsSettings::default());
    settings.endpoint_url = Some(format!("http://{addr}"));
    settings.static_credentials = Some(demo_base_credentials());
    settings
}

/// The demo's base credentials: the emulator's static key, from which every
/// account's role is assumed.
pub fn demo_base_credentials() -> Credentials {
    Credentials::new(
        emulator::DEMO_ACCESS_KEY_ID,
        emulator::DEMO_SECRET_ACCESS_KEY,
        None,
        None,
        "demo",
    )
}

/// The demo's API key with every scope in every account. Public: it is
/// printed in the banner and the README, and opens only the emulator.
pub const DEMO_ADMIN_KEY: &str = "demo-admin";
/// The demo's API key that reads account `platform` only.
pub const DEMO_PLATFORM_KEY: &str = "demo-platform";

/// The demo's callers, as a settings file would hold them: only the SHA-256
/// of each key (`printf %s demo-admin | sha256sum`), no anonymous access.
pub fn demo_auth() -> AuthSettings {
    AuthSettings {
        api_keys: vec![
            ApiKeySettings {
                name: DEMO_ADMIN_KEY.to_owned(),
                sha256: vec![
                    "cce7a2cf1ae045989cfc914fb95a41526f167a838b3c7d33745143614abace7c".to_owned(),
                ],
                grants: vec![GrantSettings {
                    accounts: vec!["*".to_owned()],
                    scopes: vec![Scope::SessionsRead, Scope::SessionsTerminate],
                }],
                expires: None,
            },
            ApiKeySettings {
                name: DEMO_PLATFORM_KEY.to_owned(),
                sha256: vec![
                    "8d435f09e126a41d198aefdc7801e6f1baa0db0e5d64304fa7ada9636a5a7d22".to_owned(),
                ],
                grants: vec![GrantSettings {
                    accounts: vec!["platform".to_owned()],
                    scopes: vec![Scope::SessionsRead],
                }],
                expires: None,
            },
        ],
        ..AuthSettings::default()
    }
}

/// Settings equivalent to a settings file for the demo accounts: three
/// accounts, each through its own role (one with an external id), in two
/// regions, all at the emulator's address; the callers of [`demo_auth`],
/// and GraphiQL sending `Authorization: Bearer demo-admin`.
pub fn demo_settings(listen: SocketAddr, emulator_addr: SocketAddr) -> Settings {
    let aliases = ["platform", "payments", "sandbox"];
    let accounts = emulator::DEMO_ACCOUNT_IDS
        .iter()
        .zip(aliases)
        .map(|(id, alias)| AccountSettings {
            id: (*id).to_owned(),
            alias: alias.to_owned(),
            role_arn: Some(emulator::demo_role_arn(id)),
            external_id: (*id == emulator::DEMO_EXTERNAL_ID_ACCOUNT)
                .then(|| Secret::new(emulator::DEMO_EXTERNAL_ID.to_owned())),
            session_name: Some("ssm-session-gateway-demo".to_owned()),
            session_duration_secs: None,
            terminate_role_arn: None,
            profile: None,
            regions: Vec::new(),
        })
        .collect();
    Settings {
        listen,
        // One process, one key: cursors need not outlive the demo.
        cursor_key: Some(Secret::new(random_key())),
        aws: AwsSettings {
            region: Some(emulator::DEMO_REGION.to_owned()),
            endpoint_url: Some(format!("http://{emulator_addr}")),
            ..AwsSettings::default()
        },
        default_regions: vec!["us-east-1".to_owned(), "eu-west-1".to_owned()],
        accounts,
        auth: demo_auth(),
        http: HttpSettings {
            graphiql_default_headers: vec![(
                "Authorization".to_owned(),
                format!("Bearer {DEMO_ADMIN_KEY}"),
            )],
            ..HttpSettings::default()
        },
        // The demo's sessions are the emulator's: ending them harms nobody.
        live: LiveSettings {
            terminate_enabled: true,
            ..LiveSettings::default()
        },
        ..Settings::default()
    }
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    options: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let emulator = Emulator::new(options.emulator);
    let emulator_listener = TcpListener::bind(options.emulator_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the emulator",
                options.emulator_listen
            )
        })?;
    let emulator_addr = emulator_listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = emulator
            .serve(emulator_listener, std::future::pending())
            .await
        {
            tracing::error!(error = %e, "the emulator stopped");
        }
    });

    let mut settings = demo_settings(options.listen, emulator_addr);
    settings.admin_listen = options.admin_listen;
    // No load balancer to tell: on Ctrl-C or SIGTERM, stop accepting at once
    // (requests in flight still finish).
    settings.shutdown_delay_secs = 0;
    if options.bench_routes {
        // The benchmark drives thousands of requests a second, and opens
        // thousands of sockets, as one caller: it measures the gateway, not
        // the per-caller limits.
        settings.rate_limits.enabled = false;
        settings.live.max_connections_per_caller = settings.live.max_connections;
    }
    let mut app =
        Application::build(&settings, BaseCredentials::Static(demo_base_credentials())).await?;
    if options.bench_routes {
        app = app.merge(bench_routes());
    }
    let addr = app.local_addr();
    let admin_line = app
        .admin_addr()
        .map(|a| format!("  Admin:     http://{a} (/livez, /readyz, /metrics)\n"))
        .unwrap_or_default();
    println!(
        "\nssm-session-gateway demo\n\
         \n  GraphiQL:  http://{addr}/graphql\n  Subscriptions (graphql-transport-ws):  ws://{addr}/graphql\n{admin_line}  Emulator:  http://{emulator_addr} \
         (base key {key} / {secret}, account {account}; roles per account, see README)\n\
         \nAccounts: platform (111122223333), payments (444455556666), sandbox (777788889999),\n\
         each read in us-east-1 and eu-west-1 through its own assumed role.\n\
         \nAPI keys (send Authorization: Bearer <key>; GraphiQL sends demo-admin):\n\
         \n  {admin}     every account, sessions:read and sessions:terminate\n  \
         {platform}  account platform only, sessions:read\n\
         \nTry:\n\n  {{\n    sessions(state: HISTORY, first: 5) {{\n      edges {{ cursor node {{ sessionId account {{ alias }} region target owner status startDate }} }}\n      pageInfo {{ hasNextPage endCursor }}\n    }}\n  }}\n\
         \nthen pass pageInfo.endCursor as `after` for the next page. Ctrl-C stops.\n",
        account = emulator::DEMO_ACCOUNT_ID,
        admin = DEMO_ADMIN_KEY,
        platform = DEMO_PLATFORM_KEY,
        key = emulator::DEMO_ACCESS_KEY_ID,
        secret = emulator::DEMO_SECRET_ACCESS_KEY,
    );
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

fn random_key() -> String {
    use rand::Rng as _;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(
        router: &axum::Router,
        method: Method,
        uri: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn spin_serves_the_stored_bytes_after_its_time() {
        let router = bench_routes();
        call(&router, Method::PUT, "/_bench/prebuilt", "{\"data\":1}").await;
        let started = std::time::Instant::now();
        let answer = call(&router, Method::POST, "/_bench/spin/20000", "{}").await;
        assert_eq!(answer, (StatusCode::OK, "{\"data\":1}".to_owned()));
        assert!(started.elapsed() >= std::time::Duration::from_millis(20));
        assert_eq!(
            call(&router, Method::GET, "/_bench/prebuilt", "").await,
            (StatusCode::OK, "{\"data\":1}".to_owned())
        );
        let too_long = format!("/_bench/spin/{}", MAX_SPIN_US + 1);
        assert_eq!(
            call(&router, Method::GET, &too_long, "").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&router, Method::GET, "/_bench/spin/soon", "").await.0,
            StatusCode::BAD_REQUEST
        );
    }
}
