//! The emulator through the real AWS SDKs (SSM and STS) over HTTP, and its
//! wire contract checked against the AWS service model. One test binary, so
//! the SDK links once.

// A failed unwrap is a failed test; the crate's lint is meant for library code.
#![allow(clippy::unwrap_used)]

mod emulator;
mod emulator_faults;
mod emulator_nodes;
mod emulator_sts;
mod shapes;
mod support;
