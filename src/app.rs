//! The composition root: settings in, a running gateway out.
//!
//! [`Application::build`] is the one place a gateway is assembled: the
//! account registry (credentials and one SSM client per source, each behind
//! the page cache), the authenticator (API keys, JWT; its background JWKS
//! refresh and SIGHUP reload live as long as the application), the node
//! loader, the live hub (subscription pollers), the sessions service, the
//! schema, the response cache, the WebSocket tracker and the HTTP router.
//! `serve`, `demo` and the tests all go
//! through it; they differ only in settings (endpoint, TTLs) and in the base
//! credentials.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use aws_credential_types::Credentials;
use axum::Router;
use tokio::net::TcpListener;

use crate::accounts::AccountRegistry;
use crate::auth::{AuthTasks, Authenticator};
use crate::cursor::{CursorCodec, MIN_KEY_LEN};
use crate::graphiql::{Graphiql, GraphiqlOptions};
use crate::graphql::{self, LiveOptions};
use crate::http::{self, ResponseCache, Sockets};
use crate::live::LiveHub;
use crate::nodes::NodeLoader;
use crate::sessions::SessionService;
use crate::settings::Settings;

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

/// A gateway bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// JWKS refresh and keys-file reload on SIGHUP; dropping stops them.
    _auth_tasks: AuthTasks,
    /// Open WebSockets: closed with 1001 on shutdown.
    sockets: Sockets,
    /// How long they get to close.
    shutdown_grace: std::time::Duration,
}

impl Application {
    /// Builds the whole gateway from `settings` and binds `settings.listen`
    /// (port 0 picks a free port; see [`Application::local_addr`]). Fails
    /// when the keys file cannot be read or is invalid.
    pub async fn build(settings: &Settings, credentials: BaseCredentials) -> anyhow::Result<Self> {
        let base = match credentials {
            BaseCredentials::DefaultChain => None,
            BaseCredentials::Static(credentials) => Some(credentials),
        };
        let registry = AccountRegistry::from_settings(settings, base).await?;
        Self::with_registry(settings, Arc::new(registry)).await
    }

    /// [`Application::build`] over a registry made elsewhere: sources
    /// scripted by a test. Everything above the sources is built as
    /// `build` builds it.
    pub async fn with_registry(
        settings: &Settings,
        registry: Arc<AccountRegistry>,
    ) -> anyhow::Result<Self> {
        let auth = authenticator(settings)?;
        let auth_tasks = auth.start()?;
        let (router, sockets) = assemble(settings, registry, auth)?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Ok(Self {
            listener,
            router,
            _auth_tasks: auth_tasks,
            sockets,
            shutdown_grace: std::time::Duration::from_millis(settings.live.shutdown_grace_ms),
        })
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

    /// Serves until `shutdown` resolves, then lets in-flight requests
    /// finish and closes every WebSocket with 1001 (going away), waiting up
    /// to `live.shutdown_grace_ms` for them. (axum's graceful shutdown
    /// waits for HTTP requests only: an upgraded connection has left it.)
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sockets = self.sockets.clone();
        let grace = self.shutdown_grace;
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let closer = tokio::spawn(async move {
            if stopped.await.is_ok() && !sockets.close_all(grace).await {
                tracing::warn!(
                    open = sockets.open(),
                    "WebSockets still open after the shutdown grace period"
                );
            }
        });
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stopping.send(());
            })
            .await;
        let _ = closer.await;
        served
    }
}

/// The whole HTTP surface over `registry`, without binding a port (for
/// in-process tests through `tower::ServiceExt::oneshot`). Authentication is
/// as configured, but without background work: no JWKS refresh on a timer
/// (an unknown `kid` still fetches) and no reload on SIGHUP.
pub fn router(settings: &Settings, registry: Arc<AccountRegistry>) -> anyhow::Result<Router> {
    assemble(settings, registry, authenticator(settings)?).map(|(router, _)| router)
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

fn assemble(
    settings: &Settings,
    registry: Arc<AccountRegistry>,
    auth: Arc<Authenticator>,
) -> anyhow::Result<(Router, Sockets)> {
    let nodes = NodeLoader::new(registry.clone(), &settings.cache);
    // Pollers read once per Active TTL (through the page cache, so they
    // share pages with HTTP readers), and no more often than the floor.
    let poll_interval = std::time::Duration::from_secs(settings.cache.active_ttl_secs).max(
        std::time::Duration::from_millis(settings.live.min_poll_interval_ms),
    );
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
    );
    let sockets = Sockets::default();
    let state = http::HttpState {
        schema,
        responses: ResponseCache::new(&settings.cache).map(Arc::new),
        persisted: Arc::new(http::PersistedQueries::new(&settings.persisted_queries)),
        limits: http::RequestLimits::new(&settings.http, &settings.limits),
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
    };
    Ok((http::router(state, &settings.http), sockets))
}

/// The cursor codec from `settings.cursor_key`, or a random key with a warning.
fn cursor_codec(settings: &Settings) -> anyhow::Result<CursorCodec> {
    match &settings.cursor_key {
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
    }
}
