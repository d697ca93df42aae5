"""The table on the terminal and BENCHMARKS.md."""

from __future__ import annotations

import re
from typing import Any

from bench.common import Row, target_met

# What the profiles showed when a target was missed while this suite was written; printed only
# beside a row that misses its target in the current run, after that run's own profile.
KNOWN_CAUSES = {
    "GET /todos/{id} in process": (
        "The row's own split (above) shows the two parts: the app over a bare route (the JSON access "
        "log with its EMF record in chalicelib/observe.py, claims parsing, the ETag and response "
        "shaping) and the reader stack over a raw cursor (`Database.query`'s health check and new "
        "cursor per query, socket timeouts, `SqlReader` turning DATETIMEs into RFC 3339 and the tags "
        "into a list, `ReplicaReader` ordering). Measured alone they add up to less than the whole "
        "request: the database round trip itself is slower when the client does other work between "
        "queries than in the raw baseline's back-to-back loop (the server thread goes idle and is "
        "woken; on this 2-core machine a probe with 60-120 µs of CPU work between raw selects added "
        "roughly 40-50 µs per select). Readers already use autocommit (one round trip per GET)."
    ),
    "GET /lists/{id} in process": (
        "The same request path as GET /todos/{id} (see its causes), over a smaller baseline: a list's row "
        "is shorter than a todo's, so the raw select is faster (about 80 against 100 µs of CPU per call "
        "when profiled beside each other) while ours adds the same fixed cost on top (the app, the reader "
        "stack, the access log: about 45-55 µs of CPU), and the same fixed cost is a larger share."
    ),
    "POST /todos in process, transport excluded": (
        "The bare route does nothing; the row's step timings (above) show where ours goes: making "
        "the command (UUIDv7 and UUIDv4, the version clock, `version_to_ts` formatting the version "
        "with strftime, then `stored_ts` parsing it back) and rendering its line, and the access-log "
        "line with its EMF record, which `observe.emf` validates and builds afresh on every request "
        "(dimension-set and unit checks, nested dicts) before `json.dumps(default=str)`. A prebuilt "
        "EMF skeleton per route and computing `at`/`stored_at` straight from the integer version "
        "would take most of the gap."
    ),
    "cold start: import + first GET": (
        "PyMySQL 1.2 defaults to TLS PREFERRED: with no `ssl` argument every `connect()` calls "
        "`ssl.create_default_context()` (the system CA store, 20-35 ms here); keep one context per "
        "process (chalicelib/db/tls.py) or `ssl_disabled` where TLS is off. `chalicelib/bootstrap.py` "
        "imports `chalicelib.loader` (with commands, models and their regular expressions, about "
        "13 ms) at import time although a GET never loads. In this venv `pymysql._auth` also imports "
        "`cryptography` (brought by moto), which a Lambda package without it does not pay."
    ),
    "GET /todos page of 50, 10 pending merged vs no cache": (
        "Measured in process on a 2-core AMD EPYC VM (2026-12-07 evening), the process's CPU time "
        "(time.thread_time) beside the wall time. The page query and its decoding cost the same CPU "
        "as the uncached page's (595 against 598 µs: 49 rows read against 51, 43 of them decoded). "
        "The extra is the second socket: the HGETALL's send and its reply's recv take about 60 µs of "
        "the process's CPU (on loopback TCP the kernel does the receiver's work and wakeup inside "
        "them; a process-to-process round trip there is 33-83 µs), the merge of the 10 pending rows "
        "about 20 µs, the plan, the reply check and the entries about 10 µs more. Sending the page "
        "query before the HGETALL (since 655feda) keeps the Redis work off the query's start: 3-10 % "
        "nearer in A/B runs of the read; reading the query's rows before the reply was 7 % further. "
        "The reply is one recv, and a reply the same as the last one is not parsed. The server's side "
        "(2026-12-07 night, time to the reply's first byte, the two queries interleaved): the page "
        "query that names the 10 pending ids, `(deleted = 0 OR id IN (...))`, so that their tombstones "
        "come back, takes 50-95 µs longer than the uncached page's query (medians of 200, 20 blocks): "
        "the OR with one id 10-25, the 9 other ids about 35, the signed version (CASE) 10-20. FIELD(), "
        "INSTR(), `_ascii` literals, FORCE INDEX (PRIMARY) and an OR chain cost the same or more; a "
        "UNION ALL of the live page and a tombstone lookup 210-245 µs more than the query naming the "
        "ids. Naming no ids when the reply is the one kept (trusting the last read for the ids it saw "
        "live or absent) was 0.9 % nearer on average in 15 A/B runs (7 % nearer to 4 % further), "
        "within this machine's noise, and would leave a loaded delete's entry to its TTL: not done. "
        "On a faster machine (2026-12-07 23:00-23:55: the uncached page 842-1,214 µs in four full runs, "
        "against 1.8-2.3 ms in the five of 20:23-21:26) the extra was 158-210 µs (1.14-1.22), and the "
        "ratio 1.13-1.23 in 12 runs of the row's own measure in process (15 interleaved rounds of 200 "
        "reads each). The process's CPU per read (time.process_time, 20 interleaved blocks of 200, 3 "
        "runs) was 100-120 µs above the uncached page's. With the HGETALL answered at once by a stub "
        "(the read without its Redis round trip: the most a client-side cache kept fresh by Redis's "
        "CLIENT TRACKING could give) the same runs gave 1.03-1.14: the round trip is about half the "
        "extra, the merge and the longer page query the other half. Below 1.095 run after run would "
        "need both gone; the merge and the ids the query names are the read's own work."
    ),
    "202 → visible to the writer, GET /todos p99": (
        "The page a writer reads right after its 202 is the merged page (see the row above): one Redis "
        "round trip more than the uncached page, and the merge. More than there: the writer's page "
        "shows 1 to 10 more rows than the baseline's 40 (its pending new todos), it is read right after "
        "the POST (the uncached page read there costs 5-10 % more than after a page), and each "
        "write changes the reply: its new entry is parsed and the page query's text names a new id "
        "(about 140 and 45 µs on the slower machine of 2026-12-07 afternoon, against 8 µs and none "
        "for an unchanged reply). Its median is 1.17-1.21 times the uncached page's read in the same "
        "place there. The 1 ms allowance is fixed while the page's own time follows the machine: "
        "0.78 where pages take 0.65 ms; 0.89-1.04 in full runs where they take 1.8-2.1 ms (up to 1.33 "
        "in runs of row 7 alone). Timed inside the read on 2026-12-07 night (means of 400, 4 runs), "
        "the read after a POST costs 150-210 µs more than the same read again: the changed reply's "
        "entries 80-110 (34 µs for the same call repeated in a loop), what the read learns 27-39, the "
        "plan and the query's text 13-29, and the reply comes 150-300 µs later while the query's rows "
        "come 110-250 sooner."
    ),
    "GET /todos/{id}, warm Redis cache vs replica": (
        "A hit is one Redis round trip (the HGET of the caller's pending entry and the GET of the cache "
        "entry, sent in one write) plus json.loads of the row; what remains is the app's own work (see "
        "the GET row). On the faster machine of 2026-12-07 23:00-23:55 (4 full runs: 0.504-0.667), "
        "in process: ours 127 µs of wall time and 86 of CPU, the uncached GET 200 and 121, the app "
        "alone 25 and 25 (20 interleaved blocks of 300); under cProfile the hit's sendall took 19 µs "
        "and its recv 55, the wait for Redis included. The round trip, one write and one read on "
        "loopback, is the floor of the hit; the app's 25 µs are in both."
    ),
}


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    number = float(value)
    if abs(number) >= 100:
        return f"{number:,.0f}"
    if abs(number) >= 10:
        return f"{number:.1f}"
    if number == 0:
        return "0"
    return f"{number:.3g}"


def normalise(item: dict[str, Any], section: str) -> Row:
    """Rows from other modules (bench/loader.py) may carry only the six required keys."""
    out: Row = {
        "name": str(item.get("name", "?")),
        "ours": item.get("ours"),
        "baseline": item.get("baseline"),
        "unit": str(item.get("unit", "")),
        "ratio": item.get("ratio"),
        "target": item.get("target", ""),
        "note": str(item.get("note", "")),
        "section": item.get("section") or section,
    }
    if out["ratio"] is None and out["ours"] is not None and out["baseline"]:
        out["ratio"] = out["ours"] / out["baseline"]
    met = item.get("met")
    out["met"] = met if isinstance(met, bool) else target_met(out["ratio"], out["target"])
    return out


def verdict(item: Row) -> str:
    if item["met"] is None:
        return "—"
    if item["met"]:
        return "yes"
    return "NO, " + miss(item)


def miss(item: Row) -> str:
    text = str(item["target"]).replace("≤", "<=").replace("≥", ">=").strip()
    try:
        bound = float(text[2:].strip().split()[0].rstrip("x×"))
    except (ValueError, IndexError):
        return "missed"
    ratio = float(item["ratio"])
    if text.startswith("<="):
        return f"{(ratio / bound - 1) * 100:.0f}% over"
    return f"{(1 - ratio / bound) * 100:.0f}% under"


def table(rows: list[Row]) -> str:
    header = ["row", "ours", "baseline", "unit", "ratio", "target", "met"]
    body = [
        [r["name"], fmt(r["ours"]), fmt(r["baseline"]), r["unit"], fmt(r["ratio"]), str(r["target"] or "—"), verdict(r)]
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


TRADEOFF = re.compile(r"buffer interval (\S+) s: (master commits per 10k writes|202 → replica p99)")


def tradeoff_table(rows: list[Row]) -> list[str]:
    """The Firehose buffer interval trade-off (section 6) as one table: per interval, master
    commits per 10k writes against the 202 -> replica p99; computed rows say so."""
    found: dict[str, dict[str, Row]] = {}
    for item in rows:
        match = TRADEOFF.fullmatch(str(item["name"]))
        if match:
            found.setdefault(match.group(1), {})[match.group(2)] = item
    if not found:
        return []
    out = [
        "",
        "### Firehose buffer interval: master load against freshness",
        "",
        "| buffer interval | master commits per 10k writes | 202 → replica p99 | how |",
        "|---:|---:|---:|---|",
    ]
    for interval in sorted(found, key=float):
        pair = found[interval]
        commits, latency = pair.get("master commits per 10k writes"), pair.get("202 → replica p99")
        computed = any("COMPUTED" in str(r["note"]) for r in pair.values())
        out.append(
            f"| {interval} s | {fmt(commits['ours'] if commits else None)} | "
            f"{fmt(latency['ours'] if latency else None)} ms | {'computed from the 0 s run' if computed else 'measured'} |"
        )
    return out


def markdown(rows: list[Row], info: dict[str, str], quick: bool, seconds: float) -> str:
    out = [
        "# Sluice benchmarks",
        "",
        "Written by `make bench` (`.venv/bin/python -m bench`); do not edit by hand. Every baseline was "
        "measured in the same run, on the same machine, as the figure beside it. `ratio` is always "
        "ours / baseline; `target` is the bound the ratio must keep (issue 6).",
        "",
        f"Run: {info.get('date', '?')}, {'QUICK smoke sizes (not for comparison)' if quick else 'full sizes'}, "
        f"{seconds:.0f} s in all.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    out += [f"| {key} | {value} |" for key, value in info.items()]
    out += [
        "",
        "## Results",
        "",
        "| # | row | ours | baseline | unit | ratio | target | met |",
        "|---|---|---:|---:|---|---:|---|---|",
    ]
    for item in rows:
        number = str(item["section"]).split(".", 1)[0]
        out.append(
            f"| {number} | {item['name']} | {fmt(item['ours'])} | {fmt(item['baseline'])} | {item['unit']} | "
            f"{fmt(item['ratio'])} | {item['target'] or '—'} | {verdict(item)} |"
        )
    out += tradeoff_table(rows)
    out += ["", "## Notes per row", ""]
    section = None
    for item in rows:
        if item["section"] != section:
            section = item["section"]
            out += [f"### {section}", ""]
        line = f"- **{item['name']}**: {item['note'] or 'no notes.'}"
        out.append(line)
        if item["met"] is False:
            out.append(f"  - Target missed ({miss(item)}: ratio {fmt(item['ratio'])}, target {item['target']}).")
            cause = KNOWN_CAUSES.get(item["name"])
            if cause:
                out.append(f"  - What stands in the way: {cause}")
        out.append("")
    out += [
        "## How the rows are measured",
        "",
        "See the docstring at the top of each module: `bench/master_load.py` (1), `bench/loader.py` (2), "
        "`bench/inprocess.py` (3, 5), `bench/cold_start.py` (4), `bench/freshness.py` (6), "
        "`bench/own_writes.py` (7), `bench/sustained.py` (8). Timings use "
        "`time.perf_counter`, warm-ups and the median of repeated rounds; the MariaDB rows run on a "
        "private master/replica pair started by `scripts/db-pair` (ports 3317/3318), Redis on 127.0.0.1:6379.",
        "",
    ]
    return "\n".join(out)
