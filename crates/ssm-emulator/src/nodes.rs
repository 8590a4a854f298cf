//! `DescribeInstanceInformation`: managed nodes of the caller's account and
//! region, with filters and paging, as SSM does them.
//!
//! Checks run in AWS's order: the body must deserialize
//! (`SerializationException`), then all input constraints are checked at once
//! (`ValidationException` listing each: `MaxResults` 5..=50, 1..=100 values of
//! at least one character per filter, required members), then filter keys
//! (`InvalidFilterKey`), then filter values (`InvalidInstanceId` for an
//! instance id that does not match the model's pattern,
//! `InvalidInstanceInformationFilterValue` for a value outside a key's enum),
//! then the `NextToken` (`InvalidNextToken`).
//!
//! Filters come in the legacy `InstanceInformationFilterList` (`key` and
//! `valueSet`) or in `Filters` (`Key` and `Values`), not both. Supported keys:
//! `InstanceIds`, `PingStatus`, `PlatformTypes` and `ResourceType`; any other
//! key (including ones real SSM accepts, such as `AgentVersion` or `tag:..`)
//! is `InvalidFilterKey` here. Values of one filter OR together, filters AND.
//! Well-formed ids of unknown nodes are simply not returned, as in AWS.
//!
//! Paging: nodes come by instance id ascending; pages are full (`MaxResults`,
//! default [`DEFAULT_NODE_MAX_RESULTS`]) and a `NextToken` comes back iff
//! more matching nodes remain. Tokens are the DescribeSessions kind
//! ([`super::token`]): bound to the caller and the filters, keyset (the last
//! instance id returned), so nodes inserted meanwhile do not shift pages.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Caller;
use super::data::{NodeRecord, PingStatus, PlatformType, ResourceType};
use super::ssm::epoch_seconds;
use super::token::{Cursor, Fingerprint, Position, TokenKey};
use super::wire::{self, AwsError};

/// MaxResults when a request gives none, as AWS documents.
pub const DEFAULT_NODE_MAX_RESULTS: usize = 10;
const MIN_MAX_RESULTS: i64 = 5;
const MAX_MAX_RESULTS: i64 = 50;
const MAX_VALUES: usize = 100;
/// Names this listing in token fingerprints (where DescribeSessions puts its
/// `State`), so the two operations' tokens never pass for each other.
const LISTING: &str = "DescribeInstanceInformation";

#[derive(Debug, Default, Deserialize)]
struct RawRequest {
    #[serde(rename = "InstanceInformationFilterList")]
    legacy_filters: Option<Vec<RawLegacyFilter>>,
    #[serde(rename = "Filters")]
    filters: Option<Vec<RawStringFilter>>,
    #[serde(rename = "MaxResults")]
    max_results: Option<i64>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawLegacyFilter {
    key: Option<String>,
    #[serde(rename = "valueSet")]
    value_set: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawStringFilter {
    #[serde(rename = "Key")]
    key: Option<String>,
    #[serde(rename = "Values")]
    values: Option<Vec<String>>,
}

/// The filter keys this emulator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKey {
    InstanceIds,
    PingStatus,
    PlatformTypes,
    ResourceType,
}

impl FilterKey {
    const ALL: [FilterKey; 4] = [
        Self::InstanceIds,
        Self::PingStatus,
        Self::PlatformTypes,
        Self::ResourceType,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::InstanceIds => "InstanceIds",
            Self::PingStatus => "PingStatus",
            Self::PlatformTypes => "PlatformTypes",
            Self::ResourceType => "ResourceType",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether `value` is valid for this key, else the error AWS answers.
    fn check(self, value: &str) -> Result<(), AwsError> {
        let known = match self {
            Self::InstanceIds => {
                return if is_instance_id(value) {
                    Ok(())
                } else {
                    Err(AwsError::invalid_instance_id())
                };
            }
            Self::PingStatus => PingStatus::parse(value).is_some(),
            Self::PlatformTypes => PlatformType::parse(value).is_some(),
            Self::ResourceType => ResourceType::parse(value).is_some(),
        };
        if known {
            Ok(())
        } else {
            Err(AwsError::invalid_instance_information_filter_value(
                format!("{value} is not a valid value for filter {}.", self.as_str()),
            ))
        }
    }

    fn field(self, node: &NodeRecord) -> &str {
        match self {
            Self::InstanceIds => &node.instance_id,
            Self::PingStatus => node.ping_status.as_str(),
            Self::PlatformTypes => node.platform_type.as_str(),
            Self::ResourceType => node.resource_type.as_str(),
        }
    }
}

/// The model's `InstanceId` pattern: `(^i-(\w{8}|\w{17})$)|(^mi-\w{17}$)`.
pub(crate) fn is_instance_id(id: &str) -> bool {
    let word = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    match (id.strip_prefix("i-"), id.strip_prefix("mi-")) {
        (Some(rest), _) => word(rest, 8) || word(rest, 17),
        (_, Some(rest)) => word(rest, 17),
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    key: FilterKey,
    values: Vec<String>,
}

impl Filter {
    fn matches(&self, node: &NodeRecord) -> bool {
        let field = self.key.field(node);
        self.values.iter().any(|v| v == field)
    }
}

/// A valid DescribeInstanceInformation request.
#[derive(Debug, Clone)]
pub(crate) struct DescribeInstanceInformation {
    max_results: usize,
    filters: Vec<Filter>,
    next_token: Option<String>,
}

/// How tokens are checked.
pub(crate) struct NodePaging<'a> {
    pub(crate) tokens: &'a TokenKey,
    pub(crate) token_ttl: std::time::Duration,
    pub(crate) now: DateTime<Utc>,
}

impl DescribeInstanceInformation {
    /// Parses and validates a request body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, AwsError> {
        let raw: RawRequest = wire::parse_body(body, "DescribeInstanceInformationRequest")?;

        let mut errors = Vec::new();
        match raw.max_results {
            Some(n) if n < MIN_MAX_RESULTS => errors.push(format!(
                "Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to {MIN_MAX_RESULTS}"
            )),
            Some(n) if n > MAX_MAX_RESULTS => errors.push(format!(
                "Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to {MAX_MAX_RESULTS}"
            )),
            _ => {}
        }
        // Both lists normalised to (key, values), with the name of the
        // values member each form uses in AWS's messages.
        type Raw = (Option<String>, Option<Vec<String>>);
        let (list, values_name, filters): (&str, &str, Vec<Raw>) =
            match (raw.legacy_filters, raw.filters) {
                (Some(_), Some(_)) => {
                    return Err(AwsError::validation(
                        "InstanceInformationFilterList and Filters cannot be used together.",
                    ));
                }
                (Some(legacy), None) => (
                    "instanceInformationFilterList",
                    "valueSet",
                    legacy.into_iter().map(|f| (f.key, f.value_set)).collect(),
                ),
                (None, Some(filters)) => (
                    "filters",
                    "values",
                    filters.into_iter().map(|f| (f.key, f.values)).collect(),
                ),
                (None, None) => ("filters", "values", Vec::new()),
            };
        for (i, (key, values)) in filters.iter().enumerate() {
            let at = format!("{list}.{}.member", i + 1);
            match key {
                None => errors.push(format!(
                    "Value null at '{at}.key' failed to satisfy constraint: Member must not be null"
                )),
                Some(k) if k.is_empty() => errors.push(format!(
                    "Value '' at '{at}.key' failed to satisfy constraint: Member must have length greater than or equal to 1"
                )),
                Some(_) => {}
            }
            match values {
                None => errors.push(format!(
                    "Value null at '{at}.{values_name}' failed to satisfy constraint: Member must not be null"
                )),
                Some(v) if v.is_empty() => errors.push(format!(
                    "Value '[]' at '{at}.{values_name}' failed to satisfy constraint: Member must have length greater than or equal to 1"
                )),
                Some(v) if v.len() > MAX_VALUES => errors.push(format!(
                    "Value with {} items at '{at}.{values_name}' failed to satisfy constraint: Member must have length less than or equal to {MAX_VALUES}",
                    v.len()
                )),
                Some(v) => {
                    if v.iter().any(String::is_empty) {
                        errors.push(format!(
                            "Value '' at '{at}.{values_name}' failed to satisfy constraint: Member must satisfy constraint: [Member must have length greater than or equal to 1]"
                        ));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(AwsError::validation_errors(&errors));
        }

        let mut parsed = Vec::with_capacity(filters.len());
        for (key, values) in &filters {
            let key = key.as_deref().unwrap_or_default();
            let key = FilterKey::parse(key).ok_or_else(AwsError::invalid_filter_key)?;
            parsed.push((key, values.clone().unwrap_or_default()));
        }
        let parsed = parsed
            .into_iter()
            .map(|(key, values)| {
                values.iter().try_for_each(|v| key.check(v))?;
                Ok(Filter { key, values })
            })
            .collect::<Result<Vec<_>, AwsError>>()?;

        let max_results = raw
            .max_results
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_NODE_MAX_RESULTS);
        Ok(Self {
            max_results,
            filters: parsed,
            next_token: raw.next_token,
        })
    }

    fn selects(&self, node: &NodeRecord) -> bool {
        self.filters.iter().all(|f| f.matches(node))
    }

    /// The listing a NextToken belongs to: the caller and the filters (value
    /// order aside), not MaxResults.
    fn fingerprint(&self, caller: &Caller) -> Fingerprint {
        let values: Vec<(&str, String)> = self
            .filters
            .iter()
            .map(|f| {
                let mut v: Vec<&str> = f.values.iter().map(String::as_str).collect();
                v.sort_unstable();
                // Length-prefixed, so ["a,b"] and ["a", "b"] differ.
                let joined: String = v.iter().map(|v| format!("{}:{v};", v.len())).collect();
                (f.key.as_str(), joined)
            })
            .collect();
        let pairs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Fingerprint::of(&caller.account_id, &caller.region, LISTING, &pairs)
    }

    /// Answers the request from `nodes` (the caller's account and region,
    /// by instance id).
    pub(crate) fn run(
        &self,
        caller: &Caller,
        nodes: &[NodeRecord],
        paging: &NodePaging<'_>,
    ) -> Result<Value, AwsError> {
        let fingerprint = self.fingerprint(caller);
        let cursor = match &self.next_token {
            None => Cursor::default(),
            Some(token) => paging
                .tokens
                .open(token, fingerprint, paging.now, paging.token_ttl)
                .map_err(|e| AwsError::invalid_next_token(e.to_string()))?,
        };
        // The token's position holds the last instance id in `session_id`;
        // its date is unused here.
        let start = cursor.after.as_ref().map_or(0, |after| {
            nodes.partition_point(|n| n.instance_id <= after.session_id)
        });
        let mut matching = nodes[start..].iter().filter(|n| self.selects(n));
        let page: Vec<&NodeRecord> = matching.by_ref().take(self.max_results).collect();
        let more = matching.next().is_some();

        let mut body = Map::new();
        body.insert(
            "InstanceInformationList".into(),
            Value::Array(page.iter().map(|n| node_json(n)).collect()),
        );
        if let (true, Some(last)) = (more, page.last()) {
            let next = Cursor {
                after: Some(Position {
                    start_date: DateTime::UNIX_EPOCH,
                    session_id: last.instance_id.clone(),
                }),
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

/// The model's `InstanceInformation` shape; absent members are left out.
fn node_json(n: &NodeRecord) -> Value {
    let mut m = Map::new();
    m.insert("InstanceId".into(), Value::from(n.instance_id.as_str()));
    m.insert("PingStatus".into(), Value::from(n.ping_status.as_str()));
    m.insert(
        "LastPingDateTime".into(),
        epoch_seconds(n.last_ping_date_time),
    );
    m.insert("AgentVersion".into(), Value::from(n.agent_version.as_str()));
    m.insert("IsLatestVersion".into(), Value::from(n.is_latest_version));
    m.insert("PlatformType".into(), Value::from(n.platform_type.as_str()));
    m.insert("PlatformName".into(), Value::from(n.platform_name.as_str()));
    m.insert(
        "PlatformVersion".into(),
        Value::from(n.platform_version.as_str()),
    );
    m.insert("ResourceType".into(), Value::from(n.resource_type.as_str()));
    m.insert("IPAddress".into(), Value::from(n.ip_address.as_str()));
    m.insert("ComputerName".into(), Value::from(n.computer_name.as_str()));
    let optional = [
        ("IamRole", &n.iam_role),
        ("ActivationId", &n.activation_id),
        ("Name", &n.name),
        ("SourceId", &n.source_id),
        ("SourceType", &n.source_type),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            m.insert(name.into(), Value::from(v.as_str()));
        }
    }
    if let Some(t) = n.registration_date {
        m.insert("RegistrationDate".into(), epoch_seconds(t));
    }
    Value::Object(m)
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, Dataset, SourceSpec};
    use chrono::TimeZone;
    use serde_json::json;
    use std::time::Duration;

    const ACCOUNT: &str = "111122223333";
    const REGION: &str = "us-east-1";

    fn anchor() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 8, 29, 10, 0, 0).unwrap()
    }

    fn caller() -> Caller {
        Caller {
            account_id: ACCOUNT.into(),
            region: REGION.into(),
        }
    }

    fn dataset() -> Dataset {
        Dataset::generate(&DataSpec {
            seed: 42,
            anchor: anchor(),
            sources: vec![SourceSpec::new(ACCOUNT, REGION, 10, 200)],
        })
    }

    fn run(body: Value, nodes: &[NodeRecord], key: &TokenKey) -> Result<Value, AwsError> {
        let paging = NodePaging {
            tokens: key,
            token_ttl: Duration::from_secs(3600),
            now: anchor(),
        };
        DescribeInstanceInformation::parse(body.to_string().as_bytes())?.run(
            &caller(),
            nodes,
            &paging,
        )
    }

    fn ids(reply: &Value) -> Vec<String> {
        reply["InstanceInformationList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["InstanceId"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every id over all pages of `body`.
    fn walk(body: &Value, nodes: &[NodeRecord], key: &TokenKey) -> Vec<String> {
        let (mut all, mut body) = (Vec::new(), body.clone());
        loop {
            let reply = run(body.clone(), nodes, key).unwrap();
            all.extend(ids(&reply));
            match reply.get("NextToken") {
                Some(t) => body["NextToken"] = t.clone(),
                None => return all,
            }
        }
    }

    #[test]
    fn instance_id_pattern() {
        for ok in ["i-0123abcd", "i-0123456789abcdef0", "mi-0123456789abcdef0"] {
            assert!(is_instance_id(ok), "{ok}");
        }
        for bad in [
            "",
            "i-",
            "i-123",
            "mi-0123abcd",
            "i-0123456789abcdef",
            "x-0123abcd",
            "i-0123-abc",
        ] {
            assert!(!is_instance_id(bad), "{bad}");
        }
    }

    #[test]
    fn walks_and_filters() {
        let data = dataset();
        let nodes = data.nodes(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        let all: Vec<String> = nodes.iter().map(|n| n.instance_id.clone()).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        for max in [5, 7, 50] {
            assert_eq!(walk(&json!({"MaxResults": max}), nodes, &key), all);
        }
        let online: Vec<String> = nodes
            .iter()
            .filter(|n| n.ping_status != PingStatus::Online)
            .map(|n| n.instance_id.clone())
            .collect();
        let body = json!({"MaxResults": 5, "InstanceInformationFilterList": [
            {"key": "PingStatus", "valueSet": ["ConnectionLost", "Inactive"]}]});
        assert_eq!(walk(&body, nodes, &key), online);
        // Unknown but well-formed ids are left out, not refused.
        let body =
            json!({"Filters": [{"Key": "InstanceIds", "Values": [all[3], "i-0000000000000000f"]}]});
        assert_eq!(walk(&body, nodes, &key), [all[3].clone()]);
    }

    #[test]
    fn errors_in_aws_order() {
        let key = TokenKey::new([7; 32]);
        let code = |body: Value| run(body, &[], &key).unwrap_err().code;
        assert_eq!(code(json!({"MaxResults": 4})), "ValidationException");
        assert_eq!(code(json!({"MaxResults": 51})), "ValidationException");
        assert_eq!(
            code(json!({"Filters": [{"Key": "InstanceIds", "Values": []}]})),
            "ValidationException"
        );
        let many: Vec<String> = (0..101).map(|i| format!("i-{i:08}")).collect();
        assert_eq!(
            code(json!({"Filters": [{"Key": "InstanceIds", "Values": many}]})),
            "ValidationException"
        );
        assert_eq!(
            code(json!({"Filters": [{"Key": "Bogus", "Values": ["x"]}]})),
            "InvalidFilterKey"
        );
        assert_eq!(
            code(json!({"Filters": [{"Key": "InstanceIds", "Values": ["i-nope"]}]})),
            "InvalidInstanceId"
        );
        for k in ["PingStatus", "PlatformTypes", "ResourceType"] {
            assert_eq!(
                code(json!({"Filters": [{"Key": k, "Values": ["linux"]}]})),
                "InvalidInstanceInformationFilterValue"
            );
        }
        assert_eq!(
            code(json!({"Filters": [], "InstanceInformationFilterList": []})),
            "ValidationException"
        );
        assert_eq!(code(json!({"NextToken": "AAAA"})), "InvalidNextToken");
        assert_eq!(code(json!({"MaxResults": "5"})), "SerializationException");
    }

    #[test]
    fn tokens_are_bound_to_the_filters() {
        let data = dataset();
        let nodes = data.nodes(ACCOUNT, REGION);
        let key = TokenKey::new([7; 32]);
        let body = json!({"MaxResults": 5, "Filters": [{"Key": "PlatformTypes", "Values": ["Linux", "Windows"]}]});
        let token = run(body.clone(), nodes, &key).unwrap()["NextToken"].clone();
        let mut other =
            json!({"MaxResults": 5, "Filters": [{"Key": "PlatformTypes", "Values": ["Linux"]}]});
        other["NextToken"] = token.clone();
        assert_eq!(
            run(other, nodes, &key).unwrap_err().code,
            "InvalidNextToken"
        );
        // Value order does not matter; MaxResults may change.
        let mut same = json!({"MaxResults": 50, "Filters": [{"Key": "PlatformTypes", "Values": ["Windows", "Linux"]}]});
        same["NextToken"] = token;
        assert!(run(same, nodes, &key).is_ok());
    }
}
