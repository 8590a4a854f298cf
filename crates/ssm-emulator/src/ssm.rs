//! `DescribeSessions`: input validation, filters and paging, as SSM does them.
//!
//! Checks run in AWS's order: the body must deserialize
//! (`SerializationException`), then all input constraints are checked at once
//! (`ValidationException` listing each), then filter keys (`InvalidFilterKey`),
//! then filter values, then the `NextToken` (`InvalidNextToken`).
//!
//! Paging invariants:
//! - Sessions come in [`session_order`](super::data) and each matching session
//!   is returned exactly once over a walk, even if sessions are inserted ahead
//!   of the cursor meanwhile (keyset paging, see [`super::token`]).
//! - Normal mode: pages are full (`MaxResults`, default
//!   [`DEFAULT_MAX_RESULTS`]) and a `NextToken` comes back iff more matching
//!   sessions remain.
//! - Short-pages mode: a page's length is drawn in `0..=MaxResults` from the
//!   seed and the token, so re-sending a token gives the same page; a token
//!   comes back whenever sessions remain, and after the last session one time
//!   in three, leading to a final empty page. Every draw is independent of
//!   the previous ones (the token's page counter changes), so a walk ends with
//!   probability 1.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::auth::Caller;
use super::data::{SessionRecord, SessionState, fnv1a, mix64};
use super::token::{Cursor, Fingerprint, Position, TokenKey};
use super::wire::{self, AwsError};

/// MaxResults when a request gives none. AWS documents no default; 20 is this
/// emulator's choice.
pub const DEFAULT_MAX_RESULTS: usize = 20;
const MAX_RESULTS_LIMIT: i64 = 200;
const MAX_FILTERS: usize = 6;
const MAX_FILTER_VALUE_LEN: usize = 400;

/// The request as it arrives. Unknown members are ignored, as AWS does; a
/// member of the wrong JSON type fails deserialization.
#[derive(Debug, Default, Deserialize)]
struct RawRequest {
    #[serde(rename = "State")]
    state: Option<String>,
    #[serde(rename = "MaxResults")]
    max_results: Option<i64>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "Filters")]
    filters: Option<Vec<RawFilter>>,
}

#[derive(Debug, Deserialize)]
struct RawFilter {
    key: Option<String>,
    value: Option<String>,
}

/// `SessionFilterKey` from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKey {
    InvokedAfter,
    InvokedBefore,
    Target,
    Owner,
    Status,
    SessionId,
    AccessType,
}

impl FilterKey {
    const ALL: [FilterKey; 7] = [
        Self::InvokedAfter,
        Self::InvokedBefore,
        Self::Target,
        Self::Owner,
        Self::Status,
        Self::SessionId,
        Self::AccessType,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::InvokedAfter => "InvokedAfter",
            Self::InvokedBefore => "InvokedBefore",
            Self::Target => "Target",
            Self::Owner => "Owner",
            Self::Status => "Status",
            Self::SessionId => "SessionId",
            Self::AccessType => "AccessType",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One validated filter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    key: FilterKey,
    /// As sent: the token fingerprint binds this text.
    value: String,
    /// Parsed value of InvokedAfter / InvokedBefore.
    instant: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, s: &SessionRecord) -> bool {
        match (self.key, self.instant) {
            (FilterKey::InvokedAfter, Some(t)) => s.start_date >= t,
            (FilterKey::InvokedBefore, Some(t)) => s.start_date < t,
            (FilterKey::InvokedAfter | FilterKey::InvokedBefore, None) => false,
            (FilterKey::Target, _) => s.target == self.value,
            (FilterKey::Owner, _) => s.owner == self.value,
            (FilterKey::Status, _) => s.status.as_str() == self.value,
            (FilterKey::SessionId, _) => s.session_id == self.value,
            (FilterKey::AccessType, _) => {
                s.access_type.map(|a| a.as_str()) == Some(self.value.as_str())
            }
        }
    }
}

/// A valid DescribeSessions request.
#[derive(Debug, Clone)]
pub(crate) struct DescribeSessions {
    state: SessionState,
    max_results: usize,
    filters: Vec<Filter>,
    next_token: Option<String>,
}

/// How pages are cut and tokens checked.
pub(crate) struct Paging<'a> {
    pub(crate) tokens: &'a TokenKey,
    pub(crate) token_ttl: std::time::Duration,
    pub(crate) short_pages: Option<u64>,
    pub(crate) now: DateTime<Utc>,
}

impl DescribeSessions {
    /// Parses and validates a request body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, AwsError> {
        let raw: RawRequest = wire::parse_body(body, "DescribeSessionsRequest")?;

        let mut errors = Vec::new();
        let state = match raw.state.as_deref() {
            None => {
                errors.push(
                    "Value null at 'state' failed to satisfy constraint: Member must not be null"
                        .to_owned(),
                );
                None
            }
            Some(s) => {
                let state = SessionState::parse(s);
                if state.is_none() {
                    errors.push(format!(
                        "Value '{s}' at 'state' failed to satisfy constraint: Member must satisfy enum value set: [Active, History]"
                    ));
                }
                state
            }
        };
        match raw.max_results {
            Some(n) if n < 1 => errors.push(format!(
                "Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1"
            )),
            Some(n) if n > MAX_RESULTS_LIMIT => errors.push(format!(
                "Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to {MAX_RESULTS_LIMIT}"
            )),
            _ => {}
        }
        if let Some(filters) = &raw.filters {
            if filters.is_empty() {
                errors.push(
                    "Value '[]' at 'filters' failed to satisfy constraint: Member must have length greater than or equal to 1"
                        .to_owned(),
                );
            }
            if filters.len() > MAX_FILTERS {
                errors.push(format!(
                    "Value with {} items at 'filters' failed to satisfy constraint: Member must have length less than or equal to {MAX_FILTERS}",
                    filters.len()
                ));
            }
            for (i, f) in filters.iter().enumerate() {
                let at = format!("filters.{}.member", i + 1);
                if f.key.is_none() {
                    errors.push(format!(
                        "Value null at '{at}.key' failed to satisfy constraint: Member must not be null"
                    ));
                }
                match &f.value {
                    None => errors.push(format!(
                        "Value null at '{at}.value' failed to satisfy constraint: Member must not be null"
                    )),
                    // Lengths count UTF-16 units, as AWS's Java validators do.
                    Some(v) => match v.encode_utf16().count() {
                        0 => errors.push(format!(
                            "Value '' at '{at}.value' failed to satisfy constraint: Member must have length greater than or equal to 1"
                        )),
                        n if n > MAX_FILTER_VALUE_LEN => errors.push(format!(
                            "Value '{v}' at '{at}.value' failed to satisfy constraint: Member must have length less than or equal to {MAX_FILTER_VALUE_LEN}"
                        )),
                        _ => {}
                    },
                }
            }
        }
        let (Some(state), true) = (state, errors.is_empty()) else {
            return Err(AwsError::validation_errors(&errors));
        };

        let mut filters = Vec::new();
        for f in raw.filters.unwrap_or_default() {
            // Both are Some: nulls were reported above.
            let (Some(key), Some(value)) = (f.key, f.value) else {
                return Err(AwsError::validation("Filter key and value are required."));
            };
            let key = FilterKey::parse(&key).ok_or_else(AwsError::invalid_filter_key)?;
            filters.push(Filter {
                key,
                value,
                instant: None,
            });
        }
        for f in &mut filters {
            if matches!(f.key, FilterKey::InvokedAfter | FilterKey::InvokedBefore) {
                let instant = DateTime::parse_from_rfc3339(&f.value).map_err(|_| {
                    AwsError::validation(format!(
                        "Invalid value '{}' for filter {}: expected a timestamp like 2018-08-29T00:00:00Z.",
                        f.value,
                        f.key.as_str()
                    ))
                })?;
                f.instant = Some(instant.with_timezone(&Utc));
            }
        }

        let max_results = raw
            .max_results
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_RESULTS);
        Ok(Self {
            state,
            max_results,
            filters,
            next_token: raw.next_token,
        })
    }

    /// Whether this request lists `session`, paging aside.
    fn selects(&self, session: &SessionRecord) -> bool {
        session.state() == self.state && self.filters.iter().all(|f| f.matches(session))
    }

    /// The listing a NextToken belongs to: MaxResults is not part of it.
    fn fingerprint(&self, caller: &Caller) -> Fingerprint {
        let filters: Vec<(&str, &str)> = self
            .filters
            .iter()
            .map(|f| (f.key.as_str(), f.value.as_str()))
            .collect();
        Fingerprint::of(
            &caller.account_id,
            &caller.region,
            self.state.as_str(),
            &filters,
        )
    }

    /// Answers the request from `sessions` (the caller's account and region, in
    /// DescribeSessions order).
    pub(crate) fn run(
        &self,
        caller: &Caller,
        sessions: &[SessionRecord],
        paging: &Paging<'_>,
    ) -> Result<Value, AwsError> {
        let fingerprint = self.fingerprint(caller);
        let cursor = match &self.next_token {
            None => Cursor::default(),
            Some(token) => paging
                .tokens
                .open(token, fingerprint, paging.now, paging.token_ttl)
                .map_err(|e| AwsError::invalid_next_token(e.to_string()))?,
        };

        let start = cursor.after.as_ref().map_or(0, |after| {
            sessions.partition_point(|s| !comes_after(s, after))
        });
        let draw = paging
            .short_pages
            .map(|seed| draw(seed, fingerprint, &cursor));
        let limit = match draw {
            None => self.max_results,
            Some(d) => (d % (self.max_results as u64 + 1)) as usize,
        };

        let mut matching = sessions[start..].iter().filter(|s| self.selects(s));
        let page: Vec<&SessionRecord> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        // Short pages: sometimes a token after the last session, as SSM does.
        let spurious =
            !page.is_empty() && draw.is_some_and(|d| mix64(d ^ 0x7370_7572).is_multiple_of(3));

        let mut body = Map::new();
        body.insert(
            "Sessions".into(),
            Value::Array(page.iter().map(|s| session_json(s)).collect()),
        );
        if more || spurious {
            let next = Cursor {
                after: page
                    .last()
                    .map(|s| Position {
                        start_date: s.start_date,
                        session_id: s.session_id.clone(),
                    })
                    .or(cursor.after),
                page: cursor.page.saturating_add(1),
            };
            body.insert(
                "NextToken".into(),
                Value::from(paging.tokens.seal(fingerprint, &next, paging.now)),
            );
        }
        Ok(Value::Object(body))
    }
}

/// Whether `s` comes strictly after `pos` in DescribeSessions order.
fn comes_after(s: &SessionRecord, pos: &Position) -> bool {
    s.start_date < pos.start_date
        || (s.start_date == pos.start_date && s.session_id > pos.session_id)
}

/// The short-pages draw for the page a cursor fetches.
fn draw(seed: u64, fingerprint: Fingerprint, cursor: &Cursor) -> u64 {
    let mut h = mix64(seed);
    for chunk in fingerprint.0.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = mix64(h ^ u64::from_be_bytes(word));
    }
    h = mix64(h ^ u64::from(cursor.page));
    if let Some(after) = &cursor.after {
        h = mix64(h ^ after.start_date.timestamp() as u64);
        h = mix64(h ^ u64::from(after.start_date.timestamp_subsec_nanos()));
        h = mix64(h ^ fnv1a(after.session_id.as_bytes()));
    }
    h
}

/// Epoch seconds as a JSON number, with the fraction when there is one.
pub(crate) fn epoch_seconds(t: DateTime<Utc>) -> Value {
    let secs = t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9;
    Number::from_f64(secs).map_or_else(|| Value::from(t.timestamp()), Value::Number)
}

/// The model's `Session` shape; absent optional members are left out.
pub(crate) fn session_json(s: &SessionRecord) -> Value {
    let mut m = Map::new();
    m.insert("SessionId".into(), Value::from(s.session_id.as_str()));
    m.insert("Target".into(), Value::from(s.target.as_str()));
    m.insert("Status".into(), Value::from(s.status.as_str()));
    m.insert("StartDate".into(), epoch_seconds(s.start_date));
    if let Some(end) = s.end_date {
        m.insert("EndDate".into(), epoch_seconds(end));
    }
    m.insert("DocumentName".into(), Value::from(s.document_name.as_str()));
    m.insert("Owner".into(), Value::from(s.owner.as_str()));
    let optional = [
        ("Reason", &s.reason),
        ("Details", &s.details),
        ("MaxSessionDuration", &s.max_session_duration),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            m.insert(name.into(), Value::from(v.as_str()));
        }
    }
    if let Some(url) = &s.output_url {
        let mut o = Map::new();
        if let Some(v) = &url.s3_output_url {
            o.insert("S3OutputUrl".into(), Value::from(v.as_str()));
        }
        if let Some(v) = &url.cloud_watch_output_url {
            o.insert("CloudWatchOutputUrl".into(), Value::from(v.as_str()));
        }
        m.insert("OutputUrl".into(), Value::Object(o));
    }
    if let Some(a) = s.access_type {
        m.insert("AccessType".into(), Value::from(a.as_str()));
    }
    Value::Object(m)
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::{AccessType, DataSpec, Dataset, SessionStatus, SourceSpec};
    use chrono::TimeZone;
    use serde_json::json;
    use std::collections::HashSet;
    use std::time::Duration;

    const ACCOUNT: &str = "111122223333";
    const REGION: &str = "us-east-1";
    const HOUR: Duration = Duration::from_secs(3600);

    fn anchor() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 8, 29, 10, 0, 0).unwrap()
    }

    fn caller() -> Caller {
        Caller {
            account_id: ACCOUNT.into(),
            region: REGION.into(),
        }
    }

    fn dataset(active: usize, history: usize) -> Dataset {
        Dataset::generate(&DataSpec {
            seed: 42,
            anchor: anchor(),
            sources: vec![SourceSpec::new(ACCOUNT, REGION, active, history)],
        })
    }

    fn parse(body: Value) -> Result<DescribeSessions, AwsError> {
        DescribeSessions::parse(body.to_string().as_bytes())
    }

    fn paging(key: &TokenKey, short_pages: Option<u64>) -> Paging<'_> {
        Paging {
            tokens: key,
            token_ttl: HOUR,
            short_pages,
            now: anchor(),
        }
    }

    /// Answers `body` (with `next` as NextToken) and returns (ids, NextToken).
    fn page(
        body: &Value,
        next: Option<&str>,
        sessions: &[SessionRecord],
        paging: &Paging<'_>,
    ) -> Result<(Vec<String>, Option<String>), AwsError> {
        let mut body = body.clone();
        if let Some(t) = next {
            body["NextToken"] = json!(t);
        }
        let reply = parse(body)?.run(&caller(), sessions, paging)?;
        let ids = reply["Sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["SessionId"].as_str().unwrap().to_owned())
            .collect();
        Ok((
            ids,
            reply
                .get("NextToken")
                .map(|t| t.as_str().unwrap().to_owned()),
        ))
    }

    /// Walks every page; returns all ids and the page lengths.
    fn walk(
        body: &Value,
        sessions: &[SessionRecord],
        paging: &Paging<'_>,
    ) -> (Vec<String>, Vec<usize>) {
        let (mut all, mut lengths, mut next) = (Vec::new(), Vec::new(), None);
        for _ in 0..10_000 {
            let (ids, token) = page(body, next.as_deref(), sessions, paging).unwrap();
            lengths.push(ids.len());
            all.extend(ids);
            match token {
                None => return (all, lengths),
                Some(t) => {
                    assert_ne!(Some(&t), next.as_ref(), "token must change every page");
                    next = Some(t);
                }
            }
        }
        panic!("walk did not end");
    }

    fn expected(
        sessions: &[SessionRecord],
        state: SessionState,
        keep: impl Fn(&SessionRecord) -> bool,
    ) -> Vec<String> {
        sessions
            .iter()
            .filter(|s| s.state() == state && keep(s))
            .map(|s| s.session_id.clone())
            .collect()
    }

    fn validation_message(body: Value) -> String {
        let err = parse(body).unwrap_err();
        assert_eq!(err.code, "ValidationException", "{err:?}");
        err.message
    }

    #[test]
    fn max_results_bounds() {
        assert_eq!(
            validation_message(json!({"State": "Active", "MaxResults": 201})),
            "1 validation error detected: Value '201' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 200"
        );
        assert!(
            validation_message(json!({"State": "Active", "MaxResults": 0}))
                .contains("Member must have value greater than or equal to 1")
        );
        assert_eq!(
            parse(json!({"State": "Active", "MaxResults": 1}))
                .unwrap()
                .max_results,
            1
        );
        assert_eq!(
            parse(json!({"State": "Active", "MaxResults": 200}))
                .unwrap()
                .max_results,
            200
        );
        assert_eq!(
            parse(json!({"State": "Active"})).unwrap().max_results,
            DEFAULT_MAX_RESULTS
        );
    }

    #[test]
    fn state_is_required_and_enumerated() {
        assert!(validation_message(json!({})).contains("at 'state'"));
        assert!(
            validation_message(json!({"State": "active"}))
                .contains("enum value set: [Active, History]")
        );
        assert_eq!(
            parse(json!({"State": "History"})).unwrap().state,
            SessionState::History
        );
    }

    #[test]
    fn reports_all_constraint_violations_at_once() {
        let message = validation_message(json!({"MaxResults": 500, "Filters": []}));
        assert!(
            message.starts_with("3 validation errors detected: "),
            "{message}"
        );
    }

    #[test]
    fn filter_list_and_value_bounds() {
        let f = |n: usize| {
            (0..n)
                .map(|_| json!({"key": "Owner", "value": "x"}))
                .collect::<Vec<_>>()
        };
        assert!(
            validation_message(json!({"State": "Active", "Filters": f(0)}))
                .contains("greater than or equal to 1")
        );
        assert!(
            validation_message(json!({"State": "Active", "Filters": f(7)}))
                .contains("less than or equal to 6")
        );
        assert_eq!(
            parse(json!({"State": "Active", "Filters": f(6)}))
                .unwrap()
                .filters
                .len(),
            6
        );
        let value =
            |v: String| json!({"State": "Active", "Filters": [{"key": "Owner", "value": v}]});
        assert!(validation_message(value(String::new())).contains("'filters.1.member.value'"));
        assert!(validation_message(value("x".repeat(401))).contains("less than or equal to 400"));
        assert!(parse(value("x".repeat(400))).is_ok());
        let missing = json!({"State": "Active", "Filters": [{"key": "Owner"}]});
        assert!(validation_message(missing).contains("Value null at 'filters.1.member.value'"));
    }

    #[test]
    fn unknown_filter_key() {
        for key in ["Bogus", "owner", ""] {
            let err = parse(json!({"State": "Active", "Filters": [{"key": key, "value": "x"}]}))
                .unwrap_err();
            assert_eq!(err.code, "InvalidFilterKey", "{key:?}");
        }
    }

    #[test]
    fn unparsable_timestamp() {
        for key in ["InvokedAfter", "InvokedBefore"] {
            let body = json!({"State": "History", "Filters": [{"key": key, "value": "yesterday"}]});
            assert!(validation_message(body).contains("2018-08-29T00:00:00Z"));
        }
    }

    #[test]
    fn serialization_errors() {
        for body in [
            &b"{"[..],
            b"not json",
            b"[]",
            b"{\"State\": 1}",
            b"{\"State\":\"Active\",\"MaxResults\":\"5\"}",
            b"{\"State\":\"Active\",\"Filters\":{}}",
        ] {
            let err = DescribeSessions::parse(body).unwrap_err();
            assert_eq!(
                err.code,
                "SerializationException",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Unknown members are ignored; an empty body reads as `{}`.
        assert!(parse(json!({"State": "Active", "Extra": true})).is_ok());
        assert!(
            DescribeSessions::parse(b"")
                .unwrap_err()
                .message
                .contains("'state'")
        );
    }

    #[test]
    fn full_walk_is_ordered_and_complete() {
        let data = dataset(30, 250);
        let sessions = data.sessions(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        for state in [SessionState::Active, SessionState::History] {
            let want = expected(sessions, state, |_| true);
            for max in [1, 7, 20, 200] {
                let body = json!({"State": state.as_str(), "MaxResults": max});
                let (got, lengths) = walk(&body, sessions, &paging(&key, None));
                assert_eq!(got, want, "{state:?} max {max}");
                // Full pages, and a token iff more remain: no trailing empty page.
                let (last, full) = lengths.split_last().unwrap();
                assert!(full.iter().all(|&n| n == max));
                assert!(*last >= 1 || want.is_empty());
            }
        }
    }

    #[test]
    fn order_is_newest_first_then_session_id() {
        let data = dataset(0, 300);
        let sessions = data.sessions(ACCOUNT, REGION);
        let ties = sessions
            .windows(2)
            .filter(|w| w[0].start_date == w[1].start_date)
            .count();
        assert!(ties > 0, "the generator must produce equal start dates");
        for w in sessions.windows(2) {
            assert!(
                w[0].start_date > w[1].start_date
                    || (w[0].start_date == w[1].start_date && w[0].session_id < w[1].session_id)
            );
        }
    }

    #[test]
    fn each_filter_key_selects_what_it_says() {
        let data = dataset(40, 300);
        let sessions = data.sessions(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        let pick = &sessions[sessions.len() / 2];
        // A session starts exactly at the cut, so >= and < are told apart.
        let cut = sessions
            .iter()
            .skip(sessions.len() / 3)
            .find(|s| {
                s.state() == SessionState::History && s.start_date.timestamp_subsec_nanos() == 0
            })
            .unwrap()
            .start_date;
        let cut_text = cut.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        type Keep = Box<dyn Fn(&SessionRecord) -> bool>;
        let (target, owner, id) = (
            pick.target.clone(),
            pick.owner.clone(),
            pick.session_id.clone(),
        );
        let cases: Vec<(&str, String, Keep)> = vec![
            (
                "InvokedAfter",
                cut_text.clone(),
                Box::new(move |s| s.start_date >= cut),
            ),
            (
                "InvokedBefore",
                cut_text.clone(),
                Box::new(move |s| s.start_date < cut),
            ),
            (
                "Target",
                target.clone(),
                Box::new(move |s| s.target == target),
            ),
            ("Owner", owner.clone(), Box::new(move |s| s.owner == owner)),
            (
                "Status",
                "Failed".into(),
                Box::new(|s| s.status == SessionStatus::Failed),
            ),
            (
                "Status",
                "Terminated".into(),
                Box::new(|s| s.status == SessionStatus::Terminated),
            ),
            (
                "SessionId",
                id.clone(),
                Box::new(move |s| s.session_id == id),
            ),
            (
                "AccessType",
                "JustInTime".into(),
                Box::new(|s| s.access_type == Some(AccessType::JustInTime)),
            ),
            (
                "AccessType",
                "Standard".into(),
                Box::new(|s| s.access_type == Some(AccessType::Standard)),
            ),
            ("Status", "Nope".into(), Box::new(|_| false)),
        ];
        for (k, v, keep) in cases {
            let body =
                json!({"State": "History", "MaxResults": 50, "Filters": [{"key": k, "value": v}]});
            let (got, _) = walk(&body, sessions, &paging(&key, None));
            let want = expected(sessions, SessionState::History, keep);
            assert_eq!(got, want, "{k}={v}");
            let all = expected(sessions, SessionState::History, |_| true).len();
            if v != "Nope" {
                assert!(
                    !want.is_empty() && (want.len() < all || k == "AccessType"),
                    "{k}={v} selects a subset"
                );
            }
        }
    }

    #[test]
    fn filters_and_together() {
        let data = dataset(0, 300);
        let sessions = data.sessions(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        let owner = sessions[0].owner.clone();
        let body = json!({"State": "History", "Filters": [
            {"key": "Owner", "value": owner},
            {"key": "Status", "value": "Terminated"},
            {"key": "InvokedAfter", "value": "2024-08-15T00:00:00Z"},
        ]});
        let (got, _) = walk(&body, sessions, &paging(&key, None));
        let after = Utc.with_ymd_and_hms(2024, 8, 15, 0, 0, 0).unwrap();
        let want = expected(sessions, SessionState::History, |s| {
            s.owner == owner && s.status == SessionStatus::Terminated && s.start_date >= after
        });
        assert!(!want.is_empty());
        assert_eq!(got, want);
    }

    #[test]
    fn token_refused_for_another_listing() {
        let data = dataset(10, 100);
        let sessions = data.sessions(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        let p = paging(&key, None);
        let body = json!({"State": "History", "MaxResults": 5, "Filters": [{"key": "Status", "value": "Terminated"}]});
        let (_, token) = page(&body, None, sessions, &p).unwrap();
        let token = token.unwrap();

        let others = [
            json!({"State": "Active", "MaxResults": 5, "Filters": [{"key": "Status", "value": "Terminated"}]}),
            json!({"State": "History", "MaxResults": 5}),
            json!({"State": "History", "MaxResults": 5, "Filters": [{"key": "Status", "value": "Failed"}]}),
        ];
        for other in others {
            let err = page(&other, Some(&token), sessions, &p).unwrap_err();
            assert_eq!(err.code, "InvalidNextToken");
            assert!(err.message.contains("different request"), "{}", err.message);
        }
        let mut request = body.clone();
        request["NextToken"] = json!(token);
        for who in [
            Caller {
                account_id: "444455556666".into(),
                region: REGION.into(),
            },
            Caller {
                account_id: ACCOUNT.into(),
                region: "eu-west-1".into(),
            },
        ] {
            let err = parse(request.clone())
                .unwrap()
                .run(&who, sessions, &p)
                .unwrap_err();
            assert_eq!(err.code, "InvalidNextToken");
        }
        // MaxResults is not part of the listing: a client may change it.
        let mut bigger = body.clone();
        bigger["MaxResults"] = json!(50);
        assert!(page(&bigger, Some(&token), sessions, &p).is_ok());
    }

    #[test]
    fn token_refused_when_forged_stale_or_from_elsewhere() {
        let data = dataset(10, 100);
        let sessions = data.sessions(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        let body = json!({"State": "History", "MaxResults": 5});
        let (_, token) = page(&body, None, sessions, &paging(&key, None)).unwrap();
        let token = token.unwrap();

        let other_instance = TokenKey::new([8; 32]);
        for (t, p) in [
            ("5", paging(&key, None)),
            ("eyJvZmZzZXQiOjV9", paging(&key, None)),
            (token.as_str(), paging(&other_instance, None)),
        ] {
            let err = page(&body, Some(t), sessions, &p).unwrap_err();
            assert_eq!(err.code, "InvalidNextToken", "{t}");
            assert_eq!(
                err.body()["Message"],
                json!("The specified NextToken is not valid.")
            );
        }
        let mut tampered = token.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            page(&body, Some(&tampered), sessions, &paging(&key, None))
                .unwrap_err()
                .code,
            "InvalidNextToken"
        );

        let mut later = paging(&key, None);
        later.now = anchor() + chrono::Duration::seconds(3601);
        let err = page(&body, Some(&token), sessions, &later).unwrap_err();
        assert!(err.message.contains("expired"));
        later.now = anchor() + chrono::Duration::seconds(3599);
        assert!(page(&body, Some(&token), sessions, &later).is_ok());
    }

    #[test]
    fn inserting_ahead_of_the_cursor_does_not_shift_pages() {
        let mut data = dataset(0, 60);
        let key = TokenKey::new([7; 32]);
        let p = paging(&key, None);
        let body = json!({"State": "History", "MaxResults": 10});
        let before = expected(
            data.sessions(ACCOUNT, REGION),
            SessionState::History,
            |_| true,
        );
        let (first, token) = page(&body, None, data.sessions(ACCOUNT, REGION), &p).unwrap();
        assert_eq!(first, before[..10]);

        let mut newest = data.sessions(ACCOUNT, REGION)[0].clone();
        newest.session_id = "zed-00000000000000000".into();
        newest.start_date = anchor();
        data.insert(ACCOUNT, REGION, newest);
        let (second, _) =
            page(&body, token.as_deref(), data.sessions(ACCOUNT, REGION), &p).unwrap();
        assert_eq!(second, before[10..20]);
    }

    #[test]
    fn short_pages_walk_returns_everything_once() {
        let data = dataset(25, 200);
        let sessions = data.sessions(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        let (mut empty_mid, mut trailing_empty, mut short) = (0, 0, 0);
        for seed in 0..40u64 {
            for (state, max) in [
                (SessionState::History, 15),
                (SessionState::Active, 4),
                (SessionState::History, 1),
            ] {
                let body = json!({"State": state.as_str(), "MaxResults": max});
                let (got, lengths) = walk(&body, sessions, &paging(&key, Some(seed)));
                assert_eq!(
                    got,
                    expected(sessions, state, |_| true),
                    "seed {seed} max {max}"
                );
                let unique: HashSet<_> = got.iter().collect();
                assert_eq!(unique.len(), got.len());
                assert!(lengths.iter().all(|&n| n <= max));
                let (last, rest) = lengths.split_last().unwrap();
                empty_mid += rest.iter().filter(|&&n| n == 0).count();
                short += rest.iter().filter(|&&n| n > 0 && n < max).count();
                trailing_empty += usize::from(*last == 0 && !rest.is_empty());
                // Once the last session is out, at most one (empty) page follows.
                let last_full = lengths.iter().rposition(|&n| n > 0).unwrap_or(0);
                assert!(lengths.len() - last_full <= 2, "seed {seed}: {lengths:?}");
            }
        }
        assert!(empty_mid > 0, "some empty pages carry a token");
        assert!(short > 0, "some pages are short");
        assert!(trailing_empty > 0, "some walks end with an empty page");
    }

    #[test]
    fn short_pages_are_deterministic_per_token() {
        let data = dataset(0, 100);
        let sessions = data.sessions(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        let p = paging(&key, Some(3));
        let body = json!({"State": "History", "MaxResults": 20});
        let (a, token) = page(&body, None, sessions, &p).unwrap();
        let (b, _) = page(&body, None, sessions, &p).unwrap();
        assert_eq!(a, b);
        let t = token.unwrap();
        assert_eq!(
            page(&body, Some(&t), sessions, &p).unwrap().0,
            page(&body, Some(&t), sessions, &p).unwrap().0
        );
        // Another seed cuts pages differently.
        let lengths = |seed| walk(&body, sessions, &paging(&key, Some(seed))).1;
        assert_ne!(lengths(3), lengths(4));
    }

    #[test]
    fn session_json_members() {
        let mut s = dataset(0, 1).sessions(ACCOUNT, REGION)[0].clone();
        s.start_date = Utc.timestamp_opt(1_724_925_600, 123_000_000).unwrap();
        s.end_date = None;
        s.reason = None;
        s.details = None;
        s.output_url = Some(crate::data::OutputUrl {
            s3_output_url: Some("s3://b/k".into()),
            cloud_watch_output_url: None,
        });
        s.max_session_duration = Some("60".into());
        s.access_type = Some(AccessType::JustInTime);
        let v = session_json(&s);
        assert_eq!(v["StartDate"].to_string(), "1724925600.123");
        assert_eq!(v["OutputUrl"], json!({"S3OutputUrl": "s3://b/k"}));
        assert_eq!(v["AccessType"], json!("JustInTime"));
        for absent in ["EndDate", "Reason", "Details"] {
            assert!(v.get(absent).is_none(), "{absent} omitted, not null");
        }
        s.start_date = Utc.timestamp_opt(1_724_925_600, 0).unwrap();
        assert_eq!(
            session_json(&s)["StartDate"].as_f64(),
            Some(1_724_925_600.0)
        );
    }
}
