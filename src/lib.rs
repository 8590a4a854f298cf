//! ssm-session-gateway: a GraphQL gateway over AWS Systems Manager Session
//! Manager sessions, across many accounts and regions.
//!
//! A request travels HTTP → GraphQL → sessions service → pager and cursors →
//! page cache → upstream trait → aws-sdk-ssm → SSM. `ARCHITECTURE.md` draws
//! the path. Imports flow one way, down that path: a test
//! (`tests/it/architecture.rs`) fails on any import cycle between modules.
//!
//! # Layout
//! - [`app`]: the composition root; builds the whole gateway from settings,
//!   and serves it until a graceful, visible shutdown.
//! - `admin`: the admin listener: `/livez`, `/readyz`, `/metrics`.
//! - `http`: axum routes: GraphQL over HTTP (POST and GET) and over
//!   WebSocket (subscriptions), content negotiation, the response cache,
//!   GraphiQL, `/healthz`.
//! - `graphiql`: the GraphiQL page and its compiled-in assets (no CDN).
//! - [`graphql`]: the schema, thin resolvers, error codes on every error.
//! - [`auth`]: who is calling (API keys, JWTs, anonymous), which accounts
//!   and scopes they are granted, and the identity the response cache keys on.
//! - `sessions`: the sessions service: argument limits, routing, cursor
//!   fingerprints, windows, single-session lookups, and terminating one.
//! - `live`: the subscription hub: one poller per watched (account, region),
//!   diffing its Active list and fanning events out to subscribers.
//! - `error`: `ApiError` and its stable codes; which error type to use where.
//! - `paging`: reads a forward window of sessions across upstream pages,
//!   knowing where to resume after each one.
//! - `cursor`: opaque, signed, versioned cursors that carry those positions.
//! - [`accounts`]: the configured accounts, their credentials (STS
//!   AssumeRole) and one SSM client per (account, region), picked per request.
//! - `nodes`: the managed node behind each session's target, batched per
//!   (account, region) through DataLoader and cached.
//! - `cache`: the page cache (TTLs, single-flight, stale-if-error) in front
//!   of every source, and what a request's data is worth (`Freshness`).
//! - [`upstream`]: the `SessionSource` and `NodeSource` traits every AWS
//!   call goes through, and their `aws-sdk-ssm` implementation.
//! - [`shared`]: what replicas share through Redis (`[redis]`): the
//!   second cache level, single-flight leases, the upstream rate limit,
//!   live snapshots and invalidations; never a single point of failure.
//! - [`model`]: sessions, filters and ids as the gateway understands them.
//! - `instruments`: the metrics (names, labels, one recorder per
//!   application), rendered by the admin listener's `/metrics`.
//! - [`settings`]: typed settings and the `Secret` wrapper.
//! - [`telemetry`]: logs (text or JSON lines) and OpenTelemetry traces.
//! - [`demo`] (feature `demo`): the gateway over the `ssm-emulator` crate, in
//!   one process.
//!
//! Modules are private unless the binary or the integration tests need them.

pub mod accounts;
mod admin;
pub mod app;
pub mod auth;
mod cache;
mod cursor;
#[cfg(feature = "demo")]
pub mod demo;
mod error;
mod escape;
mod graphiql;
pub mod graphql;
mod http;
mod instruments;
mod live;
pub mod model;
mod nodes;
mod paging;
pub mod rlimit;
mod sessions;
pub mod settings;
pub mod shared;
pub mod telemetry;
pub mod upstream;
