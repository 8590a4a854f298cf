//! Trace and span ids for JSON log lines when no span is exported.
//!
//! Exporting, the OpenTelemetry layer gives every span its ids and the log
//! line reads them from the OpenTelemetry context. Not exporting, that layer
//! would still build each span's OpenTelemetry data (attributes, timings,
//! links) only to drop it: most of what observability cost a request. So
//! then [`TraceIds`] is installed instead, and only gives the gateway's
//! spans ids the way the OpenTelemetry layer would: a child shares its
//! parent's trace, a root starts a new trace unless [`follow_caller`] names
//! the caller's (a W3C `traceparent`), and every span gets a random id.

use opentelemetry::trace::TraceContextExt as _;
#[cfg(test)]
use opentelemetry::trace::TraceId;
use tracing::span::{Attributes, Id};
use tracing::{Span, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A span's ids, kept in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub trace: [u8; 16],
    pub span: [u8; 8],
}

/// Gives the gateway's spans [`Ids`].
pub struct TraceIds;

/// Whether spans of `target` get ids (as the OpenTelemetry layer followed
/// only the gateway's own spans when not exporting).
fn followed(target: &str) -> bool {
    target.starts_with("ssm_session_gateway")
}

impl<S> Layer<S> for TraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !followed(attrs.metadata().target()) {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        let inherited = span
            .scope()
            .skip(1)
            .find_map(|parent| parent.extensions().get::<Ids>().map(|ids| ids.trace));
        let ids = Ids {
            trace: inherited.unwrap_or_else(|| nonzero(rand::random)),
            span: nonzero(rand::random),
        };
        span.extensions_mut().insert(ids);
    }
}

/// Random bytes that are not all zero (an all-zero id is invalid in W3C
/// trace context).
fn nonzero<const N: usize>(random: impl Fn() -> [u8; N]) -> [u8; N] {
    loop {
        let bytes = random();
        if bytes.iter().any(|&b| b != 0) {
            return bytes;
        }
    }
}

/// Puts the root span `span` in the caller's trace `context` (extracted
/// from its `traceparent`): it and its children then carry the caller's
/// trace id. Nothing without [`TraceIds`], or when `context` has no valid
/// span.
pub fn follow_caller(span: &Span, context: &opentelemetry::Context) {
    let remote = context.span();
    let remote = remote.span_context();
    if !remote.is_valid() {
        return;
    }
    let trace = remote.trace_id().to_bytes();
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<Registry>()
            && let Some(span) = registry.span(id)
            && let Some(ids) = span.extensions_mut().get_mut::<Ids>()
        {
            ids.trace = trace;
        }
    });
}

/// The ids of the innermost span of `scope` that has them.
pub fn innermost<'a, R: LookupSpan<'a> + 'a>(
    scope: impl Iterator<Item = tracing_subscriber::registry::SpanRef<'a, R>>,
) -> Option<Ids> {
    scope
        .into_iter()
        .find_map(|span| span.extensions().get::<Ids>().copied())
}

/// `ids`' trace id as OpenTelemetry writes it.
#[cfg(test)]
fn trace_hex(ids: &Ids) -> String {
    TraceId::from_bytes(ids.trace).to_string()
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    fn ids_of(span: &Span) -> Option<Ids> {
        let mut out = None;
        span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>().unwrap();
            out = registry
                .span(id)
                .unwrap()
                .extensions()
                .get::<Ids>()
                .copied();
        });
        out
    }

    #[test]
    fn children_share_the_trace_and_roots_follow_their_caller() {
        let subscriber = tracing_subscriber::registry().with(TraceIds);
        tracing::subscriber::with_default(subscriber, || {
            let caller = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
            let context = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                caller,
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ));
            let root = tracing::info_span!("root");
            follow_caller(&root, &context);
            let child = root.in_scope(|| tracing::info_span!("child"));
            let (root_ids, child_ids) = (ids_of(&root).unwrap(), ids_of(&child).unwrap());
            assert_eq!(trace_hex(&root_ids), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(child_ids.trace, root_ids.trace);
            assert_ne!(child_ids.span, root_ids.span);

            // Without a caller: a new trace, shared by children too.
            let other = tracing::info_span!("other");
            follow_caller(&other, &opentelemetry::Context::new());
            let other_ids = ids_of(&other).unwrap();
            assert_ne!(other_ids.trace, root_ids.trace);
            assert_ne!(other_ids.trace, [0; 16]);
            let grandchild =
                other.in_scope(|| tracing::info_span!("a").in_scope(|| tracing::info_span!("b")));
            assert_eq!(ids_of(&grandchild).unwrap().trace, other_ids.trace);

            // Spans of other crates get none.
            let theirs = tracing::info_span!(target: "async_graphql::graphql", "field");
            assert_eq!(ids_of(&theirs), None);
        });
    }
}
