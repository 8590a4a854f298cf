//! Each filter key, and combinations, against what the seeded data says.

use chrono::{DateTime, Duration, Timelike, Utc};
use serde_json::{Value, json};
use ssm_emulator::{
    AccessType, DEMO_ACCOUNT_ID, DEMO_REGION, Dataset, SessionRecord, SessionState, SessionStatus,
};

use ssm_session_gateway::settings::Settings;

use crate::support::{TestApp, dataset, emulator_config, spawn_app_with};

const Q: &str = r#"
query($state: SessionState!, $filter: SessionFilter) {
  sessions(state: $state, filter: $filter, first: 1000, pageSize: 37) {
    nodes { sessionId target owner status startDate accessType }
    pageInfo { hasNextPage }
  }
}"#;

async fn ids(app: &TestApp, state: &str, filter: Value) -> Vec<String> {
    let res = app
        .graphql(Q, json!({ "state": state, "filter": filter }))
        .await;
    assert!(res["errors"].is_null(), "{filter}: {res}");
    assert_eq!(
        res["data"]["sessions"]["pageInfo"]["hasNextPage"],
        json!(false)
    );
    res["data"]["sessions"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["sessionId"].as_str().expect("id").to_owned())
        .collect()
}

fn expected(
    data: &Dataset,
    state: SessionState,
    keep: impl Fn(&SessionRecord) -> bool,
) -> Vec<String> {
    data.sessions(DEMO_ACCOUNT_ID, DEMO_REGION)
        .iter()
        .filter(|s| s.state() == state && keep(s))
        .map(|s| s.session_id.clone())
        .collect()
}

/// The most common value of `key` among the sessions of `state`.
fn most_common(
    data: &Dataset,
    state: SessionState,
    key: impl Fn(&SessionRecord) -> String,
) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for s in data
        .sessions(DEMO_ACCOUNT_ID, DEMO_REGION)
        .iter()
        .filter(|s| s.state() == state)
    {
        *counts.entry(key(s)).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(k, _)| k)
        .expect("data")
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn each_filter_key_selects_what_the_data_says() {
    let data = dataset(21, 60, 400);
    // 1000 sessions in pages of 37 walk the whole dataset in one request:
    // more upstream calls than the default per-source budget allows.
    let app = spawn_app_with(emulator_config(data.clone()), generous_budget()).await;
    let h = SessionState::History;
    let all = data.sessions(DEMO_ACCOUNT_ID, DEMO_REGION);
    // A boundary on an existing start date: `InvokedAfter` includes it,
    // `InvokedBefore` excludes it.
    let history: Vec<&SessionRecord> = all.iter().filter(|s| s.state() == h).collect();
    let pivot = history[history.len() / 2].start_date;
    let pivot_s = pivot.with_nanosecond(0).expect("valid");
    let target = most_common(&data, h, |s| s.target.clone());
    let owner = most_common(&data, h, |s| s.owner.clone());
    let some_id = history[7].session_id.clone();

    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        (
            "invokedAfter",
            json!({ "invokedAfter": iso(pivot_s) }),
            expected(&data, h, |s| s.start_date >= pivot_s),
        ),
        (
            "invokedBefore",
            json!({ "invokedBefore": iso(pivot_s) }),
            expected(&data, h, |s| s.start_date < pivot_s),
        ),
        (
            "target",
            json!({ "target": target }),
            expected(&data, h, |s| s.target == target),
        ),
        (
            "owner",
            json!({ "owner": owner }),
            expected(&data, h, |s| s.owner == owner),
        ),
        (
            "status",
            json!({ "status": "FAILED" }),
            expected(&data, h, |s| s.status == SessionStatus::Failed),
        ),
        (
            "sessionId",
            json!({ "sessionId": some_id }),
            expected(&data, h, |s| s.session_id == some_id),
        ),
        (
            "accessType",
            json!({ "accessType": "JUST_IN_TIME" }),
            expected(&data, h, |s| s.access_type == Some(AccessType::JustInTime)),
        ),
        (
            "target and status",
            json!({ "target": target, "status": "TERMINATED" }),
            expected(&data, h, |s| {
                s.target == target && s.status == SessionStatus::Terminated
            }),
        ),
        (
            "a week's window and an owner",
            json!({
                "invokedAfter": iso(pivot_s - Duration::days(7)),
                "invokedBefore": iso(pivot_s),
                "owner": owner,
            }),
            expected(&data, h, |s| {
                s.start_date >= pivot_s - Duration::days(7)
                    && s.start_date < pivot_s
                    && s.owner == owner
            }),
        ),
    ];
    for (name, filter, want) in cases {
        assert!(
            !want.is_empty(),
            "{name}: the seeded data should select something"
        );
        assert!(
            want.len() < history.len() || name == "none",
            "{name}: should narrow"
        );
        assert_eq!(ids(&app, "HISTORY", filter).await, want, "{name}");
    }

    // Active sessions, by status.
    let want = expected(&data, SessionState::Active, |s| {
        s.status == SessionStatus::Connected
    });
    assert!(!want.is_empty());
    assert_eq!(
        ids(&app, "ACTIVE", json!({ "status": "CONNECTED" })).await,
        want
    );
}

/// Settings whose per-source call budget fits a walk of the whole dataset.
pub fn generous_budget() -> Settings {
    let mut settings = Settings::default();
    settings.limits.max_upstream_calls_per_source = 100;
    settings
}
