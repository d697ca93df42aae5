"""`python -m bench [--quick] [--only 1,3] [--out PATH] [--keep-pair]`: run the rows, print the
table, write BENCHMARKS.md (full runs; a --quick run writes only where --out says)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import BENCH_PAIR_DIR, ROOT, Pair, Row, error_row, machine_info, start_pair, stop_pair
from bench.report import markdown, normalise, table

LOADER_SECTION = "2. Loader rows/s"


def loader_rows(n: int, pair: Pair | None = None) -> list[Row]:
    try:
        loader = importlib.import_module("bench.loader")
    except ModuleNotFoundError as exc:
        if exc.name != "bench.loader":
            raise
        return [
            normalise(
                {
                    "name": "loader rows/s",
                    "ours": None,
                    "baseline": None,
                    "unit": "rows/s",
                    "ratio": None,
                    "target": ">= 0.7",
                    "note": "NOT MEASURED: bench/loader.py (owned by another engineer) is not in this tree yet.",
                },
                LOADER_SECTION,
            )
        ]
    kwargs = {}
    if pair is not None:  # the bench's own pair
        kwargs["url"] = f"mysql://root@127.0.0.1:{pair.master_port}/"
        kwargs["replica_url"] = f"mysql://root@127.0.0.1:{pair.replica_port}/"
    return [normalise(item, LOADER_SECTION) for item in loader.run(n, **kwargs)]


def quiesce(pair: Pair) -> None:
    """Before each group: the replica has applied what earlier groups wrote, both servers have
    written out their dirty pages, and this process has collected its garbage, so that no group
    is timed while the work of the one before it finishes on the same 2 cores."""
    import gc

    from bench.common import sync_replica
    from bench.loader import settle

    sync_replica(pair, timeout=600)
    settle(pair.url("master", "test"))
    settle(pair.url("replica", "test"))
    gc.collect()


def groups(pair: Pair, quick: bool) -> dict[str, tuple[str, Callable[[], list[Row]]]]:
    from bench import cold_start, freshness, inprocess, master_load, own_writes, sustained

    return {
        "1": ("1. Master write load", lambda: master_load.run(pair, 1000 if quick else 10_000)),
        "2": (LOADER_SECTION, lambda: loader_rows(2000 if quick else 50_000, pair)),
        "3": ("3. Per-request cost in process", lambda: inprocess.run(pair, quick)),
        "4": ("4. Cold start", lambda: cold_start.run(pair, quick)),
        "6": ("6. End-to-end freshness", lambda: freshness.run(pair, quick)),
        "7": (own_writes.SECTION, lambda: own_writes.run(pair, quick)),
        "8": (sustained.SECTION, lambda: sustained.run(pair, quick)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not numbers to compare")
    parser.add_argument("--only", default="", help="comma-separated row groups: 1,2,3,4,6,7,8 (5 runs with 3)")
    parser.add_argument("--out", default=None, help="where to write the report (default BENCHMARKS.md on full runs)")
    parser.add_argument("--keep-pair", action="store_true", help="leave the bench's MariaDB pair running")
    args = parser.parse_args(argv)
    # The app must take Lambda's import path (no chalice-local patches) in every row.
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "sluice-bench")

    started = time.perf_counter()
    pair, started_here = start_pair(BENCH_PAIR_DIR)
    rows: list[Row] = []
    try:
        chosen = groups(pair, args.quick)
        wanted = [g.strip() for g in args.only.split(",") if g.strip()] or list(chosen)
        for key in wanted:
            if key == "5":
                key = "3"
            if key not in chosen:
                parser.error(f"no row group {key!r}")
            section, build = chosen[key]
            quiesce(pair)
            print(f"bench: {section} ...", file=sys.stderr, flush=True)
            step = time.perf_counter()
            try:
                rows += build()
            except Exception as exc:  # noqa: BLE001 - one failing row must not hide the others
                rows.append(error_row(section, section, exc))
            print(f"bench: {section} took {time.perf_counter() - step:.1f} s", file=sys.stderr, flush=True)
        info = machine_info(pair)
    finally:
        if started_here and not args.keep_pair:
            stop_pair(pair.directory)
    rows.sort(key=lambda r: str(r["section"]).split(".", 1)[0])
    print(table(rows))
    out = args.out if args.out is not None else (None if args.quick else str(ROOT / "BENCHMARKS.md"))
    if out:
        Path(out).write_text(markdown(rows, info, args.quick, time.perf_counter() - started), encoding="utf-8")
        print(f"bench: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
