//! Automatic persisted queries over real HTTP: the Apollo protocol (hash
//! first, document after `PERSISTED_QUERY_NOT_FOUND`, then the hash alone),
//! over POST and GET, and what it must not open: a wrong hash, or a
//! mutation over GET behind a hash. And the safelist mode, where only a
//! manifest's operations run.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use std::time::Duration;

use ssm_session_gateway::settings::Settings;

use crate::support::ws::{Received, WsClient, reference_client, run_script, script_stdout};
use crate::support::{TestApp, dataset, emulator_config, error_codes, spawn_app, spawn_app_with};

const JSON: (&str, &str) = ("content-type", "application/json");
const GQL_RESPONSE: (&str, &str) = ("accept", "application/graphql-response+json");

const PAGE: &str = "query Page($after: String) { sessions(state: HISTORY, first: 7, after: $after) \
                    { edges { cursor node { id sessionId startDate } } pageInfo { hasNextPage endCursor } } }";

fn sha256_hex(document: &str) -> String {
    Sha256::digest(document.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn persisted(document: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(document) } })
}

async fn app() -> TestApp {
    spawn_app(emulator_config(dataset(41, 3, 40))).await
}

async fn post(app: &TestApp, body: Value, headers: &[(&str, &str)]) -> crate::support::HttpAnswer {
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    app.request(Method::POST, "/graphql", &all, body.to_string())
        .await
}

fn session_ids(page: &Value) -> Vec<String> {
    page["data"]["sessions"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["sessionId"].as_str().expect("id").to_owned())
        .collect()
}

/// Every session of History, page by page, with the document each time.
async fn walk_plain(app: &TestApp) -> Vec<String> {
    let (mut all, mut after) = (Vec::new(), Value::Null);
    loop {
        let page = app.graphql(PAGE, json!({ "after": after })).await;
        assert_eq!(error_codes(&page), Vec::<String>::new(), "{page}");
        all.extend(session_ids(&page));
        let info = &page["data"]["sessions"]["pageInfo"];
        if info["hasNextPage"] != json!(true) {
            return all;
        }
        after = info["endCursor"].clone();
    }
}

#[tokio::test]
async fn a_history_walked_with_persisted_queries_is_the_same_as_without() {
    let app = app().await;
    let plain = walk_plain(&app).await;
    assert_eq!(plain.len(), 40);

    // The hash alone, first: not found, never cacheable.
    let ext = persisted(PAGE);
    let first = post(
        &app,
        json!({ "variables": { "after": null }, "extensions": ext }),
        &[],
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(error_codes(&first.json()), ["PERSISTED_QUERY_NOT_FOUND"]);
    assert_eq!(
        first.json()["errors"][0]["message"],
        "PersistedQueryNotFound"
    );
    assert_eq!(first.headers["cache-control"], "private, no-store");

    // Then the document with its hash, as Apollo Client retries.
    let page = post(
        &app,
        json!({ "query": PAGE, "variables": { "after": null }, "extensions": ext }),
        &[],
    )
    .await
    .json();
    assert_eq!(error_codes(&page), Vec::<String>::new(), "{page}");
    let mut walked = session_ids(&page);
    let mut after = page["data"]["sessions"]["pageInfo"]["endCursor"].clone();

    // Then the hash alone for every following page.
    let mut pages = 1;
    while after != Value::Null {
        let res = post(
            &app,
            json!({ "variables": { "after": after }, "extensions": ext }),
            &[],
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
        let page = res.json();
        assert_eq!(error_codes(&page), Vec::<String>::new(), "{page}");
        walked.extend(session_ids(&page));
        let info = &page["data"]["sessions"]["pageInfo"];
        after = if info["hasNextPage"] == json!(true) {
            info["endCursor"].clone()
        } else {
            Value::Null
        };
        pages += 1;
    }
    assert_eq!(pages, 6);
    assert_eq!(walked, plain);
}

#[tokio::test]
async fn a_hash_that_is_not_the_documents_is_refused_and_not_kept() {
    let app = app().await;
    let other = "{ accounts { id } }";
    let wrong = json!({ "query": PAGE, "extensions": persisted(other) });
    for headers in [&[][..], &[GQL_RESPONSE][..]] {
        let res = post(&app, wrong.clone(), headers).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert_eq!(error_codes(&res.json()), ["PERSISTED_QUERY_HASH_MISMATCH"]);
    }
    // Neither document was registered under the wrong hash.
    let res = post(&app, json!({ "extensions": persisted(other) }), &[]).await;
    assert_eq!(error_codes(&res.json()), ["PERSISTED_QUERY_NOT_FOUND"]);

    // Another version, and a malformed extension, say what is wrong.
    let v2 = json!({ "query": other, "extensions": { "persistedQuery": { "version": 2, "sha256Hash": sha256_hex(other) } } });
    let res = post(&app, v2, &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(error_codes(&res.json()), ["PERSISTED_QUERY_NOT_SUPPORTED"]);
    assert!(
        res.json()["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("version 2")),
        "{}",
        res.json()
    );
    let bad = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": "abc" } } });
    let res = post(&app, bad, &[]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(&res.json()), ["BAD_REQUEST"]);

    // Neither a query nor a hash: as before, not a GraphQL request.
    let res = post(&app, json!({ "variables": {} }), &[]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(&res.json()), ["BAD_REQUEST"]);
}

fn get_path(params: &[(&str, String)]) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let query: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    format!("/graphql?{}", query.join("&"))
}

#[tokio::test]
async fn get_with_a_hash_and_variables_runs_queries_only() {
    let app = app().await;
    let ext = persisted(PAGE).to_string();
    let path = get_path(&[
        ("variables", json!({ "after": null }).to_string()),
        ("extensions", ext.clone()),
    ]);
    let res = app.request(Method::GET, &path, &[], "").await;
    assert_eq!(error_codes(&res.json()), ["PERSISTED_QUERY_NOT_FOUND"]);

    // Registered over GET too (Apollo Client's useGETForHashedQueries).
    let register = get_path(&[
        ("query", PAGE.to_owned()),
        ("variables", json!({ "after": null }).to_string()),
        ("extensions", ext.clone()),
    ]);
    let res = app.request(Method::GET, &register, &[], "").await;
    assert_eq!(res.status, StatusCode::OK);
    let first = res.json();
    assert_eq!(session_ids(&first).len(), 7, "{first}");

    // The hash alone, with a cursor: the next page, private to the caller.
    let after = first["data"]["sessions"]["pageInfo"]["endCursor"].clone();
    let path = get_path(&[
        ("variables", json!({ "after": after }).to_string()),
        ("extensions", ext),
    ]);
    let res = app.request(Method::GET, &path, &[], "").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["cache-control"], "private, no-store");
    let second = res.json();
    assert_eq!(error_codes(&second), Vec::<String>::new(), "{second}");
    let plain = app.graphql(PAGE, json!({ "after": after })).await;
    assert_eq!(session_ids(&second), session_ids(&plain));

    // A mutation behind a hash is still a mutation: not over GET.
    let mutation = "mutation { terminateSession(input: { id: \"x\" }) { sessionId } }";
    let res = post(
        &app,
        json!({ "query": mutation, "extensions": persisted(mutation) }),
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "registered by POST");
    let path = get_path(&[("extensions", persisted(mutation).to_string())]);
    let res = app.request(Method::GET, &path, &[], "").await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers["allow"], "POST");
}

#[tokio::test]
async fn persisted_queries_can_be_turned_off() {
    let mut settings = ssm_session_gateway::settings::Settings::default();
    settings.persisted_queries.enabled = false;
    let app = crate::support::spawn_app_with(emulator_config(dataset(41, 3, 40)), settings).await;
    let doc = "{ accounts { id } }";
    let res = post(
        &app,
        json!({ "query": doc, "extensions": persisted(doc) }),
        &[],
    )
    .await;
    assert_eq!(error_codes(&res.json()), ["PERSISTED_QUERY_NOT_SUPPORTED"]);
    // Documents still run as always.
    let res = post(&app, json!({ "query": doc }), &[]).await;
    assert_eq!(error_codes(&res.json()), Vec::<String>::new());
}

/// A subscription on the safelists below.
const EVENTS: &str = "subscription { sessionEvents(includeExisting: true) { kind } }";

/// An Apollo persisted query manifest listing `PAGE` and `EVENTS`, written
/// in a directory of its own named after `name`; the caller removes it.
fn write_manifest(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("gateway-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest(&[PAGE, EVENTS])).expect("manifest");
    (dir, path)
}

/// An Apollo persisted query manifest of `bodies`.
fn manifest(bodies: &[&str]) -> String {
    let operations: Vec<Value> = bodies
        .iter()
        .map(|body| json!({ "id": sha256_hex(body), "name": "Op", "type": "query", "body": body }))
        .collect();
    json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": operations,
    })
    .to_string()
}

/// Starts subscription `id` with `payload` (a `query`, `extensions`, or
/// both) and returns the first message about it.
async fn subscribe(ws: &mut WsClient, id: &str, payload: Value) -> Value {
    ws.send(json!({ "id": id, "type": "subscribe", "payload": payload }))
        .await;
    ws.first_for(id, Duration::from_secs(5)).await
}

/// POSTs `body` and checks that it is refused with HTTP 400 and `code`
/// alone.
async fn assert_refused(app: &TestApp, body: Value, code: &str) {
    let answer = post(app, body.clone(), &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
    let answer: Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(error_codes(&answer), [code], "{body}: {answer}");
}

/// `message`'s type and its first error's code (or message, without a
/// code): empty for a `next` carrying an event and no error.
fn outcome(message: &Value) -> (String, String) {
    let kind = message["type"].as_str().unwrap_or_default();
    let error = match kind {
        "error" => &message["payload"][0],
        _ => &message["payload"]["errors"][0],
    };
    let code = error["extensions"]["code"]
        .as_str()
        .or(error["message"].as_str())
        .unwrap_or_default();
    assert!(
        !(kind == "next" && code.is_empty())
            || message["payload"]["data"]["sessionEvents"]["kind"].is_string(),
        "a next with neither an event nor an error: {message}"
    );
    (kind.to_owned(), code.to_owned())
}

#[tokio::test]
async fn a_safelist_runs_its_operations_alone_over_http_and_websocket() {
    let events = EVENTS;
    let (dir, path) = write_manifest("safelist");
    let mut settings = Settings::default();
    settings.persisted_queries.safelist = Some(path.clone());
    let app = spawn_app_with(emulator_config(dataset(41, 3, 40)), settings).await;

    // Listed: as its text, and by its hash over POST and GET.
    let as_text = post(&app, json!({ "query": PAGE, "variables": {} }), &[]).await;
    assert_eq!(as_text.status, StatusCode::OK);
    let as_text: Value = serde_json::from_slice(&as_text.body).expect("JSON");
    assert_eq!(error_codes(&as_text), Vec::<String>::new(), "{as_text}");
    let by_hash = post(&app, json!({ "extensions": persisted(PAGE) }), &[]).await;
    let by_hash: Value = serde_json::from_slice(&by_hash.body).expect("JSON");
    assert_eq!(session_ids(&by_hash), session_ids(&as_text));
    let path = get_path(&[("extensions", persisted(PAGE).to_string())]);
    let get = app.request(Method::GET, &path, &[], "").await;
    assert_eq!(get.status, StatusCode::OK);

    // Anything else is refused, sending it with its hash registers nothing,
    // and the rest of the protocol is as before.
    let other = "{ sessions(state: HISTORY, first: 1) { nodes { sessionId } } }";
    for (body, code) in [
        (json!({ "query": other }), "OPERATION_NOT_IN_SAFELIST"),
        (
            json!({ "query": other, "extensions": persisted(other) }),
            "OPERATION_NOT_IN_SAFELIST",
        ),
        (
            json!({ "extensions": persisted(other) }),
            "OPERATION_NOT_IN_SAFELIST",
        ),
        (
            json!({ "query": PAGE, "extensions": persisted(other) }),
            "PERSISTED_QUERY_HASH_MISMATCH",
        ),
    ] {
        assert_refused(&app, body, code).await;
    }

    // WebSocket: a subscription not on the list gets an error; the listed
    // one runs on the same socket.
    let mut ws = WsClient::ready(&app.ws_url()).await;
    ws.subscribe("1", "subscription { sessionEvents { kind } }", json!({}))
        .await;
    match ws.next_message(Duration::from_secs(5)).await {
        Received::Json(m) => {
            assert_eq!(
                (&m["id"], &m["type"]),
                (&json!("1"), &json!("error")),
                "{m}"
            );
            assert_eq!(
                m["payload"][0]["extensions"]["code"],
                "OPERATION_NOT_IN_SAFELIST"
            );
        }
        other => panic!("expected an error message, got {other:?}"),
    }
    ws.subscribe("2", events, json!({})).await;
    match ws.next_message(Duration::from_secs(5)).await {
        Received::Json(m) => {
            assert_eq!((&m["id"], &m["type"]), (&json!("2"), &json!("next")), "{m}");
        }
        other => panic!("expected an event, got {other:?}"),
    }
    // By hash, as over HTTP.
    let by_hash = subscribe(&mut ws, "3", json!({ "extensions": persisted(events) })).await;
    assert_eq!(
        outcome(&by_hash),
        ("next".into(), String::new()),
        "{by_hash}"
    );
    let off_list = json!({ "extensions": persisted("subscription { sessionEvents { kind } }") });
    let refused = subscribe(&mut ws, "4", off_list).await;
    assert_eq!(
        outcome(&refused),
        ("error".into(), "OPERATION_NOT_IN_SAFELIST".into()),
        "{refused}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Held by the tests a SIGHUP to the test process would disturb, and by
/// the one that sends it: every gateway in the process reads its safelist
/// again on SIGHUP, which would hide a change the periodic check missed.
static SIGHUP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A changed safelist file is read again (`safelist_reload_secs`): its new
/// operations run, a rewrite that keeps its length and modified time
/// included; a broken one is counted and the list in use stays.
#[tokio::test]
async fn a_changed_safelist_is_read_again_and_a_broken_one_is_not_used() {
    let _alone = SIGHUP.lock().await;
    let (dir, path) = write_manifest("reload");
    let mut settings = Settings::default();
    settings.persisted_queries.safelist = Some(path.clone());
    settings.persisted_queries.safelist_reload_secs = 1;
    settings.admin_listen = Some("127.0.0.1:0".parse().expect("address"));
    let app = spawn_app_with(emulator_config(dataset(41, 3, 40)), settings).await;
    let other = "{ sessions(state: HISTORY, first: 1) { nodes { sessionId } } }";
    let by_hash = json!({ "extensions": persisted(other) });
    assert_refused(&app, by_hash.clone(), "OPERATION_NOT_IN_SAFELIST").await;

    // Listed now: runs within a few checks.
    let before = safelist_reloads(&app).await;
    replace_file(&path, &manifest(&[PAGE, EVENTS, other]));
    runs_within_seconds(&app, &by_hash).await;
    let after = safelist_reloads(&app).await;
    assert!(after.ok > before.ok, "{before:?} then {after:?}");
    assert_eq!(after.error, before.error, "{before:?} then {after:?}");

    // Rewritten to the same length with its modified time kept, as an
    // editor may within the file system's time granularity: the text is
    // what is compared, so this is a change too.
    let swapped = "{ sessions(state: HISTORY, first: 3) { nodes { sessionId } } }";
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let length = std::fs::metadata(&path).expect("metadata").len();
    replace_file(&path, &manifest(&[PAGE, EVENTS, swapped]));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_modified(modified))
        .expect("modified time kept");
    let meta = std::fs::metadata(&path).expect("metadata");
    assert_eq!((meta.modified().ok(), meta.len()), (Some(modified), length));
    let by_hash = json!({ "extensions": persisted(swapped) });
    runs_within_seconds(&app, &by_hash).await;
    assert_refused(
        &app,
        json!({ "extensions": persisted(other) }),
        "OPERATION_NOT_IN_SAFELIST",
    )
    .await;

    // Broken: counted, and the list in use stays.
    let before = safelist_reloads(&app).await;
    replace_file(&path, "{ not a manifest");
    let started = std::time::Instant::now();
    while safelist_reloads(&app).await.error == before.error {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the broken manifest not noticed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = post(&app, by_hash, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_refused(
        &app,
        json!({ "extensions": persisted("{ __typename }") }),
        "OPERATION_NOT_IN_SAFELIST",
    )
    .await;
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Waits until `body` (an operation by hash) runs: a safelist that now
/// lists it was read again. Fails after 10 s.
async fn runs_within_seconds(app: &TestApp, body: &Value) {
    let started = std::time::Instant::now();
    loop {
        let answer = post(app, body.clone(), &[]).await;
        if answer.status == StatusCode::OK {
            let answer: Value = serde_json::from_slice(&answer.body).expect("JSON");
            assert_eq!(error_codes(&answer), Vec::<String>::new(), "{answer}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{body} still refused after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `gateway_safelist_reloads_total` by outcome, from the admin listener.
#[derive(Debug, Clone, Copy)]
struct Reloads {
    ok: u64,
    error: u64,
}

async fn safelist_reloads(app: &TestApp) -> Reloads {
    let metrics = app.admin("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let count = |outcome: &str| {
        let series = format!("gateway_safelist_reloads_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    };
    Reloads {
        ok: count("ok"),
        error: count("error"),
    }
}

/// Replaces `path` whole, as the kubelet updates a mounted ConfigMap: a
/// reader sees the old file or the new one, never half of it.
fn replace_file(path: &std::path::Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

/// SIGHUP reads the safelist again, as it does the API keys file, with no
/// periodic check at all (`safelist_reload_secs = 0`).
#[cfg(unix)]
#[tokio::test]
async fn sighup_reads_the_safelist_again() {
    let _alone = SIGHUP.lock().await;
    let (dir, path) = write_manifest("sighup");
    let mut settings = Settings::default();
    settings.persisted_queries.safelist = Some(path.clone());
    settings.persisted_queries.safelist_reload_secs = 0;
    let app = spawn_app_with(emulator_config(dataset(41, 3, 40)), settings).await;
    let other = "{ sessions(state: HISTORY, first: 2) { nodes { sessionId } } }";
    let by_hash = json!({ "extensions": persisted(other) });
    replace_file(&path, &manifest(&[PAGE, EVENTS, other]));
    // No periodic check: the change waits for the signal.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_refused(&app, by_hash.clone(), "OPERATION_NOT_IN_SAFELIST").await;

    // The whole test process gets it: every gateway in it has its handler
    // (a safelist's or the API keys'), so nothing stops.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    runs_within_seconds(&app, &by_hash).await;
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn require_id_runs_listed_operations_by_hash_alone_over_http_and_websocket() {
    let (dir, path) = write_manifest("require-id");
    let mut settings = Settings::default();
    settings.persisted_queries.safelist = Some(path);
    settings.persisted_queries.require_id = true;
    let app = spawn_app_with(emulator_config(dataset(41, 3, 40)), settings).await;

    // By hash: runs, over POST and GET.
    let by_hash = post(&app, json!({ "extensions": persisted(PAGE) }), &[]).await;
    assert_eq!(by_hash.status, StatusCode::OK);
    let by_hash: Value = serde_json::from_slice(&by_hash.body).expect("JSON");
    assert_eq!(error_codes(&by_hash), Vec::<String>::new(), "{by_hash}");
    assert_eq!(session_ids(&by_hash).len(), 7);
    let get = app
        .request(
            Method::GET,
            &get_path(&[("extensions", persisted(PAGE).to_string())]),
            &[],
            "",
        )
        .await;
    assert_eq!(get.status, StatusCode::OK);

    // A text is refused, even a listed one, even with its own hash; a hash
    // off the list is still not on the list.
    let other = "{ sessions(state: HISTORY, first: 1) { nodes { sessionId } } }";
    for (body, code) in [
        (json!({ "query": PAGE }), "PERSISTED_QUERY_ID_REQUIRED"),
        (
            json!({ "query": PAGE, "extensions": persisted(PAGE) }),
            "PERSISTED_QUERY_ID_REQUIRED",
        ),
        (json!({ "query": other }), "PERSISTED_QUERY_ID_REQUIRED"),
        (
            json!({ "extensions": persisted(other) }),
            "OPERATION_NOT_IN_SAFELIST",
        ),
    ] {
        assert_refused(&app, body, code).await;
    }
    let get = app
        .request(
            Method::GET,
            &get_path(&[("query", PAGE.to_owned())]),
            &[],
            "",
        )
        .await;
    assert_eq!(get.status, StatusCode::BAD_REQUEST);
    let get: Value = serde_json::from_slice(&get.body).expect("JSON");
    assert_eq!(error_codes(&get), ["PERSISTED_QUERY_ID_REQUIRED"], "{get}");

    // WebSocket: the listed subscription as text is refused, by hash it
    // runs, on the same socket.
    let mut ws = WsClient::ready(&app.ws_url()).await;
    let as_text = subscribe(&mut ws, "1", json!({ "query": EVENTS })).await;
    assert_eq!(
        outcome(&as_text),
        ("error".into(), "PERSISTED_QUERY_ID_REQUIRED".into()),
        "{as_text}"
    );
    let by_hash = subscribe(&mut ws, "2", json!({ "extensions": persisted(EVENTS) })).await;
    assert_eq!(
        outcome(&by_hash),
        ("next".into(), String::new()),
        "{by_hash}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn a_subscription_by_hash_is_found_registered_and_checked_as_over_http() {
    let app = app().await;
    let mut ws = WsClient::ready(&app.ws_url()).await;
    let ext = persisted(EVENTS);
    // The hash alone, first: not found, and the socket carries on.
    let first = subscribe(&mut ws, "1", json!({ "extensions": ext })).await;
    assert_eq!(
        outcome(&first),
        ("error".into(), "PERSISTED_QUERY_NOT_FOUND".into()),
        "{first}"
    );
    // With its document: registered, and it runs.
    let both = subscribe(&mut ws, "2", json!({ "query": EVENTS, "extensions": ext })).await;
    assert_eq!(outcome(&both), ("next".into(), String::new()), "{both}");
    // Then the hash alone runs it.
    let again = subscribe(&mut ws, "3", json!({ "extensions": ext })).await;
    assert_eq!(outcome(&again), ("next".into(), String::new()), "{again}");
    // A hash that is not the text's is refused.
    let wrong = json!({ "query": EVENTS, "extensions": persisted(PAGE) });
    let mismatch = subscribe(&mut ws, "4", wrong).await;
    assert_eq!(
        outcome(&mismatch),
        ("error".into(), "PERSISTED_QUERY_HASH_MISMATCH".into()),
        "{mismatch}"
    );
}

/// The protocol's reference client, npm `graphql-ws` (tests/ws, installed by
/// tests/run.sh), subscribes by hash as Apollo's persisted query link asks:
/// hash alone, then the document with it after `PERSISTED_QUERY_NOT_FOUND`,
/// then the hash alone again.
#[tokio::test]
async fn the_graphql_ws_reference_client_subscribes_by_hash() {
    let app = app().await;
    let mut node = reference_client("persisted.mjs");
    node.arg(app.ws_url());
    let stdout = script_stdout(run_script(node)).await;
    let steps: Vec<&str> = stdout
        .lines()
        .map(|line| line.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["NOT_FOUND", "REGISTERED", "BY_HASH"], "{stdout}");
    // Each subscription that ran got an event (`includeExisting`).
    assert!(
        stdout.lines().skip(1).all(|line| {
            let kind = line.split(' ').nth(1).unwrap_or_default();
            ["STARTED", "CHANGED", "ENDED"].contains(&kind)
        }),
        "{stdout}"
    );
}
