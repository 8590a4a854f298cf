//! GraphiQL, served from the binary: the page a browser gets at
//! `GET /graphql`, and its scripts and styles under `/graphiql/assets/`.
//!
//! Nothing is fetched from anywhere else. GraphiQL 4.1 and React 18 (their
//! UMD production bundles, pinned with integrity hashes in
//! `assets/graphiql/package-lock.json` and vendored beside it with their
//! licences; `assets/graphiql/update.sh` refreshes them) are compiled in,
//! with the page's own `start.js` and `page.css` from `src/graphiql/`.
//!
//! Invariants:
//! - an asset's URL names its content (`graphiql-<12 hex of SHA-256>.js`),
//!   so it is served `immutable` for a year with a strong ETag, and a build
//!   with other bytes has other URLs; the page itself is `no-cache` and
//!   revalidates by ETag;
//! - the page has no inline script: its configuration (endpoint,
//!   subscription URL, default headers) travels in a non-executed
//!   `<script type="application/json">` block that `start.js` reads, so the
//!   Content-Security-Policy allows scripts from `'self'` only, never
//!   `unsafe-inline` or `unsafe-eval`;
//! - every URL on the page is same-origin (`data:` for GraphiQL's fonts and
//!   images), and the policy says so: `default-src 'self'`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// Where the assets are served; an asset's URL is this plus its file name.
pub const ASSETS_PATH: &str = "/graphiql/assets";

/// `Cache-Control` of a content-named asset: its bytes never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// What the GraphiQL page starts with, set by whoever assembles the gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphiqlOptions {
    /// Headers pre-filled in GraphiQL's headers editor (the demo's
    /// `Authorization`, say), which then opens on them. Empty: the editor
    /// starts empty. Never persisted in the browser's storage.
    pub default_headers: BTreeMap<String, String>,
    /// The WebSocket URL of subscriptions (`ws://…` or `wss://…`), once the
    /// gateway serves them; `None` until then. An absolute URL is added to
    /// the page's `connect-src`.
    pub subscription_endpoint: Option<String>,
}

/// The GraphiQL page for one endpoint, rendered once.
#[derive(Clone, Debug)]
pub struct Graphiql {
    html: Bytes,
    etag: HeaderValue,
    csp: HeaderValue,
}

impl Graphiql {
    /// Renders the page for the GraphQL endpoint at `endpoint` (a path on
    /// this origin, such as `/graphql`).
    pub fn new(endpoint: &str, options: &GraphiqlOptions) -> Self {
        let html = Bytes::from(render_page(endpoint, options));
        let etag = etag_of(&Sha256::digest(&html));
        let csp = HeaderValue::from_str(&content_security_policy(options))
            .unwrap_or_else(|_| HeaderValue::from_static(BASE_POLICY));
        Self { html, etag, csp }
    }

    /// The page as a response to a request with `headers`: 200, or 304 when
    /// `If-None-Match` names the page's ETag.
    pub fn page(&self, headers: &HeaderMap) -> Response {
        let mut response = if etag_matches(headers, &self.etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = self.html.clone().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        };
        let h = response.headers_mut();
        h.insert(header::ETAG, self.etag.clone());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // The same URL answers JSON to other clients.
        h.insert(header::VARY, HeaderValue::from_static("accept"));
        h.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }
}

/// The asset routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(&format!("{ASSETS_PATH}/{{file}}"), get(asset))
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.all().into_iter().find(|a| a.file == file) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let mut response = if etag_matches(&headers, &asset.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Bytes::from_static(asset.body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, asset.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether `If-None-Match` names `etag` (or is `*`). The comparison is weak,
/// as RFC 9110 asks for this header: `W/"x"` matches `"x"`.
fn etag_matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}

/// A strong ETag from a SHA-256 digest: its first 16 bytes in hex.
fn etag_of(digest: &[u8]) -> HeaderValue {
    let tag = format!("\"{}\"", hex(&digest[..16]));
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One compiled-in file, named by its content.
#[derive(Debug)]
struct Asset {
    /// `<stem>-<12 hex of SHA-256>.<extension>`: the last part of its URL.
    file: String,
    content_type: &'static str,
    body: &'static [u8],
    etag: HeaderValue,
}

impl Asset {
    fn new(stem: &str, extension: &str, content_type: &'static str, body: &'static [u8]) -> Self {
        let digest = Sha256::digest(body);
        Self {
            file: format!("{stem}-{}.{extension}", hex(&digest[..6])),
            content_type,
            body,
            etag: etag_of(&digest),
        }
    }

    fn url(&self) -> String {
        format!("{ASSETS_PATH}/{}", self.file)
    }
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the page loads, hashed once on first use.
struct Assets {
    react: Asset,
    react_dom: Asset,
    graphiql_js: Asset,
    graphiql_css: Asset,
    start_js: Asset,
    page_css: Asset,
    licenses: Asset,
}

impl Assets {
    fn all(&self) -> [&Asset; 7] {
        [
            &self.react,
            &self.react_dom,
            &self.graphiql_js,
            &self.graphiql_css,
            &self.start_js,
            &self.page_css,
            &self.licenses,
        ]
    }
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    react: Asset::new(
        "react",
        "js",
        JS,
        include_bytes!("../assets/graphiql/react.production.min.js"),
    ),
    react_dom: Asset::new(
        "react-dom",
        "js",
        JS,
        include_bytes!("../assets/graphiql/react-dom.production.min.js"),
    ),
    graphiql_js: Asset::new(
        "graphiql",
        "js",
        JS,
        include_bytes!("../assets/graphiql/graphiql.min.js"),
    ),
    graphiql_css: Asset::new(
        "graphiql",
        "css",
        CSS,
        include_bytes!("../assets/graphiql/graphiql.min.css"),
    ),
    start_js: Asset::new("start", "js", JS, include_bytes!("graphiql/start.js")),
    page_css: Asset::new("page", "css", CSS, include_bytes!("graphiql/page.css")),
    licenses: Asset::new(
        "licenses",
        "txt",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/graphiql/THIRD-PARTY-LICENSES.txt"),
    ),
});

/// The policy of the page, less any subscription endpoint. GraphiQL needs
/// `data:` for its fonts and images (inlined in its CSS), and its dialogs
/// inject `<style>` elements (Radix's scroll lock), so `style-src-elem`
/// allows inline elements; style *attributes* stay forbidden (`style-src
/// 'self'`: GraphiQL and React set styles through the CSSOM, which CSP does
/// not govern). `tests/it/graphiql.rs` proves in Chromium that the page runs
/// under it without a violation.
const BASE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     style-src-elem 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// [`BASE_POLICY`], with an absolute subscription endpoint added to
/// `connect-src` (`'self'` already covers `ws:`/`wss:` of this origin).
fn content_security_policy(options: &GraphiqlOptions) -> String {
    let extra = options.subscription_endpoint.as_deref().filter(|url| {
        (url.starts_with("ws://") || url.starts_with("wss://"))
            && !url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ';' | ',' | '\''))
    });
    match extra {
        Some(url) => {
            BASE_POLICY.replace("connect-src 'self'", &format!("connect-src 'self' {url}"))
        }
        None => BASE_POLICY.to_owned(),
    }
}

/// The configuration `start.js` reads, as JSON safe inside a `<script>`
/// element: `<`, `>` and `&` are escaped, so no value can close it.
fn page_config(endpoint: &str, options: &GraphiqlOptions) -> String {
    let config = serde_json::json!({
        "endpoint": endpoint,
        "subscriptionEndpoint": options.subscription_endpoint,
        "defaultHeaders": options.default_headers,
    });
    config
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn render_page(endpoint: &str, options: &GraphiqlOptions) -> String {
    let a = &*ASSETS;
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ssm-session-gateway · GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="license" href="{licenses}">
<link rel="stylesheet" href="{graphiql_css}">
<link rel="stylesheet" href="{page_css}">
<script type="application/json" id="graphiql-config">{config}</script>
<script src="{react}" defer></script>
<script src="{react_dom}" defer></script>
<script src="{graphiql_js}" defer></script>
<script src="{start_js}" defer></script>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
</body>
</html>
"#,
        licenses = a.licenses.url(),
        graphiql_css = a.graphiql_css.url(),
        page_css = a.page_css.url(),
        config = page_config(endpoint, options),
        react = a.react.url(),
        react_dom = a.react_dom.url(),
        graphiql_js = a.graphiql_js.url(),
        start_js = a.start_js.url(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn html(options: &GraphiqlOptions) -> String {
        render_page("/graphql", options)
    }

    #[test]
    fn asset_names_carry_their_content_hash() {
        let names: Vec<&str> = ASSETS.all().iter().map(|a| a.file.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for asset in ASSETS.all() {
            let digest = Sha256::digest(asset.body);
            assert!(asset.file.contains(&hex(&digest[..6])), "{}", asset.file);
        }
    }

    #[test]
    fn the_page_names_only_same_origin_urls_and_runs_no_inline_script() {
        let page = html(&GraphiqlOptions::default());
        assert!(!page.contains("://"), "{page}");
        for asset in ASSETS.all() {
            assert!(page.contains(&asset.url()), "{} missing", asset.file);
        }
        // Every <script> either has a src or is the JSON block.
        for tag in page.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap();
            assert!(
                open.contains(" src=\"/") || open.contains("type=\"application/json\""),
                "{open}"
            );
        }
    }

    #[test]
    fn default_headers_cannot_break_out_of_the_config_block() {
        let options = GraphiqlOptions {
            default_headers: [("Authorization".to_owned(), "</script><b>&".to_owned())].into(),
            subscription_endpoint: None,
        };
        let page = html(&options);
        assert_eq!(page.matches("</script>").count(), 5, "{page}");
        let config = page_config("/graphql", &options);
        let parsed: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(parsed["defaultHeaders"]["Authorization"], "</script><b>&");
        assert_eq!(parsed["subscriptionEndpoint"], serde_json::Value::Null);
    }

    #[test]
    fn the_policy_allows_no_eval_nor_inline_script() {
        let policy = content_security_policy(&GraphiqlOptions::default());
        assert!(!policy.contains("unsafe-eval"));
        assert!(policy.contains("script-src 'self';"));
        assert!(
            policy.contains("style-src 'self';"),
            "no inline style attributes"
        );
        assert!(policy.contains("default-src 'self';"));
        assert!(policy.contains("frame-ancestors 'none'"));

        let with_ws = |url: &str| {
            content_security_policy(&GraphiqlOptions {
                subscription_endpoint: Some(url.to_owned()),
                ..GraphiqlOptions::default()
            })
        };
        assert!(
            with_ws("wss://gw.example/graphql/ws")
                .contains("connect-src 'self' wss://gw.example/graphql/ws;")
        );
        // Anything that could add a directive is left out.
        assert_eq!(with_ws("wss://x; script-src *"), policy);
        assert_eq!(with_ws("/relative"), policy);
    }

    #[test]
    fn if_none_match_is_compared_weakly() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            etag_matches(&h, &etag)
        };
        assert!(with("\"abc\""));
        assert!(with("\"x\", W/\"abc\""));
        assert!(with("*"));
        assert!(!with("\"abcd\""));
        assert!(!etag_matches(&HeaderMap::new(), &etag));
    }
}
