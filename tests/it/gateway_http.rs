//! GraphQL over HTTP: media types, status codes, GET, GraphiQL, limits.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::{TestApp, dataset, emulator_config, error_codes, spawn_app};

const JSON: (&str, &str) = ("content-type", "application/json");
const GQL_RESPONSE: (&str, &str) = ("accept", "application/graphql-response+json");

async fn app() -> TestApp {
    spawn_app(emulator_config(dataset(31, 5, 30))).await
}

fn body(query: &str) -> String {
    json!({ "query": query }).to_string()
}

#[tokio::test]
async fn post_answers_in_the_media_type_asked_for() {
    let app = app().await;
    let ok = "{ sessions(state: HISTORY, first: 2) { nodes { sessionId } } }";

    let res = app
        .request(Method::POST, "/graphql", &[JSON], body(ok))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.content_type().starts_with("application/json"),
        "{}",
        res.content_type()
    );
    assert_eq!(
        res.json()["data"]["sessions"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let res = app
        .request(Method::POST, "/graphql", &[JSON, GQL_RESPONSE], body(ok))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.content_type()
            .starts_with("application/graphql-response+json")
    );
}

#[tokio::test]
async fn request_errors_are_400_with_graphql_response_json_and_200_with_json() {
    let app = app().await;
    for (query, code) in [
        ("{ sessions(state: HISTORY", "GRAPHQL_PARSE_FAILED"),
        (
            "{ sessions(state: HISTORY) { nope } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        // A subscription needs a WebSocket: the request's error, not ours.
        ("subscription { sessionEvents { kind } }", "BAD_REQUEST"),
    ] {
        let res = app
            .request(Method::POST, "/graphql", &[JSON, GQL_RESPONSE], body(query))
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{query}");
        let v = res.json();
        assert!(
            v.get("data").is_none(),
            "no data entry for a request error: {v}"
        );
        assert_eq!(error_codes(&v), vec![code]);

        let res = app
            .request(Method::POST, "/graphql", &[JSON], body(query))
            .await;
        assert_eq!(res.status, StatusCode::OK, "{query}");
        assert_eq!(error_codes(&res.json()), vec![code]);
    }
    // A field error is not a request error: 200 and partial data either way.
    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[JSON, GQL_RESPONSE],
            body("{ sessions(state: HISTORY, first: -1) { nodes { sessionId } } }"),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let v = res.json();
    assert!(v.get("data").is_some());
    assert_eq!(error_codes(&v), vec!["BAD_USER_INPUT"]);
}

#[tokio::test]
async fn malformed_requests_get_http_errors() {
    let app = app().await;
    let res = app
        .request(Method::POST, "/graphql", &[JSON], "{not json")
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(&res.json()), vec!["BAD_REQUEST"]);

    // A batch is named as such, not as a wrong field type.
    let batch = r#" [{"query": "{ __typename }"}, {"query": "{ __typename }"}]"#;
    let res = app.request(Method::POST, "/graphql", &[JSON], batch).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(&res.json()), vec!["BAD_REQUEST"]);
    let message = res.json()["errors"][0]["message"].clone();
    assert!(
        message.to_string().contains("batched requests"),
        "{message}"
    );

    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[JSON],
            r#"{"query": "{ __typename }", "variables": [1]}"#,
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);

    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[("content-type", "text/plain")],
            body("{ __typename }"),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[JSON, ("accept", "text/csv")],
            body("{ __typename }"),
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_ACCEPTABLE);

    let big = format!("{{ __typename }} # {}", "x".repeat(300 * 1024));
    let res = app
        .request(Method::POST, "/graphql", &[JSON], body(&big))
        .await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn get_runs_queries_but_never_mutations() {
    let app = app().await;
    let res = app
        .request(
            Method::GET,
            "/graphql?query=%7B%20sessions(state%3A%20ACTIVE%2C%20first%3A%201)%20%7B%20nodes%20%7B%20sessionId%20%7D%20%7D%20%7D",
            &[("accept", "application/json")],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.json()["data"]["sessions"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let res = app
        .request(
            Method::GET,
            "/graphql?query=mutation%20%7B%20x%20%7D",
            &[],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        res.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );

    let res = app
        .request(
            Method::GET,
            "/graphql?query=%7B__typename%7D&variables=%5B",
            &[],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_browser_gets_graphiql() {
    let app = app().await;
    let res = app
        .request(
            Method::GET,
            "/graphql",
            &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.content_type().starts_with("text/html"));
    let html = String::from_utf8_lossy(&res.body).to_lowercase();
    assert!(
        html.contains("graphiql") && html.contains("/graphql"),
        "{html}"
    );
}

#[tokio::test]
async fn healthz_answers() {
    let app = app().await;
    let res = app.request(Method::GET, "/healthz", &[], "").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json(), json!({ "status": "ok" }));
}

#[tokio::test]
async fn accept_q_values_decide_the_media_type() {
    let app = app().await;
    let bad = "{ sessions(state: HISTORY";
    // JSON preferred by q-value: a request error is 200, in JSON.
    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[
                JSON,
                (
                    "accept",
                    "application/json;q=1, application/graphql-response+json;q=0.1",
                ),
            ],
            body(bad),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.content_type().starts_with("application/json"),
        "{}",
        res.content_type()
    );
    // Both refused: 406.
    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[
                JSON,
                (
                    "accept",
                    "application/json;q=0, application/graphql-response+json;q=0",
                ),
            ],
            body(bad),
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(error_codes(&res.json()), vec!["NOT_ACCEPTABLE"]);
    // `text/html;q=0` is not a browser asking for GraphiQL.
    let res = app
        .request(Method::GET, "/graphql", &[("accept", "text/html;q=0")], "")
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(&res.json()), vec!["BAD_REQUEST"]);
}

#[tokio::test]
async fn an_operation_that_cannot_be_chosen_has_a_code() {
    let app = app().await;
    let two = "query A { accounts { id } } query B { accounts { alias } }";
    for (operation, message) in [
        (None, "Operation name required"),
        (Some("C"), "Unknown operation named"),
    ] {
        let mut request = json!({ "query": two });
        if let Some(name) = operation {
            request["operationName"] = json!(name);
        }
        let res = app
            .request(
                Method::POST,
                "/graphql",
                &[JSON, GQL_RESPONSE],
                request.to_string(),
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        let v = res.json();
        assert_eq!(error_codes(&v), vec!["OPERATION_RESOLUTION_FAILURE"], "{v}");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message)),
            "{v}"
        );
        assert!(v.get("data").is_none(), "{v}");
    }
    // Naming one works.
    let res = app
        .request(
            Method::POST,
            "/graphql",
            &[JSON],
            json!({ "query": two, "operationName": "B" }).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.json()["data"]["accounts"][0]["alias"].is_string());
}
