//! `TerminateSession`: ends a session as SSM does.
//!
//! The request's one member, `SessionId` (1 to 96 characters), is required.
//! An Active session (Connected, Connecting, Disconnected) becomes
//! `Terminated` with an `EndDate` of now, so it leaves the Active list and
//! appears in History. Terminating a session that has already ended, or one
//! the caller's account and region do not have, changes nothing and still
//! succeeds: the operation is idempotent, and SSM answers an unknown id the
//! same way (the model lists no not-found error for it). The reply is
//! `{"SessionId": <id>}`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::data::{Dataset, SessionStatus};
use super::wire::{self, AwsError};

const MAX_SESSION_ID_LEN: usize = 96;

#[derive(Debug, Default, Deserialize)]
struct RawRequest {
    #[serde(rename = "SessionId")]
    session_id: Option<String>,
}

/// A valid TerminateSession request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TerminateSession {
    session_id: String,
}

impl TerminateSession {
    /// Parses and validates a request body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, AwsError> {
        let raw: RawRequest = wire::parse_body(body, "TerminateSessionRequest")?;
        let Some(session_id) = raw.session_id else {
            return Err(AwsError::validation_errors(&[
                "Value null at 'sessionId' failed to satisfy constraint: Member must not be null"
                    .to_owned(),
            ]));
        };
        match session_id.encode_utf16().count() {
            0 => Err(AwsError::validation_errors(&[
                "Value '' at 'sessionId' failed to satisfy constraint: Member must have length greater than or equal to 1"
                    .to_owned(),
            ])),
            n if n > MAX_SESSION_ID_LEN => Err(AwsError::validation_errors(&[format!(
                "Value '{session_id}' at 'sessionId' failed to satisfy constraint: Member must have length less than or equal to {MAX_SESSION_ID_LEN}"
            )])),
            _ => Ok(Self { session_id }),
        }
    }

    /// Ends the session in `dataset` (the caller's account and region), if
    /// it is still active; the reply either way.
    pub(crate) fn run(
        &self,
        dataset: &mut Dataset,
        account_id: &str,
        region: &str,
        now: DateTime<Utc>,
    ) -> Value {
        let found = dataset
            .sessions(account_id, region)
            .iter()
            .find(|s| s.session_id == self.session_id)
            .cloned();
        if let Some(mut session) = found
            && session.status.state() == super::data::SessionState::Active
        {
            session.status = SessionStatus::Terminated;
            session.end_date = Some(now.max(session.start_date));
            dataset.insert(account_id, region, session);
        }
        json!({ "SessionId": self.session_id })
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, SessionState, SourceSpec};
    use chrono::TimeZone;

    #[test]
    fn session_id_is_required_and_bounded() {
        for (body, expect) in [
            ("{}", "Value null at 'sessionId'"),
            (r#"{"SessionId": ""}"#, "length greater than or equal to 1"),
            ("", "Value null at 'sessionId'"),
        ] {
            let e = TerminateSession::parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, "ValidationException");
            assert!(e.message.contains(expect), "{}", e.message);
        }
        let long = format!(r#"{{"SessionId": "{}"}}"#, "a".repeat(97));
        assert!(TerminateSession::parse(long.as_bytes()).is_err());
        let e = TerminateSession::parse(br#"{"SessionId": 7}"#).unwrap_err();
        assert_eq!(e.code, "SerializationException");
    }

    #[test]
    fn an_active_session_moves_to_history_once() {
        let anchor = Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap();
        let mut dataset = Dataset::generate(&DataSpec {
            seed: 3,
            anchor,
            sources: vec![SourceSpec::new("111122223333", "us-east-1", 5, 5)],
        });
        let active = dataset
            .sessions("111122223333", "us-east-1")
            .iter()
            .find(|s| s.state() == SessionState::Active)
            .unwrap()
            .clone();
        let body = format!(r#"{{"SessionId": "{}"}}"#, active.session_id);
        let request = TerminateSession::parse(body.as_bytes()).unwrap();
        let now = anchor + chrono::Duration::minutes(1);
        let reply = request.run(&mut dataset, "111122223333", "us-east-1", now);
        assert_eq!(reply, json!({ "SessionId": active.session_id }));
        let after = |d: &Dataset| {
            d.sessions("111122223333", "us-east-1")
                .iter()
                .find(|s| s.session_id == active.session_id)
                .unwrap()
                .clone()
        };
        let ended = after(&dataset);
        assert_eq!(ended.status, SessionStatus::Terminated);
        assert_eq!(ended.end_date, Some(now));
        // Again, later: nothing changes, and it still succeeds.
        let again = request.run(
            &mut dataset,
            "111122223333",
            "us-east-1",
            now + chrono::Duration::minutes(5),
        );
        assert_eq!(again, reply);
        assert_eq!(after(&dataset), ended);
        // An id nobody has: success, no change.
        let before = dataset.len();
        TerminateSession::parse(br#"{"SessionId": "nobody-0123456789abcdef0"}"#)
            .unwrap()
            .run(&mut dataset, "111122223333", "us-east-1", now);
        assert_eq!(dataset.len(), before);
    }
}
