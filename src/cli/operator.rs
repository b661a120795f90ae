//! The operator commands: each one request to a running instance's admin API, its answer
//! printed for people or as JSON, and what the answer means for the exit code (a release
//! that leaves the guard engaged, a refused reload, an instance that is not ready).

use std::io::IsTerminal;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::args::{Auth, Command, Connect, Output, TOKEN_ENV};
use super::client::{self, Answer};
use super::exit::Failure;
use super::human;
use super::target::Target;

/// How much longer than `engage --wait`'s wait the answer may take to arrive.
const WAIT_ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Runs one operator command (not `run` or `check`).
pub fn run(command: Command) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start: {e}")))?;
    runtime.block_on(operate(command))
}

async fn operate(command: Command) -> Result<(), Failure> {
    match command {
        Command::Status {
            connect,
            auth,
            output,
        } => {
            let target = Target::resolve(&connect, Some(&auth), false)?;
            let answer = call(
                &target,
                (Method::GET, "/status"),
                None,
                target.timeout,
                output,
            )
            .await?;
            show(output, &answer, human::status)
        }
        Command::Engage {
            connect,
            auth,
            output,
            reason,
            ttl,
            wait,
        } => {
            let target = Target::resolve(&connect, Some(&auth), true)?;
            let mut body = json!({
                "reason": reason,
                "ttl": ttl.map(|t| humantime::format_duration(t).to_string()),
            });
            let mut deadline = target.timeout;
            if let Some(wait) = wait {
                body["wait"] = json!(wait.as_str());
                body["timeout"] = json!(humantime::format_duration(target.timeout).to_string());
                deadline += WAIT_ANSWER_MARGIN;
            }
            let answer = call(
                &target,
                (Method::POST, "/guard"),
                Some(body),
                deadline,
                output,
            )
            .await?;
            show(output, &answer, human::engaged)
        }
        Command::Release {
            connect,
            auth,
            output,
            all,
        } => {
            let target = Target::resolve(&connect, Some(&auth), true)?;
            let path = if all { "/guard?all=true" } else { "/guard" };
            let answer = call(
                &target,
                (Method::DELETE, path),
                None,
                target.timeout,
                output,
            )
            .await?;
            show(output, &answer, human::status)?;
            still_engaged(&answer.json().unwrap_or_default(), all)
        }
        Command::History {
            connect,
            auth,
            output,
            limit,
        } => {
            let target = Target::resolve(&connect, Some(&auth), true)?;
            let path = match limit {
                Some(n) => format!("/history?limit={n}"),
                None => "/history".to_owned(),
            };
            let answer = call(&target, (Method::GET, &path), None, target.timeout, output).await?;
            show(output, &answer, |doc, _| human::history(doc))
        }
        Command::Deploys {
            connect,
            auth,
            output,
        } => {
            let target = Target::resolve(&connect, Some(&auth), false)?;
            let answer = call(
                &target,
                (Method::GET, "/deploys"),
                None,
                target.timeout,
                output,
            )
            .await?;
            show(output, &answer, |doc, _| human::deploys(doc))
        }
        Command::Reload {
            connect,
            auth,
            output,
        } => reload(&connect, &auth, output).await,
        Command::Healthcheck { connect } => healthcheck(&connect).await,
        Command::Run { .. } | Command::Check { .. } | Command::Deploy { .. } => Err(
            Failure::Usage("run, check and deploy are not operator commands".to_owned()),
        ),
    }
}

/// `reload`: what changed, or why the file was refused (exit 1, the previous config stays).
async fn reload(connect: &Connect, auth: &Auth, output: Output) -> Result<(), Failure> {
    let target = Target::resolve(connect, Some(auth), true)?;
    let answer = client::send(&target, Method::POST, "/reload", None, target.timeout).await?;
    if answer.status != StatusCode::UNPROCESSABLE_ENTITY {
        let answer = succeeded(answer, output)?;
        return show(output, &answer, |doc, _| human::reloaded(doc));
    }
    let doc = answer.json().unwrap_or_default();
    if format(output) == Format::Json {
        print_json(&doc);
    }
    let errors: Vec<String> = doc["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| format!("  - {}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Err(Failure::Failed(format!(
        "reload refused, the previous config stays in effect:\n{}",
        errors.join("\n")
    )))
}

/// `healthcheck`: exit 0 when `/readyz` answers 200, 1 when it answers anything else.
async fn healthcheck(connect: &Connect) -> Result<(), Failure> {
    let target = Target::resolve(connect, None, false)?;
    let answer = client::send(&target, Method::GET, "/readyz", None, target.timeout).await?;
    if answer.status == StatusCode::OK {
        println!("{}", answer.message());
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "not ready: /readyz at {} answered {}: {}",
            target.base,
            answer.status,
            answer.message()
        )))
    }
}

/// Sends one request within `deadline` and insists on a success.
async fn call(
    target: &Target,
    (method, path): (Method, &str),
    body: Option<Value>,
    deadline: Duration,
    output: Output,
) -> Result<Answer, Failure> {
    succeeded(
        client::send(target, method, path, body, deadline).await?,
        output,
    )
}

/// The answer if it is a success; else its message (and, for scripts, its JSON on stdout).
fn succeeded(answer: Answer, output: Output) -> Result<Answer, Failure> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    if format(output) == Format::Json {
        if let Some(doc) = answer.json() {
            print_json(&doc);
        }
    }
    let mut message = format!(
        "the admin API answered {}: {}",
        answer.status,
        answer.message()
    );
    if answer.status == StatusCode::UNAUTHORIZED {
        message += &format!(
            "\n(pass the instance's admin.token with --token or {TOKEN_ENV}, or its config with -c)"
        );
    }
    Err(Failure::Refused(message))
}

/// Prints a successful answer: its JSON, or `human`'s view of it.
fn show(
    output: Output,
    answer: &Answer,
    human: impl Fn(&Value, OffsetDateTime) -> String,
) -> Result<(), Failure> {
    let doc = answer.json().ok_or_else(|| {
        Failure::Failed(format!(
            "the admin API answered {} with no JSON: {}",
            answer.status,
            answer.message()
        ))
    })?;
    match format(output) {
        Format::Json => print_json(&doc),
        Format::Human => println!("{}", human(&doc, OffsetDateTime::now_utc())),
    }
    Ok(())
}

/// After a release: exit 1 while the guard is still engaged, saying by what.
fn still_engaged(status: &Value, all: bool) -> Result<(), Failure> {
    if status["guarded"].as_bool() != Some(true) {
        return Ok(());
    }
    let left: Vec<String> = status["engagements"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    format!(
                        "{} ({})",
                        e["source"].as_str().unwrap_or("?"),
                        e["reason"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let hint = if all {
        String::new()
    } else {
        "; `writeguard release --all` releases those too".to_owned()
    };
    Err(Failure::Failed(if left.is_empty() {
        format!(
            "the guard still guards writes: {}",
            status["problem"]
                .as_str()
                .unwrap_or("the store is in fail-safe (see writeguard status)")
        )
    } else {
        format!(
            "the guard is still engaged by {} other engagement(s): {}{hint}",
            left.len(),
            left.join(", ")
        )
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Human,
}

/// `--json` or `--human` when given; else for people on a terminal, JSON for scripts.
fn format(output: Output) -> Format {
    if output.json {
        Format::Json
    } else if output.human || std::io::stdout().is_terminal() {
        Format::Human
    } else {
        Format::Json
    }
}

fn print_json(doc: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(doc).unwrap_or_else(|_| doc.to_string())
    );
}
