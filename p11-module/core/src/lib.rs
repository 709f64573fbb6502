//! keyferry-core: the PKCS#11 token itself — slots, tokens, sessions, objects and their
//! attribute rules, mechanisms, and the encrypted store. Safe Rust only; the C shell in
//! `keyferry-pkcs11` turns pointers into the types used here.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod mech;
pub mod store;
pub mod token;

pub use config::Config;
pub use error::{Error, Result};
