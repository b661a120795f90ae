//! The command line's shape: commands, flags, their help, and how flag values are read.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config;

#[derive(Parser, Debug)]
#[command(
    name = "writeguard",
    version,
    about = "Keeps writes safe while your app deploys",
    after_help = "Exit codes: 0 ok, 1 refused or failed, 2 usage or config error, 3 the admin API unreachable or too slow (--timeout)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Config file
    #[arg(short = 'c', long = "config", env = "WRITEGUARD_CONFIG", default_value = config::DEFAULT_PATH)]
    pub path: PathBuf,
}

/// Where a running instance's admin API is, and how long to wait for it.
#[derive(Args, Debug, Clone)]
pub struct Connect {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Admin API base URL, like http://127.0.0.1:9090 (default: http://<admin.listen> from the config)
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// How long to wait for the admin API, connecting and answering (`engage --wait`: how
    /// long the wait may take, and 5s more for the answer), like 30s, 10m, 1h 30m
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub timeout: Duration,
}

/// The operator's bearer token.
#[derive(Args, Debug, Clone)]
pub struct Auth {
    /// Bearer token (default: the config's admin.token)
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
}

/// The variable the token flag also reads.
pub const TOKEN_ENV: &str = "WRITEGUARD_ADMIN_TOKEN";

/// How answers are printed.
#[derive(Args, Debug, Clone, Copy)]
pub struct Output {
    /// Print the admin API's JSON answer (the default when stdout is not a terminal)
    #[arg(long, conflicts_with = "human")]
    pub json: bool,
    /// Print a short summary for people (the default when stdout is a terminal)
    #[arg(long)]
    pub human: bool,
}

/// The variable the deploy secret flag also reads (as does `webhooks.secret`).
pub const SECRET_ENV: &str = "WRITEGUARD_WEBHOOKS_SECRET";

/// What `deploy` reports.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployPhase {
    /// The deploy started: engage
    Start,
    /// The deploy finished: release
    Finish,
    /// The deploy was cancelled: release
    Cancel,
}

impl DeployPhase {
    /// The event's `type`.
    pub fn event_type(self) -> &'static str {
        match self {
            DeployPhase::Start => "deploy.started",
            DeployPhase::Finish => "deploy.finished",
            DeployPhase::Cancel => "deploy.cancelled",
        }
    }
}

/// What `engage --wait` waits for before it answers.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// No guarded write in flight through this instance
    Quiesced,
    /// Every replica sharing the state applied the engagement
    All,
}

impl WaitFor {
    /// As the admin API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitFor::Quiesced => "quiesced",
            WaitFor::All => "all",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the proxy and admin listeners
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Take the listening sockets over from a running instance (send it SIGQUIT)
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the config without opening any port
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also print every setting's effective value and where it came from (file,
        /// environment variable, default); secrets are masked
        #[arg(long)]
        explain: bool,
    },
    /// Show the guard state of a running instance
    Status {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        auth: Auth,
        #[command(flatten)]
        output: Output,
    },
    /// Engage the guard by hand
    Engage {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        auth: Auth,
        #[command(flatten)]
        output: Output,
        /// Why: visitors see it (on the maintenance page and in the 503's problem+json), and so does /status
        #[arg(long)]
        reason: Option<String>,
        /// How long, like 30s, 10m, 1h 30m (default: guard.max_engaged)
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        ttl: Option<Duration>,
        /// Answer only once no guarded write is in flight here (`quiesced`), or once every
        /// replica sharing the state applied the engagement (`all`), within --timeout (then
        /// exit 1; the engagement stays)
        #[arg(long)]
        wait: Option<WaitFor>,
    },
    /// Release manual engagements; exit 1 when the guard is still engaged afterwards
    Release {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        auth: Auth,
        #[command(flatten)]
        output: Output,
        /// Release every engagement, Upsun ones included
        #[arg(long)]
        all: bool,
    },
    /// Show the audit log, newest first
    History {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        auth: Auth,
        #[command(flatten)]
        output: Output,
        /// How many records (1 to 1000; default 100)
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: Option<u16>,
    },
    /// Show the last deploys seen, newest first, with their durations
    Deploys {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        auth: Auth,
        #[command(flatten)]
        output: Output,
    },
    /// Make a running instance re-read its config file (as SIGHUP does) and say what changed
    /// or why the file was refused
    Reload {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        auth: Auth,
        #[command(flatten)]
        output: Output,
    },
    /// Send a signed deploy event (Standard Webhooks) to `POST /webhooks/deploy`: `start`
    /// engages the guard, `finish` and `cancel` release it. The one step a CI job runs;
    /// needs the webhook secret, not the admin token
    Deploy {
        /// What happened to the deploy
        #[arg(value_enum)]
        phase: DeployPhase,
        /// The deploy's id (the same for its start and its finish), like a CI run id
        #[arg(long)]
        id: String,
        /// The endpoint, like http://127.0.0.1:9090/webhooks/deploy (default: the config's
        /// admin.listen)
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The webhook secret, whsec_... (default: the config's webhooks.secret)
        #[arg(long, env = SECRET_ENV, hide_env_values = true)]
        secret: Option<String>,
        /// The environment deployed, for the dashboard and the audit log
        #[arg(long)]
        environment: Option<String>,
        /// Why the guard engages: visitors see it
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// How long to wait for the answer, like 10s
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
        timeout: Duration,
    },
    /// Exit 0 when the admin API's /readyz answers 200 within --timeout, else 1 (3 when it
    /// cannot be reached); needs no token
    Healthcheck {
        #[command(flatten)]
        connect: Connect,
    },
}

/// A duration flag, in our words when it is not one.
fn duration(raw: &str) -> Result<Duration, String> {
    crate::duration::parse(raw).map_err(|e| e.to_string())
}
