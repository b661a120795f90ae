#!/usr/bin/env python3
"""Hold: N held writes. Measures writeguard's memory while it holds N guarded POSTs.

Started by benches/hold_memory.sh (which builds the release binary); standard library only.
Everything listens on 127.0.0.1; every wait is bounded; writeguard is stopped on exit.

  1. a trivial upstream (asyncio, in this process) that answers every request 200 and counts
     the requests and body bytes it received;
  2. writeguard with `hold` (default 60s) and `hold_max_requests` = N in front of it, engaged
     through POST /guard;
  3. N connections, each sending one POST with a BODY-byte body, then waiting for the answer;
  4. VmRSS of writeguard (/proc/<pid>/status) engaged and idle, then with them held (once
     /status shows held = N, or the count stops growing);
  5. DELETE /guard, every client's status, the upstream's count, VmRSS after.

With --idle, the same N connections instead each send one GET (guard not engaged), read the
answer and stay open, idle: what a connection costs without a held request, for comparison.
"""

import argparse
import asyncio
import collections
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOKEN = "bench-admin-token-0123"


def log(msg):
    print(f"[hold {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    """VmRSS and VmHWM in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class UpstreamStats:
    def __init__(self):
        self.requests = 0
        self.body_bytes = 0
        self.writers = set()


async def read_body(reader, head):
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return body
        body += (await reader.readexactly(size + 2))[:-2]


async def upstream_conn(reader, writer, stats):
    stats.writers.add(writer)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await read_body(reader, head)
            stats.requests += 1
            stats.body_bytes += len(body)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
            )
            await writer.drain()
    except (
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        asyncio.CancelledError,
        ConnectionError,
        ValueError,
    ):
        pass
    finally:
        stats.writers.discard(writer)
        writer.close()


def admin(port, method, path, body=None, timeout=10):
    """One admin API call: (status, JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("authorization", f"Bearer {TOKEN}")
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


async def admin_async(*args, **kwargs):
    return await asyncio.to_thread(admin, *args, **kwargs)


class Clients:
    """N client connections and what they saw."""

    def __init__(self, port, body, idle, connect_concurrency, answer_within):
        self.port = port
        self.body = body
        self.idle = idle
        self.gate = asyncio.Semaphore(connect_concurrency)
        self.answer_within = answer_within
        self.answers = collections.Counter()
        self.ready = 0  # idle mode: answered and now idle
        self.done = asyncio.Event()  # idle mode: close now

    async def one(self, i):
        if self.idle:
            request = f"GET /idle/{i} HTTP/1.1\r\nhost: app.example\r\n\r\n".encode()
        else:
            request = (
                f"POST /orders/{i} HTTP/1.1\r\nhost: app.example\r\n"
                f"content-type: application/octet-stream\r\n"
                f"content-length: {len(self.body)}\r\nx-id: {i}\r\n\r\n"
            ).encode() + self.body
        writer = None
        try:
            async with self.gate:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), timeout=10
                )
                writer.write(request)
                await asyncio.wait_for(writer.drain(), timeout=10)
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), timeout=self.answer_within
            )
            parts = head.split(None, 2)
            self.answers[int(parts[1]) if len(parts) > 1 else "no answer"] += 1
            if self.idle:
                await asyncio.wait_for(read_body(reader, head), timeout=10)
                self.ready += 1
                await asyncio.wait_for(self.done.wait(), timeout=self.answer_within)
        except asyncio.TimeoutError:
            self.answers["timeout"] += 1
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            self.answers[type(e).__name__] += 1
        finally:
            if writer is not None:
                writer.close()


def prctl_pdeathsig():
    """In the child: get SIGTERM when this script dies, whatever the reason."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def config(work, proxy_port, admin_port, up_port, args):
    engine = f'engine = "{args.engine}"\n' if args.engine else ""
    return f"""[proxy]
listen = "127.0.0.1:{proxy_port}"
upstream = "http://127.0.0.1:{up_port}"
{engine}
[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[guard]
methods = ["POST"]
retry_after = "30s"
max_engaged = "1h"
hold = "{args.hold}"
hold_max_requests = {args.n}

[state]
path = "{work}/writeguard.state"

[server]
threads = 1
shutdown_grace = "2s"
upgrade_sock = "{work}/writeguard-upgrade.sock"
pid_file = "{work}/writeguard.pid"
"""


async def run(args):
    n = args.n
    need = n + 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit(f"open files: hard limit {hard} < {need}; raise it (ulimit -Hn) first")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    stats = UpstreamStats()
    upstream = await asyncio.start_server(
        lambda r, w: upstream_conn(r, w, stats), "127.0.0.1", 0, backlog=1024
    )
    up_port = upstream.sockets[0].getsockname()[1]
    proxy_port, admin_port = free_port(), free_port()

    work = tempfile.mkdtemp(prefix="wg-hold-bench.")
    with open(f"{work}/writeguard.toml", "w") as f:
        f.write(config(work, proxy_port, admin_port, up_port, args))
    log_file = open(f"{work}/writeguard.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRITEGUARD_")}
    env["WRITEGUARD_LOG"] = os.environ.get("WG_LOG", "warn")
    wg = subprocess.Popen(
        [args.bin, "run", "-c", f"{work}/writeguard.toml"],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=work,
        preexec_fn=prctl_pdeathsig,
    )
    log(
        f"writeguard pid {wg.pid}, proxy :{proxy_port}, admin :{admin_port}, "
        f"upstream :{up_port}, files in {work}"
    )
    mode = "idle" if args.idle else "held"
    report = {
        "mode": mode,
        "n": n,
        "body_bytes": args.body,
        "hold": args.hold,
        "engine": args.engine or "default",
        "work_dir": work,
    }
    tasks = []
    try:
        deadline = time.monotonic() + 20
        while True:
            if wg.poll() is not None:
                sys.exit(f"writeguard exited ({wg.returncode}); see {work}/writeguard.log")
            try:
                if (await admin_async(admin_port, "GET", "/readyz", timeout=1))[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"writeguard not ready within 20 s; see {work}/writeguard.log")
            await asyncio.sleep(0.1)

        if not args.idle:
            status, doc = await admin_async(
                admin_port, "POST", "/guard", {"reason": "hold benchmark", "ttl": "30m"}
            )
            if status != 201:
                sys.exit(f"engage: {status} {doc}")
        await asyncio.sleep(1)
        before = proc_status(wg.pid)
        log(f"{'engaged' if not args.idle else 'not engaged'}; VmRSS before: {before['VmRSS']} KiB")

        body = bytes((i * 31 + 7) % 251 for i in range(args.body))
        clients = Clients(
            proxy_port, body, args.idle, args.connect_concurrency, args.hold_secs + 120
        )
        t0 = time.monotonic()
        tasks = [asyncio.create_task(clients.one(i)) for i in range(n)]

        async def count():
            if args.idle:
                return clients.ready
            return (await admin_async(admin_port, "GET", "/status"))[1]["held"]

        # Until all N are held (or idle), or the count stops growing (bounded).
        best, best_at = 0, time.monotonic()
        limit = t0 + min(180, args.hold_secs - 10)
        while True:
            await asyncio.sleep(0.5)
            now = await count()
            if now > best:
                best, best_at = now, time.monotonic()
            if now >= n or time.monotonic() - best_at > 15 or time.monotonic() > limit:
                break
        report["seconds_to_open"] = round(time.monotonic() - t0, 1)
        log(f"{now} of {n} {mode} after {report['seconds_to_open']} s; settling 2 s")
        await asyncio.sleep(2)
        during = proc_status(wg.pid)
        now = await count()
        report.update(
            count=now,
            rss_before_kib=before["VmRSS"],
            rss_during_kib=during["VmRSS"],
            rss_per_connection_bytes=round(
                (during["VmRSS"] - before["VmRSS"]) * 1024 / max(now, 1)
            ),
            upstream_requests_before_release=stats.requests,
            answers_before_release=dict(clients.answers),
        )
        log(f"VmRSS with {now} {mode}: {during['VmRSS']} KiB (peak {during['VmHWM']} KiB)")

        t_release = time.monotonic()
        if args.idle:
            clients.done.set()
        else:
            status, doc = await admin_async(admin_port, "DELETE", "/guard")
            if status != 200:
                sys.exit(f"release: {status} {doc}")
        _, pending = await asyncio.wait(tasks, timeout=120)
        for task in pending:
            task.cancel()
        report["seconds_to_answer_all"] = round(time.monotonic() - t_release, 1)
        settle = time.monotonic() + 10
        while stats.requests < clients.answers.get(200, 0) and time.monotonic() < settle:
            await asyncio.sleep(0.1)
        after = proc_status(wg.pid)
        report.update(
            answers=dict(clients.answers),
            unanswered=len(pending),
            upstream_requests=stats.requests,
            upstream_body_bytes=stats.body_bytes,
            rss_after_kib=after["VmRSS"],
            hwm_kib=after["VmHWM"],
        )
    finally:
        for task in tasks:
            task.cancel()
        if wg.poll() is None:
            wg.send_signal(signal.SIGTERM)
            try:
                wg.wait(timeout=10)
            except subprocess.TimeoutExpired:
                wg.kill()
                wg.wait()
        upstream.close()
        for writer in list(stats.writers):
            writer.close()
        await asyncio.sleep(0.1)
    return report


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True, help="the writeguard binary")
    p.add_argument("--n", type=int, default=10000, help="held writes (and hold_max_requests)")
    p.add_argument("--body", type=int, default=1024, help="body bytes per write")
    p.add_argument("--hold", default="60s", help='guard.hold, whole seconds ("60s")')
    p.add_argument("--connect-concurrency", type=int, default=256)
    p.add_argument("--idle", action="store_true", help="idle keep-alive connections instead")
    p.add_argument(
        "--engine", choices=["native", "hyper"], help="proxy.engine (default: the binary's)"
    )
    args = p.parse_args()
    if not args.hold.endswith("s") or not args.hold[:-1].isdigit():
        sys.exit('--hold must be whole seconds, like "60s"')
    args.hold_secs = int(args.hold[:-1])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))

    r = asyncio.run(run(args))
    n, mode = r["n"], r["mode"]

    def mib(kib):
        return f"{kib / 1024:.1f} MiB"

    print()
    if mode == "held":
        what = f"held writes ({r['body_bytes']}-byte bodies, hold {r['hold']})"
    else:
        what = "idle keep-alive connections (one GET each, guard not engaged)"
    print(f"{mode:<22} {r['count']} of {n} {what}, in {r['seconds_to_open']} s")
    print(f"engine                 {r['engine']}")
    print(f"VmRSS before           {mib(r['rss_before_kib'])}")
    print(
        f"VmRSS with them        {mib(r['rss_during_kib'])}  "
        f"(+{r['rss_per_connection_bytes']} bytes each)"
    )
    print(f"VmHWM (peak)           {mib(r['hwm_kib'])}")
    print(f"VmRSS at the end       {mib(r['rss_after_kib'])}")
    if mode == "held":
        print(f"upstream while held    {r['upstream_requests_before_release']} requests")
        print(f"answers while held     {r['answers_before_release']}")
    print(
        f"answers                {r['answers']}, unanswered {r['unanswered']}, "
        f"{r['seconds_to_answer_all']} s after the release"
    )
    print(f"upstream received      {r['upstream_requests']} requests, {r['upstream_body_bytes']} body bytes")
    print(json.dumps(r, sort_keys=True))
    ok = (
        r["count"] == n
        and r["answers"].get(200, 0) == n
        and r["upstream_requests"] == n
        and (mode == "idle" or r["upstream_requests_before_release"] == 0)
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
