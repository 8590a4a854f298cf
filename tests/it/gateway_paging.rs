//! Paging through the gateway: exactness, upstream cost, PageInfo edges.

use serde_json::{Value, json};
use ssm_emulator::{
    DEMO_ACCOUNT_ID, DEMO_REGION, Dataset, SessionRecord, SessionState, SessionStatus,
};

use ssm_session_gateway::demo::emulator_client_settings;
use ssm_session_gateway::upstream::sdk::ssm_client;

use crate::gateway_filters::generous_budget;
use crate::support::{TestApp, dataset, emulator_config, error_codes, spawn_app, spawn_app_with};

const PAGE: &str = r#"
query Page($state: SessionState!, $first: Int, $after: String, $pageSize: Int, $filter: SessionFilter) {
  sessions(state: $state, first: $first, after: $after, pageSize: $pageSize, filter: $filter) {
    edges { cursor node { sessionId startDate } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"#;

/// The ids the emulator holds for `state`, in its (newest first) order.
fn expected_ids(data: &Dataset, state: SessionState) -> Vec<String> {
    data.sessions(DEMO_ACCOUNT_ID, DEMO_REGION)
        .iter()
        .filter(|s| s.state() == state)
        .map(|s| s.session_id.clone())
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["sessionId"].as_str().expect("id").to_owned())
        .collect()
}

struct Walk {
    ids: Vec<String>,
    requests: usize,
}

/// Follows `endCursor` until `hasNextPage` is false, checking on every page
/// that `hasNextPage` is exact against `total`, and the PageInfo cursors.
async fn walk(app: &TestApp, state: &str, first: i64, page_size: i64, total: usize) -> Walk {
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut requests = 0;
    loop {
        let res = app
            .graphql(
                PAGE,
                json!({ "state": state, "first": first, "after": after, "pageSize": page_size }),
            )
            .await;
        assert!(res["errors"].is_null(), "errors: {res}");
        requests += 1;
        let page = &res["data"]["sessions"];
        let page_ids = ids(page);
        let info = &page["pageInfo"];
        assert!(page_ids.len() <= first as usize);
        assert_eq!(info["hasPreviousPage"], json!(after.is_some()));
        if let Some(last) = page["edges"].as_array().and_then(|e| e.last()) {
            assert_eq!(info["endCursor"], last["cursor"]);
            assert_eq!(info["startCursor"], page["edges"][0]["cursor"]);
        } else {
            assert!(info["endCursor"].is_null() && info["startCursor"].is_null());
        }
        seen.extend(page_ids);
        let has_next = info["hasNextPage"].as_bool().expect("hasNextPage");
        assert_eq!(
            has_next,
            seen.len() < total,
            "hasNextPage must be exact (seen {} of {total}, first {first}, pageSize {page_size})",
            seen.len()
        );
        if !has_next {
            break;
        }
        // Pages are full until the end: short upstream pages are filled.
        assert_eq!(
            seen.len() % first as usize,
            0,
            "a short window before the end"
        );
        after = Some(info["endCursor"].as_str().expect("endCursor").to_owned());
        assert!(requests <= total + 1, "the walk does not end");
    }
    Walk {
        ids: seen,
        requests,
    }
}

/// Upstream pages a plain SDK walk of the listing needs (empty ones too).
async fn direct_pages(app: &TestApp, page_size: i32) -> u64 {
    let client = ssm_client(&emulator_client_settings(app.emulator_addr)).await;
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let out = client
            .describe_sessions()
            .state(aws_sdk_ssm::types::SessionState::History)
            .max_results(page_size)
            .set_next_token(token)
            .send()
            .await
            .expect("direct walk");
        pages += 1;
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            return pages;
        }
    }
}

async fn check_walks(short_pages: bool) {
    let data = dataset(42, 30, 1100);
    let expected = expected_ids(&data, SessionState::History);
    assert!(expected.len() >= 1000);
    let mut config = emulator_config(data);
    if short_pages {
        config.short_pages = Some(9);
    }
    // Short and empty pages need more calls per window than the default
    // budget; the budget itself is tested in gateway_cost.rs.
    let app = spawn_app_with(config, generous_budget()).await;
    for (first, page_size) in [(50, 200), (7, 3), (3, 7), (100, 30), (200, 200), (64, 16)] {
        let pages = direct_pages(&app, page_size as i32).await;
        let before = app.describe_calls();
        let walk = walk(&app, "HISTORY", first, page_size, expected.len()).await;
        let calls = app.describe_calls() - before;
        assert_eq!(
            walk.ids, expected,
            "every session exactly once, in upstream order (first {first}, pageSize {page_size}, short {short_pages})"
        );
        // Each request re-fetches at most the page its cursor points into and
        // looks ahead at most one page (plus empty ones, which `pages` counts
        // too): no request walks from the start.
        let bound = pages + 2 * walk.requests as u64;
        eprintln!(
            "walk first={first} pageSize={page_size} short={short_pages}: {} requests, \
             {calls} upstream calls (plain SDK walk: {pages} pages; bound {bound})",
            walk.requests
        );
        assert!(
            calls <= bound,
            "{calls} upstream calls for {} requests over {pages} upstream pages (bound {bound}; first {first}, pageSize {page_size}, short {short_pages})",
            walk.requests
        );
    }
}

#[tokio::test]
async fn walks_1100_sessions_exactly_once_without_rewalking() {
    check_walks(false).await;
}

#[tokio::test]
async fn walks_exactly_over_short_and_empty_upstream_pages() {
    check_walks(true).await;
}

#[tokio::test]
async fn first_zero_returns_no_edges_but_an_exact_has_next_page() {
    let app = spawn_app(emulator_config(dataset(1, 5, 20))).await;
    let res = app
        .graphql(PAGE, json!({ "state": "HISTORY", "first": 0 }))
        .await;
    let page = &res["data"]["sessions"];
    assert_eq!(page["edges"], json!([]));
    assert_eq!(page["pageInfo"]["hasNextPage"], json!(true));
    assert!(page["pageInfo"]["endCursor"].is_null());
    assert!(page["pageInfo"]["startCursor"].is_null());
    assert_eq!(page["pageInfo"]["hasPreviousPage"], json!(false));
}

#[tokio::test]
async fn an_empty_result_has_no_next_page() {
    let app = spawn_app(emulator_config(dataset(1, 5, 20))).await;
    let res = app
        .graphql(
            PAGE,
            json!({ "state": "HISTORY", "filter": { "target": "i-00000000000000000" } }),
        )
        .await;
    let page = &res["data"]["sessions"];
    assert_eq!(page["edges"], json!([]));
    assert_eq!(page["pageInfo"]["hasNextPage"], json!(false));
    assert!(page["pageInfo"]["endCursor"].is_null());
}

#[tokio::test]
async fn a_window_ending_on_an_upstream_page_boundary() {
    let data = dataset(3, 0, 40);
    let expected = expected_ids(&data, SessionState::History);
    let app = spawn_app(emulator_config(data)).await;

    let res = app
        .graphql(
            PAGE,
            json!({ "state": "HISTORY", "first": 20, "pageSize": 20 }),
        )
        .await;
    let page = &res["data"]["sessions"];
    assert_eq!(ids(page), expected[..20]);
    assert_eq!(page["pageInfo"]["hasNextPage"], json!(true));
    // One page, and one look-ahead to prove a next session exists.
    assert_eq!(app.describe_calls(), 2);

    let after = page["pageInfo"]["endCursor"].clone();
    let res = app
        .graphql(
            PAGE,
            json!({ "state": "HISTORY", "first": 20, "pageSize": 20, "after": after }),
        )
        .await;
    let page = &res["data"]["sessions"];
    assert_eq!(ids(page), expected[20..]);
    assert_eq!(page["pageInfo"]["hasNextPage"], json!(false));
    // The cursor pointed straight at the second page: no re-fetch of the first.
    assert_eq!(app.describe_calls(), 3);

    // The last cursor resumes to nothing, without asking upstream.
    let after = page["pageInfo"]["endCursor"].clone();
    let res = app
        .graphql(
            PAGE,
            json!({ "state": "HISTORY", "first": 20, "after": after }),
        )
        .await;
    let page = &res["data"]["sessions"];
    assert_eq!(page["edges"], json!([]));
    assert_eq!(page["pageInfo"]["hasNextPage"], json!(false));
    assert_eq!(app.describe_calls(), 3);
}

#[tokio::test]
async fn without_has_next_page_selected_there_is_no_look_ahead() {
    let app = spawn_app(emulator_config(dataset(3, 0, 40))).await;
    let res = app
        .graphql(
            "{ sessions(state: HISTORY, first: 20, pageSize: 20) { pageInfo { endCursor } nodes { sessionId } } }",
            json!({}),
        )
        .await;
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(app.describe_calls(), 1);
}

#[tokio::test]
async fn resuming_stays_exact_when_new_sessions_shift_the_page() {
    let data = dataset(5, 0, 30);
    let expected = expected_ids(&data, SessionState::History);
    let newest = data.sessions(DEMO_ACCOUNT_ID, DEMO_REGION)[0].clone();
    let app = spawn_app(emulator_config(data)).await;

    let res = app
        .graphql(
            PAGE,
            json!({ "state": "HISTORY", "first": 5, "pageSize": 10 }),
        )
        .await;
    let page = &res["data"]["sessions"];
    assert_eq!(ids(page), expected[..5]);

    // Two sessions newer than all others arrive: the first upstream page now
    // starts two sessions earlier, and a position alone would repeat two.
    for n in 0..2 {
        let mut s: SessionRecord = newest.clone();
        s.session_id = format!("newcomer-0000000000000000{n}");
        s.start_date = newest.start_date + chrono::Duration::minutes(10 + n);
        s.status = SessionStatus::Terminated;
        app.emulator.insert_session(DEMO_ACCOUNT_ID, DEMO_REGION, s);
    }
    let after = page["pageInfo"]["endCursor"].clone();
    let res = app
        .graphql(
            PAGE,
            json!({ "state": "HISTORY", "first": 10, "pageSize": 10, "after": after }),
        )
        .await;
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(ids(&res["data"]["sessions"]), expected[5..15]);
    assert!(error_codes(&res).is_empty());
}
