//! `ssm-emulator`: the SSM + STS emulator with the demo data, on its own.
//! Point the aws CLI, boto3 or any AWS SDK at it with an endpoint URL; see
//! this crate's README.

use std::net::SocketAddr;

use clap::Parser;
use ssm_emulator::cli::DemoDataArgs;
use ssm_emulator::{DEMO_ACCESS_KEY_ID, DEMO_REGION, Emulator};
use tracing_subscriber::EnvFilter;

/// An AWS Systems Manager (Session Manager APIs) and STS emulator speaking
/// the real wire protocols, with seeded demo data.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Where the emulator listens.
    #[arg(long, default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    #[command(flatten)]
    data: DemoDataArgs,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        access_key_id = DEMO_ACCESS_KEY_ID,
        region = DEMO_REGION,
        "SSM emulator listening; stats at /_emulator/stats"
    );
    Emulator::new(cli.data.config())
        .serve(listener, shutdown_signal())
        .await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
