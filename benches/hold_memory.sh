#!/usr/bin/env bash
# Hold: 10,000 held writes. Builds writeguard (release), runs it with hold = "60s" and
# hold_max_requests = 10000 in front of a trivial upstream, engages the guard, holds 10,000
# POSTs with a 1 KiB body each, and reports writeguard's VmRSS before and while they are held,
# then releases and checks the upstream got each of them. See benches/README.md, "Hold".
#
#   bash benches/hold_memory.sh
#   bash benches/hold_memory.sh --idle   # for comparison: the same connections, idle after
#                                        # one GET each, no request held
#
# Environment (all optional):
#   WG_BIN          writeguard binary to measure (default: cargo build --release, then
#                   target/release/writeguard)
#   WG_BIN_DESC     what that binary is, for the report (e.g. "commit abc1234")
#   WG_HOLD_N       held writes (10000)
#   WG_HOLD_BODY    body bytes per write (1024)
#   WG_HOLD         guard.hold ("60s")
#   WG_HOLD_ENGINE  proxy.engine, "native" or "hyper" (default: the binary's default)
#   WG_LOG          passed to writeguard as WRITEGUARD_LOG (warn)
#
# Loopback only; bounded (the whole run is killed after 10 minutes); writeguard is stopped on
# exit. Needs python3 (standard library only) and an open-files hard limit above N + 2000.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
N=${WG_HOLD_N:-10000}

if [[ -z "${WG_BIN:-}" ]]; then
    (cd "$REPO" && cargo build --release)
    WG_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/writeguard"
    WG_BIN_DESC="work tree at $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo '?')"
fi
[[ -x "$WG_BIN" ]] || { echo "no writeguard binary at $WG_BIN" >&2; exit 1; }

# One fd per held connection, in writeguard and in the clients (same limit, inherited).
hard=$(ulimit -Hn)
if [[ "$hard" != unlimited && "$hard" -lt $((N + 2000)) ]]; then
    echo "open-files hard limit $hard is below $((N + 2000)); raise it first" >&2
    exit 1
fi
if [[ "$hard" == unlimited ]]; then ulimit -n $((N + 4000)); else ulimit -n "$hard"; fi

echo "writeguard: $WG_BIN (${WG_BIN_DESC:-not described: set WG_BIN_DESC})"
echo "machine:    $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ)"
exec timeout --signal=TERM --kill-after=15 600 python3 "$HERE/hold_memory.py" \
    --bin "$WG_BIN" --n "$N" --body "${WG_HOLD_BODY:-1024}" --hold "${WG_HOLD:-60s}" \
    ${WG_HOLD_ENGINE:+--engine "$WG_HOLD_ENGINE"} "$@"
