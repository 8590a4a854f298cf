//! placeholder
pub mod cursor;
pub mod emulator;
