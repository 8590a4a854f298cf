//! What polling costs SSM: the page cache and the response cache, counted in
//! upstream calls (never timings).

use std::time::Duration;

use serde_json::json;
use ssm_emulator::{DEMO_ACCOUNT_IDS, EmulatorConfig, Faults};
use ssm_session_gateway::settings::RetryMode;

use crate::support::{ADMIN, PLATFORM, anchor, spawn_multi, spawn_multi_with};

const Q: &str = r#"
query($state: SessionState!, $accounts: [ID!], $regions: [String!], $first: Int) {
  sessions(state: $state, accounts: $accounts, regions: $regions, first: $first) {
    nodes { sessionId account { id } }
    pageInfo { hasNextPage endCursor }
  }
}"#;

#[tokio::test]
async fn two_hundred_identical_cold_queries_cost_one_call_per_page() {
    let mut config = EmulatorConfig::demo(anchor());
    // Long enough that all 200 arrive while the first call is in flight.
    config.latency = Some(Duration::from_millis(200));
    let app = std::sync::Arc::new(spawn_multi(config).await);
    // Credentials first, so the count is of DescribeSessions alone.
    let warm = app
        .graphql(
            Q,
            json!({ "state": "ACTIVE", "accounts": ["platform"], "regions": ["us-east-1"] }),
        )
        .await;
    assert!(warm["errors"].is_null(), "{warm}");
    app.emulator.reset_stats();

    let vars = json!({ "state": "HISTORY", "accounts": ["platform"], "regions": ["us-east-1"], "first": 50 });
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let app = app.clone();
            let vars = vars.clone();
            tokio::spawn(async move { app.graphql(Q, vars).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        let res = task.await.expect("task");
        assert!(res["errors"].is_null(), "{res}");
        bodies.push(res);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "all answers alike");
    assert_eq!(
        bodies[0]["data"]["sessions"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(50)
    );
    // 50 of the source's History fit in one upstream page of 200, and the
    // look-ahead for hasNextPage is answered from that same page.
    assert_eq!(app.emulator.calls("DescribeSessions"), 1);
}

#[tokio::test]
async fn the_same_request_for_two_accounts_never_shares_a_page() {
    let app = spawn_multi(EmulatorConfig::demo(anchor())).await;
    for account in DEMO_ACCOUNT_IDS {
        for _ in 0..3 {
            let res = app
                .graphql(
                    Q,
                    json!({ "state": "HISTORY", "accounts": [account], "regions": ["eu-west-1"] }),
                )
                .await;
            let nodes = res["data"]["sessions"]["nodes"]
                .as_array()
                .expect("nodes")
                .clone();
            assert!(!nodes.is_empty());
            assert!(
                nodes.iter().all(|n| n["account"]["id"] == json!(account)),
                "{res}"
            );
        }
        assert_eq!(
            app.emulator.calls_for("DescribeSessions", account),
            1,
            "{account}"
        );
    }
}

#[tokio::test]
async fn an_expired_ttl_makes_a_new_call() {
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), |s| {
        s.cache.active_ttl_secs = 1
    })
    .await;
    let vars = json!({ "state": "ACTIVE", "accounts": ["sandbox"], "regions": ["us-east-1"] });
    let first = app.graphql_answer(Q, vars.clone(), &[]).await;
    assert_eq!(first.cache_status(), "MISS");
    let second = app.graphql_answer(Q, vars.clone(), &[]).await;
    assert_eq!(second.cache_status(), "HIT");
    assert_eq!(app.describe_calls(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let third = app.graphql_answer(Q, vars, &[]).await;
    assert_eq!(third.cache_status(), "MISS");
    assert_eq!(app.describe_calls(), 2);
}

#[tokio::test]
async fn the_response_cache_never_answers_other_variables_or_another_caller() {
    let app = spawn_multi(EmulatorConfig::demo(anchor())).await;
    let platform = json!({ "state": "HISTORY", "accounts": ["platform"], "first": 3 });
    let payments = json!({ "state": "HISTORY", "accounts": ["payments"], "first": 3 });

    let a = app.graphql_answer(Q, platform.clone(), &[]).await;
    assert_eq!(a.cache_status(), "MISS");
    assert_eq!(
        app.graphql_answer(Q, platform.clone(), &[])
            .await
            .cache_status(),
        "HIT"
    );

    let b = app.graphql_answer(Q, payments, &[]).await;
    assert_eq!(b.cache_status(), "MISS");
    assert_ne!(a.json(), b.json());
    assert!(
        b.json()["data"]["sessions"]["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["account"]["id"] == json!(DEMO_ACCOUNT_IDS[1]))
    );

    // Another principal (the one-account key, which may read `platform`):
    // a miss (served from the page cache, not from the admin's response),
    // then a hit of its own, with the same data.
    let other = [("authorization", PLATFORM)];
    let first = app.graphql_answer(Q, platform.clone(), &other).await;
    assert_eq!(first.cache_status(), "MISS");
    assert_eq!(first.json(), a.json());
    assert_eq!(
        app.graphql_answer(Q, platform.clone(), &other)
            .await
            .cache_status(),
        "HIT"
    );
    // And the admin's entry is still the admin's.
    assert_eq!(
        app.graphql_answer(Q, platform, &[("authorization", ADMIN)])
            .await
            .cache_status(),
        "HIT"
    );
}

/// Someone paging through history sends each cursor once: a page resumed
/// from a cursor is kept from its second request on, a first page at once.
#[tokio::test]
async fn a_resumed_page_is_kept_from_its_second_request() {
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), |s| {
        s.admin_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    const PAGE: &str = r#"
query($after: String) {
  sessions(state: HISTORY, accounts: ["platform"], first: 5, after: $after) {
    nodes { sessionId }
    pageInfo { endCursor }
  }
}"#;
    let first = app.graphql_answer(PAGE, json!({}), &[]).await;
    assert_eq!(first.cache_status(), "MISS");
    assert_eq!(
        app.graphql_answer(PAGE, json!({}), &[])
            .await
            .cache_status(),
        "HIT"
    );
    let after = first.json()["data"]["sessions"]["pageInfo"]["endCursor"].clone();
    assert!(after.is_string(), "{}", first.json());
    let vars = json!({ "after": after });
    let mut seen = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let answer = app.graphql_answer(PAGE, vars.clone(), &[]).await;
        seen.push(answer.cache_status().to_owned());
        bodies.push(answer.json());
    }
    assert_eq!(seen, ["MISS", "MISS", "HIT", "HIT"]);
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_ne!(bodies[0], first.json());
    let metrics = String::from_utf8(app.admin("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("gateway_cache_events_total{layer=\"response\",event=\"once\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn responses_with_errors_are_not_kept() {
    let app = spawn_multi(EmulatorConfig::demo(anchor())).await;
    let bad = json!({ "state": "HISTORY", "accounts": ["nope"] });
    for _ in 0..2 {
        let answer = app.graphql_answer(Q, bad.clone(), &[]).await;
        assert_eq!(answer.cache_status(), "MISS");
        assert_eq!(
            answer.json()["errors"][0]["extensions"]["code"],
            json!("ACCOUNT_NOT_FOUND")
        );
    }
}

const SANDBOX_ACTIVE: &str =
    r#"{ "state": "ACTIVE", "accounts": ["sandbox"], "regions": ["us-east-1"] }"#;

#[tokio::test]
async fn stale_if_error_serves_and_marks_an_expired_page_and_errors_are_not_kept() {
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), |s| {
        s.cache.active_ttl_secs = 1;
        s.cache.failure_backoff_ms = 100;
    })
    .await;
    let vars: serde_json::Value = serde_json::from_str(SANDBOX_ACTIVE).unwrap();
    let fresh = app.graphql(Q, vars.clone()).await;
    assert!(
        fresh["errors"].is_null() && fresh["extensions"].is_null(),
        "{fresh}"
    );
    let calls = app.describe_calls();

    // SSM starts failing; the page expires.
    app.emulator.set_faults(Faults {
        error_ratio: 1.0,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answer = app.graphql_answer(Q, vars.clone(), &[]).await;
    let stale = answer.json();
    assert!(stale["errors"].is_null(), "{stale}");
    assert_eq!(stale["data"], fresh["data"], "the expired page, served");
    let note = &stale["extensions"]["stale"][0];
    assert_eq!(note["account"], json!(DEMO_ACCOUNT_IDS[2]));
    assert_eq!(note["region"], json!("us-east-1"));
    assert!(
        note["ageSeconds"].as_u64().is_some_and(|a| a >= 1),
        "{stale}"
    );
    assert_eq!(app.describe_calls(), calls + 1, "one failed refresh");
    // A stale answer is not kept as a response.
    assert_eq!(answer.cache_status(), "MISS");

    // A page never fetched before has nothing stale to fall back on.
    let other = app
        .graphql(
            Q,
            json!({ "state": "ACTIVE", "accounts": ["sandbox"], "regions": ["eu-west-1"] }),
        )
        .await;
    assert_eq!(
        other["errors"][0]["extensions"]["code"],
        json!("UPSTREAM_UNAVAILABLE"),
        "{other}"
    );

    // SSM recovers: past the failure back-off the next read goes upstream and
    // is fresh again (the failure was never stored as data).
    app.emulator.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let recovered = app.graphql(Q, vars).await;
    assert!(
        recovered["errors"].is_null() && recovered["extensions"].is_null(),
        "{recovered}"
    );
    assert_eq!(recovered["data"], fresh["data"]);
}

#[tokio::test]
async fn throttled_calls_are_retried_with_backoff_until_they_succeed() {
    let mut config = EmulatorConfig::demo(anchor());
    config.faults = Faults {
        throttle_ratio: 0.3,
        seed: 7,
        ..Faults::default()
    };
    let app = spawn_multi_with(config, |s| {
        // Every query goes upstream: no caches.
        s.cache.active_ttl_secs = 0;
        s.cache.history_ttl_secs = 0;
        s.cache.responses = false;
        s.aws.max_attempts = 10;
        s.aws.retry_mode = RetryMode::Standard;
        s.aws.initial_backoff_ms = 1;
        s.aws.max_backoff_ms = 20;
    })
    .await;
    let vars: serde_json::Value = serde_json::from_str(SANDBOX_ACTIVE).unwrap();
    for _ in 0..20 {
        let res = app.graphql(Q, vars.clone()).await;
        assert!(res["errors"].is_null(), "{res}");
    }
    let throttled = app.emulator.throttled();
    assert!(throttled > 0, "the ratio throttled some calls");
    assert_eq!(
        app.describe_calls(),
        20 + throttled,
        "each throttled call was retried"
    );
}
