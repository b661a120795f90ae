//! Configs that used to turn the guard off or expose it, refused before any port opens:
//! durations that overflowed a deadline (a panicking handler let writes pass), an
//! `allow_paths` prefix covering every path, the example or short secrets on a non-loopback
//! listener (the shipped config and the Docker image's included), and an upgrade socket in a
//! directory other users may write. Over the real binary: `check`, `run`, and a real
//! `run --upgrade` hand-over.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::process::Process;
use crate::common::{eventually, free_port, sample, writeguard, Req, Upstream, Wg};

/// Every duration key with the largest value README's config table allows.
const MAXIMA: [(&str, &str, &str); 10] = [
    ("proxy", "connect_timeout", "5m"),
    ("proxy", "upstream_retry", "1h"),
    ("proxy", "header_timeout", "1h"),
    ("proxy", "body_idle_timeout", "1h"),
    ("proxy", "body_timeout", "1d"),
    ("proxy", "upstream_timeout", "1d"),
    ("guard", "retry_after", "1d"),
    ("guard", "max_engaged", "7d"),
    ("guard", "hold", "1h"),
    ("server", "shutdown_grace", "1h"),
];

/// 2^63 - 1 seconds: `Instant + Duration` overflows long before.
const HUGE: &str = "9223372036854775807s";

const EXAMPLE_TOKEN: &str = "change-me";
const EXAMPLE_KEY: &str = "change-me-too";

/// `wg` with every duration set by `value(key, max)`. Those the harness always writes
/// through their builder fields, the others as extra lines.
fn with_durations(mut wg: Wg, value: impl Fn(&str, &str) -> String) -> Wg {
    for (section, key, max) in MAXIMA {
        let v = value(key, max);
        let line = format!("{key} = {v:?}");
        wg = match (section, key) {
            ("guard", "hold") => wg.hold(&v),
            ("guard", "max_engaged") => wg.max_engaged(&v),
            ("guard", "retry_after") => wg.retry_after(&v),
            ("server", "shutdown_grace") => wg.shutdown_grace(&v),
            ("proxy", _) => wg.proxy_line(&line),
            _ => unreachable!("{section}.{key}"),
        };
    }
    wg
}

/// A config file in its own temp dir (state and sockets go there too).
struct Cfg {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Cfg {
    fn new(text: &str) -> Cfg {
        let dir = tempfile::Builder::new()
            .prefix("wg-holes-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("writeguard.toml");
        std::fs::write(&path, text).expect("write config");
        Cfg { dir, path }
    }

    /// `wg` rendered for `proxy`/`admin`, everything it writes under the temp dir. A
    /// `connect_timeout` among the extra lines replaces the harness's own.
    fn of(wg: &Wg, proxy: SocketAddr, admin: SocketAddr) -> Cfg {
        let cfg = Cfg::new("");
        let mut text = wg.render(proxy, admin, cfg.dir.path());
        if wg.proxy_extra.contains("connect_timeout") {
            text = text.replacen("connect_timeout = \"2s\"\n", "", 1);
        }
        std::fs::write(&cfg.path, text).expect("write");
        cfg
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `writeguard run <args>` on this config (copied to `<name>.toml`), logging to
    /// `<name>.log`; `proxy`/`admin` are the addresses it names. Does not wait.
    fn spawn(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        addrs: (SocketAddr, SocketAddr),
    ) -> Process {
        let text = std::fs::read_to_string(&self.path).expect("read config");
        Process::spawn(self.dir(), name, &text, args, env, addrs)
    }
}

/// `writeguard check -c FILE` with `env`: exit code and everything printed.
fn check_file(path: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = writeguard()
        .arg("check")
        .arg("-c")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run writeguard check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn check(cfg: &Cfg, env: &[(&str, &str)]) -> (i32, String) {
    check_file(&cfg.path, env)
}

/// Asserts `check` exits 2 and names every key of `keys` as the key of an error line.
fn refused(cfg: &Cfg, env: &[(&str, &str)], keys: &[&str]) -> String {
    let (code, out) = check(cfg, env);
    assert_eq!(code, 2, "check accepted it:\n{out}");
    for key in keys {
        assert!(
            out.contains(&format!("  - {key}: ")),
            "{key} not named:\n{out}"
        );
    }
    out
}

/// `writeguard run` must exit with `code` on its own (bounded), having opened no port.
async fn run_exits(
    cfg: &Cfg,
    env: &[(&str, &str)],
    (proxy, admin): (SocketAddr, SocketAddr),
    code: i32,
) -> String {
    let mut p = cfg.spawn("run", &[], env, (proxy, admin));
    let got = p
        .wait_exit(Duration::from_secs(10))
        .await
        .map(|s| s.code().unwrap_or(-1));
    let logs = p.logs();
    assert_eq!(got, Some(code), "run did not exit {code}; log:\n{logs}");
    for port in [proxy, admin] {
        let local = SocketAddr::from(([127, 0, 0, 1], port.port()));
        assert!(
            TcpStream::connect_timeout(&local, Duration::from_secs(1)).is_err(),
            "something listens on {local}"
        );
    }
    logs
}

// ---------------------------------------------------------------------------------------
// 2. Durations that overflowed a deadline
// ---------------------------------------------------------------------------------------

/// `max_engaged = "10000y"` passed `check`, then `now + max_engaged` panicked in the
/// webhook and `POST /guard` handlers: the guard never engaged and writes passed.
#[tokio::test]
async fn max_engaged_10000y_is_refused_by_check_and_run_naming_the_key() {
    let (proxy, admin) = (free_port(), free_port());
    let cfg = Cfg::of(
        &Wg::new("http://127.0.0.1:9").max_engaged("10000y"),
        proxy,
        admin,
    );
    let out = refused(&cfg, &[], &["guard.max_engaged"]);
    assert!(out.contains("out of range: from 1s to 7days"), "{out}");
    let logs = run_exits(&cfg, &[], (proxy, admin), 2).await;
    assert!(logs.contains("guard.max_engaged"), "{logs}");
}

/// Values near 2^63 s overflowed `Instant + Duration` on every request.
#[tokio::test]
async fn every_duration_near_2_pow_63_seconds_is_refused_naming_each_key() {
    let wg = with_durations(Wg::new("http://127.0.0.1:9"), |_, _| HUGE.into());
    let cfg = Cfg::of(&wg, free_port(), free_port());
    let keys: Vec<String> = MAXIMA.iter().map(|(s, k, _)| format!("{s}.{k}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    refused(&cfg, &[], &keys);

    // One second past its bound, each key alone is refused (the others at theirs).
    for (section, key, _) in MAXIMA {
        let wg = with_durations(Wg::new("http://127.0.0.1:9"), |k, max| {
            if k == key {
                format!("{max} 1s")
            } else {
                max.to_string()
            }
        });
        let out = refused(
            &Cfg::of(&wg, free_port(), free_port()),
            &[],
            &[&format!("{section}.{key}")],
        );
        assert!(out.contains("has 1 error(s)"), "{out}");
    }
}

/// At every upper bound (and not one second past `max_engaged`'s) the proxy starts and
/// keeps guarding: engaged by `POST /guard`
/// (ttl = max_engaged = 7d) and by a signed webhook, a write gets 503 and never reaches the
/// upstream, reads pass; a held write (hold = 1h) is forwarded once on release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_upper_bounds_the_guard_engages_and_refuses_writes() {
    let up = Upstream::start().await;
    let wg = with_durations(Wg::for_upstream(&up), |_, max| max.to_string()).hold("0s");
    let (code, out) = check(&Cfg::of(&wg, free_port(), free_port()), &[]);
    assert_eq!(code, 0, "{out}");
    // The bound is where README says: one second more is refused.
    let past = Wg::for_upstream(&up).max_engaged("7d 1s");
    refused(
        &Cfg::of(&past, free_port(), free_port()),
        &[],
        &["guard.max_engaged"],
    );
    let wg = harness_connect_timeout(wg).start().await;

    let res = wg.engage("at the bounds", None).await;
    assert_eq!(res.status, 201, "POST /guard: {}", res.text());
    let res = wg.post("/orders").await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(up.hits(), 0, "a guarded write reached the upstream");
    let res = wg.proxy(Req::get("/page")).await;
    assert_eq!(res.status, 200);
    assert_eq!(up.hits(), 1);

    // The webhook handler computes the same expiry.
    let res = wg
        .webhook_signed(sample("environment.push_in_progress"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["guarded"], true, "{}", res.text());
    let status = wg.status().await;
    assert_eq!(
        status["engagements"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let res = wg.post("/orders").await;
    assert_eq!(res.status, 503);
    assert_eq!(up.hits(), 1, "a guarded write reached the upstream");
    drop(wg);

    // hold at its bound: the held write is forwarded once when released.
    let wg = harness_connect_timeout(with_durations(Wg::for_upstream(&up), |_, max| {
        max.to_string()
    }))
    .start()
    .await;
    assert_eq!(wg.engage("held", None).await.status, 201);
    let proxy = wg.proxy;
    let held = tokio::spawn(async move {
        Req::new("POST", "/held")
            .body("x=1")
            .timeout(Duration::from_secs(20))
            .send(proxy)
            .await
    });
    let waiting = eventually(Duration::from_secs(10), || async {
        wg.status().await["held"] == 1
    })
    .await;
    assert!(waiting, "the write was not held");
    assert!(wg.release(true).await.status.is_success());
    let res = held.await.expect("held request task");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(up.count_method("POST"), 1, "forwarded exactly once");
}

/// The harness always writes its own `connect_timeout`: drop ours before `start`.
fn harness_connect_timeout(mut wg: Wg) -> Wg {
    wg.proxy_extra = wg
        .proxy_extra
        .lines()
        .filter(|l| !l.starts_with("connect_timeout"))
        .map(|l| format!("{l}\n"))
        .collect();
    wg
}

// ---------------------------------------------------------------------------------------
// 3. An allow_paths prefix covering every path
// ---------------------------------------------------------------------------------------

/// `"/"` was trimmed to `""`, a prefix of every path: the guard passed every write.
#[tokio::test]
async fn an_allow_path_covering_every_path_is_refused() {
    for paths in [&["/"][..], &["//"], &["/login", "///"]] {
        let (proxy, admin) = (free_port(), free_port());
        let cfg = Cfg::of(
            &Wg::new("http://127.0.0.1:9").allow_paths(paths),
            proxy,
            admin,
        );
        let out = refused(&cfg, &[], &["guard.allow_paths"]);
        assert!(out.contains("covers every path"), "{paths:?}: {out}");
        run_exits(&cfg, &[], (proxy, admin), 2).await;
    }
    let ok = Cfg::of(
        &Wg::new("http://127.0.0.1:9").allow_paths(&["/login/", "/api"]),
        free_port(),
        free_port(),
    );
    let (code, out) = check(&ok, &[]);
    assert_eq!(code, 0, "{out}");
}

// ---------------------------------------------------------------------------------------
// 6. Example and short secrets on a non-loopback listener
// ---------------------------------------------------------------------------------------

fn with_secrets(token: &str, key: &str) -> Wg {
    let mut wg = Wg::new("http://127.0.0.1:9");
    wg.token = token.into();
    wg.shared_key = Some(key.into());
    wg
}

fn any_addr(port: SocketAddr) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port.port()))
}

/// On loopback the quick start's example secrets work; with a listener on 0.0.0.0 (in the
/// file, or through WRITEGUARD_LISTEN / WRITEGUARD_ADMIN_LISTEN) `check` and `run` refuse
/// them, and any secret under 16 bytes, naming each key. 16 bytes and more are accepted.
#[tokio::test]
async fn weak_secrets_are_refused_off_loopback_and_accepted_on_it() {
    let (proxy, admin) = (free_port(), free_port());
    let example = with_secrets(EXAMPLE_TOKEN, EXAMPLE_KEY);
    let local = Cfg::of(&example, proxy, admin);
    let (code, out) = check(&local, &[]);
    assert_eq!(code, 0, "example secrets on loopback: {out}");

    let both = ["admin.token", "upsun.shared_key"];
    let open_proxy = Cfg::of(&example, any_addr(proxy), admin);
    let out = refused(&open_proxy, &[], &both);
    assert!(out.contains("is the example value"), "{out}");
    assert!(!out.contains(EXAMPLE_KEY), "a secret was printed:\n{out}");
    let open_admin = Cfg::of(&example, proxy, any_addr(admin));
    refused(&open_admin, &[], &both);
    let listen = any_addr(proxy).to_string();
    refused(&local, &[("WRITEGUARD_LISTEN", &listen)], &both);
    let admin_listen = any_addr(admin).to_string();
    refused(&local, &[("WRITEGUARD_ADMIN_LISTEN", &admin_listen)], &both);

    // Short ones, from the file or the environment.
    let short = Cfg::of(
        &with_secrets("fifteen-bytes!!", "fifteen-bytes!!"),
        any_addr(proxy),
        admin,
    );
    let out = refused(&short, &[], &both);
    assert!(out.contains("shorter than 16 bytes"), "{out}");
    refused(
        &open_proxy,
        &[
            ("WRITEGUARD_ADMIN_TOKEN", "fifteen-bytes!!"),
            ("WRITEGUARD_UPSUN_SHARED_KEY", "0123456789abcdef"),
        ],
        &["admin.token"],
    );
    let (_, out) = check(
        &open_proxy,
        &[
            ("WRITEGUARD_ADMIN_TOKEN", "fifteen-bytes!!"),
            ("WRITEGUARD_UPSUN_SHARED_KEY", "0123456789abcdef"),
        ],
    );
    assert!(
        !out.contains("upsun.shared_key"),
        "a 16-byte key refused:\n{out}"
    );
    let strong = Cfg::of(
        &with_secrets("sixteen-bytes!!!", "another-16-bytes"),
        any_addr(proxy),
        any_addr(admin),
    );
    let (code, out) = check(&strong, &[]);
    assert_eq!(code, 0, "{out}");

    // `run` refuses too, before listening on 0.0.0.0.
    let logs = run_exits(&open_proxy, &[], (proxy, admin), 2).await;
    assert!(logs.contains("admin.token"), "{logs}");
}

/// The shipped example config: fine as the quick start runs it, refused once exposed.
#[test]
fn the_example_config_is_refused_when_exposed() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/writeguard.toml");
    let (code, out) = check_file(&example, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check_file(&example, &[("WRITEGUARD_LISTEN", "0.0.0.0:8080")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("  - admin.token: is the example value")
            && out.contains("  - upsun.shared_key: is the example value"),
        "{out}"
    );
}

/// What the Dockerfile copies into the image and sets in its environment, read from it.
struct Image {
    configs: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

fn image() -> Image {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("Dockerfile")).expect("read Dockerfile");
    let joined = text.replace("\\\n", " ");
    let mut configs = Vec::new();
    let mut env = Vec::new();
    for line in joined.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"COPY") => {
                for src in &words[1..words.len() - 1] {
                    if src.starts_with("config/") {
                        configs.push(root.join(src));
                    }
                }
            }
            Some(&"ENV") => {
                for kv in &words[1..] {
                    if let Some((k, v)) = kv.split_once('=') {
                        env.push((k.to_string(), v.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    Image { configs, env }
}

/// The image listens on 0.0.0.0: the config it carries has no usable secret, so it does not
/// start until the environment gives real ones (and then does). Docker itself is not run
/// here: the Dockerfile's COPY and ENV lines are read and its config checked with them.
#[test]
fn the_image_config_carries_no_usable_secret() {
    let image = image();
    assert!(!image.configs.is_empty(), "the Dockerfile copies no config");
    let env: Vec<(&str, &str)> = image
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("WRITEGUARD_") && k != "WRITEGUARD_CONFIG")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(
        env.iter()
            .any(|(k, v)| *k == "WRITEGUARD_LISTEN" && v.starts_with("0.0.0.0")),
        "{env:?}"
    );
    for config in &image.configs {
        let text = std::fs::read_to_string(config).expect("read the image's config");
        assert!(
            !text.contains("change-me"),
            "{} has an example secret",
            config.display()
        );
        let mut with_upstream = env.clone();
        with_upstream.push(("WRITEGUARD_UPSTREAM", "http://app:8000"));
        let (code, out) = check_file(config, &with_upstream);
        assert_eq!(
            code,
            2,
            "{} starts without secrets:\n{out}",
            config.display()
        );
        assert!(out.contains("  - admin.token: "), "{out}");

        let mut with_example = with_upstream.clone();
        with_example.push(("WRITEGUARD_ADMIN_TOKEN", EXAMPLE_TOKEN));
        let (code, out) = check_file(config, &with_example);
        assert_eq!(code, 2, "{out}");

        let mut configured = with_upstream.clone();
        configured.push(("WRITEGUARD_ADMIN_TOKEN", "a-real-admin-token-of-32-bytes!!"));
        configured.push((
            "WRITEGUARD_UPSUN_SHARED_KEY",
            "a-real-shared-key-of-32-bytes!!!",
        ));
        let (code, out) = check_file(config, &configured);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("webhooks signed"), "{out}");
    }
}

// ---------------------------------------------------------------------------------------
// 11. The upgrade socket and pid file
// ---------------------------------------------------------------------------------------

/// The harness's config without its `upgrade_sock` and `pid_file` lines: the defaults.
fn without_server_paths(wg: &Wg, proxy: SocketAddr, admin: SocketAddr) -> Cfg {
    let cfg = Cfg::new("");
    let text: String = wg
        .render(proxy, admin, cfg.dir())
        .lines()
        .filter(|l| !l.starts_with("upgrade_sock") && !l.starts_with("pid_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&cfg.path, text).expect("write config");
    cfg
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// By default the hand-over socket sits beside the state file (not in /tmp), in a directory
/// only this user may use, and the socket pingora creates 0666 is made owner-only before
/// the old instance hands its listeners over; the hand-over then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_socket_defaults_beside_the_state_file_and_is_owner_only() {
    let up = Upstream::start().await;
    let (proxy, admin) = (free_port(), free_port());
    let cfg = without_server_paths(&Wg::for_upstream(&up), proxy, admin);
    let state_dir = cfg.dir().join("state");
    let sock = state_dir.join("writeguard.upgrade.sock");

    let mut old = cfg.spawn("old", &[], &[], (proxy, admin));
    old.ready().await;
    assert_eq!(
        mode(&state_dir),
        0o700,
        "the socket's directory (the state dir) is not owner-only"
    );

    let mut new = cfg.spawn("new", &["--upgrade"], &[], (proxy, admin));
    let bound = eventually(Duration::from_secs(10), || async {
        std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket())
    })
    .await;
    assert!(
        bound,
        "no socket at {}; new log:\n{}",
        sock.display(),
        new.logs()
    );
    let owner_only = eventually(Duration::from_secs(3), || async {
        std::fs::symlink_metadata(&sock).is_ok_and(|m| m.mode() & 0o077 == 0)
    })
    .await;
    assert!(owner_only, "socket mode {:o}", mode(&sock));

    old.signal("QUIT");
    assert!(
        old.wait_exit(Duration::from_secs(15)).await.is_some(),
        "the old instance did not hand over; new log:\n{}",
        new.logs()
    );
    new.ready().await;
    let res = Req::get("/page").send(proxy).await;
    assert_eq!(res.status, 200, "the new instance serves the proxy port");
    assert!(!sock.exists(), "the socket is removed after the hand-over");
}

/// A socket directory that others may write to (where anyone could create the socket
/// first and receive the listening sockets) stops the start, naming the setting.
#[tokio::test]
async fn an_upgrade_socket_directory_others_may_write_is_refused() {
    let (proxy, admin) = (free_port(), free_port());
    let cfg = Cfg::of(&Wg::new("http://127.0.0.1:9"), proxy, admin);
    let shared = cfg.dir().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let text = std::fs::read_to_string(&cfg.path)
        .expect("read")
        .lines()
        .map(|l| {
            if l.starts_with("upgrade_sock") {
                format!(
                    "upgrade_sock = {:?}",
                    shared.join("wg.sock").to_string_lossy()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg.path, text).expect("write");
    let logs = run_exits(&cfg, &[], (proxy, admin), 1).await;
    assert!(
        logs.contains("server.upgrade_sock") && logs.contains("writable by other users"),
        "{logs}"
    );
}
