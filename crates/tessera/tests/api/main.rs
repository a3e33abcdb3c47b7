//! The API suite: the real service over HTTP, every scenario on SQLite and on PostgreSQL.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on an unexpected result"
)]

mod helpers;
mod logs;
mod metrics;

mod abuse;
mod access;
mod accounts;
mod admin_api;
mod architecture;
mod audit;
mod authz;
mod bad_input;
mod browser;
mod email;
mod events;
mod federation;
mod hardening;
mod invitations;
mod mfa;
mod oauth;
mod openapi;
mod ops;
mod password_policy;
mod schema;
mod sessions;
mod shared_state;
mod tenant_keys;
mod tenant_sign_in;
mod tenants;
mod token_exchange;
mod tokens;
mod webauthn;
