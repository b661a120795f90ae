#!/usr/bin/env python3
"""A stand-in app for trying writeguard: answers every method with 200 and echoes what it
got as JSON ({"method", "path", "body"}), one line logged per request. Python 3 standard
library only; serves nothing from disk.

    python3 examples/app.py [PORT]      # default 8000, on 127.0.0.1
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __getattr__(self, name):
        # http.server looks up do_<METHOD>: every method gets the echo.
        if name.startswith("do_"):
            return self.echo
        raise AttributeError(name)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def echo(self):
        body = self.read_body()
        answer = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "body": body.decode("utf-8", "replace"),
            }
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = ThreadingHTTPServer(("127.0.0.1", port), Echo)
    print(f"example app on http://127.0.0.1:{port}/ (echoes every request)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
