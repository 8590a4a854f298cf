//! How each account's credentials last resolved: a wrapper around the
//! account's provider (STS AssumeRole, a profile, or the base chain) that
//! notes every outcome, for `/readyz?verbose` and a metric.
//!
//! The SDK's identity cache sits in front of the provider, so the wrapper
//! runs about once per credential lifetime per account, not per request.
//! It keeps the error's kind only, never its message (which may quote
//! configuration).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};

use crate::instruments::Metrics;

/// The last resolution of one account's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialState {
    /// Not asked for yet (no request has needed them).
    Unknown,
    /// Resolved.
    Ok { at: SystemTime },
    /// Failed, with the kind of failure (`CredentialsNotLoaded`,
    /// `ProviderTimedOut`, `InvalidConfiguration`, `ProviderError`, `Unhandled`).
    Failed { at: SystemTime, kind: &'static str },
}

/// Shared by an account's provider wrapper (which writes) and the admin
/// server (which reads).
#[derive(Debug)]
pub struct CredentialStatus {
    state: Mutex<CredentialState>,
}

impl Default for CredentialStatus {
    fn default() -> Self {
        Self {
            state: Mutex::new(CredentialState::Unknown),
        }
    }
}

impl CredentialStatus {
    /// The last outcome.
    pub fn get(&self) -> CredentialState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, state: CredentialState) {
        // A plain value is written under this lock; a panic cannot tear it.
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }
}

fn kind(e: &CredentialsError) -> &'static str {
    match e {
        CredentialsError::CredentialsNotLoaded(_) => "CredentialsNotLoaded",
        CredentialsError::ProviderTimedOut(_) => "ProviderTimedOut",
        CredentialsError::InvalidConfiguration(_) => "InvalidConfiguration",
        CredentialsError::ProviderError(_) => "ProviderError",
        CredentialsError::Unhandled(_) => "Unhandled",
        _ => "Other",
    }
}

/// An account's credentials provider that records each outcome.
#[derive(Debug)]
pub struct TrackedCredentials {
    inner: SharedCredentialsProvider,
    account: String,
    status: Arc<CredentialStatus>,
    metrics: Metrics,
}

impl TrackedCredentials {
    /// Wraps `inner`; outcomes go to `status` and to `metrics`.
    pub fn new(
        inner: SharedCredentialsProvider,
        account: &str,
        status: Arc<CredentialStatus>,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner,
            account: account.to_owned(),
            status,
            metrics,
        }
    }
}

impl ProvideCredentials for TrackedCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            let result = self.inner.provide_credentials().await;
            let at = SystemTime::now();
            match &result {
                Ok(_) => self.status.set(CredentialState::Ok { at }),
                Err(e) => {
                    tracing::warn!(account = %self.account, error = %e, "cannot resolve the account's credentials");
                    self.status
                        .set(CredentialState::Failed { at, kind: kind(e) });
                }
            }
            self.metrics.credentials(&self.account, result.is_ok());
            result
        })
    }
}
