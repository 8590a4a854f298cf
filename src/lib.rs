//! placeholder

pub mod cursor;
