"""Sluice benchmarks: `python -m bench` (or `make bench`) prints a table and writes BENCHMARKS.md.

Each row puts our figure beside a baseline measured in the same run on the same machine:

1. master write load (bench/master_load.py): per-request autocommit upserts vs the loader
2. loader rows/s (bench/loader.py, another engineer's module; included when present)
3. per-request cost in process, and 5. cached GET (bench/inprocess.py)
4. cold start (bench/cold_start.py)
6. end-to-end freshness with Firehose-like batching (bench/freshness.py)

The MariaDB rows use a private master/replica pair (scripts/db-pair in /tmp/sluice-bench-pair on
ports 3317/3318) so other work on the machine does not pollute the server counters; Redis is the
machine's, on 127.0.0.1:6379, under a key prefix of its own.
"""
