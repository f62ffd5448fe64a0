#!/usr/bin/env python3
"""Expands every panel query of a Grafana dashboard the way Grafana's
PostgreSQL datasource does (a port of grafanaExpand in
tests/integration/dashboards.test.mjs: sqleng.Interpolate, then the postgres
macro engine, timescaledb off) for the range [now - DAYS, now] at a panel
width of WIDTH px: $__interval is range / WIDTH rounded as Grafana's
roundInterval does (30 days / 1,500 px = 28.8 min -> 30m).

Usage: grafana_expand.py DASHBOARD.json [DAYS] [WIDTH]
Prints one line per panel target: title <TAB> format <TAB> SQL (newlines as
spaces)."""
import datetime as dt
import json
import re
import sys

UNIT_MS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000,
           "M": 2592000000, "y": 31536000000}


def parse_interval_ms(s):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|M|y)", s.strip())
    if not m:
        raise SystemExit(f"Grafana would fail: error parsing interval {s}")
    return int(m.group(1)) * UNIT_MS[m.group(2)]


def format_interval(ms):
    for u in ("y", "d", "h", "m", "s"):
        if ms >= UNIT_MS[u]:
            return f"{ms // UNIT_MS[u]}{u}"
    return f"{ms}ms"


# pkg/tsdb/intervalv2 roundInterval: (upper bound ms, rounded ms)
ROUND = [(10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
         (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000),
         (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000),
         (1500000, 1200000), (2700000, 1800000), (5400000, 3600000), (8100000, 7200000),
         (16200000, 10800000), (32400000, 21600000), (86400000, 43200000), (604800000, 86400000),
         (1814400000, 604800000), (3628800000, 2592000000)]


def round_interval(ms):
    for bound, r in ROUND:
        if ms <= bound:
            return r
    return 31536000000


def rfc3339(d):
    s = d.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{d.microsecond:06d}".rstrip("0")
    return s + (f".{frac}" if frac else "") + "Z"


def go_float(v):
    return str(int(v)) if float(v).is_integer() else repr(v)


def expand(raw, frm, to, interval_ms):
    sql = raw.replace("$__interval_ms", str(interval_ms)).replace("$__interval", format_interval(interval_ms))
    sql = sql.replace("$__unixEpochFrom()", str(int(frm.timestamp()))).replace("$__unixEpochTo()", str(int(to.timestamp())))
    original = sql

    def macro(m):
        whole, name, arg_str = m.group(0), m.group(1), m.group(2)
        if name == "__timeGroup":
            i = original.find(whole)
            if i >= 0 and original[i + len(whole):i + len(whole) + 1] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in arg_str.split(",")]

        def group():
            secs = parse_interval_ms(args[1].strip("'")) / 1000
            return f"floor(extract(epoch from {args[0]})/{go_float(secs)})*{go_float(secs)}"

        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339(frm)}' AND '{rfc3339(to)}'"
        if name == "__timeFrom":
            return f"'{rfc3339(frm)}'"
        if name == "__timeTo":
            return f"'{rfc3339(to)}'"
        if name == "__timeGroup":
            return group()
        if name == "__timeGroupAlias":
            return f'{group()} AS "time"'
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(frm.timestamp())} AND {args[0]} <= {int(to.timestamp())}"
        raise SystemExit(f'Grafana would fail: unknown macro "{name}"')

    return re.sub(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)", macro, sql)


def panels(ps):
    for p in ps:
        if p.get("type") == "row":
            yield from panels(p.get("panels") or [])
        else:
            yield p


def main():
    dash = json.load(open(sys.argv[1]))
    days = float(sys.argv[2]) if len(sys.argv) > 2 else 30
    width = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
    to = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    frm = to - dt.timedelta(days=days)
    range_ms = int((to - frm).total_seconds() * 1000)
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            raw = t.get("rawSql")
            if not raw:
                continue
            # panel maxDataPoints / interval (min interval) as Grafana applies them
            pts = p.get("maxDataPoints") or width
            iv = round_interval(range_ms // pts)
            if p.get("interval"):
                iv = max(iv, parse_interval_ms(p["interval"].lstrip(">")))
            sql = expand(raw, frm, to, iv)
            print(f"{p.get('title')}\t{t.get('format', '')}\t{' '.join(sql.split())}")


if __name__ == "__main__":
    main()
