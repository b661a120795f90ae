#!/usr/bin/env python3
"""Connection helpers for run.sh (stdlib only).

  conns.py idle PORT COUNT PIDS HOLD_SECONDS
      Opens COUNT HTTP/1.1 keep-alive connections to 127.0.0.1:PORT one after the other, sends
      one `GET /small` on each and reads the whole response, leaves them all open and idle for
      HOLD_SECONDS, and reports the summed VmRSS of PIDS (comma-separated) before and after,
      and how many connections the server still keeps open.

  conns.py keepalive PORT POST_PATH
      On ONE connection: POST 1 KiB to POST_PATH, then GET /small, three times. Reports whether
      every answer came on the same connection (the 503 did not close it).
"""
import resource
import socket
import sys
import time

HOST = "127.0.0.1"


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def read_response(sock, buf=b""):
    """Reads one HTTP/1.1 response; returns (status, headers dict, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response header")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(rest) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the body")
            rest += chunk
        return status, headers, rest[need:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while b"0\r\n\r\n" not in rest:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the chunked body")
            rest += chunk
        return status, headers, rest.split(b"0\r\n\r\n", 1)[1]
    return status, headers, b""


def get(path, port):
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def idle(port, count, pids, hold):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
    before = rss_kb(pids)
    socks, failed = [], 0
    for _ in range(count):
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(get("/small", port))
            status, headers, _ = read_response(s)
            if status != 200 or headers.get("connection", "").lower() == "close":
                failed += 1
            socks.append(s)
        except OSError:
            failed += 1
    time.sleep(hold)
    after = rss_kb(pids)
    still_open = 0
    for s in socks:
        s.setblocking(False)
        try:
            still_open += 1 if s.recv(1, socket.MSG_PEEK) else 0
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    print(f"IDLE_RESULT opened={len(socks)} failed={failed} still_open={still_open} "
          f"rss_before_kb={before} rss_after_kb={after}")


def keepalive(port, post_path):
    body = b"x" * 1024
    post = (f"POST {post_path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
    s = socket.create_connection((HOST, port), timeout=5)
    answers = []
    try:
        buf = b""
        for _ in range(3):
            s.sendall(post)
            status, headers, buf = read_response(s, buf)
            answers.append(f"{status}{'/close' if headers.get('connection','').lower()=='close' else ''}"
                           f"{'/retry-after=' + headers['retry-after'] if 'retry-after' in headers else ''}")
            s.sendall(get("/small", port))
            status, headers, buf = read_response(s, buf)
            answers.append(str(status))
        print(f"KEEPALIVE_RESULT kept=yes answers={','.join(answers)}")
    except (OSError, ConnectionError, IndexError, ValueError) as e:
        reason = str(e).replace(" ", "_") or type(e).__name__
        print(f"KEEPALIVE_RESULT kept=no answers={','.join(answers) or '-'} reason={reason}")
    finally:
        s.close()


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "idle" and len(sys.argv) == 6:
        pids = [p for p in sys.argv[4].split(",") if p]
        idle(int(sys.argv[2]), int(sys.argv[3]), pids, float(sys.argv[5]))
    elif len(sys.argv) == 4 and sys.argv[1] == "keepalive":
        keepalive(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
