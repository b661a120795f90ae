#!/usr/bin/env bash
# Load comparison: writeguard against nginx and HAProxy on the same box, same upstream,
# equivalent configs (1 worker each, upstream keep-alive, the same 503 rule for POST).
#
#   bash benches/load/run.sh
#
# What it does (details in benches/README.md, "Load comparison"):
#   1. installs nginx, haproxy, wrk (and python3, curl) with apt-get when missing;
#   2. builds writeguard with `cargo build --release`, unless WG_BIN points to a binary;
#   3. starts, on 127.0.0.1 only: an upstream nginx (1 worker; /small and /16k), writeguard
#      (threads = 1, guard engaged through POST /guard), nginx (1 worker) and HAProxy
#      (nbthread 1) in front of it;
#   4. checks each proxy answers alike (200, 16 KiB, 503 + Retry-After, keep-alive kept
#      after the 503);
#   5. idle memory: opens WG_LOAD_IDLE keep-alive connections (one request each) to each proxy,
#      reports the VmRSS delta per 1,000;
#   6. runs the scenarios with `wrk -t1 -c64` in interleaved rounds (per scenario: writeguard,
#      nginx, HAProxy, then the next scenario; then the next round), sampling the CPU time of
#      each proxy's processes from /proc/<pid>/stat around each run;
#   7. prints the table (also written to $OUT/summary.md) and stops everything it started.
#
# Environment (all optional):
#   WG_BIN                 writeguard binary to test (default: build target/release/writeguard)
#   WG_BIN_DESC            what that binary is, for the report (e.g. "commit abc1234")
#   WG_LOAD_ROUNDS         interleaved rounds (3)
#   WG_LOAD_DURATION       seconds per wrk run (5)
#   WG_LOAD_WARMUP         seconds of unmeasured wrk per proxy and scenario before round 1 (1)
#   WG_LOAD_CONNECTIONS    wrk connections (64)
#   WG_LOAD_IDLE           idle connections for the memory test (1000; 0 skips it)
#   WG_LOAD_SCENARIOS      subset of "get_small get_16k post_503 mix"
#   WG_LOAD_PORT_BASE      first of the loopback ports used (24400, below the ephemeral range: upstream, +1 writeguard,
#                          +2 nginx, +3 HAProxy, +9 writeguard's admin API)
#   WG_LOAD_OUT            directory for configs, logs and raw results (default: a new
#                          /tmp/wg-load.XXXXXX, kept after the run)
#   WG_LOG                 passed to writeguard as WRITEGUARD_LOG (default: its own default,
#                          access log off)
#   WG_ENGINE              writeguard's proxy.engine ("hyper" or "native"; default: left
#                          out, the binary's default)
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

ROUNDS=${WG_LOAD_ROUNDS:-3}
DURATION=${WG_LOAD_DURATION:-5}
WARMUP=${WG_LOAD_WARMUP:-1}
CONNS=${WG_LOAD_CONNECTIONS:-64}
IDLE=${WG_LOAD_IDLE:-1000}
SCENARIOS=${WG_LOAD_SCENARIOS:-"get_small get_16k post_503 mix"}
PORT_BASE=${WG_LOAD_PORT_BASE:-24400}
UPSTREAM_PORT=$PORT_BASE
WG_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
HAPROXY_PORT=$((PORT_BASE + 3))
ADMIN_PORT=$((PORT_BASE + 9))
POST_PATH=/api/orders
PROXIES=(writeguard nginx haproxy)
HOST=127.0.0.1

log() { printf '[load %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

for n in ROUNDS DURATION WARMUP CONNS IDLE PORT_BASE; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, got '${!n}'"
done
((ROUNDS >= 1 && DURATION >= 1)) || die "WG_LOAD_ROUNDS and WG_LOAD_DURATION must be >= 1"
for s in $SCENARIOS; do
    case $s in get_small | get_16k | post_503 | mix) ;; *) die "unknown scenario '$s'" ;; esac
done

# ---------------------------------------------------------------- processes and cleanup
STARTED=() # pids of every long-running process this script started
CLIENT=    # the wrk run in progress
cleanup() {
    local pid i alive
    trap - EXIT INT TERM
    [[ -n $CLIENT ]] && kill -TERM "$CLIENT" 2>/dev/null
    ((${#STARTED[@]})) || return 0
    log "stopping ${STARTED[*]}"
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for i in $(seq 50); do
        alive=0
        for pid in "${STARTED[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- 1. tools
export PATH="$PATH:/usr/sbin:/sbin" # nginx and haproxy live there
install_missing() {
    local missing=() fresh=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v python3 >/dev/null || missing+=(python3)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the packaged nginx/haproxy services where it can: they would take CPU
    # (and port 80) during the measurement.
    for s in "${missing[@]}"; do
        case $s in nginx | haproxy) fresh+=("$s") ;; esac
    done
    for s in "${fresh[@]}"; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$s" 2>/dev/null; then
            log "stopping the $s service the package started"
            systemctl stop "$s" || true
        fi
    done
}
install_missing

# ---------------------------------------------------------------- 2. writeguard binary
head_desc() {
    local head dirty
    head=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) || { echo "unknown commit"; return; }
    dirty=$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock build.rs 2>/dev/null)
    echo "commit $head${dirty:+ + uncommitted changes to src/Cargo}"
}
if [[ -n ${WG_BIN:-} ]]; then
    [[ -x $WG_BIN ]] || die "WG_BIN=$WG_BIN is not an executable"
    WG_DESC="${WG_BIN_DESC:-binary given by WG_BIN (repo at $(head_desc))}"
else
    # Recorded before the build: the binary is what the work tree held when it started.
    WG_DESC="$(head_desc), built from the work tree at $(date -u '+%H:%M UTC')"
    log "building writeguard (cargo build --release) from $WG_DESC"
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    WG_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/writeguard
    [[ -x $WG_BIN ]] || die "no binary at $WG_BIN after the build"
fi

# ---------------------------------------------------------------- 3. configs and start
OUT=${WG_LOAD_OUT:-$(mktemp -d /tmp/wg-load.XXXXXX)}
mkdir -p "$OUT/wrk" "$OUT/www" "$OUT/tmp"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/runs.tsv" "$OUT/idle.tsv" "$OUT/keepalive.tsv" "$OUT/writeguard.state"
log "output in $OUT"

CLK=$(getconf CLK_TCK)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= IDLE + 1024)) || die "open-file limit $(ulimit -n) is too low for WG_LOAD_IDLE=$IDLE"

TOKEN=bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
PROBLEM= # writeguard's 503 body, copied into the nginx and HAProxy configs
HOLD_LINE= # writeguard's hold key, when its version has one
ENGINE_LINE='# (proxy.engine: the default)'
[[ -n ${WG_ENGINE:-} ]] && ENGINE_LINE="engine = \"$WG_ENGINE\""

render() { # template -> output, substituting @NAME@
    local text
    text=$(<"$1")
    text=${text//@DIR@/$OUT}
    text=${text//@UPSTREAM_PORT@/$UPSTREAM_PORT}
    text=${text//@WG_PORT@/$WG_PORT}
    text=${text//@NGINX_PORT@/$NGINX_PORT}
    text=${text//@HAPROXY_PORT@/$HAPROXY_PORT}
    text=${text//@ADMIN_PORT@/$ADMIN_PORT}
    text=${text//@TOKEN@/$TOKEN}
    text=${text//@PROBLEM@/$PROBLEM}
    text=${text//@HOLD_LINE@/$HOLD_LINE}
    text=${text//@ENGINE_LINE@/$ENGINE_LINE}
    printf '%s\n' "$text" >"$2"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_port() { # port pid name log
    local i
    for i in $(seq 100); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || { tail -20 "$4" >&2; die "$3 exited at start (log: $4)"; }
        sleep 0.1
    done
    tail -20 "$4" >&2
    die "$3 is not listening on $HOST:$1 after 10 s (log: $4)"
}

for p in "$UPSTREAM_PORT" "$WG_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$ADMIN_PORT"; do
    port_open "$p" && die "port $HOST:$p is already in use (set WG_LOAD_PORT_BASE)"
done

# The upstream.
head -c 16384 /dev/zero | tr '\0' 'a' >"$OUT/www/16k.bin"
head -c 1024 /dev/zero | tr '\0' 'x' >"$OUT/post-1k.bin"
render "$HERE/upstream-nginx.conf.in" "$OUT/upstream-nginx.conf"
nginx -q -t -p "$OUT" -e "$OUT/upstream-error.log" -c "$OUT/upstream-nginx.conf" ||
    die "upstream nginx config rejected"
nginx -p "$OUT" -e "$OUT/upstream-error.log" -c "$OUT/upstream-nginx.conf" >"$OUT/upstream.out" 2>&1 &
UPSTREAM_PID=$!
STARTED+=("$UPSTREAM_PID")
wait_port "$UPSTREAM_PORT" "$UPSTREAM_PID" "upstream nginx" "$OUT/upstream.out"

# writeguard, then its guard engaged. Versions with Hold would hold a guarded write (10 s by
# default) before the 503: hold = "0s" answers at once, like nginx and HAProxy; older versions
# do not know the key (unknown keys are errors), so it is left out for them.
wg_check() { env $(compgen -e | grep '^WRITEGUARD_' | sed 's/^/-u /') "$WG_BIN" check -c "$OUT/writeguard.toml" >"$OUT/writeguard-check.log" 2>&1; }
HOLD_LINE='hold = "0s"'
render "$HERE/writeguard.toml.in" "$OUT/writeguard.toml"
if ! wg_check; then
    HOLD_LINE='# (no hold key in this version)'
    render "$HERE/writeguard.toml.in" "$OUT/writeguard.toml"
    wg_check || { cat "$OUT/writeguard-check.log" >&2; die "writeguard rejects the bench config"; }
fi
(
    for v in $(compgen -e | grep '^WRITEGUARD_' || true); do unset "$v"; done
    [[ -n ${WG_LOG:-} ]] && export WRITEGUARD_LOG=$WG_LOG
    exec "$WG_BIN" run -c "$OUT/writeguard.toml"
) >"$OUT/writeguard.log" 2>&1 &
WG_PID=$!
STARTED+=("$WG_PID")
wait_port "$WG_PORT" "$WG_PID" writeguard "$OUT/writeguard.log"
wait_port "$ADMIN_PORT" "$WG_PID" "writeguard admin" "$OUT/writeguard.log"
for i in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$ADMIN_PORT/readyz") == 200 ]] && break
    ((i < 100)) || die "writeguard never became ready"
    sleep 0.1
done
curl -fsS -o "$OUT/engage.json" -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"reason":"load comparison"}' \
    "http://$HOST:$ADMIN_PORT/guard" || die "cannot engage the guard through the admin API"
code=$(curl -s -o "$OUT/problem.json" -w '%{http_code}' -X POST --data-binary 'x' "http://$HOST:$WG_PORT$POST_PATH")
[[ $code == 503 ]] || die "writeguard answered $code to a POST with the guard engaged"
PROBLEM=$(<"$OUT/problem.json")
[[ $PROBLEM != *"'"* && $PROBLEM != *$'\n'* ]] || die "unexpected 503 body: $PROBLEM"

# nginx and HAProxy in front of the same upstream, answering POST like the guard.
render "$HERE/proxy-nginx.conf.in" "$OUT/proxy-nginx.conf"
nginx -q -t -p "$OUT" -e "$OUT/nginx-error.log" -c "$OUT/proxy-nginx.conf" || die "nginx config rejected"
nginx -p "$OUT" -e "$OUT/nginx-error.log" -c "$OUT/proxy-nginx.conf" >"$OUT/nginx.out" 2>&1 &
NGINX_PID=$!
STARTED+=("$NGINX_PID")
render "$HERE/haproxy.cfg.in" "$OUT/haproxy.cfg"
haproxy -q -c -f "$OUT/haproxy.cfg" || die "HAProxy config rejected"
haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.out" 2>&1 &
HAPROXY_PID=$!
STARTED+=("$HAPROXY_PID")
wait_port "$NGINX_PORT" "$NGINX_PID" nginx "$OUT/nginx.out"
wait_port "$HAPROXY_PORT" "$HAPROXY_PID" HAProxy "$OUT/haproxy.out"

port_of() { case $1 in writeguard) echo "$WG_PORT" ;; nginx) echo "$NGINX_PORT" ;; haproxy) echo "$HAPROXY_PORT" ;; esac; }
pid_of() { case $1 in writeguard) echo "$WG_PID" ;; nginx) echo "$NGINX_PID" ;; haproxy) echo "$HAPROXY_PID" ;; esac; }

# ---------------------------------------------------------------- /proc sampling
proc_tree() { # pid -> "pid,child,child" (nginx: master and its workers)
    local root=$1 out=$1 f line rest ppid
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        rest=${line##*) }
        read -r _ ppid _ <<<"$rest"
        [[ $ppid == "$root" ]] && { f=${f#/proc/}; out+=",${f%/stat}"; }
    done
    echo "$out"
}

cpu_ticks() { # "pid,pid" -> utime+stime of those processes (all their threads), in ticks
    local total=0 pid line rest
    local -a f
    for pid in ${1//,/ }; do
        read -r line 2>/dev/null <"/proc/$pid/stat" || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

passive_opens() { awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "PassiveOpens") c = i; h = 1 } else print $c }' /proc/net/snmp; }
box_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
child_ticks() { # sets CHILD_TICKS: CPU of this shell's finished children (wrk), from `times`
    times >"$OUT/.times" # in this shell: inside $(...) it would report a subshell's children
    CHILD_TICKS=$(awk -v clk="$CLK" 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } printf "%d\n", s * clk }' "$OUT/.times")
}

# ---------------------------------------------------------------- 4. sanity checks
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "checking the three proxies answer alike"
: >"$OUT/checks.txt"
printf 'proxy\tkept\tanswers\treason\n' >"$OUT/keepalive.tsv"
for p in "${PROXIES[@]}"; do
    port=$(port_of "$p")
    small=$(curl -s -w ' %{http_code}' "http://$HOST:$port/small" | tr -d '\n')
    size=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://$HOST:$port/16k")
    post=$(curl -s -D - -o /dev/null -X POST --data-binary @"$OUT/post-1k.bin" "http://$HOST:$port$POST_PATH" | tr -d '\r')
    echo "$p: /small -> $small | /16k -> $size | POST -> $(head -1 <<<"$post") $(grep -i '^retry-after' <<<"$post")" >>"$OUT/checks.txt"
    [[ $small == "hello from upstream"*" 200" ]] || die "$p: GET /small gave '$small'"
    [[ $size == "200 16384" ]] || die "$p: GET /16k gave '$size'"
    [[ $post == *" 503 "* && ${post,,} == *"retry-after: 30"* ]] || die "$p: POST gave: $post"
    ka=$(timeout 20 python3 "$HERE/conns.py" keepalive "$port" "$POST_PATH")
    kept=$(sed -n 's/.*kept=\([a-z]*\).*/\1/p' <<<"$ka")
    answers=$(sed -n 's/.*answers=\([^ ]*\).*/\1/p' <<<"$ka")
    reason=$(sed -n 's/.*reason=\([^ ]*\).*/\1/p' <<<"$ka")
    printf '%s\t%s\t%s\t%s\n' "$p" "$kept" "$answers" "$reason" >>"$OUT/keepalive.tsv"
    echo "$p: keep-alive after 503: $ka" >>"$OUT/checks.txt"
    [[ $kept == yes ]] || log "NOTE: $p closed the connection after a guarded POST ($ka)"
done
cat "$OUT/checks.txt" >&2

# ---------------------------------------------------------------- 5. idle memory
if ((IDLE > 0)); then
    printf 'proxy\topened\tfailed\tstill_open\trss_before_kb\trss_after_kb\n' >"$OUT/idle.tsv"
    for p in "${PROXIES[@]}"; do
        log "idle memory: $IDLE keep-alive connections to $p"
        res=$(timeout 120 python3 "$HERE/conns.py" idle "$(port_of "$p")" "$IDLE" "$(proc_tree "$(pid_of "$p")")" 2) ||
            die "idle-connection test failed for $p"
        get() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$res"; }
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$(get opened)" "$(get failed)" "$(get still_open)" \
            "$(get rss_before_kb)" "$(get rss_after_kb)" >>"$OUT/idle.tsv"
        echo "$p: $res" >&2
        sleep 1
    done
fi

# ---------------------------------------------------------------- 6. load
scenario_args() { # scenario -> "mode path"
    case $1 in
    get_small) echo "get /small" ;;
    get_16k) echo "get /16k" ;;
    post_503) echo "post $POST_PATH" ;;
    mix) echo "mix /small" ;;
    esac
}

run_wrk() { # proxy scenario seconds output-file
    local mode path
    read -r mode path <<<"$(scenario_args "$2")"
    # In the background + wait, so that a signal to this script is handled at once.
    WRK_MODE=$mode WRK_POST_PATH=$POST_PATH timeout $(($3 + 30)) \
        wrk -t1 -c"$CONNS" -d"$3"s --timeout 5s --latency -s "$HERE/wrk.lua" \
        "http://$HOST:$(port_of "$1")$path" >"$4" 2>&1 &
    CLIENT=$!
    wait "$CLIENT" || die "wrk failed on $1 $2: $(tail -3 "$4")"
    CLIENT=
}

printf 'round\tscenario\tproxy\trequests\tduration_us\twall_ms\tp50_us\tp99_us\terr_connect\terr_read\terr_write\terr_status\terr_timeout\tproxy_ticks\tupstream_ticks\tclient_ticks\tbox_ticks\tnew_conns\n' >"$OUT/runs.tsv"

run_one() { # round scenario proxy
    local r=$1 s=$2 p=$3 pids ups file c0 c1 u0 u1 w0 w1 b0 b1 o0 o1 t0 t1 line
    pids=$(proc_tree "$(pid_of "$p")")
    ups=$(proc_tree "$UPSTREAM_PID")
    file="$OUT/wrk/r$r-$s-$p.txt"
    child_ticks
    c0=$(cpu_ticks "$pids") u0=$(cpu_ticks "$ups") w0=$CHILD_TICKS b0=$(box_busy_ticks) o0=$(passive_opens)
    t0=$(date +%s%N)
    run_wrk "$p" "$s" "$DURATION" "$file"
    t1=$(date +%s%N)
    child_ticks
    c1=$(cpu_ticks "$pids") u1=$(cpu_ticks "$ups") w1=$CHILD_TICKS b1=$(box_busy_ticks) o1=$(passive_opens)
    line=$(grep '^WRK_RESULT' "$file") || die "no result from wrk in $file"
    val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" ${line#WRK_RESULT}"; }
    printf '%s\t' "$r" "$s" "$p" "$(val requests)" "$(val duration_us)" "$(((t1 - t0) / 1000000))" \
        "$(val p50_us)" "$(val p99_us)" "$(val err_connect)" "$(val err_read)" "$(val err_write)" \
        "$(val err_status)" "$(val err_timeout)" "$((c1 - c0))" "$((u1 - u0))" "$((w1 - w0))" \
        "$((b1 - b0))" >>"$OUT/runs.tsv"
    printf '%s\n' "$((o1 - o0))" >>"$OUT/runs.tsv"
    local req=$(val requests) dus=$(val duration_us)
    log "round $r $s $p: $((req * 1000000 / (dus > 0 ? dus : 1))) req/s, p99 $(val p99_us) µs," \
        "CPU $(((c1 - c0) * 1000000 / CLK / (req > 0 ? req : 1))) µs/req, $((o1 - o0)) new conns," \
        "$(val err_status) non-2xx"
}

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s per proxy and scenario"
    for s in $SCENARIOS; do
        for p in "${PROXIES[@]}"; do run_wrk "$p" "$s" "$WARMUP" "$OUT/wrk/warmup-$s-$p.txt"; done
    done
fi

n_runs=$((ROUNDS * $(wc -w <<<"$SCENARIOS") * ${#PROXIES[@]}))
log "load: $ROUNDS rounds, $n_runs runs of ${DURATION}s, wrk -t1 -c$CONNS"
for r in $(seq "$ROUNDS"); do
    for s in $SCENARIOS; do
        for p in "${PROXIES[@]}"; do run_one "$r" "$s" "$p"; done
    done
done

# ---------------------------------------------------------------- 7. report
{
    echo "# Load comparison, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- writeguard: $("$WG_BIN" --version 2>/dev/null | head -1), $WG_DESC; binary $WG_BIN; proxy.engine ${WG_ENGINE:-(default)}"
    echo "- nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
    echo "- wrk -t1 -c$CONNS, $ROUNDS interleaved rounds x ${DURATION}s per run, ${WARMUP}s warm-up; medians over rounds; ratios are medians of per-round ratios"
    echo
    python3 "$HERE/report.py" "$OUT" "$CLK"
} >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
echo
log "raw results, configs and logs: $OUT"
