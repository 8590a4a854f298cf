//! Bounded cost: per-source call budgets (estimated before a request runs,
//! enforced while it runs), the per-(account, region) upstream rate limit,
//! and overload protection (deadline, in-flight cap, response size).

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use ssm_emulator::{
    DEMO_ACCOUNT_ID, DEMO_ACCOUNT_IDS, DEMO_REGION, DataSpec, Dataset, EmulatorConfig, Faults,
    Latency, SourceSpec, demo_credentials, demo_roles,
};
use ssm_session_gateway::settings::Settings;

use crate::support::{
    TestApp, anchor, dataset, emulator_config, error_codes, spawn_app, spawn_app_with,
    spawn_multi_with,
};

const JSON: (&str, &str) = ("content-type", "application/json");
const GQL_RESPONSE: (&str, &str) = ("accept", "application/graphql-response+json");

/// POSTs `query` asking for application/graphql-response+json.
async fn post(app: &TestApp, query: &str, variables: Value) -> (StatusCode, Value) {
    let body = json!({ "query": query, "variables": variables }).to_string();
    let res = app
        .request(Method::POST, "/graphql", &[JSON, GQL_RESPONSE], body)
        .await;
    (res.status, res.json())
}

fn aliases(n: usize, field: impl Fn(usize) -> String) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("a{i}: {}", field(i))).collect();
    format!("{{ {} }}", fields.join(" "))
}

#[tokio::test]
async fn the_expensive_requests_are_refused_before_any_upstream_call() {
    let app = spawn_app(emulator_config(dataset(5, 10, 400))).await;

    // One field, a thousand pages of one.
    let (status, res) = post(
        &app,
        "{ sessions(state: HISTORY, first: 1000, pageSize: 1) { nodes { sessionId } } }",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert!(res.get("data").is_none(), "{res}");
    assert_eq!(error_codes(&res), ["COST_LIMIT_EXCEEDED"]);
    let ext = &res["errors"][0]["extensions"];
    assert_eq!(ext["account"], DEMO_ACCOUNT_ID);
    assert_eq!(ext["region"], DEMO_REGION);
    assert_eq!(ext["estimate"], 1001);
    assert_eq!(ext["limit"], 10);

    // Under application/json: 200, still no data.
    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[JSON],
            json!({ "query": "{ sessions(state: HISTORY, first: 1000, pageSize: 1) { nodes { sessionId } } }" })
                .to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(error_codes(&res.json()), ["COST_LIMIT_EXCEEDED"]);

    // Aliases share the budget: five windows of 2 pages each are 15 calls
    // with look-aheads; through a variable and a fragment as well.
    let (status, res) = post(
        &app,
        &format!(
            "query($n: Int) {} fragment F on SessionConnection {{ nodes {{ sessionId }} }}",
            &aliases(5, |i| format!(
                "sessions(state: HISTORY, first: $n, pageSize: 5, filter: {{ owner: \"u{i}\" }}) {{ ...F }}"
            ))
        ),
        json!({ "n": 10 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert_eq!(res["errors"][0]["extensions"]["estimate"], 15, "{res}");

    // 40 aliases: over the root-field cap before any estimate matters.
    let (status, res) = post(
        &app,
        &aliases(40, |i| {
            format!(
                "sessions(state: HISTORY, first: 200, pageSize: 5, filter: {{ owner: \"u{i}\" }}) {{ nodes {{ sessionId }} }}"
            )
        }),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert_eq!(error_codes(&res), ["GRAPHQL_VALIDATION_FAILED"]);
    assert!(
        res["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("root fields")),
        "{res}"
    );

    // 300 lookups of one session: the cap, and the budget (2 calls each).
    let lookup = |_| {
        format!(
            "session(account: \"demo\", region: \"{DEMO_REGION}\", sessionId: \"x-0123456789abcdef0\") {{ sessionId }}"
        )
    };
    let (status, res) = post(&app, &aliases(300, lookup), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    let (status, res) = post(&app, &aliases(6, lookup), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert_eq!(res["errors"][0]["extensions"]["estimate"], 12, "{res}");

    // A skipped field costs nothing.
    let (status, res) = post(
        &app,
        "query($skip: Boolean!) { sessions(state: HISTORY, first: 1000, pageSize: 1) @skip(if: $skip) { nodes { sessionId } } }",
        json!({ "skip": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{res}");

    assert_eq!(app.describe_calls(), 0, "nothing reached SSM");

    // Within budget: runs.
    let (status, res) = post(
        &app,
        &aliases(4, |i| {
            format!(
                "sessions(state: HISTORY, first: 5, filter: {{ owner: \"u{i}\" }}) {{ nodes {{ sessionId }} }}"
            )
        }),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    assert!(res["errors"].is_null(), "{res}");
}

/// The three requests of issue 9's table, as sent to `demo` (three
/// accounts, two regions each), where they caused 629, 240 and 600
/// `DescribeSessions` calls. Now none reaches SSM: with the default root
/// field cap, and with the cap raised out of the way (the cost estimate
/// refuses them then).
#[tokio::test]
async fn the_issues_three_requests_cost_ssm_nothing_on_the_demo() {
    let demo = || {
        let mut config = EmulatorConfig::new(
            Dataset::generate(&DataSpec::demo(anchor())),
            demo_credentials(),
        );
        config.roles = demo_roles();
        config
    };
    let history = "{ sessions(state: HISTORY, first: 1000, pageSize: 1) { nodes { sessionId } } }";
    let filtered = aliases(40, |i| {
        format!(
            "sessions(state: HISTORY, first: 200, pageSize: 5, filter: {{ owner: \"u{i}\" }}) {{ nodes {{ sessionId }} }}"
        )
    });
    let lookups = aliases(300, |i| {
        format!(
            "session(account: \"platform\", region: \"{DEMO_REGION}\", sessionId: \"u-{i:017x}\") {{ sessionId }}"
        )
    });
    for root_cap in [20, 1000] {
        let app = spawn_multi_with(demo(), |s| s.limits.max_root_fields = root_cap).await;
        let mut codes = Vec::new();
        for query in [history, filtered.as_str(), lookups.as_str()] {
            let (status, res) = post(&app, query, json!({})).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
            assert!(res.get("data").is_none(), "{res}");
            let mut all = error_codes(&res);
            all.dedup();
            let code = all.join(",");
            let first = &res["errors"][0];
            eprintln!(
                "root cap {root_cap}: {} errors, {code}: {} (estimate {})",
                res["errors"].as_array().map_or(0, Vec::len),
                first["message"],
                first["extensions"]["estimate"]
            );
            codes.push(code);
        }
        let expected = if root_cap == 20 {
            [
                "COST_LIMIT_EXCEEDED",
                "GRAPHQL_VALIDATION_FAILED",
                "GRAPHQL_VALIDATION_FAILED",
            ]
        } else {
            ["COST_LIMIT_EXCEEDED"; 3]
        };
        assert_eq!(codes, expected);
        assert_eq!(app.describe_calls(), 0, "nothing reached SSM");
    }
}

const REGIONS: [&str; 20] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "eu-south-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "sa-east-1",
    "me-south-1",
    "af-south-1",
];

#[tokio::test]
async fn a_one_page_query_over_sixty_sources_costs_one_call_each() {
    let sources = DEMO_ACCOUNT_IDS
        .iter()
        .flat_map(|account| {
            REGIONS
                .iter()
                .map(move |region| SourceSpec::new(account, region, 1, 3))
        })
        .collect();
    let data = Dataset::generate(&DataSpec {
        seed: 60,
        anchor: anchor(),
        sources,
    });
    let mut config = EmulatorConfig::new(data, demo_credentials());
    config.roles = demo_roles();
    let app = spawn_multi_with(config, |s| {
        s.default_regions = REGIONS.iter().map(|r| (*r).to_owned()).collect();
    })
    .await;
    let res = app
        .graphql(
            "{ sessions(state: HISTORY, first: 50) { nodes { sessionId region } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(
        res["data"]["sessions"]["nodes"].as_array().map(Vec::len),
        Some(50)
    );
    assert_eq!(res["data"]["sessions"]["pageInfo"]["hasNextPage"], true);
    assert_eq!(app.describe_calls(), 60, "one call per source");
}

#[tokio::test]
async fn a_window_that_reaches_its_budget_returns_what_it_read_and_resumes() {
    // Short and empty pages: more calls than the estimate counted.
    let mut config = emulator_config(dataset(9, 0, 300));
    config.short_pages = Some(3);
    let mut settings = Settings::default();
    settings.limits.max_upstream_calls_per_source = 4;
    let app = spawn_app_with(config, settings).await;
    let q = "query($after: String) { sessions(state: HISTORY, first: 30, pageSize: 20, after: $after) { nodes { sessionId } pageInfo { hasNextPage endCursor } } }";
    let mut seen: Vec<String> = Vec::new();
    let mut cut_short = 0;
    let mut after = Value::Null;
    for _ in 0..40 {
        let before = app.describe_calls();
        let res = app.graphql(q, json!({ "after": after })).await;
        assert!(app.describe_calls() - before <= 4, "never past the budget");
        let nodes = res["data"]["sessions"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !res["errors"].is_null() {
            assert_eq!(error_codes(&res), ["COST_LIMIT_EXCEEDED"], "{res}");
            let ext = &res["errors"][0]["extensions"];
            assert_eq!(
                (ext["account"].as_str(), ext["region"].as_str()),
                (Some(DEMO_ACCOUNT_ID), Some(DEMO_REGION))
            );
            assert_eq!(
                res["data"]["sessions"]["pageInfo"]["hasNextPage"], true,
                "{res}"
            );
            if nodes.len() < 30 {
                cut_short += 1;
            }
        }
        seen.extend(
            nodes
                .iter()
                .map(|n| n["sessionId"].as_str().unwrap().to_owned()),
        );
        let page_info = &res["data"]["sessions"]["pageInfo"];
        if page_info["hasNextPage"] == false {
            break;
        }
        if !page_info["endCursor"].is_null() {
            after = page_info["endCursor"].clone();
        }
    }
    assert!(cut_short > 0, "the budget cut some windows short");
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no session twice");
    assert_eq!(seen.len(), 300, "resuming reads them all");
}

#[tokio::test]
async fn upstream_calls_per_source_stay_under_the_rate_retries_included() {
    let mut config = emulator_config(dataset(12, 20, 100));
    // A third of the calls throttled: the SDK retries them, and every
    // attempt waits its turn.
    config.faults = Faults {
        throttle_ratio: 0.3,
        seed: 7,
        ..Faults::default()
    };
    let mut settings = Settings::default();
    // (Not 5, the default, which the test helper raises for other tests.)
    settings.aws.max_calls_per_second = 4;
    settings.aws.max_call_wait_ms = 300;
    settings.aws.max_attempts = 3;
    // Standard retries: adaptive mode adds the SDK's own client-side rate
    // limiter, whose refusals are not ours to count here.
    settings.aws.retry_mode = ssm_session_gateway::settings::RetryMode::Standard;
    settings.aws.initial_backoff_ms = 1;
    settings.aws.max_backoff_ms = 5;
    settings.cache.responses = false;
    let app = std::sync::Arc::new(spawn_app_with(config, settings).await);
    let started = Instant::now();
    let mut callers = Vec::new();
    for caller in 0..8 {
        let app = app.clone();
        callers.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for i in 0..8 {
                let q = format!(
                    "{{ sessions(state: ACTIVE, first: 3, filter: {{ owner: \"c{caller}-{i}\" }}) {{ nodes {{ sessionId }} }} }}"
                );
                codes.extend(error_codes(&app.graphql(&q, json!({})).await));
            }
            codes
        }));
    }
    let mut codes = Vec::new();
    for caller in callers {
        codes.extend(caller.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = app.describe_calls() as f64;
    eprintln!(
        "64 requests from 8 callers: {calls} attempts reached the emulator in {elapsed:.2} s \
         ({:.2}/s; the emulator throttled {}), {} answered UPSTREAM_THROTTLED",
        calls / elapsed,
        app.emulator.throttled(),
        codes.len()
    );
    // A burst of 4, then 4 a second.
    assert!(
        calls <= 4.0 + 4.0 * elapsed + 1.0,
        "{calls} calls in {elapsed:.2} s"
    );
    assert!(app.emulator.throttled() > 0, "retries happened");
    // Callers past their wait (how many depends on the machine's pace) are
    // told so, and nothing else goes wrong.
    assert!(codes.iter().all(|c| c == "UPSTREAM_THROTTLED"), "{codes:?}");
}

#[tokio::test]
async fn a_call_that_cannot_get_its_turn_in_time_is_upstream_throttled() {
    let mut settings = Settings::default();
    settings.aws.max_calls_per_second = 1;
    settings.aws.max_call_wait_ms = 0;
    settings.cache.responses = false;
    let app =
        std::sync::Arc::new(spawn_app_with(emulator_config(dataset(16, 5, 20)), settings).await);
    let burst: Vec<_> = (0..5)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let q = format!(
                    "{{ sessions(state: ACTIVE, filter: {{ owner: \"b{i}\" }}) {{ nodes {{ sessionId }} }} }}"
                );
                error_codes(&app.graphql(&q, json!({})).await)
            })
        })
        .collect();
    let mut refused = 0;
    for answer in burst {
        let codes = answer.await.unwrap();
        assert!(codes.iter().all(|c| c == "UPSTREAM_THROTTLED"), "{codes:?}");
        refused += usize::from(!codes.is_empty());
    }
    assert!(
        refused >= 3,
        "a bucket of one refuses most of a burst: {refused}"
    );
    assert!(app.describe_calls() <= 2, "refused calls never reach SSM");
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered() {
    let mut config = emulator_config(dataset(13, 5, 20));
    config.faults = Faults {
        latency: Latency::Fixed(Duration::from_secs(5)),
        ..Faults::default()
    };
    let mut settings = Settings::default();
    settings.http.request_timeout_secs = 1;
    let app = spawn_app_with(config, settings).await;
    let started = Instant::now();
    let (status, res) = post(
        &app,
        "{ sessions(state: ACTIVE) { nodes { sessionId } } }",
        json!({}),
    )
    .await;
    eprintln!(
        "deadline 1 s, upstream 5 s: answered {status} in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{res}");
    assert_eq!(error_codes(&res), ["TIMEOUT"]);
}

#[tokio::test]
async fn the_in_flight_cap_sheds_a_flood_and_recovers() {
    let mut config = emulator_config(dataset(14, 5, 20));
    config.faults = Faults {
        latency: Latency::Fixed(Duration::from_millis(400)),
        ..Faults::default()
    };
    let mut settings = Settings::default();
    settings.http.max_in_flight = 2;
    settings.cache.responses = false;
    let app = std::sync::Arc::new(spawn_app_with(config, settings).await);
    let flood: Vec<_> = (0..10)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let q = format!(
                    "{{ sessions(state: ACTIVE, filter: {{ owner: \"f{i}\" }}) {{ nodes {{ sessionId }} }} }}"
                );
                let body = json!({ "query": q }).to_string();
                app.request(Method::POST, "/graphql", &[JSON], body).await
            })
        })
        .collect();
    let mut shed = 0;
    let mut served = 0;
    for answer in flood {
        let answer = answer.await.unwrap();
        match answer.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                shed += 1;
                assert_eq!(error_codes(&answer.json()), ["OVERLOADED"]);
                assert_eq!(
                    answer
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("1")
                );
            }
            StatusCode::OK => served += 1,
            other => panic!("unexpected {other}"),
        }
    }
    eprintln!("10 at once, cap 2: {served} served, {shed} shed with 503 OVERLOADED");
    assert!(shed > 0 && served > 0, "shed {shed}, served {served}");
    // The flood is over: requests are served again.
    let res = app
        .graphql(
            "{ sessions(state: ACTIVE) { nodes { sessionId } } }",
            json!({}),
        )
        .await;
    assert!(res["errors"].is_null(), "{res}");
}

#[tokio::test]
async fn a_response_over_the_size_cap_is_an_error_not_a_huge_body() {
    let mut settings = Settings::default();
    settings.http.max_response_bytes = 64 * 1024;
    let app = spawn_app_with(emulator_config(dataset(15, 5, 600)), settings).await;
    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[JSON],
            json!({ "query": "{ sessions(state: HISTORY, first: 600) { edges { cursor node { id sessionId target owner ownerName status startDate endDate documentName reason } } } }" })
                .to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body.len() < 4096);
    let v = res.json();
    assert_eq!(error_codes(&v), ["RESPONSE_TOO_LARGE"]);
    assert!(v["data"].is_null());
}
