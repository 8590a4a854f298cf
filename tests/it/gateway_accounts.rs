//! Many accounts and regions: routing, the merged connection, credentials,
//! concurrency, partial failure, and global ids.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ssm_emulator::{
    DEMO_ACCOUNT_IDS, DataSpec, Dataset, EmulatorConfig, SessionState, demo_credentials, demo_roles,
};
use ssm_session_gateway::accounts::{Account, AccountRegistry};
use ssm_session_gateway::model::{AccountId, Region, SourceKey};
use ssm_session_gateway::upstream::{
    Page, PageRequest, SessionSource, UpstreamError, UpstreamErrorKind,
};

use crate::support::{anchor, error_codes, spawn_multi};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const ALIASES: [&str; 3] = ["platform", "payments", "sandbox"];

fn data() -> Dataset {
    Dataset::generate(&DataSpec::demo(anchor()))
}

fn config(data: Dataset) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(data, demo_credentials());
    config.roles = demo_roles();
    config
}

const Q: &str = r#"
query($state: SessionState!, $accounts: [ID!], $regions: [String!], $first: Int, $after: String, $pageSize: Int) {
  sessions(state: $state, accounts: $accounts, regions: $regions, first: $first, after: $after, pageSize: $pageSize) {
    edges { cursor node { id sessionId region startDate account { id alias } } }
    pageInfo { hasNextPage endCursor }
  }
}"#;

/// (account, region, session id) of each edge.
fn triples(res: &Value) -> Vec<(String, String, String)> {
    res["data"]["sessions"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let n = &e["node"];
            (
                n["account"]["id"].as_str().expect("account").to_owned(),
                n["region"].as_str().expect("region").to_owned(),
                n["sessionId"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_account_and_region_reads_only_its_own_sessions() {
    let data = data();
    let app = spawn_multi(config(data.clone())).await;

    let res = app
        .graphql("{ accounts { id alias regions } }", json!({}))
        .await;
    assert_eq!(
        res["data"]["accounts"],
        json!([
            { "id": DEMO_ACCOUNT_IDS[0], "alias": "platform", "regions": REGIONS },
            { "id": DEMO_ACCOUNT_IDS[1], "alias": "payments", "regions": REGIONS },
            { "id": DEMO_ACCOUNT_IDS[2], "alias": "sandbox", "regions": REGIONS },
        ])
    );

    for (account, alias) in DEMO_ACCOUNT_IDS.iter().zip(ALIASES) {
        for region in REGIONS {
            for (state, name) in [
                (SessionState::History, "HISTORY"),
                (SessionState::Active, "ACTIVE"),
            ] {
                let want: Vec<(String, String, String)> = data
                    .sessions(account, region)
                    .iter()
                    .filter(|s| s.state() == state)
                    .map(|s| {
                        (
                            (*account).to_owned(),
                            region.to_owned(),
                            s.session_id.clone(),
                        )
                    })
                    .collect();
                // By alias and by id alike.
                for name_or_id in [alias, account] {
                    let res = app
                        .graphql(
                            Q,
                            json!({ "state": name, "accounts": [name_or_id], "regions": [region], "first": 1000 }),
                        )
                        .await;
                    assert!(res["errors"].is_null(), "{res}");
                    assert_eq!(triples(&res), want, "{account} {region} {name}");
                }
            }
        }
    }
    // Three roles assumed, once each, for all of that.
    for account in DEMO_ACCOUNT_IDS {
        assert_eq!(
            app.emulator.calls_for("AssumeRole", account),
            1,
            "{account}"
        );
    }
}

#[tokio::test]
async fn a_fan_out_walk_returns_every_session_once_newest_first() {
    let data = data();
    let app = spawn_multi(config(data.clone())).await;

    // The documented order: newest startDate first, ties by account id,
    // then region, then upstream order.
    let mut want: Vec<(Reverse<_>, String, String, usize, String)> = Vec::new();
    for account in DEMO_ACCOUNT_IDS {
        for region in REGIONS {
            let history = data
                .sessions(account, region)
                .iter()
                .filter(|s| s.state() == SessionState::History);
            for (pos, s) in history.enumerate() {
                want.push((
                    Reverse(s.start_date),
                    account.to_owned(),
                    region.to_owned(),
                    pos,
                    s.session_id.clone(),
                ));
            }
        }
    }
    want.sort();
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(_, a, r, _, id)| (a, r, id))
        .collect();
    assert!(want.len() > 600);

    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut requests = 0;
    loop {
        let res = app
            .graphql(
                Q,
                json!({ "state": "HISTORY", "first": 37, "pageSize": 50, "after": after }),
            )
            .await;
        assert!(res["errors"].is_null(), "{res}");
        requests += 1;
        got.extend(triples(&res));
        let info = &res["data"]["sessions"]["pageInfo"];
        assert_eq!(
            info["hasNextPage"],
            json!(got.len() < want.len()),
            "exact hasNextPage"
        );
        if info["hasNextPage"] == json!(false) {
            break;
        }
        after = info["endCursor"].as_str().map(str::to_owned);
        assert!(requests < 100, "the walk must end");
    }
    assert_eq!(got, want);
    // Each source is read page by page, never from the start again.
    let pages: u64 = DEMO_ACCOUNT_IDS
        .iter()
        .flat_map(|a| REGIONS.iter().map(move |r| (a, r)))
        .map(|(a, r)| {
            let n = data
                .sessions(a, r)
                .iter()
                .filter(|s| s.state() == SessionState::History)
                .count() as u64;
            n.div_ceil(50).max(1)
        })
        .sum();
    let calls = app.describe_calls();
    eprintln!(
        "fan-out walk: {requests} requests, {calls} upstream calls, {pages} pages in all sources"
    );
    // With the page cache, a resumed window's re-fetch is a hit: the walk
    // costs what a plain paginator would.
    assert!(calls <= pages + 6, "{calls} calls for {pages} pages");
    for account in DEMO_ACCOUNT_IDS {
        assert_eq!(
            app.emulator.calls_for("AssumeRole", account),
            1,
            "{account}"
        );
    }
}

#[tokio::test]
async fn six_sources_are_queried_at_once() {
    let mut config = config(data());
    config.latency = Some(Duration::from_millis(100));
    let app = spawn_multi(config).await;
    // Warm the credentials (with another query: the measured one must miss
    // the page cache), then measure one fan-out.
    let res = app
        .graphql(Q, json!({ "state": "HISTORY", "first": 1 }))
        .await;
    assert!(res["errors"].is_null(), "{res}");
    app.emulator.reset_stats();
    let started = Instant::now();
    let res = app
        .graphql(Q, json!({ "state": "ACTIVE", "first": 1 }))
        .await;
    let elapsed = started.elapsed();
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(app.describe_calls(), 6, "one page from each source");
    assert_eq!(
        app.emulator.max_in_flight(),
        6,
        "all six in flight together"
    );
    eprintln!("six sources at 100 ms each answered in {elapsed:?}");
}

#[tokio::test]
async fn a_cursor_only_works_for_the_accounts_and_regions_it_was_minted_for() {
    let app = spawn_multi(config(data())).await;
    let res = app
        .graphql(
            Q,
            json!({ "state": "HISTORY", "accounts": ["platform"], "first": 3 }),
        )
        .await;
    let cursor = res["data"]["sessions"]["pageInfo"]["endCursor"].clone();
    let calls = app.describe_calls();
    for vars in [
        json!({ "state": "HISTORY", "accounts": ["payments"], "after": cursor }),
        json!({ "state": "HISTORY", "after": cursor }),
        json!({ "state": "HISTORY", "accounts": ["platform"], "regions": ["us-east-1"], "after": cursor }),
    ] {
        let res = app.graphql(Q, vars.clone()).await;
        assert_eq!(error_codes(&res), vec!["INVALID_CURSOR"], "{vars}: {res}");
    }
    assert_eq!(app.describe_calls(), calls);
    // The same account named by id is the same set: the cursor works.
    let res = app
        .graphql(
            Q,
            json!({ "state": "HISTORY", "accounts": [DEMO_ACCOUNT_IDS[0]], "after": cursor }),
        )
        .await;
    assert!(res["errors"].is_null(), "{res}");
}

#[tokio::test]
async fn unknown_accounts_and_regions_are_refused() {
    let app = spawn_multi(config(data())).await;
    for (vars, code) in [
        (
            json!({ "state": "ACTIVE", "accounts": ["nope"] }),
            "ACCOUNT_NOT_FOUND",
        ),
        (
            json!({ "state": "ACTIVE", "accounts": ["999999999999"] }),
            "ACCOUNT_NOT_FOUND",
        ),
        (
            json!({ "state": "ACTIVE", "regions": ["mars"] }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "state": "ACTIVE", "regions": ["ap-south-1"] }),
            "BAD_USER_INPUT",
        ),
    ] {
        let res = app.graphql(Q, vars.clone()).await;
        assert_eq!(error_codes(&res), vec![code], "{vars}: {res}");
    }
    assert_eq!(app.describe_calls(), 0);
}

#[tokio::test]
async fn sessions_are_nodes_with_global_ids() {
    let data = data();
    let app = spawn_multi(config(data.clone())).await;
    let res = app
        .graphql(
            Q,
            json!({ "state": "HISTORY", "accounts": ["payments"], "regions": ["eu-west-1"], "first": 2 }),
        )
        .await;
    let node = res["data"]["sessions"]["edges"][1]["node"].clone();
    let id = node["id"].as_str().expect("id");

    const NODE: &str = r#"query($id: ID!) { node(id: $id) { id ... on Session { sessionId region status account { alias } } } }"#;
    let res = app.graphql(NODE, json!({ "id": id })).await;
    assert!(res["errors"].is_null(), "{res}");
    assert_eq!(res["data"]["node"]["id"], json!(id));
    assert_eq!(res["data"]["node"]["sessionId"], node["sessionId"]);
    assert_eq!(res["data"]["node"]["region"], json!("eu-west-1"));
    assert_eq!(res["data"]["node"]["account"]["alias"], json!("payments"));

    // An Active session is found too, by account alias, region and id.
    let active = data
        .sessions(DEMO_ACCOUNT_IDS[0], "us-east-1")
        .iter()
        .find(|s| s.state() == SessionState::Active)
        .expect("an active session")
        .session_id
        .clone();
    const ONE: &str = r#"query($a: ID!, $r: String!, $s: String!) { session(account: $a, region: $r, sessionId: $s) { sessionId account { id } } }"#;
    let res = app
        .graphql(
            ONE,
            json!({ "a": "platform", "r": "us-east-1", "s": active }),
        )
        .await;
    assert_eq!(res["data"]["session"]["sessionId"], json!(active), "{res}");
    // Not in that region: null, no error.
    let res = app
        .graphql(
            ONE,
            json!({ "a": "platform", "r": "eu-west-1", "s": active }),
        )
        .await;
    assert!(
        res["data"]["session"].is_null() && res["errors"].is_null(),
        "{res}"
    );

    for (bad, code) in [
        ("not-an-id", "BAD_USER_INPUT"),
        ("U2Vzc2lvbjo", "BAD_USER_INPUT"),
        // "Session:999999999999:us-east-1:x", well formed, unknown account.
        (
            "U2Vzc2lvbjo5OTk5OTk5OTk5OTk6dXMtZWFzdC0xOng",
            "ACCOUNT_NOT_FOUND",
        ),
    ] {
        let res = app.graphql(NODE, json!({ "id": bad })).await;
        assert_eq!(error_codes(&res), vec![code], "{bad}: {res}");
    }
}

/// A source that always fails.
struct Failing(UpstreamErrorKind);

#[async_trait::async_trait]
impl SessionSource for Failing {
    async fn describe_sessions(&self, _: &PageRequest) -> Result<Page, UpstreamError> {
        Err(UpstreamError::new(
            self.0,
            anyhow::anyhow!("scripted failure"),
        ))
    }
}

#[tokio::test]
async fn one_failing_source_leaves_the_others_and_says_which_failed() {
    // Two real sources through the emulator, one that is throttled.
    let data = data();
    let app = spawn_multi(config(data.clone())).await;
    let client = ssm_session_gateway::upstream::sdk::ssm_client(
        &ssm_session_gateway::demo::emulator_client_settings(app.emulator_addr),
    )
    .await;
    let platform = AccountId::parse(DEMO_ACCOUNT_IDS[0]).unwrap();
    let broken = AccountId::parse(DEMO_ACCOUNT_IDS[1]).unwrap();
    let us = Region::parse("us-east-1").unwrap();
    let registry = AccountRegistry::new(
        vec![
            Account {
                id: platform.clone(),
                alias: "platform".into(),
                regions: vec![us.clone()],
            },
            Account {
                id: broken.clone(),
                alias: "payments".into(),
                regions: vec![us.clone()],
            },
        ],
        [
            (
                SourceKey {
                    account: platform.clone(),
                    region: us.clone(),
                },
                Arc::new(ssm_session_gateway::upstream::sdk::SdkSessionSource::new(
                    client, &platform, &us,
                )) as Arc<dyn SessionSource>,
            ),
            (
                SourceKey {
                    account: broken.clone(),
                    region: us.clone(),
                },
                Arc::new(Failing(UpstreamErrorKind::Throttled)) as Arc<dyn SessionSource>,
            ),
        ],
    );
    let res =
        crate::support::query_router(registry, Q, json!({ "state": "HISTORY", "first": 5 })).await;

    let got = triples(&res);
    assert_eq!(got.len(), 5, "{res}");
    assert!(
        got.iter().all(|(a, _, _)| a == DEMO_ACCOUNT_IDS[0]),
        "{res}"
    );
    let errors = res["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{res}");
    assert_eq!(errors[0]["extensions"]["code"], json!("UPSTREAM_THROTTLED"));
    assert_eq!(
        errors[0]["extensions"]["account"],
        json!(DEMO_ACCOUNT_IDS[1])
    );
    assert_eq!(errors[0]["extensions"]["region"], json!("us-east-1"));
    assert_eq!(errors[0]["path"], json!(["sessions"]));
    assert_eq!(
        res["data"]["sessions"]["pageInfo"]["hasNextPage"],
        json!(true)
    );
}

#[tokio::test]
async fn a_role_the_account_refuses_is_access_denied_for_that_source_only() {
    let emulator = ssm_emulator::Emulator::new(config(data()));
    let (emulator_addr, _stop) = crate::support::serve_emulator(emulator.clone()).await;
    let mut settings =
        ssm_session_gateway::demo::demo_settings("127.0.0.1:0".parse().unwrap(), emulator_addr);
    settings.aws.max_attempts = 1;
    // payments' role requires an external id; give it a wrong one.
    settings.accounts[1].external_id = Some(ssm_session_gateway::settings::Secret::new(
        "wrong-external-id".to_owned(),
    ));
    let registry = AccountRegistry::from_settings(
        &settings,
        Some(ssm_session_gateway::demo::demo_base_credentials()),
    )
    .await
    .unwrap();
    let res =
        crate::support::query_router(registry, Q, json!({ "state": "HISTORY", "first": 10 })).await;
    let got = triples(&res);
    assert_eq!(got.len(), 10, "{res}");
    assert!(
        got.iter().all(|(a, _, _)| a != DEMO_ACCOUNT_IDS[1]),
        "{res}"
    );
    let errors = res["errors"].as_array().expect("errors");
    assert_eq!(
        errors.len(),
        2,
        "one per region of the refused account: {res}"
    );
    for e in errors {
        assert_eq!(
            e["extensions"]["code"],
            json!("UPSTREAM_ACCESS_DENIED"),
            "{res}"
        );
        assert_eq!(e["extensions"]["account"], json!(DEMO_ACCOUNT_IDS[1]));
    }
    assert!(!res.to_string().contains("wrong-external-id"));
}
