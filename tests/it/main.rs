//! Integration tests: one binary, so the crate and the AWS SDK link once.

// A failed unwrap is a failed test; the crate's lint is meant for library code.
#![allow(clippy::unwrap_used)]

mod emulator;
mod shapes;
mod support;
