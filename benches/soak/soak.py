#!/usr/bin/env python3
"""Soak test for writeguard: minutes of mixed load while the guard flaps, then the same
reconciliation as tests/it/reliability/, plus writeguard's RSS over time.

Run through benches/soak.sh. Standard library only.

Processes: this driver (load clients, guard flapper, RSS sampler), a ledger upstream
(`soak.py ledger`, its own process so the GIL does not serialise it with the clients), and
writeguard. Every request carries a unique x-request-id; the ledger writes down each arrival
(method, CLOCK_MONOTONIC time) and dumps them as JSON when told to stop, and the driver checks:

- exactly once: a write answered by the app (200 + x-ledger: <id>) arrived exactly once; a
  write answered 503 never arrived; nothing arrived whose client was not told so; a client that
  hung up while its write was held saw it arrive never, or at most 300 ms after the hang-up
  (the release racing the hang-up);
- reads: every GET got a 2xx from the app;
- no other outcome (other statuses, transport errors) for anyone.
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ID = "x-request-id"
TOKEN = "soak-admin-token-0123"
KEY = "soak-shared-key-4567"
JWS_HEADER = "eyJhbGciOiJIUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19"
GONE_RACE = 0.3


# --------------------------------------------------------------------------------------------
# Ledger upstream (a separate process)
# --------------------------------------------------------------------------------------------

def ledger_main(port, out):
    book = {}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def handle_any(self):
            n = int(self.headers.get("content-length") or 0)
            if n:
                self.rfile.read(n)
            rid = self.headers.get(ID)
            if rid:
                with lock:
                    book.setdefault(rid, []).append([self.command, time.monotonic()])
            self.send_response(200)
            if rid:
                self.send_header("x-ledger", rid)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass  # a client gone mid-answer (writeguard dropping a left client's forward)

    srv = Server(("127.0.0.1", port), Handler)

    def dump(*_):
        with lock:
            with open(out + ".tmp", "w") as f:
                json.dump(book, f)
        os.rename(out + ".tmp", out)
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    srv.serve_forever()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def admin(port, method, path, body=None, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"authorization": f"Bearer {TOKEN}"}
    h.update(headers or {})
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    if data is not None:
        h.setdefault("content-type", "application/json")
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    text = r.read()
    c.close()
    return r.status, (json.loads(text) if text else None)


def sign(body):
    mac = hmac.new(KEY.encode(), JWS_HEADER.encode() + b"." + body, hashlib.sha256).digest()
    return JWS_HEADER + ".." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def activity(sample_dir, act_id, state):
    with open(os.path.join(sample_dir, "environment.push_in_progress.json")) as f:
        v = json.load(f)
    v["id"] = act_id
    v["state"] = state
    return json.dumps(v).encode()


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.reads_ok = 0
        self.reads_bad = []
        self.forwarded = []  # (id, waited)
        self.refused = []
        self.writes_bad = []
        self.gone = []  # (id, monotonic at hang-up, monotonic at send)

    def summary(self):
        total = (self.reads_ok + len(self.reads_bad) + len(self.forwarded) + len(self.refused)
                 + len(self.writes_bad) + len(self.gone))
        held = sum(1 for _, w in self.forwarded if w >= 0.4)
        return {
            "requests": total,
            "reads_ok": self.reads_ok,
            "reads_failed": len(self.reads_bad),
            "writes_forwarded": len(self.forwarded),
            "writes_forwarded_after_>=0.4s_(held)": held,
            "writes_refused_503": len(self.refused),
            "writes_failed": len(self.writes_bad),
            "clients_gone_while_waiting": len(self.gone),
        }


# --------------------------------------------------------------------------------------------
# Load clients
# --------------------------------------------------------------------------------------------

def client(kind, worker, proxy_port, writes_percent, stop, tally):
    conn = None
    n = 0
    rng = random.Random(worker)
    while not stop.is_set():
        n += 1
        rid = f"{kind}{worker}-{n}"
        if kind == "g":
            goner(proxy_port, rid, tally)
            time.sleep(0.03)
            continue
        write = rng.randrange(100) < writes_percent
        method, path = ("POST", f"/w/{rid}") if write else ("GET", f"/r/{rid}")
        if conn is None or kind == "f":
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
        started = time.monotonic()
        try:
            conn.request(method, path, body=b"x=1" if write else None,
                         headers={ID: rid, "host": "app.test"})
            r = conn.getresponse()
            r.read()
            status, ledger = r.status, r.getheader("x-ledger")
            if (r.getheader("connection") or "").lower() == "close":
                conn.close()
                conn = None
        except Exception as e:  # every transport error is a real failure here
            conn.close()
            conn = None
            with tally.lock:
                (tally.writes_bad if write else tally.reads_bad).append(f"{rid}: {e!r}")
            continue
        waited = time.monotonic() - started
        with tally.lock:
            if not write:
                if 200 <= status < 300 and ledger == rid:
                    tally.reads_ok += 1
                else:
                    tally.reads_bad.append(f"{rid}: {status} x-ledger {ledger}")
            elif status == 200 and ledger == rid:
                tally.forwarded.append((rid, waited))
            elif status == 503 and ledger is None:
                tally.refused.append(rid)
            else:
                tally.writes_bad.append(f"{rid}: {status} x-ledger {ledger}")
    if conn is not None:
        conn.close()


def goner(proxy_port, rid, tally):
    """A write that hangs up when no answer came within 150 ms (it is most likely held)."""
    sent = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)
        s.sendall(f"POST /g/{rid} HTTP/1.1\r\nhost: app.test\r\n{ID}: {rid}\r\n"
                  f"content-length: 3\r\nconnection: close\r\n\r\nx=1".encode())
        s.settimeout(0.15)
        got = b""
        try:
            while b"\r\n\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            pass
        if not got:
            s.close()
            with tally.lock:
                tally.gone.append((rid, time.monotonic(), sent))
            return
        s.close()
    except OSError as e:
        with tally.lock:
            tally.writes_bad.append(f"{rid}: {e!r}")
        return
    text = got.decode("latin-1").lower()
    with tally.lock:
        if text.startswith("http/1.1 200") and f"x-ledger: {rid}" in text:
            tally.forwarded.append((rid, 0.0))
        elif text.startswith("http/1.1 503") and "x-ledger" not in text:
            tally.refused.append(rid)
        else:
            tally.writes_bad.append(f"{rid}: {text.splitlines()[0] if text else ''}")


def flapper(admin_port, sample_dir, stop, counts, errors, engaged):
    """Engage/release every 0.5-2 s, alternating the admin API and signed webhooks; appends
    to `engaged` each (engage sent, release answered) interval (monotonic)."""
    rng = random.Random(7)
    cycle = 0
    while not stop.wait(rng.uniform(0.5, 2.0)):
        cycle += 1
        began = time.monotonic()
        webhook = cycle % 2 == 0
        act = f"soak{cycle:09d}"
        try:
            if webhook:
                body = activity(sample_dir, act, "in_progress")
                st, doc = admin(admin_port, "POST", "/webhooks/upsun", body,
                                {"x-jws-signature": sign(body)})
                ok = st == 200 and doc.get("guarded") is True
            else:
                st, doc = admin(admin_port, "POST", "/guard", {"reason": "soak", "ttl": "1m"})
                ok = st == 201
            if not ok:
                errors.append(f"engage cycle {cycle}: {st} {doc}")
            time.sleep(rng.uniform(0.5, 2.0))
            if webhook:
                body = activity(sample_dir, act, "complete")
                st, doc = admin(admin_port, "POST", "/webhooks/upsun", body,
                                {"x-jws-signature": sign(body)})
            else:
                st, doc = admin(admin_port, "DELETE", "/guard")
            if st != 200 or doc.get("guarded") is not False:
                errors.append(f"release cycle {cycle}: {st} {doc}")
            engaged.append((began, time.monotonic()))
            counts["webhook" if webhook else "admin"] += 1
        except Exception as e:
            errors.append(f"cycle {cycle}: {e!r}")


def reconcile(tally, book, engaged):
    """Violations, and how many left clients' writes arrived late though they were sent
    while the guard was surely not engaged (never held: forwarded at once, the ledger was
    slow to write them down; not a violation)."""
    def maybe_engaged(t):
        return any(a - 0.05 <= t <= b for a, b in engaged)

    unheld_late = 0
    bad = []
    told = set()
    for rid, _ in tally.forwarded:
        told.add(rid)
        n = len(book.get(rid, []))
        if n != 1:
            bad.append(f"{rid}: answered by the app, arrived {n} times")
    for rid in tally.refused:
        if rid in book:
            bad.append(f"{rid}: answered 503, arrived {len(book[rid])} times")
    gone = {}
    for rid, at, sent in tally.gone:
        gone[rid] = at
        arrivals = book.get(rid, [])
        if len(arrivals) > 1:
            bad.append(f"{rid}: client gone, arrived {len(arrivals)} times")
        elif arrivals and arrivals[0][1] > at + GONE_RACE:
            if maybe_engaged(sent):
                bad.append(f"{rid}: client gone while held, arrived {arrivals[0][1] - at:.3f} s "
                           f"after")
            else:
                unheld_late += 1
    for rid, arrivals in book.items():
        if any(m == "POST" for m, _ in arrivals) and rid not in told and rid not in gone:
            bad.append(f"{rid}: arrived {len(arrivals)} times, client not told so")
    return sorted(bad), unheld_late


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

CONFIG = """\
[proxy]
listen = "127.0.0.1:{proxy}"
upstream = "http://127.0.0.1:{upstream}"

[admin]
listen = "127.0.0.1:{admin}"
token = "{token}"

[guard]
methods = ["POST"]
retry_after = "1s"
max_engaged = "10m"
hold = "{hold}"

[upsun]
shared_key = "{key}"

[state]
path = "{dir}/state/writeguard.state"

[server]
threads = {threads}
shutdown_grace = "5s"
upgrade_sock = "{dir}/upgrade.sock"
pid_file = "{dir}/writeguard.pid"
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--hold", default="1s")
    ap.add_argument("--keepalive", type=int, default=16)
    ap.add_argument("--fresh", type=int, default=2)
    ap.add_argument("--goners", type=int, default=2)
    ap.add_argument("--writes-percent", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()

    d = a.dir or tempfile.mkdtemp(prefix="wg-soak.")
    os.makedirs(d, exist_ok=True)
    ports = {"proxy": free_port(), "admin": free_port(), "upstream": free_port()}
    ledger_out = os.path.join(d, "ledger.json")
    ledger = subprocess.Popen([sys.executable, __file__, "ledger", str(ports["upstream"]),
                               ledger_out])
    up_by = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", ports["upstream"]), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > up_by or ledger.poll() is not None:
                sys.exit("the ledger upstream did not start")
            time.sleep(0.05)
    cfg = os.path.join(d, "writeguard.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(token=TOKEN, key=KEY, hold=a.hold, dir=d, threads=a.threads,
                              **ports))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRITEGUARD_")}
    env["WRITEGUARD_LOG"] = "warn"
    log = open(os.path.join(d, "writeguard.log"), "w")
    wg = subprocess.Popen([a.bin, "run", "-c", cfg], stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/readyz",
                                            timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or wg.poll() is not None:
                sys.exit(f"writeguard did not become ready; see {d}/writeguard.log")
            time.sleep(0.05)
        rss = [(0.0, rss_kib(wg.pid))]
        print(f"dir {d}; writeguard pid {wg.pid}, RSS at start {rss[0][1]} KiB", flush=True)

        stop = threading.Event()
        tally = Tally()
        threads = []
        w = 0
        for kind, count in (("k", a.keepalive), ("f", a.fresh), ("g", a.goners)):
            for _ in range(count):
                w += 1
                threads.append(threading.Thread(
                    target=client, args=(kind, w, ports["proxy"], a.writes_percent, stop, tally)))
        counts = {"admin": 0, "webhook": 0}
        flap_errors = []
        engaged = []
        flap = threading.Thread(target=flapper, args=(ports["admin"], a.samples, stop, counts,
                                                      flap_errors, engaged))
        for t in threads + [flap]:
            t.start()
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        next_report = t0 + 60
        while time.monotonic() < end:
            time.sleep(min(5, max(0.1, end - time.monotonic())))
            if wg.poll() is not None:
                print("writeguard exited during the soak!", flush=True)
                break
            now = time.monotonic()
            if now >= next_report:
                rss.append((now - t0, rss_kib(wg.pid)))
                with tally.lock:
                    s = tally.summary()
                print(f"{(now - t0) / 60:5.1f} min: RSS {rss[-1][1]} KiB; {s}", flush=True)
                next_report += 60
        stop.set()
        for t in threads:
            t.join(60)
        flap.join(10)
        # Let held writes finish and nothing stay in flight.
        quiet_by = time.monotonic() + 15
        while time.monotonic() < quiet_by:
            st, doc = admin(ports["admin"], "GET", "/status")
            if doc["held"] == 0 and doc["in_flight_writes"] == 0 and not doc["guarded"]:
                break
            time.sleep(0.1)
        rss.append((time.monotonic() - t0, rss_kib(wg.pid)))
        alive = wg.poll() is None
    finally:
        if wg.poll() is None:
            wg.send_signal(signal.SIGTERM)
            try:
                wg.wait(10)
            except subprocess.TimeoutExpired:
                wg.kill()
        ledger.send_signal(signal.SIGTERM)
        ledger.wait(30)
    with open(ledger_out) as f:
        book = json.load(f)

    violations, unheld_late = reconcile(tally, book, engaged)
    s = tally.summary()
    elapsed = rss[-1][0]
    print()
    print(f"## Soak result ({a.minutes} min, hold {a.hold}, {a.keepalive} keep-alive + "
          f"{a.fresh} new-connection + {a.goners} hang-up clients, {a.writes_percent}% writes)")
    print(f"- guard cycles: {counts['admin']} by the admin API, {counts['webhook']} by signed "
          f"webhooks; flapper errors: {len(flap_errors)}")
    for k, v in s.items():
        print(f"- {k}: {v}")
    print(f"- throughput: {s['requests'] / max(elapsed, 1):.0f} req/s over {elapsed:.0f} s")
    print(f"- writeguard RSS: start {rss[0][1]} KiB, after 1 min "
          f"{rss[1][1] if len(rss) > 2 else '-'} KiB, end {rss[-1][1]} KiB "
          f"(max {max(r for _, r in rss)} KiB)")
    print(f"- writeguard alive at the end: {alive}")
    print(f"- exactly-once violations: {len(violations)} (left clients' writes sent while "
          f"the guard was surely released, arriving > {GONE_RACE} s after the hang-up: "
          f"{unheld_late}, not counted)")
    print(f"- reads failed: {len(tally.reads_bad)}; writes failed: {len(tally.writes_bad)}")
    for line in (violations + tally.reads_bad + tally.writes_bad + flap_errors)[:30]:
        print(f"    {line}")
    with open(os.path.join(d, "rss.tsv"), "w") as f:
        for t, r in rss:
            f.write(f"{t:.0f}\t{r}\n")
    ok = (alive and not violations and not tally.reads_bad and not tally.writes_bad
          and not flap_errors)
    print(f"INVARIANTS: {'OK' if ok else 'BROKEN'}  (details in {d})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ledger":
        ledger_main(int(sys.argv[2]), sys.argv[3])
    else:
        main()
