//! The process's open-file limit (`RLIMIT_NOFILE`).
//!
//! Every connection, WebSocket and upstream connection holds a file
//! descriptor, and at the limit `accept` fails for every client, health
//! checks included. Many systems start a service with a low soft limit and
//! a far higher hard one (systemd: 1024 and 524288; a login shell often
//! 1024), so the gateway raises its soft limit to the hard one at start-up,
//! as Go's runtime does for every program ([`raise`]), and warns when even
//! that is below what its settings let it hold open ([`check`]).

use crate::settings::Settings;

/// Descriptors kept for what is not a client: upstream connections (SSM,
/// STS, Redis, OTLP), the admin listener and its clients, the files the
/// gateway reads.
pub const RESERVE: u64 = 256;

/// Raises the soft open-file limit to the hard one (Unix); the soft limit
/// now, `None` where unknown or unlimited.
pub fn raise() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::debug!(
                    from = ?limit.current,
                    to = ?limit.maximum,
                    "raised the open-file limit"
                ),
                // macOS refuses an unlimited soft limit, for one; the limit
                // stays as it was, and `check` says whether that is enough.
                Err(e) => tracing::debug!(error = %e, "could not raise the open-file limit"),
            }
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    None
}

/// What `settings` let the gateway hold open at once: connections and
/// WebSockets at their limits, and [`RESERVE`].
pub fn needed(settings: &Settings) -> u64 {
    settings.http.max_connections as u64 + u64::from(settings.live.max_connections) + RESERVE
}

/// Warns when the open-file limit (`limit`, from [`raise`]) is below what
/// `settings` let the gateway hold open; true when it is enough or unknown.
pub fn check(limit: Option<u64>, settings: &Settings) -> bool {
    let needed = needed(settings);
    match limit {
        Some(limit) if limit < needed => {
            tracing::warn!(
                limit,
                needed,
                "the open-file limit is below http.max_connections + live.max_connections + {RESERVE}: \
                 under a flood of connections accept would fail for every client; raise the limit \
                 (ulimit -n, systemd's LimitNOFILE) or lower those settings"
            );
            false
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_checked_against_what_the_settings_hold_open() {
        let mut settings = Settings::default();
        settings.http.max_connections = 1000;
        settings.live.max_connections = 500;
        assert_eq!(needed(&settings), 1000 + 500 + RESERVE);
        assert!(check(Some(1756), &settings));
        assert!(!check(Some(1755), &settings));
        assert!(!check(Some(1024), &settings));
        assert!(check(None, &settings), "unknown or unlimited");
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // As systemd starts services: a soft limit far below the hard one
        // (any process may lower its own).
        let before = getrlimit(Resource::Nofile);
        let low = Rlimit {
            current: Some(before.current.unwrap_or(u64::MAX).min(512)),
            maximum: before.maximum,
        };
        setrlimit(Resource::Nofile, low).expect("lowered");
        let now = raise();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(now, limit.current);
        assert_eq!(limit.current, limit.maximum);
    }
}
