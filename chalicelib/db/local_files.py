"""LOAD DATA LOCAL sends only the files the loader names.

With `LOAD DATA LOCAL INFILE` the *server* says which client file to send, and PyMySQL sends
whatever file it names, in reply to any statement. A server that is not ours (an on-path
attacker where TLS is not verified; the deploy default `ssl=required` encrypts without checking
the certificate) could ask for the Lambda's `/proc/self/environ`, which holds its AWS
credentials. So every connection Sluice opens with `local_infile` carries an allow-list, the
loader names each file just before its statement (`sending`), and a request for any other file
is refused: nothing is read, the statement fails, the object is not loaded.

The check wraps PyMySQL's module function that sends a local file. If this PyMySQL has no such
function, `install()` says so and `Database` opens its connections without `local_infile`
(the server then refuses LOAD DATA LOCAL and the loader uses its multi-row upsert).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ALLOWED = "sluice_local_files"  # the attribute holding a connection's allow-list
FILE_REFUSED = 1017  # ER_FILE_NOT_FOUND, as PyMySQL reports a file it cannot send

_lock = threading.Lock()
_installed: bool | None = None


def install() -> bool:
    """Wrap PyMySQL's local-file sender (once per process); False if it cannot be wrapped."""
    global _installed
    with _lock:
        if _installed is None:
            _installed = _wrap()
        return _installed


def _wrap() -> bool:
    try:
        from pymysql import connections
    except ImportError:
        return False
    original = getattr(connections, "_send_local_file", None)
    if not callable(original):
        return False
    if getattr(original, "sluice_guard", False):
        return True
    connections._send_local_file = guarded(original)  # type: ignore[attr-defined]
    return True


def guarded(original: Any) -> Any:
    def send_local_file(filename: str | bytes, conn: Any) -> Any:
        allowed = getattr(conn, ALLOWED, None)
        if allowed is not None and os.fsencode(filename) not in allowed:
            from pymysql.err import OperationalError

            raise OperationalError(
                FILE_REFUSED, f"LOAD DATA LOCAL refused: the server asked for {filename!r}, which no statement named"
            )
        return original(filename, conn)

    send_local_file.sluice_guard = True  # type: ignore[attr-defined]
    return send_local_file


def protect(conn: Any) -> Any:
    """Give a connection opened with local_infile its (empty) allow-list."""
    setattr(conn, ALLOWED, set())
    return conn


@contextmanager
def sending(conn: Any, path: str) -> Iterator[None]:
    """`path` may be sent on `conn` while the block runs (the statement naming it)."""
    allowed = getattr(conn, ALLOWED, None)
    if allowed is None:  # a connection Sluice did not open: PyMySQL's own behaviour
        yield
        return
    name = os.fsencode(path)  # the server names the file in bytes
    allowed.add(name)
    try:
        yield
    finally:
        allowed.discard(name)
