//! writeguard: a reverse proxy that keeps users from losing work while their app deploys.

pub mod admin;
pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod framing;
pub mod guard;
pub mod listener;
pub mod proxy;
pub mod public;
pub mod store;
pub mod upsun;
