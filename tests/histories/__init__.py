"""The history checker: random histories of writes, reads, loads and faults, each answer held to
the contract (shared/CONTRACT.md sections 3 and 5) as it comes. Issue 17 item 1.

Why
    Case tests check the rules one interleaving at a time; the defects of issue 17 (a read going
    backwards on a version tie, created_at changing with the route after the TTLs, a bad pending
    entry answering 500, good objects poisoned by outages or by concurrent deliveries) each hide
    in a rarer interleaving. A history mixes them all, and the model says at every step what the
    service may answer.

What a history is (steps.py)
    Several callers write and read through two API instances (two `chalicelib.bootstrap.build`
    service sets: two Lambda processes) whose clocks are up to 3 s apart (under the 5 s bound of
    `min_version`), sharing one write stream, one master (and replica) and one Redis:
    - writes: PUT, DELETE, POST (with and without Idempotency-Key), batches of 1 to 8 todos and of
      65 to 100 (more pending writes than a page query names), PUT /me, some with `min_version`
      (the caller's last version, or one ahead of the clock), and ties: one todo written through
      both instances with one `min_version` ahead of both clocks, so that op_id decides;
    - reads: GET /todos/{id} and GET /me (some with `min_version`), and page walks with every limit
      from 1 to 100 and the `state` filter, their pages interleaved with the other steps;
    - delivery: the stream delivers its oldest records as objects (GZIP or not, a foreign line,
      bytes after the GZIP member, twice under two names); objects are loaded partly, in random
      order, again (duplicate events) and concurrently (2 to 5 loads on threads, each recording
      its attempt before any begins: S3 events arriving together);
    - faults: a load killed (an attempt that began and never finished, its connection gone: fewer
      than 3 per object, since 3 poison it by the contract), the database going away during a load
      and coming back, Redis losing every key (FLUSHDB), Redis unreachable, the cache and the
      pending writes past their TTLs (injected clocks), a bad entry written into a caller's
      pending hash (not JSON, a JSON list, not UTF-8, missing fields, a header that does not
      parse, an id that is not a UUID or not ASCII), and on MariaDB a lagging replica
      (replication stopped) and a dead one that reads move off.

What is checked, at every step (model.py, runner.py)
    - session reads: no read shows a state older, in (version, op_id) order, than a write the
      caller was answered 202 for, while its pending entry is kept (recorded, not flushed, not past
      PENDING_TTL by any instance's clock, and Redis readable for that request);
    - `min_version`: never an older state; 404 only for a tombstone at or after it; 503 only when
      neither the pending writes nor the database that answers can show it yet;
    - created_at: the `at` of one of the row's commands, the earliest one's once that command is
      loaded and readable (except a read by key whose cache entry may be stale by the cache's own
      documented terms), and the same on every route for the same state;
    - paging: ids ascend across a walk (nothing repeated), every page holds each row whose state is
      determinate in its range (loaded and readable, or the caller's kept pending write) and
      shows that state;
    - answers: no 5xx but the contract's 503 (with Retry-After), writes 202 with what the stream
      took, rows showing exactly the fields some accepted write sent (no phantom rows);
    - delivery: no good object poisoned (by outages, concurrent deliveries, or loads still
      running), no load failing while the database answers, an outage failing as the database
      being unavailable;
    - at the end, every fault healed and everything loaded: every row equals the last-writer-wins
      model (tombstones, created_at, updated_at), the ledger holds one row per delivered object
      with its commands applied or stale and its bad lines rejected once, and a last read of every
      key and page shows the winners.
    The model is written from the contract alone: last-writer-wins and the session floors are
    computed here from the 202s and what the stream took, never with chalicelib's helpers.

Tiers
    - CI (tests/integration/test_histories.py): in process, injected clocks and faults, a fixed
      list of seeds, on SQLite and on the MariaDB pair (Redis, the master and the replica reached
      through `proxy.TcpProxy`s the checker cuts: the shared servers stay up). A seed always plays
      the same history with the same ids, op_ids and versions; concurrent loads run on real
      threads, so which of them takes an object can change from run to run (the history and the
      outcome the contract requires do not). Replay: `SLUICE_HISTORY_SEEDS=N pytest
      tests/integration/test_histories.py`; longer histories: `SLUICE_HISTORY_STEPS=N`.
    - soak (`make soak MINUTES=N`, soak.py): random seeds on the MariaDB pair with every load a
      process of its own (SIGKILLed at random moments), the master killed during loads
      (scripts/db-pair kill-master), the replica stopped or killed; a failing history is shrunk by
      delta debugging and printed, and written to a file `python -m tests.histories replay` plays.
    `python -m tests.histories survey --seeds 1-40` runs CI-tier histories to their end and lists
    every check that failed, per seed: how FOUND.md was made.

Redis: the checker's keys live under a prefix of their own (`sluice-history:<random>`), so its
"FLUSHDB" and "TTL expiry" delete only those keys; the shared Redis is never flushed.
"""
