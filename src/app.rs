//! The composition root: settings in, a running gateway out.
//!
//! [`Application::build`] is the one place a gateway is assembled: the
//! account registry (credentials and one SSM client per source, each behind
//! the page cache), the node loader, the sessions service, the schema, the
//! response cache and the HTTP router. `serve`, `demo` and the tests all go
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
use crate::cursor::{CursorCodec, MIN_KEY_LEN};
use crate::graphql;
use crate::http::{self, ResponseCache};
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
}

impl Application {
    /// Builds the whole gateway from `settings` and binds `settings.listen`
    /// (port 0 picks a free port; see [`Application::local_addr`]).
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
        let router = router(settings, registry)?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Ok(Self { listener, router })
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

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The whole HTTP surface over `registry`, without binding a port (for
/// in-process tests through `tower::ServiceExt::oneshot`).
pub fn router(settings: &Settings, registry: Arc<AccountRegistry>) -> anyhow::Result<Router> {
    let nodes = NodeLoader::new(registry.clone(), &settings.cache);
    let service = Arc::new(SessionService::new(
        registry,
        Arc::new(cursor_codec(settings)?),
        settings.limits.clone(),
    ));
    let schema = graphql::schema(service, nodes, &settings.http, &settings.limits);
    let state = http::HttpState {
        schema,
        responses: ResponseCache::new(&settings.cache).map(Arc::new),
        limits: http::RequestLimits::new(&settings.http, &settings.limits),
    };
    Ok(http::router(state, &settings.http))
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
