//! The wire protocols as the SDKs expect them: which protocol a request
//! speaks, the operation it names, and how replies and errors look.
//!
//! SSM speaks AWS JSON 1.1 (`X-Amz-Target`, JSON bodies); STS speaks AWS
//! Query (form-encoded `Action=...`, XML replies in the
//! [`STS_NAMESPACE`], errors as `<ErrorResponse>`, see [`QueryError`]).
//!
//! Every reply carries `Content-Type: application/x-amz-json-1.1` and an
//! `x-amzn-RequestId`. Errors also carry `X-Amzn-ErrorType: <Code>` and a body
//! holding exactly the members the model gives the error shape: modeled
//! errors with a `Message` member get `Message`, `InvalidFilterKey` (no
//! members) gets only `__type`, and the generic service errors every AWS JSON
//! service can answer get the lower-case `message` AWS sends for them.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

pub(crate) const JSON_1_1: &str = "application/x-amz-json-1.1";
const FORM: &str = "application/x-www-form-urlencoded";
/// `targetPrefix` in the SSM model's metadata.
const TARGET_PREFIX: &str = "AmazonSSM.";

/// The wire protocol a request speaks, told by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// SSM: AWS JSON 1.1.
    AwsJson11,
    /// STS: AWS Query (form-encoded `Action=...`, XML replies).
    AwsQuery,
    Other,
}

impl Protocol {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let media_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        match media_type.as_deref() {
            Some(JSON_1_1) => Self::AwsJson11,
            Some(FORM) => Self::AwsQuery,
            _ => Self::Other,
        }
    }
}

/// The operations the emulator implements: SSM's, then STS's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Operation {
    DescribeSessions,
    DescribeInstanceInformation,
    TerminateSession,
    AssumeRole,
    GetCallerIdentity,
}

impl Operation {
    pub(crate) const ALL: [Operation; 5] = [
        Operation::DescribeSessions,
        Operation::DescribeInstanceInformation,
        Operation::TerminateSession,
        Operation::AssumeRole,
        Operation::GetCallerIdentity,
    ];
    pub(crate) const SSM: [Operation; 3] = [
        Operation::DescribeSessions,
        Operation::DescribeInstanceInformation,
        Operation::TerminateSession,
    ];
    const STS: [Operation; 2] = [Operation::AssumeRole, Operation::GetCallerIdentity];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::DescribeSessions => "DescribeSessions",
            Self::DescribeInstanceInformation => "DescribeInstanceInformation",
            Self::TerminateSession => "TerminateSession",
            Self::AssumeRole => "AssumeRole",
            Self::GetCallerIdentity => "GetCallerIdentity",
        }
    }

    /// The STS operation an AWS Query form names (`Action`, `Version`).
    pub(crate) fn from_form(form: &[(String, String)]) -> Result<Self, QueryError> {
        let param = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let action = param("Action").ok_or_else(|| {
            QueryError::new(
                StatusCode::BAD_REQUEST,
                "MissingAction",
                "Missing Action".to_owned(),
            )
        })?;
        let version = param("Version").unwrap_or_default();
        Self::STS
            .into_iter()
            .find(|op| op.name() == action && version == STS_VERSION)
            .ok_or_else(|| {
                QueryError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidAction",
                    format!("Could not find operation {action} for version {version}"),
                )
            })
    }

    /// Reads `X-Amz-Target: AmazonSSM.<Operation>`. Operations of the model
    /// that the emulator does not implement are unknown to it, as to a service
    /// that lacks them.
    pub(crate) fn from_target(headers: &HeaderMap) -> Result<Self, AwsError> {
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let name = target.strip_prefix(TARGET_PREFIX).unwrap_or_default();
        Self::SSM
            .into_iter()
            .find(|op| op.name() == name)
            .ok_or_else(|| AwsError::unknown_operation(target))
    }
}

/// Which members an error body carries (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorBody {
    /// A modeled error whose shape has a `Message` member.
    ModeledMessage,
    /// A modeled error whose shape has no members.
    NoMembers,
    /// A generic service error: `message`.
    Generic,
}

/// An error answered in the AWS JSON 1.1 format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwsError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    body: ErrorBody,
}

impl AwsError {
    fn new(
        status: StatusCode,
        code: &'static str,
        body: ErrorBody,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            body,
        }
    }

    fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, ErrorBody::Generic, message)
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::client("ValidationException", message)
    }

    /// AWS's summary of failed input constraints, e.g. "1 validation error
    /// detected: Value '201' at 'maxResults' failed to satisfy constraint: ...".
    pub(crate) fn validation_errors(errors: &[String]) -> Self {
        let n = errors.len();
        let plural = if n == 1 { "error" } else { "errors" };
        Self::validation(format!(
            "{n} validation {plural} detected: {}",
            errors.join("; ")
        ))
    }

    pub(crate) fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }

    pub(crate) fn unknown_operation(target: &str) -> Self {
        let message = if target.is_empty() {
            "Missing X-Amz-Target header".to_owned()
        } else {
            format!("Unknown operation {target}")
        };
        Self::client("UnknownOperationException", message)
    }

    pub(crate) fn missing_authentication_token() -> Self {
        Self::client(
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
        )
    }

    pub(crate) fn incomplete_signature(message: impl Into<String>) -> Self {
        Self::client("IncompleteSignatureException", message)
    }

    /// A 403, as AWS answers a signature that does not match.
    pub(crate) fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            ErrorBody::Generic,
            message,
        )
    }

    pub(crate) fn expired_token(message: impl Into<String>) -> Self {
        Self::client("ExpiredTokenException", message)
    }

    pub(crate) fn unrecognized_client() -> Self {
        Self::client(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    }

    pub(crate) fn invalid_filter_key() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidFilterKey",
            ErrorBody::NoMembers,
            "",
        )
    }

    pub(crate) fn invalid_instance_id() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidInstanceId",
            ErrorBody::ModeledMessage,
            "Instances not in a valid state for account",
        )
    }

    /// Its model shape has a lower-case `message` member, as generic errors do.
    pub(crate) fn invalid_instance_information_filter_value(message: impl Into<String>) -> Self {
        Self::client("InvalidInstanceInformationFilterValue", message)
    }

    pub(crate) fn invalid_next_token(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidNextToken",
            ErrorBody::ModeledMessage,
            message,
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            ErrorBody::ModeledMessage,
            message,
        )
    }

    pub(crate) fn throttling() -> Self {
        Self::client("ThrottlingException", "Rate exceeded")
    }

    /// The JSON body for this error.
    pub(crate) fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("__type".into(), Value::from(self.code));
        match self.body {
            ErrorBody::ModeledMessage => {
                body.insert("Message".into(), Value::from(self.message.as_str()));
            }
            ErrorBody::NoMembers => {}
            ErrorBody::Generic => {
                body.insert("message".into(), Value::from(self.message.as_str()));
            }
        }
        Value::Object(body)
    }

    pub(crate) fn into_response(self, request_id: &str) -> Response {
        let mut response = reply(self.status, request_id, &self.body());
        if let Ok(code) = HeaderValue::from_str(self.code) {
            response.headers_mut().insert("x-amzn-errortype", code);
        }
        response
    }
}

/// The error a test asked for with `x-emulator-fault` (see the module doc of
/// `emulator`); unknown values are ignored.
pub(crate) fn injected_fault(headers: &HeaderMap) -> Option<AwsError> {
    match headers.get("x-emulator-fault")?.to_str().ok()? {
        "InternalServerError" => Some(AwsError::internal("Injected fault: internal server error.")),
        "ThrottlingException" => Some(AwsError::throttling()),
        _ => None,
    }
}

/// A 200 reply with a JSON body.
pub(crate) fn ok(request_id: &str, body: &Value) -> Response {
    reply(StatusCode::OK, request_id, body)
}

fn reply(status: StatusCode, request_id: &str, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// A fresh request id in AWS's UUID layout.
pub(crate) fn request_id() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The XML namespace of STS replies.
pub(crate) const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The only STS API version.
pub(crate) const STS_VERSION: &str = "2011-06-15";

/// Escapes text for an XML element.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An error answered in the AWS Query format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl QueryError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    /// A 400 `ValidationError`.
    pub(crate) fn validation(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    /// A 403 `AccessDenied`.
    pub(crate) fn access_denied(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    /// `<ErrorResponse>`: `Sender` for 4xx, `Receiver` for 5xx.
    pub(crate) fn body(&self, request_id: &str) -> String {
        let kind = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        format!(
            "<ErrorResponse xmlns=\"{STS_NAMESPACE}\">\n  <Error>\n    <Type>{kind}</Type>\n    \
             <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
             <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
            self.code,
            xml_escape(&self.message)
        )
    }

    pub(crate) fn into_response(self, request_id: &str) -> Response {
        xml_reply(self.status, request_id, self.body(request_id))
    }
}

/// `<{action}Response>` around `result` (already XML) and the request id.
pub(crate) fn query_ok(action: &str, result: &str, request_id: &str) -> Response {
    let body = format!(
        "<{action}Response xmlns=\"{STS_NAMESPACE}\">\n  <{action}Result>\n{result}  </{action}Result>\n  \
         <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n\
         </{action}Response>\n"
    );
    xml_reply(StatusCode::OK, request_id, body)
}

fn xml_reply(status: StatusCode, request_id: &str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// A request in neither protocol.
pub(crate) fn unsupported_content_type() -> AwsError {
    AwsError::client(
        "UnknownOperationException",
        format!("Unsupported Content-Type; SSM expects {JSON_1_1}, STS {FORM}"),
    )
}

/// The member names of an error's body.
#[cfg(test)]
pub(crate) fn error_members(err: &AwsError) -> Vec<String> {
    match err.body() {
        Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Reads an AWS JSON 1.1 request body into its shape. The SDKs always send at
/// least `{}`; a bare empty body is read alike. Malformed JSON is the
/// service's `SerializationException`, naming the shape.
pub(crate) fn parse_body<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| AwsError::serialization(format!("Cannot deserialize {shape}: {e}")))
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/aws-shapes.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Modeled errors must carry exactly `__type` plus the shape's members.
    #[test]
    fn modeled_error_bodies_match_the_model() {
        let model = model();
        let shapes = &model["ssm"]["shapes"];
        for err in [
            AwsError::invalid_next_token("x"),
            AwsError::invalid_filter_key(),
            AwsError::internal("boom"),
        ] {
            let shape = &shapes[err.code];
            assert_eq!(shape["exception"], json!(true), "{} is modeled", err.code);
            let mut expected: Vec<String> = shape["members"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            expected.push("__type".into());
            expected.sort();
            let mut members = error_members(&err);
            members.sort();
            assert_eq!(members, expected, "{}", err.code);
            let fault = shape.get("fault") == Some(&json!(true));
            assert_eq!(err.status.is_server_error(), fault, "{}", err.code);
        }
        // And they are the errors DescribeSessions declares.
        let declared: Vec<&str> = model["ssm"]["operations"]["DescribeSessions"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["shape"].as_str().unwrap())
            .collect();
        assert_eq!(
            declared,
            [
                "InternalServerError",
                "InvalidFilterKey",
                "InvalidNextToken"
            ]
        );
    }

    #[test]
    fn generic_errors_use_lower_case_message() {
        let body = AwsError::validation("nope").body();
        assert_eq!(
            body,
            json!({"__type": "ValidationException", "message": "nope"})
        );
    }

    #[test]
    fn error_response_headers() {
        let response = AwsError::invalid_filter_key().into_response("rid");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["x-amzn-errortype"], "InvalidFilterKey");
        assert_eq!(response.headers()["x-amzn-requestid"], "rid");
        assert_eq!(response.headers()["content-type"], JSON_1_1);
    }

    #[test]
    fn validation_summary_counts() {
        let one = AwsError::validation_errors(&["A".into()]);
        assert_eq!(one.message, "1 validation error detected: A");
        let two = AwsError::validation_errors(&["A".into(), "B".into()]);
        assert_eq!(two.message, "2 validation errors detected: A; B");
    }

    #[test]
    fn protocol_by_content_type() {
        let mut h = HeaderMap::new();
        assert_eq!(Protocol::of(&h), Protocol::Other);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1; charset=utf-8"),
        );
        assert_eq!(Protocol::of(&h), Protocol::AwsJson11);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        assert_eq!(Protocol::of(&h), Protocol::AwsQuery);
    }

    #[test]
    fn targets() {
        let mut h = HeaderMap::new();
        assert_eq!(
            Operation::from_target(&h).unwrap_err().code,
            "UnknownOperationException"
        );
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("AmazonSSM.DescribeSessions"),
        );
        assert_eq!(Operation::from_target(&h), Ok(Operation::DescribeSessions));
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("AmazonSSM.TerminateSession"),
        );
        assert_eq!(Operation::from_target(&h), Ok(Operation::TerminateSession));
        for other in [
            "AmazonSSM.StartSession",
            "DescribeSessions",
            "Foo.DescribeSessions",
        ] {
            h.insert("x-amz-target", HeaderValue::from_static(other));
            assert_eq!(
                Operation::from_target(&h).unwrap_err().code,
                "UnknownOperationException"
            );
        }
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_ne!(id, request_id());
    }
}
