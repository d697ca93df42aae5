"""The gate that lets a load through other loads' deadlocks (docs/architecture.md, "Concurrent
loaders").

Loads of objects that share keys lock those keys with locking reads, chunk by chunk in the order
each object holds them (the fast path cannot know an object's later keys when it locks the first),
so two loads can each hold keys the other wants next: InnoDB rolls one back (1213). Retrying
after a pause is usually enough; under steady contention the same load can lose again and again.

So a load that has lost BatchLoader.ATTEMPTS times closes the gate: it takes a user-level lock
(GET_LOCK) named after the database and keeps it until it ends. Every load passes the gate as the
first statement of its transaction, before it holds any row lock: it waits while the gate is
closed. A load behind a closed gate then competes only with the loads already past it, which end
one by one (those rolled back wait at the gate when they try again), and no new ones come. One
load at a time closes it; the others that would wait their turn for it.

Waits are bounded under the master's read timeout (a wait that outlasted it would be taken for a
lost connection): a load that waited WAIT_SECONDS goes on without the gate.

SQLite has none: BEGIN IMMEDIATE already runs loads one after another.
"""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.db.database import Database
from chalicelib.retry import RetryPolicy, no_jitter

log = logging.getLogger(__name__)

# Lock names are server-wide: one gate per database (its name hashed: at most 64 characters).
NAME = "CONCAT('sluice_gate_', SHA1(DATABASE()))"
WAIT_SECONDS = 30
# Waits for the gate: each try is a wait of WAIT_SECONDS itself, so none pauses in between.
CLOSE_TRIES = RetryPolicy(3, 0.0, jitter=no_jitter)


class LoadGate:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.enabled = db.dialect == "mysql"

    def pass_through(self, cur: Any) -> None:
        """The first statement of a load's transaction: wait while another load holds the gate.
        (The load holding it passes too: the lock is counted, taken and given back again.)"""
        if self.enabled:
            cur.execute(f"SELECT GET_LOCK({NAME}, %s), RELEASE_LOCK({NAME})", (WAIT_SECONDS,))
            cur.fetchall()

    def close(self) -> bool:
        """Outside a transaction: hold the gate until `open`; False when another load kept it
        closed through every wait (this load then goes on without it)."""
        if not self.enabled:
            return False
        run = CLOSE_TRIES.start()
        while self.db.query(f"SELECT GET_LOCK({NAME}, %s)", (WAIT_SECONDS,))[0][0] != 1:
            if not run.again():
                log.warning("the load gate stayed closed for %d s: going on without it", run.tries * WAIT_SECONDS)
                return False
        return True

    def open(self) -> None:
        """Never raises (a lost connection has let its locks go already)."""
        try:
            self.db.query(f"SELECT RELEASE_LOCK({NAME})")
        except Exception:  # the lock went with its connection
            log.debug("could not open the load gate", exc_info=True)
