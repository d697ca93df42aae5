"""What shows that a load is still running, and whether the server it began on still runs
(CONTRACT section 5: an attempt counts when its process died while the server stayed up; one that
is still running, or whose server restarted after it began, does not).

A load writes a token into `ingest_attempts.running` when it begins and takes it out when it ends
(chalicelib.loader.attempts). A later load of the same object judges the tokens it finds there:
- RUNNING: the load is alive; it does not count;
- DIED: its process ended without taking its token out (killed, out of memory or time) while the
  server stayed up; it counts;
- GONE: the server restarted since the load began (or the token cannot be judged here); it does
  not count.

MySQL/MariaDB (`ServerLocks`): a token names a user-level lock (GET_LOCK) that the load's
connection holds until the load ends, and the server's start time (`UNIX_TIMESTAMP() - Uptime`
of SHOW GLOBAL STATUS). The server frees a connection's locks when the connection ends, whichever
way it ends; a restarted server holds none of them and has another start time (a failover to
another instance too).

SQLite (`ProcessTokens`): no server; the token names the process (its pid and, on Linux, its start
time from /proc, so that a reused pid is not taken for it), the host and the host's boot. A process
that is gone died; one that runs is alive; a token of another boot (the host restarted) or another
host (which this host cannot see) is gone.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import weakref
from abc import ABC, abstractmethod
from typing import Any

RUNNING, DIED, GONE = "running", "died", "gone"


class Liveness(ABC):
    @abstractmethod
    def take(self, cur: Any) -> str:
        """A new token, shown alive from now on by the cursor's connection (or this process)."""

    def hold(self, cur: Any, token: str) -> None:
        """Show `token` alive on this cursor's connection too (the load reconnected)."""
        return None

    def release(self, conn: Any, token: str) -> None:
        """The load of `token` has ended: stop showing it alive on `conn`, the connection that
        shows it (if it is still open)."""
        return None

    @abstractmethod
    def judge(self, cur: Any, tokens: list[str]) -> list[str]:
        """RUNNING, DIED or GONE for each token."""

    @abstractmethod
    def same_run(self, cur: Any, token: str) -> bool:
        """Whether the server (SQLite: the host) `token` was taken on still runs, so that a judge
        finds the token DIED, not GONE, once its load has ended."""


class ServerLocks(Liveness):
    """MySQL/MariaDB: a user-level lock held by the load's connection, and the server's start."""

    TOLERANCE = 2  # seconds: the start is read as whole seconds, NOW() and Uptime a moment apart

    def __init__(self) -> None:
        self._starts: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def take(self, cur: Any) -> str:
        name = f"sluice_load_{secrets.token_hex(12)}"  # lock names are server-wide: unique
        cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
        if cur.fetchone()[0] != 1:
            raise RuntimeError(f"could not take the lock {name}")
        return f"m.{name}.{self._start(cur)}"

    def hold(self, cur: Any, token: str) -> None:
        name, _ = _lock(token)
        cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
        cur.fetchall()

    def release(self, conn: Any, token: str) -> None:
        name, _ = _lock(token)
        if name and conn.open:  # a closed connection's locks were freed with it
            cur = conn.cursor()  # (no table read: no transaction to end, inside one or not)
            cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
            cur.fetchall()

    def judge(self, cur: Any, tokens: list[str]) -> list[str]:
        locks = [_lock(token) for token in tokens]
        names = [name for name, _ in locks if name]
        held: dict[str, bool] = {}
        if names:
            cur.execute("SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * len(names)), names)
            held = {name: holder is not None for name, holder in zip(names, cur.fetchone(), strict=True)}
        start = self._start(cur)
        verdicts = []
        for name, began in locks:
            if not name:
                verdicts.append(GONE)
            elif held[name]:
                verdicts.append(RUNNING)
            else:
                verdicts.append(DIED if abs(began - start) <= self.TOLERANCE else GONE)
        return verdicts

    def same_run(self, cur: Any, token: str) -> bool:
        name, began = _lock(token)
        return bool(name) and abs(began - self._start(cur)) <= self.TOLERANCE

    def _start(self, cur: Any) -> int:
        """The server's start, in seconds since the epoch: read once per connection (a connection
        cannot outlive its server)."""
        conn = cur.connection
        start = self._starts.get(conn)
        if start is None:
            cur.execute("SELECT UNIX_TIMESTAMP()")
            now = int(cur.fetchone()[0])
            cur.execute("SHOW GLOBAL STATUS LIKE 'Uptime'")
            start = self._starts[conn] = now - int(cur.fetchone()[1])
        return start


def _lock(token: str) -> tuple[str, int]:
    """(lock name, server start) of a ServerLocks token; ("", 0) for anything else."""
    kind, _, rest = token.partition(".")
    name, _, start = rest.rpartition(".")
    if kind != "m" or not name.startswith("sluice_load_") or not start.isdigit():
        return "", 0
    return name, int(start)


class ProcessTokens(Liveness):
    """SQLite: the process that loads, on this host, in this boot."""

    def take(self, cur: Any) -> str:
        pid = os.getpid()
        return f"p.{_host()}.{_boot()}.{pid}.{_process_start(pid)}.{secrets.token_hex(3)}"

    def judge(self, cur: Any, tokens: list[str]) -> list[str]:
        verdicts = []
        for token in tokens:
            parts = token.split(".")
            if len(parts) != 6 or parts[0] != "p" or not parts[3].isdigit() or not self._here(parts):
                verdicts.append(GONE)
                continue
            pid, started = int(parts[3]), parts[4]
            alive = _alive(pid) and started in ("-", _process_start(pid))
            verdicts.append(RUNNING if alive else DIED)
        return verdicts

    def same_run(self, cur: Any, token: str) -> bool:
        parts = token.split(".")
        return len(parts) == 6 and parts[0] == "p" and self._here(parts)

    @staticmethod
    def _here(parts: list[str]) -> bool:
        return parts[1] == _host() and parts[2] == _boot()


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _boot() -> str:
    """The host's boot (Linux); "-" where it cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip().replace("-", "")[:12] or "-"
    except OSError:
        return "-"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return None


def _process_start(pid: int) -> str:
    """When the process started, in clock ticks since boot (Linux); "-" where it cannot be read."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else "-"


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot tell without killing it (os.kill terminates on Windows): not counted
    fields = _proc_stat(pid)
    if fields is not None:
        return fields[0] != "Z"  # a zombie has ended: it only waits for its parent
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def liveness_for(dialect: str) -> Liveness:
    return ProcessTokens() if dialect == "sqlite" else ServerLocks()
