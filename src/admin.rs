//! The admin listener: `/livez`, `/readyz` and `/metrics`, on a port of its
//! own (`admin_listen`), so probes and scrapes never share the public
//! port's limits and routes, and the public port exposes none of this.
//!
//! - `/livez`: 200 while the process runs.
//! - `/readyz`: 200 while serving; 503 while starting (from the first
//!   moment of `Application::build`, while credentials and clients are
//!   built, until it serves) and while draining (from SIGTERM on). `?verbose` adds each
//!   account's credential status and every [`StatusCheck`] (JWKS, once
//!   JWT authentication exists), as JSON; neither changes the status code:
//!   one account whose role cannot be assumed must not take the whole
//!   gateway out of rotation (its sources fail alone, see `paging`).
//! - `/metrics`: the application's metrics in the Prometheus text format.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::accounts::AccountRegistry;
use crate::instruments::Metrics;
use crate::upstream::credentials::CredentialState;

/// Where the application is in its life, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Built, not serving yet.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Shutting down: finishing what is in flight.
    Draining = 2,
}

/// The application's phase, shared by the server (which moves it) and
/// `/readyz` (which reads it).
#[derive(Debug)]
pub struct Health {
    phase: AtomicU8,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Starting as u8),
        }
    }
}

impl Health {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Moves to `phase`; draining is final.
    pub fn set(&self, phase: Phase) {
        let _ = self
            .phase
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                (now != Phase::Draining as u8).then_some(phase as u8)
            });
    }
}

/// A dependency's health for `/readyz?verbose` (the JWKS fetcher, say).
/// Reported, never fatal: see the module doc.
pub trait StatusCheck: Send + Sync {
    /// A short stable name, e.g. `jwks`.
    fn name(&self) -> &'static str;
    /// The current status as JSON, e.g. `{"ok": true, "keys": 3}`.
    fn status(&self) -> serde_json::Value;
}

/// What the admin routes read. The listener serves from the start of
/// `Application::build`, before the registry exists: it is filled in once
/// built, and so are the status checks added later.
#[derive(Clone, Default)]
pub struct AdminState {
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub registry: Arc<OnceLock<Arc<AccountRegistry>>>,
    pub checks: Arc<RwLock<Vec<Arc<dyn StatusCheck>>>>,
}

impl AdminState {
    /// Adds a check to `/readyz?verbose`.
    pub fn add_check(&self, check: Arc<dyn StatusCheck>) {
        self.checks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(check);
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn livez() -> &'static str {
    "ok\n"
}

#[derive(serde::Deserialize)]
struct ReadyParams {
    verbose: Option<String>,
}

async fn readyz(State(state): State<AdminState>, Query(params): Query<ReadyParams>) -> Response {
    let phase = state.health.phase();
    let (status, word) = match phase {
        Phase::Ready => (StatusCode::OK, "ready"),
        Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
    };
    if params.verbose.is_none() {
        return (status, format!("{word}\n")).into_response();
    }
    let accounts: Vec<serde_json::Value> = state
        .registry
        .get()
        .map(|r| r.credential_report())
        .unwrap_or_default()
        .into_iter()
        .map(|(account, credentials)| {
            let (credentials, at, error) = match credentials {
                CredentialState::Unknown => ("unknown", None, None),
                CredentialState::Ok { at } => ("ok", Some(at), None),
                CredentialState::Failed { at, kind } => ("failed", Some(at), Some(kind)),
            };
            json!({
                "id": account.id.as_str(),
                "alias": account.alias,
                "credentials": credentials,
                "checkedAt": at.map(rfc3339),
                "error": error,
            })
        })
        .collect();
    let checks: serde_json::Map<String, serde_json::Value> = state
        .checks
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|c| (c.name().to_owned(), c.status()))
        .collect();
    let body = json!({ "status": word, "accounts": accounts, "checks": checks });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_is_final() {
        let health = Health::default();
        assert_eq!(health.phase(), Phase::Starting);
        health.set(Phase::Ready);
        assert_eq!(health.phase(), Phase::Ready);
        health.set(Phase::Draining);
        health.set(Phase::Ready);
        assert_eq!(health.phase(), Phase::Draining);
    }
}
