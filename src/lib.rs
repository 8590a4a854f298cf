//! ssm-session-gateway: a GraphQL gateway over AWS Systems Manager Session
//! Manager sessions, and the SSM emulator it is demonstrated and tested with.
//!
//! A request travels HTTP → GraphQL → pager and cursor → upstream trait →
//! aws-sdk-ssm → SSM (or the emulator). `ARCHITECTURE.md` draws the path.
//!
//! # Layout
//! - [`accounts`]: the configured accounts, their credentials (STS AssumeRole)
//!   and one SSM client per (account, region).
//! - [`app`]: builds the gateway from settings and an upstream; binds, serves, stops.
//! - [`http`]: axum routes: GraphQL over HTTP (POST and GET), GraphiQL, `/healthz`.
//! - [`graphiql`]: the GraphiQL page and its compiled-in assets (no CDN).
//! - [`graphql`]: the schema, the `sessions` resolver, error codes.
//! - [`paging`]: reads a forward window of sessions across upstream pages,
//!   knowing where to resume after each one.
//! - [`cache`]: the page cache (TTLs, single-flight, stale-if-error) in front
//!   of every source.
//! - [`cursor`]: opaque, signed, versioned cursors that carry those positions.
//! - [`upstream`]: the `SessionSource` trait every AWS call goes through, and
//!   its `aws-sdk-ssm` implementation.
//! - [`nodes`]: the managed node behind each session's target, batched per
//!   (account, region) through DataLoader and cached.
//! - [`model`]: sessions, filters and ids as the gateway understands them.
//! - [`response_cache`]: whole responses of identical reads, per caller.
//! - [`settings`]: typed settings and the `Secret` wrapper.
//! - [`emulator`]: an SSM endpoint speaking the AWS JSON 1.1 protocol with
//!   seeded data, plus STS AssumeRole over AWS Query, SigV4-verified, for
//!   the demo and the tests.
//! - [`demo`]: the emulator and the gateway in one process.
//! - [`telemetry`]: logging set-up.

pub mod accounts;
pub mod app;
pub mod cache;
pub mod cursor;
pub mod demo;
pub mod emulator;
pub mod graphiql;
pub mod graphql;
pub mod http;
pub mod model;
pub mod nodes;
pub mod paging;
pub mod response_cache;
pub mod settings;
pub mod telemetry;
pub mod upstream;
