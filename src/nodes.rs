//! Managed nodes behind sessions' targets: batched, routed and cached.
//!
//! `Session.managedNode` asks for one node; a page of sessions asks for
//! dozens at once. [`NodeLoader`] is the async-graphql [`Loader`] that turns
//! the keys one request's resolvers (or concurrent requests) ask for within
//! DataLoader's short delay into as few `DescribeInstanceInformation` calls
//! as possible: one per (account, region) and 50 ids, all sources at once.
//!
//! Invariants:
//! - A key names its (account, region): a node is only ever looked up with,
//!   and cached under, the source its session was read from, so one
//!   account's node never answers for another's session.
//! - Answers are cached for `cache.node_ttl_secs`, absent ones too: a target
//!   that is not a registered node ("no node") costs no call until it
//!   expires. Failures are not cached; the next request asks again.
//! - One source failing fails only its own keys: the batch as a whole never
//!   fails (the loader's error type is [`Infallible`]), each key carries its
//!   own outcome, so that DataLoader does not spread one source's error over
//!   every key of a batch.
//! - With `[redis]`, Redis is a second level under the same TTL: keys the
//!   first level misses are read with one `MGET` per source before any
//!   call, and what a call learns is stored there for the rest of the
//!   replicas. A node from the second level lives in the first only what is
//!   left of its TTL. Redis unavailable: first level, then AWS.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::dataloader::Loader;
use futures_util::future::join_all;
use moka::Expiry;
use moka::future::Cache;
use serde::{Deserialize, Serialize};

use crate::accounts::AccountRegistry;
use crate::instruments::{CacheEvent, CacheKind, Metrics};
use crate::model::{InstanceId, ManagedNode, SourceKey};
use crate::settings::{CacheLayer, CacheSettings};
use crate::shared::{Shared, decode, encode, now_ms};
use crate::upstream::UpstreamError;
use crate::upstream::nodes::{MAX_IDS_PER_CALL, NodeSource};

/// A node to look up: the session's (account, region) and its target.
pub type NodeKey = (SourceKey, InstanceId);

/// An upstream failure, shared by every key of the call that failed.
pub type NodeError = Arc<UpstreamError>;

/// What one key resolves to when the lookup worked: the node, or `None` when
/// the target is not a registered node. (DataLoader reports `None` keys as
/// absent from the map, so `load_one` gives `Ok(None)` for them.)
pub type NodeLookup = Result<Arc<ManagedNode>, NodeError>;

/// What the cache holds per key: a node, or the knowledge that there is none.
type Cached = Option<Arc<ManagedNode>>;

/// Version of a node stored in the second level.
const NODE_VERSION: u8 = 1;

/// A first-level entry and when it expires.
#[derive(Clone)]
struct Entry {
    node: Cached,
    expires: Instant,
}

/// Each entry lives until its own deadline.
struct UntilDeadline;

impl Expiry<NodeKey, Entry> for UntilDeadline {
    fn expire_after_create(&self, _: &NodeKey, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(Instant::now()))
    }
}

/// A node as the second level holds it.
#[derive(Serialize, Deserialize)]
struct StoredNode<N> {
    fetched_at_ms: u64,
    node: Option<N>,
}

/// Loads managed nodes for [`NodeKey`]s; global, shared by all requests
/// (wrap it in a `DataLoader` for the batching).
#[derive(Clone)]
pub struct NodeLoader {
    registry: Arc<AccountRegistry>,
    /// How long a loaded node may be reused (zero: not cached).
    ttl: Duration,
    /// `None` when `node_ttl_secs` is 0: every lookup goes upstream.
    cache: Option<Cache<NodeKey, Entry>>,
    /// The second level (`[redis]`); only with a first level.
    shared: Option<Shared>,
    /// Batch sizes and node-cache hits and misses.
    metrics: Metrics,
}

impl NodeLoader {
    /// How long a node this loader returns may be reused.
    pub fn lifetime(&self) -> Duration {
        self.ttl
    }

    /// A loader over `registry`'s node sources, caching per `settings`.
    pub fn new(registry: Arc<AccountRegistry>, settings: &CacheSettings, metrics: Metrics) -> Self {
        let cache = (settings.node_ttl_secs > 0).then(|| {
            Cache::builder()
                .expire_after(UntilDeadline)
                .max_capacity(settings.bytes_for(CacheLayer::Nodes))
                .weigher(|k: &NodeKey, e: &Entry| weigh(k, &e.node))
                .build()
        });
        let shared = cache.as_ref().and(registry.shared().cloned());
        Self {
            registry,
            ttl: Duration::from_secs(settings.node_ttl_secs),
            cache,
            shared,
            metrics,
        }
    }

    fn node_key(shared: &Shared, source: &SourceKey, id: &InstanceId) -> String {
        shared.source_key("node", source, &format!(":v{NODE_VERSION}:{id}"))
    }

    /// The ids of `source` the second level knows (within their TTL),
    /// copied into the first level; the rest still to load.
    async fn read_second_level(
        &self,
        source: &SourceKey,
        ids: Vec<InstanceId>,
        answers: &mut HashMap<NodeKey, NodeLookup>,
    ) -> Vec<InstanceId> {
        let (Some(shared), Some(cache)) = (&self.shared, &self.cache) else {
            return ids;
        };
        let keys: Vec<String> = ids
            .iter()
            .map(|id| Self::node_key(shared, source, id))
            .collect();
        let Ok(values) = shared.store().get_many(&keys).await else {
            return ids;
        };
        let mut rest = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            let stored = value.and_then(|b| decode::<StoredNode<ManagedNode>>(NODE_VERSION, &b));
            let age = stored
                .as_ref()
                .map(|s| Duration::from_millis(now_ms().saturating_sub(s.fetched_at_ms)));
            match (stored, age) {
                (Some(stored), Some(age)) if age < self.ttl => {
                    let key = (source.clone(), id);
                    let node = stored.node.map(Arc::new);
                    if let Some(node) = &node {
                        answers.insert(key.clone(), Ok(node.clone()));
                    }
                    let expires = Instant::now() + (self.ttl - age);
                    cache.insert(key, Entry { node, expires }).await;
                }
                _ => rest.push(id),
            }
        }
        let misses = rest.len() as u64;
        self.metrics
            .cache(CacheKind::NodeRedis, CacheEvent::Miss, misses);
        self.metrics.cache(
            CacheKind::NodeRedis,
            CacheEvent::Hit,
            keys.len() as u64 - misses,
        );
        rest
    }

    /// Stores what a call learned in the second level.
    async fn write_second_level(&self, source: &SourceKey, learned: &[(InstanceId, Cached)]) {
        let Some(shared) = &self.shared else { return };
        let fetched_at_ms = now_ms();
        let entries: Vec<(String, Vec<u8>)> = learned
            .iter()
            .filter_map(|(id, node)| {
                let stored = StoredNode {
                    fetched_at_ms,
                    node: node.as_deref(),
                };
                Some((
                    Self::node_key(shared, source, id),
                    encode(NODE_VERSION, &stored)?,
                ))
            })
            .collect();
        let _ = shared.store().set_many(&entries, self.ttl).await;
    }

    /// Asks one source for `ids`, [`MAX_IDS_PER_CALL`] at a time, caching
    /// what it learns. After a failed call the source is not asked again in
    /// this batch (it is throttled or down): its remaining ids share the error.
    async fn load_source(
        &self,
        key: SourceKey,
        ids: Vec<InstanceId>,
    ) -> Vec<(NodeKey, Result<Cached, NodeError>)> {
        let Some(source) = self.registry.node_source(&key) else {
            // Sessions come from the registry's sources, so this is a
            // registry built without node sources (tests, single-source
            // set-ups): nothing to look nodes up in.
            tracing::debug!(account = %key.account, region = %key.region, "no node source");
            return ids
                .into_iter()
                .map(|id| ((key.clone(), id), Ok(None)))
                .collect();
        };
        let mut out = Vec::with_capacity(ids.len());
        for (n, chunk) in ids.chunks(MAX_IDS_PER_CALL).enumerate() {
            match lookup(source.as_ref(), chunk).await {
                Ok(mut found) => {
                    let mut learned = Vec::with_capacity(chunk.len());
                    for id in chunk {
                        let node_key = (key.clone(), id.clone());
                        let cached = found.remove(id);
                        if let Some(cache) = &self.cache {
                            let entry = Entry {
                                node: cached.clone(),
                                expires: Instant::now() + self.ttl,
                            };
                            cache.insert(node_key.clone(), entry).await;
                        }
                        learned.push((id.clone(), cached.clone()));
                        out.push((node_key, Ok(cached)));
                    }
                    self.write_second_level(&key, &learned).await;
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for id in &ids[n * MAX_IDS_PER_CALL..] {
                        out.push(((key.clone(), id.clone()), Err(e.clone())));
                    }
                    break;
                }
            }
        }
        out
    }
}

/// One call to `source` for `ids`, as a map by id (nodes for ids not asked
/// for, should the service send any, are dropped).
async fn lookup(
    source: &dyn NodeSource,
    ids: &[InstanceId],
) -> Result<HashMap<InstanceId, Arc<ManagedNode>>, UpstreamError> {
    let nodes = source.describe_instances(ids).await?;
    Ok(nodes
        .into_iter()
        .filter(|n| ids.contains(&n.instance_id))
        .map(|n| (n.instance_id.clone(), Arc::new(n)))
        .collect())
}

impl Loader<NodeKey> for NodeLoader {
    type Value = NodeLookup;
    type Error = Infallible;

    #[tracing::instrument(name = "nodes.load", skip_all, fields(keys = keys.len()))]
    async fn load(&self, keys: &[NodeKey]) -> Result<HashMap<NodeKey, NodeLookup>, Infallible> {
        let mut answers = HashMap::with_capacity(keys.len());
        let mut missing: BTreeMap<SourceKey, BTreeSet<InstanceId>> = BTreeMap::new();
        for key in keys {
            match self.cache.as_ref() {
                Some(cache) => match cache.get(key).await.map(|e| e.node) {
                    Some(Some(node)) => {
                        answers.insert(key.clone(), Ok(node));
                    }
                    Some(None) => {}
                    None => {
                        missing
                            .entry(key.0.clone())
                            .or_default()
                            .insert(key.1.clone());
                    }
                },
                None => {
                    missing
                        .entry(key.0.clone())
                        .or_default()
                        .insert(key.1.clone());
                }
            }
        }
        let misses = missing.values().map(BTreeSet::len).sum::<usize>();
        let hits = keys.len() - misses;
        self.metrics.dataloader_batch(keys.len());
        if self.cache.is_some() {
            self.metrics
                .cache(CacheKind::Node, CacheEvent::Hit, hits as u64);
            self.metrics
                .cache(CacheKind::Node, CacheEvent::Miss, misses as u64);
        }
        tracing::debug!(hits, sources = missing.len(), "node cache");
        let mut still = BTreeMap::new();
        for (source, ids) in missing {
            let rest = self
                .read_second_level(&source, ids.into_iter().collect(), &mut answers)
                .await;
            if !rest.is_empty() {
                still.insert(source, rest);
            }
        }
        let loaded = join_all(
            still
                .into_iter()
                .map(|(source, ids)| self.load_source(source, ids)),
        )
        .await;
        for (key, outcome) in loaded.into_iter().flatten() {
            match outcome {
                Ok(Some(node)) => {
                    answers.insert(key, Ok(node));
                }
                Ok(None) => {}
                Err(e) => {
                    answers.insert(key, Err(e));
                }
            }
        }
        Ok(answers)
    }
}

/// Approximate bytes a cache entry holds: the structs plus their strings.
fn weigh(key: &NodeKey, value: &Cached) -> u32 {
    let (source, id) = key;
    let key_bytes = std::mem::size_of::<NodeKey>()
        + source.account.as_str().len()
        + source.region.as_str().len()
        + id.as_str().len();
    let value_bytes = value.as_ref().map_or(0, |n| {
        std::mem::size_of::<ManagedNode>()
            + n.instance_id.as_str().len()
            + [
                &n.computer_name,
                &n.platform_name,
                &n.ip_address,
                &n.agent_version,
            ]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum::<usize>()
    });
    u32::try_from(key_bytes + value_bytes + std::mem::size_of::<Cached>()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::Barrier;

    use super::*;
    use crate::accounts::Account;
    use crate::model::{AccountId, PingStatus, Region};
    use crate::upstream::UpstreamErrorKind;

    /// Knows some nodes; records every call; fails when told to; may wait
    /// on a barrier inside each call (to prove calls overlap).
    struct FakeNodes {
        nodes: Vec<ManagedNode>,
        fail: Option<UpstreamErrorKind>,
        barrier: Option<Arc<Barrier>>,
        calls: Mutex<Vec<Vec<InstanceId>>>,
    }

    impl FakeNodes {
        fn new(nodes: Vec<ManagedNode>) -> Arc<Self> {
            Arc::new(Self {
                nodes,
                fail: None,
                barrier: None,
                calls: Mutex::new(Vec::new()),
            })
        }

        fn calls(&self) -> Vec<Vec<InstanceId>> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl NodeSource for FakeNodes {
        async fn describe_instances(
            &self,
            ids: &[InstanceId],
        ) -> Result<Vec<ManagedNode>, UpstreamError> {
            self.calls.lock().unwrap().push(ids.to_vec());
            if let Some(barrier) = &self.barrier {
                barrier.wait().await;
            }
            if let Some(kind) = self.fail {
                return Err(UpstreamError::new(kind, anyhow::anyhow!("fake failure")));
            }
            Ok(self
                .nodes
                .iter()
                .filter(|n| ids.contains(&n.instance_id))
                .cloned()
                .collect())
        }
    }

    fn id(n: usize) -> InstanceId {
        InstanceId::parse(&format!("i-{n:017x}")).unwrap()
    }

    fn node(n: usize, name: &str) -> ManagedNode {
        ManagedNode {
            instance_id: id(n),
            computer_name: Some(name.to_owned()),
            platform_type: None,
            platform_name: None,
            ping_status: Some(PingStatus::Online),
            ip_address: None,
            agent_version: None,
            resource_type: None,
            last_ping_date_time: None,
        }
    }

    fn source(account: &str, region: &str) -> SourceKey {
        SourceKey {
            account: AccountId::parse(account).unwrap(),
            region: Region::parse(region).unwrap(),
        }
    }

    fn loader(sources: &[(SourceKey, Arc<FakeNodes>)], ttl_secs: u64) -> NodeLoader {
        let accounts = sources
            .iter()
            .map(|(k, _)| Account {
                id: k.account.clone(),
                alias: k.account.to_string(),
                regions: vec![k.region.clone()],
            })
            .collect();
        let registry = AccountRegistry::new(accounts, []).with_node_sources(
            sources
                .iter()
                .map(|(k, s)| (k.clone(), s.clone() as Arc<dyn NodeSource>)),
        );
        let settings = CacheSettings {
            node_ttl_secs: ttl_secs,
            ..CacheSettings::default()
        };
        NodeLoader::new(Arc::new(registry), &settings, Metrics::new())
    }

    fn name(answers: &HashMap<NodeKey, NodeLookup>, key: &NodeKey) -> Option<String> {
        answers
            .get(key)
            .map(|r| r.as_ref().unwrap().computer_name.clone().unwrap())
    }

    #[tokio::test]
    async fn keys_are_grouped_per_source_and_routed_to_it() {
        let (a, b) = (
            source("111111111111", "eu-west-1"),
            source("222222222222", "eu-west-1"),
        );
        // The same instance id in both accounts: each key gets its own account's node.
        let fa = FakeNodes::new(vec![node(1, "a1"), node(2, "a2")]);
        let fb = FakeNodes::new(vec![node(1, "b1")]);
        let loader = loader(&[(a.clone(), fa.clone()), (b.clone(), fb.clone())], 60);
        let keys = [
            (a.clone(), id(1)),
            (b.clone(), id(1)),
            (a.clone(), id(2)),
            (b.clone(), id(2)),
            (a.clone(), id(3)),
        ];
        let answers = loader.load(&keys).await.unwrap();
        assert_eq!(fa.calls(), vec![vec![id(1), id(2), id(3)]]);
        assert_eq!(fb.calls(), vec![vec![id(1), id(2)]]);
        assert_eq!(name(&answers, &keys[0]).as_deref(), Some("a1"));
        assert_eq!(name(&answers, &keys[1]).as_deref(), Some("b1"));
        assert_eq!(name(&answers, &keys[2]).as_deref(), Some("a2"));
        // Not registered: absent, i.e. `load_one` answers `None`.
        assert!(!answers.contains_key(&keys[3]));
        assert!(!answers.contains_key(&keys[4]));
        assert_eq!(answers.len(), 3);
    }

    #[tokio::test]
    async fn a_source_is_asked_fifty_ids_at_a_time() {
        let a = source("111111111111", "eu-west-1");
        let fa = FakeNodes::new((0..120).map(|n| node(n, "x")).collect());
        let loader = loader(&[(a.clone(), fa.clone())], 60);
        let keys: Vec<NodeKey> = (0..120).map(|n| (a.clone(), id(n))).collect();
        let answers = loader.load(&keys).await.unwrap();
        let sizes: Vec<usize> = fa.calls().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![50, 50, 20]);
        assert_eq!(answers.len(), 120);
    }

    #[tokio::test]
    async fn sources_are_asked_concurrently() {
        // Each call waits until both are in flight: sequential calls would hang.
        let barrier = Arc::new(Barrier::new(2));
        let fake = |name: &str| {
            Arc::new(FakeNodes {
                nodes: vec![node(1, name)],
                fail: None,
                barrier: Some(barrier.clone()),
                calls: Mutex::new(Vec::new()),
            })
        };
        let (a, b) = (
            source("111111111111", "eu-west-1"),
            source("111111111111", "us-east-1"),
        );
        let loader = loader(&[(a.clone(), fake("a")), (b.clone(), fake("b"))], 60);
        let answers = tokio::time::timeout(
            Duration::from_secs(5),
            loader.load(&[(a.clone(), id(1)), (b.clone(), id(1))]),
        )
        .await
        .expect("both sources asked at once")
        .unwrap();
        assert_eq!(answers.len(), 2);
    }

    #[tokio::test]
    async fn nodes_and_their_absence_are_cached() {
        let a = source("111111111111", "eu-west-1");
        let fa = FakeNodes::new(vec![node(1, "a1")]);
        let loader = loader(&[(a.clone(), fa.clone())], 60);
        let keys = [(a.clone(), id(1)), (a.clone(), id(2))];
        let first = loader.load(&keys).await.unwrap();
        let second = loader.load(&keys).await.unwrap();
        assert_eq!(fa.calls().len(), 1, "the second load is served from cache");
        assert_eq!(name(&second, &keys[0]).as_deref(), Some("a1"));
        assert!(!second.contains_key(&keys[1]), "no node, from cache");
        assert_eq!(first.len(), second.len());
        // A new id in the same batch as cached ones: only it goes upstream.
        loader
            .load(&[keys[0].clone(), (a.clone(), id(3))])
            .await
            .unwrap();
        assert_eq!(fa.calls(), vec![vec![id(1), id(2)], vec![id(3)]]);
    }

    #[tokio::test]
    async fn a_ttl_of_zero_caches_nothing() {
        let a = source("111111111111", "eu-west-1");
        let fa = FakeNodes::new(vec![node(1, "a1")]);
        let loader = loader(&[(a.clone(), fa.clone())], 0);
        let keys = [(a.clone(), id(1))];
        loader.load(&keys).await.unwrap();
        loader.load(&keys).await.unwrap();
        assert_eq!(fa.calls().len(), 2);
    }

    #[tokio::test]
    async fn a_failing_source_fails_only_its_own_keys_and_is_not_cached() {
        let (a, b) = (
            source("111111111111", "eu-west-1"),
            source("222222222222", "eu-west-1"),
        );
        let fa = Arc::new(FakeNodes {
            nodes: vec![node(1, "a1")],
            fail: Some(UpstreamErrorKind::Throttled),
            barrier: None,
            calls: Mutex::new(Vec::new()),
        });
        let fb = FakeNodes::new(vec![node(1, "b1")]);
        let loader = loader(&[(a.clone(), fa.clone()), (b.clone(), fb.clone())], 60);
        // 60 ids of the failing source: the second chunk is not even asked.
        let mut keys: Vec<NodeKey> = (0..60).map(|n| (a.clone(), id(n))).collect();
        keys.push((b.clone(), id(1)));
        let answers = loader.load(&keys).await.unwrap();
        assert_eq!(fa.calls().len(), 1);
        for key in &keys[..60] {
            let err = answers[key].as_ref().unwrap_err();
            assert_eq!(err.kind, UpstreamErrorKind::Throttled);
        }
        assert_eq!(name(&answers, &keys[60]).as_deref(), Some("b1"));
        // Failures are not cached: the next load asks again.
        loader.load(&keys[..1]).await.unwrap();
        assert_eq!(fa.calls().len(), 2);
        assert_eq!(fb.calls().len(), 1);
    }

    #[tokio::test]
    async fn a_source_without_a_node_source_has_no_nodes() {
        let loader = loader(&[], 60);
        let key = (source("111111111111", "eu-west-1"), id(1));
        assert!(loader.load(&[key]).await.unwrap().is_empty());
    }

    #[test]
    fn entries_weigh_their_strings() {
        let key = (source("111111111111", "eu-west-1"), id(1));
        let absent = weigh(&key, &None);
        let present = weigh(&key, &Some(Arc::new(node(1, &"x".repeat(1000)))));
        assert!(present > absent + 1000, "{present} vs {absent}");
    }
}
