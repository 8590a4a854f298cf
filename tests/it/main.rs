//! One integration-test binary, so the crate and the AWS SDK link once.
//! Tests talk to the gateway over real HTTP, and the gateway (or the test)
//! talks to the emulator through the real aws-sdk-ssm.

// A failed unwrap is a failed test; the crate's lint is meant for library code.
#![allow(clippy::unwrap_used)]

mod architecture;
mod bench_replicas;
mod gateway_accounts;
mod gateway_apq;
mod gateway_auth;
mod gateway_cache;
mod gateway_compiled;
mod gateway_cost;
mod gateway_errors;
pub mod gateway_filters;
mod gateway_http;
mod gateway_live;
mod gateway_nodes;
mod gateway_paging;
mod gateway_rate;
mod gateway_redis;
mod graphiql;
mod metrics;
mod schema_contract;
mod settings_file;
mod shutdown;
mod support;
mod traces;
