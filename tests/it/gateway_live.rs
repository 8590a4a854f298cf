//! Live sessions over real WebSockets: `sessionEvents` (with a Rust client
//! and with the graphql-ws reference client), `terminateSession`, what
//! subscribers cost SSM, and the connection's close codes.

use sha2::Digest as _;
use std::io::BufRead as _;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use ssm_emulator::{
    DEMO_ACCOUNT_ID, DEMO_REGION, EmulatorConfig, Faults, demo_credentials, demo_roles,
};
use ssm_session_gateway::settings::Settings;

use crate::support::ws::{Received, WsClient, reference_client, run_script, script_stdout};
use crate::support::{
    TestApp, anchor, dataset, emulator_config, error_codes, spawn_app_with, spawn_multi_with,
};

/// The poll interval of these tests (the Active TTL is 0 in them).
const POLL: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(10);

const EVENTS: &str = r#"
subscription($accounts: [ID!], $filter: SessionFilter, $existing: Boolean) {
  sessionEvents(accounts: $accounts, filter: $filter, includeExisting: $existing) {
    kind at session { id sessionId status target account { alias } region endDate }
  }
}"#;

const TERMINATE: &str = r#"
mutation($id: ID!) {
  terminateSession(input: { id: $id }) { sessionId session { sessionId status endDate } }
}"#;

fn live_settings() -> Settings {
    let mut settings = Settings::default();
    settings.live.terminate_enabled = true;
    settings.live.min_poll_interval_ms = POLL.as_millis() as u64;
    settings.live.init_timeout_ms = 300;
    settings
}

/// The gateway over one account and region with `active` Active sessions.
async fn spawn_live(active: usize, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = live_settings();
    adjust(&mut settings);
    spawn_app_with(emulator_config(dataset(41, active, 5)), settings).await
}

/// A session's global id, as the gateway mints them.
fn node_id(account: &str, region: &str, session: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("Session:{account}:{region}:{session}"))
}

fn kind_of(event: &Value) -> &str {
    event["kind"].as_str().unwrap_or_default()
}

fn session_id(event: &Value) -> &str {
    event["session"]["sessionId"].as_str().unwrap_or_default()
}

/// Starts a session through the emulator's control endpoint.
async fn start_session(app: &TestApp, account: &str, session_id: &str, target: &str) {
    let (status, body) = app
        .emulator_control(
            Method::POST,
            "/_emulator/sessions",
            json!({
                "account": account,
                "region": DEMO_REGION,
                "sessionId": session_id,
                "target": target,
                "status": "Connecting",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["SessionId"], session_id);
}

#[tokio::test]
async fn a_terminated_session_ends_for_subscribers_and_moves_to_history() {
    let active = 4;
    let app = spawn_live(active, |_| {}).await;
    let mut client = WsClient::ready(&app.ws_url()).await;
    client
        .subscribe("1", EVENTS, json!({ "existing": true }))
        .await;
    let mut existing = Vec::new();
    while existing.len() < active {
        existing.extend(client.events_until(WAIT, |_| true).await);
    }
    assert!(
        existing.iter().all(|e| kind_of(e) == "STARTED"),
        "{existing:?}"
    );
    let victim = existing[0]["session"].clone();

    // Another client (HTTP) ends it.
    let answer = app.graphql(TERMINATE, json!({ "id": victim["id"] })).await;
    assert_eq!(error_codes(&answer), Vec::<String>::new(), "{answer}");
    let payload = &answer["data"]["terminateSession"];
    assert_eq!(payload["sessionId"], victim["sessionId"]);
    assert_eq!(payload["session"]["status"], "TERMINATED");
    assert!(payload["session"]["endDate"].is_string(), "{payload}");
    assert_eq!(app.emulator.calls("TerminateSession"), 1);

    let events = client.events_until(WAIT, |e| kind_of(e) == "ENDED").await;
    let ended = events.last().unwrap();
    assert_eq!(session_id(ended), victim["sessionId"].as_str().unwrap());
    // The last snapshot seen while it was active: no extra call for it.
    assert_ne!(ended["session"]["status"], "TERMINATED");

    // Idempotent: again succeeds, and the session stays terminated.
    let again = app.graphql(TERMINATE, json!({ "id": victim["id"] })).await;
    assert_eq!(error_codes(&again), Vec::<String>::new(), "{again}");
    assert_eq!(
        again["data"]["terminateSession"]["session"]["status"],
        "TERMINATED"
    );
    // Listed in History now, not in Active.
    let lists = app
        .graphql(
            r#"{ active: sessions(state: ACTIVE) { nodes { sessionId } }
                 history: sessions(state: HISTORY, filter: { sessionId: $id }) { nodes { status } } }"#
                .replace("$id", &format!("{:?}", victim["sessionId"].as_str().unwrap()))
                .as_str(),
            json!({}),
        )
        .await;
    assert!(
        !lists["data"]["active"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["sessionId"] == victim["sessionId"]),
        "{lists}"
    );
    assert_eq!(lists["data"]["history"]["nodes"][0]["status"], "TERMINATED");
}

#[tokio::test]
async fn started_and_changed_arrive_for_sessions_moved_through_the_control_endpoint() {
    let app = spawn_live(1, |_| {}).await;
    let mut client = WsClient::ready(&app.ws_url()).await;
    client
        .subscribe("1", EVENTS, json!({ "existing": true }))
        .await;
    // The existing session: the poller has its baseline.
    client.events_until(WAIT, |e| kind_of(e) == "STARTED").await;

    let id = "control-0123456789abcdef0";
    start_session(&app, DEMO_ACCOUNT_ID, id, "i-0aaaaaaaaaaaaaaaa").await;
    let started = client.events_until(WAIT, |e| session_id(e) == id).await;
    let started = started.last().unwrap();
    assert_eq!(kind_of(started), "STARTED");
    assert_eq!(started["session"]["status"], "CONNECTING");
    assert_eq!(started["session"]["account"]["alias"], "demo");

    let (status, _) = app
        .emulator_control(
            Method::PATCH,
            &format!("/_emulator/sessions/{DEMO_ACCOUNT_ID}/{DEMO_REGION}/{id}"),
            json!({ "status": "Connected" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let changed = client.events_until(WAIT, |e| session_id(e) == id).await;
    let changed = changed.last().unwrap();
    assert_eq!(kind_of(changed), "CHANGED");
    assert_eq!(changed["session"]["status"], "CONNECTED");

    let (status, _) = app
        .emulator_control(
            Method::PATCH,
            &format!("/_emulator/sessions/{DEMO_ACCOUNT_ID}/{DEMO_REGION}/{id}"),
            json!({ "status": "Failed" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ended = client.events_until(WAIT, |e| session_id(e) == id).await;
    assert_eq!(kind_of(ended.last().unwrap()), "ENDED");
}

#[tokio::test]
async fn a_hundred_subscribers_cost_what_one_does_and_polling_stops_after_them() {
    let app = spawn_live(3, |s| s.live.min_poll_interval_ms = 200).await;
    let window = Duration::from_millis(1500);

    let mut first = WsClient::ready(&app.ws_url()).await;
    first.subscribe("1", EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = app.describe_calls();
    tokio::time::sleep(window).await;
    let one = app.describe_calls() - before;

    let mut others = Vec::new();
    for _ in 0..99 {
        let mut client = WsClient::ready(&app.ws_url()).await;
        client.subscribe("1", EVENTS, json!({})).await;
        others.push(client);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = app.describe_calls();
    tokio::time::sleep(window).await;
    let hundred = app.describe_calls() - before;
    // 1.5 s at one read per 200 ms: at most 8, one page each (fewer on a
    // loaded machine: the bound that matters is the next one).
    assert!((2..=9).contains(&one), "one subscriber: {one} calls");
    assert!(
        hundred <= one + 1,
        "100 subscribers: {hundred} calls, one: {one}"
    );

    drop(others);
    drop(first);
    // The pollers notice at their next tick.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = app.describe_calls();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        app.describe_calls(),
        after,
        "polling goes on without subscribers"
    );
}

#[tokio::test]
async fn a_subscriber_never_sees_what_its_accounts_or_filter_exclude() {
    let mut config = EmulatorConfig::new(
        ssm_emulator::Dataset::generate(&ssm_emulator::DataSpec::demo(anchor())),
        demo_credentials(),
    );
    config.roles = demo_roles();
    let app = spawn_multi_with(config, |s| {
        s.cache.active_ttl_secs = 0;
        s.live.min_poll_interval_ms = POLL.as_millis() as u64;
    })
    .await;
    let payments = ssm_emulator::DEMO_ACCOUNT_IDS[1];
    let wanted = "i-0bbbbbbbbbbbbbbbb";
    let mut narrow = WsClient::ready(&app.ws_url()).await;
    narrow
        .subscribe(
            "1",
            EVENTS,
            json!({ "accounts": ["payments"], "filter": { "target": wanted } }),
        )
        .await;
    let mut wide = WsClient::ready(&app.ws_url()).await;
    wide.subscribe("1", EVENTS, json!({})).await;
    // Let every poller read its baseline first.
    tokio::time::sleep(Duration::from_millis(500)).await;

    start_session(
        &app,
        DEMO_ACCOUNT_ID,
        "other-account-0000000000000001",
        wanted,
    )
    .await;
    start_session(
        &app,
        payments,
        "other-target-0000000000000002",
        "i-0ccccccccccccccc",
    )
    .await;
    start_session(&app, payments, "wanted-0000000000000003", wanted).await;
    // The wide subscriber sees all three: they did happen.
    let mut wide_ids = std::collections::BTreeSet::new();
    wide.events_until(WAIT, |e| {
        wide_ids.insert(session_id(e).to_owned());
        [
            "other-account-0000000000000001",
            "other-target-0000000000000002",
            "wanted-0000000000000003",
        ]
        .iter()
        .all(|id| wide_ids.contains(*id))
    })
    .await;
    let narrow_seen = narrow
        .events_until(WAIT, |e| session_id(e) == "wanted-0000000000000003")
        .await;
    assert_eq!(narrow_seen.len(), 1, "{narrow_seen:?}");
    // Nothing else follows, however long we listen.
    let later = narrow.drain(Duration::from_millis(500)).await;
    assert!(later.is_empty(), "{later:?}");
}

#[tokio::test]
async fn bad_ids_are_bad_user_input_and_terminating_is_off_by_default() {
    let app = spawn_live(1, |_| {}).await;
    for id in ["nope", "U2Vzc2lvbjo", "U2Vzc2lvbjoxOmV1LXdlc3QtMTp4"] {
        let answer = app.graphql(TERMINATE, json!({ "id": id })).await;
        assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"], "{id}: {answer}");
        assert!(answer["data"].is_null(), "{answer}");
    }
    // An account no longer configured.
    let other = node_id("999999999999", DEMO_REGION, "x-1");
    let answer = app.graphql(TERMINATE, json!({ "id": other })).await;
    assert_eq!(error_codes(&answer), ["ACCOUNT_NOT_FOUND"], "{answer}");
    assert_eq!(app.emulator.calls("TerminateSession"), 0);

    let off = spawn_app_with(emulator_config(dataset(41, 1, 1)), Settings::default()).await;
    let id = node_id(DEMO_ACCOUNT_ID, DEMO_REGION, "x-1");
    let answer = off.graphql(TERMINATE, json!({ "id": id })).await;
    assert_eq!(error_codes(&answer), ["FORBIDDEN"], "{answer}");
    assert_eq!(off.emulator.calls("TerminateSession"), 0);
    // Mutations are POST only.
    let get = off
        .request(
            Method::GET,
            &format!(
                "/graphql?query={}",
                "mutation%7BterminateSession(input%3A%7Bid%3A%22x%22%7D)%7BsessionId%7D%7D"
            ),
            &[("accept", "application/json")],
            "",
        )
        .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn connections_are_closed_with_the_protocols_codes() {
    let app = spawn_live(1, |s| {
        s.live.ping_interval_ms = 200;
        s.live.max_subscriptions_per_connection = 1;
    })
    .await;

    // No connection_init within the timeout (300 ms): 4408.
    let mut silent = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    let started = std::time::Instant::now();
    match silent.next_message(Duration::from_secs(3)).await {
        Received::Closed(code, reason) => {
            assert_eq!(
                (code, reason.as_str()),
                (4408, "Connection initialisation timeout")
            );
        }
        other => panic!("expected a 4408 close, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    // A subscribe before connection_init: 4401.
    let mut eager = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    eager.subscribe("1", EVENTS, json!({})).await;
    match eager.next_message(Duration::from_secs(3)).await {
        Received::Closed(code, _) => assert_eq!(code, 4401),
        other => panic!("expected a 4401 close, got {other:?}"),
    }

    // A first message that is no message (not JSON, or without a `type`):
    // 4400.
    for text in ["{", "[]", r#"{"payload": {}}"#, r#"{"type": 1}"#] {
        let mut garbled = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
        garbled.send_text(text).await;
        match garbled.next_message(Duration::from_secs(3)).await {
            Received::Closed(code, reason) => {
                assert_eq!((code, reason.as_str()), (4400, "Invalid message"), "{text}");
            }
            other => panic!("expected a 4400 close for {text}, got {other:?}"),
        }
    }

    // connection_init without credentials, or with a key nobody has: 4403.
    for payload in [json!({}), json!({"Authorization": "Bearer not-a-key"})] {
        let mut stranger = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
        stranger
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        match stranger.next_message(Duration::from_secs(3)).await {
            Received::Closed(code, _) => assert_eq!(code, 4403, "{payload}"),
            other => panic!("expected a 4403 close for {payload}, got {other:?}"),
        }
    }

    // A message the protocol does not have: 4400, with why (cut to what a
    // close frame holds; serde's message is longer).
    let mut confused = WsClient::ready(&app.ws_url()).await;
    confused.send(json!({"type": "bogus"})).await;
    match confused.next_message(Duration::from_secs(3)).await {
        Received::Closed(code, reason) => {
            assert_eq!(code, 4400, "{reason}");
            assert!(reason.contains("bogus") && reason.len() <= 123, "{reason}");
        }
        other => panic!("expected a 4400 close, got {other:?}"),
    }

    // The server pings an idle connection.
    let mut idle = WsClient::ready(&app.ws_url()).await;
    match idle.next_message(Duration::from_secs(2)).await {
        Received::Json(m) => assert_eq!(m["type"], "ping"),
        other => panic!("expected a ping, got {other:?}"),
    }
    // The legacy protocol gets its keep-alive.
    let mut legacy = WsClient::connect(&app.ws_url(), "graphql-ws").await;
    legacy
        .send(
            json!({"type": "connection_init", "payload": {"Authorization": crate::support::ADMIN}}),
        )
        .await;
    let mut types = Vec::new();
    for _ in 0..2 {
        if let Received::Json(m) = legacy.next_message(Duration::from_secs(2)).await {
            types.push(m["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(types, ["connection_ack", "ka"]);

    // One subscription per connection here: a second is refused.
    idle.subscribe("1", EVENTS, json!({})).await;
    idle.subscribe("2", EVENTS, json!({})).await;
    let refused = loop {
        match idle.next_message(WAIT).await {
            Received::Json(m) if m["type"] == "error" => break m,
            Received::Json(m) if m["type"] == "next" && m["payload"]["errors"].is_array() => {
                break m;
            }
            Received::Json(_) => {}
            other => panic!("expected an error, got {other:?}"),
        }
    };
    assert_eq!(refused["id"], "2", "{refused}");
    assert!(
        refused.to_string().contains("TOO_MANY_SUBSCRIPTIONS"),
        "{refused}"
    );
}

/// graphql-transport-ws keeps subscription ids unique: a second
/// `subscribe` under a running id closes the socket with 4409; an id is
/// free again once the server completes it or the client does.
#[tokio::test]
async fn a_running_subscription_id_is_not_reused() {
    let app = spawn_live(1, |_| {}).await;
    let typename = "{ __typename }";
    let mut ws = WsClient::ready(&app.ws_url()).await;
    // Completed by the server (a query's one result), then reused.
    for _ in 0..2 {
        ws.subscribe("q", typename, json!({})).await;
        let next = ws.first_for("q", WAIT).await;
        assert_eq!(next["payload"]["data"]["__typename"], "Query", "{next}");
        let complete = ws.first_for("q", WAIT).await;
        assert_eq!(complete["type"], "complete", "{complete}");
    }
    // Completed by the client, then reused.
    ws.subscribe("s", EVENTS, json!({})).await;
    ws.send(json!({"id": "s", "type": "complete"})).await;
    ws.subscribe("s", EVENTS, json!({})).await;
    ws.subscribe("alive", typename, json!({})).await;
    let alive = ws.first_for("alive", WAIT).await;
    assert_eq!(alive["type"], "next", "{alive}");
    // Running: a second subscribe under its id closes the socket.
    ws.subscribe("s", EVENTS, json!({})).await;
    let closed = loop {
        match ws.next_message(WAIT).await {
            Received::Json(_) => {}
            other => break other,
        }
    };
    match closed {
        Received::Closed(code, reason) => {
            assert_eq!(
                (code, reason.as_str()),
                (4409, "Subscriber for s already exists")
            );
        }
        other => panic!("expected a 4409 close, got {other:?}"),
    }
}

/// A WebSocket message is bounded as a request body is
/// (`http.body_limit_bytes`): over it, before `connection_init` or after,
/// the socket is closed with 1009, and nothing that large is kept.
#[tokio::test]
async fn a_message_over_the_body_limit_closes_the_socket_with_1009() {
    let app = spawn_live(1, |_| {}).await;
    let limit = ssm_session_gateway::settings::HttpSettings::default().body_limit_bytes;
    let query = format!(
        "subscription {{ sessionEvents {{ kind }} }} #{}",
        "x".repeat(limit)
    );
    let mut before_init = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    before_init
        .send(json!({"type": "connection_init", "payload": {"pad": "x".repeat(limit)}}))
        .await;
    let mut subscribed = WsClient::ready(&app.ws_url()).await;
    subscribed.subscribe("1", &query, json!({})).await;
    for client in [&mut before_init, &mut subscribed] {
        match client.next_message(WAIT).await {
            Received::Closed(code, reason) => {
                assert_eq!((code, reason.as_str()), (1009, "Message too big"));
            }
            other => panic!("expected a 1009 close, got {other:?}"),
        }
    }
    // Just under the limit is read as usual.
    let mut fits = WsClient::ready(&app.ws_url()).await;
    let padding = limit - 200;
    let query = format!("{{ __typename }} #{}", "x".repeat(padding));
    fits.subscribe("2", &query, json!({})).await;
    let next = fits.first_for("2", WAIT).await;
    assert_eq!(next["payload"]["data"]["__typename"], "Query", "{next}");
}

/// A client that closes (1000) gets its close frame back, as RFC 6455
/// asks: before `connection_init`, and once subscribed. Dropped without
/// one, it would see an abnormal closure (1006), and graphql-ws's default
/// lazy client, which closes whenever it has no subscription, would fail
/// its next one (tests/ws/persisted.mjs goes through that).
#[tokio::test]
async fn a_client_close_is_answered_with_a_close() {
    let app = spawn_live(1, |_| {}).await;
    let mut before_init = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    let mut subscribed = WsClient::ready(&app.ws_url()).await;
    subscribed.subscribe("1", EVENTS, json!({})).await;
    for client in [&mut before_init, &mut subscribed] {
        client.close().await;
        let answer = loop {
            match client.next_message(WAIT).await {
                // A subscription's events may still be on their way.
                Received::Json(m) if m["type"] != "error" => {}
                other => break other,
            }
        };
        match answer {
            Received::Closed(code, reason) => assert_eq!((code, reason.as_str()), (1000, "bye")),
            other => panic!("expected the close echoed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_failing_source_reports_its_error_and_the_stream_carries_on() {
    let app = spawn_live(1, |_| {}).await;
    let mut client = WsClient::ready(&app.ws_url()).await;
    client
        .subscribe("1", EVENTS, json!({ "existing": true }))
        .await;
    client.events_until(WAIT, |e| kind_of(e) == "STARTED").await;

    app.emulator.set_faults(Faults {
        error_ratio: 1.0,
        ..Faults::default()
    });
    let failure = client.next_payload(WAIT).await;
    assert!(failure["data"].is_null(), "{failure}");
    let error = &failure["errors"][0]["extensions"];
    assert_eq!(error["code"], "UPSTREAM_UNAVAILABLE", "{failure}");
    assert_eq!(error["account"], DEMO_ACCOUNT_ID);
    assert_eq!(error["region"], DEMO_REGION);

    app.emulator.set_faults(Faults::default());
    let id = "after-0123456789abcdef0";
    start_session(&app, DEMO_ACCOUNT_ID, id, "i-0aaaaaaaaaaaaaaaa").await;
    let events = client.events_until(WAIT, |e| session_id(e) == id).await;
    assert_eq!(kind_of(events.last().unwrap()), "STARTED");
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let mut app = spawn_live(1, |_| {}).await;
    let mut client = WsClient::ready(&app.ws_url()).await;
    client.subscribe("1", EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.stop_gateway();
    let closed = loop {
        match client.next_message(Duration::from_secs(3)).await {
            Received::Json(_) => {}
            other => break other,
        }
    };
    match closed {
        Received::Closed(code, _) => assert_eq!(code, 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
}

/// The protocol's reference client, npm `graphql-ws` (installed in
/// tests/ws by `npm ci`; tests/run.sh does it), sees ENDED for a session
/// another client terminates.
#[tokio::test]
async fn the_graphql_ws_reference_client_sees_a_termination() {
    let app = spawn_live(3, |_| {}).await;
    let listing = app
        .graphql(
            "{ sessions(state: ACTIVE, first: 1) { nodes { id sessionId } } }",
            json!({}),
        )
        .await;
    let victim = listing["data"]["sessions"]["nodes"][0].clone();
    let victim_id = victim["sessionId"].as_str().unwrap().to_owned();

    let mut node = reference_client("subscribe.mjs")
        .arg(app.ws_url())
        .arg(&victim_id)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("node runs");
    let stdout = node.stdout.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_for = |want: String| move |line: &String| line.starts_with(&want);
    let expect_line = async |lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
                             seen: &mut Vec<String>,
                             want: &dyn Fn(&String) -> bool| {
        loop {
            let line = tokio::time::timeout(WAIT, lines.recv())
                .await
                .unwrap_or_else(|_| panic!("graphql-ws printed nothing more; so far {seen:?}"))
                .unwrap_or_else(|| panic!("graphql-ws ended; it printed {seen:?}"));
            seen.push(line.clone());
            if want(&line) {
                return;
            }
        }
    };
    expect_line(
        &mut lines,
        &mut seen,
        &wait_for(format!("STARTED {victim_id}")),
    )
    .await;
    let answer = app.graphql(TERMINATE, json!({ "id": victim["id"] })).await;
    assert_eq!(error_codes(&answer), Vec::<String>::new(), "{answer}");
    expect_line(
        &mut lines,
        &mut seen,
        &wait_for(format!("ENDED {victim_id}")),
    )
    .await;
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "node: {status}; printed {seen:?}");
}

#[tokio::test]
async fn only_a_caller_with_the_terminate_scope_may_terminate() {
    use ssm_session_gateway::model::Scope;
    use ssm_session_gateway::settings::{ApiKeySettings, GrantSettings};

    let app = spawn_live(2, |s| {
        let mut auth = crate::support::admin_auth();
        // `printf %s reader-key | sha256sum`: reads everything, ends nothing.
        auth.api_keys.push(ApiKeySettings {
            name: "reader".to_owned(),
            sha256: vec![
                "ec4408df15da46b328f6f3246fa723d0aa6cb0f0a0dd9c4626080ab1b02aa3b2".to_owned(),
            ],
            grants: vec![GrantSettings {
                accounts: vec!["*".to_owned()],
                scopes: vec![Scope::SessionsRead],
            }],
            expires: None,
        });
        s.auth = auth;
    })
    .await;
    let listed = app
        .graphql(
            "{ sessions(state: ACTIVE, first: 1) { nodes { id sessionId } } }",
            json!({}),
        )
        .await;
    let victim = listed["data"]["sessions"]["nodes"][0].clone();
    let before = app.emulator.calls("TerminateSession");
    let answer = app
        .graphql_as(
            Some("Bearer reader-key"),
            TERMINATE,
            json!({ "id": victim["id"] }),
        )
        .await
        .json();
    assert_eq!(
        crate::support::error_codes(&answer),
        ["FORBIDDEN"],
        "{answer}"
    );
    assert_eq!(
        app.emulator.calls("TerminateSession"),
        before,
        "nothing sent"
    );
    // The admin may.
    let answer = app.graphql(TERMINATE, json!({ "id": victim["id"] })).await;
    assert_eq!(
        answer["data"]["terminateSession"]["sessionId"], victim["sessionId"],
        "{answer}"
    );
}

/// The value of an unlabelled gauge or counter series in a scrape.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn open_sockets_and_running_subscriptions_are_gauged() {
    let app = spawn_live(1, |s| {
        s.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let scrape = || async { String::from_utf8(app.admin("/metrics").await.body.to_vec()).unwrap() };
    let mut client = WsClient::ready(&app.ws_url()).await;
    client.subscribe("1", EVENTS, json!({})).await;
    client.subscribe("2", EVENTS, json!({})).await;
    // A refused connection is counted, not gauged.
    let mut refused = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    refused
        .send(json!({ "type": "connection_init", "payload": { "Authorization": "Bearer nope" } }))
        .await;
    assert!(matches!(
        refused.next_message(WAIT).await,
        Received::Closed(4403, _)
    ));
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = scrape().await;
        if metric(&text, "gateway_subscriptions_active") == 2.0 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(metric(&text, "gateway_websockets_open"), 1.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "gateway_websocket_connections_total{outcome=\"accepted\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "gateway_websocket_connections_total{outcome=\"refused\"}"
        ),
        1.0
    );
    drop(client);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = scrape().await;
        if metric(&text, "gateway_subscriptions_active") == 0.0
            && metric(&text, "gateway_websockets_open") == 0.0
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(POLL).await;
    }
}

/// Retries `connect` until it gives a socket (one just closed takes a moment
/// to give its place back), within [`WAIT`].
async fn connect_within(app: &TestApp) -> WsClient {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match WsClient::try_connect(&app.ws_url(), "graphql-transport-ws").await {
            Ok(client) => return client,
            Err(refused) => assert!(
                std::time::Instant::now() < deadline,
                "still refused: {refused:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `live.max_connections` counts every socket, one that has not sent
/// `connection_init` too: one more upgrade is HTTP 503 `OVERLOADED`, before
/// it is a socket; a socket closed gives its place back.
#[tokio::test]
async fn sockets_past_the_replica_limit_are_refused_before_the_upgrade() {
    let app = spawn_live(1, |s| {
        s.live.max_connections = 2;
        s.live.init_timeout_ms = 60_000;
        s.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let mut connected = WsClient::ready(&app.ws_url()).await;
    let _no_credentials = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    let refused = match WsClient::try_connect(&app.ws_url(), "graphql-transport-ws").await {
        Err(refused) => refused,
        Ok(_) => panic!("a third socket was upgraded"),
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value =
        serde_json::from_slice(refused.body().as_deref().unwrap_or_default()).expect("a JSON body");
    assert_eq!(error_codes(&body), ["OVERLOADED"], "{body}");
    // HTTP is not held back by the sockets.
    let answer = app.graphql("{ __typename }", json!({})).await;
    assert_eq!(answer["data"]["__typename"], "Query", "{answer}");
    // Both gauged: one past connection_init, one not.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8(app.admin("/metrics").await.body.to_vec()).unwrap();
        let open = metric(&text, "gateway_websockets_open");
        if (open, metric(&text, "gateway_websockets_connecting")) == (1.0, 1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(POLL).await;
    }

    connected.close().await;
    let mut again = connect_within(&app).await;
    assert!(
        matches!(again.init(crate::support::ADMIN).await, Received::Json(m) if m["type"] == "connection_ack")
    );
    let text = String::from_utf8(app.admin("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metric(
            &text,
            "gateway_websocket_connections_total{outcome=\"overloaded\"}"
        ) >= 1.0,
        "{text}"
    );
}

/// `live.max_connections_per_caller`: past it, that caller's
/// `connection_init` closes its socket with 1013 (try again later); other
/// callers connect, and a socket closed gives the caller its place back.
#[tokio::test]
async fn a_caller_past_its_sockets_is_closed_with_1013_and_others_connect() {
    let app = spawn_live(1, |s| {
        s.live.max_connections_per_caller = 2;
        s.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        // A second caller, with the admin's grants under a key of its own.
        s.auth = crate::support::admin_auth();
        let mut other = s.auth.api_keys[0].clone();
        other.name = "other".to_owned();
        other.sha256 = vec![format!("{:x}", sha2::Sha256::digest(b"other-key"))];
        s.auth.api_keys.push(other);
    })
    .await;
    let mut first = WsClient::ready(&app.ws_url()).await;
    let _second = WsClient::ready(&app.ws_url()).await;
    let mut third = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    match third.init(crate::support::ADMIN).await {
        Received::Closed(code, reason) => assert_eq!(
            (code, reason.as_str()),
            (1013, "Too many connections for this caller")
        ),
        other => panic!("expected a 1013 close, got {other:?}"),
    }
    let mut other = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
    match other.init("Bearer other-key").await {
        Received::Json(m) if m["type"] == "connection_ack" => {}
        other => panic!("expected connection_ack, got {other:?}"),
    }

    let text = String::from_utf8(app.admin("/metrics").await.body.to_vec()).unwrap();
    assert_eq!(
        metric(
            &text,
            "gateway_websocket_connections_total{outcome=\"caller_limit\"}"
        ),
        1.0,
        "{text}"
    );

    first.close().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut again = WsClient::connect(&app.ws_url(), "graphql-transport-ws").await;
        match again.init(crate::support::ADMIN).await {
            Received::Json(m) if m["type"] == "connection_ack" => break,
            Received::Closed(1013, _) => {
                assert!(std::time::Instant::now() < deadline, "still refused");
            }
            other => panic!("expected connection_ack or 1013, got {other:?}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// graphql-transport-ws runs queries and mutations too (a `subscribe` of
/// any operation, answered with one `next` and a `complete`; the legacy
/// protocol's `start` the same), each within an upstream budget of its own,
/// as over HTTP: two queries on one socket that each spend the whole
/// budget both run.
#[tokio::test]
async fn queries_and_mutations_run_over_a_websocket_each_with_its_own_budget() {
    let app = spawn_live(3, |s| s.limits.max_upstream_calls_per_source = 3).await;
    // Two upstream pages of one session (estimated at three): most of the
    // budget, so that two of them within one budget would not run.
    let page = "{ sessions(state: ACTIVE, first: 2, pageSize: 1) { nodes { id sessionId } } }";
    let over_http = app.graphql(page, json!({})).await;
    assert_eq!(error_codes(&over_http), Vec::<String>::new(), "{over_http}");
    let mut client = WsClient::ready(&app.ws_url()).await;
    for id in ["q1", "q2"] {
        let calls = app.emulator.calls("DescribeSessions");
        client.subscribe(id, page, json!({})).await;
        let next = client.first_for(id, WAIT).await;
        assert_eq!(next["type"], "next", "{next}");
        assert_eq!(next["payload"], over_http, "{next}");
        assert_eq!(client.first_for(id, WAIT).await["type"], "complete");
        assert_eq!(
            app.emulator.calls("DescribeSessions"),
            calls + 2,
            "two calls each"
        );
    }

    let victim = &over_http["data"]["sessions"]["nodes"][0];
    client
        .subscribe("m", TERMINATE, json!({ "id": victim["id"] }))
        .await;
    let next = client.first_for("m", WAIT).await;
    assert_eq!(
        error_codes(&next["payload"]),
        Vec::<String>::new(),
        "{next}"
    );
    assert_eq!(
        next["payload"]["data"]["terminateSession"]["sessionId"], victim["sessionId"],
        "{next}"
    );
    assert_eq!(
        next["payload"]["data"]["terminateSession"]["session"]["status"], "TERMINATED",
        "{next}"
    );

    let mut legacy = WsClient::connect(&app.ws_url(), "graphql-ws").await;
    legacy
        .send(
            json!({"type": "connection_init", "payload": {"Authorization": crate::support::ADMIN}}),
        )
        .await;
    legacy
        .send(json!({"type": "start", "id": "l", "payload": {"query": page}}))
        .await;
    let data = loop {
        let message = legacy.first_for("l", WAIT).await;
        if message["type"] == "data" {
            break message;
        }
    };
    assert_eq!(
        error_codes(&data["payload"]),
        Vec::<String>::new(),
        "{data}"
    );
    assert_eq!(
        data["payload"]["data"]["sessions"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

/// graphql-ws, the reference client, retries a socket closed with 1013 by
/// itself (its default rules: 1013 is "try again later"), and connects once
/// its caller holds a socket fewer.
#[tokio::test]
async fn the_graphql_ws_reference_client_retries_a_1013_and_connects() {
    let app = spawn_live(2, |s| {
        s.live.max_connections_per_caller = 1;
        s.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let mut holder = WsClient::ready(&app.ws_url()).await;
    let mut node = reference_client("retry.mjs");
    node.arg(app.ws_url());
    let run = run_script(node);

    // Once the gateway has turned the client away, the place is freed.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8(app.admin("/metrics").await.body.to_vec()).unwrap();
        if metric(
            &text,
            "gateway_websocket_connections_total{outcome=\"caller_limit\"}",
        ) >= 1.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused: {text}"
        );
        tokio::time::sleep(POLL).await;
    }
    holder.close().await;

    let stdout = script_stdout(run).await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.contains(&"CLOSED 1013 Too many connections for this caller"),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"EVENT STARTED"), "{stdout}");
}
