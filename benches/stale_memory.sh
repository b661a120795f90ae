#!/usr/bin/env bash
# Stale reads: the memory budget holds. Builds writeguard (release), runs it with
# [stale] enabled = true and max_bytes = 16MiB in front of an upstream of distinct cacheable
# 16 KiB pages, asks for ten times the budget of them (twice), and reports writeguard's VmRSS
# before and after, what /metrics says the store holds and evicted, and how many of the last
# 100 pages are served from the store once the upstream is stopped. See benches/README.md,
# "Stale reads: memory".
#
#   bash benches/stale_memory.sh
#   bash benches/stale_memory.sh --off            # for comparison: [stale] left out
#   bash benches/stale_memory.sh --budget 64MiB   # other budget (--page, --factor, --conns)
#
# Environment (all optional):
#   WG_BIN          writeguard binary to measure (default: cargo build --release, then
#                   target/release/writeguard)
#   WG_BIN_DESC     what that binary is, for the report (e.g. "commit abc1234")
#   WG_LOG          passed to writeguard as WRITEGUARD_LOG (warn)
#
# Loopback only; bounded (the whole run is killed after 15 minutes); writeguard is stopped on
# exit. Needs python3 (standard library only).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

if [[ -z "${WG_BIN:-}" ]]; then
    (cd "$REPO" && cargo build --release)
    WG_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/writeguard"
    WG_BIN_DESC="work tree at $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo '?')"
fi
[[ -x "$WG_BIN" ]] || { echo "no writeguard binary at $WG_BIN" >&2; exit 1; }

echo "writeguard: $WG_BIN (${WG_BIN_DESC:-not described: set WG_BIN_DESC})"
echo "machine:    $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ)"
exec timeout --signal=TERM --kill-after=15 900 python3 "$HERE/stale_memory.py" --bin "$WG_BIN" "$@"
