//! The command line: parse, set up logging, run. Everything else is library code.

#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ssm_session_gateway::app::{Application, AuthSetupError, BaseCredentials};
#[cfg(feature = "demo")]
use ssm_session_gateway::demo::{self, DemoOptions};
#[cfg(feature = "demo")]
use ssm_session_gateway::settings::LogFormat;
use ssm_session_gateway::settings::{CONFIG_ENV, Settings, SettingsError};
use ssm_session_gateway::{graphql, rlimit, telemetry};

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
    #[cfg(feature = "demo")]
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the emulator listens (port 0 picks a free one); pin it to
        /// use the aws CLI beside the demo.
        #[arg(long, default_value = "127.0.0.1:0")]
        emulator_listen: SocketAddr,
        #[command(flatten)]
        data: ssm_emulator::cli::DemoDataArgs,
        /// Also serve `/_bench/prebuilt`, a plain axum route returning bytes
        /// PUT to it (the baseline of `bench/run.sh`), and `/_bench/spin/{us}`,
        /// the same bytes after `us` microseconds of busy CPU (its yardsticks).
        #[arg(long)]
        bench_routes: bool,
        /// Serve /livez, /readyz and /metrics on this address (port 0: any
        /// free port; the address is printed). Default: no admin listener.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Log format on stderr: auto (text on a terminal, else JSON), text
        /// or json. Traces are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set.
        #[arg(long, default_value = "auto")]
        log_format: LogFormat,
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
        listen: Option<std::net::SocketAddr>,
    },
}

/// mimalloc: a page of sessions allocates a few thousand small strings, and
/// glibc's malloc spent about a fifth of a page's instructions on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Schema = cli.command {
        print!("{}", graphql::sdl());
        return Ok(());
    }
    match cli.command {
        Command::Schema => Ok(()),
        #[cfg(feature = "demo")]
        Command::Demo {
            listen,
            emulator_listen,
            data,
            bench_routes,
            admin_listen,
            log_format,
        } => {
            let telemetry = telemetry::init(log_format, &Default::default());
            // Raised, not checked: a laptop's limit is no reason for a
            // warning in the demo.
            rlimit::raise();
            let options = DemoOptions {
                listen,
                emulator_listen,
                emulator: data.config(),
                bench_routes,
                admin_listen,
            };
            let result = demo::run(options, shutdown_signal()).await;
            telemetry.shutdown().await;
            result
        }
        Command::Serve { config, listen } => {
            let loaded = Settings::load(config.as_deref()).and_then(|s| {
                s.validate_for_serve()
                    .map(|()| s)
                    .map_err(|e| SettingsError {
                        file: config.clone(),
                        ..e
                    })
            });
            let mut settings = match loaded {
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
            let telemetry = telemetry::init(settings.log_format, &settings.otlp);
            rlimit::check(rlimit::raise(), &settings);
            let result = serve(&settings).await;
            telemetry.shutdown().await;
            if let Err(e) = &result
                && e.downcast_ref::<AuthSetupError>().is_some()
            {
                // An unreadable key file or JWKS: a usage error, like bad
                // settings (exit 2), once the log lines before it are out.
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
            result
        }
    }
}

async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let app = Application::build(settings, BaseCredentials::DefaultChain).await?;
    tracing::info!(addr = %app.local_addr(), "gateway listening; GraphQL at /graphql");
    if let Some(admin) = app.admin_addr() {
        tracing::info!(addr = %admin, "admin listening: /livez, /readyz, /metrics");
    }
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
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
