//! `[state]`: where the guard state is kept. One file by default; with `backend = "redis"`,
//! one state for every replica of a `site`, and the file is the replica's boot cache.

use std::time::Duration;

use super::reader::{Reader, Reading};
use super::sections::read_secret;
use super::*;

/// Longest `site`: it is part of every key.
const MAX_SITE: usize = 100;

pub(super) fn read_state(
    root: &mut toml::Table,
    env: &dyn Env,
    upsun: Option<&UpsunConfig>,
    reading: &mut Reading,
) -> Option<StateConfig> {
    let mut r = Reader::section(root, "state", reading);
    let path = r
        .path("path")
        .unwrap_or_else(|| r.reading.resolve("var/writeguard.state"));
    let audit_log = r.path("audit_log").unwrap_or_else(|| {
        let mut log = path.clone().into_os_string();
        log.push(".audit.jsonl");
        log.into()
    });
    if audit_log == path {
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
        path,
        audit_log,
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
    let replica = r.string("replica");
    let replica = r
        .overridden("replica", env, "WRITEGUARD_REPLICA")
        .or(replica);
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

#[cfg(test)]
mod tests {
    use super::super::tests::MINIMAL;
    use super::*;

    fn parse(state: &str, env: &dyn Env) -> Result<Config, Vec<String>> {
        Config::parse(&format!("{MINIMAL}[state]\n{state}"), env).map_err(|e| match e {
            ParseError::Invalid(i) => i.into_iter().map(|i| i.to_string()).collect(),
            other => vec![format!("{other:?}")],
        })
    }

    fn redis(c: &Config) -> &RedisConfig {
        match &c.state.backend {
            StateBackend::Redis(r) => r,
            StateBackend::File => panic!("file backend"),
        }
    }

    #[test]
    fn the_file_backend_is_the_default_and_refuses_redis_keys() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.state.backend, StateBackend::File);
        let issues = parse("site = \"shop\"\nstale_after = \"1s\"\n", &[]).unwrap_err();
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues[0].starts_with("state.site: is for backend = \"redis\""));
    }

    #[test]
    fn redis_gets_its_defaults_and_the_site_from_upsun() {
        let c = parse(
            "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\n",
            &[],
        )
        .unwrap();
        let r = redis(&c);
        assert_eq!(r.url.expose(), "redis://127.0.0.1:6379/0");
        assert_eq!(r.site, "default");
        assert_eq!(r.stale_after, Duration::from_secs(1));
        assert_eq!(r.on_store_loss, OnStoreLoss::GuardWrites);
        assert_eq!(r.replica, None);
        let with_upsun = format!(
            "{MINIMAL}[upsun]\nproject = \"abc\"\nenvironments = [\"main\", \"staging\"]\n\
             [state]\nbackend = \"redis\"\nredis_url = \"redis://h/0\"\n"
        );
        let c = Config::parse(&with_upsun, &[]).unwrap();
        assert_eq!(redis(&c).site, "abc-main");
    }

    #[test]
    fn the_environment_overrides_the_url_and_the_replica() {
        let env = [
            (
                "WRITEGUARD_REDIS_URL",
                "rediss://:secret@redis.internal:6380/1",
            ),
            ("WRITEGUARD_REPLICA", "pod-7"),
        ];
        let c = parse("backend = \"redis\"\nreplica = \"web-1\"\n", &env).unwrap();
        assert_eq!(
            redis(&c).url.expose(),
            "rediss://:secret@redis.internal:6380/1"
        );
        assert_eq!(redis(&c).replica.as_deref(), Some("pod-7"));
    }

    #[test]
    fn every_redis_mistake_is_named_and_the_url_never_repeated() {
        let issues = parse("backend = \"redis\"\n", &[]).unwrap_err();
        assert_eq!(issues, ["state.redis_url: is required with backend = \"redis\" (or set WRITEGUARD_REDIS_URL)"]);
        let issues = parse(
            "backend = \"redis\"\nredis_url = \"http://user:hunter2@x\"\nsite = \"a{b}\"\n\
             stale_after = \"10ms\"\non_store_loss = \"panic\"\nreplica = \"a b\"\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = issues
            .iter()
            .map(|i| i.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "state.redis_url",
                "state.site",
                "state.stale_after",
                "state.on_store_loss",
                "state.replica"
            ],
            "{issues:?}"
        );
        assert!(!issues.concat().contains("hunter2"), "{issues:?}");
        let issues = parse("backend = \"etcd\"\n", &[]).unwrap_err();
        assert_eq!(
            issues,
            ["state.backend: \"etcd\" is not a backend: \"file\" or \"redis\""]
        );
    }
}
