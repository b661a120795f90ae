//! writeguard: a reverse proxy that keeps users from losing work while their app deploys.
//!
//! Modules read bottom-up: `config`, `deadline`, `duration`, `metrics`, `upsun`, `traffic`,
//! `upstream`, `framing`, `listening` at the bottom (`upstream` carries `traffic`'s in-flight
//! counts); `http` (bodies, response builders, the data path's failure map) and `guard`
//! (state, policy, the backend seam) above them; `store` (the file and Redis backends),
//! `listener`, `webhook` and `reload` (the config in effect); then `admin`, `public` and
//! `redirect` (the HTTPS redirect listener); then `proxy`; then `h1` (the native HTTP/1.1
//! engine, which hands what it does not serve to `listener`'s hyper path); `app` wires them; `cli` is the
//! command line. A module
//! never imports one above it.
//!
//! Public: what the binary, the benches, the fuzz targets and the tests use.

mod admin;
mod app;
pub mod cli;
pub mod config;
pub mod deadline;
pub mod duration;
mod framing;
pub mod github;
mod gitlab;
pub mod guard;
/// The native HTTP/1.1 engine; public for its differential fuzz target.
pub mod h1;
mod http;
mod listener;
pub mod listening;
mod logging;
mod metrics;
mod proxy;
mod public;
mod redirect;
mod reload;
mod stale;
pub mod stdwebhook;
pub mod store;
mod traffic;
mod upstream;
pub mod upsun;
mod webhook;
