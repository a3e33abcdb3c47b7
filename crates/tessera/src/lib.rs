//! Tessera: an identity and access management service.
//!
//! The library holds everything the `tessera` binary runs: configuration, the store on SQLite or
//! PostgreSQL, accounts, sessions, signing keys, email flows, domain events and the HTTP API. [`app::App::build`] is the one
//! entry point shared by `tessera serve`, the API tests and the benchmark.
#![recursion_limit = "256"]

pub mod abuse;
pub mod access;
pub mod accounts;
pub mod app;
pub mod audit;
pub mod authz;
pub mod clock;
pub mod config;
pub mod context;
pub mod core;
pub mod crypto;
pub mod error;
pub mod events;
pub mod federation;
pub mod files;
pub mod http;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod oauth;
pub mod oidc;
pub mod passwords;
pub mod sessions;
pub mod shared;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod urls;

#[cfg(test)]
mod proptests;

pub use crate::core::Core;
pub use app::{App, AppState};
pub use config::Config;
pub use error::Error;
