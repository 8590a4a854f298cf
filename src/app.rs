//! The composition root: settings in, a running gateway out.
//!
//! [`Application::build`] is the one place a gateway is assembled: its
//! metrics, the account registry (credentials and one SSM client per source,
//! each behind the page cache), the authenticator (API keys, JWT; its
//! background JWKS refresh and SIGHUP reload live as long as the
//! application), the node loader, the live hub (subscription pollers), the
//! sessions service, the schema, the response cache, the WebSocket tracker,
//! the HTTP router and the admin listener. `serve`, `demo` and the tests all
//! go through it; they differ only in settings (endpoint, TTLs, ports) and in
//! the base credentials.
//!
//! Each application owns its metrics recorder (see `instruments`): two
//! applications in one process, as in the tests, never count into each
//! other's `/metrics`.
//!
//! # Shutdown
//!
//! [`Application::run_until_stopped`] serves until its `shutdown` future
//! resolves (SIGTERM or Ctrl-C in `main`), then: `/readyz` answers 503 at
//! once; new connections are still accepted for `shutdown_delay_secs` (load
//! balancers notice the 503 and stop sending); then the port closes, every
//! WebSocket is closed with 1001 (going away; clients reconnect elsewhere)
//! within `live.shutdown_grace_ms`, and HTTP requests in flight get
//! `shutdown_grace_secs` to finish; then it returns `Ok`, and the process
//! exits 0. The admin listener serves throughout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_credential_types::Credentials;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::accounts::AccountRegistry;
use crate::admin::{self, AdminState, Phase, StatusCheck};
use crate::auth::{AuthTasks, Authenticator, JwtVerifier};
use crate::cursor::{CursorCodec, MIN_KEY_LEN};
use crate::graphiql::{Graphiql, GraphiqlOptions};
use crate::graphql::{self, LiveOptions};
use crate::http::{self, ResponseCache, Sockets};
use crate::instruments::Metrics;
use crate::live::LiveHub;
use crate::nodes::NodeLoader;
use crate::sessions::SessionService;
use crate::settings::Settings;
use crate::shared::Shared;

/// Where the gateway's own AWS credentials come from; every account's role
/// is assumed from them.
#[derive(Clone, Debug, Default)]
pub enum BaseCredentials {
    /// The SDK's default chain: environment, profile, web identity (IRSA),
    /// container and instance metadata.
    #[default]
    DefaultChain,
    /// Fixed keys (the demo's emulator key).
    Static(Credentials),
}

/// A gateway bound to its ports, not yet serving (its admin listener, if
/// any, already answers: `/readyz` says `starting`).
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// JWKS refresh and keys-file reload on SIGHUP; dropping stops them.
    _auth_tasks: AuthTasks,
    /// Open WebSockets: closed with 1001 on shutdown.
    sockets: Sockets,
    /// How long they get to close (`live.shutdown_grace_ms`).
    ws_close_grace: Duration,
    /// The admin listener's server, when `admin_listen` is set.
    admin: Option<AdminServer>,
    admin_state: AdminState,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
    /// How long a client may take to send a request's head, and how many
    /// connections are served at once.
    connection_limits: http::ConnectionLimits,
}

/// The admin listener, serving in a task of its own until told to stop
/// (or until the [`Application`] is dropped).
struct AdminServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    async fn start(addr: SocketAddr, state: AdminState) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (admin_listen)"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, admin::router(state))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { addr, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the admin listener failed"),
            Err(e) => tracing::error!(error = %e, "the admin listener panicked"),
            Ok(Ok(())) => {}
        }
    }
}

impl Application {
    /// Builds the whole gateway from `settings` and binds `settings.listen`
    /// and `settings.admin_listen` (port 0 picks a free port; see
    /// [`Application::local_addr`] and [`Application::admin_addr`]). The
    /// admin listener is bound first and answers while the rest is built.
    /// Fails when the keys file cannot be read or is invalid
    /// ([`AuthSetupError`]).
    pub async fn build(settings: &Settings, credentials: BaseCredentials) -> anyhow::Result<Self> {
        let base = match credentials {
            BaseCredentials::DefaultChain => None,
            BaseCredentials::Static(credentials) => Some(credentials),
        };
        let state = AdminState::default();
        let admin = match settings.admin_listen {
            Some(addr) => Some(AdminServer::start(addr, state.clone()).await?),
            None => None,
        };
        let shared = match &settings.redis {
            Some(redis) => Some(Shared::connect(redis, &state.metrics).await?),
            None => None,
        };
        let registry = AccountRegistry::build(settings, base, &state.metrics, shared).await?;
        Self::assemble(settings, Arc::new(registry), state, admin).await
    }

    /// [`Application::build`] over a registry made elsewhere: sources
    /// scripted by a test. Everything above the sources is built as
    /// `build` builds it.
    pub async fn with_registry(
        settings: &Settings,
        registry: Arc<AccountRegistry>,
    ) -> anyhow::Result<Self> {
        let state = AdminState::default();
        let admin = match settings.admin_listen {
            Some(addr) => Some(AdminServer::start(addr, state.clone()).await?),
            None => None,
        };
        Self::assemble(settings, registry, state, admin).await
    }

    async fn assemble(
        settings: &Settings,
        registry: Arc<AccountRegistry>,
        admin_state: AdminState,
        admin: Option<AdminServer>,
    ) -> anyhow::Result<Self> {
        let auth = authenticator(settings)?;
        let auth_tasks = auth.start()?;
        if let Some(jwt) = auth.jwt() {
            admin_state.add_check(Arc::new(JwksCheck(jwt.clone())));
        }
        if let Some(shared) = registry.shared() {
            admin_state.add_check(Arc::new(RedisCheck(shared.clone())));
        }
        let (router, sockets) = assemble(
            settings,
            registry.clone(),
            auth,
            admin_state.metrics.clone(),
        )?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let _ = admin_state.registry.set(registry);
        Ok(Self {
            listener,
            router,
            admin,
            admin_state,
            _auth_tasks: auth_tasks,
            sockets,
            ws_close_grace: Duration::from_millis(settings.live.shutdown_grace_ms),
            shutdown_delay: Duration::from_secs(settings.shutdown_delay_secs),
            shutdown_grace: Duration::from_secs(settings.shutdown_grace_secs),
            connection_limits: http::ConnectionLimits {
                header_read_timeout: Duration::from_secs(settings.http.header_read_timeout_secs),
                max_connections: settings.http.max_connections,
            },
        })
    }

    /// Adds a dependency's status to `/readyz?verbose` (the JWKS fetcher's
    /// is added by `build` when JWT authentication is configured).
    pub fn with_status_check(self, check: Arc<dyn StatusCheck>) -> Self {
        self.admin_state.add_check(check);
        self
    }

    /// Adds routes beside the gateway's (the demo's benchmark baseline).
    pub fn merge(mut self, routes: Router) -> Self {
        self.router = self.router.merge(routes);
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// Serves until `shutdown` resolves, then drains as the module doc says:
    /// `/readyz` 503 at once, new connections for `shutdown_delay_secs`,
    /// then WebSockets closed with 1001 and requests in flight given
    /// `shutdown_grace_secs`. (axum's graceful shutdown waits for HTTP
    /// requests only: an upgraded connection has left it, hence the
    /// separate close of the WebSockets.)
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let metrics = self.admin_state.metrics.clone();
        // Histogram samples are drained into buckets at each scrape; this
        // bounds them when nobody scrapes.
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });

        let health = self.admin_state.health.clone();
        let (delay, grace) = (self.shutdown_delay, self.shutdown_grace);
        let (closed, grace_starts) = oneshot::channel::<()>();
        let (stopping, stopped) = oneshot::channel::<()>();
        let sockets = self.sockets.clone();
        let ws_grace = self.ws_close_grace;
        let closer = tokio::spawn(async move {
            if stopped.await.is_ok() && !sockets.close_all(ws_grace).await {
                tracing::warn!(
                    open = sockets.open(),
                    "WebSockets still open after live.shutdown_grace_ms"
                );
            }
        });
        let stop_accepting = async move {
            shutdown.await;
            health.set(Phase::Draining);
            tracing::info!(
                delay_secs = delay.as_secs(),
                "draining: /readyz answers 503; still accepting connections for shutdown_delay_secs"
            );
            tokio::time::sleep(delay).await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "no longer accepting connections; requests in flight have shutdown_grace_secs"
            );
            let _ = closed.send(());
            let _ = stopping.send(());
        };
        let server = http::serve(
            self.listener,
            self.router,
            self.connection_limits,
            self.admin_state.metrics.clone(),
            stop_accepting,
        );
        self.admin_state.health.set(Phase::Ready);
        let result = tokio::select! {
            result = server => result,
            () = async {
                match grace_starts.await {
                    Ok(()) => tokio::time::sleep(grace).await,
                    Err(_) => std::future::pending().await,
                }
            } => {
                tracing::warn!("requests still in flight after shutdown_grace_secs; stopping anyway");
                Ok(())
            }
        };
        upkeep.abort();
        let _ = closer.await;
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        result
    }
}

/// The whole HTTP surface over `registry`, without binding a port (for
/// in-process tests through `tower::ServiceExt::oneshot`). Authentication is
/// as configured, but without background work: no JWKS refresh on a timer
/// (an unknown `kid` still fetches) and no reload on SIGHUP.
pub fn router(settings: &Settings, registry: Arc<AccountRegistry>) -> anyhow::Result<Router> {
    let metrics = Metrics::new();
    let (router, _) = assemble(settings, registry, authenticator(settings)?, metrics)?;
    Ok(router)
}

/// The `[auth]` settings cannot be used (an unreadable or invalid
/// `auth.api_keys_file`, say): a usage error, like invalid settings, and
/// `serve` exits 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("auth settings: {0:#}")]
pub struct AuthSetupError(anyhow::Error);

/// The authenticator `settings.auth` describes.
fn authenticator(settings: &Settings) -> Result<Arc<Authenticator>, AuthSetupError> {
    Authenticator::from_settings(settings)
        .map(Arc::new)
        .map_err(AuthSetupError)
}

/// Redis's state, for `/readyz?verbose`. Never a reason to be unready:
/// without Redis the replica serves on its own.
struct RedisCheck(Shared);

impl StatusCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn status(&self) -> serde_json::Value {
        let up = self.0.store().state() == crate::shared::StoreState::Up;
        serde_json::json!({ "ok": up, "state": if up { "up" } else { "down" } })
    }
}

/// The JWKS fetcher's state, for `/readyz?verbose`.
struct JwksCheck(Arc<JwtVerifier>);

impl StatusCheck for JwksCheck {
    fn name(&self) -> &'static str {
        "jwks"
    }

    fn status(&self) -> serde_json::Value {
        self.0.status()
    }
}

fn assemble(
    settings: &Settings,
    registry: Arc<AccountRegistry>,
    auth: Arc<Authenticator>,
    metrics: Metrics,
) -> anyhow::Result<(Router, Sockets)> {
    let shared = registry.shared().cloned();
    let nodes = NodeLoader::new(registry.clone(), &settings.cache, metrics.clone());
    // Pollers read once per Active TTL (through the page cache, so they
    // share pages with HTTP readers), and no more often than the floor.
    let poll_interval = Duration::from_secs(settings.cache.active_ttl_secs)
        .max(Duration::from_millis(settings.live.min_poll_interval_ms));
    let hub = Arc::new(LiveHub::new(
        registry.clone(),
        poll_interval,
        settings.limits.default_page_size,
    ));
    let service = Arc::new(SessionService::new(
        registry,
        Arc::new(cursor_codec(settings)?),
        settings.limits.clone(),
    ));
    let options = LiveOptions {
        terminate_enabled: settings.live.terminate_enabled,
    };
    let schema = graphql::schema(
        service,
        nodes,
        hub,
        options,
        &settings.http,
        &settings.limits,
        metrics.clone(),
    );
    let sockets = Sockets::new(&settings.live);
    let state = http::HttpState::new(http::Shared {
        schema,
        responses: ResponseCache::new(&settings.cache).map(|cache| {
            let cache = Arc::new(cache);
            if let Some(shared) = &shared {
                cache.follow_invalidations(shared);
            }
            cache
        }),
        persisted: {
            let persisted =
                http::PersistedQueries::new(&settings.persisted_queries, shared.as_ref())?;
            let every = settings.persisted_queries.safelist_reload_secs;
            persisted.watch_safelist(
                (every > 0).then(|| Duration::from_secs(every)),
                metrics.clone(),
            )?;
            Arc::new(persisted)
        },
        limits: http::RequestLimits::new(&settings.http, &settings.limits),
        rates: Arc::new(http::CallerLimits::new(&settings.rate_limits).shared_by(shared.clone())),
        auth,
        graphiql: Arc::new(Graphiql::new(
            http::GRAPHQL_PATH,
            &GraphiqlOptions {
                default_headers: settings
                    .http
                    .graphiql_default_headers
                    .iter()
                    .cloned()
                    .collect(),
                subscription_endpoint: Some(http::GRAPHQL_PATH.to_owned()),
            },
        )),
        sockets: sockets.clone(),
        live: settings.live.clone(),
        metrics,
    });
    Ok((http::router(state, &settings.http), sockets))
}

/// The cursor codec from `settings.cursor_key`, or a random key with a warning.
fn cursor_codec(settings: &Settings) -> anyhow::Result<CursorCodec> {
    let codec: anyhow::Result<CursorCodec> = match &settings.cursor_key {
        Some(key) if key.expose().len() < MIN_KEY_LEN => anyhow::bail!(
            "cursor_key must be at least {MIN_KEY_LEN} bytes (got {})",
            key.expose().len()
        ),
        Some(key) => Ok(CursorCodec::new(key.expose().as_bytes())),
        None => {
            tracing::warn!(
                "no cursor_key configured: using a random one; cursors will not survive a \
                 restart nor work across replicas (set SSM_GATEWAY_CURSOR_KEY)"
            );
            Ok(CursorCodec::random())
        }
    };
    Ok(codec?.writing(settings.cursor_version))
}
