"""The LOAD DATA fast path's side of the server (`mysql_fast`): `Worker`, the thread that runs a
session's statements in order while the caller parses the next chunk (or runs them inline), the
switch interval that lets it take the GIL back quickly, `load_file` (a chunk sent from memory
with LOAD DATA LOCAL INFILE), and the errors that make the fast path
give an object up (`Abandoned`; `LoadRefused` when the server will not run its statements).
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from chalicelib.db import local_files

# Server or proxy will not take LOAD DATA LOCAL / a temporary table inside a transaction.
REFUSED_ERRORS = frozenset({1148, 3948, 4166, 1787, 1785})


class Abandoned(Exception):
    """The fast path gives the object up (rolled back to its savepoint): use the multi-row upsert."""


class LoadRefused(Abandoned):
    """The server will not run the fast path's statements; use the multi-row upsert."""


class StartOver(Abandoned):
    """The object let its parsed commands go (`Session.let_go`) and then met a path that needs
    them (a chunk found keys stored after all, or the server refused a chunk): the work since the
    savepoint is rolled back, and the object is read again from its start (`LineStream.again`)."""


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def load_file(cur: Any, statement: str, text: str) -> int:
    """LOAD DATA one chunk, sent from memory (`local_files.sending`: no file is written); returns
    the rows the server took."""
    name = f"sluice-chunk-{next(_names)}.tsv"  # only a name: the server asks for it back
    try:
        with local_files.sending(cur.connection, name, text.encode("utf-8")):
            return int(cur.execute(statement, (name,)))
    except Exception as exc:
        if error_code(exc) in REFUSED_ERRORS:
            raise LoadRefused(str(exc)) from exc
        raise


_names = itertools.count(1)


_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005


@contextmanager
def short_switch_interval(seconds: float = 0.0002) -> Iterator[None]:
    """Let the worker thread take the GIL back quickly after each packet it sends.

    With CPython's default 5 ms switch interval, a thread that comes back from the socket (a
    packet sent, a statement's reply read) while another thread parses waits up to 5 ms for the
    GIL each time, and the overlap is lost. Process-wide while any load runs; restored after the
    last one.
    """
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, seconds))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


class Worker:
    """Runs statements in order on one thread (or inline); the caller never touches the
    connection while a task is pending."""

    def __init__(self, threaded: bool) -> None:
        self.threaded = threaded
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sluice-load") if threaded else None
        self._pending: deque[tuple[Future[Any], Any]] = deque()

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is not None:
            self._pending.append((self._pool.submit(fn, *args), tag))
            return
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        self._pending.append((future, tag))

    def backlog(self) -> int:
        """Tasks submitted and not yet finished (the one running included)."""
        return sum(1 for future, _ in self._pending if not future.done())

    def finished(self) -> Iterator[tuple[Any, Any]]:
        """(tag, result) of tasks done so far, in order, without waiting; raises a task's error."""
        while self._pending and self._pending[0][0].done():
            future, tag = self._pending.popleft()
            yield tag, future.result()

    def drain(self) -> Iterator[tuple[Any, Any]]:
        """(tag, result) of every pending task, waiting; on an error, waits for the rest first."""
        while self._pending:
            future, tag = self._pending.popleft()
            try:
                result = future.result()
            except BaseException:
                self.settle()
                raise
            yield tag, result

    def finish_all(self) -> None:
        """Wait for every pending task; then raise the first error other than a refusal (which
        leaves the transaction as it was): a failed statement, a deadlock say, may have ended the
        transaction, and the savepoint with it."""
        error: BaseException | None = None
        while self._pending:
            future, _ = self._pending.popleft()
            try:
                future.result()
            except Abandoned:
                pass
            except BaseException as exc:  # noqa: BLE001 - raised below, once every task is done
                error = error or exc
        if error is not None:
            raise error

    def settle(self) -> None:
        """Wait for every pending task, ignoring results (before the caller uses the connection)."""
        while self._pending:
            future, _ = self._pending.popleft()
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the first error was already raised
                pass

    def close(self) -> None:
        self.settle()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
