//! Fault injection: simulated latency, throttling and server errors for SSM
//! operations, drawn from a seeded PRNG so test runs repeat.
//!
//! Faults apply to SSM (AWS JSON) requests only, never to STS, so credential
//! set-up stays reliable while the data plane misbehaves. Each authenticated
//! SSM request takes one draw `u` in `[0, 1)` from the fault stream: it is
//! throttled if `u < throttle_ratio`, fails with a 500 if
//! `u < throttle_ratio + error_ratio`, and is served otherwise. Latency draws
//! come from a second stream, so changing the latency leaves the sequence of
//! failures alone. The sequence is deterministic per emulator and seed; which
//! request meets which draw still depends on arrival order under concurrency.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::data::SplitMix64;

/// Simulated upstream trouble; [`Faults::default`] is none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    /// Added to every SSM request, inside the handler (so counted in flight).
    pub latency: Latency,
    /// Share of SSM requests answered `400 ThrottlingException`, 0..=1.
    pub throttle_ratio: f64,
    /// Share of SSM requests answered `500 InternalServerError`, 0..=1.
    pub error_ratio: f64,
    /// Seeds the draws; the same seed gives the same sequence.
    pub seed: u64,
}

/// How long an SSM request is held before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    #[default]
    None,
    Fixed(Duration),
    /// Uniform in `min..=max`.
    Uniform {
        min: Duration,
        max: Duration,
    },
}

/// Milliseconds: `N` (fixed) or `MIN-MAX` (uniform, MIN <= MAX), as the
/// command line's `--upstream-latency-ms` takes them.
impl FromStr for Latency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ms = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    format!("expected milliseconds as N or MIN-MAX (e.g. 50 or 20-200), got {s:?}")
                })
        };
        match s.split_once('-') {
            None => Ok(Self::Fixed(ms(s)?)),
            Some((min, max)) => {
                let (min, max) = (ms(min)?, ms(max)?);
                if min > max {
                    return Err(format!("MIN must not exceed MAX in {s:?}"));
                }
                Ok(Self::Uniform { min, max })
            }
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("0"),
            Self::Fixed(d) => write!(f, "{}", d.as_millis()),
            Self::Uniform { min, max } => write!(f, "{}-{}", min.as_millis(), max.as_millis()),
        }
    }
}

/// A ratio in `0..=1`, as `--throttle-ratio` and `--error-ratio` take it.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a ratio between 0 and 1, got {s:?}")),
    }
}

/// What a request's fault draw decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Serve,
    Throttle,
    Fail,
}

/// The current faults and their two PRNG streams.
#[derive(Debug)]
pub(crate) struct FaultState {
    faults: Faults,
    outcomes: SplitMix64,
    latencies: SplitMix64,
}

/// Mixed into the seed for the latency stream.
const LATENCY_STREAM: u64 = 0x006c_6174_656e_6379;

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        Self {
            outcomes: SplitMix64(faults.seed),
            latencies: SplitMix64(faults.seed ^ LATENCY_STREAM),
            faults,
        }
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The next request's fate. No draw is taken while both ratios are 0,
    /// so a healthy emulator's sequence starts where `set_faults` left it.
    pub(crate) fn outcome(&mut self) -> Outcome {
        let Faults {
            throttle_ratio,
            error_ratio,
            ..
        } = self.faults;
        if !(throttle_ratio > 0.0 || error_ratio > 0.0) {
            return Outcome::Serve;
        }
        // 53 random bits: every f64 in [0, 1) this can produce is exact.
        let u = (self.outcomes.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if u < throttle_ratio {
            Outcome::Throttle
        } else if u < throttle_ratio + error_ratio {
            Outcome::Fail
        } else {
            Outcome::Serve
        }
    }

    /// The next request's latency, if any.
    pub(crate) fn latency(&mut self) -> Option<Duration> {
        match self.faults.latency {
            Latency::None => None,
            Latency::Fixed(d) => Some(d),
            Latency::Uniform { min, max } => {
                let span = u64::try_from((max.saturating_sub(min)).as_nanos()).unwrap_or(u64::MAX);
                let offset = self.latencies.below(span.saturating_add(1));
                Some(min + Duration::from_nanos(offset))
            }
        }
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latency_parses_fixed_and_ranges() {
        let ms = Duration::from_millis;
        assert_eq!("50".parse(), Ok(Latency::Fixed(ms(50))));
        assert_eq!(
            "20-200".parse(),
            Ok(Latency::Uniform {
                min: ms(20),
                max: ms(200)
            })
        );
        for bad in ["", "-", "abc", "5-", "-5", "10-5", "1.5", "3-4-5"] {
            assert!(bad.parse::<Latency>().is_err(), "{bad}");
        }
        assert_eq!("20-200".parse::<Latency>().unwrap().to_string(), "20-200");
    }

    #[test]
    fn ratios_are_between_zero_and_one() {
        assert_eq!(parse_ratio("0"), Ok(0.0));
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert_eq!(parse_ratio("1"), Ok(1.0));
        for bad in ["-0.1", "1.01", "NaN", "inf", "half", ""] {
            assert!(parse_ratio(bad).is_err(), "{bad}");
        }
    }

    fn count(faults: &Faults, n: usize) -> (usize, usize) {
        let mut state = FaultState::new(faults.clone());
        let outcomes: Vec<Outcome> = (0..n).map(|_| state.outcome()).collect();
        (
            outcomes.iter().filter(|&&o| o == Outcome::Throttle).count(),
            outcomes.iter().filter(|&&o| o == Outcome::Fail).count(),
        )
    }

    #[test]
    fn outcomes_follow_the_ratios_and_the_seed() {
        let faults = Faults {
            throttle_ratio: 0.2,
            error_ratio: 0.1,
            seed: 7,
            ..Faults::default()
        };
        let (throttled, failed) = count(&faults, 10_000);
        assert!((1_800..2_200).contains(&throttled), "{throttled}");
        assert!((850..1_150).contains(&failed), "{failed}");
        assert_eq!(count(&faults, 10_000), (throttled, failed), "same seed");
        let other = Faults { seed: 8, ..faults };
        assert_ne!(count(&other, 10_000), (throttled, failed));
        assert_eq!(count(&Faults::default(), 1_000), (0, 0));
        let always = Faults {
            throttle_ratio: 1.0,
            ..Faults::default()
        };
        assert_eq!(count(&always, 100), (100, 0));
    }

    #[test]
    fn uniform_latency_stays_in_range() {
        let (min, max) = (Duration::from_millis(5), Duration::from_millis(9));
        let mut state = FaultState::new(Faults {
            latency: Latency::Uniform { min, max },
            ..Faults::default()
        });
        let draws: Vec<Duration> = (0..500).map(|_| state.latency().unwrap()).collect();
        assert!(draws.iter().all(|d| (min..=max).contains(d)));
        assert!(draws.iter().any(|d| *d < Duration::from_millis(6)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(8)));
    }
}
