//! The command line: parse, set up logging, run. Everything else is library code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ssm_session_gateway::accounts::AccountRegistry;
use ssm_session_gateway::app::Application;
use ssm_session_gateway::demo::{self, DemoOptions, demo_anchor};
use ssm_session_gateway::emulator::{self, Emulator, EmulatorConfig, Faults, Latency};
use ssm_session_gateway::settings::{CONFIG_ENV, Settings};
use ssm_session_gateway::{graphql, telemetry};

/// A GraphQL gateway over AWS Systems Manager Session Manager sessions.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Simulated upstream trouble for the emulator's SSM operations (STS stays
/// healthy); the same every run (seeded).
#[derive(clap::Args, Debug, Clone, Default)]
struct FaultArgs {
    /// Hold each SSM request N ms, or a uniform MIN-MAX ms.
    #[arg(long, value_name = "N|MIN-MAX", value_parser = clap::value_parser!(Latency))]
    upstream_latency_ms: Option<Latency>,
    /// Share of SSM requests answered 400 ThrottlingException (0..=1).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = emulator::parse_ratio)]
    throttle_ratio: f64,
    /// Share of SSM requests answered 500 InternalServerError (0..=1).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = emulator::parse_ratio)]
    error_ratio: f64,
}

impl FaultArgs {
    fn faults(&self) -> Faults {
        Faults {
            latency: self.upstream_latency_ms.unwrap_or_default(),
            throttle_ratio: self.throttle_ratio,
            error_ratio: self.error_ratio,
            seed: emulator::DEMO_SEED,
        }
    }
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
        #[command(flatten)]
        faults: FaultArgs,
        /// Also serve `/_bench/prebuilt`, a plain axum route returning bytes
        /// PUT to it: the baseline of `bench/run.sh`.
        #[arg(long)]
        bench_routes: bool,
    },
    /// Run only the SSM emulator, with the demo data.
    Emulator {
        #[arg(long, default_value = "127.0.0.1:4566")]
        listen: SocketAddr,
        /// Answer short and empty pages, as SSM may.
        #[arg(long)]
        short_pages: bool,
        #[command(flatten)]
        faults: FaultArgs,
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
            faults,
            bench_routes,
        } => {
            let options = DemoOptions {
                listen,
                emulator_listen,
                short_pages,
                faults: faults.faults(),
                bench_routes,
            };
            demo::run(options, shutdown_signal()).await
        }
        Command::Emulator {
            listen,
            short_pages,
            faults,
        } => {
            let mut config = EmulatorConfig::demo(demo_anchor());
            if short_pages {
                config.short_pages = Some(emulator::DEMO_SEED);
            }
            config.faults = faults.faults();
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

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn faults(args: &[&str]) -> Result<Faults, clap::Error> {
        let cli = Cli::try_parse_from(["ssm-session-gateway"].iter().chain(args))?;
        match cli.command {
            Command::Emulator { faults, .. } | Command::Demo { faults, .. } => Ok(faults.faults()),
            _ => unreachable!("only emulator and demo are parsed here"),
        }
    }

    #[test]
    fn fault_flags() {
        let f = faults(&["emulator"]).unwrap();
        assert_eq!(
            (f.latency, f.throttle_ratio, f.error_ratio),
            (Latency::None, 0.0, 0.0)
        );
        let f = faults(&[
            "demo",
            "--upstream-latency-ms",
            "20-200",
            "--throttle-ratio",
            "0.3",
            "--error-ratio",
            "0.05",
        ])
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(
            f.latency,
            Latency::Uniform {
                min: ms(20),
                max: ms(200)
            }
        );
        assert_eq!((f.throttle_ratio, f.error_ratio), (0.3, 0.05));
        let f = faults(&["emulator", "--upstream-latency-ms", "75"]).unwrap();
        assert_eq!(f.latency, Latency::Fixed(ms(75)));
        for bad in [
            ["emulator", "--throttle-ratio", "1.5"],
            ["emulator", "--error-ratio=-0.1", "--short-pages"],
            ["demo", "--upstream-latency-ms", "200-20"],
            ["demo", "--upstream-latency-ms", "soon"],
        ] {
            let err = faults(&bad).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
        }
    }
}
