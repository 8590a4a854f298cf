//! `/metrics` and `/readyz` on the admin listener, after demo-like queries
//! (three accounts, two regions each, through the real SDK into the
//! emulator). Each gateway owns its recorder, so these counts are this
//! test's alone even with other gateways running in the same process.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hyper::Method;
use serde_json::json;
use sha2::Digest as _;
use ssm_emulator::{DEMO_ACCOUNT_IDS, EmulatorConfig};
use ssm_session_gateway::settings::RetryMode;

use crate::support::{TestApp, anchor, error_codes, spawn_multi_with};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

const QUERY: &str = "query($first: Int) { sessions(state: HISTORY, first: $first) { \
    edges { node { sessionId managedNode { instanceId } } } } }";

/// One sample of the exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (the subset the exporter writes:
/// no escaped quotes in label values).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `want`.
fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(app: &TestApp) -> Vec<Sample> {
    let answer = app.admin("/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.content_type().starts_with("text/plain"),
        "{}",
        answer.content_type()
    );
    parse(std::str::from_utf8(&answer.body).expect("utf-8"))
}

fn admin_on_any_port(settings: &mut ssm_session_gateway::settings::Settings) {
    settings.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
}

#[tokio::test]
async fn metrics_count_upstream_calls_cache_hits_and_latency() {
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), admin_on_any_port).await;
    assert_eq!(app.admin("/livez").await.status, 200);
    assert_eq!(app.admin("/readyz").await.status, 200);

    let res = app.graphql(QUERY, json!({ "first": 5 })).await;
    assert!(res["errors"].is_null(), "{res}");
    let before = scrape(&app).await;

    // Upstream calls, labelled with every demo account and region, and timed.
    for account in DEMO_ACCOUNT_IDS {
        for region in REGIONS {
            let labels = [
                ("account", account),
                ("region", region),
                ("operation", "DescribeSessions"),
            ];
            let ok = [labels.as_slice(), &[("outcome", "ok")][..]].concat();
            assert!(
                sum(&before, "gateway_upstream_calls_total", &ok) >= 1.0,
                "no call counted for {account} {region}"
            );
            assert!(
                sum(
                    &before,
                    "gateway_upstream_call_duration_seconds_count",
                    &labels
                ) >= 1.0,
                "no latency for {account} {region}"
            );
            // Every attempt took its turn at the source's rate limiter.
            assert!(
                sum(
                    &before,
                    "gateway_upstream_limiter_total",
                    &[("account", account), ("region", region)]
                ) >= 1.0,
                "no limiter turn for {account} {region}"
            );
            let le_inf = [labels.as_slice(), &[("le", "+Inf")][..]].concat();
            assert!(
                sum(
                    &before,
                    "gateway_upstream_call_duration_seconds_bucket",
                    &le_inf
                ) >= 1.0
            );
        }
        assert!(
            sum(
                &before,
                "gateway_credential_resolutions_total",
                &[("account", account), ("outcome", "ok")]
            ) >= 1.0
        );
    }
    assert!(sum(&before, "gateway_dataloader_batch_size_count", &[]) >= 1.0);
    assert!(
        sum(
            &before,
            "gateway_cache_events_total",
            &[("layer", "node"), ("event", "miss")]
        ) >= 1.0
    );
    assert_eq!(sum(&before, "gateway_build_info", &[]), 1.0);
    assert_eq!(sum(&before, "gateway_http_requests_in_flight", &[]), 0.0);

    // The same query again: the response cache answers it.
    let again = app.graphql_answer(QUERY, json!({ "first": 5 }), &[]).await;
    assert_eq!(again.cache_status(), "HIT");
    // Another window over the same pages: the page cache answers it.
    let res = app.graphql(QUERY, json!({ "first": 6 })).await;
    assert!(res["errors"].is_null(), "{res}");
    let after = scrape(&app).await;

    let hits = |samples: &[Sample], layer: &str| {
        sum(
            samples,
            "gateway_cache_events_total",
            &[("layer", layer), ("event", "hit")],
        )
    };
    assert_eq!(hits(&after, "response"), hits(&before, "response") + 1.0);
    assert!(
        hits(&after, "page") >= hits(&before, "page") + 6.0,
        "one page hit per source: {} then {}",
        hits(&before, "page"),
        hits(&after, "page")
    );
    assert!(hits(&after, "node") > hits(&before, "node"));
    assert_eq!(
        sum(
            &after,
            "gateway_upstream_calls_total",
            &[("operation", "DescribeSessions")]
        ),
        sum(
            &before,
            "gateway_upstream_calls_total",
            &[("operation", "DescribeSessions")]
        ),
        "no new DescribeSessions call"
    );
    let graphql = [("route", "/graphql"), ("method", "POST"), ("status", "200")];
    assert_eq!(sum(&after, "gateway_http_requests_total", &graphql), 3.0);
    assert_eq!(
        sum(
            &after,
            "gateway_graphql_operations_total",
            &[("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &after,
            "gateway_graphql_operations_total",
            &[("outcome", "cached")]
        ),
        1.0
    );

    // Every label value is from a bounded set: no session id leaks in.
    for sample in &after {
        for value in sample.labels.values() {
            assert!(!value.starts_with("s-") && value.len() < 64, "{sample:?}");
        }
    }

    let verbose = app.admin("/readyz?verbose").await;
    assert_eq!(verbose.status, 200);
    let report = verbose.json();
    assert_eq!(report["status"], "ready");
    let credentials: Vec<&str> = report["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["credentials"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(credentials, ["ok", "ok", "ok"], "{report}");
}

#[tokio::test]
async fn metrics_count_sdk_retries_and_throttles() {
    let mut config = EmulatorConfig::demo(anchor());
    config.faults.throttle_ratio = 1.0;
    let app = spawn_multi_with(config, |settings| {
        admin_on_any_port(settings);
        settings.aws.max_attempts = 2;
        settings.aws.retry_mode = RetryMode::Standard;
        settings.aws.initial_backoff_ms = 1;
        settings.aws.max_backoff_ms = 1;
    })
    .await;
    let res = app
        .graphql(QUERY, json!({ "first": 1, "accounts": ["platform"] }))
        .await;
    assert!(
        error_codes(&res).contains(&"UPSTREAM_THROTTLED".to_owned()),
        "{res}"
    );
    let samples = scrape(&app).await;
    for region in REGIONS {
        let labels = [
            ("account", DEMO_ACCOUNT_IDS[0]),
            ("region", region),
            ("operation", "DescribeSessions"),
        ];
        assert_eq!(
            sum(&samples, "gateway_upstream_throttles_total", &labels),
            2.0,
            "{region}"
        );
        assert_eq!(
            sum(&samples, "gateway_upstream_retries_total", &labels),
            1.0,
            "{region}"
        );
        let throttled = [labels.as_slice(), &[("outcome", "throttled")][..]].concat();
        assert_eq!(
            sum(&samples, "gateway_upstream_calls_total", &throttled),
            1.0
        );
    }
    assert!(
        sum(
            &samples,
            "gateway_graphql_errors_total",
            &[("code", "UPSTREAM_THROTTLED")]
        ) >= 1.0
    );
    assert_eq!(
        sum(
            &samples,
            "gateway_graphql_operations_total",
            &[("outcome", "error")]
        ) + sum(
            &samples,
            "gateway_graphql_operations_total",
            &[("outcome", "partial")]
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_count_persisted_queries_and_parsed_documents() {
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), admin_on_any_port).await;
    let document = "{ accounts { alias } }";
    let hash: String = sha2::Sha256::digest(document.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ext = serde_json::json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let post = |body: serde_json::Value| {
        let app = &app;
        async move {
            app.request(
                Method::POST,
                "/graphql",
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await
        }
    };
    // By hash alone: not found; with the document; by hash alone twice.
    post(serde_json::json!({ "extensions": ext })).await;
    post(serde_json::json!({ "query": document, "extensions": ext })).await;
    post(serde_json::json!({ "extensions": ext })).await;
    post(serde_json::json!({ "extensions": ext })).await;

    let samples = scrape(&app).await;
    let apq = |event| {
        sum(
            &samples,
            "gateway_cache_events_total",
            &[("layer", "persisted_query"), ("event", event)],
        )
    };
    assert_eq!(apq("miss"), 1.0);
    assert_eq!(apq("hit"), 2.0);
    // The document was parsed once; the two runs by hash found it parsed,
    // unless the response cache answered them first.
    let events = |layer, event| {
        sum(
            &samples,
            "gateway_cache_events_total",
            &[("layer", layer), ("event", event)],
        )
    };
    assert_eq!(events("document", "miss"), 1.0);
    assert_eq!(
        events("document", "hit") + events("response", "hit"),
        2.0,
        "{samples:?}"
    );
}
