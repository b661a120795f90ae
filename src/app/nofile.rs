//! The open-file limit: every connection is a descriptor, and every held write keeps its
//! connection open. The soft `RLIMIT_NOFILE` is often 1024 (shells, some container runtimes)
//! below a hard limit of hundreds of thousands; it is raised to the hard limit at start.

use crate::config::GuardConfig;

/// Descriptors the process uses besides connections (listeners, runtimes, the log), a
/// generous estimate for the start-up warning.
const BASE: usize = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, and returns the soft limit in effect
/// (`usize::MAX`: unlimited or unknown).
pub(super) fn raise() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`, a valid rlimit.
    #[allow(unsafe_code)]
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return usize::MAX;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads only `raised`, a valid rlimit; raising the soft limit up to
        // the hard one needs no privilege.
        #[allow(unsafe_code)]
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
        if set == 0 {
            tracing::info!(
                from = lim.rlim_cur,
                to = lim.rlim_max,
                "raised the open-file limit to its hard limit"
            );
            lim = raised;
        } else {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                soft = lim.rlim_cur,
                hard = lim.rlim_max,
                "cannot raise the open-file limit"
            );
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// Descriptors that holding `guard.hold_max_requests` writes needs: one per held write, one
/// per released write on its way to the app, the reads' `reserve` and the process's own.
pub(super) fn needed(guard: &GuardConfig, reserve: usize) -> usize {
    guard
        .hold_max_requests
        .saturating_add(guard.release_concurrency.min(guard.hold_max_requests))
        .saturating_add(reserve)
        .saturating_add(BASE)
}

/// Warns when the limit cannot hold `guard.hold_max_requests` writes: past the headroom,
/// guarded writes get the 503 at once instead of being held.
pub(super) fn warn_if_short(limit: usize, guard: &GuardConfig, reserve: usize) {
    let needed = needed(guard, reserve);
    if limit < needed {
        tracing::warn!(
            limit,
            needed,
            hold_max_requests = guard.hold_max_requests,
            "the open-file limit (RLIMIT_NOFILE) is below what guard.hold_max_requests needs: \
             near the limit, guarded writes get the 503 at once instead of being held; raise \
             it (systemd LimitNOFILE=, ulimit -n, docker --ulimit nofile=)"
        );
    }
}
