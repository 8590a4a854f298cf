//! Traces over OTLP/HTTP: the real binary, told by the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` where to send, exports the spans of one
//! query to a fake collector on loopback (an axum route decoding each
//! protobuf `ExportTraceServiceRequest`), in the caller's trace (its
//! `traceparent`), nested HTTP request > GraphQL operation > `sessions`
//! field > upstream call > SDK attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use hyper::Method;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use tokio::net::TcpListener;

use crate::support::process::DemoProcess;
use crate::support::{ADMIN, HttpAnswer, client, send};

type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// Records every span with its resource's `service.name`.
async fn collect(State(received): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut received = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| attribute(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push((service.clone(), span));
            }
        }
    }
    ""
}

/// A string or integer attribute, as text.
fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value {
        AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        } => Some(s.clone()),
        AnyValue {
            value: Some(any_value::Value::IntValue(i)),
        } => Some(i.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn one_query_exports_nested_spans_in_the_callers_trace() {
    let received = Received::default();
    let collector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = collector.local_addr().unwrap();
    let routes = axum::Router::new()
        .route("/v1/traces", axum::routing::post(collect))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(collector, routes).await });

    let endpoint = format!("http://{collector_addr}");
    let mut demo = DemoProcess::spawn(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "gateway-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    // The same document twice: async-graphql runs it the first time, the
    // compiled path the second (another region, so SSM is called again).
    // Both traces have the same shape.
    for region in ["us-east-1", "eu-west-1"] {
        check_trace(&demo, &received, region).await;
    }

    demo.terminate();
    let status = tokio::task::spawn_blocking(move || demo.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Sends one query for `region` in a trace of its own and checks the spans
/// the collector received for it: nested, in the caller's trace.
async fn check_trace(demo: &DemoProcess, received: &Received, region: &str) {
    let trace_id = format!("{:032x}", rand::random::<u128>());
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let query = json!({
        "query": "query($region: String!) { sessions(state: HISTORY, first: 2, accounts: [\"platform\"], regions: [$region]) { edges { node { sessionId } } } }",
        "variables": { "region": region },
    })
    .to_string();
    let answer = post_traced(demo, &query, &traceparent).await;
    assert_eq!(answer.status, 200);
    assert!(answer.json()["errors"].is_null(), "{}", answer.json());

    // Wait until the attempt span (the innermost) and the HTTP span have arrived.
    let started = Instant::now();
    let spans: Vec<(String, Span)> = loop {
        let spans: Vec<(String, Span)> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        // The innermost span and the outermost (it ends last): a batch
        // may carry the first without the ones around it.
        if spans.iter().any(|(_, s)| s.name == "ssm.attempt")
            && spans.iter().any(|(_, s)| s.name == "POST /graphql")
        {
            break spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no attempt and HTTP spans within 20 s; got {:?}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "gateway-under-test")
    );

    let by_id: HashMap<String, &Span> = spans.iter().map(|(_, s)| (hex(&s.span_id), s)).collect();
    // Each span's chain of ancestors, innermost first, by name (`field`
    // spans by their path), up to the caller's span.
    let chain = |span: &Span| -> Vec<String> {
        let mut names = Vec::new();
        let mut parent = hex(&span.parent_span_id);
        while let Some(p) = by_id.get(&parent) {
            names.push(match p.name.as_str() {
                "field" => format!(
                    "field {}",
                    attribute(&p.attributes, "path").unwrap_or_default()
                ),
                other => other.to_owned(),
            });
            parent = hex(&p.parent_span_id);
        }
        names.push(format!("caller {parent}"));
        names
    };

    let attempt = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "ssm.attempt")
        .unwrap();
    assert_eq!(
        attribute(&attempt.attributes, "attempt").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(&attempt.attributes, "operation").as_deref(),
        Some("DescribeSessions")
    );
    let chain = chain(attempt);
    let position = |name: &str| {
        chain
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no {name} in {chain:?}"))
    };
    // Innermost first: call < sessions field < operation < HTTP request < caller.
    let call = position("ssm.describe_sessions");
    let field = position("field sessions");
    let operation = position("request");
    let http = position("POST /graphql");
    let caller = position(&format!("caller {caller_span}"));
    assert!(
        call < field && field < operation && operation < http && http < caller,
        "{chain:?}"
    );
    assert_eq!(caller, chain.len() - 1);

    let call = by_id
        .values()
        .find(|s| s.name == "ssm.describe_sessions")
        .unwrap();
    assert_eq!(
        attribute(&call.attributes, "account").as_deref(),
        Some(ssm_emulator::DEMO_ACCOUNT_ID)
    );
    assert_eq!(
        attribute(&call.attributes, "region").as_deref(),
        Some(region)
    );
}

#[tokio::test]
async fn json_log_lines_carry_the_callers_trace_and_are_all_written() {
    // Lines go out through the log writer's buffer: the audit line of a
    // request is there, with the caller's trace id, by the time the
    // process has exited.
    let (mut demo, logs) = DemoProcess::spawn_with_logs(&["--log-format", "json"], &[]);
    let trace_id = format!("{:032x}", rand::random::<u128>());
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let query =
        json!({ "query": "{ sessions(state: HISTORY, first: 1) { nodes { sessionId } } }" });
    let answer = post_traced(&demo, &query.to_string(), &traceparent).await;
    assert_eq!(answer.status, 200);
    demo.terminate();
    let status = tokio::task::spawn_blocking(move || demo.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");

    // Every line, up to the end of the pipe (the process has exited).
    let mut lines = Vec::new();
    loop {
        match logs.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => lines.push(
                serde_json::from_str::<serde_json::Value>(&line)
                    .unwrap_or_else(|e| panic!("{e}: {line}")),
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("stderr still open 10 s after exit: {e}"),
        }
    }
    let audit = lines
        .iter()
        .find(|l| l["message"] == "request served" && l["trace_id"] == trace_id.as_str())
        .unwrap_or_else(|| panic!("no audit line in the caller's trace among {lines:#?}"));
    assert_eq!(audit["target"], "audit");
    assert_eq!(audit["fields"]["status"], 200);
    assert_eq!(audit["fields"]["outcome"], "ok");
    assert_eq!(audit["span"]["name"], "http.request");
    // The span's own fields, and the same span at the root of `spans`.
    assert_eq!(audit["span"]["http.route"], "/graphql");
    assert_eq!(audit["span"]["http.request.method"], "POST");
    assert_eq!(audit["spans"][0], audit["span"]);
    assert!(
        audit["timestamp"].as_str().unwrap().ends_with('Z'),
        "{audit}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "stopped" || l["message"] == "shutting down"),
        "the last lines are written too: {lines:#?}"
    );
}

/// POSTs the GraphQL request `body` to `demo` as the admin, in the caller's
/// trace `traceparent`.
async fn post_traced(demo: &DemoProcess, body: &str, traceparent: &str) -> HttpAnswer {
    send(
        &client(),
        demo.addr,
        Method::POST,
        "/graphql",
        &[
            ("content-type", "application/json"),
            ("authorization", ADMIN),
            ("traceparent", traceparent),
        ],
        Bytes::from(body.to_owned()),
    )
    .await
}
