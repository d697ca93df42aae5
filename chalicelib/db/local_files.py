"""LOAD DATA LOCAL sends only the files the loader names.

With `LOAD DATA LOCAL INFILE` the *server* says which client file to send, and PyMySQL sends
whatever file it names, in reply to any statement. A server that is not ours (an on-path
attacker where TLS is not verified; the deploy default `ssl=required` encrypts without checking
the certificate) could ask for the Lambda's `/proc/self/environ`, which holds its AWS
credentials. So every connection Sluice opens with `local_infile` carries an allow-list, the
loader names each file just before its statement (`sending`), and a request for any other file
is refused: nothing is read, the statement fails, the object is not loaded.

The loader's chunks never touch the disk: `sending(conn, name, data)` names bytes held in
memory, and the guard sends them itself, in packets of `PACKET_BYTES` (PyMySQL's own file sender
reads 16 KiB at a time: 32 times the packets, each a system call and a turn of the GIL). No file
of user data is left behind by a process killed mid-load, and none is written to be read back.

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
# In-memory data goes in packets this big: under any server's max_allowed_packet (1 MiB at the
# very least; MariaDB's default is 16 MiB, MySQL 8's 64 MiB), which a packet must stay below.
PACKET_BYTES = 512 * 1024

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
        if allowed is None:  # a connection Sluice did not open: PyMySQL's own behaviour
            return original(filename, conn)
        name = os.fsencode(filename)
        if name not in allowed:
            from pymysql.err import OperationalError

            raise OperationalError(
                FILE_REFUSED, f"LOAD DATA LOCAL refused: the server asked for {filename!r}, which no statement named"
            )
        data = allowed[name]
        if data is None:  # a file on disk
            return original(filename, conn)
        return send_bytes(conn, data)

    send_local_file.sluice_guard = True  # type: ignore[attr-defined]
    return send_local_file


def send_bytes(conn: Any, data: bytes, size: int = PACKET_BYTES) -> None:
    """Send `data` as a LOAD DATA LOCAL file's contents (PyMySQL sends the empty packet that ends it)."""
    limit = getattr(conn, "max_allowed_packet", None)  # PyMySQL's; a packet must stay below it
    if limit:
        size = max(1, min(size, int(limit) - 1))
    view = memoryview(data)
    for start in range(0, len(data), size):
        conn.write_packet(view[start : start + size])


def protect(conn: Any) -> Any:
    """Give a connection opened with local_infile its (empty) allow-list."""
    setattr(conn, ALLOWED, {})
    return conn


@contextmanager
def sending(conn: Any, path: str, data: bytes | None = None) -> Iterator[None]:
    """`path` may be sent on `conn` while the block runs (the statement naming it). With `data`,
    `path` is only a name: those bytes are sent from memory, and the connection gets an
    allow-list first if it had none (nothing else may then be sent on it)."""
    allowed = getattr(conn, ALLOWED, None)
    if allowed is None:
        if data is None:  # a connection Sluice did not open: PyMySQL's own behaviour
            yield
            return
        allowed = getattr(protect(conn), ALLOWED)
    name = os.fsencode(path)  # the server names the file in bytes
    allowed[name] = data
    try:
        yield
    finally:
        allowed.pop(name, None)
