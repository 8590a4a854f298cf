//! placeholder
pub mod emulator;
