#!/usr/bin/env python3
"""Propagation across replicas: how soon a change made through one replica's admin API shows
on the proxies of the other replicas sharing its guard state in Redis.

Starts its own redis-server (no persistence, a free loopback port, a temp dir), a trivial
upstream (a process of its own) and REPLICAS writeguard replicas (hold = "0s", threads = 1,
[state] backend = "redis", one site, stale_after = "1s"). Then FLIPS times:

- engage with POST /guard on replica wg-0 and, from the moment its 201 has arrived, POST
  every ~1 ms on an open keep-alive connection to each replica's proxy until that replica
  answers 503;
- release with DELETE /guard on replica wg-1 and, the same way, POST until each replica's
  proxy forwards the POST again (the upstream's 200).

A sample is the time from the admin answer until a replica's proxy answered with the new
state (an upper bound: the answer's arrival), one per flip and replica. The samples of the
replica that made the change (its own first POST) are reported apart. Prints markdown tables;
exits non-zero when a replica did not show a flip within --timeout. Raw samples and every
process's log stay in the directory it names. Standard library only; loopback only; the whole
run is bounded by --max-seconds.

  python3 benches/propagation.py --bin target/release/writeguard [--flips 500] [--replicas 3]
"""
import argparse
import http.client
import http.server
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "propagation-bench-token"
SITE = "bench"
FORM = {"content-type": "application/x-www-form-urlencoded"}
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}


def free_ports(n):
    """n distinct free loopback ports (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        # One write: a head and a body sent apart meet Nagle and delayed ACKs (40 ms).
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    do_GET = do_POST

    def log_message(self, *args):
        pass


def serve_upstream(port):
    """The upstream, run as its own process (`--serve-upstream PORT`): it must not share
    this process's GIL with the pollers."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), App)
    server.daemon_threads = True
    server.serve_forever()


def request(conn, method, path, body=b"", headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    res = conn.getresponse()
    return res.status, res.read()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_for(what, check, proc, log, within=30):
    deadline = time.monotonic() + within
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"{what} did not come up; see {log}")
        time.sleep(0.05)


class Watcher(threading.Thread):
    """Polls one replica's proxy with a POST on one keep-alive connection, when told to,
    until the answer has the wanted status."""

    def __init__(self, name, port, interval, timeout):
        super().__init__(daemon=True, name=name)
        self.name_ = name
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.jobs = queue.Queue()
        self.results = queue.Queue()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.n = 0

    def post(self):
        self.n += 1
        try:
            return request(self.conn, "POST", f"/probe/{self.n}", b"x=1", FORM)[0]
        except (OSError, http.client.HTTPException):
            # The connection was closed (never expected): count the poll, open another.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            return None

    def run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            want, t0 = job
            polls, other = 0, 0
            while True:
                sent = time.perf_counter()
                status = self.post()
                now = time.perf_counter()
                polls += 1
                if status == want:
                    self.results.put((now - t0, polls, other))
                    break
                if status not in (200, 503):
                    other += 1
                if now - t0 > self.timeout:
                    self.results.put((None, polls, other))
                    break
                pause = sent + self.interval - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)


def write_config(work, i, ports, up_port, redis_port):
    d = f"{work}/wg-{i}"
    os.makedirs(d, mode=0o700)
    proxy, admin = ports
    with open(f"{d}/writeguard.toml", "w") as f:
        f.write(
            f"""[proxy]
listen = "127.0.0.1:{proxy}"
upstream = "http://127.0.0.1:{up_port}"
[admin]
listen = "127.0.0.1:{admin}"
token = "{TOKEN}"
[guard]
methods = ["POST"]
hold = "0s"
[state]
backend = "redis"
redis_url = "redis://127.0.0.1:{redis_port}/0"
site = "{SITE}"
stale_after = "1s"
replica = "wg-{i}"
path = "{d}/writeguard.state"
[server]
threads = 1
upgrade_sock = "{d}/upgrade.sock"
pid_file = "{d}/writeguard.pid"
"""
        )
    return d


def ms(v):
    return f"{v * 1e3:.1f} ms" if v < 0.1 else f"{v * 1e3:.0f} ms"


def row(label, samples, timeouts, extra=""):
    n = len(samples) + timeouts
    if not samples:
        return f"| {label} | {n} | - | - | - | {timeouts} | {timeouts} |{extra}"
    over = sum(1 for v in samples if v > 1.0) + timeouts
    over50 = sum(1 for v in samples if v > 0.05) + timeouts
    return (
        f"| {label} | {n} | {ms(statistics.median(samples))} | {ms(pct(samples, 99))} | "
        f"{ms(max(samples)) if not timeouts else 'timeout'} | {over50} | {over} |{extra}"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="writeguard binary")
    ap.add_argument("--flips", type=int, default=500)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--interval-ms", type=float, default=1.0, help="poll period per replica")
    ap.add_argument("--timeout", type=float, default=5.0, help="per flip and replica, s")
    ap.add_argument("--max-seconds", type=int, default=900, help="the whole run, s")
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        return serve_upstream(args.serve_upstream)
    if not args.bin:
        ap.error("--bin is required")
    if args.replicas < 2:
        ap.error("--replicas must be at least 2")

    def stop(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(args.max_seconds)

    work = tempfile.mkdtemp(prefix="wg-propagation.")
    ports = free_ports(2 + 2 * args.replicas)
    redis_port, up_port = ports[0], ports[1]
    procs = []  # (name, Popen), stopped in reverse order

    def spawn(name, argv, log, env=None):
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
        procs.append((name, p))
        return p

    try:
        os.makedirs(f"{work}/redis")
        redis = spawn(
            "redis",
            [args.redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", f"{work}/redis",
             "--daemonize", "no", "--logfile", ""],
            f"{work}/redis.log",
        )
        wait_for("redis-server", lambda: redis_ping(redis_port), redis, f"{work}/redis.log")
        up = spawn("upstream", [sys.executable, os.path.abspath(__file__),
                                "--serve-upstream", str(up_port)], f"{work}/upstream.log")

        def up_ok():
            try:
                return request(http.client.HTTPConnection("127.0.0.1", up_port, timeout=1),
                               "GET", "/")[0] == 200
            except OSError:
                return False

        wait_for("the upstream", up_ok, up, f"{work}/upstream.log")

        env = dict(os.environ, WRITEGUARD_LOG=os.environ.get("WG_LOG", "warn"))
        env.pop("WRITEGUARD_REDIS_URL", None)
        env.pop("WRITEGUARD_REPLICA", None)
        replicas = []  # (name, proxy port, admin port, dir)
        for i in range(args.replicas):
            proxy, admin = ports[2 + 2 * i], ports[3 + 2 * i]
            d = write_config(work, i, (proxy, admin), up_port, redis_port)
            spawn(f"wg-{i}", [args.bin, "run", "-c", f"{d}/writeguard.toml"],
                  f"{d}/writeguard.log", env)
            replicas.append((f"wg-{i}", proxy, admin, d))
        for (name, _, admin, d), (_, p) in zip(replicas, procs[2:]):
            def ready(admin=admin):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
                    return request(c, "GET", "/readyz")[0] == 200
                except OSError:
                    return False
            wait_for(name, ready, p, f"{d}/writeguard.log")

        # Every replica announced itself and follows the store (no fail-safe).
        def all_live():
            c = http.client.HTTPConnection("127.0.0.1", replicas[0][2], timeout=2)
            st = json.loads(request(c, "GET", "/status")[1])
            return (len(st.get("replicas", [])) == args.replicas
                    and st.get("store", {}).get("ok") and not st.get("guarded"))

        wait_for("the replicas' announcements", all_live, procs[-1][1], work, within=10)

        engager = http.client.HTTPConnection("127.0.0.1", replicas[0][2], timeout=10)
        releaser = http.client.HTTPConnection("127.0.0.1", replicas[1][2], timeout=10)
        watchers = [Watcher(name, proxy, args.interval_ms / 1e3, args.timeout)
                    for name, proxy, _, _ in replicas]
        for w in watchers:
            if w.post() != 200:  # warm the connection and the upstream pool
                sys.exit(f"{w.name_}: a POST before the first flip was not forwarded")
            w.start()

        kinds = (("engage", 0, "POST", 503), ("release", 1, "DELETE", 200))
        seen = {(k, w.name_): [] for k, *_ in kinds for w in watchers}
        timeouts = {key: 0 for key in seen}
        polls = {key: [] for key in seen}
        odd = 0
        admin_rtt = {k: [] for k, *_ in kinds}
        from_sent = {k: [] for k, *_ in kinds}
        raw = open(f"{work}/samples.tsv", "w")
        raw.write("flip\tkind\treplica\torigin\tseconds\tpolls\tadmin_seconds\n")
        started = time.monotonic()
        for flip in range(args.flips):
            for kind, origin, method, want in kinds:
                conn = engager if origin == 0 else releaser
                body = json.dumps({"reason": "propagation"}).encode() if method == "POST" else b""
                t_sent = time.perf_counter()
                status, text = request(conn, method, "/guard", body, AUTH)
                t0 = time.perf_counter()
                admin_rtt[kind].append(t0 - t_sent)
                if status not in (200, 201):
                    sys.exit(f"flip {flip}: {method} /guard on wg-{origin}: {status} {text!r}")
                for w in watchers:
                    w.jobs.put((want, t0))
                for i, w in enumerate(watchers):
                    took, n, other = w.results.get()
                    odd += other
                    key = (kind, w.name_)
                    polls[key].append(n)
                    if took is None:
                        timeouts[key] += 1
                    else:
                        seen[key].append(took)
                        if i != origin:
                            from_sent[kind].append(took + t0 - t_sent)
                    raw.write(f"{flip}\t{kind}\t{w.name_}\t{int(i == origin)}\t"
                              f"{'' if took is None else f'{took:.6f}'}\t{n}\t{t0 - t_sent:.6f}\n")
        elapsed = time.monotonic() - started
        raw.close()
        for w in watchers:
            w.jobs.put(None)

        # What the logs say (warnings: a lost subscription, a fail-safe, a failed read).
        notes = []
        for name, _, _, d in replicas:
            with open(f"{d}/writeguard.log", errors="replace") as f:
                lines = [l for l in f if " WARN " in l or " ERROR " in l]
            notes.append(f"{name}: {len(lines)} WARN/ERROR log lines")

        print(f"writeguard: {args.bin}; {os.cpu_count()} cores; {args.replicas} replicas; "
              f"{args.flips} engage/release pairs in {elapsed:.0f} s; "
              f"poll every {args.interval_ms:g} ms per replica; redis-server on port {redis_port}")
        print(f"engage: POST /guard on wg-0; release: DELETE /guard on wg-1; raw samples and logs: {work}")
        print()
        print("Time from the admin answer until another replica's proxy answered with the new state "
              "(all flip x replica samples):")
        print()
        print("| flip | samples | p50 | p99 | max | > 50 ms | > 1 s |")
        print("|---|--:|--:|--:|--:|--:|--:|")
        for kind, origin, _, _ in kinds:
            others = [w.name_ for i, w in enumerate(watchers) if i != origin]
            v = [x for r in others for x in seen[(kind, r)]]
            t = sum(timeouts[(kind, r)] for r in others)
            label = f"{kind} (wg-{origin}) -> {', '.join(others)}"
            print(row(label, v, t))
        print()
        print("The same from when the admin request was sent, and the admin call itself:")
        print()
        print("| flip | from the admin request: p50 / p99 / max | admin call: p50 / p99 / max |")
        print("|---|--:|--:|")
        for kind, origin, method, _ in kinds:
            f, a = from_sent[kind], admin_rtt[kind]
            print(f"| {kind} ({method} /guard on wg-{origin}) | "
                  f"{ms(statistics.median(f))} / {ms(pct(f, 99))} / {ms(max(f))} | "
                  f"{ms(statistics.median(a))} / {ms(pct(a, 99))} / {ms(max(a))} |")
        print()
        print("Per replica (the origin's row: its own first POST after the admin answer):")
        print()
        print("| flip | replica | samples | p50 | p99 | max | > 50 ms | > 1 s | polls p50 / max |")
        print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
        for kind, origin, _, _ in kinds:
            for i, w in enumerate(watchers):
                key = (kind, w.name_)
                name = w.name_ + (" (origin)" if i == origin else "")
                p = polls[key]
                print(row(f"{kind} | {name}", seen[key], timeouts[key],
                          f" {statistics.median(p):.0f} / {max(p)} |"))
        print()
        print("; ".join(notes) + f"; answers other than 200/503 or broken connections: {odd}")
        late_origin = sum(1 for n in polls[("engage", "wg-0")] if n > 1) + sum(
            1 for n in polls[("release", "wg-1")] if n > 1)
        print(f"origin replica's first POST missed the flip: {late_origin} of {2 * args.flips}")
        if any(timeouts.values()):
            sys.exit(f"some replicas did not show a flip within {args.timeout} s")
    finally:
        signal.alarm(0)
        for _, p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for name, p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
