//! `[github]` and `[gitlab]`: the deploy webhooks of those two pipelines. Each is off until
//! its secret is set; its scope (repository or project, environments) is optional.

use super::reader::{Reader, Reading};
use super::sections::read_secret;
use super::{Env, Secret};

/// `[github]`: `POST /webhooks/github`, GitHub's `deployment_status` events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GithubConfig {
    /// The webhook's secret (`X-Hub-Signature-256`); none: the route refuses every delivery.
    pub secret: Option<Secret>,
    /// `owner/name`: only deployments of this repository (compared case-insensitively).
    pub repository: Option<String>,
    /// Only deployments to these environments (empty: every environment).
    pub environments: Vec<String>,
    /// Guard on `queued` and `pending` too (off: only `in_progress` engages).
    pub guard_queued: bool,
}

/// `[gitlab]`: `POST /webhooks/gitlab`, GitLab's Deployment Hook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GitlabConfig {
    /// The webhook's secret token (`X-Gitlab-Token`).
    pub token: Option<Secret>,
    /// The webhook's signing token (`whsec_...`, Standard Webhooks headers).
    pub signing_secret: Option<Secret>,
    /// `group/name`: only deployments of this project (`project.path_with_namespace`).
    pub project: Option<String>,
    /// Only deployments to these environments (empty: every environment).
    pub environments: Vec<String>,
}

impl GitlabConfig {
    /// Whether the route takes deliveries (a token or a signing secret is set).
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.signing_secret.is_some()
    }
}

/// A secret that must not be empty when set.
fn non_empty(r: &mut Reader<'_>, key: &str, secret: Option<Secret>) -> Option<Secret> {
    if secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
        r.issue(key, "must not be empty");
    }
    secret
}

/// `owner/name`, or an issue.
fn path_of(r: &mut Reader<'_>, key: &str, what: &str) -> Option<String> {
    let value = r.string(key)?;
    let parts: Vec<&str> = value.split('/').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.trim().is_empty()) {
        r.issue(key, format!("must be {what}, got {value:?}"));
    }
    Some(value)
}

pub(super) fn read_github(
    root: &mut toml::Table,
    env: &dyn Env,
    reading: &mut Reading,
) -> GithubConfig {
    let mut r = Reader::section(root, "github", reading);
    let secret = read_secret(&mut r, env, "secret", "WRITEGUARD_GITHUB_SECRET");
    let secret = non_empty(&mut r, "secret", secret);
    let repository = path_of(&mut r, "repository", "\"owner/name\"");
    let environments = r.strings("environments", false).unwrap_or_default();
    let guard_queued = r.bool("guard_queued").unwrap_or(false);
    r.finish();
    GithubConfig {
        secret,
        repository,
        environments,
        guard_queued,
    }
}

pub(super) fn read_gitlab(
    root: &mut toml::Table,
    env: &dyn Env,
    reading: &mut Reading,
) -> GitlabConfig {
    let mut r = Reader::section(root, "gitlab", reading);
    let token = read_secret(&mut r, env, "token", "WRITEGUARD_GITLAB_TOKEN");
    let token = non_empty(&mut r, "token", token);
    let signing_secret = read_secret(
        &mut r,
        env,
        "signing_secret",
        "WRITEGUARD_GITLAB_SIGNING_SECRET",
    );
    if let Some(secret) = &signing_secret {
        if let Err(e) = crate::stdwebhook::Key::parse(secret.expose()) {
            r.issue(
                "signing_secret",
                format!("{e} (expected GitLab's signing token, \"whsec_<base64>\")"),
            );
        }
    }
    let project = path_of(&mut r, "project", "\"group/name\" (subgroups allowed)");
    let environments = r.strings("environments", false).unwrap_or_default();
    r.finish();
    GitlabConfig {
        token,
        signing_secret,
        project,
        environments,
    }
}
