//! writeguard's black-box tests, in one binary: the real `writeguard` process on free
//! loopback ports, driven over real sockets by the harness in [`common`]. One module per
//! topic; a folder where a topic has several parts.

mod common;

mod admin;
mod audit;
mod check;
mod cli;
mod cli_operator;
mod config_holes;
mod deploy_webhook;
mod desync;
mod example_app;
mod hardening;
mod hold;
mod hold_forward;
mod keepalive;
mod lifecycle;
mod lingering;
mod monitoring;
mod native;
mod pipeline_webhooks;
mod proxy;
mod proxy_holes;
mod public;
mod recent;
mod reliability;
mod reload;
mod replicas;
mod retry_eta;
mod shared_state;
mod stale;
mod tls;
mod webhook;
mod webhook_holes;
