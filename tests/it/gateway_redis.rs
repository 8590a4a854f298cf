//! Several replicas sharing one Redis (`[redis]`): the emulator, one
//! `redis-server` of the test's own, and three gateways built by
//! `Application::build` from the same settings, sharing nothing but Redis
//! and the emulator. Upstream calls are counted by the emulator.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use ssm_emulator::EmulatorConfig;
use ssm_session_gateway::settings::{RedisSettings, Settings};

use crate::support::redis::RedisServer;
use crate::support::ws::WsClient;
use crate::support::{TestApp, anchor, error_codes, replica_of, spawn_replicas};

const WAIT: Duration = Duration::from_secs(10);

/// Redis settings for tests: quick to come back after an outage, and
/// patient with a machine that runs the whole suite at once (a command
/// slower than the timeout takes the replica off Redis, which would blur
/// the counts; the fault tests shorten it).
fn redis(url: &str) -> RedisSettings {
    let mut redis = RedisSettings::new(url);
    redis.command_timeout_ms = 2000;
    redis.max_backoff_ms = 200;
    // Generous: a loaded CI machine must not turn a wait into a second call.
    redis.lease_wait_ms = 10_000;
    redis
}

/// 120 History sessions of one source, in pages of 50: three upstream pages.
const HISTORY: &str = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: HISTORY, first: 120, pageSize: 50) { nodes { sessionId } } }"#;

fn ok(answer: &Value) -> bool {
    error_codes(answer).is_empty() && answer["data"].is_object()
}

/// The calls one query costs SSM on a gateway of its own (no Redis, cold).
async fn calls_alone(first: &TestApp, settings: &Settings, query: &str) -> u64 {
    let mut alone = settings.clone();
    alone.redis = None;
    let app = replica_of(first, &alone).await;
    let before = first.describe_calls();
    assert!(ok(&app.graphql(query, json!({})).await));
    first.describe_calls() - before
}

/// `n` copies of `query`, at once, spread over `apps` in turn.
async fn spread(apps: &[TestApp], n: usize, query: &str) -> Vec<Value> {
    join_all((0..n).map(|i| apps[i % apps.len()].graphql(query, json!({})))).await
}

fn settings_with(
    redis_url: &str,
    adjust: impl FnOnce(&mut Settings),
) -> impl FnOnce(&mut Settings) {
    let redis = redis(redis_url);
    move |s: &mut Settings| {
        s.redis = Some(redis);
        // Responses are cached per replica: off, so that every query reaches
        // the page cache, which is what is shared.
        s.cache.responses = false;
        adjust(s);
    }
}

/// `n` replicas over the demo emulator sharing `server`, with settings
/// [`settings_with`] makes.
async fn sharing(
    server: &RedisServer,
    n: usize,
    adjust: impl FnOnce(&mut Settings),
) -> Vec<TestApp> {
    spawn_replicas(
        EmulatorConfig::demo(anchor()),
        n,
        settings_with(&server.url(), adjust),
    )
    .await
}

#[tokio::test]
async fn three_replicas_make_one_upstream_call_per_page() {
    let server = RedisServer::start();
    let mut settings = None;
    let apps = sharing(&server, 3, |s| settings = Some(s.clone())).await;
    let settings = settings.unwrap();
    let pages = calls_alone(&apps[0], &settings, HISTORY).await;
    assert_eq!(pages, 3, "120 sessions in pages of 50");

    let before = apps[0].describe_calls();
    let answers = spread(&apps, 300, HISTORY).await;
    assert!(
        answers.iter().all(ok),
        "{:?}",
        answers.iter().find(|a| !ok(a))
    );
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "every replica answers the same"
    );
    assert_eq!(
        apps[0].describe_calls() - before,
        pages,
        "300 cold queries over three replicas: one call per page"
    );
    // Warm: none at all, on any replica.
    let answers = spread(&apps, 30, HISTORY).await;
    assert!(answers.iter().all(ok));
    assert_eq!(apps[0].describe_calls() - before, pages);
}

#[tokio::test]
async fn a_node_one_replica_looked_up_is_not_looked_up_by_another() {
    let server = RedisServer::start();
    let apps = sharing(&server, 3, |_| {}).await;
    let query = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: ACTIVE, first: 30) { nodes { sessionId managedNode { instanceId computerName } } } }"#;
    let first = apps[0].graphql(query, json!({})).await;
    assert!(ok(&first), "{first}");
    let lookups = apps[0].emulator.calls("DescribeInstanceInformation");
    assert!(lookups >= 1);
    for app in &apps[1..] {
        let answer = app.graphql(query, json!({})).await;
        assert_eq!(answer, first);
    }
    assert_eq!(
        apps[0].emulator.calls("DescribeInstanceInformation"),
        lookups,
        "the other replicas found the nodes in Redis"
    );
}

#[tokio::test]
async fn the_upstream_limit_holds_across_replicas_in_total() {
    let server = RedisServer::start();
    let apps = sharing(&server, 3, |s| {
        s.aws.max_calls_per_second = 5;
        s.aws.max_call_wait_ms = 0;
        // Nothing cached: every query is a call, or a local refusal.
        s.cache.active_ttl_secs = 0;
        s.cache.history_ttl_secs = 0;
        s.cache.failure_backoff_ms = 0;
    })
    .await;
    let query = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: ACTIVE, first: 5) { nodes { sessionId } } }"#;
    let started = Instant::now();
    let before = apps[0].describe_calls();
    let answers = spread(&apps, 45, query).await;
    let elapsed = started.elapsed();
    let calls = apps[0].describe_calls() - before;
    let throttled = answers
        .iter()
        .filter(|a| error_codes(a).iter().any(|c| c == "UPSTREAM_THROTTLED"))
        .count();
    // A burst of 5, then 5 a second, for all three replicas together (per
    // replica it would be 15 at once).
    let bound = 5 + (5.0 * elapsed.as_secs_f64()).ceil() as u64;
    assert!(
        calls <= bound,
        "{calls} calls in {elapsed:?}, bound {bound}"
    );
    assert!(calls >= 5, "{calls}");
    assert_eq!(
        calls as usize + throttled,
        45,
        "every other query was refused locally"
    );
}

const EVENTS: &str = r#"subscription { sessionEvents(accounts: ["platform"], regions: ["us-east-1"], includeExisting: true) { kind session { id sessionId } } }"#;

#[tokio::test]
async fn one_poller_for_all_replicas_and_a_termination_reaches_every_one() {
    let server = RedisServer::start();
    let apps = sharing(&server, 3, |s| {
        s.cache.active_ttl_secs = 1;
        s.live.min_poll_interval_ms = 200;
        s.live.terminate_enabled = true;
    })
    .await;
    let mut clients = Vec::new();
    for app in &apps {
        let mut client = WsClient::ready(&app.ws_url()).await;
        client.subscribe("1", EVENTS, json!({})).await;
        clients.push(client);
    }
    // Every replica's subscriber gets the 36 existing sessions.
    let mut existing = Vec::new();
    for client in &mut clients {
        let mut seen = Vec::new();
        while seen.len() < 36 {
            seen.extend(client.events_until(WAIT, |_| true).await);
        }
        existing.push(seen);
    }
    // Polled by one replica: one read of the list (one page) per second
    // (the Active TTL) for the three, not three.
    let before = apps[0].describe_calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polled = apps[0].describe_calls() - before;
    assert!(
        (2..=5).contains(&polled),
        "{polled} calls in 3 s for three replicas' subscribers"
    );

    // Terminated through replica B: a subscriber of replica A sees it end.
    let victim = existing[0][0]["session"].clone();
    let answer = apps[1]
        .graphql(
            "mutation($id: ID!) { terminateSession(input: { id: $id }) { sessionId } }",
            json!({ "id": victim["id"] }),
        )
        .await;
    assert!(ok(&answer), "{answer}");
    let started = Instant::now();
    for client in &mut clients {
        let events = client
            .events_until(WAIT, |e| {
                e["kind"] == "ENDED" && e["session"]["sessionId"] == victim["sessionId"]
            })
            .await;
        assert!(!events.is_empty());
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // And no replica serves the list it had before: the pages were invalidated everywhere.
    let active = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: ACTIVE) { nodes { sessionId } } }"#;
    for app in &apps {
        let list = app.graphql(active, json!({})).await;
        let ids: Vec<&Value> = list["data"]["sessions"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| &n["sessionId"])
            .collect();
        assert!(!ids.contains(&&victim["sessionId"]), "{list}");
    }
}

#[tokio::test]
async fn polling_clients_over_three_replicas_cost_what_one_replica_costs() {
    let server = RedisServer::start();
    let query = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: ACTIVE, first: 50) { nodes { sessionId status } } }"#;
    let mut counts = Vec::new();
    for (replicas, shared) in [(1, true), (3, true), (3, false)] {
        let url = server.url();
        let apps = spawn_replicas(EmulatorConfig::demo(anchor()), replicas, |s| {
            if shared {
                s.redis = Some(redis(&url));
                s.redis.as_mut().unwrap().key_prefix = format!("poll{replicas}:");
            }
            s.cache.active_ttl_secs = 1;
            s.cache.responses = false;
        })
        .await;
        // 30 clients, each polling every 200 ms for 3 s, spread over the replicas.
        let started = Instant::now();
        let clients = (0..30).map(|i| {
            let app = &apps[i % apps.len()];
            async move {
                let mut failed = 0;
                while started.elapsed() < Duration::from_secs(3) {
                    if !ok(&app.graphql(query, json!({})).await) {
                        failed += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                failed
            }
        });
        let failed: usize = join_all(clients).await.into_iter().sum();
        assert_eq!(failed, 0);
        counts.push(apps[0].describe_calls());
    }
    let [one, three_shared, three_alone] = counts[..] else {
        unreachable!()
    };
    assert!(
        three_shared <= one + 1,
        "one replica {one}, three with Redis {three_shared}"
    );
    assert!(
        three_alone >= 2 * one,
        "three without Redis {three_alone}, one {one}"
    );
}

/// How Redis misbehaves in a fault test.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Killed, then started again (empty).
    Stopped,
    /// Frozen (SIGSTOP): every command times out; then thawed.
    Hanging,
}

/// A load of 30 clients over three replicas for 4 s, Redis failing from
/// the 1st to the 3rd second: no query fails, none waits long, and once
/// Redis is back, cold queries over the three cost one call per page again.
async fn load_through(fault: Fault) {
    let mut server = RedisServer::start();
    let apps = sharing(&server, 3, |s| {
        s.cache.active_ttl_secs = 1;
        if let Some(redis) = &mut s.redis {
            redis.command_timeout_ms = 200;
        }
        s.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let query = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: ACTIVE, first: 50) { nodes { sessionId } } }"#;
    let started = Instant::now();
    let load = {
        let apps = &apps;
        join_all((0..30).map(move |i| async move {
            let app = &apps[i % apps.len()];
            let (mut answered, mut failed, mut slowest) = (0, 0, Duration::ZERO);
            while started.elapsed() < Duration::from_secs(4) {
                let sent = Instant::now();
                if ok(&app.graphql(query, json!({})).await) {
                    answered += 1;
                } else {
                    failed += 1;
                }
                slowest = slowest.max(sent.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (answered, failed, slowest)
        }))
    };
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match fault {
            Fault::Stopped => server.stop(),
            Fault::Hanging => server.pause(),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        match fault {
            Fault::Stopped => server.restart(),
            Fault::Hanging => server.resume(),
        }
    };
    let (results, ()) = tokio::join!(load, chaos);
    let answered: usize = results.iter().map(|r| r.0).sum();
    let failed: usize = results.iter().map(|r| r.1).sum();
    let slowest = results.iter().map(|r| r.2).max().unwrap();
    assert_eq!(failed, 0, "{fault:?}: {answered} answered");
    assert!(answered > 300, "{fault:?}: {answered}");
    // Commands are bounded (200 ms here); a query makes a few in a row.
    assert!(
        slowest < Duration::from_millis(1500),
        "{fault:?}: {slowest:?}"
    );

    // The outage is on /metrics: Redis operations done without.
    let metrics = String::from_utf8(apps[0].admin("/metrics").await.body.to_vec()).unwrap();
    let fallbacks: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("gateway_redis_fallbacks_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(fallbacks > 0.0, "{fault:?}: {metrics}");

    // Back: once every replica has reconnected (each on its own probe;
    // a replica may also time out once more while Redis works off what
    // queued up), cold queries spread over the three cost one call per
    // page again. Each try reads pages no one has read yet.
    let mut tries = Vec::new();
    for page_size in [50, 40, 30, 24] {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cold = format!(
            r#"{{ sessions(accounts: ["payments"], regions: ["us-east-1"], state: HISTORY, first: 120, pageSize: {page_size}) {{ nodes {{ sessionId }} }} }}"#
        );
        let before = apps[0].describe_calls();
        let answers = spread(&apps, 90, &cold).await;
        assert!(answers.iter().all(ok));
        let calls = apps[0].describe_calls() - before;
        tries.push(calls);
        if calls == 120_u64.div_ceil(page_size) {
            for app in &apps {
                let metrics = String::from_utf8(app.admin("/metrics").await.body.to_vec()).unwrap();
                assert!(
                    metrics.lines().any(|l| l == "gateway_redis_up 1"),
                    "{metrics}"
                );
                let ready = app.admin("/readyz?verbose").await;
                assert_eq!(ready.status, 200);
                assert_eq!(ready.json()["checks"]["redis"]["state"], "up");
            }
            return;
        }
    }
    panic!("{fault:?}: sharing did not resume: calls per try {tries:?}");
}

#[tokio::test]
async fn redis_stopping_mid_load_fails_no_query_and_sharing_resumes() {
    load_through(Fault::Stopped).await;
}

#[tokio::test]
async fn redis_hanging_mid_load_fails_no_query_and_sharing_resumes() {
    load_through(Fault::Hanging).await;
}

#[tokio::test]
async fn after_a_termination_no_replica_answers_from_what_it_had_cached() {
    let server = RedisServer::start();
    let apps = sharing(&server, 3, |s| {
        // Long enough that only an invalidation explains a fresh answer.
        s.cache.active_ttl_secs = 30;
        s.cache.responses = true;
        s.live.terminate_enabled = true;
    })
    .await;
    let active = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: ACTIVE) { nodes { id sessionId } } }"#;
    let ids = |list: &Value| -> Vec<Value> {
        list["data"]["sessions"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["sessionId"].clone())
            .collect()
    };
    let mut lists = Vec::new();
    for app in &apps {
        // Twice: the second answer comes from the response cache.
        app.graphql(active, json!({})).await;
        let answer = app.graphql_answer(active, json!({}), &[]).await;
        assert_eq!(answer.cache_status(), "HIT");
        lists.push(answer.json());
    }
    let victim = lists[0]["data"]["sessions"]["nodes"][0].clone();
    let answer = apps[1]
        .graphql(
            "mutation($id: ID!) { terminateSession(input: { id: $id }) { sessionId } }",
            json!({ "id": victim["id"] }),
        )
        .await;
    assert!(ok(&answer), "{answer}");
    // The invalidation travels over pub/sub: allow it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for app in &apps {
        let list = app.graphql(active, json!({})).await;
        assert!(!ids(&list).contains(&victim["sessionId"]), "{list}");
        assert_eq!(ids(&list).len(), ids(&lists[0]).len() - 1);
    }
}

#[tokio::test]
async fn a_stored_value_that_does_not_decode_is_a_miss() {
    let server = RedisServer::start();
    let apps = sharing(&server, 2, |_| {}).await;
    assert!(ok(&apps[0].graphql(HISTORY, json!({})).await));
    let before = apps[0].describe_calls();
    // Every stored page replaced by garbage (another version, say).
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*page:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in &keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(b"\x01\xff\xff\xff garbage".as_slice())
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let answer = apps[1].graphql(HISTORY, json!({})).await;
    assert!(ok(&answer), "{answer}");
    assert_eq!(apps[0].describe_calls() - before, 3, "read again from SSM");
    // The first page is stored again in the current version. (The later
    // pages are read with the new first page's NextTokens, which SSM mints
    // anew on every call: other keys.)
    let mut rewritten = 0;
    for key in &keys {
        let value: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        if !value.ends_with(b"garbage") {
            assert_eq!(value.first(), Some(&1), "version 1");
            rewritten += 1;
        }
    }
    assert_eq!(rewritten, 1);
}

/// The store itself, against a real Redis: leases, the shared bucket, and
/// what an outage looks like to its callers.
mod store {
    use std::sync::Arc;

    use ssm_session_gateway::shared::{RedisStore, Shared, Store, StoreState, Unavailable};

    use super::*;

    async fn store(server: &RedisServer) -> RedisStore {
        let mut settings = redis(&server.url());
        settings.command_timeout_ms = 200;
        RedisStore::connect(&settings).await.unwrap()
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_and_a_dead_holders_lease_expires() {
        let server = RedisServer::start();
        let store = store(&server).await;
        let ttl = Duration::from_millis(300);
        assert!(store.lease("l", "a", ttl).await.unwrap());
        assert!(!store.lease("l", "b", ttl).await.unwrap(), "held by a");
        assert!(store.lease("l", "a", ttl).await.unwrap(), "a renews");
        store.release("l", "b").await.unwrap();
        assert!(
            !store.lease("l", "b", ttl).await.unwrap(),
            "b cannot release a's"
        );
        // a dies without releasing: its lease expires.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.lease("l", "b", ttl).await.unwrap());
        store.release("l", "b").await.unwrap();
        assert!(store.lease("l", "c", ttl).await.unwrap(), "released");
    }

    #[tokio::test]
    async fn the_bucket_is_one_for_every_client() {
        let server = RedisServer::start();
        let (a, b) = (store(&server).await, store(&server).await);
        let mut allowed = 0;
        for i in 0..10 {
            let s = if i % 2 == 0 { &a } else { &b };
            if s.rate("bucket", 5, 5).await.unwrap().is_none() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5, "a burst of 5 for both together");
        let wait = a.rate("bucket", 5, 5).await.unwrap().expect("must wait");
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        tokio::time::sleep(wait).await;
        assert_eq!(b.rate("bucket", 5, 5).await.unwrap(), None);
    }

    #[tokio::test]
    async fn while_redis_is_down_calls_fail_fast_and_it_comes_back() {
        let mut server = RedisServer::start();
        let store = store(&server).await;
        store.set("k", b"v", Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.state(), StoreState::Up);
        server.stop();
        // The first call notices (within the command timeout) ...
        let started = Instant::now();
        assert_eq!(store.get_many(&["k".to_owned()]).await, Err(Unavailable));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(store.state(), StoreState::Down);
        // ... and the next ones fail at once, without the network.
        let started = Instant::now();
        for _ in 0..100 {
            assert_eq!(store.incr("n").await, Err(Unavailable));
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
        server.restart();
        let deadline = Instant::now() + WAIT;
        while store.state() == StoreState::Down {
            assert!(Instant::now() < deadline, "never came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            store.incr("n").await,
            Ok(1),
            "an empty Redis (no persistence)"
        );
        // Messages flow again on the re-made subscriber connection.
        let shared = Shared::new(Arc::new(store.clone()), &redis(&server.url()));
        let mut messages = shared.store().messages();
        let deadline = Instant::now() + WAIT;
        loop {
            store.publish("ssm-gateway:test", b"hello").await.unwrap();
            if let Ok(Ok(m)) =
                tokio::time::timeout(Duration::from_millis(100), messages.recv()).await
            {
                assert_eq!(m.channel, "ssm-gateway:test");
                assert_eq!(&*m.payload, b"hello");
                break;
            }
            assert!(Instant::now() < deadline, "no message after the restart");
        }
    }
}

#[tokio::test]
async fn a_dead_lease_holder_delays_others_only_until_its_lease_expires() {
    let server = RedisServer::start();
    let apps = sharing(&server, 2, |_| {}).await;
    let query = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: HISTORY, first: 10, pageSize: 50) { nodes { sessionId } } }"#;
    assert!(ok(&apps[0].graphql(query, json!({})).await));
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*page:*")
        .query_async(&mut c)
        .await
        .unwrap();
    let [page_key] = &keys[..] else {
        panic!("{keys:?}")
    };
    // The page is gone, and a replica that took its lease died mid-call.
    let lease_key = page_key.replacen("page:", "lease:", 1);
    let _: () = redis::cmd("DEL")
        .arg(page_key)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&lease_key)
        .arg("a-dead-replica")
        .arg("PX")
        .arg(600)
        .query_async(&mut c)
        .await
        .unwrap();
    let before = apps[0].describe_calls();
    let started = Instant::now();
    assert!(ok(&apps[1].graphql(query, json!({})).await));
    let waited = started.elapsed();
    assert_eq!(apps[0].describe_calls() - before, 1);
    // It waited for the lease to expire (600 ms), not for lease_wait_ms (2 s).
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_callers_rate_limit_holds_across_replicas_in_total() {
    let server = RedisServer::start();
    let apps = sharing(&server, 3, |s| {
        s.rate_limits.requests_per_second = 1;
        s.rate_limits.burst = 5;
    })
    .await;
    let query = "{ accounts { id } }";
    let started = Instant::now();
    let answers = join_all(
        (0..15).map(|i| apps[i % 3].graphql_as(Some(crate::support::ADMIN), query, json!({}))),
    )
    .await;
    let elapsed = started.elapsed();
    let passed = answers.iter().filter(|a| a.status == 200).count();
    let refused = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!(passed + refused, 15);
    // A burst of 5 for the caller on all three replicas together (per
    // replica it would be 15), plus 1 a second.
    let bound = 5 + elapsed.as_secs() as usize + 1;
    assert!(
        (5..=bound).contains(&passed),
        "{passed} passed in {elapsed:?}"
    );
    let refusal = answers.iter().find(|a| a.status == 429).unwrap();
    assert!(refusal.headers.contains_key("retry-after"));
}

/// POSTs `body` as JSON; the parsed answer.
async fn post_json(app: &TestApp, body: Value) -> Value {
    app.request(
        hyper::Method::POST,
        "/graphql",
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
    .json()
}

/// A document registered through one replica (automatic persisted queries)
/// is found by the others by its hash alone; a document in Redis that is
/// not its key's SHA-256 is never run.
#[tokio::test]
async fn a_persisted_query_registered_on_one_replica_runs_on_all() {
    use sha2::{Digest as _, Sha256};
    let server = RedisServer::start();
    let apps = sharing(&server, 3, |_| {}).await;
    let hex = |doc: &str| -> String {
        Sha256::digest(doc.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let doc = "{ accounts { alias } }";
    let hash_only =
        json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hex(doc) } } });
    let first = post_json(&apps[1], hash_only.clone()).await;
    assert_eq!(
        error_codes(&first),
        ["PERSISTED_QUERY_NOT_FOUND"],
        "{first}"
    );
    let mut with_doc = hash_only.clone();
    with_doc["query"] = json!(doc);
    let registered = post_json(&apps[0], with_doc).await;
    assert!(ok(&registered), "{registered}");
    for app in &apps[1..] {
        let answer = post_json(app, hash_only.clone()).await;
        assert_eq!(answer["data"], registered["data"], "{answer}");
    }

    // Redis holds a document under a hash that is not its own: a miss.
    let other = "{ accounts { id } }";
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let status = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port,
            "SET",
            &format!("ssm-gateway:apq:{}", hex(other)),
            doc,
        ])
        .output()
        .expect("redis-cli runs");
    assert!(status.status.success(), "{status:?}");
    let poisoned =
        json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hex(other) } } });
    let answer = post_json(&apps[2], poisoned).await;
    assert_eq!(
        error_codes(&answer),
        ["PERSISTED_QUERY_NOT_FOUND"],
        "{answer}"
    );
}
