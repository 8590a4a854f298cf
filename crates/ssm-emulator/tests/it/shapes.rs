//! The emulator's wire contract against the AWS model in
//! `tests/fixtures/aws-shapes.json`: raw HTTP requests through
//! `Emulator::router()`, and every reply checked member by member against the
//! model shapes (names, JSON types, enums, lengths, patterns, ranges).

use std::collections::{BTreeSet, HashMap};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use regex::Regex;
use serde_json::{Value, json};
use ssm_emulator::{
    AccessType, DEMO_ACCESS_KEY_ID, DEMO_ACCOUNT_ID, DEMO_ACCOUNT_IDS, Dataset, Emulator,
    EmulatorConfig, OutputUrl, SessionRecord, SessionStatus, demo_credentials,
};
use tower::ServiceExt;

use crate::support::{anchor, sign};

struct Model {
    shapes: Value,
    patterns: HashMap<String, Regex>,
}

impl Model {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/aws-shapes.json"
        );
        let model: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let shapes = model["ssm"]["shapes"].clone();
        let patterns = shapes
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(name, s)| {
                Some((name.clone(), Regex::new(s["pattern"].as_str()?).unwrap()))
            })
            .collect();
        Self { shapes, patterns }
    }

    fn shape(&self, name: &str) -> &Value {
        let shape = &self.shapes[name];
        assert!(shape.is_object(), "no shape {name} in the model");
        shape
    }

    /// Checks `value` against shape `name`; records each structure member
    /// seen as `Shape.Member` in `seen`.
    fn check(&self, name: &str, value: &Value, path: &str, seen: &mut BTreeSet<String>) {
        let shape = self.shape(name);
        let ty = shape["type"].as_str().unwrap();
        match ty {
            "structure" => {
                let object = value
                    .as_object()
                    .unwrap_or_else(|| panic!("{path}: {name} must be an object, got {value}"));
                let members = shape["members"].as_object().unwrap();
                for (key, v) in object {
                    let member = members
                        .get(key)
                        .unwrap_or_else(|| panic!("{path}: {key} is not a member of {name}"));
                    seen.insert(format!("{name}.{key}"));
                    self.check(
                        member["shape"].as_str().unwrap(),
                        v,
                        &format!("{path}.{key}"),
                        seen,
                    );
                }
                for required in shape["required"].as_array().into_iter().flatten() {
                    let required = required.as_str().unwrap();
                    assert!(
                        object.contains_key(required),
                        "{path}: {name} requires {required}"
                    );
                }
            }
            "list" => {
                let items = value
                    .as_array()
                    .unwrap_or_else(|| panic!("{path}: {name} must be a list, got {value}"));
                self.check_len(shape, items.len(), path);
                let member = shape["member"]["shape"].as_str().unwrap();
                for (i, item) in items.iter().enumerate() {
                    self.check(member, item, &format!("{path}[{i}]"), seen);
                }
            }
            "string" => {
                let s = value
                    .as_str()
                    .unwrap_or_else(|| panic!("{path}: {name} must be a string, got {value}"));
                self.check_len(shape, s.encode_utf16().count(), path);
                if let Some(values) = shape["enum"].as_array() {
                    assert!(
                        values.iter().any(|v| v == s),
                        "{path}: {s:?} is not in enum {name}"
                    );
                }
                if let Some(pattern) = self.patterns.get(name) {
                    assert!(
                        pattern.is_match(s),
                        "{path}: {s:?} does not match {name} {pattern}"
                    );
                }
            }
            "timestamp" => {
                let secs = value
                    .as_f64()
                    .unwrap_or_else(|| panic!("{path}: {name} must be epoch seconds, got {value}"));
                assert!(
                    secs > 1e9 && secs < 1e10,
                    "{path}: {secs} is not a plausible epoch second"
                );
            }
            "boolean" => {
                assert!(
                    value.is_boolean(),
                    "{path}: {name} must be a boolean, got {value}"
                );
            }
            "integer" => {
                let n = value
                    .as_i64()
                    .unwrap_or_else(|| panic!("{path}: {name} must be an integer, got {value}"));
                if let Some(min) = shape["min"].as_i64() {
                    assert!(n >= min, "{path}");
                }
                if let Some(max) = shape["max"].as_i64() {
                    assert!(n <= max, "{path}");
                }
            }
            other => panic!("{path}: shape type {other} not handled by this test"),
        }
    }

    fn check_len(&self, shape: &Value, len: usize, path: &str) {
        if let Some(min) = shape["min"].as_u64() {
            assert!(len as u64 >= min, "{path}: length {len} below {min}");
        }
        if let Some(max) = shape["max"].as_u64() {
            assert!(len as u64 <= max, "{path}: length {len} above {max}");
        }
    }

    fn members(&self, name: &str) -> BTreeSet<String> {
        self.shape(name)["members"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }
}

struct Reply {
    status: StatusCode,
    error_type: Option<String>,
    body: Value,
}

/// The demo secret of `akid`; unknown keys get a made-up one.
fn secret(akid: &str) -> String {
    demo_credentials()
        .into_iter()
        .find(|c| c.access_key_id == akid)
        .map_or_else(|| "unknown".to_owned(), |c| c.secret_access_key)
}

/// Sends `request` signed as `akid` for SSM in `region`.
async fn send_signed(
    emulator: &Emulator,
    akid: &str,
    region: &str,
    request: Request<Body>,
) -> Reply {
    let request = sign(request, akid, &secret(akid), region, "ssm").await;
    send(emulator, request).await
}

async fn send(emulator: &Emulator, request: Request<Body>) -> Reply {
    let response = emulator.router().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    assert_eq!(headers["content-type"], "application/x-amz-json-1.1");
    let request_id = headers["x-amzn-requestid"].to_str().unwrap();
    assert_eq!(request_id.len(), 36, "request ids look like UUIDs");
    let body: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("body is JSON ({e}): {bytes:?}"));
    Reply {
        status,
        error_type: headers
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap().to_owned()),
        body,
    }
}

/// An SSM request to sign with [`send_signed`].
fn request(target: &str) -> axum::http::request::Builder {
    Request::post("/")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
}

async fn describe(emulator: &Emulator, akid: &str, region: &str, body: &Value) -> Reply {
    let text = body.to_string();
    let req = request("AmazonSSM.DescribeSessions")
        .body(Body::from(text))
        .unwrap();
    send_signed(emulator, akid, region, req).await
}

fn demo() -> Emulator {
    Emulator::new(EmulatorConfig::demo(anchor()))
}

/// A session with every optional member set, so each member of the model's
/// `Session` shape shows up in some reply.
fn full_session() -> SessionRecord {
    SessionRecord {
        session_id: "walter-0f00f00f00f00f00f".into(),
        target: "i-0123456789abcdef0".into(),
        status: SessionStatus::Terminated,
        start_date: anchor() - chrono::Duration::minutes(30),
        end_date: Some(anchor() - chrono::Duration::minutes(10)),
        document_name: "AWS-StartSSHSession".into(),
        owner: format!("arn:aws:iam::{DEMO_ACCOUNT_ID}:user/walter"),
        reason: Some("Contract test".into()),
        details: Some("reserved".into()),
        output_url: Some(OutputUrl {
            s3_output_url: Some("s3://logs/walter.log".into()),
            cloud_watch_output_url: Some("https://console.aws.amazon.com/cloudwatch/home".into()),
        }),
        max_session_duration: Some("1439".into()),
        access_type: Some(AccessType::JustInTime),
    }
}

#[tokio::test]
async fn every_reply_matches_the_model() {
    let model = Model::load();
    let emulator = demo();
    emulator.insert_session(DEMO_ACCOUNT_ID, "us-east-1", full_session());
    let mut seen = BTreeSet::new();
    let mut sessions = 0;
    let keys: HashMap<String, String> = demo_credentials()
        .into_iter()
        .map(|c| (c.account_id, c.access_key_id))
        .collect();
    for account in DEMO_ACCOUNT_IDS {
        for region in ["us-east-1", "eu-west-1"] {
            for state in ["Active", "History"] {
                let mut token: Option<String> = None;
                loop {
                    let mut body = json!({"State": state, "MaxResults": 97});
                    if let Some(t) = &token {
                        body["NextToken"] = json!(t);
                    }
                    let reply = describe(&emulator, &keys[account], region, &body).await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                    assert!(reply.error_type.is_none());
                    model.check("DescribeSessionsResponse", &reply.body, "$", &mut seen);
                    let page = reply.body["Sessions"].as_array().unwrap();
                    sessions += page.len();
                    for s in page {
                        // State is derived from Status; EndDate only once ended, after StartDate.
                        let status = s["Status"].as_str().unwrap();
                        let active = ["Connected", "Connecting", "Disconnected"].contains(&status);
                        assert_eq!(active, state == "Active", "{s}");
                        if let Some(end) = s.get("EndDate") {
                            assert!(!active && end.as_f64() > s["StartDate"].as_f64(), "{s}");
                        }
                    }
                    match reply.body.get("NextToken") {
                        Some(t) => token = Some(t.as_str().unwrap().to_owned()),
                        None => break,
                    }
                }
            }
        }
    }
    assert_eq!(
        sessions,
        Dataset::demo(anchor()).len() + 1,
        "walked the whole demo dataset"
    );
    // Every member of the response and of Session appeared at least once.
    let mut want: BTreeSet<String> = BTreeSet::new();
    for shape in [
        "DescribeSessionsResponse",
        "Session",
        "SessionManagerOutputUrl",
    ] {
        want.extend(
            model
                .members(shape)
                .into_iter()
                .map(|m| format!("{shape}.{m}")),
        );
    }
    assert_eq!(seen, want);
}

#[tokio::test]
async fn instance_information_matches_the_model() {
    let model = Model::load();
    let emulator = demo();
    let keys: HashMap<String, String> = demo_credentials()
        .into_iter()
        .map(|c| (c.account_id, c.access_key_id))
        .collect();
    let data = Dataset::demo(anchor());
    let mut seen = BTreeSet::new();
    for account in DEMO_ACCOUNT_IDS {
        for region in ["us-east-1", "eu-west-1"] {
            let mut nodes = 0;
            let mut token: Option<String> = None;
            loop {
                let mut body = json!({"MaxResults": 5});
                if let Some(t) = &token {
                    body["NextToken"] = json!(t);
                }
                let req = request("AmazonSSM.DescribeInstanceInformation")
                    .body(Body::from(body.to_string()))
                    .unwrap();
                let reply = send_signed(&emulator, &keys[account], region, req).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                model.check(
                    "DescribeInstanceInformationResult",
                    &reply.body,
                    "$",
                    &mut seen,
                );
                nodes += reply.body["InstanceInformationList"]
                    .as_array()
                    .unwrap()
                    .len();
                match reply.body.get("NextToken") {
                    Some(t) => token = Some(t.as_str().unwrap().to_owned()),
                    None => break,
                }
            }
            assert_eq!(nodes, data.nodes(account, region).len());
        }
    }
    // The members the emulator fills; association and hybrid-cloud source
    // members are left out (no associations, no third-party clouds).
    let never = [
        "AssociationOverview",
        "AssociationStatus",
        "LastAssociationExecutionDate",
        "LastSuccessfulAssociationExecutionDate",
        "SourceLocation",
    ];
    let want: BTreeSet<String> = model
        .members("DescribeInstanceInformationResult")
        .into_iter()
        .map(|m| format!("DescribeInstanceInformationResult.{m}"))
        .chain(
            model
                .members("InstanceInformation")
                .into_iter()
                .filter(|m| !never.contains(&m.as_str()))
                .map(|m| format!("InstanceInformation.{m}")),
        )
        .collect();
    assert_eq!(seen, want);

    // Its errors carry the model's members.
    for (filter, code) in [
        (json!({"Key": "Bogus", "Values": ["x"]}), "InvalidFilterKey"),
        (
            json!({"Key": "InstanceIds", "Values": ["i-1"]}),
            "InvalidInstanceId",
        ),
        (
            json!({"Key": "PlatformTypes", "Values": ["BeOS"]}),
            "InvalidInstanceInformationFilterValue",
        ),
    ] {
        let req = request("AmazonSSM.DescribeInstanceInformation")
            .body(Body::from(json!({"Filters": [filter]}).to_string()))
            .unwrap();
        let reply = send_signed(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", req).await;
        check_error(&model, &reply, code);
    }
    let max = model.shape("MaxResultsEC2Compatible");
    let (lo, hi) = (max["min"].as_i64().unwrap(), max["max"].as_i64().unwrap());
    for (n, ok) in [(lo - 1, false), (lo, true), (hi, true), (hi + 1, false)] {
        let req = request("AmazonSSM.DescribeInstanceInformation")
            .body(Body::from(json!({"MaxResults": n}).to_string()))
            .unwrap();
        let reply = send_signed(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", req).await;
        assert_eq!(reply.status.is_success(), ok, "MaxResults {n}");
        if !ok {
            check_error(&model, &reply, "ValidationException");
        }
    }
}

#[tokio::test]
async fn request_constraints_come_from_the_model() {
    let model = Model::load();
    let emulator = demo();
    let code = |r: &Reply| r.body["__type"].as_str().unwrap_or("").to_owned();
    let call =
        async |body: Value| describe(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", &body).await;

    let max = model.shape("SessionMaxResults");
    let (lo, hi) = (max["min"].as_i64().unwrap(), max["max"].as_i64().unwrap());
    for (n, ok) in [(lo - 1, false), (lo, true), (hi, true), (hi + 1, false)] {
        let r = call(json!({"State": "Active", "MaxResults": n})).await;
        assert_eq!(r.status.is_success(), ok, "MaxResults {n}: {}", r.body);
        if !ok {
            assert_eq!(code(&r), "ValidationException");
        }
    }

    for state in model.shape("SessionState")["enum"].as_array().unwrap() {
        assert!(
            call(json!({"State": state})).await.status.is_success(),
            "{state}"
        );
    }
    assert_eq!(
        code(&call(json!({"State": "Everything"})).await),
        "ValidationException"
    );
    assert_eq!(
        code(&call(json!({})).await),
        "ValidationException",
        "State is required"
    );

    // Every model filter key is accepted (values that parse for timestamps).
    for key in model.shape("SessionFilterKey")["enum"].as_array().unwrap() {
        let value = if key.as_str().unwrap().starts_with("Invoked") {
            "2024-08-01T00:00:00Z"
        } else {
            "x"
        };
        let r = call(json!({"State": "History", "Filters": [{"key": key, "value": value}]})).await;
        assert!(r.status.is_success(), "{key}: {}", r.body);
    }
    let filters = model.shape("SessionFilterList");
    let f = json!({"key": "Owner", "value": "x"});
    let too_many = vec![f.clone(); filters["max"].as_u64().unwrap() as usize + 1];
    assert_eq!(
        code(&call(json!({"State": "Active", "Filters": too_many})).await),
        "ValidationException"
    );
    assert_eq!(
        code(&call(json!({"State": "Active", "Filters": []})).await),
        "ValidationException"
    );
    let value_max = model.shape("SessionFilterValue")["max"].as_u64().unwrap() as usize;
    let long = json!({"State": "Active", "Filters": [{"key": "Owner", "value": "v".repeat(value_max + 1)}]});
    assert_eq!(code(&call(long).await), "ValidationException");
    let fits =
        json!({"State": "Active", "Filters": [{"key": "Owner", "value": "v".repeat(value_max)}]});
    assert!(call(fits).await.status.is_success());
}

/// Checks an error reply: status, header and body members as the model says
/// for modeled errors (`__type` plus the shape's members), or `__type` and
/// `message` for generic ones.
fn check_error(model: &Model, reply: &Reply, code: &str) {
    assert_eq!(reply.body["__type"], json!(code), "{}", reply.body);
    assert_eq!(reply.error_type.as_deref(), Some(code));
    let members: BTreeSet<String> = reply.body.as_object().unwrap().keys().cloned().collect();
    let shape = &model.shapes[code];
    let (want, fault) = if shape.is_object() {
        let mut want = model.members(code);
        want.insert("__type".into());
        (want, shape["fault"] == json!(true))
    } else {
        (["__type", "message"].map(String::from).into(), false)
    };
    assert_eq!(members, want, "{code}: {}", reply.body);
    for (k, v) in reply.body.as_object().unwrap() {
        assert!(
            v.as_str().is_some_and(|s| !s.is_empty()),
            "{code}.{k} is a non-empty string"
        );
    }
    let status = if fault {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if code == "InvalidSignatureException" {
        // AWS answers a signature mismatch with a 403.
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    assert_eq!(reply.status, status, "{code}");
}

#[tokio::test]
async fn error_replies_use_only_model_members() {
    let model = Model::load();
    let emulator = demo();
    let history = json!({"State": "History"});

    let bad_token = json!({"State": "History", "NextToken": "AAAA"});
    let r = describe(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", &bad_token).await;
    check_error(&model, &r, "InvalidNextToken");

    let bad_key = json!({"State": "History", "Filters": [{"key": "Bogus", "value": "x"}]});
    let r = describe(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", &bad_key).await;
    check_error(&model, &r, "InvalidFilterKey");

    let text = history.to_string();
    let faulty = request("AmazonSSM.DescribeSessions")
        .header("x-emulator-fault", "InternalServerError")
        .body(Body::from(text.clone()))
        .unwrap();
    check_error(
        &model,
        &send_signed(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", faulty).await,
        "InternalServerError",
    );

    let throttled = request("AmazonSSM.DescribeSessions")
        .header("x-emulator-fault", "ThrottlingException")
        .body(Body::from(text.clone()))
        .unwrap();
    check_error(
        &model,
        &send_signed(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", throttled).await,
        "ThrottlingException",
    );

    let r = describe(
        &emulator,
        DEMO_ACCESS_KEY_ID,
        "us-east-1",
        &json!({"State": "History", "MaxResults": 0}),
    )
    .await;
    check_error(&model, &r, "ValidationException");

    let r = describe(&emulator, "AKIANOBODY0000000000", "us-east-1", &history).await;
    check_error(&model, &r, "UnrecognizedClientException");

    let wrong_secret = request("AmazonSSM.DescribeSessions")
        .body(Body::from(text.clone()))
        .unwrap();
    let wrong_secret = sign(wrong_secret, DEMO_ACCESS_KEY_ID, "nope", "us-east-1", "ssm").await;
    check_error(
        &model,
        &send(&emulator, wrong_secret).await,
        "InvalidSignatureException",
    );

    let unparsable = request("AmazonSSM.DescribeSessions")
        .body(Body::from("{\"State\":"))
        .unwrap();
    check_error(
        &model,
        &send_signed(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", unparsable).await,
        "SerializationException",
    );

    let unknown = request("AmazonSSM.DescribeEverything")
        .body(Body::from(text.clone()))
        .unwrap();
    check_error(
        &model,
        &send_signed(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", unknown).await,
        "UnknownOperationException",
    );

    let anonymous = Request::post("/")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "AmazonSSM.DescribeSessions")
        .body(Body::from(text.clone()))
        .unwrap();
    check_error(
        &model,
        &send(&emulator, anonymous).await,
        "MissingAuthenticationTokenException",
    );

    let garbled = Request::post("/")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "AmazonSSM.DescribeSessions")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIA/today")
        .body(Body::from(text))
        .unwrap();
    check_error(
        &model,
        &send(&emulator, garbled).await,
        "IncompleteSignatureException",
    );
}

/// An STS request's status and XML body.
async fn send_sts(emulator: &Emulator, body: &str, signer: Option<&str>) -> (StatusCode, String) {
    let request = Request::post("/")
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(Body::from(body.to_owned()))
        .unwrap();
    let request = match signer {
        Some(akid) => sign(request, akid, &secret(akid), "us-east-1", "sts").await,
        None => request,
    };
    let response = emulator.router().oneshot(request).await.unwrap();
    let status = response.status();
    assert_eq!(response.headers()["content-type"], "text/xml");
    assert_eq!(response.headers()["x-amzn-requestid"].len(), 36);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn sts_speaks_aws_query() {
    let emulator = demo();
    let ns = "xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"";
    let (status, body) = send_sts(
        &emulator,
        "Action=GetCallerIdentity&Version=2011-06-15",
        Some(DEMO_ACCESS_KEY_ID),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.starts_with(&format!("<GetCallerIdentityResponse {ns}>"))
            && body.contains(&format!("<Account>{DEMO_ACCOUNT_ID}</Account>"))
            && body.contains("<RequestId>"),
        "{body}"
    );

    for (form, signer, status, code) in [
        (
            "Action=GetCallerIdentity&Version=2011-06-15",
            None,
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
        ),
        (
            "Action=GetCallerIdentity&Version=2011-06-15",
            Some("AKIANOBODY0000000000"),
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
        ),
        (
            "Action=GetSessionToken&Version=2011-06-15",
            Some(DEMO_ACCESS_KEY_ID),
            StatusCode::BAD_REQUEST,
            "InvalidAction",
        ),
        (
            "Action=GetCallerIdentity&Version=2010-01-01",
            Some(DEMO_ACCESS_KEY_ID),
            StatusCode::BAD_REQUEST,
            "InvalidAction",
        ),
        (
            "Version=2011-06-15",
            Some(DEMO_ACCESS_KEY_ID),
            StatusCode::BAD_REQUEST,
            "MissingAction",
        ),
        (
            "Action=AssumeRole&Version=2011-06-15&RoleSessionName=s",
            Some(DEMO_ACCESS_KEY_ID),
            StatusCode::BAD_REQUEST,
            "ValidationError",
        ),
        (
            "Action=AssumeRole&Version=2011-06-15&RoleSessionName=demo\
             &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2FNope",
            Some(DEMO_ACCESS_KEY_ID),
            StatusCode::FORBIDDEN,
            "AccessDenied",
        ),
    ] {
        let (got, body) = send_sts(&emulator, form, signer).await;
        assert_eq!(got, status, "{form}: {body}");
        assert!(
            body.starts_with(&format!("<ErrorResponse {ns}>"))
                && body.contains("<Type>Sender</Type>")
                && body.contains(&format!("<Code>{code}</Code>"))
                && body.contains("<Message>")
                && body.contains("<RequestId>"),
            "{form}: {body}"
        );
    }
}

#[tokio::test]
async fn stats_endpoint_reports_calls() {
    let emulator = demo();
    for _ in 0..3 {
        describe(
            &emulator,
            DEMO_ACCESS_KEY_ID,
            "us-east-1",
            &json!({"State": "Active"}),
        )
        .await;
    }
    describe(
        &emulator,
        "AKIANOBODY0000000000",
        "us-east-1",
        &json!({"State": "Active"}),
    )
    .await;
    let response = emulator
        .router()
        .oneshot(
            Request::get("/_emulator/stats")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        stats,
        json!({
            "in_flight": 0,
            "max_in_flight": 1,
            "throttled": 0,
            "failed": 0,
            "calls": {"DescribeSessions": {"total": 4, "by_account": {DEMO_ACCOUNT_ID: 3}}},
        })
    );
}

/// TerminateSession: its reply and its constraint error match the model,
/// and the session moves from Active to History with an end date.
#[tokio::test]
async fn terminate_session_matches_the_model() {
    let model = Model::load();
    let emulator = demo();
    let mut active = full_session();
    active.session_id = "walter-0a0a0a0a0a0a0a0a0".into();
    active.status = SessionStatus::Connected;
    active.end_date = None;
    emulator.insert_session(DEMO_ACCOUNT_ID, "us-east-1", active.clone());
    let terminate = |body: Value| {
        let emulator = emulator.clone();
        async move {
            let req = request("AmazonSSM.TerminateSession")
                .body(Body::from(body.to_string()))
                .unwrap();
            send_signed(&emulator, DEMO_ACCESS_KEY_ID, "us-east-1", req).await
        }
    };
    for _ in 0..2 {
        let reply = terminate(json!({ "SessionId": active.session_id })).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let mut seen = BTreeSet::new();
        model.check("TerminateSessionResponse", &reply.body, "$", &mut seen);
        assert_eq!(reply.body["SessionId"], active.session_id.as_str());
    }
    let history = describe(
        &emulator,
        DEMO_ACCESS_KEY_ID,
        "us-east-1",
        &json!({"State": "History", "Filters": [{"key": "SessionId", "value": active.session_id}]}),
    )
    .await;
    let ended = &history.body["Sessions"][0];
    assert_eq!(ended["Status"], "Terminated", "{}", history.body);
    assert!(ended["EndDate"].as_f64() >= ended["StartDate"].as_f64());
    let still = describe(
        &emulator,
        DEMO_ACCESS_KEY_ID,
        "us-east-1",
        &json!({"State": "Active", "Filters": [{"key": "SessionId", "value": active.session_id}]}),
    )
    .await;
    assert_eq!(still.body["Sessions"], json!([]));
    // A missing SessionId breaks the model's `required`.
    assert_eq!(
        model.shape("TerminateSessionRequest")["required"],
        json!(["SessionId"])
    );
    let refused = terminate(json!({})).await;
    check_error(&model, &refused, "ValidationException");
    assert_eq!(emulator.calls("TerminateSession"), 3);
}
