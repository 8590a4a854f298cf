//! The emulator's STS and SigV4 verification through the real SDK: the
//! `aws-config` AssumeRole provider, `aws-sdk-sts` and `aws-sdk-ssm`.
//!
//! What these pin for multi-account routing: credentials issued for a role
//! read exactly that role's account, and a wrong secret, token, external id
//! or role is refused rather than silently served some other account.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_sdk_ssm::config::Region;
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ssm::types::SessionState as SdkState;
use ssm_emulator::{
    DEMO_ACCESS_KEY_ID, DEMO_ACCOUNT_ID, DEMO_ACCOUNT_IDS, DEMO_EXTERNAL_ID,
    DEMO_EXTERNAL_ID_ACCOUNT, DEMO_SECRET_ACCESS_KEY, DataSpec, Dataset, EmulatorConfig,
    SessionState, SourceSpec, demo_role_arn, demo_roles,
};

use crate::support::{Running, anchor, client_as, config, spawn};

const REGION: &str = "us-east-1";

/// Sessions in every demo account, each a different number so a routing
/// mistake shows.
fn three_accounts() -> Dataset {
    Dataset::generate(&DataSpec {
        seed: 77,
        anchor: anchor(),
        sources: DEMO_ACCOUNT_IDS
            .iter()
            .enumerate()
            .map(|(i, account)| SourceSpec::new(account, REGION, 3 + i, 20 + 7 * i))
            .collect(),
    })
}

fn sts_config(data: Dataset) -> EmulatorConfig {
    EmulatorConfig {
        roles: demo_roles(),
        ..config(data)
    }
}

/// Shared config for the emulator, signed with `key`/`secret`, no retries.
async fn sdk_config(running: &Running, key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&running.endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

async fn demo_sdk_config(running: &Running) -> aws_config::SdkConfig {
    sdk_config(running, DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY).await
}

/// An SSM client whose credentials come from assuming `role_arn`.
async fn ssm_via_role(
    running: &Running,
    role_arn: &str,
    external_id: Option<&str>,
) -> aws_sdk_ssm::Client {
    let base = demo_sdk_config(running).await;
    let mut provider = AssumeRoleProvider::builder(role_arn)
        .session_name("it-routing")
        .configure(&base);
    if let Some(id) = external_id {
        provider = provider.external_id(id);
    }
    let provider = provider.build().await;
    let config = aws_sdk_ssm::config::Builder::from(&base)
        .credentials_provider(provider)
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

async fn all_ids(client: &aws_sdk_ssm::Client, state: SdkState) -> Vec<String> {
    let pages: Vec<_> = client
        .describe_sessions()
        .state(state)
        .max_results(7)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    pages
        .into_iter()
        .flat_map(|p| p.sessions.unwrap_or_default())
        .map(|s| s.session_id.unwrap())
        .collect()
}

fn want_ids(data: &Dataset, account: &str, state: SessionState) -> Vec<String> {
    data.sessions(account, REGION)
        .iter()
        .filter(|s| s.state() == state)
        .map(|s| s.session_id.clone())
        .collect()
}

#[tokio::test]
async fn assumed_role_reads_exactly_its_account() {
    let data = three_accounts();
    let running = spawn(sts_config(data.clone())).await;
    for account in DEMO_ACCOUNT_IDS {
        let external_id = (account == DEMO_EXTERNAL_ID_ACCOUNT).then_some(DEMO_EXTERNAL_ID);
        let client = ssm_via_role(&running, &demo_role_arn(account), external_id).await;
        for (sdk, state) in [
            (SdkState::Active, SessionState::Active),
            (SdkState::History, SessionState::History),
        ] {
            let got = all_ids(&client, sdk).await;
            let want = want_ids(&data, account, state);
            assert!(!want.is_empty());
            assert_eq!(got, want, "{account} {state:?}");
        }
        // The provider caches what it was issued: one AssumeRole, counted
        // for the role's account, then SSM calls in that account.
        assert_eq!(running.emulator.calls_for("AssumeRole", account), 1);
        assert!(running.emulator.calls_for("DescribeSessions", account) >= 2);
    }
    assert_eq!(running.emulator.calls("AssumeRole"), 3);
    // The static demo key never signed an SSM call: all went through roles.
    let ssm_calls: u64 = DEMO_ACCOUNT_IDS
        .iter()
        .map(|a| running.emulator.calls_for("DescribeSessions", a))
        .sum();
    assert_eq!(ssm_calls, running.emulator.calls("DescribeSessions"));
}

/// The error and its whole source chain, as the logs would show it.
async fn describe_error(client: &aws_sdk_ssm::Client) -> String {
    let err = client
        .describe_sessions()
        .state(SdkState::Active)
        .send()
        .await
        .unwrap_err();
    format!("{}", DisplayErrorContext(&err))
}

#[tokio::test]
async fn wrong_external_id_or_unknown_role_is_access_denied() {
    let running = spawn(sts_config(three_accounts())).await;
    let role = demo_role_arn(DEMO_EXTERNAL_ID_ACCOUNT);
    for external_id in [None, Some("not-the-external-id")] {
        let client = ssm_via_role(&running, &role, external_id).await;
        let chain = describe_error(&client).await;
        assert!(chain.contains("AccessDenied"), "{external_id:?}: {chain}");
        assert!(
            chain.contains(&format!(
                "User: arn:aws:iam::{DEMO_ACCOUNT_ID}:root is not authorized to perform: sts:AssumeRole on resource: {role}"
            )),
            "{chain}"
        );
    }
    let unknown = "arn:aws:iam::444455556666:role/NoSuchRole";
    let client = ssm_via_role(&running, unknown, None).await;
    let chain = describe_error(&client).await;
    assert!(chain.contains("AccessDenied"), "{chain}");
    // Refused AssumeRoles never reached SSM.
    assert_eq!(running.emulator.calls("DescribeSessions"), 0);
    // Both requests for the configured role count for its account; the
    // unknown role counts only in the total.
    assert_eq!(
        running
            .emulator
            .calls_for("AssumeRole", DEMO_EXTERNAL_ID_ACCOUNT),
        2
    );
    assert_eq!(running.emulator.calls("AssumeRole"), 3);
}

#[tokio::test]
async fn signatures_are_verified() {
    let running = spawn(sts_config(three_accounts())).await;
    let good = client_as(&running, DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY, REGION);
    good.describe_sessions()
        .state(SdkState::Active)
        .send()
        .await
        .unwrap();

    let bad = client_as(&running, DEMO_ACCESS_KEY_ID, "not-the-secret", REGION);
    let err = bad
        .describe_sessions()
        .state(SdkState::Active)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");
    assert!(
        err.message()
            .unwrap()
            .starts_with("The request signature we calculated does not match"),
        "{err:?}"
    );

    // Another account's secret for this key: also refused, never served.
    let swapped = client_as(
        &running,
        DEMO_ACCESS_KEY_ID,
        "emulator-secret-444455556666",
        REGION,
    );
    let err = swapped
        .describe_sessions()
        .state(SdkState::Active)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("InvalidSignatureException"));

    // STS checks signatures too.
    let sts =
        aws_sdk_sts::Client::new(&sdk_config(&running, DEMO_ACCESS_KEY_ID, "not-the-secret").await);
    let err = sts
        .get_caller_identity()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err:?}");
}

#[tokio::test]
async fn get_caller_identity_names_static_and_assumed_callers() {
    let running = spawn(sts_config(three_accounts())).await;
    let base = demo_sdk_config(&running).await;
    let sts = aws_sdk_sts::Client::new(&base);
    let me = sts.get_caller_identity().send().await.unwrap();
    assert_eq!(me.account(), Some(DEMO_ACCOUNT_ID));
    assert_eq!(me.arn(), Some("arn:aws:iam::111122223333:root"));
    assert_eq!(me.user_id(), Some(DEMO_ACCOUNT_ID));

    let account = "777788889999";
    let assumed = sts
        .assume_role()
        .role_arn(demo_role_arn(account))
        .role_session_name("who-am-i")
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let creds = assumed.credentials().unwrap();
    assert!(creds.access_key_id().starts_with("ASIA"));
    assert_eq!(creds.access_key_id().len(), 20);
    let expires_in = creds.expiration().secs()
        - aws_sdk_sts::primitives::DateTime::from(std::time::SystemTime::now()).secs();
    assert!((890..=900).contains(&expires_in), "{expires_in}");
    let user = assumed.assumed_role_user().unwrap();
    let arn = format!("arn:aws:sts::{account}:assumed-role/SessionGatewayReader/who-am-i");
    assert_eq!(user.arn(), arn);
    assert!(user.assumed_role_id().starts_with("AROA"));
    assert!(user.assumed_role_id().ends_with(":who-am-i"));

    let as_role = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&base)
            .credentials_provider(Credentials::new(
                creds.access_key_id(),
                creds.secret_access_key(),
                Some(creds.session_token().to_owned()),
                None,
                "assumed",
            ))
            .build(),
    );
    let me = as_role.get_caller_identity().send().await.unwrap();
    assert_eq!(me.account(), Some(account));
    assert_eq!(me.arn(), Some(arn.as_str()));
    assert_eq!(me.user_id(), Some(user.assumed_role_id()));
    assert_eq!(running.emulator.calls_for("GetCallerIdentity", account), 1);
    assert_eq!(running.emulator.calls("GetCallerIdentity"), 2);

    // Bad parameters are a ValidationError.
    let err = sts
        .assume_role()
        .role_arn(demo_role_arn(account))
        .role_session_name("x")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("ValidationError"), "{err:?}");
}

#[tokio::test]
async fn issued_credentials_need_their_token_and_expire() {
    let data = three_accounts();
    let running = spawn(EmulatorConfig {
        sts_credential_ttl_override: Some(Duration::from_secs(2)),
        ..sts_config(data.clone())
    })
    .await;
    let base = demo_sdk_config(&running).await;
    let account = "777788889999";
    let issued = aws_sdk_sts::Client::new(&base)
        .assume_role()
        .role_arn(demo_role_arn(account))
        .role_session_name("short-lived")
        .send()
        .await
        .unwrap();
    let creds = issued.credentials().unwrap().clone();
    let ssm = |token: Option<&str>| {
        aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(&base)
                .credentials_provider(Credentials::new(
                    creds.access_key_id(),
                    creds.secret_access_key(),
                    token.map(str::to_owned),
                    None,
                    "issued",
                ))
                .build(),
        )
    };
    let with_token = ssm(Some(creds.session_token()));
    assert_eq!(
        all_ids(&with_token, SdkState::History).await,
        want_ids(&data, account, SessionState::History)
    );
    for token in [None, Some("IQoJnot-the-token")] {
        let err = ssm(token)
            .describe_sessions()
            .state(SdkState::Active)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("UnrecognizedClientException"), "{token:?}");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = with_token
        .describe_sessions()
        .state(SdkState::Active)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("ExpiredTokenException"), "{err:?}");
}
