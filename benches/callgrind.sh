#!/usr/bin/env bash
# Instructions per proxied GET and per guarded 503, under callgrind, for one or more
# writeguard binaries (the method of benches/README.md, "Instructions per proxied GET"):
#   bash benches/callgrind.sh target/release/writeguard [other/writeguard ...]
# Needs valgrind, wrk and nginx (Debian packages). Loopback only; ports WG_CG_PORT_BASE..+2
# (default 24510). Each binary: started under callgrind, warmed up 3 s, counters zeroed,
# `wrk -t1 -c8 -d10s`, counters dumped; instructions / requests. WG_CG_OUT=<dir> keeps each
# dump there as <n>-<mode>.callgrind (n: the binary's place in the arguments, from 1), for
# `callgrind_annotate`. WG_ENGINE=hyper|native sets proxy.engine (default: the binary's).
# Modes (WG_CG_MODES, default "get get_stale post"): `get`, the proxied GET; `get_stale`, the
# same GET with `[stale] enabled = true` appended to the config (nginx's `/small` carries no
# caching headers: stored, with no freshness, and copied again at most once a second); `post`,
# the guarded 503.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
base="${WG_CG_PORT_BASE:-24510}"
up=$base; wg=$((base + 1)); admin=$((base + 2)); token=bench-token-0123456789
dir=$(mktemp -d)
mkdir -p "$dir/tmp" "$dir/www"
sed -e "s#@DIR@#$dir#g" -e "s#@UPSTREAM_PORT@#$up#g" benches/load/upstream-nginx.conf.in > "$dir/up.conf"
nginx -c "$dir/up.conf" -p "$dir" &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
sleep 1

measure() { # BIN MODE N
  local bin=$1 mode=$2 n=$3 vg out reqs ir dump
  sed -e "s#@DIR@#$dir#g" -e "s#@UPSTREAM_PORT@#$up#g" -e "s#@WG_PORT@#$wg#g" \
      -e "s#@ADMIN_PORT@#$admin#g" -e "s#@TOKEN@#$token#g" -e "s#@HOLD_LINE@#hold = \"0s\"#g" \
      -e "s#@ENGINE_LINE@#${WG_ENGINE:+engine = \"$WG_ENGINE\"}#g" \
      benches/load/writeguard.toml.in > "$dir/wg.toml"
  if [ "$mode" = get_stale ]; then
    printf '\n[stale]\nenabled = true\n' >> "$dir/wg.toml"
  fi
  local wrk_mode=$mode
  [ "$mode" = get_stale ] && wrk_mode=get
  rm -f "$dir"/writeguard.state* "$dir"/cg.out*
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" run -c "$dir/wg.toml" \
      > "$dir/wg.log" 2>&1 &
  vg=$!
  for _ in $(seq 1 300); do
    curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$admin/readyz" 2>/dev/null | grep -q 200 && break
    sleep 0.2
  done
  if [ "$mode" = post ]; then
    curl -s -X POST -H "authorization: Bearer $token" -d '{"reason":"bench","ttl":"1h"}' \
        "127.0.0.1:$admin/guard" > /dev/null
  fi
  WRK_MODE=$wrk_mode wrk -t1 -c8 -d3s -s benches/load/wrk.lua "http://127.0.0.1:$wg/small" > /dev/null 2>&1
  callgrind_control -z "$vg" > /dev/null 2>&1
  out=$(WRK_MODE=$wrk_mode wrk -t1 -c8 -d10s -s benches/load/wrk.lua "http://127.0.0.1:$wg/small" 2>&1)
  callgrind_control -d "$vg" > /dev/null 2>&1
  sleep 1
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  # The newest dump holds what was counted since the zeroing.
  dump=$(ls -t "$dir"/cg.out.* | head -1)
  ir=$(grep -h '^summary:\|^totals:' "$dump" | head -1 | awk '{print $2}')
  if [ -n "${WG_CG_OUT:-}" ]; then mkdir -p "$WG_CG_OUT"; cp "$dump" "$WG_CG_OUT/$n-$mode.callgrind"; fi
  echo "$bin $mode: $reqs requests, $ir instructions, $((ir / reqs)) per request"
  kill "$vg"; wait "$vg" 2>/dev/null || true
}

for mode in ${WG_CG_MODES:-get get_stale post}; do
  n=0
  for bin in "$@"; do
    n=$((n + 1))
    measure "$bin" "$mode" "$n"
  done
done
