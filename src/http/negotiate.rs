//! Content negotiation: which response media type a client's `Accept`
//! prefers (q-values honoured, RFC 9110 §12.5.1), and whether it asks for
//! an HTML page. The header is parsed by the `mediatype` crate.

use axum::http::{HeaderMap, header};
use mediatype::names::{_STAR, HTML, Q, TEXT};
use mediatype::{MediaType as Parsed, MediaTypeList, ReadParams as _};

/// A response media type the gateway can answer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: status codes tell request errors apart.
    GraphQlResponse,
    /// `application/json`: always 200 for a well-formed request.
    Json,
}

impl MediaType {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::GraphQlResponse => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        }
    }

    /// Type, subtype and suffix of this media type.
    fn parts(self) -> (&'static str, &'static str, Option<&'static str>) {
        match self {
            Self::GraphQlResponse => ("application", "graphql-response", Some("json")),
            Self::Json => ("application", "json", None),
        }
    }
}

/// The media type to answer in: the acceptable one with the highest q-value,
/// then the one named more specifically; when both are named exactly with
/// the same q, `application/graphql-response+json`, and when both are only
/// matched by wildcards (`*/*`, as curl sends), `application/json`, the
/// legacy default. `None` when neither is acceptable (406). No `Accept` (or
/// an empty one) means `application/json`. Ranges that do not parse are
/// ignored.
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let Some(accept) = accept(headers) else {
        return Some(MediaType::Json);
    };
    if accept.trim().is_empty() {
        return Some(MediaType::Json);
    }
    let ranges = ranges(accept);
    let gql = quality(&ranges, MediaType::GraphQlResponse.parts());
    let json = quality(&ranges, MediaType::Json.parts());
    if gql.0 == 0 && json.0 == 0 {
        None
    } else if gql > json || (gql == json && gql.1 == EXACT) {
        Some(MediaType::GraphQlResponse)
    } else {
        Some(MediaType::Json)
    }
}

/// Whether the client names `text/html` itself with a q-value above 0 (a
/// browser loading the page); `*/*` alone does not count, or every curl
/// would get GraphiQL.
pub fn accepts_html(headers: &HeaderMap) -> bool {
    let Some(accept) = accept(headers) else {
        return false;
    };
    ranges(accept)
        .iter()
        .any(|(range, q)| *q > 0 && range.ty == TEXT && range.subty == HTML)
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

/// The parsed ranges of `accept`, each with its q-value in thousandths.
fn ranges(accept: &str) -> Vec<(Parsed<'_>, u16)> {
    MediaTypeList::new(accept)
        .filter_map(Result::ok)
        .map(|range| {
            let q = range
                .get_param(Q)
                .map_or(Some(1000), |v| parse_q(v.as_str()))
                // A malformed q-value: the range is not usable.
                .unwrap_or(0);
            (range, q)
        })
        .collect()
}

/// How specifically a range named a media type: exactly (the most).
const EXACT: u8 = 3;

/// The q-value (in thousandths; 0 when no range matches) of the most
/// specific range matching `parts` (exact, then `type/*`, then `*/*`), and
/// that specificity.
fn quality(ranges: &[(Parsed<'_>, u16)], parts: (&str, &str, Option<&str>)) -> (u16, u8) {
    let (ty, subty, suffix) = parts;
    let mut best: Option<(u8, u16)> = None;
    for (range, q) in ranges {
        let specificity = if range.ty == ty
            && range.subty == subty
            && range.suffix.as_ref().map(|s| s.as_str()) == suffix
        {
            EXACT
        } else if range.ty == ty && range.subty == _STAR {
            2
        } else if range.ty == _STAR && range.subty == _STAR {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, *q));
        }
    }
    best.map_or((0, 0), |(specificity, q)| (q, specificity))
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
fn parse_q(raw: &str) -> Option<u16> {
    let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation_follows_the_spec() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json));
        assert_eq!(negotiate(&accept("")), Some(MediaType::Json));
        assert_eq!(negotiate(&accept("*/*")), Some(MediaType::Json));
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(MediaType::GraphQlResponse)
        );
        assert_eq!(
            negotiate(&accept("application/json")),
            Some(MediaType::Json)
        );
        assert_eq!(negotiate(&accept("text/plain")), None);
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=0, application/json"
            )),
            Some(MediaType::Json)
        );
    }

    #[test]
    fn q_values_decide() {
        assert_eq!(
            negotiate(&accept(
                "application/json;q=1, application/graphql-response+json;q=0.1"
            )),
            Some(MediaType::Json)
        );
        assert_eq!(
            negotiate(&accept("application/*;q=0.5, application/json;q=0.2")),
            Some(MediaType::GraphQlResponse)
        );
        // The most specific range wins, even when a wider one says more.
        assert_eq!(
            negotiate(&accept("*/*;q=1, application/graphql-response+json;q=0")),
            Some(MediaType::Json)
        );
        assert_eq!(
            negotiate(&accept("application/json;q=0, */*;q=0.3")),
            Some(MediaType::GraphQlResponse)
        );
        assert_eq!(
            negotiate(&accept(
                "application/json;q=0, application/graphql-response+json;q=0.000"
            )),
            None
        );
        // Malformed q-values make a range unusable; malformed ranges are skipped.
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=2, application/json"
            )),
            Some(MediaType::Json)
        );
        assert_eq!(
            negotiate(&accept("garbage, application/json;q=0.5")),
            Some(MediaType::Json)
        );
    }

    #[test]
    fn html_must_be_asked_for() {
        assert!(accepts_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!accepts_html(&accept("text/html;q=0")));
        assert!(!accepts_html(&accept("text/html;q=0, application/json")));
        assert!(!accepts_html(&accept("*/*")));
        assert!(!accepts_html(&HeaderMap::new()));
    }

    #[test]
    fn q_values_parse_as_the_rfc_writes_them() {
        for (raw, q) in [
            ("0", 0),
            ("0.5", 500),
            ("0.125", 125),
            ("1", 1000),
            ("1.000", 1000),
        ] {
            assert_eq!(parse_q(raw), Some(q), "{raw}");
        }
        for bad in ["", "2", "1.5", "0.1234", "-0", "x", "0.x"] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
    }
}
