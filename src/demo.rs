//! `demo`: the emulator with demo data and the gateway over it, in one
//! process, so GraphiQL shows realistic sessions with no AWS account.
//!
//! The gateway reaches the emulator exactly as it would reach AWS: through
//! aws-sdk-ssm over HTTP, signed with the demo credentials.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use aws_credential_types::Credentials;
use tokio::net::TcpListener;

use crate::app::Application;
use crate::emulator::{self, Emulator, EmulatorConfig};
use crate::settings::{Secret, Settings};
use crate::upstream::sdk::{ClientSettings, SdkSessionSource, ssm_client};

/// What `demo` can be told.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The gateway's address.
    pub listen: SocketAddr,
    /// The emulator's address (port 0: any free port).
    pub emulator_listen: SocketAddr,
    /// Make the emulator answer short and empty pages, as SSM may.
    pub short_pages: bool,
}

/// Client settings that reach an emulator at `addr` with the demo credentials.
pub fn emulator_client_settings(addr: SocketAddr) -> ClientSettings {
    let mut settings = ClientSettings::new(emulator::DEMO_REGION);
    settings.endpoint_url = Some(format!("http://{addr}"));
    settings.static_credentials = Some(Credentials::new(
        emulator::DEMO_ACCESS_KEY_ID,
        emulator::DEMO_SECRET_ACCESS_KEY,
        None,
        None,
        "demo",
    ));
    settings
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    options: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = EmulatorConfig::demo(demo_anchor());
    if options.short_pages {
        config.short_pages = Some(emulator::DEMO_SEED);
    }
    let emulator = Emulator::new(config);
    let emulator_listener = TcpListener::bind(options.emulator_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the emulator",
                options.emulator_listen
            )
        })?;
    let emulator_addr = emulator_listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = emulator
            .serve(emulator_listener, std::future::pending())
            .await
        {
            tracing::error!(error = %e, "the emulator stopped");
        }
    });

    let client = ssm_client(&emulator_client_settings(emulator_addr)).await;
    let settings = Settings {
        listen: options.listen,
        // One process, one key: cursors need not outlive the demo.
        cursor_key: Some(Secret::new(random_key())),
        ..Settings::default()
    };
    let app = Application::build(&settings, Arc::new(SdkSessionSource::new(client))).await?;
    let addr = app.local_addr();
    println!(
        "\nssm-session-gateway demo\n\
         \n  GraphiQL:  http://{addr}/graphql\n  Emulator:  http://{emulator_addr} \
         (account {account}, region {region}; key {key} / {secret})\n\
         \nTry:\n\n  {{\n    sessions(state: HISTORY, first: 5) {{\n      edges {{ cursor node {{ sessionId target owner status startDate endDate }} }}\n      pageInfo {{ hasNextPage endCursor }}\n    }}\n  }}\n\
         \nthen pass pageInfo.endCursor as `after` for the next page. Ctrl-C stops.\n",
        account = emulator::DEMO_ACCOUNT_ID,
        region = emulator::DEMO_REGION,
        key = emulator::DEMO_ACCESS_KEY_ID,
        secret = emulator::DEMO_SECRET_ACCESS_KEY,
    );
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

/// "Now" for the demo data, in whole seconds as SSM's own timestamps look.
pub fn demo_anchor() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound as _;
    chrono::Utc::now().trunc_subsecs(0)
}

fn random_key() -> String {
    use rand::Rng as _;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
