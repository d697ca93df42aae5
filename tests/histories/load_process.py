"""One loader process of the soak tier (tests/histories/soak.py): the S3 event handler's loader,
built by the composition root from DATABASE_URL and CACHE_URL as a Lambda process builds it, its
cache keys under the history's prefix.

    python -m tests.histories.load_process DATABASE_URL CACHE_URL PREFIX FILE [--force] [--pause-at AT]

It prints "ready", waits for a line on stdin (so the soak can release several at once), loads FILE
(a Firehose object under writes/; its key is the path from there on, its ETag the MD5 of its
bytes), prints one JSON line {"result": LoadResult, "cache_failures": N}, and exits 0; or prints
"error: KIND: MESSAGE" and exits 1. With `--pause-at claim|work|commit` it prints "paused" at that
point of the load's transaction (tests.integration.faults.TrippingApplier's points) and waits for
another line: the soak SIGKILLs it there, or kills the master there, while the load is in flight.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile


def main(argv: list[str]) -> int:
    url, cache_url, prefix, path, *flags = argv
    pause_at = flags[flags.index("--pause-at") + 1] if "--pause-at" in flags else None
    logging.basicConfig(level=logging.CRITICAL)
    from chalicelib import bootstrap
    from chalicelib.config import Settings
    from chalicelib.loader import local_etag
    from tests.histories.system import BUCKET, CACHE_TTL_SECONDS

    env = {
        "DATABASE_URL": url,
        "CACHE_URL": cache_url,
        "CACHE_TTL_SECONDS": str(CACHE_TTL_SECONDS),
        "LOCAL_DATA_DIR": tempfile.gettempdir(),
    }
    services = bootstrap.build(Settings.from_env(env))
    loader = services.loader
    if pause_at:
        from tests.integration.faults import TrippingApplier

        def pause() -> None:
            print("paused", flush=True)
            sys.stdin.readline()

        tripping = TrippingApplier(loader.applier)
        tripping.arm(pause, at=pause_at)
        loader.applier = tripping
    invalidator = loader.on_commit
    invalidator.prefix = prefix
    with open(path, "rb") as handle:
        body = handle.read()
    key = path[path.rindex(os.sep + "writes" + os.sep) + 1 :]
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        result = loader.load(BUCKET, key, local_etag(body), body, force="--force" in flags)
    except Exception as exc:  # noqa: BLE001 - reported to the soak, which judges it
        print(f"error: {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
        return 1
    print(json.dumps({"result": result.__dict__, "cache_failures": invalidator.breaker.failures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
