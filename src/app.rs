//! Assembling the gateway: settings and an upstream in, a running server out.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::accounts::AccountRegistry;
use crate::cursor::CursorCodec;
use crate::graphiql::{Graphiql, GraphiqlOptions};
use crate::graphql::{self, Gateway};
use crate::http;
use crate::nodes::NodeLoader;
use crate::response_cache::ResponseCache;
use crate::settings::Settings;

/// Shortest cursor key accepted: HMAC-SHA256 wants a key as long as its output.
pub const MIN_CURSOR_KEY_LEN: usize = 32;

/// A gateway bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Binds `settings.listen` and builds the gateway over `registry`.
    pub async fn build(
        settings: &Settings,
        registry: Arc<AccountRegistry>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Self::with_listener(listener, settings, registry)
    }

    /// Builds the gateway on a listener the caller bound (tests bind port 0).
    pub fn with_listener(
        listener: TcpListener,
        settings: &Settings,
        registry: Arc<AccountRegistry>,
    ) -> anyhow::Result<Self> {
        let router = router(settings, registry)?;
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
    let gateway = Arc::new(Gateway {
        nodes: NodeLoader::new(registry.clone(), &settings.cache),
        registry,
        cursors: Arc::new(cursor_codec(settings)?),
        limits: settings.limits.clone(),
    });
    let schema = graphql::schema(gateway, &settings.http);
    let state = http::HttpState {
        schema,
        responses: ResponseCache::new(&settings.cache).map(Arc::new),
        graphiql: Arc::new(Graphiql::new(
            http::GRAPHQL_PATH,
            &GraphiqlOptions::default(),
        )),
    };
    Ok(http::router(state, &settings.http))
}

/// The cursor codec from `settings.cursor_key`, or a random key with a warning.
pub fn cursor_codec(settings: &Settings) -> anyhow::Result<CursorCodec> {
    match &settings.cursor_key {
        Some(key) if key.expose().len() < MIN_CURSOR_KEY_LEN => anyhow::bail!(
            "cursor_key must be at least {MIN_CURSOR_KEY_LEN} bytes (got {})",
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
