//! The command line: parse, set up logging, run. Everything else is library code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ssm_session_gateway::accounts::AccountRegistry;
use ssm_session_gateway::app::Application;
use ssm_session_gateway::demo::{self, DemoOptions, demo_anchor};
use ssm_session_gateway::emulator::{self, Emulator, EmulatorConfig};
use ssm_session_gateway::settings::{CONFIG_ENV, Settings};
use ssm_session_gateway::{graphql, telemetry};

/// A GraphQL gateway over AWS Systems Manager Session Manager sessions.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway over the built-in emulator with demo data; open GraphiQL.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the emulator listens (port 0 picks a free one); pin it to
        /// use the aws CLI beside the demo.
        #[arg(long, default_value = "127.0.0.1:0")]
        emulator_listen: SocketAddr,
        /// Have the emulator answer short and empty pages, as SSM may.
        #[arg(long)]
        short_pages: bool,
    },
    /// Run only the SSM emulator, with the demo data.
    Emulator {
        #[arg(long, default_value = "127.0.0.1:4566")]
        listen: SocketAddr,
        /// Answer short and empty pages, as SSM may.
        #[arg(long)]
        short_pages: bool,
    },
    /// Print the GraphQL schema (SDL), as checked in at schema.graphql.
    Schema,
    /// Run the gateway against SSM (or any endpoint speaking its protocol),
    /// configured by a settings file and `SSM_GATEWAY_*` env variables.
    Serve {
        /// The settings file (TOML); see config/example.toml. Without one:
        /// defaults and env only.
        #[arg(long, env = CONFIG_ENV)]
        config: Option<PathBuf>,
        /// Where the gateway listens, over `listen` from file and env.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Schema = cli.command {
        print!("{}", graphql::sdl());
        return Ok(());
    }
    telemetry::init();
    match cli.command {
        Command::Schema => Ok(()),
        Command::Demo {
            listen,
            emulator_listen,
            short_pages,
        } => {
            let options = DemoOptions {
                listen,
                emulator_listen,
                short_pages,
            };
            demo::run(options, shutdown_signal()).await
        }
        Command::Emulator {
            listen,
            short_pages,
        } => {
            let mut config = EmulatorConfig::demo(demo_anchor());
            if short_pages {
                config.short_pages = Some(emulator::DEMO_SEED);
            }
            let listener = tokio::net::TcpListener::bind(listen).await?;
            tracing::info!(
                addr = %listener.local_addr()?,
                access_key_id = emulator::DEMO_ACCESS_KEY_ID,
                region = emulator::DEMO_REGION,
                "SSM emulator listening"
            );
            Emulator::new(config)
                .serve(listener, shutdown_signal())
                .await?;
            Ok(())
        }
        Command::Serve { config, listen } => {
            let mut settings = match Settings::load(config.as_deref()) {
                Ok(settings) => settings,
                Err(e) => {
                    // Before any port is bound: bad settings are a usage
                    // error (exit 2), said plainly on stderr.
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            };
            if let Some(listen) = listen {
                settings.listen = listen;
            }
            let registry = AccountRegistry::from_settings(&settings, None).await?;
            let app = Application::build(&settings, Arc::new(registry)).await?;
            tracing::info!(addr = %app.local_addr(), "gateway listening; GraphQL at /graphql");
            app.run_until_stopped(shutdown_signal()).await?;
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
