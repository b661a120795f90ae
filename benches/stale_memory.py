#!/usr/bin/env python3
"""Stale reads: the memory budget holds. Measures writeguard's RSS while it sees ten times
`stale.max_bytes` of distinct cacheable pages.

Started by benches/stale_memory.sh (which builds the release binary); standard library only.
Everything listens on 127.0.0.1; every wait is bounded; writeguard is stopped on exit.

  1. an upstream (asyncio, in this process) answering GET /page/<n> with 200,
     `Cache-Control: max-age=3600` and PAGE distinct bytes;
  2. writeguard with `[stale] enabled = true`, `max_bytes` = BUDGET in front of it (with --off:
     `[stale]` left out, for comparison);
  3. VmRSS of writeguard after a warm-up of 200 pages, then after FACTOR x BUDGET / PAGE
     distinct pages (CONNS keep-alive connections, each page asked once), then after the same
     pages once more;
  4. from /metrics: answers stored, evicted, bytes held; then the upstream stops (its open
     connections cut) and every page is asked again: how many came from the store (as many
     as /metrics says are held, with --off none).

Exit status 1 when, with [stale] on, RSS grew by more than twice the budget or the pages served
from the store are not as many as it holds.
"""

import argparse
import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "bench-admin-token-0123"


def log(msg):
    print(f"[stale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def page(n, size):
    head = f"page {n} ".encode()
    return (head * (size // len(head) + 1))[:size]


async def upstream_conn(reader, writer, size, open_writers):
    open_writers.add(writer)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            n = int(path.rsplit("/", 1)[1]) if path.startswith("/page/") else 0
            body = page(n, size)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n"
                b"cache-control: max-age=3600\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        open_writers.discard(writer)
        writer.close()


async def client(port, pages, statuses, from_store):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in pages:
            writer.write(f"GET /page/{n} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
                if k.strip().lower() == b"cache-status":
                    from_store.append(n)
            await asyncio.wait_for(reader.readexactly(length), 30)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def ask(port, pages, conns):
    statuses, from_store = {}, []
    chunks = [pages[i::conns] for i in range(conns)]
    await asyncio.gather(*(client(port, c, statuses, from_store) for c in chunks if c))
    return statuses, from_store


def metrics(admin_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("writeguard_stale_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def config(work, proxy_port, admin_port, up_port, args):
    stale = "" if args.off else f'[stale]\nenabled = true\nmax_bytes = "{args.budget}"\n'
    return f"""[proxy]
listen = "127.0.0.1:{proxy_port}"
upstream = "http://127.0.0.1:{up_port}"
upstream_retry = "0s"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[state]
path = "{work}/writeguard.state"

[server]
threads = 1
shutdown_grace = "2s"
upgrade_sock = "{work}/writeguard-upgrade.sock"
pid_file = "{work}/writeguard.pid"

{stale}"""


def size_bytes(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if s.endswith(u):
            return int(s[: -len(u)]) * m
    return int(s)


def prctl_pdeathsig():
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


async def run(args):
    budget = size_bytes(args.budget)
    n_pages = args.factor * budget // args.page
    open_writers = set()
    upstream = await asyncio.start_server(
        lambda r, w: upstream_conn(r, w, args.page, open_writers), "127.0.0.1", 0, backlog=1024
    )
    up_port = upstream.sockets[0].getsockname()[1]
    proxy_port, admin_port = free_port(), free_port()
    work = tempfile.mkdtemp(prefix="wg-stale-bench.")
    with open(f"{work}/writeguard.toml", "w") as f:
        f.write(config(work, proxy_port, admin_port, up_port, args))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRITEGUARD_")}
    env["WRITEGUARD_LOG"] = os.environ.get("WG_LOG", "warn")
    wg = subprocess.Popen(
        [args.bin, "run", "-c", f"{work}/writeguard.toml"],
        stdin=subprocess.DEVNULL,
        stdout=open(f"{work}/writeguard.log", "w"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=work,
        preexec_fn=prctl_pdeathsig,
    )
    report = {
        "stale": "off" if args.off else "on",
        "budget_bytes": budget,
        "page_bytes": args.page,
        "distinct_pages": n_pages,
        "pages_bytes": n_pages * args.page,
    }
    failed = False
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{admin_port}/readyz", timeout=2
                ) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if wg.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"writeguard did not become ready; see {work}/writeguard.log")
            await asyncio.sleep(0.1)
        report["rss_start_kib"] = rss_kib(wg.pid)
        await ask(proxy_port, list(range(1_000_000, 1_000_200)), args.conns)
        report["rss_warm_kib"] = rss_kib(wg.pid)
        t = time.monotonic()
        statuses, _ = await asyncio.wait_for(ask(proxy_port, list(range(n_pages)), args.conns), 600)
        report["first_pass_seconds"] = round(time.monotonic() - t, 1)
        report["first_pass_statuses"] = statuses
        report["rss_after_pages_kib"] = rss_kib(wg.pid)
        statuses, _ = await asyncio.wait_for(ask(proxy_port, list(range(n_pages)), args.conns), 600)
        report["second_pass_statuses"] = statuses
        report["rss_after_second_pass_kib"] = rss_kib(wg.pid)
        report["metrics"] = metrics(admin_port)
        # The app goes down: no new connection, and the open ones (writeguard's pool) cut.
        upstream.close()
        for w in list(open_writers):
            w.transport.abort()
        await asyncio.sleep(0.2)
        statuses, from_store = await asyncio.wait_for(
            ask(proxy_port, list(range(n_pages)), args.conns), 600
        )
        report["upstream_down"] = {"statuses": statuses, "from_store": len(from_store)}
        grown = report["rss_after_second_pass_kib"] - report["rss_start_kib"]
        report["rss_growth_kib"] = grown
        report["growth_over_budget"] = round(grown * 1024 / budget, 2)
        print(json.dumps(report, indent=2))
        held = report["metrics"]["writeguard_stale_answers"]
        if not args.off and (report["growth_over_budget"] > 2 or len(from_store) != held):
            log("FAILED: RSS grew past twice the budget, or the store served other than it holds")
            failed = True
    finally:
        wg.terminate()
        try:
            wg.wait(10)
        except subprocess.TimeoutExpired:
            wg.kill()
    if failed:
        sys.exit(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--budget", default="16MiB")
    p.add_argument("--page", type=int, default=16 * 1024)
    p.add_argument("--factor", type=int, default=10)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--off", action="store_true", help="[stale] left out, for comparison")
    args = p.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
