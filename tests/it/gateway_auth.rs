//! Authentication and per-account authorization over real HTTP: the
//! authorization matrix (principals × accounts × fields), every bad
//! credential the issue lists, key rotation, CORS and introspection.
//!
//! JWTs are signed here with keys generated here and verified against a
//! JWKS served from a loopback route, as in the unit tests of `src/auth/`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::Mac as _;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use ssm_emulator::EmulatorConfig;
use ssm_session_gateway::auth::{GrantSettings, JwtSettings, Scope};
use ssm_session_gateway::settings::{ApiKeySettings, Settings};

use crate::support::{
    ADMIN, HttpAnswer, PLATFORM, TestApp, anchor, error_codes, spawn_app_with, spawn_multi_with,
};

const ACCOUNTS: [&str; 3] = ["platform", "payments", "sandbox"];
const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "ssm-gateway";

// ------------------------------------------------------------ JWT plumbing

fn rsa_key() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key"))
}

fn jwks_body() -> String {
    let c = PublicKeyComponents::<Vec<u8>>::from(rsa_key().public_key());
    json!({ "keys": [{ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
        "n": B64.encode(c.n), "e": B64.encode(c.e) }] })
    .to_string()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str, groups: &[&str]) -> Value {
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(),
        "exp": now() + 300, "groups": groups })
}

fn encode(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

/// RS256 over `claims` with the generated key, naming `kid`.
fn jwt_with_kid(kid: &str, claims: &Value) -> String {
    let input = encode(&json!({ "alg": "RS256", "typ": "JWT", "kid": kid }), claims);
    let key = rsa_key();
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("signs");
    format!("{input}.{}", B64.encode(sig))
}

fn jwt(claims: &Value) -> String {
    jwt_with_kid("k1", claims)
}

/// A JWKS endpoint on a loopback port whose answer a test can change.
struct Jwks {
    url: String,
    answer: Arc<Mutex<(u16, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Jwks {
    async fn start(status: u16, body: String) -> Self {
        let answer = Arc::new(Mutex::new((status, body)));
        let shared = answer.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let shared = shared.clone();
                async move {
                    let (status, body) = shared.lock().expect("lock").clone();
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, answer, task }
    }

    fn set(&self, status: u16, body: String) {
        *self.answer.lock().expect("lock") = (status, body);
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn grant(accounts: &[&str], scopes: &[Scope]) -> GrantSettings {
    GrantSettings {
        accounts: accounts.iter().map(|s| (*s).to_owned()).collect(),
        scopes: scopes.to_vec(),
    }
}

/// JWTs from [`ISSUER`]: group `payments-team` reads `payments`.
fn jwt_settings(url: &str) -> JwtSettings {
    JwtSettings {
        issuer: ISSUER.to_owned(),
        audiences: vec![AUDIENCE.to_owned()],
        jwks_url: url.to_owned(),
        algorithms: vec!["RS256".to_owned()],
        grants_claim: "groups".to_owned(),
        claim_grants: [(
            "payments-team".to_owned(),
            vec![grant(&["payments"], &[Scope::SessionsRead])],
        )]
        .into_iter()
        .collect(),
        leeway_secs: 5,
        jwks_refresh_secs: 3600,
        jwks_min_refresh_secs: 1,
    }
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The 401 every refused credential gets: the challenge, the code, no
/// `data`, and nothing of the token in the body.
fn assert_unauthenticated(answer: &HttpAnswer, token: &str, case: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{case}");
    let challenge = answer
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{case}: {challenge:?}");
    let body = answer.json();
    assert_eq!(error_codes(&body), ["UNAUTHENTICATED"], "{case}: {body}");
    assert!(body.get("data").is_none(), "{case}: {body}");
    let text = String::from_utf8_lossy(&answer.body);
    if token.len() >= 8 {
        assert!(!text.contains(token), "{case}: the token is in the body");
    }
}

// ------------------------------------------------------------ the matrix

/// Who calls in the matrix, and the accounts each may read.
struct Who {
    name: &'static str,
    authorization: Option<String>,
    readable: BTreeSet<&'static str>,
}

fn set(accounts: &[&'static str]) -> BTreeSet<&'static str> {
    accounts.iter().copied().collect()
}

const SESSIONS: &str = r#"query($accounts: [ID!], $after: String) {
  sessions(state: HISTORY, accounts: $accounts, first: 400, after: $after) {
    nodes { id sessionId region account { alias } managedNode { instanceId } }
    pageInfo { endCursor }
  }
}"#;

const SESSIONS_FIRST: &str = r#"query($accounts: [ID!]) {
  sessions(state: HISTORY, accounts: $accounts, first: 2) { pageInfo { endCursor } }
}"#;

const ONE: &str = r#"query($account: ID!, $region: String!, $sessionId: String!) {
  session(account: $account, region: $region, sessionId: $sessionId) {
    id account { alias } managedNode { instanceId }
  }
}"#;

const NODE: &str =
    r#"query($id: ID!) { node(id: $id) { id ... on Session { account { alias } } } }"#;

fn aliases(response: &Value) -> BTreeSet<String> {
    response["data"]["sessions"]["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n["account"]["alias"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// ACCOUNT_NOT_FOUND for `name`, worded exactly as for an account that is
/// not configured, and no data.
fn assert_not_found(response: &Value, field: &str, name: &str, case: &str) {
    assert_eq!(
        error_codes(response),
        ["ACCOUNT_NOT_FOUND"],
        "{case}: {response}"
    );
    assert_eq!(
        response["errors"][0]["message"],
        json!(format!(
            "no configured account has the id or alias {name:?}"
        )),
        "{case}"
    );
    assert!(response["data"][field].is_null(), "{case}: {response}");
}

#[tokio::test]
async fn the_authorization_matrix_leaks_nothing() {
    let jwks = Jwks::start(200, jwks_body()).await;
    let url = jwks.url.clone();
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), move |s| {
        s.auth.jwt = Some(jwt_settings(&url));
        s.auth.allow_anonymous = true;
        s.auth.anonymous_grants = vec![grant(&["sandbox"], &[Scope::SessionsRead])];
        // Keep responses, so the matrix can probe the response cache.
        s.cache.active_ttl_secs = 60;
        s.cache.history_ttl_secs = 60;
        // A whole account's History with its nodes in one page: more calls
        // than the default per-source budget.
        s.limits.max_upstream_calls_per_source = 20;
    })
    .await;

    // What the admin sees, per account: one session, its node id, its node.
    let mut sample = Vec::new();
    for account in ACCOUNTS {
        let r = app
            .graphql(SESSIONS, json!({ "accounts": [account] }))
            .await;
        let node = r["data"]["sessions"]["nodes"][0].clone();
        assert_eq!(node["account"]["alias"], json!(account), "{r}");
        sample.push((account, node));
    }
    let admin_all = app.graphql(SESSIONS, json!({})).await;
    assert_eq!(aliases(&admin_all).len(), 3, "{admin_all}");
    let admin_cursor_all =
        app.graphql(SESSIONS_FIRST, json!({})).await["data"]["sessions"]["pageInfo"]["endCursor"]
            .clone();

    let token = jwt(&claims("alice@example.com", &["payments-team"]));
    let principals = [
        Who {
            name: "admin key",
            authorization: Some(ADMIN.to_owned()),
            readable: set(&ACCOUNTS),
        },
        Who {
            name: "one-account key",
            authorization: Some(PLATFORM.to_owned()),
            readable: set(&["platform"]),
        },
        Who {
            name: "JWT with one group",
            authorization: Some(bearer(&token)),
            readable: set(&["payments"]),
        },
        Who {
            name: "anonymous",
            authorization: None,
            readable: set(&["sandbox"]),
        },
    ];

    for who in &principals {
        let auth = who.authorization.as_deref();
        let ask = |query: &'static str, vars: Value| {
            let app = &app;
            async move {
                let answer = app.graphql_as(auth, query, vars).await;
                assert_eq!(
                    answer.status,
                    StatusCode::OK,
                    "{}",
                    String::from_utf8_lossy(&answer.body)
                );
                answer
            }
        };
        let case = |what: &str| format!("{} / {what}", who.name);

        // `accounts`: exactly the readable ones, in configuration order.
        let r = ask("{ accounts { alias } }", json!({})).await.json();
        let listed: Vec<&str> = r["data"]["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .map(|a| a["alias"].as_str().expect("alias"))
            .collect();
        let expected: Vec<&str> = ACCOUNTS
            .iter()
            .copied()
            .filter(|a| who.readable.contains(a))
            .collect();
        assert_eq!(listed, expected, "{}", case("accounts"));

        // `sessions` without `accounts`: the readable ones only, and all of
        // them; a response the admin cached is not served to anyone else.
        let answer = ask(SESSIONS, json!({})).await;
        let r = answer.json();
        let seen: BTreeSet<String> = aliases(&r);
        let want: BTreeSet<String> = who.readable.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(seen, want, "{}", case("sessions default"));
        if who.name != "admin key" {
            assert_eq!(answer.cache_status(), "MISS", "{}", case("response cache"));
            assert_ne!(r, admin_all, "{}", case("response cache"));
        }
        // A second identical query is this principal's own hit.
        let again = ask(SESSIONS, json!({})).await;
        assert_eq!(again.cache_status(), "HIT", "{}", case("own cache hit"));
        assert_eq!(again.json(), r, "{}", case("own cache hit"));

        for (account, node) in &sample {
            let readable = who.readable.contains(account);
            let calls = app.describe_calls();

            // `sessions` naming the account, after the admin cached it.
            let answer = ask(SESSIONS, json!({ "accounts": [account] })).await;
            let r = answer.json();
            if readable {
                assert!(error_codes(&r).is_empty(), "{}: {r}", case(account));
                assert_eq!(
                    aliases(&r),
                    set(&[account]).iter().map(|s| (*s).to_owned()).collect()
                );
            } else {
                assert_not_found(
                    &r,
                    "sessions",
                    account,
                    &case(&format!("sessions {account}")),
                );
                assert_eq!(answer.cache_status(), "MISS");
                assert_eq!(
                    app.describe_calls(),
                    calls,
                    "{}: an upstream call",
                    case(account)
                );
            }

            // `session(...)` with its `managedNode`.
            let vars = json!({ "account": account, "region": node["region"], "sessionId": node["sessionId"] });
            let r = ask(ONE, vars).await.json();
            if readable {
                assert_eq!(
                    r["data"]["session"]["id"],
                    node["id"],
                    "{}: {r}",
                    case("session")
                );
                assert_eq!(
                    r["data"]["session"]["managedNode"],
                    node["managedNode"],
                    "{}",
                    case("managedNode")
                );
            } else {
                assert_not_found(&r, "session", account, &case(&format!("session {account}")));
            }

            // `node(id:)`.
            let r = ask(NODE, json!({ "id": node["id"] })).await.json();
            if readable {
                assert_eq!(r["data"]["node"]["id"], node["id"], "{}: {r}", case("node"));
            } else {
                assert_eq!(
                    error_codes(&r),
                    ["ACCOUNT_NOT_FOUND"],
                    "{}: {r}",
                    case("node")
                );
                assert!(r["data"]["node"].is_null(), "{}: {r}", case("node"));
            }
            if !readable {
                assert_eq!(
                    app.describe_calls(),
                    calls,
                    "{}: an upstream call",
                    case(account)
                );
            }

            // A cursor the admin minted for this one account.
            let cursor = app
                .graphql(SESSIONS_FIRST, json!({ "accounts": [account] }))
                .await["data"]["sessions"]["pageInfo"]["endCursor"]
                .clone();
            let r = ask(SESSIONS, json!({ "accounts": [account], "after": cursor }))
                .await
                .json();
            if readable {
                assert!(error_codes(&r).is_empty(), "{}: {r}", case("cursor"));
                assert_eq!(
                    aliases(&r),
                    set(&[account]).iter().map(|s| (*s).to_owned()).collect()
                );
            } else {
                assert_not_found(&r, "sessions", account, &case("cursor"));
            }
        }

        // The admin's cursor over every account, with no `accounts`: it
        // resumes the same sources only for a caller who reads them all.
        let r = ask(SESSIONS, json!({ "after": admin_cursor_all }))
            .await
            .json();
        if who.readable.len() == ACCOUNTS.len() {
            assert!(error_codes(&r).is_empty(), "{}: {r}", case("admin cursor"));
        } else {
            assert_eq!(
                error_codes(&r),
                ["INVALID_CURSOR"],
                "{}: {r}",
                case("admin cursor")
            );
            assert!(r["data"]["sessions"].is_null(), "{}", case("admin cursor"));
        }
    }

    // Unauthenticated (a header that is not a valid credential): every
    // query is a 401, whatever it asks.
    for (query, vars) in [
        ("{ accounts { alias } }", json!({})),
        (SESSIONS, json!({})),
        (SESSIONS, json!({ "accounts": ["platform"] })),
        (NODE, json!({ "id": sample[0].1["id"] })),
    ] {
        let answer = app.graphql_as(Some("Bearer not-a-key"), query, vars).await;
        assert_unauthenticated(&answer, "not-a-key", "unauthenticated");
    }
}

// ------------------------------------------------------------ bad input

#[tokio::test]
async fn bad_credentials_get_a_clear_401_and_nothing_else() {
    let jwks = Jwks::start(200, jwks_body()).await;
    let url = jwks.url.clone();
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), move |s| {
        s.auth.jwt = Some(jwt_settings(&url));
        s.auth.api_keys.push(ApiKeySettings {
            name: "retired".to_owned(),
            sha256: vec![sha256_hex("retired-key")],
            grants: vec![grant(&["*"], &[Scope::SessionsRead])],
            expires: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        });
    })
    .await;
    let q = "{ accounts { alias } }";

    // Header shapes.
    let big = "k".repeat(100 * 1024);
    for (case, header) in [
        ("missing", None),
        ("empty", Some(String::new())),
        ("Basic", Some("Basic ZGVtbzpkZW1v".to_owned())),
        ("another scheme", Some("Token demo-admin".to_owned())),
        ("Bearer without a token", Some("Bearer".to_owned())),
        ("Bearer and spaces", Some("Bearer    ".to_owned())),
        ("100 KB token", Some(bearer(&big))),
        ("unknown key", Some(bearer("no-such-key-123"))),
        ("expired key", Some(bearer("retired-key"))),
        (
            "lower-case scheme, unknown key",
            Some("bearer no-such-key-123".to_owned()),
        ),
    ] {
        let answer = app.graphql_as(header.as_deref(), q, json!({})).await;
        let token = header
            .as_deref()
            .and_then(|h| h.split_once(' '))
            .map(|(_, t)| t.trim())
            .unwrap_or_default();
        assert_unauthenticated(&answer, token, case);
    }

    // Non-UTF-8 bytes in the header, over a raw socket (clients refuse to
    // send them).
    let raw = raw_post(&app, b"Bearer \xff\xfe\xfd", q).await;
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    assert!(raw.contains("UNAUTHENTICATED"), "{raw}");
    assert!(!raw.contains("\"data\""), "{raw}");

    // Two Authorization headers: refused, not guessed.
    let answer = app
        .request_as(
            Some(ADMIN),
            Method::POST,
            "/graphql",
            &[
                ("content-type", "application/json"),
                ("authorization", PLATFORM),
            ],
            json!({ "query": q }).to_string(),
        )
        .await;
    assert_unauthenticated(&answer, "demo-platform", "two headers");

    // JWTs.
    let good = claims("bob", &["payments-team"]);
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 600);
    let mut early = good.clone();
    early["nbf"] = json!(now() + 600);
    let mut issuer = good.clone();
    issuer["iss"] = json!("https://evil.example.com/");
    let mut audience = good.clone();
    audience["aud"] = json!("another-app");
    let none = format!(
        "{}.",
        encode(&json!({ "alg": "none", "typ": "JWT" }), &good)
    );
    // HS256 keyed with the RSA public key (the classic confusion attack).
    let hs256 = {
        let input = encode(&json!({ "alg": "HS256", "typ": "JWT", "kid": "k1" }), &good);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(rsa_key().public_key().as_ref())
            .expect("hmac key");
        mac.update(input.as_bytes());
        format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
    };
    let tampered = {
        let token = jwt(&good);
        let parts: Vec<&str> = token.split('.').collect();
        let mut elevated = good.clone();
        elevated["groups"] = json!(["payments-team", "sre"]);
        format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(elevated.to_string()),
            parts[2]
        )
    };
    for (case, token) in [
        ("expired", jwt(&expired)),
        ("not yet valid", jwt(&early)),
        ("another issuer", jwt(&issuer)),
        ("another audience", jwt(&audience)),
        ("alg none", none),
        ("HS256 with the RSA key", hs256),
        ("unknown kid", jwt_with_kid("nope", &good)),
        ("tampered payload", tampered),
    ] {
        let answer = app.graphql_as(Some(&bearer(&token)), q, json!({})).await;
        assert_unauthenticated(&answer, &token, case);
    }
    // The good token works, so the cases above failed for their reason.
    let answer = app
        .graphql_as(Some(&bearer(&jwt(&good))), q, json!({}))
        .await;
    assert_eq!(
        answer.json()["data"]["accounts"],
        json!([{ "alias": "payments" }])
    );

    // GET queries are authenticated too; the GraphiQL page and /healthz not.
    let get = app
        .request_as(
            None,
            Method::GET,
            "/graphql?query=%7B%20accounts%20%7B%20alias%20%7D%20%7D",
            &[],
            "",
        )
        .await;
    assert_unauthenticated(&get, "", "GET without credentials");
    let get = app
        .request(
            Method::GET,
            "/graphql?query=%7B%20accounts%20%7B%20alias%20%7D%20%7D",
            &[],
            "",
        )
        .await;
    assert_eq!(get.status, StatusCode::OK);
    let page = app
        .request_as(
            None,
            Method::GET,
            "/graphql",
            &[("accept", "text/html")],
            "",
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page.body).contains("Bearer demo-admin"));
    let health = app.request_as(None, Method::GET, "/healthz", &[], "").await;
    assert_eq!(health.status, StatusCode::OK);
}

/// A POST with raw header bytes; the raw answer.
async fn raw_post(app: &TestApp, authorization: &[u8], query: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = json!({ "query": query }).to_string();
    let mut request = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\nauthorization: ",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(authorization);
    request.extend_from_slice(b"\r\n\r\n");
    request.extend_from_slice(body.as_bytes());
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connects");
    stream.write_all(&request).await.expect("writes");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("reads");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn jwks_down_or_garbage_is_a_clear_401_and_api_keys_still_work() {
    let jwks = Jwks::start(503, "down".to_owned()).await;
    let url = jwks.url.clone();
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), move |s| {
        s.auth.jwt = Some(jwt_settings(&url));
        s.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let jwks_status = || async {
        let verbose = app.admin("/readyz?verbose").await;
        // A JWKS that is down does not make the gateway unready: API keys
        // still work.
        assert_eq!(verbose.status, StatusCode::OK);
        verbose.json()["checks"]["jwks"].clone()
    };
    let q = "{ accounts { alias } }";
    let token = jwt(&claims("carol", &["payments-team"]));
    let answer = app.graphql_as(Some(&bearer(&token)), q, json!({})).await;
    assert_unauthenticated(&answer, &token, "JWKS down");
    let status = jwks_status().await;
    assert_eq!(status["ok"], json!(false), "{status}");
    assert!(status["last_error"]["error"].is_string(), "{status}");
    assert!(
        answer.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not yet available"),
        "{}",
        answer.json()
    );
    jwks.set(200, "<html>not json</html>".to_owned());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = app.graphql_as(Some(&bearer(&token)), q, json!({})).await;
    assert_unauthenticated(&answer, &token, "JWKS garbage");
    // API keys do not depend on the JWKS.
    let answer = app.graphql_as(Some(ADMIN), q, json!({})).await;
    assert_eq!(answer.status, StatusCode::OK);
    // Once the JWKS answers, the same token works (after the minimum interval).
    jwks.set(200, jwks_body());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = app.graphql_as(Some(&bearer(&token)), q, json!({})).await;
    assert_eq!(
        answer.json()["data"]["accounts"],
        json!([{ "alias": "payments" }])
    );
    let status = jwks_status().await;
    assert_eq!(status["ok"], json!(true), "{status}");
    assert_eq!(status["keys"], json!(1), "{status}");
    assert!(status["last_success"].is_string(), "{status}");
}

// ------------------------------------------------------------ rotation

#[tokio::test]
async fn a_name_with_two_hashes_takes_both_keys_and_an_expired_key_is_refused() {
    let mut settings = Settings::default();
    settings.auth.api_keys = vec![
        ApiKeySettings {
            name: "dashboard".to_owned(),
            sha256: vec![
                sha256_hex("old-dashboard-key"),
                sha256_hex("new-dashboard-key"),
            ],
            grants: vec![grant(&["*"], &[Scope::SessionsRead])],
            expires: None,
        },
        ApiKeySettings {
            name: "contractor".to_owned(),
            sha256: vec![sha256_hex("contractor-key")],
            grants: vec![grant(&["*"], &[Scope::SessionsRead])],
            expires: Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
        },
    ];
    let app = spawn_app_with(
        crate::support::emulator_config(crate::support::dataset(1, 2, 2)),
        settings,
    )
    .await;
    let q = "{ accounts { alias } }";
    for key in ["old-dashboard-key", "new-dashboard-key"] {
        let answer = app.graphql_as(Some(&bearer(key)), q, json!({})).await;
        assert_eq!(answer.status, StatusCode::OK, "{key}");
        assert_eq!(
            answer.json()["data"]["accounts"],
            json!([{ "alias": "demo" }])
        );
    }
    let answer = app
        .graphql_as(Some(&bearer("contractor-key")), q, json!({}))
        .await;
    assert_unauthenticated(&answer, "contractor-key", "expired key");
    assert!(
        answer.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired")
    );
}

// ------------------------------------------------------------ browsers

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins_only() {
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), |s| {
        s.http.cors_allowed_origins = vec!["https://console.example.com".to_owned()];
    })
    .await;
    let preflight = |origin: &'static str| {
        let app = &app;
        async move {
            app.request_as(
                None,
                Method::OPTIONS,
                "/graphql",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                "",
            )
            .await
        }
    };
    let ok = preflight("https://console.example.com").await;
    assert!(ok.status.is_success(), "{}", ok.status);
    let header = |a: &HttpAnswer, name: &str| {
        a.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(
        header(&ok, "access-control-allow-origin"),
        "https://console.example.com"
    );
    assert!(header(&ok, "access-control-allow-headers").contains("authorization"));
    assert!(header(&ok, "access-control-allow-headers").contains("content-type"));
    assert!(header(&ok, "access-control-allow-methods").contains("post"));

    let other = preflight("https://evil.example.com").await;
    assert_eq!(header(&other, "access-control-allow-origin"), "");

    // The actual request carries the origin back, and still needs a key.
    let answer = app
        .request(
            Method::POST,
            "/graphql",
            &[
                ("content-type", "application/json"),
                ("origin", "https://console.example.com"),
            ],
            json!({ "query": "{ accounts { alias } }" }).to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        header(&answer, "access-control-allow-origin"),
        "https://console.example.com"
    );
    let refused = app
        .request_as(
            None,
            Method::POST,
            "/graphql",
            &[
                ("content-type", "application/json"),
                ("origin", "https://console.example.com"),
            ],
            json!({ "query": "{ accounts { alias } }" }).to_string(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_cors_origins_no_origin_is_allowed() {
    let app = spawn_multi_with(EmulatorConfig::demo(anchor()), |_| {}).await;
    let answer = app
        .request_as(
            None,
            Method::OPTIONS,
            "/graphql",
            &[
                ("origin", "https://console.example.com"),
                ("access-control-request-method", "POST"),
            ],
            "",
        )
        .await;
    assert!(answer.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn introspection_can_be_turned_off() {
    let q = "{ __schema { queryType { name } } }";
    let on = spawn_multi_with(EmulatorConfig::demo(anchor()), |_| {}).await;
    let r = on.graphql(q, json!({})).await;
    assert_eq!(
        r["data"]["__schema"]["queryType"]["name"],
        json!("Query"),
        "{r}"
    );

    let off = spawn_multi_with(EmulatorConfig::demo(anchor()), |s| {
        s.http.introspection = false
    })
    .await;
    let r = off.graphql(q, json!({})).await;
    // async-graphql answers introspection as if the schema had none.
    assert!(r["data"]["__schema"].is_null(), "{r}");
    let r = off
        .graphql(r#"{ __type(name: "Session") { name } }"#, json!({}))
        .await;
    assert!(r["data"]["__type"].is_null(), "{r}");
    // Queries still work.
    let r = off.graphql("{ accounts { alias } }", json!({})).await;
    assert_eq!(
        r["data"]["accounts"].as_array().map(Vec::len),
        Some(3),
        "{r}"
    );
}
