//! Why a command failed, and the one map from that to its exit code: 0 ok, 1 refused or
//! failed, 2 usage or config, 3 the admin API unreachable or too slow. Each failure prints
//! one message on stderr that says what to do.

use std::process::ExitCode;

#[derive(Debug)]
pub enum Failure {
    /// A flag or the config cannot be used as given.
    Usage(String),
    /// The admin API answered with an error status (its message, and what to do).
    Refused(String),
    /// The command did not get what it asked for: the guard is still engaged after a
    /// release, the instance is not ready, the config file was refused.
    Failed(String),
    /// Already said in the log (a `run` that could not start).
    Logged,
    /// No connection to the admin API, or it closed one without answering.
    Unreachable(String),
    /// No whole answer within `--timeout`.
    TimedOut(String),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Refused(_) | Failure::Failed(_) | Failure::Logged => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) | Failure::TimedOut(_) => 3,
        }
    }

    /// Prints the message on stderr and gives the exit code.
    pub fn exit(self) -> ExitCode {
        match &self {
            Failure::Usage(m)
            | Failure::Refused(m)
            | Failure::Failed(m)
            | Failure::Unreachable(m)
            | Failure::TimedOut(m) => eprintln!("writeguard: {m}"),
            Failure::Logged => {}
        }
        ExitCode::from(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map, pinned: the README's table of exit codes.
    #[test]
    fn each_failure_has_its_exit_code() {
        let m = String::new;
        let cases = [
            (Failure::Refused(m()), 1),
            (Failure::Failed(m()), 1),
            (Failure::Logged, 1),
            (Failure::Usage(m()), 2),
            (Failure::Unreachable(m()), 3),
            (Failure::TimedOut(m()), 3),
        ];
        for (failure, code) in cases {
            assert_eq!(failure.code(), code, "{failure:?}");
        }
    }
}
