//! Fault injection through the real `aws-sdk-ssm` client over HTTP.

use std::time::Duration;

use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::SessionState as SdkState;
use ssm_emulator::{DEMO_ACCOUNT_ID, Emulator, EmulatorConfig, Faults, Latency};

use crate::support::{client, config, dataset, spawn};

const OP: &str = "DescribeSessions";

fn throttling(ratio: f64, seed: u64) -> Faults {
    Faults {
        throttle_ratio: ratio,
        seed,
        ..Faults::default()
    }
}

async fn call(client: &aws_sdk_ssm::Client) -> Result<(), String> {
    client
        .describe_sessions()
        .state(SdkState::Active)
        .max_results(1)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.code().unwrap_or("none").to_owned())
}

/// How many of `n` sequential calls were throttled.
async fn throttled_of(faults: Faults, n: usize) -> (usize, Emulator) {
    let running = spawn(EmulatorConfig {
        faults,
        ..config(dataset())
    })
    .await;
    let client = client(&running);
    let mut throttled = 0;
    for _ in 0..n {
        match call(&client).await {
            Ok(()) => {}
            Err(code) if code == "ThrottlingException" => throttled += 1,
            Err(code) => panic!("unexpected {code}"),
        }
    }
    (throttled, running.emulator.clone())
}

#[tokio::test]
async fn throttle_ratio_is_seeded_and_counted() {
    let (first, emulator) = throttled_of(throttling(0.5, 11), 400).await;
    assert!((120..=280).contains(&first), "{first} of 400");
    assert_eq!(emulator.throttled(), first as u64);
    assert_eq!(emulator.failed(), 0);
    assert_eq!(emulator.calls(OP), 400);
    let (second, _) = throttled_of(throttling(0.5, 11), 400).await;
    assert_eq!(first, second, "same seed, same sequence");
    let (none, emulator) = throttled_of(throttling(0.0, 11), 200).await;
    assert_eq!((none, emulator.throttled()), (0, 0));
}

#[tokio::test]
async fn set_faults_flips_a_healthy_upstream() {
    let running = spawn(config(dataset())).await;
    let client = client(&running);
    let emulator = &running.emulator;
    assert!(call(&client).await.is_ok());
    emulator.set_faults(Faults {
        error_ratio: 1.0,
        ..Faults::default()
    });
    assert_eq!(emulator.faults().error_ratio, 1.0);
    let err = client
        .describe_sessions()
        .state(SdkState::Active)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InternalServerError"));
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(500),
        "a 500"
    );
    assert_eq!(emulator.failed(), 1);
    // STS stays reliable: faults are for SSM only.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::new()
            .endpoint_url(&running.endpoint)
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                ssm_emulator::DEMO_ACCESS_KEY_ID,
                ssm_emulator::DEMO_SECRET_ACCESS_KEY,
                None,
                None,
                "test",
            ))
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .build(),
    );
    let identity = sts.get_caller_identity().send().await.unwrap();
    assert_eq!(identity.account(), Some(DEMO_ACCOUNT_ID));

    emulator.set_faults(Faults::default());
    assert!(call(&client).await.is_ok());
    emulator.reset_stats();
    assert_eq!((emulator.failed(), emulator.throttled()), (0, 0));
}

#[tokio::test]
async fn sdk_classifies_throttling_and_retries_through_it() {
    let running = spawn(EmulatorConfig {
        faults: throttling(1.0, 3),
        ..config(dataset())
    })
    .await;
    let err = client(&running)
        .describe_sessions()
        .state(SdkState::Active)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert_eq!(err.message(), Some("Rate exceeded"));

    running.emulator.set_faults(throttling(0.5, 3));
    let retrying = aws_sdk_ssm::Client::from_conf(
        client(&running)
            .config()
            .to_builder()
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(10)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .build(),
    );
    for i in 0..40 {
        assert!(call(&retrying).await.is_ok(), "call {i}");
    }
    let emulator = &running.emulator;
    assert!(emulator.throttled() > 0, "some attempts were throttled");
    assert_eq!(
        emulator.calls(OP),
        40 + emulator.throttled(),
        "one extra attempt per throttle"
    );
}

#[tokio::test]
async fn latency_holds_requests_in_flight() {
    let running = spawn(EmulatorConfig {
        faults: Faults {
            latency: Latency::Uniform {
                min: Duration::from_millis(200),
                max: Duration::from_millis(300),
            },
            ..Faults::default()
        },
        ..config(dataset())
    })
    .await;
    let client = client(&running);
    let results = tokio::join!(call(&client), call(&client), call(&client), call(&client));
    assert_eq!(results, (Ok(()), Ok(()), Ok(()), Ok(())));
    assert_eq!(running.emulator.max_in_flight(), 4);
    running.emulator.set_faults(Faults {
        latency: Latency::Fixed(Duration::from_millis(150)),
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    assert!(call(&client).await.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(150));
}
