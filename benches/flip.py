#!/usr/bin/env python3
"""State flip: how soon an engage or a release made through the admin API shows on the proxy.

Starts a trivial upstream and writeguard (hold = "0s", so a guarded POST is answered 503 at
once), then FLIPS times: engages with POST /guard and, the moment its answer has arrived, sends
a POST on an already open proxy connection; then releases with DELETE /guard and does the
same. A flip is visible in time when that very first POST already sees the new state (503
after the engage, the upstream's 200 after the release); the time from the admin answer to the
proxy's answer bounds how long the flip took to show. Standard library only; loopback only.

  python3 benches/flip.py --bin target/release/writeguard [--flips 500]
"""
import argparse
import http.client
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "flip-bench-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        # One write: a head and a body sent apart meet Nagle and delayed ACKs (40 ms).
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    do_GET = do_POST

    def log_message(self, *args):
        pass


def request(conn, method, path, body=b"", headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    res = conn.getresponse()
    data = res.read()
    return res.status, data


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--flips", type=int, default=500)
    args = ap.parse_args()

    up_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), App)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    work = tempfile.mkdtemp(prefix="wg-flip.")
    with open(f"{work}/writeguard.toml", "w") as f:
        f.write(
            f"""[proxy]
listen = "127.0.0.1:{proxy_port}"
upstream = "http://127.0.0.1:{up_port}"
[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"
[guard]
methods = ["POST"]
hold = "0s"
[state]
path = "{work}/writeguard.state"
[server]
threads = 1
upgrade_sock = "{work}/upgrade.sock"
pid_file = "{work}/writeguard.pid"
"""
        )
    env = dict(os.environ, WRITEGUARD_LOG=os.environ.get("WG_LOG", "warn"))
    wg = subprocess.Popen(
        [args.bin, "run", "-c", f"{work}/writeguard.toml"],
        stdin=subprocess.DEVNULL,
        stdout=open(f"{work}/writeguard.log", "w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
                if request(c, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or wg.poll() is not None:
                sys.exit(f"writeguard did not become ready; see {work}/writeguard.log")
            time.sleep(0.1)

        admin = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
        proxy = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        auth = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
        form = {"content-type": "application/x-www-form-urlencoded"}
        # Warm both connections (and the upstream pool).
        request(proxy, "POST", "/warm", b"x=1", form)
        seen = {"engage": [], "release": []}
        late = {"engage": 0, "release": 0}
        for _ in range(args.flips):
            for kind, method, want in (("engage", "POST", 503), ("release", "DELETE", 200)):
                body = json.dumps({"reason": "flip"}).encode() if method == "POST" else b""
                status, text = request(admin, method, "/guard", body, auth)
                if status not in (200, 201):
                    sys.exit(f"{method} /guard: {status} {text!r}")
                t0 = time.perf_counter()
                status, _ = request(proxy, "POST", "/order", b"x=1", form)
                seen[kind].append((time.perf_counter() - t0) * 1e6)
                if status != want:
                    late[kind] += 1
        print(f"writeguard: {args.bin}; {os.cpu_count()} cores; {args.flips} engage/release pairs")
        print("flip     first POST after the admin answer saw it   its answer after (p50 / p99 / max, us)")
        for kind in ("engage", "release"):
            v = seen[kind]
            print(
                f"{kind:8} {len(v) - late[kind]:>6} of {len(v):<6}"
                f"{'':28}{statistics.median(v):8.0f} / {pct(v, 99):6.0f} / {max(v):6.0f}"
            )
        if late["engage"] or late["release"]:
            sys.exit("some flips were not visible to the very next request")
    finally:
        wg.terminate()
        try:
            wg.wait(timeout=15)
        except subprocess.TimeoutExpired:
            wg.kill()
        server.shutdown()


if __name__ == "__main__":
    main()
