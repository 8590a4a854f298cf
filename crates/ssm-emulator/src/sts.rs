//! STS `AssumeRole` and `GetCallerIdentity` over AWS Query, as the SDKs'
//! STS clients parse them.
//!
//! The roles that can be assumed are configured ([`RoleSpec`]); a role's
//! account is its ARN's. Checks run in this order: parameters
//! (`ValidationError`, all failed constraints listed at once), then the role
//! must be known (`AccessDenied`), then its external id, if it requires one,
//! must be sent and equal (`AccessDenied`).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::auth::{IssuedCredential, Principal};
use super::wire::{QueryError, xml_escape};

/// A role the emulator's STS lets callers assume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// `arn:aws:iam::<12 digits>:role/<name>`; the digits are the account
    /// whose data the issued credentials read.
    pub role_arn: String,
    /// If set, `AssumeRole` must send exactly this `ExternalId`.
    pub external_id: Option<String>,
}

impl RoleSpec {
    pub fn new(role_arn: &str, external_id: Option<&str>) -> Self {
        Self {
            role_arn: role_arn.to_owned(),
            external_id: external_id.map(str::to_owned),
        }
    }
}

/// `DurationSeconds` when a request gives none.
pub const DEFAULT_ROLE_DURATION: Duration = Duration::from_secs(3600);

/// A parsed role ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleArn {
    pub(crate) account_id: String,
    /// The name after `role/` (a path's last segment).
    pub(crate) name: String,
}

impl RoleArn {
    pub(crate) fn parse(arn: &str) -> Option<Self> {
        let rest = arn.strip_prefix("arn:aws:iam::")?;
        let (account, resource) = rest.split_once(':')?;
        let path = resource.strip_prefix("role/")?;
        let name = path.rsplit('/').next()?;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
        (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && valid_name).then(
            || Self {
                account_id: account.to_owned(),
                name: name.to_owned(),
            },
        )
    }

    /// A stable `AROA...` id for the role, as IAM gives every role one.
    pub(crate) fn role_id(arn: &str) -> String {
        let digest = Sha256::digest(arn.as_bytes());
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let id: String = digest[..17]
            .iter()
            .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
            .collect();
        format!("AROA{id}")
    }
}

/// The configured roles, by ARN.
#[derive(Debug, Default)]
pub(crate) struct Roles {
    by_arn: HashMap<String, RoleSpec>,
}

impl Roles {
    pub(crate) fn new(roles: Vec<RoleSpec>) -> Self {
        Self {
            by_arn: roles.into_iter().map(|r| (r.role_arn.clone(), r)).collect(),
        }
    }

    pub(crate) fn get(&self, arn: &str) -> Option<&RoleSpec> {
        self.by_arn.get(arn)
    }
}

/// A validated `AssumeRole` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AssumeRole {
    pub(crate) role_arn: String,
    pub(crate) role: RoleArn,
    pub(crate) session_name: String,
    pub(crate) external_id: Option<String>,
    pub(crate) duration: Duration,
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn constraint(value: &str, member: &str, constraint: &str) -> String {
    format!("Value '{value}' at '{member}' failed to satisfy constraint: {constraint}")
}

impl AssumeRole {
    /// Checks the parameters the model constrains (others are ignored).
    pub(crate) fn parse(form: &[(String, String)]) -> Result<Self, QueryError> {
        let mut errors = Vec::new();
        let role_arn = param(form, "RoleArn").unwrap_or_default();
        let session_name = param(form, "RoleSessionName").unwrap_or_default();
        let external_id = param(form, "ExternalId");
        if role_arn.is_empty() {
            errors.push(
                "Value null at 'roleArn' failed to satisfy constraint: Member must not be null"
                    .to_owned(),
            );
        } else if !(20..=2048).contains(&role_arn.chars().count()) {
            errors.push(constraint(
                role_arn,
                "roleArn",
                "Member must have length between 20 and 2048",
            ));
        }
        let name_len = session_name.chars().count();
        if param(form, "RoleSessionName").is_none() {
            errors.push("Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null".to_owned());
        } else if !(2..=64).contains(&name_len) {
            errors.push(constraint(
                session_name,
                "roleSessionName",
                "Member must have length between 2 and 64",
            ));
        } else if !session_name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || "+=,.@-".contains(c))
        {
            errors.push(constraint(
                session_name,
                "roleSessionName",
                "Member must satisfy regular expression pattern: [\\w+=,.@-]*",
            ));
        }
        if let Some(id) = external_id {
            if !(2..=1224).contains(&id.chars().count()) {
                errors.push(constraint(
                    id,
                    "externalId",
                    "Member must have length between 2 and 1224",
                ));
            } else if !id
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || "+=,.@:/-".contains(c))
            {
                errors.push(constraint(
                    id,
                    "externalId",
                    "Member must satisfy regular expression pattern: [\\w+=,.@:/-]*",
                ));
            }
        }
        let duration = match param(form, "DurationSeconds") {
            None => Some(DEFAULT_ROLE_DURATION),
            Some(raw) => match raw.parse::<u64>() {
                Ok(secs) if (900..=43200).contains(&secs) => Some(Duration::from_secs(secs)),
                Ok(_) | Err(_) => {
                    errors.push(constraint(
                        raw,
                        "durationSeconds",
                        "Member must have value between 900 and 43200",
                    ));
                    None
                }
            },
        };
        if !errors.is_empty() {
            let n = errors.len();
            let plural = if n == 1 { "error" } else { "errors" };
            return Err(QueryError::validation(format!(
                "{n} validation {plural} detected: {}",
                errors.join("; ")
            )));
        }
        let role = RoleArn::parse(role_arn).ok_or_else(|| {
            QueryError::validation(format!(
                "1 validation error detected: {}",
                constraint(
                    role_arn,
                    "roleArn",
                    "Member must be an IAM role ARN, arn:aws:iam::<12 digits>:role/<name>"
                )
            ))
        })?;
        Ok(Self {
            role_arn: role_arn.to_owned(),
            role,
            session_name: session_name.to_owned(),
            external_id: external_id.map(str::to_owned),
            duration: duration.unwrap_or(DEFAULT_ROLE_DURATION),
        })
    }

    /// Whether `caller` may assume the role: it must be configured, and its
    /// external id (if any) sent.
    pub(crate) fn authorize<'r>(
        &self,
        roles: &'r Roles,
        caller: &Principal,
    ) -> Result<&'r RoleSpec, QueryError> {
        let denied = || {
            QueryError::access_denied(format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {}",
                caller.arn, self.role_arn
            ))
        };
        let spec = roles.get(&self.role_arn).ok_or_else(denied)?;
        match &spec.external_id {
            Some(required) if self.external_id.as_ref() != Some(required) => Err(denied()),
            _ => Ok(spec),
        }
    }

    /// The ARN the session will have.
    pub(crate) fn assumed_arn(&self) -> String {
        format!(
            "arn:aws:sts::{}:assumed-role/{}/{}",
            self.role.account_id, self.role.name, self.session_name
        )
    }

    /// `AssumedRoleUser.AssumedRoleId`: `<role id>:<session name>`.
    pub(crate) fn assumed_role_id(&self) -> String {
        format!("{}:{}", RoleArn::role_id(&self.role_arn), self.session_name)
    }
}

fn iso8601(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `<AssumeRoleResult>` content.
pub(crate) fn assume_role_result(credential: &IssuedCredential) -> String {
    format!(
        "    <Credentials>\n      <AccessKeyId>{}</AccessKeyId>\n      \
         <SecretAccessKey>{}</SecretAccessKey>\n      <SessionToken>{}</SessionToken>\n      \
         <Expiration>{}</Expiration>\n    </Credentials>\n    <AssumedRoleUser>\n      \
         <AssumedRoleId>{}</AssumedRoleId>\n      <Arn>{}</Arn>\n    </AssumedRoleUser>\n",
        xml_escape(&credential.access_key_id),
        xml_escape(&credential.secret_access_key),
        xml_escape(&credential.session_token),
        iso8601(credential.expiration),
        xml_escape(&credential.user_id),
        xml_escape(&credential.arn),
    )
}

/// The `<GetCallerIdentityResult>` content.
pub(crate) fn caller_identity_result(principal: &Principal) -> String {
    format!(
        "    <UserId>{}</UserId>\n    <Account>{}</Account>\n    <Arn>{}</Arn>\n",
        xml_escape(&principal.user_id),
        xml_escape(&principal.caller.account_id),
        xml_escape(&principal.arn),
    )
}

/// The form fields of an AWS Query body.
pub(crate) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::Caller;
    use crate::wire::query_ok;
    use axum::http::StatusCode;

    const ARN: &str = "arn:aws:iam::444455556666:role/SessionGatewayReader";

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", ARN),
            ("RoleSessionName", "demo"),
        ]
    }

    fn caller() -> Principal {
        Principal {
            caller: Caller {
                account_id: "111122223333".into(),
                region: "us-east-1".into(),
            },
            arn: "arn:aws:iam::111122223333:root".into(),
            user_id: "111122223333".into(),
        }
    }

    #[test]
    fn parses_role_arns() {
        assert_eq!(
            RoleArn::parse(ARN),
            Some(RoleArn {
                account_id: "444455556666".into(),
                name: "SessionGatewayReader".into()
            })
        );
        assert_eq!(
            RoleArn::parse("arn:aws:iam::444455556666:role/path/to/R")
                .unwrap()
                .name,
            "R"
        );
        for bad in [
            "arn:aws:iam::44445555666:role/R",
            "arn:aws:iam::44445555666a:role/R",
            "arn:aws:iam::444455556666:user/R",
            "arn:aws:iam::444455556666:role/",
            "arn:aws:sts::444455556666:role/R",
            "arn:aws:iam::444455556666:role/a b",
        ] {
            assert_eq!(RoleArn::parse(bad), None, "{bad}");
        }
        let id = RoleArn::role_id(ARN);
        assert_eq!((id.len(), &id[..4]), (21, "AROA"));
        assert_eq!(id, RoleArn::role_id(ARN));
    }

    #[test]
    fn valid_request_with_defaults() {
        let request = AssumeRole::parse(&form(&base())).unwrap();
        assert_eq!(request.duration, Duration::from_secs(3600));
        assert_eq!(request.external_id, None);
        assert_eq!(
            request.assumed_arn(),
            "arn:aws:sts::444455556666:assumed-role/SessionGatewayReader/demo"
        );
        let mut more = base();
        more.extend([("DurationSeconds", "900"), ("ExternalId", "ab")]);
        let request = AssumeRole::parse(&form(&more)).unwrap();
        assert_eq!(request.duration, Duration::from_secs(900));
        assert_eq!(request.external_id.as_deref(), Some("ab"));
    }

    #[test]
    fn invalid_parameters_are_validation_errors() {
        let long_name = "n".repeat(65);
        let long_id = "e".repeat(1225);
        for (name, value, member) in [
            ("RoleSessionName", "a", "roleSessionName"),
            ("RoleSessionName", long_name.as_str(), "roleSessionName"),
            ("RoleSessionName", "has space", "roleSessionName"),
            ("ExternalId", "a", "externalId"),
            ("ExternalId", long_id.as_str(), "externalId"),
            ("ExternalId", "a b", "externalId"),
            ("DurationSeconds", "899", "durationSeconds"),
            ("DurationSeconds", "43201", "durationSeconds"),
            ("DurationSeconds", "ten", "durationSeconds"),
            ("RoleArn", "arn:aws:iam::1:role/x", "roleArn"),
        ] {
            let mut pairs: Vec<_> = base().into_iter().filter(|(k, _)| *k != name).collect();
            pairs.push((name, value));
            let err = AssumeRole::parse(&form(&pairs)).unwrap_err();
            assert_eq!(
                (err.status, err.code),
                (StatusCode::BAD_REQUEST, "ValidationError"),
                "{name}={value}"
            );
            assert!(err.message.contains(&format!("'{member}'")), "{err:?}");
        }
        // All at once, and missing members.
        let err = AssumeRole::parse(&form(&[("DurationSeconds", "1")])).unwrap_err();
        assert!(
            err.message.starts_with("3 validation errors detected: "),
            "{}",
            err.message
        );
        // Long enough but not a role ARN.
        let mut pairs = base();
        pairs[2] = ("RoleArn", "arn:aws:iam::444455556666:user/Someone");
        assert_eq!(
            AssumeRole::parse(&form(&pairs)).unwrap_err().code,
            "ValidationError"
        );
    }

    #[test]
    fn unknown_roles_and_wrong_external_ids_are_denied() {
        let roles = Roles::new(vec![
            RoleSpec::new(ARN, Some("secret-id")),
            RoleSpec::new("arn:aws:iam::777788889999:role/Open", None),
        ]);
        let request = |pairs: &[(&str, &str)]| {
            let mut all = base();
            all.retain(|(k, _)| *k != "RoleArn");
            all.extend_from_slice(pairs);
            AssumeRole::parse(&form(&all)).unwrap()
        };
        let ok = request(&[("RoleArn", ARN), ("ExternalId", "secret-id")]);
        assert_eq!(ok.authorize(&roles, &caller()).unwrap().role_arn, ARN);
        let open = request(&[("RoleArn", "arn:aws:iam::777788889999:role/Open")]);
        assert!(open.authorize(&roles, &caller()).is_ok());
        for denied in [
            request(&[("RoleArn", ARN)]),
            request(&[("RoleArn", ARN), ("ExternalId", "wrong-id")]),
            request(&[("RoleArn", "arn:aws:iam::444455556666:role/Other")]),
        ] {
            let err = denied.authorize(&roles, &caller()).unwrap_err();
            assert_eq!(
                (err.status, err.code),
                (StatusCode::FORBIDDEN, "AccessDenied")
            );
            assert_eq!(
                err.message,
                format!(
                    "User: arn:aws:iam::111122223333:root is not authorized to perform: \
                     sts:AssumeRole on resource: {}",
                    denied.role_arn
                )
            );
        }
    }

    #[tokio::test]
    async fn xml_replies() {
        let credential = IssuedCredential {
            access_key_id: "ASIAAAAAAAAAAAAAAAAA".into(),
            secret_access_key: "se<cret".into(),
            session_token: "tok&en".into(),
            expiration: "2024-08-29T11:00:00Z".parse().unwrap(),
            account_id: "444455556666".into(),
            arn: "arn:aws:sts::444455556666:assumed-role/R/demo".into(),
            user_id: "AROAX:demo".into(),
        };
        let response = query_ok("AssumeRole", &assume_role_result(&credential), "rid");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/xml");
        assert_eq!(response.headers()["x-amzn-requestid"], "rid");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let compact: String = body.lines().map(str::trim).collect();
        assert_eq!(
            compact,
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleResult><Credentials><AccessKeyId>ASIAAAAAAAAAAAAAAAAA</AccessKeyId>\
             <SecretAccessKey>se&lt;cret</SecretAccessKey><SessionToken>tok&amp;en</SessionToken>\
             <Expiration>2024-08-29T11:00:00Z</Expiration></Credentials><AssumedRoleUser>\
             <AssumedRoleId>AROAX:demo</AssumedRoleId>\
             <Arn>arn:aws:sts::444455556666:assumed-role/R/demo</Arn></AssumedRoleUser>\
             </AssumeRoleResult><ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata>\
             </AssumeRoleResponse>"
        );
        let identity: String = caller_identity_result(&caller())
            .lines()
            .map(str::trim)
            .collect();
        assert_eq!(
            identity,
            "<UserId>111122223333</UserId><Account>111122223333</Account>\
             <Arn>arn:aws:iam::111122223333:root</Arn>"
        );
    }

    #[tokio::test]
    async fn xml_errors() {
        let err = QueryError::access_denied("User: a<b".into());
        let response = err.into_response("rid");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["content-type"], "text/xml");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let compact: String = String::from_utf8(body.to_vec())
            .unwrap()
            .lines()
            .map(str::trim)
            .collect();
        assert_eq!(
            compact,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
             <Type>Sender</Type><Code>AccessDenied</Code><Message>User: a&lt;b</Message>\
             </Error><RequestId>rid</RequestId></ErrorResponse>"
        );
    }
}
