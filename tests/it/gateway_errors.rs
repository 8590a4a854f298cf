//! Bad input and upstream failures: stable codes, no upstream call for input
//! the gateway can judge itself.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use serde_json::{Value, json};
use ssm_session_gateway::demo::emulator_client_settings;
use ssm_session_gateway::settings::{Secret, Settings};
use ssm_session_gateway::upstream::sdk::{SdkSessionSource, ssm_client};
use ssm_session_gateway::upstream::{
    Page, PageRequest, SessionSource, UpstreamError, UpstreamErrorKind,
};
use tokio::net::TcpListener;

use crate::support::{
    dataset, demo_account, demo_region, emulator_config, error_codes, query_router,
    single_registry, spawn_app, spawn_app_with,
};

const Q: &str = r#"
query($state: SessionState!, $first: Int, $after: String, $pageSize: Int, $filter: SessionFilter, $last: Int) {
  sessions(state: $state, first: $first, after: $after, pageSize: $pageSize, filter: $filter, last: $last) {
    edges { cursor node { sessionId } }
    pageInfo { endCursor hasNextPage }
  }
}"#;

fn assert_code(res: &Value, code: &str) {
    assert_eq!(error_codes(res), vec![code.to_owned()], "{res}");
    assert!(
        res["data"].is_null() || res["data"]["sessions"].is_null(),
        "{res}"
    );
}

#[tokio::test]
async fn bad_cursors_are_invalid_cursor_and_cost_no_upstream_call() {
    let app = spawn_app(emulator_config(dataset(11, 10, 60))).await;
    let res = app
        .graphql(Q, json!({ "state": "HISTORY", "first": 5, "pageSize": 10 }))
        .await;
    let cursor = res["data"]["sessions"]["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let calls = app.describe_calls();

    let mut tampered: Vec<u8> = cursor.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let truncated = cursor[..cursor.len() - 3].to_owned();
    let cases = [
        ("tampered", json!({ "state": "HISTORY", "after": tampered })),
        (
            "truncated",
            json!({ "state": "HISTORY", "after": truncated }),
        ),
        (
            "random",
            json!({ "state": "HISTORY", "after": "bm90IGEgY3Vyc29y" }),
        ),
        ("not base64", json!({ "state": "HISTORY", "after": "%%%" })),
        ("empty", json!({ "state": "HISTORY", "after": "" })),
        ("other state", json!({ "state": "ACTIVE", "after": cursor })),
        (
            "other filter",
            json!({ "state": "HISTORY", "after": cursor, "filter": { "status": "FAILED" } }),
        ),
        (
            "long",
            json!({ "state": "HISTORY", "after": "A".repeat(60_000) }),
        ),
    ];
    for (name, vars) in cases {
        let res = app.graphql(Q, vars).await;
        assert_eq!(error_codes(&res), vec!["INVALID_CURSOR"], "{name}: {res}");
    }
    assert_eq!(
        app.describe_calls(),
        calls,
        "no upstream call for a bad cursor"
    );

    // The untouched cursor still works, with a different `first` and `pageSize`.
    let res = app
        .graphql(
            Q,
            json!({ "state": "HISTORY", "after": cursor, "first": 3, "pageSize": 50 }),
        )
        .await;
    assert!(res["errors"].is_null(), "{res}");
}

#[tokio::test]
async fn a_cursor_from_another_deployment_is_refused() {
    let a = spawn_app(emulator_config(dataset(11, 10, 60))).await;
    let res = a
        .graphql(Q, json!({ "state": "HISTORY", "first": 5 }))
        .await;
    let cursor = res["data"]["sessions"]["pageInfo"]["endCursor"].clone();

    // Same data, same upstream tokens, another cursor key.
    let settings = Settings {
        cursor_key: Some(Secret::new("x".repeat(40))),
        ..Settings::default()
    };
    let b = spawn_app_with(emulator_config(dataset(11, 10, 60)), settings).await;
    let res = b
        .graphql(Q, json!({ "state": "HISTORY", "after": cursor }))
        .await;
    assert_code(&res, "INVALID_CURSOR");
    assert_eq!(b.describe_calls(), 0);
}

#[tokio::test]
async fn bad_arguments_are_bad_user_input_before_any_upstream_call() {
    let app = spawn_app(emulator_config(dataset(11, 10, 60))).await;
    let cases = [
        ("negative first", json!({ "state": "HISTORY", "first": -1 })),
        (
            "first too large",
            json!({ "state": "HISTORY", "first": 1001 }),
        ),
        ("pageSize 0", json!({ "state": "HISTORY", "pageSize": 0 })),
        (
            "pageSize 201",
            json!({ "state": "HISTORY", "pageSize": 201 }),
        ),
        ("backward paging", json!({ "state": "HISTORY", "last": 5 })),
        (
            "bad timestamp",
            json!({ "state": "HISTORY", "filter": { "invokedAfter": "yesterday" } }),
        ),
        (
            "overlong target",
            json!({ "state": "HISTORY", "filter": { "target": "i".repeat(401) } }),
        ),
        (
            "empty owner",
            json!({ "state": "HISTORY", "filter": { "owner": "" } }),
        ),
        (
            "overlong session id",
            json!({ "state": "HISTORY", "filter": { "sessionId": "s".repeat(97) } }),
        ),
        (
            "unknown status",
            json!({ "state": "HISTORY", "filter": { "status": "ASLEEP" } }),
        ),
    ];
    for (name, vars) in cases {
        let res = app.graphql(Q, vars).await;
        assert_eq!(error_codes(&res), vec!["BAD_USER_INPUT"], "{name}: {res}");
        assert!(
            res["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: a message says what is wrong: {res}"
        );
    }
    assert_eq!(app.describe_calls(), 0);
}

#[tokio::test]
async fn an_expired_upstream_token_makes_the_cursor_invalid() {
    let mut config = emulator_config(dataset(11, 0, 60));
    config.token_ttl = Duration::from_millis(50);
    let app = spawn_app(config).await;
    // A cursor pointing into the second upstream page carries its token.
    let res = app
        .graphql(
            Q,
            json!({ "state": "HISTORY", "first": 15, "pageSize": 10 }),
        )
        .await;
    let cursor = res["data"]["sessions"]["pageInfo"]["endCursor"].clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = app
        .graphql(Q, json!({ "state": "HISTORY", "after": cursor }))
        .await;
    assert_code(&res, "INVALID_CURSOR");
    assert!(
        res["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{res}"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_upstream_unavailable() {
    // Bind then drop: a loopback port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut client = emulator_client_settings(port);
    client.max_attempts = 1;
    client.attempt_timeout = Duration::from_secs(2);
    let sdk = SdkSessionSource::new(ssm_client(&client).await, &demo_account(), &demo_region());
    let res = query_over(Arc::new(sdk), Q, json!({ "state": "ACTIVE" })).await;
    assert_code(&res, "UPSTREAM_UNAVAILABLE");
    assert!(
        !res.to_string().contains("127.0.0.1"),
        "internal detail stays in the log: {res}"
    );
}

#[tokio::test]
async fn credentials_the_upstream_refuses_are_upstream_access_denied() {
    let app = spawn_app(emulator_config(dataset(11, 10, 60))).await;
    let mut client = emulator_client_settings(app.emulator_addr);
    client.max_attempts = 1;
    client.static_credentials = Some(Credentials::new(
        "AKIAUNKNOWN000000000",
        "nope",
        None,
        None,
        "t",
    ));
    let sdk = SdkSessionSource::new(ssm_client(&client).await, &demo_account(), &demo_region());
    let res = query_over(Arc::new(sdk), Q, json!({ "state": "ACTIVE" })).await;
    assert_code(&res, "UPSTREAM_ACCESS_DENIED");
}

/// An upstream that always fails with one kind.
struct Failing(UpstreamErrorKind);

#[async_trait::async_trait]
impl SessionSource for Failing {
    async fn describe_sessions(&self, _: &PageRequest) -> Result<Page, UpstreamError> {
        Err(UpstreamError::new(
            self.0,
            anyhow::anyhow!("secret internal detail"),
        ))
    }
}

#[tokio::test]
async fn upstream_failures_map_to_stable_codes_without_internal_detail() {
    for (kind, code) in [
        (UpstreamErrorKind::Throttled, "UPSTREAM_THROTTLED"),
        (UpstreamErrorKind::Unavailable, "UPSTREAM_UNAVAILABLE"),
        (UpstreamErrorKind::AccessDenied, "UPSTREAM_ACCESS_DENIED"),
        (UpstreamErrorKind::Internal, "INTERNAL"),
    ] {
        let q = "{ sessions(state: ACTIVE) { nodes { sessionId } } }";
        let res = query_over(Arc::new(Failing(kind)), q, json!({})).await;
        assert_code(&res, code);
        assert!(!res.to_string().contains("secret"), "{res}");
    }
}

/// One request through the gateway's router, in process, over `source`.
async fn query_over(source: Arc<dyn SessionSource>, query: &str, variables: Value) -> Value {
    query_router(single_registry(source), query, variables).await
}
