//! Multi-account credential routing: which (account, region) sources exist,
//! and the SSM client that reads each one.
//!
//! Every configured account gets its own credentials: an STS AssumeRole
//! provider (role ARN, external id, session name, duration) built once at
//! start-up, or a named profile, or the base credentials themselves. Every
//! (account, region) gets one SSM client, built once and reused. All clients
//! come from one base `SdkConfig`, so they share its HTTP client and its
//! identity cache: an account's assumed-role credentials are fetched about
//! once per lifetime and shared by that account's regions, never per request.
//!
//! Invariants:
//! - A source is found only by its exact (account id, region) key, and each
//!   key's client carries only that account's credentials: there is no path
//!   by which one account's request is signed with another's.
//! - Sources are listed in one canonical order (account id, then region), so
//!   a cursor's list of positions lines up with the same sources on every
//!   replica.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::cache::{CachedSource, PageCache};
use crate::instruments::{Metrics, SourceLabels};
use crate::model::{AccountId, InvalidInput, Region, SourceKey};
use crate::settings::{AccountSettings, Settings};
use crate::shared::Shared;
use crate::upstream::attempts::AttemptObserver;
use crate::upstream::credentials::{CredentialState, CredentialStatus, TrackedCredentials};
use crate::upstream::limit::{LimitedHttpClient, UpstreamLimiter};
use crate::upstream::nodes::NodeSource;
use crate::upstream::sdk::{ClientSettings, SdkSessionSource, sdk_config};
use crate::upstream::{SessionSource, SessionTerminator};

/// Default role session name, shown in the account's CloudTrail.
pub const DEFAULT_SESSION_NAME: &str = "ssm-session-gateway";

/// A configured account, as callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub alias: String,
    /// The regions read in this account, in configuration order.
    pub regions: Vec<Region>,
}

/// A source picked for a request, with what resolvers need to label results.
#[derive(Clone)]
pub struct Source {
    pub key: SourceKey,
    pub account: Arc<Account>,
    pub reader: Arc<dyn SessionSource>,
}

/// An STS AssumeRole provider for `role_arn`, with the account's external
/// id, session name and duration.
async fn assume_role(
    role_arn: &str,
    configured: &AccountSettings,
    base: &aws_config::SdkConfig,
) -> SharedCredentialsProvider {
    let mut builder = AssumeRoleProvider::builder(role_arn.to_owned())
        .session_name(
            configured
                .session_name
                .clone()
                .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned()),
        )
        .configure(base);
    if let Some(external_id) = &configured.external_id {
        builder = builder.external_id(external_id.expose().clone());
    }
    if let Some(secs) = configured.session_duration_secs {
        builder = builder.session_length(Duration::from_secs(u64::from(secs)));
    }
    SharedCredentialsProvider::new(builder.build().await)
}

/// Why a request's choice of accounts and regions names no sources.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutingError {
    /// An id or alias no configured account has.
    #[error("no configured account has the id or alias {0:?}")]
    AccountNotFound(String),
    /// A bad region name, or one none of the chosen accounts is read in.
    #[error("{0}")]
    BadRegion(String),
}

/// The configured accounts and a session source for each (account, region).
pub struct AccountRegistry {
    accounts: Vec<Arc<Account>>,
    sources: BTreeMap<SourceKey, Arc<dyn SessionSource>>,
    /// Managed-node lookups per (account, region), with the same credentials
    /// as that key's session source.
    node_sources: BTreeMap<SourceKey, Arc<dyn NodeSource>>,
    /// `TerminateSession` per (account, region): the account's
    /// `terminate_role_arn` when set, else its reading credentials.
    terminators: BTreeMap<SourceKey, Arc<dyn SessionTerminator>>,
    /// The page cache every source built from settings reads through, so a
    /// write can drop what it made stale.
    page_cache: Option<Arc<PageCache>>,
    /// What the replicas share (`[redis]`), for the node cache and the
    /// live hub above.
    shared: Option<Shared>,
    /// How each account's credentials last resolved (registries built from
    /// settings; empty for ready-made sources).
    credentials: Vec<(Arc<Account>, Arc<CredentialStatus>)>,
    /// Every account's sources in canonical order, built on first use:
    /// what most requests select (no `accounts`, no `regions`), filtered
    /// by what the caller may read.
    every: std::sync::OnceLock<Vec<Source>>,
}

impl AccountRegistry {
    /// A registry over ready-made sources (tests, and single-source set-ups).
    /// Each account must list the regions it has sources for.
    pub fn new(
        accounts: Vec<Account>,
        sources: impl IntoIterator<Item = (SourceKey, Arc<dyn SessionSource>)>,
    ) -> Self {
        Self {
            accounts: accounts.into_iter().map(Arc::new).collect(),
            sources: sources.into_iter().collect(),
            node_sources: BTreeMap::new(),
            terminators: BTreeMap::new(),
            page_cache: None,
            shared: None,
            credentials: Vec::new(),
            every: std::sync::OnceLock::new(),
        }
    }

    /// Adds session terminators (a registry without them terminates nothing).
    pub fn with_terminators(
        mut self,
        terminators: impl IntoIterator<Item = (SourceKey, Arc<dyn SessionTerminator>)>,
    ) -> Self {
        self.terminators.extend(terminators);
        self
    }

    /// Adds managed-node sources (a registry without them finds no nodes).
    pub fn with_node_sources(
        mut self,
        node_sources: impl IntoIterator<Item = (SourceKey, Arc<dyn NodeSource>)>,
    ) -> Self {
        self.node_sources.extend(node_sources);
        self
    }

    /// Builds credentials and clients for every configured account and
    /// region, each behind the page cache (`settings.cache`).
    /// `base_credentials` replaces the default chain (the demo's static key).
    pub async fn from_settings(
        settings: &Settings,
        base_credentials: Option<Credentials>,
    ) -> anyhow::Result<Self> {
        Self::build(settings, base_credentials, &Metrics::new(), None).await
    }

    /// [`AccountRegistry::from_settings`], recording upstream calls, SDK
    /// attempts, credential resolutions and page-cache events in `metrics`,
    /// with the page cache's second level and the upstream limiters shared
    /// by the replicas through `shared` (`[redis]`).
    pub(crate) async fn build(
        settings: &Settings,
        base_credentials: Option<Credentials>,
        metrics: &Metrics,
        shared: Option<Shared>,
    ) -> anyhow::Result<Self> {
        if settings.accounts.is_empty() {
            anyhow::bail!("no accounts configured: add [[accounts]] to the settings file");
        }
        let defaults: Vec<String> = settings.default_regions.clone();
        let base_region = settings
            .aws
            .region
            .clone()
            .or_else(|| defaults.first().cloned())
            .or_else(|| {
                settings
                    .accounts
                    .iter()
                    .find_map(|a| a.regions.first().cloned())
            })
            .context("no region configured: set aws.region or default_regions")?;
        let mut client_settings = ClientSettings::new(base_region, &settings.aws);
        client_settings.static_credentials = base_credentials;
        let base = sdk_config(&client_settings).await;
        let http = base
            .http_client()
            .context("the base SDK config has no HTTP client")?;
        // One page cache for all sources: one memory bound, keys per source.
        let page_cache =
            Arc::new(PageCache::new(&settings.cache, metrics.clone()).with_shared(shared.clone()));
        let mut statuses = Vec::new();

        let mut accounts = Vec::new();
        let mut sources: Vec<(SourceKey, Arc<dyn SessionSource>)> = Vec::new();
        let mut node_sources: Vec<(SourceKey, Arc<dyn NodeSource>)> = Vec::new();
        let mut terminators: Vec<(SourceKey, Arc<dyn SessionTerminator>)> = Vec::new();
        for configured in &settings.accounts {
            let id =
                AccountId::parse(&configured.id).map_err(|e| anyhow::anyhow!("accounts: {e}"))?;
            let credentials: Option<SharedCredentialsProvider> =
                match (&configured.role_arn, &configured.profile) {
                    (Some(role_arn), _) => Some(assume_role(role_arn, configured, &base).await),
                    (None, Some(profile)) => Some(SharedCredentialsProvider::new(
                        ProfileFileCredentialsProvider::builder()
                            .profile_name(profile)
                            .build(),
                    )),
                    // The base credentials, wrapped per account below like
                    // the others (so each account reports its own status).
                    (None, None) => base.credentials_provider(),
                };
            let status = Arc::new(CredentialStatus::default());
            let credentials = credentials.map(|inner| {
                SharedCredentialsProvider::new(TrackedCredentials::new(
                    inner,
                    id.as_str(),
                    status.clone(),
                    metrics.clone(),
                ))
            });
            let regions = configured
                .effective_regions(&defaults)
                .iter()
                .map(|r| Region::parse(r))
                .collect::<Result<Vec<_>, InvalidInput>>()
                .map_err(|e| anyhow::anyhow!("accounts ({}): {e}", configured.id))?;
            let terminate_credentials = match &configured.terminate_role_arn {
                Some(role_arn) => Some(assume_role(role_arn, configured, &base).await),
                None => None,
            };
            // One bucket per (account, region), shared by every client of
            // that source: every attempt, retries included, waits its turn.
            let client_for = |region: &Region,
                              credentials: Option<&SharedCredentialsProvider>,
                              limiter: &Arc<UpstreamLimiter>| {
                let mut config = aws_sdk_ssm::config::Builder::from(&base)
                    .region(aws_config::Region::new(region.to_string()))
                    .http_client(LimitedHttpClient::new(http.clone(), limiter.clone()))
                    .interceptor(AttemptObserver::new(
                        id.as_str(),
                        region.as_str(),
                        metrics.clone(),
                    ));
                if let Some(credentials) = credentials {
                    // The same provider (one identity-cache partition) for
                    // all of the account's regions: one STS call serves them.
                    // (`set_` keeps it as is; `credentials_provider()` would
                    // wrap it anew, giving each client its own partition.)
                    config.set_credentials_provider(Some(credentials.clone()));
                }
                aws_sdk_ssm::Client::from_conf(config.build())
            };
            for region in &regions {
                let key = SourceKey {
                    account: id.clone(),
                    region: region.clone(),
                };
                let limiter = UpstreamLimiter::observed(
                    settings.aws.max_calls_per_second,
                    Duration::from_millis(settings.aws.max_call_wait_ms),
                    metrics.clone(),
                    SourceLabels::new(id.as_str(), region.as_str()),
                )
                .shared_by(shared.as_ref(), &key);
                let client = client_for(region, credentials.as_ref(), &limiter);
                // Terminations are never cached; with a terminate role they
                // get a client of their own, so the reader stays read-only.
                let terminator = match &terminate_credentials {
                    Some(c) => {
                        SdkSessionSource::new(client_for(region, Some(c), &limiter), &id, region)
                    }
                    None => SdkSessionSource::new(client.clone(), &id, region),
                };
                terminators.push((key.clone(), Arc::new(terminator)));
                // Nodes are read with the same client (same credentials).
                node_sources.push((
                    key.clone(),
                    Arc::new(
                        SdkSessionSource::new(client.clone(), &id, region)
                            .with_metrics(metrics.clone()),
                    ),
                ));
                sources.push((
                    key.clone(),
                    Arc::new(CachedSource::new(
                        key.clone(),
                        Arc::new(
                            SdkSessionSource::new(client, &id, region)
                                .with_metrics(metrics.clone()),
                        ),
                        page_cache.clone(),
                    )),
                ));
            }
            let account = Account {
                id,
                alias: configured.alias.clone(),
                regions,
            };
            statuses.push((account.clone(), status));
            accounts.push(account);
        }
        let mut registry = Self::new(accounts, sources)
            .with_node_sources(node_sources)
            .with_terminators(terminators);
        registry.page_cache = Some(page_cache);
        registry.shared = shared;
        registry.credentials = statuses
            .into_iter()
            .map(|(account, status)| (Arc::new(account), status))
            .collect();
        Ok(registry)
    }

    /// What the replicas share, when `[redis]` is configured.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// The terminator of one (account, region).
    pub fn terminator(&self, key: &SourceKey) -> Option<Arc<dyn SessionTerminator>> {
        self.terminators.get(key).cloned()
    }

    /// Drops the cached pages of `key` (after a write there), in every
    /// replica when they share Redis.
    pub async fn invalidate(&self, key: &SourceKey) {
        if let Some(cache) = &self.page_cache {
            cache.invalidate_everywhere(key).await;
        }
    }

    /// Drops this replica's cached pages of `key` (another replica wrote).
    pub fn invalidate_here(&self, key: &SourceKey) {
        if let Some(cache) = &self.page_cache {
            cache.invalidate_source(key);
        }
    }

    /// Each account built from settings, with how its credentials last
    /// resolved (for `/readyz?verbose`).
    pub fn credential_report(&self) -> Vec<(Arc<Account>, CredentialState)> {
        self.credentials
            .iter()
            .map(|(account, status)| (account.clone(), status.get()))
            .collect()
    }

    /// The configured accounts, in configuration order.
    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.accounts
    }

    /// The account with this id or alias.
    pub fn account(&self, id_or_alias: &str) -> Option<&Arc<Account>> {
        self.accounts
            .iter()
            .find(|a| a.id.as_str() == id_or_alias || a.alias == id_or_alias)
    }

    /// The source of one (account, region).
    pub fn source(&self, account: &Arc<Account>, region: &Region) -> Option<Source> {
        let key = SourceKey {
            account: account.id.clone(),
            region: region.clone(),
        };
        let reader = self.sources.get(&key)?.clone();
        Some(Source {
            key,
            account: account.clone(),
            reader,
        })
    }

    /// The managed-node source of one (account, region).
    pub fn node_source(&self, key: &SourceKey) -> Option<Arc<dyn NodeSource>> {
        self.node_sources.get(key).cloned()
    }

    /// The account with this id or alias, when `visible` lets the caller
    /// see it; otherwise `None`, exactly as for an account not configured.
    pub fn visible_account(
        &self,
        id_or_alias: &str,
        visible: impl Fn(&Account) -> bool,
    ) -> Option<&Arc<Account>> {
        self.account(id_or_alias).filter(|a| visible(a))
    }

    /// The sources a request names, in canonical order: the given accounts
    /// (ids or aliases; all visible ones when `None`) in the given regions
    /// (all of each account's when `None`). `visible` is the caller's view:
    /// an account it rejects is left out of the default and, when named, is
    /// `AccountNotFound` exactly like an account not configured, so a caller
    /// cannot tell the two apart.
    pub fn select(
        &self,
        accounts: Option<&[String]>,
        regions: Option<&[String]>,
        visible: impl Fn(&Account) -> bool,
    ) -> Result<Vec<Source>, RoutingError> {
        if accounts.is_none() && regions.is_none() {
            let every = self
                .every
                .get_or_init(|| self.pick(self.accounts.iter(), None));
            return Ok(every
                .iter()
                .filter(|s| visible(&s.account))
                .cloned()
                .collect());
        }
        let chosen: Vec<&Arc<Account>> = match accounts {
            None => self.accounts.iter().filter(|a| visible(a)).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    self.visible_account(n, &visible)
                        .ok_or_else(|| RoutingError::AccountNotFound(n.clone()))
                })
                .collect::<Result<_, _>>()?,
        };
        let wanted: Option<Vec<Region>> = regions
            .map(|rs| {
                rs.iter()
                    .map(|r| Region::parse(r).map_err(|e| RoutingError::BadRegion(e.to_string())))
                    .collect::<Result<_, _>>()
            })
            .transpose()?;
        let picked = self.pick(chosen.into_iter(), wanted.as_deref());
        if let Some(wanted) = &wanted {
            for region in wanted {
                if !picked.iter().any(|s| &s.key.region == region) {
                    return Err(RoutingError::BadRegion(format!(
                        "none of the chosen accounts is read in region {region}"
                    )));
                }
            }
        }
        Ok(picked)
    }

    /// The sources of `accounts` in `wanted` regions (all of each
    /// account's when `None`), once each, in canonical order.
    fn pick<'a>(
        &self,
        accounts: impl Iterator<Item = &'a Arc<Account>>,
        wanted: Option<&[Region]>,
    ) -> Vec<Source> {
        let mut picked = BTreeMap::new();
        for account in accounts {
            for region in &account.regions {
                if wanted.is_none_or(|w| w.contains(region))
                    && let Some(source) = self.source(account, region)
                {
                    picked.insert(source.key.clone(), source);
                }
            }
        }
        picked.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::upstream::{Page, PageRequest, UpstreamError};

    struct Empty;

    #[async_trait]
    impl SessionSource for Empty {
        async fn describe_sessions(&self, _: &PageRequest) -> Result<Page, UpstreamError> {
            Ok(Page::default())
        }
    }

    fn keys(sources: Vec<Source>) -> Vec<String> {
        sources
            .into_iter()
            .map(|s| format!("{}/{}", s.key.account, s.key.region))
            .collect()
    }

    #[test]
    fn selecting_everything_is_every_visible_source_in_canonical_order() {
        let account = |id: &str, alias: &str, regions: &[&str]| Account {
            id: AccountId::parse(id).unwrap(),
            alias: alias.into(),
            regions: regions.iter().map(|r| Region::parse(r).unwrap()).collect(),
        };
        let accounts = vec![
            account("333333333333", "c", &["us-east-1", "eu-west-1"]),
            account("111111111111", "a", &["eu-west-1"]),
            account("222222222222", "b", &["us-east-1", "eu-west-1"]),
        ];
        let sources: Vec<(SourceKey, Arc<dyn SessionSource>)> = accounts
            .iter()
            .flat_map(|a| {
                a.regions.iter().map(|r| {
                    let key = SourceKey {
                        account: a.id.clone(),
                        region: r.clone(),
                    };
                    (key, Arc::new(Empty) as Arc<dyn SessionSource>)
                })
            })
            .collect();
        let registry = AccountRegistry::new(accounts, sources);
        let all = |_: &Account| true;
        let everything = keys(registry.select(None, None, all).unwrap());
        assert_eq!(
            everything,
            [
                "111111111111/eu-west-1",
                "222222222222/eu-west-1",
                "222222222222/us-east-1",
                "333333333333/eu-west-1",
                "333333333333/us-east-1",
            ]
        );
        // The same as naming every account.
        let named = ["c", "a", "b"].map(String::from);
        assert_eq!(
            keys(registry.select(Some(&named), None, all).unwrap()),
            everything
        );
        // Built once, then filtered by what each caller may read.
        let not_b = |a: &Account| a.alias != "b";
        assert_eq!(
            keys(registry.select(None, None, not_b).unwrap()),
            [
                "111111111111/eu-west-1",
                "333333333333/eu-west-1",
                "333333333333/us-east-1",
            ]
        );
        assert!(registry.select(None, None, |_| false).unwrap().is_empty());
    }
}
