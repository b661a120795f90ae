//! `writeguard deploy start|finish|cancel --id ID`: one signed Standard Webhooks deploy
//! event to `POST /webhooks/deploy` (the admin port named by `--url` or the config), with
//! the secret from `--secret`, `WRITEGUARD_WEBHOOKS_SECRET` or the config's
//! `webhooks.secret` (the first one). Exit 0 once the instance stored it.

use std::time::Duration;

use http::Method;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::args::{Command, ConfigArg, Connect, SECRET_ENV};
use super::client;
use super::exit::Failure;
use super::target::Target;
use crate::config::{Config, ProcessEnv};
use crate::stdwebhook::{sign, Key};

/// The route, when `--url` names no path.
const ROUTE: &str = "/webhooks/deploy";

/// Runs `deploy`.
pub fn run(command: Command) -> Result<(), Failure> {
    let Command::Deploy {
        phase,
        id,
        url,
        secret,
        environment,
        reason,
        config,
        timeout,
    } = command
    else {
        return Err(Failure::Usage("not a deploy command".into()));
    };
    let key = key(secret, &config)?;
    let path = match url.as_deref().map(url_path) {
        Some(path) if path.is_empty() || path == "/" => ROUTE,
        Some(_) => "",
        None => ROUTE,
    };
    let connect = Connect {
        config,
        admin: url,
        timeout,
    };
    let target = Target::resolve(&connect, None, false)?;
    let now = OffsetDateTime::now_utc();
    let body = json!({
        "type": phase.event_type(),
        "timestamp": now.format(&Rfc3339).unwrap_or_default(),
        "data": { "id": id, "environment": environment, "reason": reason },
    });
    let message_id = format!(
        "msg_{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let timestamp = now.unix_timestamp();
    let signature = sign(&key, &message_id, timestamp, body.to_string().as_bytes());
    let headers = [
        ("webhook-id", message_id),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start: {e}")))?;
    let answer = runtime.block_on(send(&target, path, body, &headers, timeout))?;
    if !answer.status.is_success() {
        return Err(Failure::Refused(format!(
            "{} answered {}: {}",
            target.base,
            answer.status,
            answer.message()
        )));
    }
    println!("{}", String::from_utf8_lossy(&answer.body).trim());
    Ok(())
}

async fn send(
    target: &Target,
    path: &str,
    body: serde_json::Value,
    headers: &[(&'static str, String)],
    timeout: Duration,
) -> Result<client::Answer, Failure> {
    client::send_with(target, Method::POST, path, Some(body), headers, timeout).await
}

/// The path of a URL (`""` when it has none or is not one: `Target` says what is wrong).
fn url_path(url: &str) -> &str {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("")
}

/// The signing key: the flag (or its variable; its first secret), else the config's first.
fn key(flag: Option<String>, config: &ConfigArg) -> Result<Key, Failure> {
    let (secret, from) = match flag {
        Some(s) => (
            s.split_whitespace().next().unwrap_or_default().to_owned(),
            format!("--secret (or {SECRET_ENV})"),
        ),
        None => {
            let cfg = Config::load(&config.path, &ProcessEnv).map_err(|e| {
                Failure::Usage(format!(
                    "no webhook secret: pass --secret or set {SECRET_ENV} (the config could not be read: {e})"
                ))
            })?;
            let Some(first) = cfg.webhooks.secrets.first() else {
                return Err(Failure::Usage(format!(
                    "no webhook secret: pass --secret, set {SECRET_ENV}, or set webhooks.secret in {}",
                    config.path.display()
                )));
            };
            (first.expose().to_owned(), "webhooks.secret".to_owned())
        }
    };
    Key::parse(&secret).map_err(|e| Failure::Usage(format!("{from} {e}: expected whsec_<base64>")))
}
