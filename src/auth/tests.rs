//! Tests of the whole module: header handling, and JWTs signed with keys
//! generated here, verified against a JWKS served from a loopback route.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
    RsaEncoding, RsaKeyPair,
};
use axum::http::{HeaderValue, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::Mac as _;
use serde_json::{Value, json};

use super::*;
use crate::settings::AccountSettings;

// ---------------------------------------------------------------- keys

struct RsaKey {
    pair: RsaKeyPair,
    kid: String,
}

struct EcKey {
    pair: EcdsaKeyPair,
    kid: String,
}

/// RSA key generation takes a while: once per test binary, shared.
fn rsa_keys() -> &'static [RsaKey; 2] {
    static KEYS: OnceLock<[RsaKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = |kid: &str| RsaKey {
            pair: RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
            kid: kid.to_owned(),
        };
        [make("rsa-1"), make("rsa-2")]
    })
}

fn ec_key() -> &'static EcKey {
    static KEY: OnceLock<EcKey> = OnceLock::new();
    KEY.get_or_init(|| EcKey {
        pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key"),
        kid: "ec-1".to_owned(),
    })
}

fn rsa_jwk(key: &RsaKey, alg: &str) -> Value {
    let c = PublicKeyComponents::<Vec<u8>>::from(key.pair.public_key());
    json!({ "kty": "RSA", "use": "sig", "alg": alg, "kid": key.kid, "n": B64.encode(c.n), "e": B64.encode(c.e) })
}

fn ec_jwk(key: &EcKey) -> Value {
    let point = key.pair.public_key().as_ref();
    let (x, y) = point[1..].split_at(32);
    json!({ "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": key.kid, "x": B64.encode(x), "y": B64.encode(y) })
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

// ---------------------------------------------------------------- tokens

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "ssm-gateway";

fn claims(sub: &str, groups: Value) -> Value {
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now() + 300, "iat": now(), "groups": groups })
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

fn rsa_token_with(
    key: &RsaKey,
    alg: &str,
    padding: &'static dyn RsaEncoding,
    claims: &Value,
) -> String {
    rsa_token_as(key, &key.kid, alg, padding, claims)
}

/// Signed by `key`, but naming `kid` in the header.
fn rsa_token_as(
    key: &RsaKey,
    kid: &str,
    alg: &str,
    padding: &'static dyn RsaEncoding,
    claims: &Value,
) -> String {
    let header = json!({ "alg": alg, "typ": "JWT", "kid": kid });
    let input = signing_input(&header, claims);
    let mut sig = vec![0; key.pair.public_modulus_len()];
    key.pair
        .sign(padding, &SystemRandom::new(), input.as_bytes(), &mut sig)
        .expect("signs");
    format!("{input}.{}", B64.encode(sig))
}

fn rsa_token(key: &RsaKey, claims: &Value) -> String {
    rsa_token_with(key, "RS256", &RSA_PKCS1_SHA256, claims)
}

fn ec_token(key: &EcKey, kid: &str, claims: &Value) -> String {
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
    let input = signing_input(&header, claims);
    let sig = key
        .pair
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("signs");
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

// ---------------------------------------------------------------- JWKS server

/// A JWKS endpoint on a loopback port: what it answers can change, and it
/// counts requests.
struct JwksServer {
    url: String,
    answer: Arc<Mutex<(StatusCode, String)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(status: StatusCode, body: String) -> Self {
        let answer = Arc::new(Mutex::new((status, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (answer.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (a, h) = (a.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = a.lock().expect("lock").clone();
                    (status, body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serves");
        });
        Self {
            url,
            answer,
            hits,
            task,
        }
    }

    fn set(&self, status: StatusCode, body: String) {
        *self.answer.lock().expect("lock") = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwt_settings(url: &str) -> JwtSettings {
    let grants = |accounts: &[&str], scopes: &[Scope]| GrantSettings {
        accounts: accounts.iter().map(|s| (*s).to_owned()).collect(),
        scopes: scopes.to_vec(),
    };
    JwtSettings {
        issuer: ISSUER.to_owned(),
        audiences: vec![AUDIENCE.to_owned(), "other-app".to_owned()],
        jwks_url: url.to_owned(),
        algorithms: ["RS256", "PS256", "ES256"].map(String::from).to_vec(),
        grants_claim: "groups".to_owned(),
        claim_grants: [
            (
                "platform-team".to_owned(),
                vec![grants(&["platform"], &[Scope::SessionsRead])],
            ),
            (
                "sre".to_owned(),
                vec![grants(
                    &["*"],
                    &[Scope::SessionsRead, Scope::SessionsTerminate],
                )],
            ),
        ]
        .into_iter()
        .collect(),
        leeway_secs: 30,
        jwks_refresh_secs: 3600,
        jwks_min_refresh_secs: 30,
    }
}

/// A verifier over HTTP against `url`, refetching at most every `min`.
fn verifier(url: &str, min: Duration) -> JwtVerifier {
    JwtVerifier::from_settings(&jwt_settings(url))
        .expect("builds")
        .with_refresh_intervals(Duration::from_secs(3600), min)
}

fn all_jwks() -> String {
    let [a, _] = rsa_keys();
    jwks(&[rsa_jwk(a, "RS256"), ec_jwk(ec_key())])
}

// ---------------------------------------------------------------- JWT tests

#[tokio::test]
async fn rsa_and_ec_tokens_verify_and_map_groups_to_grants() {
    let server = JwksServer::start(StatusCode::OK, all_jwks()).await;
    let v = verifier(&server.url, Duration::from_secs(30));
    let [rsa, _] = rsa_keys();

    let p = v
        .verify(&rsa_token(
            rsa,
            &claims("alice", json!(["platform-team", "unmapped"])),
        ))
        .await
        .expect("RS256 verifies");
    assert_eq!(p.kind(), PrincipalKind::Jwt);
    assert_eq!(p.name(), "alice");
    assert!(p.can(Scope::SessionsRead, "111122223333", "platform"));
    assert!(!p.can(Scope::SessionsRead, "444455556666", "payments"));
    assert!(!p.can(Scope::SessionsTerminate, "111122223333", "platform"));

    let p = v
        .verify(&ec_token(ec_key(), "ec-1", &claims("bob", json!("sre"))))
        .await
        .expect("ES256 verifies");
    assert_eq!(p.name(), "bob");
    assert!(p.can(Scope::SessionsTerminate, "444455556666", "payments"));

    // No mapped group: authenticated, granted nothing.
    let p = v
        .verify(&rsa_token(rsa, &claims("carol", json!(42))))
        .await
        .expect("verifies");
    assert!(p.grants().is_empty());
    assert_eq!(server.hits(), 1, "one fetch serves every token");
}

#[tokio::test]
async fn pss_tokens_verify_against_an_rsa_key_without_alg() {
    let [a, _] = rsa_keys();
    let mut jwk = rsa_jwk(a, "RS256");
    jwk.as_object_mut().expect("object").remove("alg");
    let server = JwksServer::start(StatusCode::OK, jwks(&[jwk])).await;
    let v = verifier(&server.url, Duration::from_secs(30));
    let token = rsa_token_with(a, "PS256", &RSA_PSS_SHA256, &claims("p", json!([])));
    v.verify(&token).await.expect("PS256 verifies");
}

#[tokio::test]
async fn times_issuer_and_audience_are_checked_with_leeway() {
    let server = JwksServer::start(StatusCode::OK, all_jwks()).await;
    let v = verifier(&server.url, Duration::from_secs(30));
    let [rsa, _] = rsa_keys();
    let with = |patch: Value| {
        let mut c = claims("alice", json!([]));
        for (k, val) in patch.as_object().expect("object") {
            c[k] = val.clone();
        }
        rsa_token(rsa, &c)
    };
    assert_eq!(
        v.verify(&with(json!({ "exp": now() - 120 }))).await,
        Err(AuthError::Expired)
    );
    // Within the 30 s leeway.
    v.verify(&with(json!({ "exp": now() - 10 })))
        .await
        .expect("leeway");
    assert_eq!(
        v.verify(&with(json!({ "nbf": now() + 120 }))).await,
        Err(AuthError::InvalidToken("not yet valid"))
    );
    v.verify(&with(json!({ "nbf": now() + 10 })))
        .await
        .expect("leeway");
    assert_eq!(
        v.verify(&with(json!({ "iss": "https://evil.example.com/" })))
            .await,
        Err(AuthError::InvalidToken("wrong issuer"))
    );
    assert_eq!(
        v.verify(&with(json!({ "aud": "someone-else" }))).await,
        Err(AuthError::InvalidToken("wrong audience"))
    );
    // Any one accepted audience is enough.
    v.verify(&with(json!({ "aud": ["x", "other-app"] })))
        .await
        .expect("aud list");
    for missing in ["exp", "sub", "iss", "aud"] {
        let mut c = claims("alice", json!([]));
        c.as_object_mut().expect("object").remove(missing);
        assert!(v.verify(&rsa_token(rsa, &c)).await.is_err(), "no {missing}");
    }
    assert!(
        v.verify(&with(json!({ "sub": "" }))).await.is_err(),
        "empty subject"
    );
}

#[tokio::test]
async fn forged_tokens_never_verify() {
    let server = JwksServer::start(StatusCode::OK, all_jwks()).await;
    let v = verifier(&server.url, Duration::from_secs(30));
    let [rsa, other] = rsa_keys();
    let good = rsa_token(rsa, &claims("alice", json!(["sre"])));
    v.verify(&good).await.expect("the untouched token verifies");

    // Tampered payload: the same signature over other claims.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = B64.encode(claims("mallory", json!(["sre"])).to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    assert_eq!(
        v.verify(&tampered).await,
        Err(AuthError::InvalidToken("bad signature"))
    );

    // alg: none, with and without a signature.
    let none_header = B64.encode(json!({ "alg": "none", "kid": rsa.kid }).to_string());
    for sig in ["", "AAAA"] {
        let token = format!("{none_header}.{}.{sig}", parts[1]);
        assert!(v.verify(&token).await.is_err(), "alg none ({sig:?})");
    }

    // HS256 keyed with the RSA public key (the classic confusion attack),
    // by modulus bytes and by the JWK's own JSON.
    let public = PublicKeyComponents::<Vec<u8>>::from(rsa.pair.public_key());
    for secret in [
        public.n.clone(),
        rsa_jwk(rsa, "RS256").to_string().into_bytes(),
    ] {
        let header = json!({ "alg": "HS256", "typ": "JWT", "kid": rsa.kid });
        let input = signing_input(&header, &claims("mallory", json!(["sre"])));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("any length");
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", B64.encode(mac.finalize().into_bytes()));
        assert_eq!(
            v.verify(&token).await,
            Err(AuthError::InvalidToken("algorithm not accepted"))
        );
    }

    // Signed by a key the JWKS does not hold, under a kid it does.
    let foreign = rsa_token_as(
        other,
        &rsa.kid,
        "RS256",
        &RSA_PKCS1_SHA256,
        &claims("mallory", json!(["sre"])),
    );
    assert_eq!(
        v.verify(&foreign).await,
        Err(AuthError::InvalidToken("bad signature"))
    );

    // An RS256 header naming the EC key, and ES256 naming an RSA key.
    let cross = rsa_token_as(
        rsa,
        "ec-1",
        "RS256",
        &RSA_PKCS1_SHA256,
        &claims("mallory", json!([])),
    );
    assert_eq!(
        v.verify(&cross).await,
        Err(AuthError::InvalidToken(
            "signing key does not match the algorithm"
        ))
    );
    let cross = ec_token(ec_key(), &rsa.kid, &claims("mallory", json!([])));
    assert_eq!(
        v.verify(&cross).await,
        Err(AuthError::InvalidToken(
            "signing key does not match the algorithm"
        ))
    );

    // An accepted family but an algorithm not configured.
    let rs384 = rsa_token_with(
        rsa,
        "RS384",
        &aws_lc_rs::signature::RSA_PKCS1_SHA384,
        &claims("a", json!([])),
    );
    assert_eq!(
        v.verify(&rs384).await,
        Err(AuthError::InvalidToken("algorithm not accepted"))
    );

    // Garbage in each part.
    let garbage = [
        "a.b.c".to_owned(),
        "....".to_owned(),
        format!("{}.e30.", parts[0]),
        format!("{}.!!.{}", parts[0], parts[2]),
        format!("{}.{}.", parts[0], parts[1]),
    ];
    for bad in &garbage {
        assert!(v.verify(bad).await.is_err(), "{bad}");
    }
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let [a, b] = rsa_keys();
    let server = JwksServer::start(StatusCode::OK, jwks(&[rsa_jwk(a, "RS256")])).await;
    // Long enough that the whole flood falls inside one interval even on a
    // loaded machine.
    let v = Arc::new(verifier(&server.url, Duration::from_secs(1)));
    v.verify(&rsa_token(a, &claims("a", json!([]))))
        .await
        .expect("first fetch");
    assert_eq!(server.hits(), 1);

    // A flood of made-up kids, concurrently: at most one more fetch.
    let mut flood = Vec::new();
    for i in 0..50 {
        let v = v.clone();
        let token = rsa_token_as(
            a,
            &format!("made-up-{i}"),
            "RS256",
            &RSA_PKCS1_SHA256,
            &claims("m", json!([])),
        );
        flood.push(tokio::spawn(async move { v.verify(&token).await }));
    }
    for task in flood {
        assert_eq!(
            task.await.expect("joins"),
            Err(AuthError::InvalidToken("unknown signing key"))
        );
    }
    assert!(server.hits() <= 2, "{} fetches", server.hits());

    // The provider rotates in key b: its first token within the interval
    // may still fail; once the interval passes it is fetched and works.
    server.set(
        StatusCode::OK,
        jwks(&[rsa_jwk(a, "RS256"), rsa_jwk(b, "RS256")]),
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let before = server.hits();
    v.verify(&rsa_token(b, &claims("b", json!([]))))
        .await
        .expect("refetched at once");
    assert_eq!(server.hits(), before + 1);
    // Known kids never fetch.
    v.verify(&rsa_token(a, &claims("a", json!([]))))
        .await
        .expect("known");
    assert_eq!(server.hits(), before + 1);
}

#[tokio::test]
async fn keys_not_yet_available_until_the_first_good_fetch() {
    let server = JwksServer::start(StatusCode::SERVICE_UNAVAILABLE, "down".to_owned()).await;
    let v = verifier(&server.url, Duration::from_millis(100));
    let [a, _] = rsa_keys();
    let token = rsa_token(a, &claims("a", json!([])));
    assert_eq!(v.verify(&token).await, Err(AuthError::KeysUnavailable));
    assert!(!v.has_keys());
    assert_eq!(
        AuthError::KeysUnavailable.to_string(),
        "signing keys not yet available; retry shortly"
    );
    // Within the interval: no new fetch, same answer.
    assert_eq!(v.verify(&token).await, Err(AuthError::KeysUnavailable));
    assert_eq!(server.hits(), 1);

    server.set(StatusCode::OK, all_jwks());
    tokio::time::sleep(Duration::from_millis(150)).await;
    v.verify(&token).await.expect("keys arrived");
}

#[tokio::test]
async fn an_unreachable_jwks_endpoint_is_keys_not_yet_available() {
    // A port that was just free: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    drop(listener);
    let v = verifier(&url, Duration::from_millis(100));
    let [a, _] = rsa_keys();
    assert_eq!(
        v.verify(&rsa_token(a, &claims("a", json!([])))).await,
        Err(AuthError::KeysUnavailable)
    );
}

#[tokio::test]
async fn failed_refreshes_keep_the_last_good_keys() {
    let [a, b] = rsa_keys();
    let server = JwksServer::start(StatusCode::OK, jwks(&[rsa_jwk(a, "RS256")])).await;
    let v = verifier(&server.url, Duration::from_millis(10));
    assert!(v.refresh().await);
    let token = rsa_token(a, &claims("a", json!([])));

    for (status, body) in [
        (StatusCode::OK, "garbage, not JSON".to_owned()),
        (StatusCode::OK, json!({ "keys": "no" }).to_string()),
        (StatusCode::OK, jwks(&[])),
        // Only key kinds we must not use: a symmetric key, an encryption key.
        (
            StatusCode::OK,
            jwks(
                &[json!({ "kty": "oct", "kid": "rsa-1", "k": "c2VjcmV0" }), {
                    let mut enc = rsa_jwk(b, "RS256");
                    enc["use"] = json!("enc");
                    enc
                }],
            ),
        ),
        (StatusCode::INTERNAL_SERVER_ERROR, all_jwks()),
    ] {
        server.set(status, body);
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert!(!v.refresh().await, "a bad answer is not installed");
        v.verify(&token).await.expect("the last good keys stay");
    }

    // One odd entry does not cost the good ones.
    server.set(
        StatusCode::OK,
        jwks(&[json!({ "kty": "weird" }), rsa_jwk(b, "RS256")]),
    );
    tokio::time::sleep(Duration::from_millis(15)).await;
    assert!(v.refresh().await);
    v.verify(&rsa_token(b, &claims("b", json!([]))))
        .await
        .expect("b");
    assert_eq!(
        v.verify(&token).await,
        Err(AuthError::InvalidToken("unknown signing key")),
        "a good refresh replaces the set"
    );
}

#[tokio::test]
async fn the_refresh_task_fetches_at_start_and_on_its_interval() {
    let [a, b] = rsa_keys();
    let server = JwksServer::start(StatusCode::OK, jwks(&[rsa_jwk(a, "RS256")])).await;
    let v = Arc::new(
        JwtVerifier::from_settings(&jwt_settings(&server.url))
            .expect("builds")
            .with_refresh_intervals(Duration::from_millis(100), Duration::from_millis(10)),
    );
    let task = v.spawn_refresh();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !v.has_keys() {
        assert!(std::time::Instant::now() < deadline, "no first fetch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.set(StatusCode::OK, jwks(&[rsa_jwk(b, "RS256")]));
    while server.hits() < 3 {
        assert!(std::time::Instant::now() < deadline, "no refresh");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    let hits = server.hits();
    // Served from the refreshed set, without a fetch of its own.
    v.verify(&rsa_token(b, &claims("b", json!([]))))
        .await
        .expect("b");
    assert_eq!(server.hits(), hits);
}

// ---------------------------------------------------------------- headers

fn accounts() -> Vec<AccountSettings> {
    [("111122223333", "platform"), ("444455556666", "payments")]
        .iter()
        .map(|(id, alias)| AccountSettings {
            id: (*id).to_owned(),
            alias: (*alias).to_owned(),
            role_arn: None,
            external_id: None,
            session_name: None,
            session_duration_secs: None,
            profile: None,
            terminate_role_arn: None,
            regions: vec!["us-east-1".to_owned()],
        })
        .collect()
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const ADMIN_KEY: &str = "demo-admin";
const PLATFORM_KEY: &str = "demo-platform";

fn api_keys() -> Arc<ApiKeys> {
    let key = |name: &str, secret: &str, accounts: &str, scopes: &[Scope]| ApiKeySettings {
        name: name.to_owned(),
        sha256: vec![sha256_hex(secret)],
        grants: vec![GrantSettings {
            accounts: vec![accounts.to_owned()],
            scopes: scopes.to_vec(),
        }],
        expires: None,
    };
    let auth = AuthSettings {
        api_keys: vec![
            key(
                "demo-admin",
                ADMIN_KEY,
                "*",
                &[Scope::SessionsRead, Scope::SessionsTerminate],
            ),
            key(
                "demo-platform",
                PLATFORM_KEY,
                "platform",
                &[Scope::SessionsRead],
            ),
        ],
        ..AuthSettings::default()
    };
    Arc::new(ApiKeys::load(&auth, &accounts()).expect("valid"))
}

/// A JWT source that is never reachable: JWT-shaped tokens go to it, and
/// nothing leaves the process.
struct Unreachable;

#[async_trait::async_trait]
impl JwksSource for Unreachable {
    async fn fetch(&self) -> anyhow::Result<axum::body::Bytes> {
        anyhow::bail!("unreachable")
    }
}

fn authenticator(anonymous: Option<Grants>, jwt: bool) -> Authenticator {
    let jwt = jwt.then(|| {
        Arc::new(JwtVerifier::new(
            &jwt_settings("http://127.0.0.1:9/"),
            Arc::new(Unreachable),
        ))
    });
    Authenticator::new(api_keys(), jwt, anonymous)
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).expect("valid header")
}

#[tokio::test]
async fn api_keys_authenticate_through_the_header() {
    let auth = authenticator(None, true);
    for value in [
        "Bearer demo-admin",
        "bearer demo-admin",
        "BEARER   demo-admin  ",
        "\tBearer\tdemo-admin",
    ] {
        let p = auth.authenticate(Some(&header(value))).await.expect(value);
        assert_eq!(p.name(), "demo-admin", "{value}");
    }
    let p = auth
        .authenticate(Some(&header("Bearer demo-platform")))
        .await
        .expect("platform");
    assert!(p.can(Scope::SessionsRead, "111122223333", "platform"));
    assert!(!p.can(Scope::SessionsRead, "444455556666", "payments"));
    let p = auth
        .authenticate_token(ADMIN_KEY)
        .await
        .expect("bare token");
    assert_eq!(p.kind(), PrincipalKind::ApiKey);
}

#[tokio::test]
async fn bad_headers_are_refused_with_safe_reasons() {
    let auth = authenticator(None, true);
    let cases: Vec<(HeaderValue, AuthError)> = vec![
        (header(""), AuthError::Missing),
        (header("   "), AuthError::Missing),
        (header("Basic ZGVtbzpkZW1v"), AuthError::NotBearer),
        (header("Token demo-admin"), AuthError::NotBearer),
        (header("demo-admin"), AuthError::NotBearer),
        (header("Bearer"), AuthError::Malformed),
        (header("Bearer    "), AuthError::Malformed),
        (header("Bearer demo admin"), AuthError::Malformed),
        (header("Bearer demo-admin2"), AuthError::UnknownKey),
        (header("Bearer DEMO-ADMIN"), AuthError::UnknownKey),
        (
            header(&format!("Bearer {}", "a".repeat(100 * 1024))),
            AuthError::TooLarge,
        ),
        (
            HeaderValue::from_bytes(b"Bearer demo-\xff\xfeadmin").expect("obs-text is allowed"),
            AuthError::Malformed,
        ),
        (
            HeaderValue::from_bytes("Bearer démo".as_bytes()).expect("UTF-8 bytes"),
            AuthError::Malformed,
        ),
        // JWT-shaped: garbage, then a well-formed one while the JWKS is
        // unreachable.
        (
            header("Bearer aaa.bbb.ccc"),
            AuthError::InvalidToken("malformed"),
        ),
        (
            header(&format!(
                "Bearer {}.e30.c2ln",
                B64.encode(r#"{"alg":"RS256","kid":"k"}"#)
            )),
            AuthError::KeysUnavailable,
        ),
    ];
    for (value, expected) in cases {
        let got = auth.authenticate(Some(&value)).await;
        assert_eq!(got, Err(expected.clone()), "{value:?}");
        let message = expected.to_string();
        assert!(!message.contains("demo"), "{message}");
        assert_eq!(expected.code(), "UNAUTHENTICATED");
    }
    assert_eq!(auth.authenticate(None).await, Err(AuthError::Missing));
    assert_eq!(
        auth.authenticate_token(&"k".repeat(MAX_HEADER_BYTES + 1))
            .await,
        Err(AuthError::TooLarge)
    );
}

#[tokio::test]
async fn anonymous_applies_only_without_credentials() {
    let grants = principal::to_grants(&[GrantSettings {
        accounts: vec!["platform".to_owned()],
        scopes: vec![Scope::SessionsRead],
    }]);
    let auth = authenticator(Some(grants), false);
    for value in [None, Some(header("")), Some(header(" "))] {
        let p = auth.authenticate(value.as_ref()).await.expect("anonymous");
        assert_eq!(p.kind(), PrincipalKind::Anonymous);
        assert!(p.can(Scope::SessionsRead, "111122223333", "platform"));
        assert!(!p.can(Scope::SessionsRead, "444455556666", "payments"));
    }
    // Bad credentials are refused, never downgraded to anonymous.
    assert_eq!(
        auth.authenticate(Some(&header("Bearer wrong"))).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(
        auth.authenticate(Some(&header("Basic eDp5"))).await,
        Err(AuthError::NotBearer)
    );
}

#[tokio::test]
async fn without_jwt_a_jwt_shaped_token_is_just_an_unknown_key() {
    let auth = authenticator(None, false);
    assert_eq!(
        auth.authenticate(Some(&header("Bearer aaa.bbb.ccc"))).await,
        Err(AuthError::UnknownKey)
    );
}

#[tokio::test]
async fn from_settings_builds_keys_and_jwt() {
    let server = JwksServer::start(StatusCode::OK, all_jwks()).await;
    let mut settings = crate::settings::Settings {
        accounts: accounts(),
        ..crate::settings::Settings::default()
    };
    settings.auth = AuthSettings {
        api_keys: vec![ApiKeySettings {
            name: "k".to_owned(),
            sha256: vec![sha256_hex("the-key")],
            grants: vec![GrantSettings {
                accounts: vec!["*".to_owned()],
                scopes: vec![Scope::SessionsRead],
            }],
            expires: None,
        }],
        jwt: Some(jwt_settings(&server.url)),
        ..AuthSettings::default()
    };
    settings.validate().unwrap_or_else(|e| panic!("{e}"));
    let auth = Authenticator::from_settings(&settings).expect("builds");
    let tasks = auth.start().expect("starts");
    auth.authenticate(Some(&header("Bearer the-key")))
        .await
        .expect("key");
    let [a, _] = rsa_keys();
    let token = rsa_token(a, &claims("alice", json!(["sre"])));
    let p = auth
        .authenticate(Some(&header(&format!("Bearer {token}"))))
        .await
        .expect("jwt");
    assert_eq!(p.to_string(), "jwt:alice");
    drop(tasks);
}

#[test]
fn jwt_detection() {
    assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
    assert!(looks_like_jwt("a-_.b.c"));
    for not in [
        "a.b",
        "a.b.c.d",
        "a..c",
        ".b.c",
        "a.b.",
        "a.b+.c",
        "a.b.c=",
        "demo-admin",
    ] {
        assert!(!looks_like_jwt(not), "{not}");
    }
}

// ---------------------------------------------------------------- properties

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Random header bytes never panic and never authenticate (anonymous
    /// access off; JWT on, with an unreachable JWKS).
    #[test]
    fn random_headers_never_authenticate(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else {
            return Ok(());
        };
        let result = runtime().block_on(shared_authenticator().authenticate(Some(&value)));
        proptest::prop_assert!(result.is_err(), "{:?} authenticated", value);
    }

    /// The same behind `Bearer `, where the token reaches the key lookup
    /// and the JWT parser.
    #[test]
    fn random_bearer_tokens_never_authenticate(token in "[ -~]{0,200}|[a-zA-Z0-9_-]{1,40}\\.[a-zA-Z0-9_-]{1,80}\\.[a-zA-Z0-9_-]{0,40}") {
        let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return Ok(());
        };
        let result = runtime().block_on(shared_authenticator().authenticate(Some(&value)));
        proptest::prop_assert!(result.is_err(), "{:?} authenticated", token);
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // Multi-threaded: proptest's tests call block_on from several threads.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn shared_authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| authenticator(None, true))
}
