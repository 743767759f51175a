//! Use-case tests on the in-memory store with the real hashing and signing adapters.

mod auth;
mod keys;
mod management;
mod mfa;
mod rbac;
mod support;
mod throttle;
