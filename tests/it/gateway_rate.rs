//! Per-caller rate limits (`[rate_limits]`) over real HTTP and WebSocket,
//! and the server loop's own bounds: the header read timeout, and requests
//! in flight finishing on shutdown.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;
use ssm_emulator::{EmulatorConfig, Faults, Latency};
use ssm_session_gateway::settings::{PrincipalRate, RateLimitSettings, Settings};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::ws::{Received, WsClient};
use crate::support::{
    ADMIN, HttpAnswer, PLATFORM, TestApp, dataset, emulator_config, error_codes, spawn_app_with,
    spawn_multi_with,
};

const JSON: (&str, &str) = ("content-type", "application/json");
const CHEAP: &str = "{ __typename }";

/// The demo's three accounts and both its keys, with `rate_limits`, and
/// the admin listener (for `/metrics`).
async fn spawn_limited(rate_limits: RateLimitSettings) -> TestApp {
    spawn_multi_with(EmulatorConfig::demo(crate::support::anchor()), move |s| {
        s.rate_limits = rate_limits;
        s.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await
}

/// `gateway_rate_limited_total{transport}` on the admin listener's `/metrics`.
async fn refusals_counted(app: &TestApp, transport: &str) -> u64 {
    let answer = app.admin("/metrics").await;
    let text = String::from_utf8_lossy(&answer.body);
    let series = format!("gateway_rate_limited_total{{transport=\"{transport}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

fn retry_after(answer: &HttpAnswer) -> Option<u64> {
    answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn assert_rate_limited(answer: &HttpAnswer) {
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let secs = retry_after(answer).expect("a Retry-After in whole seconds");
    assert!((1..=2).contains(&secs), "Retry-After {secs}");
    assert!(answer.content_type().starts_with("application/json"));
    let body = answer.json();
    assert_eq!(error_codes(&body), ["RATE_LIMITED"], "{body}");
    assert!(body.get("data").is_none(), "{body}");
}

#[tokio::test]
async fn a_flood_from_one_key_gets_429_while_another_caller_is_served() {
    let app = spawn_limited(RateLimitSettings {
        requests_per_second: 1,
        burst: 5,
        ..RateLimitSettings::default()
    })
    .await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..12 {
        let answer = app.graphql_as(Some(ADMIN), CHEAP, json!({})).await;
        statuses.push(answer.status.as_u16());
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refused.get_or_insert(answer);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let served = statuses.iter().filter(|s| **s == 200).count();
    eprintln!("12 requests from one key in {elapsed:.2} s at 1/s, burst 5: {statuses:?}");
    // The burst, plus what one a second refilled meanwhile.
    assert!(
        (5..=5 + 1 + elapsed as usize).contains(&served),
        "{statuses:?} in {elapsed:.2} s"
    );
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    assert_rate_limited(&refused.expect("the flood was refused"));

    // In the same window, another caller is served, over POST and GET.
    let other = app.graphql_as(Some(PLATFORM), CHEAP, json!({})).await;
    assert_eq!(other.status, StatusCode::OK);
    let get = app
        .request_as(
            Some(PLATFORM),
            Method::GET,
            "/graphql?query=%7B__typename%7D",
            &[],
            "",
        )
        .await;
    assert_eq!(get.status, StatusCode::OK);

    // GET counts against the same bucket, and a refused request costs SSM
    // nothing: it never reaches GraphQL.
    let before = app.describe_calls();
    let get = app
        .request_as(
            Some(ADMIN),
            Method::GET,
            "/graphql?query=%7Bsessions%7Bnodes%7BsessionId%7D%7D%7D",
            &[],
            "",
        )
        .await;
    assert_rate_limited(&get);
    let post = app
        .graphql_as(
            Some(ADMIN),
            "{ sessions(state: HISTORY) { nodes { sessionId } } }",
            json!({}),
        )
        .await;
    assert_rate_limited(&post);
    assert_eq!(app.describe_calls(), before);

    // Under application/graphql-response+json too: the same 429.
    let answer = app
        .request_as(
            Some(ADMIN),
            Method::POST,
            "/graphql",
            &[JSON, ("accept", "application/graphql-response+json")],
            json!({ "query": CHEAP }).to_string(),
        )
        .await;
    assert_rate_limited(&answer);

    // Every refusal is counted, by transport only (never by caller).
    let refused = statuses.iter().filter(|s| **s == 429).count() as u64 + 3;
    assert_eq!(refusals_counted(&app, "http").await, refused);
    assert_eq!(refusals_counted(&app, "websocket").await, 0);

    // Unauthenticated requests are refused by auth first (401, not 429).
    let stranger = app.graphql_as(Some("Bearer nope"), CHEAP, json!({})).await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);

    // The bucket refills: after Retry-After, the flooder is served again.
    tokio::time::sleep(Duration::from_secs(retry_after(&answer).unwrap_or(1))).await;
    let again = app.graphql_as(Some(ADMIN), CHEAP, json!({})).await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn a_principal_override_replaces_the_default() {
    let mut limits = RateLimitSettings {
        requests_per_second: 1,
        burst: 2,
        ..RateLimitSettings::default()
    };
    limits.principals.insert(
        "api_key:demo-admin".to_owned(),
        PrincipalRate {
            requests_per_second: 1000,
            burst: 1000,
        },
    );
    let app = spawn_limited(limits).await;
    for i in 0..30 {
        let answer = app.graphql_as(Some(ADMIN), CHEAP, json!({})).await;
        assert_eq!(answer.status, StatusCode::OK, "request {i}");
    }
    // demo-platform has the default: a burst of two.
    let statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..3 {
            s.push(
                app.graphql_as(Some(PLATFORM), CHEAP, json!({}))
                    .await
                    .status
                    .as_u16(),
            );
        }
        s
    };
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn rate_limits_can_be_turned_off() {
    let app = spawn_limited(RateLimitSettings {
        enabled: false,
        requests_per_second: 1,
        burst: 1,
        ..RateLimitSettings::default()
    })
    .await;
    for _ in 0..20 {
        let answer = app.graphql_as(Some(ADMIN), CHEAP, json!({})).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
}

const EVENTS: &str = "subscription { sessionEvents(includeExisting: true) { kind } }";

#[tokio::test]
async fn a_subscription_over_the_rate_gets_an_error_and_the_socket_stays_open() {
    let app = spawn_limited(RateLimitSettings {
        requests_per_second: 1,
        burst: 3,
        ..RateLimitSettings::default()
    })
    .await;
    // connection_init takes one request, each subscription one.
    let mut ws = WsClient::ready(&app.ws_url()).await;
    ws.subscribe("1", EVENTS, json!({})).await;
    ws.subscribe("2", EVENTS, json!({})).await;
    ws.subscribe("3", EVENTS, json!({})).await;
    let refused = loop {
        match ws.next_message(Duration::from_secs(5)).await {
            Received::Json(m) if m["type"] == "error" => break m,
            Received::Json(m) => assert_ne!(m["id"], "3", "only an error for 3: {m}"),
            other => panic!("expected an error message, got {other:?}"),
        }
    };
    assert_eq!(refused["id"], "3", "{refused}");
    let error = &refused["payload"][0];
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{refused}");
    assert_eq!(error["extensions"]["retryAfterSeconds"], 1, "{refused}");
    // The same bucket as HTTP: this caller's next request is refused too.
    let answer = app.graphql_as(Some(ADMIN), CHEAP, json!({})).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    // The socket is still open, and once the bucket refills the same id
    // may be used again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ws.subscribe("3", EVENTS, json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next_message(left).await {
            Received::Json(m) if m["id"] == "3" => {
                assert_ne!(m["type"], "error", "{m}");
                break;
            }
            Received::Json(_) => {}
            other => panic!("the socket should stay open: {other:?}"),
        }
    }

    // The legacy protocol gets its own shape of error: one error object.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut legacy = WsClient::connect(&app.ws_url(), "graphql-ws").await;
    legacy
        .send(json!({"type": "connection_init", "payload": {"Authorization": ADMIN}}))
        .await;
    for id in ["a", "b", "c"] {
        legacy
            .send(json!({"type": "start", "id": id, "payload": {"query": EVENTS}}))
            .await;
    }
    let refused = loop {
        match legacy.next_message(Duration::from_secs(5)).await {
            Received::Json(m) if m["type"] == "error" => break m,
            Received::Json(_) => {}
            other => panic!("expected an error message, got {other:?}"),
        }
    };
    assert_eq!(refused["id"], "c", "{refused}");
    assert_eq!(
        refused["payload"]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
    assert_eq!(refusals_counted(&app, "websocket").await, 2);
    assert_eq!(refusals_counted(&app, "http").await, 1);
}

/// A `connection_init` takes one request from its caller's rate limit: over
/// it, the socket is closed with 1013 (try again later), which graphql-ws
/// clients retry with back-off, and counted with the subscriptions refused.
#[tokio::test]
async fn a_connection_init_over_the_rate_closes_the_socket_with_1013() {
    let app = spawn_limited(RateLimitSettings {
        requests_per_second: 1,
        burst: 1,
        ..RateLimitSettings::default()
    })
    .await;
    let _first = WsClient::ready(&app.ws_url()).await;
    let mut second = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    match second.init(ADMIN).await {
        Received::Closed(code, reason) => {
            assert_eq!(
                (code, reason.as_str()),
                (1013, "Too many requests; retry in 1 s")
            );
        }
        other => panic!("expected a 1013 close, got {other:?}"),
    }
    assert_eq!(refusals_counted(&app, "websocket").await, 1);
    // Another caller has a bucket of its own; this one's refills.
    let mut other = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    match other.init(PLATFORM).await {
        Received::Json(m) if m["type"] == "connection_ack" => {}
        other => panic!("expected connection_ack, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _again = WsClient::ready(&app.ws_url()).await;
}

// ------------------------------------------------------ the server loop

/// Reads until the peer closes (or `within` passes): what it sent.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    read_bytes_until_closed(stream, within)
        .await
        .map(|got| String::from_utf8_lossy(&got).into_owned())
}

/// [`read_until_closed`], as bytes.
async fn read_bytes_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

/// The types of the whole HTTP/2 frames in `bytes`, in order.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// HTTP/2's GOAWAY frame type.
const GOAWAY: u8 = 0x7;

#[tokio::test]
async fn at_its_connection_limit_the_gateway_accepts_again_once_one_closes() {
    let mut settings = Settings::default();
    settings.http.max_connections = 2;
    settings.admin_listen = Some("127.0.0.1:0".parse().expect("address"));
    let app = spawn_app_with(emulator_config(dataset(3, 2, 5)), settings).await;
    let open = || async {
        let text = String::from_utf8(app.admin("/metrics").await.body.to_vec()).expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix("gateway_http_connections_open "))
            .map(|n| n.parse::<f64>().expect("a number"))
    };

    // Two idle connections: the limit.
    let first = TcpStream::connect(app.addr).await.expect("connect");
    let _second = TcpStream::connect(app.addr).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(5);
    while open().await != Some(2.0) {
        assert!(
            Instant::now() < deadline,
            "never 2 open: {:?}",
            open().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A third waits in the backlog, unserved (the admin listener, apart,
    // still answers).
    let mut third = TcpStream::connect(app.addr).await.expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let waited = tokio::time::timeout(Duration::from_millis(800), third.read(&mut buf)).await;
    assert!(waited.is_err(), "served past the limit: {waited:?}");
    assert_eq!(open().await, Some(2.0));

    // One closes: the third is served.
    drop(first);
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("served once a connection closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // A WebSocket leaves the count once upgraded (`live.max_connections`
    // counts it): beside it and the idle one, another connection is served.
    let _socket = WsClient::ready(&app.ws_url()).await;
    let mut another = TcpStream::connect(app.addr).await.expect("connect");
    another
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_until_closed(&mut another, Duration::from_secs(5))
        .await
        .expect("served beside the socket");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_cut_off_and_others_are_served() {
    let mut settings = Settings::default();
    settings.http.header_read_timeout_secs = 1;
    let app = spawn_app_with(emulator_config(dataset(3, 2, 5)), settings).await;

    // Half a request line, then nothing.
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(b"POST /graphql HT").await.expect("write");
    // Nothing at all.
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    // A whole head, then stalling in the middle of the next request's.
    let mut keep_alive = TcpStream::connect(app.addr).await.expect("connect");
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost:")
        .await
        .expect("write");

    let started = Instant::now();
    // Meanwhile, on another connection, a normal request is served.
    let res = app.graphql(CHEAP, json!({})).await;
    assert_eq!(res["data"]["__typename"], "Query", "{res}");

    let within = Duration::from_secs(4);
    let answer = read_until_closed(&mut slow, within)
        .await
        .expect("closed within the timeout");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    eprintln!(
        "half a request line, then nothing: {:?}",
        answer.lines().next().unwrap_or("closed without an answer")
    );
    assert!(read_until_closed(&mut silent, within).await.is_some());
    let answer = read_until_closed(&mut keep_alive, within)
        .await
        .expect("closed within the timeout");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.matches("HTTP/1.1 200").count() == 1,
        "the first request was served, the stalled one not: {answer:?}"
    );
    let elapsed = started.elapsed();
    eprintln!("header read timeout 1 s: the three stalled connections closed within {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}

/// An admin's POST of `{ sessions(state: ACTIVE) { nodes { sessionId } } }`
/// to the gateway at `addr`: it reads every source upstream.
fn active_sessions(
    addr: std::net::SocketAddr,
) -> hyper::Request<http_body_util::Full<hyper::body::Bytes>> {
    let body =
        json!({ "query": "{ sessions(state: ACTIVE) { nodes { sessionId } } }" }).to_string();
    hyper::Request::post(format!("http://{addr}/graphql"))
        .header("content-type", "application/json")
        .header("authorization", ADMIN)
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .expect("request")
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_a_slow_request_on_one_is_not() {
    let mut config = emulator_config(dataset(3, 2, 5));
    config.faults = Faults {
        latency: Latency::Fixed(Duration::from_millis(1500)),
        ..Faults::default()
    };
    let mut settings = Settings::default();
    settings.http.header_read_timeout_secs = 1;
    let app = spawn_app_with(config, settings).await;

    // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write");
    let silent_since = Instant::now();
    let silent = tokio::spawn(async move {
        let got = read_bytes_until_closed(&mut silent, Duration::from_secs(6)).await;
        (got, silent_since.elapsed())
    });

    // A client speaking HTTP/2 with prior knowledge.
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(app.addr).await.expect("connect"));
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    // A request that takes 1.5 s upstream, past the timeout: answered.
    let request = active_sessions(app.addr);
    let started = Instant::now();
    let response = send.send_request(request).await.expect("answered");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert!(answer["data"]["sessions"]["nodes"].is_array(), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(1400));

    // Then idle: the gateway closes it, about a timeout after the answer.
    let answered = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(4), connection)
        .await
        .expect("closed within 4 s of the answer");
    let idle = answered.elapsed();
    eprintln!("idle HTTP/2 connection closed after {idle:?}: {closed:?}");
    assert!(idle >= Duration::from_millis(500), "{idle:?}");
    // Gracefully: a GOAWAY, then the end of the connection.
    assert!(matches!(closed, Ok(Ok(()))), "{closed:?}");
    assert!(
        send.send_request(hyper::Request::new(http_body_util::Full::default()))
            .await
            .is_err()
    );

    let (got, silent_for) = silent.await.expect("joins");
    let got = got.expect("closed within 6 s");
    // A GOAWAY, then a PING this client leaves unanswered (hyper's
    // graceful shutdown waits for its answer): closed a timeout later.
    let types = frame_types(&got);
    eprintln!("silent HTTP/2 connection: frames {types:?}, closed after {silent_for:?}");
    assert!(types.contains(&GOAWAY), "frames {types:?}");
    assert!(
        silent_for >= Duration::from_millis(1500) && silent_for < Duration::from_secs(4),
        "{silent_for:?}"
    );
}

#[tokio::test]
async fn requests_in_flight_finish_on_shutdown() {
    let mut config = emulator_config(dataset(4, 2, 5));
    config.faults = Faults {
        latency: Latency::Fixed(Duration::from_millis(600)),
        ..Faults::default()
    };
    let mut app = spawn_app_with(config, Settings::default()).await;
    let app_addr = app.addr;
    // A request that takes 600 ms upstream, on its own client...
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let req = active_sessions(app_addr);
    let in_flight = tokio::spawn(async move { client.request(req).await });
    // ...is in flight when the gateway is told to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.stop_gateway();
    let answer = in_flight.await.expect("joins").expect("answered");
    assert_eq!(answer.status(), StatusCode::OK);
    // And then nothing listens.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(app_addr).await.is_err());
}
