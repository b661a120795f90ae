//! The audit log: every engagement change is a durable JSON line written as part of the
//! change, `GET /history` reads it back newest first, and a change that cannot be recorded
//! does not happen.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common;
use crate::common::{
    eventually, sample, Instance, Req, Upstream, Wg, COMPLETE, IN_PROGRESS, SAMPLE_ID,
    SAMPLE_PROJECT,
};

fn audit_path(wg: &Instance) -> PathBuf {
    let mut p = wg.state_path().into_os_string();
    p.push(".audit.jsonl");
    p.into()
}

/// The audit file's lines as JSON, oldest first.
fn lines(wg: &Instance) -> Vec<Value> {
    std::fs::read_to_string(audit_path(wg))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

async fn history(wg: &Instance, query: &str) -> Vec<Value> {
    let res = wg
        .admin(Req::get(&format!("/history{query}")).bearer(&wg.cfg.token))
        .await;
    assert_eq!(res.status, 200, "GET /history{query}: {}", res.text());
    res.json().as_array().expect("an array").clone()
}

fn assert_rfc3339(v: &Value) {
    let s = v.as_str().expect("`when` is a string");
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("`when` {s:?} is not RFC 3339: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_changes_are_audited_and_history_is_newest_first_behind_the_token() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let engaged = wg.engage("deploy 42", None).await;
    assert_eq!(engaged.status, 201);
    let id = engaged.json()["id"].as_str().expect("id").to_string();
    assert_eq!(wg.release(false).await.status, 200);
    // Nothing to release: no change, no line.
    assert_eq!(wg.release(false).await.status, 200);

    let file = lines(&wg);
    assert_eq!(file.len(), 2, "{file:#?}");
    let got = history(&wg, "").await;
    assert_eq!(got, file.iter().rev().cloned().collect::<Vec<_>>());
    let (release, engage) = (&got[0], &got[1]);
    assert_eq!(engage["action"], "engage");
    assert_eq!(engage["source"], "api");
    assert_eq!(engage["actor"], "operator");
    assert_eq!(engage["reason"], "deploy 42");
    assert_eq!(engage["engagement"], id.as_str());
    assert_eq!(engage["engaged"], true);
    assert_eq!(release["action"], "release");
    assert_eq!(release["source"], "api");
    assert_eq!(release["engagement"], id.as_str());
    assert_eq!(release["engaged"], false);
    for r in &got {
        assert_rfc3339(&r["when"]);
    }

    assert_eq!(history(&wg, "?limit=1").await, vec![release.clone()]);
    for bad in ["?limit=0", "?limit=1001", "?limit=x"] {
        let res = wg
            .admin(Req::get(&format!("/history{bad}")).bearer(&wg.cfg.token))
            .await;
        assert_eq!(res.status, 400, "{bad}");
    }
    assert_eq!(wg.admin(Req::get("/history")).await.status, 401);
    let wrong = wg
        .admin(Req::get("/history").bearer("not-the-token-at-all"))
        .await;
    assert_eq!(wrong.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_expiry_changes_are_audited_without_secrets() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    assert_eq!(wg.webhook_signed(sample(IN_PROGRESS)).await.status, 200);
    assert_eq!(wg.webhook_signed(sample(COMPLETE)).await.status, 200);
    assert_eq!(wg.engage("short", Some("1s")).await.status, 201);
    assert!(
        eventually(Duration::from_secs(5), || async {
            lines(&wg).iter().any(|l| l["action"] == "expire")
        })
        .await,
        "no expiry line: {:#?}",
        lines(&wg)
    );

    let got = history(&wg, "").await;
    assert_eq!(got.len(), 4, "{got:#?}");
    let (expire, engage, release, start) = (&got[0], &got[1], &got[2], &got[3]);
    for (line, action, engaged) in [(start, "engage", true), (release, "release", false)] {
        assert_eq!(line["source"], "webhook", "{line}");
        assert_eq!(line["action"], action, "{line}");
        assert_eq!(line["activity"], SAMPLE_ID, "{line}");
        assert_eq!(line["engagement"], SAMPLE_ID, "{line}");
        assert_eq!(line["engaged"], engaged, "{line}");
        let actor = line["actor"].as_str().unwrap_or_default();
        assert!(
            actor.contains("environment.push") && actor.contains(SAMPLE_PROJECT),
            "{line}"
        );
    }
    assert_eq!(engage["source"], "api");
    assert_eq!(expire["source"], "expiry");
    assert_eq!(expire["engagement"], engage["engagement"]);
    assert_eq!(expire["engaged"], false);

    let raw = std::fs::read_to_string(audit_path(&wg)).expect("audit file");
    assert!(!raw.contains(common::SHARED_KEY) && !raw.contains(common::TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_survives_a_restart() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).start().await;
    assert_eq!(wg.engage("before", None).await.status, 201);
    wg.restart().await;
    assert_eq!(wg.release(false).await.status, 200);
    let got = history(&wg, "").await;
    let actions: Vec<&str> = got.iter().map(|l| l["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["release", "engage"], "{got:#?}");
    assert_eq!(got[1]["reason"], "before");
}

/// A tiny tmpfs mounted over a directory, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(dir.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_the_change_and_leaves_state_and_audit_as_they_were() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let dir = wg.state_path().parent().expect("state dir").to_owned();
    let Some(_mount) = Mount::tmpfs(&dir, "64k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    assert_eq!(wg.engage("first", None).await.status, 201);
    let state = std::fs::read(wg.state_path()).expect("state");
    let audit = std::fs::read(audit_path(&wg)).expect("audit");

    let filler = fill(&dir);
    let res = wg.engage("second", None).await;
    assert!(
        res.status.is_server_error(),
        "engage on a full disk: {} {}",
        res.status,
        res.text()
    );
    assert_eq!(std::fs::read(wg.state_path()).expect("state"), state);
    assert_eq!(std::fs::read(audit_path(&wg)).expect("audit"), audit);
    let status = wg.status().await;
    assert_eq!(
        status["engagements"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(history(&wg, "").await.len(), 1);

    std::fs::remove_file(filler).expect("free the disk");
    assert_eq!(wg.engage("second", None).await.status, 201);
    assert_eq!(history(&wg, "").await[0]["reason"], "second");
}
