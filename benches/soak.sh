#!/usr/bin/env bash
# Soak test (not in CI): N minutes (default 30) of mixed load while the guard flaps, then
# the reliability invariants (exactly-once writes, reads never failing) reconciled against
# a ledger upstream, and writeguard's RSS at start and end. See benches/README.md, "Soak".
#
#   bash benches/soak.sh [MINUTES] [extra soak.py options, e.g. --hold 0s --threads 2]
#
# WG_BIN=/path/to/writeguard skips the release build. Needs python3 (standard library).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
shift || true
if [[ -z "${WG_BIN:-}" ]]; then
    cargo build --release --locked --quiet
    WG_BIN="$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/writeguard"
fi
echo "writeguard: $WG_BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), $(nproc) cores"
exec python3 benches/soak/soak.py --bin "$WG_BIN" --minutes "$minutes" \
    --samples "$(pwd)/tests/fixtures/upsun" "$@"
