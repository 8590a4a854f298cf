//! Command-line pieces shared by the `ssm-emulator` binary and programs that
//! embed the emulator (the gateway's `demo`): the fault flags and the demo
//! data's "now".

use chrono::{DateTime, SubsecRound as _, Utc};

use crate::{Churn, DEFAULT_CHURN_PACE, DEMO_SEED, EmulatorConfig, Faults, Latency, parse_ratio};

/// Simulated upstream trouble for the emulator's SSM operations (STS stays
/// healthy); the same every run (seeded).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FaultArgs {
    /// Hold each SSM request N ms, or a uniform MIN-MAX ms.
    #[arg(long, value_name = "N|MIN-MAX", value_parser = clap::value_parser!(Latency))]
    pub upstream_latency_ms: Option<Latency>,
    /// Share of SSM requests answered 400 ThrottlingException (0..=1).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = parse_ratio)]
    pub throttle_ratio: f64,
    /// Share of SSM requests answered 500 InternalServerError (0..=1).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = parse_ratio)]
    pub error_ratio: f64,
}

impl FaultArgs {
    /// The faults these flags describe, seeded with [`DEMO_SEED`].
    pub fn faults(&self) -> Faults {
        Faults {
            latency: self.upstream_latency_ms.unwrap_or_default(),
            throttle_ratio: self.throttle_ratio,
            error_ratio: self.error_ratio,
            seed: DEMO_SEED,
        }
    }
}

/// The demo data's options: how pages look and what goes wrong.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DemoDataArgs {
    /// Answer short and empty pages, as SSM may.
    #[arg(long)]
    pub short_pages: bool,
    /// Make sessions start, change status and end while serving (about one
    /// change every 2 s somewhere, seeded), so a live dashboard moves.
    #[arg(long)]
    pub churn: bool,
    /// With `--churn`: the mean time between two changes, in ms.
    #[arg(long, value_name = "MS", requires = "churn")]
    pub churn_pace_ms: Option<u64>,
    #[command(flatten)]
    pub faults: FaultArgs,
}

impl DemoDataArgs {
    /// The demo configuration (three accounts, two regions, seeded data as
    /// of now) with these options applied.
    pub fn config(&self) -> EmulatorConfig {
        let mut config = EmulatorConfig::demo(demo_anchor());
        if self.short_pages {
            config.short_pages = Some(DEMO_SEED);
        }
        config.faults = self.faults.faults();
        if self.churn {
            config.churn = Some(Churn {
                seed: DEMO_SEED,
                pace: self
                    .churn_pace_ms
                    .map_or(DEFAULT_CHURN_PACE, std::time::Duration::from_millis),
            });
        }
        config
    }
}

/// "Now" for the demo data, in whole seconds as SSM's own timestamps look.
pub fn demo_anchor() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        data: DemoDataArgs,
    }

    fn faults(args: &[&str]) -> Result<Faults, clap::Error> {
        let cli = Cli::try_parse_from(["ssm-emulator"].iter().chain(args))?;
        Ok(cli.data.faults.faults())
    }

    #[test]
    fn fault_flags() {
        let f = faults(&[]).unwrap();
        assert_eq!(
            (f.latency, f.throttle_ratio, f.error_ratio),
            (Latency::None, 0.0, 0.0)
        );
        let f = faults(&[
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
        let f = faults(&["--upstream-latency-ms", "75"]).unwrap();
        assert_eq!(f.latency, Latency::Fixed(ms(75)));
        for bad in [
            &["--throttle-ratio", "1.5"][..],
            &["--error-ratio=-0.1", "--short-pages"][..],
            &["--upstream-latency-ms", "200-20"][..],
            &["--upstream-latency-ms", "soon"][..],
        ] {
            let err = faults(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn short_pages_flag_seeds_short_pages() {
        let cli = Cli::try_parse_from(["ssm-emulator", "--short-pages"]).unwrap();
        assert_eq!(cli.data.config().short_pages, Some(DEMO_SEED));
        let cli = Cli::try_parse_from(["ssm-emulator"]).unwrap();
        assert_eq!(cli.data.config().short_pages, None);
    }

    #[test]
    fn churn_flag_seeds_churn() {
        let cli = Cli::try_parse_from(["ssm-emulator"]).unwrap();
        assert_eq!(cli.data.config().churn, None);
        let cli = Cli::try_parse_from(["ssm-emulator", "--churn"]).unwrap();
        assert_eq!(
            cli.data.config().churn,
            Some(Churn {
                seed: DEMO_SEED,
                pace: DEFAULT_CHURN_PACE
            })
        );
        let cli =
            Cli::try_parse_from(["ssm-emulator", "--churn", "--churn-pace-ms", "250"]).unwrap();
        assert_eq!(
            cli.data.config().churn.map(|c| c.pace),
            Some(Duration::from_millis(250))
        );
        assert!(Cli::try_parse_from(["ssm-emulator", "--churn-pace-ms", "250"]).is_err());
    }
}
