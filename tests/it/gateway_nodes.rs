//! `Session.managedNode`: one `DescribeInstanceInformation` per (account,
//! region) for a whole page, answers that match the emulator's nodes, the
//! cache, routing by account, and upstream failures as field errors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::DateTime;
use serde_json::{Value, json};
use ssm_emulator::{
    DEMO_ACCOUNT_IDS, DataSpec, Dataset, EmulatorConfig, NodeRecord, demo_credentials, demo_roles,
};
use ssm_session_gateway::accounts::{Account, AccountRegistry};
use ssm_session_gateway::model::{
    AccountId, InstanceId, ManagedNode, Region, Session, SessionId, SourceKey,
};
use ssm_session_gateway::upstream::nodes::NodeSource;
use ssm_session_gateway::upstream::{
    Page, PageRequest, SessionSource, UpstreamError, UpstreamErrorKind,
};

use crate::support::{TestApp, anchor, spawn_multi};

const OP: &str = "DescribeInstanceInformation";

const Q: &str = r#"
query($first: Int) {
  sessions(state: HISTORY, first: $first) {
    nodes {
      sessionId region target account { id }
      managedNode {
        instanceId computerName platformType platformName pingStatus
        ipAddress agentVersion resourceType lastPingDateTime
      }
    }
  }
}"#;

fn config(data: Dataset) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(data, demo_credentials());
    config.roles = demo_roles();
    config
}

/// The GraphQL enum value of a service enum spelling.
fn graphql_enum(service: &str) -> &'static str {
    match service {
        "Online" => "ONLINE",
        "ConnectionLost" => "CONNECTION_LOST",
        "Inactive" => "INACTIVE",
        "Windows" => "WINDOWS",
        "Linux" => "LINUX",
        "MacOS" => "MAC_OS",
        "EC2Instance" => "EC2_INSTANCE",
        "ManagedInstance" => "MANAGED_INSTANCE",
        other => panic!("unexpected enum value {other}"),
    }
}

/// Checks `got` (a `managedNode` object) field by field against `want`.
fn assert_node(got: &Value, want: &NodeRecord) {
    assert_eq!(got["instanceId"], json!(want.instance_id), "{got}");
    assert_eq!(got["computerName"], json!(want.computer_name), "{got}");
    assert_eq!(got["platformName"], json!(want.platform_name), "{got}");
    assert_eq!(got["ipAddress"], json!(want.ip_address), "{got}");
    assert_eq!(got["agentVersion"], json!(want.agent_version), "{got}");
    assert_eq!(
        got["platformType"],
        json!(graphql_enum(want.platform_type.as_str())),
        "{got}"
    );
    assert_eq!(
        got["pingStatus"],
        json!(graphql_enum(want.ping_status.as_str())),
        "{got}"
    );
    assert_eq!(
        got["resourceType"],
        json!(graphql_enum(want.resource_type.as_str())),
        "{got}"
    );
    let pinged = DateTime::parse_from_rfc3339(got["lastPingDateTime"].as_str().unwrap()).unwrap();
    assert_eq!(pinged, want.last_ping_date_time, "{got}");
}

/// Every session of `res` against `data`: the node of its own account and
/// region, or null where its target is not a node there. Returns the
/// (account, region) sources with a lookup to make, distinct targets, and
/// how many sessions had no node.
fn check_against(
    res: &Value,
    data: &Dataset,
) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>, usize) {
    assert!(res["errors"].is_null(), "{res}");
    let sessions = res["data"]["sessions"]["nodes"].as_array().unwrap();
    let mut sources: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut targets = BTreeSet::new();
    let mut without = 0;
    for s in sessions {
        let account = s["account"]["id"].as_str().unwrap();
        let region = s["region"].as_str().unwrap();
        let target = s["target"].as_str().unwrap();
        targets.insert(format!("{account}/{region}/{target}"));
        if InstanceId::parse(target).is_ok() {
            sources
                .entry(account.to_owned())
                .or_default()
                .insert(region.to_owned());
        }
        match data
            .nodes(account, region)
            .iter()
            .find(|n| n.instance_id == target)
        {
            Some(want) => assert_node(&s["managedNode"], want),
            None => {
                assert!(s["managedNode"].is_null(), "{s}");
                without += 1;
            }
        }
    }
    (sources, targets, without)
}

fn lookups(app: &TestApp) -> Vec<u64> {
    DEMO_ACCOUNT_IDS
        .iter()
        .map(|a| app.emulator.calls_for(OP, a))
        .collect()
}

#[tokio::test]
async fn a_page_costs_one_lookup_per_source_then_comes_from_cache() {
    let data = Dataset::generate(&DataSpec::demo(anchor()));
    let app = spawn_multi(config(data.clone())).await;

    let res = app.graphql(Q, json!({ "first": 50 })).await;
    assert_eq!(
        res["data"]["sessions"]["nodes"].as_array().unwrap().len(),
        50
    );
    let (sources, targets, without) = check_against(&res, &data);
    // The page is worth batching: many targets, over several sources, some
    // of them not (or no longer) registered nodes.
    assert!(targets.len() >= 10, "{} distinct targets", targets.len());
    assert!(
        sources.values().map(BTreeSet::len).sum::<usize>() >= 3,
        "{sources:?}"
    );
    assert!(without > 0, "some targets have no node");
    let want: Vec<u64> = DEMO_ACCOUNT_IDS
        .iter()
        .map(|a| sources.get(*a).map_or(0, |r| r.len() as u64))
        .collect();
    assert_eq!(lookups(&app), want, "one call per (account, region)");

    // Again: every node (and every absence) is cached.
    let again = app.graphql(Q, json!({ "first": 50 })).await;
    assert_eq!(again, res);
    assert_eq!(lookups(&app), want, "no new call");
}

#[tokio::test]
async fn a_node_answers_only_for_sessions_of_its_own_account() {
    let mut data = Dataset::generate(&DataSpec::demo(anchor()));
    let app = spawn_multi(config(data.clone())).await;
    // Every target of the first account's sessions is also registered, as
    // an impostor, in the other accounts (same regions).
    let (owner, others) = (DEMO_ACCOUNT_IDS[0], &DEMO_ACCOUNT_IDS[1..]);
    let mut planted = 0;
    for region in ["us-east-1", "eu-west-1"] {
        let targets: BTreeSet<String> = data
            .sessions(owner, region)
            .iter()
            .map(|s| s.target.clone())
            .collect();
        for target in targets {
            let Some(real) = data
                .nodes(owner, region)
                .iter()
                .find(|n| n.instance_id == target)
                .cloned()
            else {
                continue;
            };
            for other in others {
                if data
                    .nodes(other, region)
                    .iter()
                    .any(|n| n.instance_id == target)
                {
                    continue;
                }
                let impostor = NodeRecord {
                    computer_name: format!("impostor.{other}.example"),
                    ..real.clone()
                };
                app.emulator.insert_node(other, region, impostor.clone());
                data.insert_node(other, region, impostor);
                planted += 1;
            }
        }
    }
    assert!(planted > 0);

    let res = app.graphql(Q, json!({ "first": 200 })).await;
    check_against(&res, &data);
    let owned = res["data"]["sessions"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["account"]["id"] == json!(owner) && !s["managedNode"].is_null())
        .inspect(|s| {
            let name = s["managedNode"]["computerName"].as_str().unwrap();
            assert!(!name.starts_with("impostor."), "{s}");
        })
        .count();
    assert!(owned > 0, "the owner's sessions were in the page");
}

/// One page of sessions with the given targets.
struct FixedSessions(Vec<&'static str>);

#[async_trait]
impl SessionSource for FixedSessions {
    async fn describe_sessions(&self, _: &PageRequest) -> Result<Page, UpstreamError> {
        let sessions = self
            .0
            .iter()
            .enumerate()
            .map(|(i, target)| Session {
                target: Some((*target).to_owned()),
                start_date: Some(anchor() - chrono::Duration::minutes(i as i64)),
                ..Session::new(SessionId::parse(format!("alice-{i:017x}")).unwrap())
            })
            .collect();
        Ok(Page::new(sessions, None))
    }
}

/// Node lookups that always fail this way.
struct FailingNodes(UpstreamErrorKind);

#[async_trait]
impl NodeSource for FailingNodes {
    async fn describe_instances(
        &self,
        _: &[InstanceId],
    ) -> Result<Vec<ManagedNode>, UpstreamError> {
        Err(UpstreamError::new(
            self.0,
            anyhow::anyhow!("scripted failure"),
        ))
    }
}

#[tokio::test]
async fn a_failed_lookup_is_a_field_error_and_the_sessions_stay() {
    let account = AccountId::parse(DEMO_ACCOUNT_IDS[0]).unwrap();
    let region = Region::parse("us-east-1").unwrap();
    let key = SourceKey {
        account: account.clone(),
        region: region.clone(),
    };
    let registry = AccountRegistry::new(
        vec![Account {
            id: account,
            alias: "platform".into(),
            regions: vec![region],
        }],
        [(
            key.clone(),
            Arc::new(FixedSessions(vec![
                "i-0123456789abcdef0",
                "ecs:cluster_task_x",
            ])) as Arc<dyn SessionSource>,
        )],
    )
    .with_node_sources([(
        key,
        Arc::new(FailingNodes(UpstreamErrorKind::Throttled)) as Arc<dyn NodeSource>,
    )]);
    let res = crate::support::query_router(registry, Q, json!({ "first": 10 })).await;

    let sessions = res["data"]["sessions"]["nodes"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{res}");
    assert!(sessions.iter().all(|s| s["managedNode"].is_null()), "{res}");
    // Only the instance id was looked up; the other target is simply no node.
    let errors = res["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{res}");
    assert_eq!(errors[0]["extensions"]["code"], json!("UPSTREAM_THROTTLED"));
    assert_eq!(
        errors[0]["path"],
        json!(["sessions", "nodes", 0, "managedNode"])
    );
}

#[tokio::test]
async fn the_sdk_source_asks_fifty_ids_a_call_and_maps_every_field() {
    use ssm_emulator::{DEMO_ACCOUNT_ID, Emulator};
    use ssm_session_gateway::demo::emulator_client_settings;
    use ssm_session_gateway::model::{PingStatus, PlatformType, ResourceType};
    use ssm_session_gateway::upstream::sdk::{SdkSessionSource, ssm_client};

    use crate::support::{dataset, emulator_config, serve_emulator};

    let data = dataset(2024, 23, 187);
    let emulator = Emulator::new(emulator_config(data.clone()));
    let (addr, _stop) = serve_emulator(emulator.clone()).await;
    let template = data
        .nodes(DEMO_ACCOUNT_ID, "us-east-1")
        .iter()
        .find(|n| n.instance_id.starts_with("i-"))
        .unwrap()
        .clone();
    // 70 nodes of our own, asked for with 5 well-formed ids of no node.
    let planted: Vec<String> = (0..70)
        .map(|n| format!("i-{:017x}", 0xfeed_0000_u64 + n))
        .collect();
    for id in &planted {
        emulator.insert_node(
            DEMO_ACCOUNT_ID,
            "us-east-1",
            NodeRecord {
                instance_id: id.clone(),
                ..template.clone()
            },
        );
    }
    let ids: Vec<InstanceId> = planted
        .iter()
        .cloned()
        .chain((0..5).map(|n| format!("i-{:017x}", 0xdead_0000_u64 + n)))
        .map(|s| InstanceId::parse(&s).unwrap())
        .collect();
    let source = SdkSessionSource::new(
        ssm_client(&emulator_client_settings(addr)).await,
        &AccountId::parse(DEMO_ACCOUNT_ID).unwrap(),
        &Region::parse("us-east-1").unwrap(),
    );
    let mut nodes = source.describe_instances(&ids).await.unwrap();
    assert_eq!(emulator.calls(OP), 2, "75 ids: 50, then 25");
    nodes.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    let got: Vec<&str> = nodes.iter().map(|n| n.instance_id.as_str()).collect();
    assert_eq!(got, planted);

    let node = &nodes[0];
    assert_eq!(
        node.computer_name.as_deref(),
        Some(template.computer_name.as_str())
    );
    assert_eq!(
        node.platform_name.as_deref(),
        Some(template.platform_name.as_str())
    );
    assert_eq!(
        node.ip_address.as_deref(),
        Some(template.ip_address.as_str())
    );
    assert_eq!(
        node.agent_version.as_deref(),
        Some(template.agent_version.as_str())
    );
    assert_eq!(
        node.platform_type,
        PlatformType::parse(template.platform_type.as_str())
    );
    assert_eq!(
        node.ping_status,
        PingStatus::parse(template.ping_status.as_str())
    );
    assert_eq!(node.resource_type, Some(ResourceType::Ec2Instance));
    assert_eq!(node.last_ping_date_time, Some(template.last_ping_date_time));
    assert!(node.platform_type.is_some() && node.ping_status.is_some());
}
