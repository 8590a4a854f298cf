//! Emulator-only helpers: a running emulator on 127.0.0.1:0 and raw SDK clients for it.

use std::time::Duration;

use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use chrono::{DateTime, TimeZone, Utc};
use ssm_emulator::{
    DEMO_ACCESS_KEY_ID, DEMO_ACCOUNT_ID, DEMO_SECRET_ACCESS_KEY, DataSpec, Dataset, Emulator,
    EmulatorConfig, SourceSpec, demo_credentials,
};
use tokio::sync::oneshot;

/// "Now" for generated data.
pub fn anchor() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 8, 29, 10, 0, 0).unwrap()
}

/// A few sources of moderate size: the demo account in two regions and a
/// second account, enough for several pages without slowing the suite.
pub fn dataset() -> Dataset {
    Dataset::generate(&DataSpec {
        seed: 2024,
        anchor: anchor(),
        sources: vec![
            SourceSpec::new(DEMO_ACCOUNT_ID, "us-east-1", 23, 187),
            SourceSpec::new(DEMO_ACCOUNT_ID, "eu-west-1", 4, 31),
            SourceSpec::new("444455556666", "us-east-1", 6, 45),
        ],
    })
}

pub fn config(dataset: Dataset) -> EmulatorConfig {
    EmulatorConfig::new(dataset, demo_credentials())
}

/// An emulator serving on a loopback port; stops when dropped.
pub struct Running {
    pub emulator: Emulator,
    pub endpoint: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn(config: EmulatorConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let emulator = Emulator::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = emulator.clone();
    tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        emulator,
        endpoint,
        stop: Some(stop),
    }
}

/// A real SDK client for the emulator, retries off so errors surface as sent.
pub fn client_as(
    running: &Running,
    access_key_id: &str,
    secret: &str,
    region: &str,
) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::config::Builder::new()
        .endpoint_url(&running.endpoint)
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "test"))
        .behavior_version(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            aws_sdk_ssm::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// The demo key in us-east-1.
pub fn client(running: &Running) -> aws_sdk_ssm::Client {
    client_as(
        running,
        DEMO_ACCESS_KEY_ID,
        DEMO_SECRET_ACCESS_KEY,
        "us-east-1",
    )
}

/// Signs `request` with SigV4 as the AWS SDKs do (the SDK's own `aws-sigv4`
/// signer, not the emulator's verifier), for `service` in `region`. The
/// request's URI is its path; it is signed for host `emulator.test`.
pub async fn sign(
    request: axum::http::Request<axum::body::Body>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> axum::http::Request<axum::body::Body> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let (mut parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 24).await.unwrap();
    parts
        .headers
        .insert("host", "emulator.test".parse().unwrap());
    let identity = Credentials::new(access_key_id, secret, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("http://emulator.test{}", parts.uri);
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let signable = SignableRequest::new(
        parts.method.as_str(),
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = axum::http::Request::from_parts(parts, axum::body::Body::from(body));
    instructions.apply_to_request_http1x(&mut request);
    request
}
