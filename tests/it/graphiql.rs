//! GraphiQL served from the binary: its page and assets over HTTP, and the
//! whole of it in a real browser (Debian's Chromium, driven by
//! `tests/browser/graphiql.mjs`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;

use ssm_session_gateway::settings::Settings;

use crate::support::{ADMIN, HttpAnswer, TestApp, dataset, emulator_config, spawn_app_with};

const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");

async fn app() -> TestApp {
    // As in the demo: GraphiQL opens with a key in its headers editor.
    let mut settings = Settings::default();
    settings.http.graphiql_default_headers = vec![("Authorization".to_owned(), ADMIN.to_owned())];
    spawn_app_with(emulator_config(dataset(41, 4, 20)), settings).await
}

fn header<'a>(answer: &'a HttpAnswer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The URLs a page's `src` and `href` attributes name.
fn linked_urls(html: &str) -> Vec<String> {
    regex::Regex::new(r#"(?:src|href)="([^"]*)""#)
        .unwrap()
        .captures_iter(html)
        .map(|c| c[1].to_owned())
        .collect()
}

#[tokio::test]
async fn graphiql_page_has_a_strict_policy_and_links_only_its_own_assets() {
    let app = app().await;
    let page = app.request(Method::GET, "/graphql", &[BROWSER], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type().starts_with("text/html"));
    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self';",
        "style-src 'self';",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert!(header(&page, "vary").contains("accept"));

    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let urls = linked_urls(&html);
    let assets: Vec<&String> = urls.iter().filter(|u| *u != "data:,").collect();
    assert_eq!(assets.len(), 7, "{urls:?}");
    for url in assets {
        assert!(url.starts_with("/graphiql/assets/"), "{url}");
        let asset = app.request(Method::GET, url, &[], "").await;
        assert_eq!(asset.status, StatusCode::OK, "{url}");
        assert!(!asset.body.is_empty(), "{url}");
        assert_eq!(
            header(&asset, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        let etag = header(&asset, "etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.len() > 10,
            "a strong ETag: {etag}"
        );
        if url.ends_with(".js") {
            assert!(asset.content_type().starts_with("text/javascript"), "{url}");
        }

        let again = app
            .request(Method::GET, url, &[("if-none-match", &etag)], "")
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{url}");
        assert!(again.body.is_empty());
        assert_eq!(header(&again, "etag"), etag);

        let other = app
            .request(Method::GET, url, &[("if-none-match", "\"other\"")], "")
            .await;
        assert_eq!(other.status, StatusCode::OK, "{url}");
    }

    // The page revalidates too.
    let etag = header(&page, "etag").to_owned();
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let again = app
        .request(
            Method::GET,
            "/graphql",
            &[BROWSER, ("if-none-match", &etag)],
            "",
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);

    let missing = app
        .request(
            Method::GET,
            "/graphiql/assets/graphiql-000000000000.js",
            &[],
            "",
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// The real browser, against a gateway over the emulator. It fails, never
/// skips, when node, the npm packages or Chromium are missing:
/// `bash tests/run.sh` installs them.
#[tokio::test]
async fn graphiql_runs_a_query_in_a_real_browser() {
    let app = app().await;
    let first = app
        .graphql(
            "{ sessions(state: HISTORY, first: 1) { nodes { sessionId } } }",
            json!({}),
        )
        .await;
    let session_id = first["data"]["sessions"]["nodes"][0]["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "tests/browser/node_modules is missing: run `npm ci` in tests/browser (bash tests/run.sh does)"
    );
    let url = format!("http://{}/graphql", app.addr);
    let mut command = Command::new("node");
    command
        .arg(root.join("tests/browser/graphiql.mjs"))
        .arg(&url)
        .arg(&session_id)
        .current_dir(root);
    let started = Instant::now();
    // Blocking, on its own thread: this test's runtime keeps serving the gateway.
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the browser test finishes within 120 s")
    .unwrap()
    .expect("node runs (install Node.js 20+; bash tests/run.sh needs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed ({}) after {:?}; screenshot: target/browser-failure.png\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status,
        started.elapsed(),
    );
    println!("browser test passed in {:?}\n{stdout}", started.elapsed());
}

/// GraphiQL's docs explorer introspects with the standard query, 15 fields
/// deep: the default depth limit lets it through.
#[tokio::test]
async fn graphiql_introspection_fits_the_default_depth_limit() {
    let app = app().await;
    let query = include_str!("../fixtures/introspection-query.graphql");
    let answer = app
        .graphql_answer(query, json!({}), &[("accept", "application/json")])
        .await
        .json();
    assert!(answer.get("errors").is_none(), "{answer}");
    let types = answer["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "SessionConnection"));
}
