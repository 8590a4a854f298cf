//! The emulator through the real `aws-sdk-ssm` client over HTTP.

use std::time::Duration;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::operation::describe_sessions::DescribeSessionsError;
use aws_sdk_ssm::types::{Session, SessionFilter, SessionFilterKey, SessionState as SdkState};
use chrono::{DateTime, SecondsFormat, Utc};
use ssm_emulator::{
    AccessType, DEMO_ACCESS_KEY_ID, DEMO_ACCOUNT_ID, DEMO_SECRET_ACCESS_KEY, Dataset,
    EmulatorConfig, SessionRecord, SessionState, SessionStatus,
};

use crate::support::{anchor, client, client_as, config, dataset, spawn};

const OP: &str = "DescribeSessions";

fn sdk_state(state: SessionState) -> SdkState {
    match state {
        SessionState::Active => SdkState::Active,
        SessionState::History => SdkState::History,
    }
}

fn ids_where(
    data: &Dataset,
    account: &str,
    region: &str,
    state: SessionState,
    keep: impl Fn(&SessionRecord) -> bool,
) -> Vec<String> {
    data.sessions(account, region)
        .iter()
        .filter(|s| s.state() == state && keep(s))
        .map(|s| s.session_id.clone())
        .collect()
}

fn ids(sessions: &[Session]) -> Vec<String> {
    sessions
        .iter()
        .map(|s| s.session_id().unwrap().to_owned())
        .collect()
}

fn filter(key: SessionFilterKey, value: &str) -> SessionFilter {
    SessionFilter::builder()
        .key(key)
        .value(value)
        .build()
        .unwrap()
}

/// All sessions the SDK's paginator yields, and how many pages it took.
async fn paginate(
    client: &aws_sdk_ssm::Client,
    state: SessionState,
    max: Option<i32>,
    filters: Vec<SessionFilter>,
) -> (Vec<Session>, usize) {
    let pages: Vec<_> = client
        .describe_sessions()
        .state(sdk_state(state))
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
            .flat_map(|p| p.sessions.unwrap_or_default())
            .collect(),
        n,
    )
}

fn millis(t: &aws_sdk_ssm::primitives::DateTime) -> i64 {
    (t.as_secs_f64() * 1000.0).round() as i64
}

#[tokio::test]
async fn sdk_walk_returns_every_session_once_in_order() {
    let data = dataset();
    let running = spawn(config(data.clone())).await;
    let client = client(&running);
    for state in [SessionState::Active, SessionState::History] {
        let want = ids_where(&data, DEMO_ACCOUNT_ID, "us-east-1", state, |_| true);
        for max in [Some(3), Some(50), Some(200), None] {
            let (got, pages) = paginate(&client, state, max, vec![]).await;
            assert_eq!(ids(&got), want, "{state:?} max {max:?}");
            let per_page = max.unwrap_or(20) as usize;
            assert_eq!(
                pages,
                want.len().div_ceil(per_page).max(1),
                "{state:?} max {max:?}: full pages"
            );
        }
    }
    // What the SDK parsed is in the documented order, checked on its own
    // terms: newest StartDate first, then SessionId ascending.
    let (got, _) = paginate(&client, SessionState::History, Some(200), vec![]).await;
    let keys: Vec<(i64, &str)> = got
        .iter()
        .map(|s| (-millis(s.start_date().unwrap()), s.session_id().unwrap()))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "order");
    assert!(
        keys.windows(2).any(|w| w[0].0 == w[1].0),
        "the data has ties"
    );
    // What the SDK parsed is what the emulator holds, field by field.
    let records = data
        .sessions(DEMO_ACCOUNT_ID, "us-east-1")
        .iter()
        .filter(|s| s.state() == SessionState::History);
    for (sdk, record) in got.iter().zip(records) {
        assert_eq!(sdk.target(), Some(record.target.as_str()));
        assert_eq!(sdk.owner(), Some(record.owner.as_str()));
        assert_eq!(
            sdk.status().map(|s| s.as_str()),
            Some(record.status.as_str())
        );
        assert_eq!(sdk.document_name(), Some(record.document_name.as_str()));
        assert_eq!(sdk.reason(), record.reason.as_deref());
        assert_eq!(
            sdk.max_session_duration(),
            record.max_session_duration.as_deref()
        );
        assert_eq!(
            sdk.access_type().map(|a| a.as_str()),
            record.access_type.map(AccessType::as_str)
        );
        assert_eq!(
            millis(sdk.start_date().unwrap()),
            record.start_date.timestamp_millis()
        );
        assert_eq!(
            sdk.end_date().map(millis),
            record.end_date.map(|t| t.timestamp_millis())
        );
        let url = sdk.output_url();
        assert_eq!(
            url.and_then(|u| u.s3_output_url()),
            record
                .output_url
                .as_ref()
                .and_then(|u| u.s3_output_url.as_deref())
        );
        assert_eq!(
            url.and_then(|u| u.cloud_watch_output_url()),
            record
                .output_url
                .as_ref()
                .and_then(|u| u.cloud_watch_output_url.as_deref())
        );
    }
}

#[tokio::test]
async fn sdk_walk_in_short_pages_mode() {
    let data = dataset();
    let mut short_pages_seen = false;
    for seed in [1, 2, 3] {
        let running = spawn(EmulatorConfig {
            short_pages: Some(seed),
            ..config(data.clone())
        })
        .await;
        let client = client(&running);
        for (state, max) in [
            (SessionState::History, 10),
            (SessionState::History, 70),
            (SessionState::Active, 4),
        ] {
            let want = ids_where(&data, DEMO_ACCOUNT_ID, "us-east-1", state, |_| true);
            let (got, pages) = paginate(&client, state, Some(max), vec![]).await;
            assert_eq!(ids(&got), want, "seed {seed} {state:?} max {max}");
            short_pages_seen |= pages > want.len().div_ceil(max as usize);
        }
    }
    assert!(short_pages_seen, "short-pages mode must cut pages short");
}

#[tokio::test]
async fn account_and_region_come_from_the_signature() {
    let data = dataset();
    let running = spawn(config(data.clone())).await;
    let cases = [
        (
            DEMO_ACCESS_KEY_ID,
            DEMO_SECRET_ACCESS_KEY,
            DEMO_ACCOUNT_ID,
            "eu-west-1",
        ),
        (
            "AKIAEMULATOR55556666",
            "emulator-secret-444455556666",
            "444455556666",
            "us-east-1",
        ),
        // No data there: empty lists, not an error.
        (
            "AKIAEMULATOR55556666",
            "emulator-secret-444455556666",
            "444455556666",
            "ap-south-1",
        ),
    ];
    for (key, secret, account, region) in cases {
        let client = client_as(&running, key, secret, region);
        let want = ids_where(&data, account, region, SessionState::History, |_| true);
        let (got, _) = paginate(&client, SessionState::History, Some(25), vec![]).await;
        assert_eq!(ids(&got), want, "{account} {region}");
    }
    assert_eq!(running.emulator.calls_for(OP, "444455556666"), 2 + 1);
}

#[tokio::test]
async fn each_filter_key_selects_what_the_dataset_says() {
    let data = dataset();
    let running = spawn(config(data.clone())).await;
    let client = client(&running);
    let sessions = data.sessions(DEMO_ACCOUNT_ID, "us-east-1");
    let sample = &sessions[sessions.len() / 3];
    // A session starts exactly at the cut, so >= and < are told apart.
    let cut = sessions[sessions.len() / 2..]
        .iter()
        .find(|s| s.state() == SessionState::History && s.start_date.timestamp_subsec_nanos() == 0)
        .unwrap()
        .start_date;
    let cut_text = cut.to_rfc3339_opts(SecondsFormat::Secs, true);

    type Keep = Box<dyn Fn(&SessionRecord) -> bool>;
    let (target, owner, id) = (
        sample.target.clone(),
        sample.owner.clone(),
        sample.session_id.clone(),
    );
    let cases: Vec<(SessionFilterKey, String, Keep)> = vec![
        (
            SessionFilterKey::InvokedAfter,
            cut_text.clone(),
            Box::new(move |s| s.start_date >= cut),
        ),
        (
            SessionFilterKey::InvokedBefore,
            cut_text,
            Box::new(move |s| s.start_date < cut),
        ),
        (
            SessionFilterKey::TargetId,
            target.clone(),
            Box::new(move |s| s.target == target),
        ),
        (
            SessionFilterKey::Owner,
            owner.clone(),
            Box::new(move |s| s.owner == owner),
        ),
        (
            SessionFilterKey::Status,
            "Failed".into(),
            Box::new(|s| s.status == SessionStatus::Failed),
        ),
        (
            SessionFilterKey::SessionId,
            id.clone(),
            Box::new(move |s| s.session_id == id),
        ),
        (
            SessionFilterKey::AccessType,
            "JustInTime".into(),
            Box::new(|s| s.access_type == Some(AccessType::JustInTime)),
        ),
    ];
    for (key, value, keep) in cases {
        let want = ids_where(
            &data,
            DEMO_ACCOUNT_ID,
            "us-east-1",
            SessionState::History,
            &keep,
        );
        assert!(!want.is_empty(), "{key:?}={value} should select something");
        let (got, _) = paginate(
            &client,
            SessionState::History,
            Some(40),
            vec![filter(key.clone(), &value)],
        )
        .await;
        assert_eq!(ids(&got), want, "{key:?}={value}");
    }

    // Several filters AND together.
    let status_and_before = vec![
        filter(SessionFilterKey::Status, "Terminated"),
        filter(SessionFilterKey::InvokedBefore, "2024-08-20T00:00:00Z"),
    ];
    let before: DateTime<Utc> = "2024-08-20T00:00:00Z".parse().unwrap();
    let want = ids_where(
        &data,
        DEMO_ACCOUNT_ID,
        "us-east-1",
        SessionState::History,
        |s| s.status == SessionStatus::Terminated && s.start_date < before,
    );
    let (got, _) = paginate(&client, SessionState::History, Some(30), status_and_before).await;
    assert_eq!(ids(&got), want);
}

#[tokio::test]
async fn sdk_sees_modeled_and_generic_errors() {
    let running = spawn(config(dataset())).await;
    let client = client(&running);

    for max in [0, 201] {
        let err = client
            .describe_sessions()
            .state(SdkState::Active)
            .max_results(max)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("ValidationException"), "MaxResults {max}");
        assert!(err.message().unwrap().contains("maxResults"), "{err:?}");
    }

    let err = client
        .describe_sessions()
        .state(SdkState::History)
        .filters(filter(SessionFilterKey::from("Bogus"), "x"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, DescribeSessionsError::InvalidFilterKey(_)),
        "{err:?}"
    );

    let err = client
        .describe_sessions()
        .state(SdkState::History)
        .next_token("eyJvZmZzZXQiOjIwfQ")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    let DescribeSessionsError::InvalidNextToken(e) = err else {
        panic!("expected InvalidNextToken, got {err:?}");
    };
    assert!(
        e.message().is_some_and(|m| !m.is_empty()),
        "the model's Message member is filled"
    );

    let stranger = client_as(&running, "AKIAUNKNOWNKEY000000", "x", "us-east-1");
    let err = stranger
        .describe_sessions()
        .state(SdkState::Active)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("UnrecognizedClientException"));
    assert_eq!(
        err.message(),
        Some("The security token included in the request is invalid.")
    );
}

#[tokio::test]
async fn tokens_are_bound_to_instance_listing_and_time() {
    let data = dataset();
    let running = spawn(config(data.clone())).await;
    let client = client(&running);
    let terminated = || filter(SessionFilterKey::Status, "Terminated");
    let first = client
        .describe_sessions()
        .state(SdkState::History)
        .filters(terminated())
        .max_results(5)
        .send()
        .await
        .unwrap();
    let token = first.next_token().unwrap().to_owned();

    let invalid_token = |r: Result<_, aws_sdk_ssm::error::SdkError<DescribeSessionsError, _>>| {
        matches!(
            r.map_err(|e| e.into_service_error()),
            Err(DescribeSessionsError::InvalidNextToken(_))
        )
    };
    // Another listing: other state, other filters, other region.
    let other_state = client
        .describe_sessions()
        .state(SdkState::Active)
        .next_token(&token)
        .send()
        .await;
    assert!(invalid_token(other_state));
    let other_filter = client
        .describe_sessions()
        .state(SdkState::History)
        .filters(filter(SessionFilterKey::Status, "Failed"))
        .next_token(&token)
        .send()
        .await;
    assert!(invalid_token(other_filter));
    let eu = client_as(
        &running,
        DEMO_ACCESS_KEY_ID,
        DEMO_SECRET_ACCESS_KEY,
        "eu-west-1",
    );
    assert!(invalid_token(
        eu.describe_sessions()
            .state(SdkState::History)
            .next_token(&token)
            .send()
            .await
    ));

    // Another emulator instance (another secret).
    let other = spawn(config(data.clone())).await;
    let other_client = crate::support::client(&other);
    assert!(invalid_token(
        other_client
            .describe_sessions()
            .state(SdkState::History)
            .next_token(&token)
            .send()
            .await
    ));

    // Same listing, another page size: fine.
    let next = client
        .describe_sessions()
        .state(SdkState::History)
        .filters(terminated())
        .max_results(7)
        .next_token(&token)
        .send()
        .await
        .unwrap();
    let want = ids_where(
        &data,
        DEMO_ACCOUNT_ID,
        "us-east-1",
        SessionState::History,
        |s| s.status == SessionStatus::Terminated,
    );
    assert_eq!(ids(next.sessions()), want[5..12]);

    // Stale.
    let short_lived = spawn(EmulatorConfig {
        token_ttl: Duration::from_millis(1),
        ..config(data)
    })
    .await;
    let c = crate::support::client(&short_lived);
    let page = c
        .describe_sessions()
        .state(SdkState::History)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stale = c
        .describe_sessions()
        .state(SdkState::History)
        .next_token(page.next_token().unwrap())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(stale.message().unwrap().contains("expired"), "{stale:?}");
}

#[tokio::test]
async fn a_token_clock_gives_the_same_page_the_same_token() {
    let data = dataset();
    let first_token = |running: &crate::support::Running| {
        let c = crate::support::client(running);
        async move {
            let page = c
                .describe_sessions()
                .state(SdkState::History)
                .max_results(5)
                .send()
                .await
                .unwrap();
            page.next_token().unwrap().to_owned()
        }
    };
    // Issued at the request's time: two asks, two tokens.
    let now = spawn(config(data.clone())).await;
    let a = first_token(&now).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_ne!(a, first_token(&now).await);
    // At the clock's: the same token, which still reads (its age is the
    // clock's too).
    let fixed = spawn(EmulatorConfig {
        token_clock: Some(chrono::Utc::now()),
        ..config(data)
    })
    .await;
    let a = first_token(&fixed).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(a, first_token(&fixed).await);
    let next = crate::support::client(&fixed)
        .describe_sessions()
        .state(SdkState::History)
        .max_results(5)
        .next_token(a)
        .send()
        .await
        .unwrap();
    assert_eq!(next.sessions().len(), 5);
}

#[tokio::test]
async fn sessions_inserted_while_paging_do_not_shift_the_walk() {
    let data = dataset();
    let running = spawn(config(data.clone())).await;
    let client = client(&running);
    let want = ids_where(
        &data,
        DEMO_ACCOUNT_ID,
        "us-east-1",
        SessionState::History,
        |_| true,
    );

    let mut got = Vec::new();
    let mut token: Option<String> = None;
    let mut inserted = 0;
    loop {
        let page = client
            .describe_sessions()
            .state(SdkState::History)
            .max_results(30)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        got.extend(ids(page.sessions()));
        // A new session lands at the front after every page.
        let mut newest = data.sessions(DEMO_ACCOUNT_ID, "us-east-1")[0].clone();
        newest.session_id = format!("zed-{inserted:017x}");
        newest.status = SessionStatus::Terminated;
        newest.start_date = anchor() + chrono::Duration::seconds(inserted);
        newest.end_date = Some(newest.start_date + chrono::Duration::seconds(5));
        running
            .emulator
            .insert_session(DEMO_ACCOUNT_ID, "us-east-1", newest);
        inserted += 1;
        match page.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(got, want);
    // A fresh walk sees them first, newest first.
    let (fresh, _) = paginate(&client, SessionState::History, Some(200), vec![]).await;
    let fresh = ids(&fresh);
    assert_eq!(fresh.len(), want.len() + inserted as usize);
    assert_eq!(fresh[0], format!("zed-{:017x}", inserted - 1));
    assert_eq!(fresh[inserted as usize..], want[..]);
}

#[tokio::test]
async fn counters_count() {
    let running = spawn(EmulatorConfig {
        latency: Some(Duration::from_millis(300)),
        ..config(dataset())
    })
    .await;
    let emulator = running.emulator.clone();
    assert_eq!(
        (
            emulator.calls(OP),
            emulator.in_flight(),
            emulator.max_in_flight()
        ),
        (0, 0, 0)
    );

    let client = client(&running);
    let other = client_as(
        &running,
        "AKIAEMULATOR55556666",
        "emulator-secret-444455556666",
        "us-east-1",
    );
    let stranger = client_as(&running, "AKIAUNKNOWNKEY000000", "x", "us-east-1");
    let call = |c: aws_sdk_ssm::Client| async move {
        c.describe_sessions()
            .state(SdkState::Active)
            .send()
            .await
            .is_ok()
    };
    let results = tokio::join!(
        call(client.clone()),
        call(client.clone()),
        call(client.clone()),
        call(other.clone()),
        call(stranger.clone()),
    );
    assert_eq!(results, (true, true, true, true, false));
    assert_eq!(emulator.calls(OP), 5, "every request for the operation");
    assert_eq!(emulator.calls_for(OP, DEMO_ACCOUNT_ID), 3);
    assert_eq!(emulator.calls_for(OP, "444455556666"), 1);
    assert_eq!(emulator.calls("TerminateSession"), 0);
    // All five slept in the handler at the same time.
    assert_eq!(emulator.max_in_flight(), 5);
    assert_eq!(emulator.in_flight(), 0);

    emulator.reset_stats();
    assert_eq!(
        (
            emulator.calls(OP),
            emulator.calls_for(OP, DEMO_ACCOUNT_ID),
            emulator.max_in_flight()
        ),
        (0, 0, 0)
    );
    assert!(call(client).await);
    assert_eq!((emulator.calls(OP), emulator.max_in_flight()), (1, 1));
}
