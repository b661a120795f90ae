#!/usr/bin/env python3
"""Writes the fuzz seed corpora (fuzz/corpus/<target>/seed-*): activities in the shape of
Upsun's activity webhooks (https://docs.upsun.com/integrations/activity/webhooks.html), tokens signed as the README's "Upsun integration"
describes, and configs. Written from the documentation, no captured traffic. Run from
anywhere: python3 fuzz/make_seeds.py"""
import base64, hashlib, hmac, json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = b"whatever-you-want"  # the key fuzz_targets/jws_verify.rs verifies with
HEADER = {"alg": "HS256", "b64": False, "crit": ["b64"]}


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def header_segment(h):
    return b64u(json.dumps(h, separators=(",", ":")).encode())


def sign(key, body, header=HEADER, b64_body=False):
    seg = header_segment(header)
    msg = seg + b"." + (b64u(body) if b64_body else body)
    return seg + b".." + b64u(hmac.new(key, msg, hashlib.sha256).digest())


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def activity(aid, kind, state, result=None, **extra):
    a = {
        "id": aid,
        "_links": {"self": {"href": "/api/projects/abcdefgh1234567/activities/" + aid}},
        "created_at": "2025-03-04T10:00:05.821145+00:00",
        "updated_at": None,
        "type": kind,
        "parameters": {"user": "c9926428-44dc-4b10-be03-a26dd43b44c1", "environment": "main"},
        "project": "abcdefgh1234567",
        "environments": ["main"],
        "state": state,
        "result": result,
        "completion_percent": 100 if state == "complete" else 0,
        "timings": [],
        "attributes": [],
        "log": "Found 1 new commit\n",
        "payload": {"environment": {"id": "main", "attributes": []}},
    }
    a.update(extra)
    return json.dumps(a, indent=1).encode()


activities = {
    "push-in-progress": activity("a1kz6ffxui7em", "environment.push", "in_progress"),
    "push-complete": activity("a1kz6ffxui7em", "environment.push", "complete", "success",
                              timings={"wait": 0, "build": 12.5, "deploy": 3.1}),
    "redeploy-failure": activity("b2ly7ggyvj8fn", "environment.redeploy", "complete", "failure"),
    "variable-pending": activity("c3mz8hhzwk9go", "environment.variable.create", "pending"),
    "deploy-staged": activity("d4na9iiaxl0hp", "environment.deploy", "staged"),
    "backup-cancelled": activity("e5ob0jjbym1iq", "environment.backup", "cancelled"),
    "minimal": b'{"id":"7txhbujm4umsy","type":"environment.push","state":"in_progress"}',
    "missing-state": b'{"id":"7txhbujm4umsy","type":"environment.push"}',
    "odd-types": b'{"id":"x","type":"environment.merge","state":"complete","result":1,'
                 b'"project":null,"environments":["a",2,null,"b"]}',
    "array": b'[{"id":"x","type":"t","state":"s"}]',
    "escapes": b'{"id":"\\u00e9\\ud83d\\ude00","type":"environment.push\\u0000",'
               b'"state":"in_progress","environments":{}}',
}
for name, body in activities.items():
    write("activity", name, body)

# jws_verify input: header value, "\n", body.
small = b'{"id":"7txhbujm4umsy","state":"in_progress"}'
push = activities["push-in-progress"]
tokens = {
    "spec-vector": (sign(KEY, small), small),
    "spec-vector-b64": (sign(KEY, small, b64_body=True), small),
    "push": (sign(KEY, push), push),
    "empty-body": (sign(KEY, b""), b""),
    "wrong-key": (sign(b"another-key", small), small),
    "alg-none": (header_segment({"alg": "none", "b64": False, "crit": ["b64"]}) + b"..", small),
    "b64-true": (sign(KEY, small, header={"alg": "HS256", "b64": True, "crit": ["b64"]}), small),
    "no-crit": (sign(KEY, small, header={"alg": "HS256", "b64": False}), small),
    "extra-fields": (sign(KEY, small, header={"alg": "HS256", "b64": False, "crit": ["b64", "x"],
                                              "kid": "k1", "typ": "JWT"}), small),
    "attached": (sign(KEY, small).replace(b"..", b"." + b64u(small) + b"."), small),
    "whitespace": (b"  " + sign(KEY, small) + b"\t", small),
}
for name, (token, body) in tokens.items():
    write("jws_verify", name, token + b"\n" + body)

# jws_roundtrip takes `arbitrary` bytes: any bytes are a valid input; a few varied ones.
for i, chunk in enumerate([KEY + b"\x00" + small, b"\x00" * 64, bytes(range(256)),
                           struct.pack("<Q", 2**63) + b"key" * 30]):
    write("jws_roundtrip", str(i), chunk)

# config: the documented full example plus small variants.
with open(os.path.join(HERE, "..", "config", "writeguard.toml"), "rb") as f:
    write("config", "example", f.read())
minimal = b'''[proxy]
listen = "127.0.0.1:8080"
upstream = "http://127.0.0.1:8000"
[admin]
listen = "127.0.0.1:9090"
token_env = "FUZZ_TOKEN"
[upsun]
shared_key_env = "FUZZ_KEY"
'''
write("config", "minimal", minimal)
write("config", "full", minimal.replace(b"[upsun]", b'''[guard]
methods = ["POST", "PATCH", "PUT", "DELETE"]
retry_after = "1m 30s"
max_engaged = "2h"
hold = "0s"
hold_max_requests = 0
release_concurrency = 1
allow_paths = ["/healthz", "/api/*"]
pass_unknown_methods = true
upgrades = "pass"
[public]
prefix = "/status"
cors_origins = ["https://a.example", "https://b.example"]
inject_banner = true
[state]
path = "/tmp/x.state"
[server]
threads = 4
shutdown_grace = "500ms"
[upsun]
allow_unsigned = true
guard_pending = true''') + b'listen_extra = 1\n')
write("config", "bad-values", b'''[proxy]
listen = "nowhere"
upstream = "ftp://[::1"
connect_timeout = "-5s"
max_header_size = 99999999999999999999
h2c = "yes"
[admin]
listen = ["127.0.0.1:1", "[::1]:2"]
token = "a"
token_env = "UNSET"
[guard]
methods = ["get", "", "P\\u00d8ST"]
retry_after = 1e308
[unknown]
''')
write("config", "inline-tables", b'proxy = { listen = "[::1]:80", upstream = "https://h:443/p?q" }\n'
      b'admin = { listen = "0.0.0.0:1", token = "t" }\nupsun = { shared_key = "k" }\n'
      b'server = { threads = 0 }\n')

# deadlines: configs at, just past and far past every duration's upper bound (README's config
# table), on loopback and on 0.0.0.0 (where weak secrets are refused). Also run it on
# corpus/config: any config is a deadlines input.
write("deadlines", "example", open(os.path.join(HERE, "..", "config", "writeguard.toml"), "rb").read())
write("deadlines", "minimal", minimal)
MAXIMA = {"proxy": {"connect_timeout": "5m", "upstream_retry": "1h", "header_timeout": "1h",
                    "body_idle_timeout": "1h", "body_timeout": "1d", "upstream_timeout": "1d"},
          "guard": {"retry_after": "1d", "max_engaged": "7d", "hold": "1h"},
          "server": {"shutdown_grace": "1h"}}


def with_durations(value):
    text = minimal
    for section, keys in MAXIMA.items():
        lines = "".join('%s = "%s"\n' % (k, value(v)) for k, v in keys.items())
        header = b"[" + section.encode() + b"]\n"
        if header in text:
            text = text.replace(header, header + lines.encode())
        else:
            text += header + lines.encode()
    return text


write("deadlines", "at-max", with_durations(lambda v: v))
write("deadlines", "past-max", with_durations(lambda v: v + " 1s"))
write("deadlines", "10000y", with_durations(lambda v: "10000y"))
write("deadlines", "2pow63", with_durations(lambda v: "9223372036854775807s"))
write("deadlines", "exposed", minimal.replace(b"127.0.0.1:8080", b"0.0.0.0:8080"))
# The one that failed open before the bounds: only max_engaged far out of range.
write("deadlines", "max-engaged-10000y", minimal + b'[guard]\nmax_engaged = "10000y"\n')

# h1_boundaries: the first byte is where the chunked decoder's input is split; the rest a
# request stream (pipelined requests, both framings, chunk extensions and trailers, and the
# ambiguous framings tests/it/desync.rs sends).
H1 = {
    "get": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "pipelined": b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: a\r\n\r\n",
    "chunked": b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "cl-te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "te-cl": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: a\n\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "obs-fold": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "te-space": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
    "leading-crlf": b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "upgrade": b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "chunk-size-ws": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 \t;a\r\nabc\r\n0 \r\n\r\n",
}
for name, stream in H1.items():
    for split in (0, 7, 255):
        write("h1_boundaries", "%s-%d" % (name, split), bytes([split]) + stream)
# h1_hyper: the same streams, without the split byte.
for name, stream in H1.items():
    write("h1_hyper", name, stream)
