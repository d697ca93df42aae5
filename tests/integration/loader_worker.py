"""One loader process of the concurrency suite (tests/integration/test_concurrent_loaders.py).

    python -m tests.integration.loader_worker URL WAY FILE...

Loads FILEs (Firehose objects; the key is the path from its `writes/` component on, as
`cli load` names it) with a `BatchLoader` whose applier takes one way of writing, so that several
processes can be pointed at the same keys through a way `cli load`'s defaults would not take:
- `keys`: the fast path's keys way from the first chunk (tiny chunks: keys repeat across chunks);
- `fresh`: the fast path with tiny chunks, fresh when the probe finds no key stored;
- `upsert`: the connection has no LOAD DATA LOCAL, so the fast path is refused and the object
  goes through the guarded multi-row upsert;
- `sqlapplier`: `SqlApplier` alone (what SQLite and small objects use).
It waits for one line on stdin before loading (the suite starts every process, then releases
them at once), prints one JSON line per object and one with the fast path's `paths` counts (which
way each object went), and exits 1 with the error on its last line.

Given no FILE, it loads rounds instead: each line on stdin names the files of one round, and
`done` follows each round's lines (the suite's rounds then pay for no process start-up).
SLUICE_LOAD_ATTEMPTS sets the loader's tries before it goes through the gate (BatchLoader.ATTEMPTS).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from chalicelib.db.database import open_master
from chalicelib.loader import BatchLoader, local_etag
from chalicelib.loader.apply import Applier, SqlApplier


def main(argv: list[str]) -> int:
    url, way, *files = argv
    logging.basicConfig(level=logging.INFO if os.environ.get("SLUICE_WORKER_LOG") else logging.WARNING)
    db = open_master(url, local_infile=way != "upsert")
    applier: Applier
    if way == "sqlapplier":
        applier = SqlApplier(db)
    else:
        from chalicelib.loader.mysql_fast import MySQLFastApplier

        applier = MySQLFastApplier(db, min_rows=1, chunk_lines=48, threaded=True, prefers_keys=way == "keys")
    loader = BatchLoader(db, applier)
    if os.environ.get("SLUICE_LOAD_ATTEMPTS"):
        loader.ATTEMPTS = int(os.environ["SLUICE_LOAD_ATTEMPTS"])
    print("ready", flush=True)
    if files:
        sys.stdin.readline()
        return load_all(loader, applier, files)
    for line in sys.stdin:  # one round a line
        code = load_all(loader, applier, line.split())
        print("done", flush=True)
        if code:
            return code
    return 0


def load_all(loader: BatchLoader, applier: Applier, files: list[str]) -> int:
    try:
        for path in files:
            with open(path, "rb") as handle:
                body = handle.read()
            key = path[path.rindex(os.sep + "writes" + os.sep) + 1 :]
            result = loader.load("local", key, local_etag(body), body)
            print(json.dumps(result.__dict__), flush=True)
    except Exception as exc:  # noqa: BLE001 - reported to the suite, which fails
        print(f"error: {exc.__class__.__name__}: {exc}", flush=True)
        return 1
    print(json.dumps({"paths": dict(getattr(applier, "paths", {}))}), flush=True)  # how the objects went
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
