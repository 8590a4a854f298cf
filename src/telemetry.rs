//! Logs and traces: one `tracing` subscriber for the process.
//!
//! - **Logs** go to stderr, filtered by `RUST_LOG` (default `info`), as text
//!   or as JSON lines (`log_format`). A JSON line carries `trace_id` and
//!   `span_id` when it was written inside a traced request, so a log search
//!   finds the trace and back. Lines are formatted where they are logged
//!   (JSON straight into one string, see [`lines`]) and written by a thread
//!   of their own, which gathers them for 20 ms and writes them with one
//!   write(2): a request never waits on stderr, and under load the thread
//!   wakes once per batch, not once per line (writing one line per request
//!   cost the response-cache hit about 40% of its throughput). Nothing is
//!   dropped: past 8 MiB waiting, logging waits. [`Telemetry::shutdown`]
//!   (and dropping it) writes what is left.
//! - **Traces** go to an OpenTelemetry collector over OTLP/HTTP (protobuf)
//!   when `otlp.endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is
//!   set. Spans nest `http.request` > GraphQL `request` > `execute` >
//!   `field` (`sessions`) > `ssm.describe_sessions` > `ssm.attempt`. A
//!   caller's W3C `traceparent` is honoured whether or not spans are
//!   exported, so log lines carry the caller's trace id either way: not
//!   exporting, the OpenTelemetry layer is not installed (it would build
//!   every span's data only to drop it) and [`ids`] gives the gateway's
//!   spans their ids instead.
//!
//! **A collector that is down never slows a request.** Spans are handed to
//! a batch processor with a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`,
//! default 2048; beyond it spans are dropped) and exported from the
//! processor's own thread, every `OTEL_BSP_SCHEDULE_DELAY` (5 s). The export
//! itself runs on the tokio runtime ([`OtlpClient`]: the hyper client that
//! is already in the tree, with rustls for `https://`), bounded by a timeout
//! (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s).

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::settings::{LogFormat, OtlpSettings};

mod ids;
mod lines;

use ids::TraceIds;
pub use ids::follow_caller;
use lines::{JsonLines, LineWriter, LinesGuard, SpanFields};

/// The default `service.name`.
pub const SERVICE_NAME: &str = "ssm-session-gateway";

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans still
/// queued before the process exits.
#[must_use = "call shutdown() before exiting, or queued spans are lost"]
pub struct Telemetry {
    exporting: Option<SdkTracerProvider>,
    /// Writes the log lines still buffered when dropped.
    _logs: Option<LinesGuard>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// Exports the spans still queued (bounded by the export timeout), then
    /// writes the log lines still buffered.
    pub async fn shutdown(self) {
        if let Some(provider) = self.exporting {
            // `shutdown` blocks until the processor's thread has exported,
            // and the export runs on this runtime: keep a worker free.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = provider.shutdown() {
                    eprintln!("could not flush traces: {e}");
                }
            })
            .await;
        }
    }
}

/// Installs the process's subscriber (logs per `log_format`; traces per
/// `otlp` and the `OTEL_*` variables) and the W3C trace-context propagator.
/// A second call installs nothing. Must run inside the tokio runtime.
pub fn init(log_format: LogFormat, otlp: &OtlpSettings) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match log_format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let (exporting, export_error) = match exporter(otlp) {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    // Exporting, the OpenTelemetry layer follows every span. Not exporting,
    // it would build every span's data only to drop it: JSON lines get
    // their trace and span ids from `TraceIds` instead, and text lines
    // carry none.
    let otel = exporting
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME)));
    let ids = (exporting.is_none() && json).then_some(TraceIds);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(ids);
    let (writer, guard) = match LineWriter::spawn(std::io::stderr()) {
        Ok((writer, guard)) => (BoxMakeWriter::new(writer), Some(guard)),
        // No thread to be had: lines are written where they are logged.
        Err(_) => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let installed = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .fmt_fields(SpanFields)
                    .event_format(JsonLines),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init()
    };
    if installed.is_err() {
        return Telemetry {
            exporting: None,
            _logs: None,
        };
    }
    match (&export_error, &exporting) {
        (Some(e), _) => tracing::error!(error = %format_args!("{e:#}"), "traces are not exported"),
        (None, Some(_)) => tracing::info!("exporting traces over OTLP/HTTP"),
        (None, None) => {}
    }
    Telemetry {
        exporting,
        _logs: guard,
    }
}

/// The standard variable `name`, when set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The tracer provider exporting to the configured collector; `None` when
/// no endpoint is configured.
fn exporter(otlp: &OtlpSettings) -> anyhow::Result<Option<SdkTracerProvider>> {
    let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some();
    if otlp.endpoint.is_none() && !from_env {
        return Ok(None);
    }
    if let Some(protocol) = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .filter(|p| p != "http/protobuf")
    {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: this build exports \
             http/protobuf only (a collector's port 4318)"
        );
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpClient::new()?)
        .with_protocol(Protocol::HttpBinary);
    if let Some(endpoint) = &otlp.endpoint {
        builder = builder.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = builder.build().context("cannot build the OTLP exporter")?;
    let service_name = otlp
        .service_name
        .clone()
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| SERVICE_NAME.to_owned());
    let resource = Resource::builder().with_service_name(service_name).build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_resource(resource)
            .build(),
    ))
}

/// Bound on one export request, connection included, unless
/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds) says otherwise.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

fn export_timeout() -> Duration {
    env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(EXPORT_TIMEOUT, Duration::from_millis)
}

/// The OTLP exporter's HTTP client: hyper (with rustls for `https://`), run
/// on the tokio runtime. The batch processor exports from a thread of its
/// own with a plain executor, where a tokio-based client cannot run; so each
/// request is spawned onto the runtime and only its result awaited there.
#[derive(Clone, Debug)]
pub struct OtlpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// Whether the last export failed, so a down collector is logged once
    /// when it goes down and once when it is back, not every batch.
    failing: Arc<AtomicBool>,
}

impl OtlpClient {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the OTLP client needs a tokio runtime")?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .context("cannot load the system's root certificates")?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            runtime,
            timeout: export_timeout(),
            failing: Arc::new(AtomicBool::new(false)),
        })
    }

    fn note(&self, ok: bool, error: Option<&str>) {
        let was_failing = self.failing.swap(!ok, Ordering::Relaxed);
        match (was_failing, ok) {
            (false, false) => tracing::warn!(
                error = error.unwrap_or_default(),
                "cannot export traces; spans are dropped until the collector answers"
            ),
            (true, true) => tracing::info!("exporting traces again"),
            _ => {}
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let send = async move {
            let (parts, body) = request.into_parts();
            let response = client
                .request(Request::from_parts(parts, Full::new(body)))
                .await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let timeout = self.timeout;
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, send).await });
        let result = match task.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the export timed out".into()),
            Err(e) => Err(Box::new(e) as HttpError),
        };
        match &result {
            Ok(response) if response.status().is_success() => self.note(true, None),
            Ok(response) => self.note(false, Some(&format!("HTTP {}", response.status()))),
            Err(e) => self.note(false, Some(&e.to_string())),
        }
        result
    }
}
