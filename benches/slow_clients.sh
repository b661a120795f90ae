#!/usr/bin/env bash
# Slow clients: latency of normal requests through writeguard with and without 2,000 slow
# connections held open against it.
#
#   1. installs slowhttptest, wrk and nginx with apt-get when missing;
#   2. builds writeguard with `cargo build --release`, unless WG_BIN points to a binary;
#   3. starts, on 127.0.0.1 only: an upstream nginx (1 worker, `return 200` on /small) and
#      writeguard in front of it (threads = 1, the default timeouts: header_timeout 30 s,
#      body_idle_timeout 30 s, body_timeout 5 m; guard not engaged; log level warn);
#   4. for each scenario, measures normal GETs with wrk (1 thread, WG_SLOW_WRK_CONNS
#      connections, WG_SLOW_DURATION seconds, --latency):
#        baseline   nothing else running;
#        slowloris  slowhttptest -H: WG_SLOW_CONNS connections trickling header lines, one
#                   every 5 s, never finishing the head;
#        slowbody   slowhttptest -B: WG_SLOW_CONNS POSTs to /read announcing 100,000 bytes
#                   and sending 10 every 5 s (forwarded upstream as they come; the upstream
#                   reads the whole body before it answers);
#        slowbody_early  the same to /small, which the upstream answers at once, before the
#                   body is in (as an app does that rejects an upload early);
#      wrk starts once the slow connections are established (counted with ss), and the
#      count is sampled again when wrk ends, so every slow connection was open throughout.
#   5. prints a table (p50, p99, requests/s, errors, slow connections open at start / end)
#      and keeps everything in the directory it names (wrk/*.txt, slowhttptest CSVs, logs).
#
# Variables: WG_BIN, WG_BIN_DESC, WG_SLOW_CONNS (2000), WG_SLOW_DURATION (10),
# WG_SLOW_WRK_CONNS (10), WG_SLOW_PORT_BASE (29600: upstream, +1 writeguard, +9 admin).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
HOST=127.0.0.1
SLOW=${WG_SLOW_CONNS:-2000}
DUR=${WG_SLOW_DURATION:-10}
WRK_CONNS=${WG_SLOW_WRK_CONNS:-10}
BASE=${WG_SLOW_PORT_BASE:-29600}
UPSTREAM_PORT=$BASE
WG_PORT=$((BASE + 1))
ADMIN_PORT=$((BASE + 9))

log() { printf '[slow_clients] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v slowhttptest >/dev/null || missing+=(slowhttptest)
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v ss >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null
fi

if [[ -n ${WG_BIN:-} ]]; then
    [[ -x $WG_BIN ]] || die "WG_BIN=$WG_BIN is not an executable"
    WG_DESC=${WG_BIN_DESC:-"binary given by WG_BIN"}
else
    log "building writeguard (release)"
    (cd "$REPO" && cargo build --release --bin writeguard >&2)
    WG_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/writeguard
    WG_DESC="work tree at $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src || echo ' + changes')"
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 2 * SLOW + 1024)) || die "open-file limit $(ulimit -n) too low for $SLOW slow connections"

OUT=${WG_SLOW_OUT:-$(mktemp -d /tmp/wg-slow.XXXXXX)}
mkdir -p "$OUT/wrk" "$OUT/tmp"
log "output in $OUT"

STARTED=()
cleanup() {
    local p
    for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
wait_port() { # port name log
    local i
    for i in $(seq 100); do
        port_open "$1" && return 0
        sleep 0.1
    done
    tail -20 "$3" >&2
    die "$2 is not listening on $HOST:$1 after 10 s"
}
for p in "$UPSTREAM_PORT" "$WG_PORT" "$ADMIN_PORT"; do
    port_open "$p" && die "port $HOST:$p is in use (set WG_SLOW_PORT_BASE)"
done

cat >"$OUT/upstream-nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/upstream.pid;
error_log $OUT/upstream-error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_timeout 300s;
    client_body_temp_path $OUT/tmp/body;
    proxy_temp_path $OUT/tmp/proxy;
    fastcgi_temp_path $OUT/tmp/fastcgi;
    uwsgi_temp_path $OUT/tmp/uwsgi;
    scgi_temp_path $OUT/tmp/scgi;
    server {
        listen $HOST:$UPSTREAM_PORT backlog=4096;
        location / { return 200 "hello from upstream\n"; }
        # Reads the whole request body before answering (nginx buffers it for proxy_pass).
        location = /read { proxy_pass http://$HOST:$UPSTREAM_PORT/small; }
    }
}
EOF
nginx -p "$OUT" -e "$OUT/upstream-error.log" -c "$OUT/upstream-nginx.conf" >"$OUT/upstream.out" 2>&1 &
STARTED+=($!)
wait_port "$UPSTREAM_PORT" "upstream nginx" "$OUT/upstream.out"

cat >"$OUT/writeguard.toml" <<EOF
[proxy]
listen = "$HOST:$WG_PORT"
upstream = "http://$HOST:$UPSTREAM_PORT"

[admin]
listen = "$HOST:$ADMIN_PORT"
token = "slow-clients-bench-token"

[state]
path = "$OUT/writeguard.state"

[server]
threads = 1
shutdown_grace = "2s"
upgrade_sock = "$OUT/writeguard-upgrade.sock"
pid_file = "$OUT/writeguard.pid"
EOF
WRITEGUARD_LOG=warn "$WG_BIN" run -c "$OUT/writeguard.toml" >"$OUT/writeguard.log" 2>&1 &
STARTED+=($!)
wait_port "$WG_PORT" writeguard "$OUT/writeguard.log"

established() { # connections to writeguard's proxy port, client side
    ss -Htn state established "( dport = :$WG_PORT )" | wc -l
}

# One wrk run; prints "p50 p99 rps errors".
measure() { # name
    wrk -t1 -c"$WRK_CONNS" -d"${DUR}s" --latency "http://$HOST:$WG_PORT/small" >"$OUT/wrk/$1.txt"
    awk '
        $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
        /^Requests\/sec/ { rps = $2 }
        /Non-2xx/ { err += $NF } /Socket errors/ { for (i = 4; i <= NF; i += 2) err += $i }
        END { printf "%s %s %s %d\n", p50, p99, rps, err }' "$OUT/wrk/$1.txt"
}

SLOW_PID=
slow_start() { # name path, slowhttptest mode args...
    local name=$1 path=$2
    shift 2
    slowhttptest "$@" -c "$SLOW" -r 1000 -i 5 -l $((DUR + 25)) -u "http://$HOST:$WG_PORT$path" \
        -g -o "$OUT/$name" >"$OUT/$name.out" 2>&1 &
    SLOW_PID=$!
    STARTED+=("$SLOW_PID")
    local i
    for i in $(seq 150); do
        (($(established) >= SLOW * 95 / 100)) && return 0
        sleep 0.1
    done
    log "$name: only $(established) slow connections after 15 s"
}
slow_stop() {
    kill "$SLOW_PID" 2>/dev/null || true
    wait "$SLOW_PID" 2>/dev/null || true
    local i
    for i in $(seq 100); do
        (($(established) == 0)) && return 0
        sleep 0.1
    done
}

printf 'scenario\tp50\tp99\treq/s\terrors\tslow_open_start\tslow_open_end\n' >"$OUT/results.tsv"
run() { # name [path slowhttptest args]
    local name=$1 start=0 end=0 r
    shift
    if (($#)); then
        slow_start "$name" "$@"
        start=$(established)
    fi
    r=$(measure "$name")
    if (($#)); then
        end=$(established) # wrk's connections are closed by now
        slow_stop
    fi
    read -r p50 p99 rps err <<<"$r"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$p50" "$p99" "$rps" "$err" "$start" "$end" >>"$OUT/results.tsv"
    log "$name: p50 $p50 p99 $p99 req/s $rps errors $err (slow open: $start at start, $end at end)"
}

log "warm-up"
wrk -t1 -c"$WRK_CONNS" -d2s "http://$HOST:$WG_PORT/small" >/dev/null
run baseline
run slowloris /small -H
run slowbody /read -B -t POST -s 100000 -x 10
run slowbody_early /small -B -t POST -s 100000 -x 10
run baseline2

{
    echo "writeguard: $WG_DESC; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "wrk -t1 -c$WRK_CONNS -d${DUR}s --latency; $SLOW slow connections (slowhttptest -c $SLOW -r 1000 -i 5)"
    echo
    column -t -s $'\t' "$OUT/results.tsv"
} | tee "$OUT/summary.txt"
