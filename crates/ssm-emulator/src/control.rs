//! The control endpoints beside `/_emulator/stats`, so tests and demos can
//! make sessions come and go on cue, and the churn mode that does it on its
//! own (`--churn`), at a realistic pace, seeded.
//!
//! - `POST /_emulator/sessions` with `{"account", "region", "sessionId"?,
//!   "target"?, "owner"?, "status"?}` starts a session now (default status
//!   `Connected`; a random id `control-<17 hex>` when none is given) and
//!   answers 201 with the session as DescribeSessions shows it.
//! - `PATCH /_emulator/sessions/{account}/{region}/{sessionId}` with
//!   `{"status"}` changes its status; an ended status (`Terminated`,
//!   `Failed`) also sets `EndDate` to now. 404 for an unknown session.
//!
//! These endpoints are not AWS APIs: they take no signature.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound as _, Utc};
use serde::Deserialize;
use serde_json::json;

use super::Emulator;
use super::data::{AccessType, SessionRecord, SessionState, SessionStatus, SplitMix64};
use super::ssm::session_json;

/// The body of `POST /_emulator/sessions`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StartBody {
    account: String,
    region: String,
    session_id: Option<String>,
    target: Option<String>,
    owner: Option<String>,
    status: Option<String>,
}

/// The body of `PATCH /_emulator/sessions/{account}/{region}/{sessionId}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    status: String,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "message": message }))).into_response()
}

#[allow(clippy::result_large_err)] // a Response is the error, answered as is
fn parse_status(s: &str) -> Result<SessionStatus, Response> {
    SessionStatus::parse(s).ok_or_else(|| {
        let known: Vec<&str> = SessionStatus::ALL.iter().map(|s| s.as_str()).collect();
        bad_request(format!("unknown status {s:?}; one of {}", known.join(", ")))
    })
}

pub(crate) async fn start_session(
    State(emulator): State<Emulator>,
    Json(body): Json<StartBody>,
) -> Response {
    let status = match body.status.as_deref().map(parse_status).transpose() {
        Ok(status) => status.unwrap_or(SessionStatus::Connected),
        Err(response) => return response,
    };
    let session_id = body
        .session_id
        .unwrap_or_else(|| format!("control-0{:016x}", rand::random::<u64>()));
    if !(1..=96).contains(&session_id.len()) {
        return bad_request("sessionId must be 1 to 96 characters".to_owned());
    }
    let now = Utc::now().trunc_subsecs(3);
    let record = SessionRecord {
        session_id,
        target: body
            .target
            .unwrap_or_else(|| "i-0123456789abcdef0".to_owned()),
        status,
        start_date: now,
        end_date: (status.state() == SessionState::History && status != SessionStatus::Terminating)
            .then_some(now),
        document_name: "SSM-SessionManagerRunShell".to_owned(),
        owner: body
            .owner
            .unwrap_or_else(|| format!("arn:aws:iam::{}:user/control", body.account)),
        reason: None,
        details: None,
        output_url: None,
        max_session_duration: None,
        access_type: Some(AccessType::Standard),
    };
    let reply = session_json(&record);
    emulator.insert_session(&body.account, &body.region, record);
    (StatusCode::CREATED, Json(reply)).into_response()
}

pub(crate) async fn set_status(
    State(emulator): State<Emulator>,
    Path((account, region, session_id)): Path<(String, String, String)>,
    Json(body): Json<StatusBody>,
) -> Response {
    let status = match parse_status(&body.status) {
        Ok(status) => status,
        Err(response) => return response,
    };
    match emulator.change_status(&account, &region, &session_id, status) {
        Some(record) => Json(session_json(&record)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": format!("no session {session_id} in {account}/{region}") })),
        )
            .into_response(),
    }
}

/// How churn moves: about one change every `pace`, in a random source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Churn {
    pub seed: u64,
    /// The mean time between two changes (each wait is 0.5 to 1.5 times it).
    pub pace: Duration,
}

/// Default pace of `--churn`: a change every 2 s on average somewhere.
pub const DEFAULT_CHURN_PACE: Duration = Duration::from_secs(2);

/// Runs churn over `emulator` until the task is aborted.
pub(crate) async fn churn(emulator: Emulator, churn: Churn) {
    let mut rng = SplitMix64(churn.seed);
    loop {
        let pace = churn.pace.as_millis().max(1) as u64;
        let wait = pace / 2 + rng.below(pace + 1);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        emulator.churn_step(&mut rng);
    }
}

/// One change: a new session, or the next status of an active one.
pub(crate) fn next_change(
    rng: &mut SplitMix64,
    sessions: &[SessionRecord],
    now: DateTime<Utc>,
) -> Option<SessionRecord> {
    let active: Vec<&SessionRecord> = sessions
        .iter()
        .filter(|s| s.state() == SessionState::Active)
        .collect();
    if active.len() < 3 || rng.below(100) < 30 {
        // A new session, by someone who has connected here before, to a
        // node seen here before.
        let template = if sessions.is_empty() {
            None
        } else {
            Some(&sessions[rng.below(sessions.len() as u64) as usize])
        };
        let owner = template.map_or_else(
            || "arn:aws:iam::111122223333:user/alice".to_owned(),
            |t| t.owner.clone(),
        );
        let name = owner.rsplit('/').next().unwrap_or("user").to_owned();
        return Some(SessionRecord {
            session_id: format!("{name}-0{:016x}", rng.next_u64()),
            target: template.map_or_else(|| "i-0123456789abcdef0".to_owned(), |t| t.target.clone()),
            status: SessionStatus::Connecting,
            start_date: now,
            end_date: None,
            document_name: template.map_or_else(
                || "SSM-SessionManagerRunShell".to_owned(),
                |t| t.document_name.clone(),
            ),
            owner,
            reason: None,
            details: None,
            output_url: None,
            max_session_duration: template.and_then(|t| t.max_session_duration.clone()),
            access_type: Some(AccessType::Standard),
        });
    }
    let mut session = active[rng.below(active.len() as u64) as usize].clone();
    let roll = rng.below(100);
    session.status = match session.status {
        SessionStatus::Connecting if roll < 10 => SessionStatus::Failed,
        SessionStatus::Connecting => SessionStatus::Connected,
        SessionStatus::Connected if roll < 35 => SessionStatus::Disconnected,
        SessionStatus::Disconnected if roll < 50 => SessionStatus::Connected,
        _ => SessionStatus::Terminated,
    };
    if session.state() == SessionState::History {
        session.end_date = Some(now.max(session.start_date));
    }
    Some(session)
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, Dataset, SourceSpec};

    #[test]
    fn churn_is_seeded_and_moves_sessions_along_the_lifecycle() {
        let spec = DataSpec {
            seed: 1,
            anchor: Utc::now(),
            sources: vec![SourceSpec::new("111122223333", "us-east-1", 4, 4)],
        };
        let run = |seed| {
            let mut dataset = Dataset::generate(&spec);
            let mut rng = SplitMix64(seed);
            let mut changes = Vec::new();
            for _ in 0..200 {
                let sessions = dataset.sessions("111122223333", "us-east-1").to_vec();
                let now = spec.anchor + chrono::Duration::seconds(changes.len() as i64 + 1);
                let change = next_change(&mut rng, &sessions, now).unwrap();
                if let Some(old) = sessions.iter().find(|s| s.session_id == change.session_id) {
                    // Only Active sessions move, and only along the lifecycle.
                    assert_eq!(old.state(), SessionState::Active);
                    assert_ne!(old.status, change.status);
                    assert_eq!(
                        change.end_date.is_some(),
                        change.state() == SessionState::History
                    );
                } else {
                    assert_eq!(change.status, SessionStatus::Connecting);
                }
                changes.push((change.session_id.clone(), change.status));
                dataset.insert("111122223333", "us-east-1", change);
            }
            changes
        };
        let (a, b) = (run(9), run(9));
        assert_eq!(
            a.iter().map(|c| c.1).collect::<Vec<_>>(),
            b.iter().map(|c| c.1).collect::<Vec<_>>()
        );
        for status in [
            SessionStatus::Connecting,
            SessionStatus::Connected,
            SessionStatus::Terminated,
        ] {
            assert!(a.iter().any(|c| c.1 == status), "{status:?} never happened");
        }
    }
}
