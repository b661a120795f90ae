//! `[state]`: where the guard state is kept. One file by default; with `backend = "redis"`,
//! one state for every replica of a `site`, and the file is the replica's boot cache.

use std::time::Duration;

use super::reader::Reader;
use super::sections::read_secret;
use super::*;

/// Longest `site`: it is part of every key.
const MAX_SITE: usize = 100;

pub(super) fn read_state(
    root: &mut toml::Table,
    env: &dyn Env,
    upsun: Option<&UpsunConfig>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<StateConfig> {
    let mut r = Reader::section(root, "state", issues);
    let path = r
        .string("path")
        .unwrap_or_else(|| "var/writeguard.state".into());
    if path.is_empty() {
        r.issue("path", "must not be empty");
    }
    let audit_log = r
        .string("audit_log")
        .unwrap_or_else(|| format!("{path}.audit.jsonl"));
    if audit_log.is_empty() {
        r.issue("audit_log", "must not be empty");
    } else if audit_log == path {
        r.issue("audit_log", "must not be the state file itself");
    }
    let backend = match r.string("backend").as_deref() {
        None | Some("file") => {
            for key in [
                "redis_url",
                "redis_url_env",
                "site",
                "stale_after",
                "on_store_loss",
                "replica",
            ] {
                if r.string(key).is_some() {
                    r.issue(key, "is for backend = \"redis\" (the backend is \"file\")");
                }
            }
            Some(StateBackend::File)
        }
        Some("redis") => read_redis(&mut r, env, upsun).map(StateBackend::Redis),
        Some(other) => {
            r.issue(
                "backend",
                format!("{other:?} is not a backend: \"file\" or \"redis\""),
            );
            None
        }
    };
    r.finish();
    Some(StateConfig {
        path: path.into(),
        audit_log: audit_log.into(),
        backend: backend?,
    })
}

fn read_redis(
    r: &mut Reader<'_>,
    env: &dyn Env,
    upsun: Option<&UpsunConfig>,
) -> Option<RedisConfig> {
    let url = read_secret(r, env, "redis_url", "WRITEGUARD_REDIS_URL");
    match &url {
        None => r.issue(
            "redis_url",
            "is required with backend = \"redis\" (or set WRITEGUARD_REDIS_URL)",
        ),
        // The URL may hold a password: the message never repeats it.
        Some(url) => {
            if redis::Client::open(url.expose()).is_err() {
                r.issue(
                    "redis_url",
                    "is not a Redis URL like redis://host:6379/0, rediss://host:6380/0 or \
                     redis+unix:///run/redis.sock",
                );
            }
        }
    }
    let site = r.string("site").unwrap_or_else(|| default_site(upsun));
    if site.is_empty()
        || site.len() > MAX_SITE
        || !site
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    {
        r.issue(
            "site",
            format!(
                "{site:?} must be 1 to {MAX_SITE} printable characters without spaces or braces"
            ),
        );
    }
    let stale_after = r.duration("stale_after", Duration::from_secs(1), limits::STALE_AFTER);
    let on_store_loss = match r.string("on_store_loss").as_deref() {
        None | Some("guard-writes") => OnStoreLoss::GuardWrites,
        Some("last-known") => OnStoreLoss::LastKnown,
        Some(other) => {
            r.issue(
                "on_store_loss",
                format!("{other:?} is not known: \"guard-writes\" or \"last-known\""),
            );
            OnStoreLoss::GuardWrites
        }
    };
    let replica = env
        .var("WRITEGUARD_REPLICA")
        .or_else(|| r.string("replica"));
    if replica.as_ref().is_some_and(|id| {
        id.is_empty() || id.len() > MAX_SITE || !id.bytes().all(|b| b.is_ascii_graphic())
    }) {
        r.issue(
            "replica",
            format!("must be 1 to {MAX_SITE} printable characters without spaces"),
        );
    }
    Some(RedisConfig {
        url: url?,
        site,
        stale_after,
        on_store_loss,
        replica,
    })
}

/// `<upsun.project>-<first environment>`, or `default`.
fn default_site(upsun: Option<&UpsunConfig>) -> String {
    match upsun.and_then(|u| Some((u.project.as_ref()?, u.environments.first()))) {
        Some((project, Some(env))) => format!("{project}-{env}"),
        Some((project, None)) => project.clone(),
        None => "default".into(),
    }
}
