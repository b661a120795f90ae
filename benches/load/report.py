#!/usr/bin/env python3
"""Turns the raw results of run.sh (runs.tsv, idle.tsv, keepalive.tsv in OUT) into the
markdown tables it prints. Stdlib only. Usage: report.py OUT_DIR CLK_TCK"""
import csv
import statistics
import sys
from collections import defaultdict

PROXIES = ["writeguard", "nginx", "haproxy"]
LABEL = {"writeguard": "writeguard", "nginx": "nginx", "haproxy": "HAProxy"}
SCENARIOS = {
    "get_small": "GET small body",
    "get_16k": "GET 16 KiB",
    "post_503": "guarded POST 1 KiB -> 503",
    "mix": "90% GET / 10% guarded POST",
}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_lat(us):
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def read_tsv(path):
    try:
        with open(path) as f:
            return list(csv.DictReader(f, delimiter="\t"))
    except FileNotFoundError:
        return []


def main():
    out, clk = sys.argv[1], int(sys.argv[2])
    runs = read_tsv(f"{out}/runs.tsv")
    # (scenario, proxy) -> round -> metrics
    data = defaultdict(dict)
    conditions = defaultdict(list)
    for r in runs:
        req = int(r["requests"])
        dur_s = int(r["duration_us"]) / 1e6
        m = {
            "rps": req / dur_s if dur_s else 0.0,
            "p50": int(r["p50_us"]),
            "p99": int(r["p99_us"]),
            "cpu": int(r["proxy_ticks"]) * 1e6 / clk / req if req else None,
            "conns": int(r["new_conns"]),
            "errors": sum(int(r[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout")),
            "status": int(r["err_status"]),
            "requests": req,
        }
        data[(r["scenario"], r["proxy"])][int(r["round"])] = m
        wall = int(r["wall_ms"]) / 1000 or dur_s
        conditions[r["scenario"]].append((
            int(r["upstream_ticks"]) / clk / wall * 100,
            max(0, int(r["box_ticks"]) - int(r["proxy_ticks"]) - int(r["upstream_ticks"])
                - int(r["client_ticks"])) / clk / wall,
        ))

    def paired_ratio(scn, a, b, key):
        ra, rb = data.get((scn, a), {}), data.get((scn, b), {})
        xs = [ra[k][key] / rb[k][key] for k in ra if k in rb and ra[k][key] and rb[k][key]]
        return med(xs)

    lines = []
    lines.append("| scenario | proxy | req/s (median) | req/s min-max | p50 | p99 | CPU µs/req "
                 "| req/s vs nginx | req/s vs HAProxy | CPU vs nginx | CPU vs HAProxy "
                 "| new TCP conns/run (box-wide) | non-2xx/run | socket errors |")
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for scn, title in SCENARIOS.items():
        for p in PROXIES:
            rounds = data.get((scn, p))
            if not rounds:
                continue
            vals = list(rounds.values())
            rps = [v["rps"] for v in vals]
            lines.append(
                f"| {title} | {LABEL[p]} | {med(rps):,.0f} | {min(rps):,.0f}-{max(rps):,.0f} "
                f"| {fmt_lat(med(v['p50'] for v in vals))} | {fmt_lat(med(v['p99'] for v in vals))} "
                f"| {med(v['cpu'] for v in vals):.1f} "
                f"| {fmt_ratio(paired_ratio(scn, p, 'nginx', 'rps'))} "
                f"| {fmt_ratio(paired_ratio(scn, p, 'haproxy', 'rps'))} "
                f"| {fmt_ratio(paired_ratio(scn, p, 'nginx', 'cpu'))} "
                f"| {fmt_ratio(paired_ratio(scn, p, 'haproxy', 'cpu'))} "
                f"| {med(v['conns'] for v in vals):,.0f} | {med(v['status'] for v in vals):,.0f} "
                f"| {sum(v['errors'] for v in vals)} |")
    print("\n".join(lines))

    if conditions:
        print()
        print("Run conditions (median over runs; 'other load' = machine CPU busy minus proxy, "
              "upstream and wrk, in cores):")
        print()
        print("| scenario | upstream nginx CPU (% of one core) | other load (cores) |")
        print("|---|--:|--:|")
        for scn, title in SCENARIOS.items():
            c = conditions.get(scn)
            if c:
                print(f"| {title} | {med(x[0] for x in c):.0f} % | {med(x[1] for x in c):.2f} |")

    idle = {r["proxy"]: r for r in read_tsv(f"{out}/idle.tsv")}
    if idle:
        print()
        print("| idle keep-alive connections | opened | still open | RSS before | RSS after "
              "| RSS per 1,000 conns | vs nginx | vs HAProxy |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|")
        per = {}
        for p in PROXIES:
            r = idle.get(p)
            if r:
                n = int(r["opened"]) or 1
                per[p] = (int(r["rss_after_kb"]) - int(r["rss_before_kb"])) / 1024 * 1000 / n
        for p in PROXIES:
            r = idle.get(p)
            if not r:
                continue
            vs = lambda o: fmt_ratio(per[p] / per[o]) if per.get(o) and per[o] > 0 else "-"
            print(f"| {LABEL[p]} | {int(r['opened']):,} | {int(r['still_open']):,} "
                  f"| {int(r['rss_before_kb']) / 1024:.1f} MB | {int(r['rss_after_kb']) / 1024:.1f} MB "
                  f"| {per[p]:.2f} MB | {vs('nginx')} | {vs('haproxy')} |")

    ka = read_tsv(f"{out}/keepalive.tsv")
    if ka:
        print()
        print("Keep-alive after the 503 (one connection: POST 1 KiB, GET, three times): "
              + "; ".join(f"{LABEL[r['proxy']]} {'kept' if r['kept'] == 'yes' else 'CLOSED'} "
                          f"({r['answers']}{', ' + r['reason'] if r.get('reason') else ''})"
                          for r in ka))


if __name__ == "__main__":
    main()
