//! DescribeInstanceInformation through the real `aws-sdk-ssm` client over HTTP.

use std::collections::HashSet;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{
    InstanceInformation, InstanceInformationFilter, InstanceInformationFilterKey,
    InstanceInformationStringFilter,
};
use ssm_emulator::{DEMO_ACCOUNT_ID, Dataset, NodeRecord, PingStatus, PlatformType, ResourceType};

use crate::support::{client, config, dataset, spawn};

const OP: &str = "DescribeInstanceInformation";

fn string_filter(key: &str, values: &[&str]) -> InstanceInformationStringFilter {
    InstanceInformationStringFilter::builder()
        .key(key)
        .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
        .build()
        .unwrap()
}

fn ids(nodes: &[InstanceInformation]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n.instance_id().unwrap().to_owned())
        .collect()
}

fn ids_where(data: &Dataset, keep: impl Fn(&NodeRecord) -> bool) -> Vec<String> {
    data.nodes(DEMO_ACCOUNT_ID, "us-east-1")
        .iter()
        .filter(|n| keep(n))
        .map(|n| n.instance_id.clone())
        .collect()
}

/// Every node the SDK's paginator yields, and how many pages it took.
async fn paginate(
    client: &aws_sdk_ssm::Client,
    max: Option<i32>,
    filters: Vec<InstanceInformationStringFilter>,
) -> (Vec<InstanceInformation>, usize) {
    let pages: Vec<_> = client
        .describe_instance_information()
        .set_max_results(max)
        .set_filters((!filters.is_empty()).then_some(filters))
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let n = pages.len();
    (
        pages
            .into_iter()
            .flat_map(|p| p.instance_information_list.unwrap_or_default())
            .collect(),
        n,
    )
}

#[tokio::test]
async fn instance_ids_filter_returns_the_registered_subset() {
    let data = dataset();
    let running = spawn(config(data.clone())).await;
    let client = client(&running);
    let nodes = data.nodes(DEMO_ACCOUNT_ID, "us-east-1");
    let registered: HashSet<&str> = nodes.iter().map(|n| n.instance_id.as_str()).collect();
    // Every session target, as the gateway would look them up.
    let mut targets: Vec<&str> = data
        .sessions(DEMO_ACCOUNT_ID, "us-east-1")
        .iter()
        .map(|s| s.target.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    targets.sort_unstable();
    let mut want: Vec<String> = targets
        .iter()
        .filter(|t| registered.contains(*t))
        .map(|t| (*t).to_owned())
        .collect();
    assert!(!want.is_empty() && want.len() < targets.len());

    let (got, _) = paginate(
        &client,
        Some(50),
        vec![string_filter("InstanceIds", &targets)],
    )
    .await;
    let mut got = ids(&got);
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);

    // What the SDK parsed is what the emulator holds.
    let node = &nodes[0];
    let (got, _) = paginate(
        &client,
        None,
        vec![string_filter("InstanceIds", &[&node.instance_id])],
    )
    .await;
    let [sdk] = got.as_slice() else {
        panic!("one node: {got:?}")
    };
    assert_eq!(
        sdk.ping_status().map(|p| p.as_str()),
        Some(node.ping_status.as_str())
    );
    assert_eq!(
        sdk.platform_type().map(|p| p.as_str()),
        Some(node.platform_type.as_str())
    );
    assert_eq!(
        sdk.resource_type().map(|r| r.as_str()),
        Some(node.resource_type.as_str())
    );
    assert_eq!(sdk.platform_name(), Some(node.platform_name.as_str()));
    assert_eq!(sdk.agent_version(), Some(node.agent_version.as_str()));
    assert_eq!(sdk.is_latest_version(), Some(node.is_latest_version));
    assert_eq!(sdk.ip_address(), Some(node.ip_address.as_str()));
    assert_eq!(sdk.computer_name(), Some(node.computer_name.as_str()));
    assert_eq!(
        sdk.last_ping_date_time().unwrap().secs(),
        node.last_ping_date_time.timestamp()
    );
    // One page each.
    assert_eq!(running.emulator.calls(OP), 2);
    assert_eq!(running.emulator.calls_for(OP, DEMO_ACCOUNT_ID), 2);
}

#[tokio::test]
async fn paging_walks_every_node_once() {
    let data = dataset();
    let running = spawn(config(data.clone())).await;
    let client = client(&running);
    let want = ids_where(&data, |_| true);
    assert!(want.len() > 10, "several pages");
    for max in [Some(5), Some(50), None] {
        let (got, pages) = paginate(&client, max, vec![]).await;
        assert_eq!(ids(&got), want, "max {max:?}");
        let per_page = max.unwrap_or(10) as usize;
        assert_eq!(pages, want.len().div_ceil(per_page), "max {max:?}");
    }
}

#[tokio::test]
async fn each_filter_key_selects_what_the_dataset_says() {
    let data = dataset();
    let running = spawn(config(data.clone())).await;
    let client = client(&running);
    let mut cases: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for p in PingStatus::ALL {
        cases.push((
            "PingStatus",
            p.as_str(),
            ids_where(&data, |n| n.ping_status == p),
        ));
    }
    for p in PlatformType::ALL {
        cases.push((
            "PlatformTypes",
            p.as_str(),
            ids_where(&data, |n| n.platform_type == p),
        ));
    }
    for r in ResourceType::ALL {
        cases.push((
            "ResourceType",
            r.as_str(),
            ids_where(&data, |n| n.resource_type == r),
        ));
    }
    for (key, value, want) in &cases {
        let (got, _) = paginate(&client, Some(5), vec![string_filter(key, &[value])]).await;
        assert_eq!(&ids(&got), want, "{key}={value}");
    }
    let online_linux = ids_where(&data, |n| {
        n.ping_status == PingStatus::Online && n.platform_type == PlatformType::Linux
    });
    assert!(!online_linux.is_empty());
    let (got, _) = paginate(
        &client,
        None,
        vec![
            string_filter("PingStatus", &["Online"]),
            string_filter("PlatformTypes", &["Linux"]),
        ],
    )
    .await;
    assert_eq!(ids(&got), online_linux, "filters AND together");

    // The legacy filter list works alike.
    let legacy = client
        .describe_instance_information()
        .instance_information_filter_list(
            InstanceInformationFilter::builder()
                .key(InstanceInformationFilterKey::ResourceType)
                .value_set("ManagedInstance")
                .build()
                .unwrap(),
        )
        .max_results(50)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ids(legacy.instance_information_list()),
        ids_where(&data, |n| n.resource_type == ResourceType::ManagedInstance)
    );
}

#[tokio::test]
async fn sdk_sees_the_modeled_errors() {
    let running = spawn(config(dataset())).await;
    let client = client(&running);
    let code = async |max: Option<i32>, filter: Option<InstanceInformationStringFilter>| {
        let err = client
            .describe_instance_information()
            .set_max_results(max)
            .set_filters(filter.map(|f| vec![f]))
            .send()
            .await
            .unwrap_err();
        err.code().unwrap_or_default().to_owned()
    };
    assert_eq!(code(Some(4), None).await, "ValidationException");
    assert_eq!(code(Some(51), None).await, "ValidationException");
    assert_eq!(
        code(None, Some(string_filter("Flavour", &["x"]))).await,
        "InvalidFilterKey"
    );
    assert_eq!(
        code(None, Some(string_filter("InstanceIds", &["i-123"]))).await,
        "InvalidInstanceId"
    );
    assert_eq!(
        code(None, Some(string_filter("PingStatus", &["Asleep"]))).await,
        "InvalidInstanceInformationFilterValue"
    );
    let err = client
        .describe_instance_information()
        .next_token("not-a-token")
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().unwrap().is_invalid_next_token());
}
