"""A local transport that batches like Firehose: many requests' commands in one object.

`LocalWriter` makes one object per request and loads it at once, which is right for
`chalice local` but shows nothing of how Firehose behaves. `BatchingWriter` buffers instead:

- `write()` appends the commands' lines to a spool file under ROOT/spool and fsyncs it before it
  returns, so the 202 rests on disk as it rests on Firehose's durable buffer.
  One request's lines (a whole batch) go into one spool and so one object, or, when the write
  fails, the spool is cut back and none of them do (a batch lands whole or not at all).
- The spool is sealed into one object `writes/YYYY/MM/DD/HH/NAME` (renamed, folder fsynced) when
  it reaches `max_bytes` or when its oldest line has waited `max_interval` seconds, like
  Firehose's BufferingHints (SizeInMBs, IntervalInSeconds). With `max_interval=0` the spool is
  sealed as soon as the loading thread is free, so each object holds what arrived during the
  previous load (Firehose's zero buffering).
- A background thread hands each sealed object to `load(key, body)` (the real loader), outside
  the lock, so writers never wait for a load. A failed load leaves the object on disk for
  `replay --local` or the reconciler.
- A spool left by a crashed process is sealed and loaded when the next writer on ROOT starts.

It is meant for the benchmarks only (bench/freshness.py, bench/own_writes.py), so it lives here,
outside the Lambda package. In Lambda, background threads are frozen between invocations:
production uses Firehose itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from chalicelib.errors import TransportUnavailable
from chalicelib.writers import CommandWriter
from chalicelib.writers.local import object_key

if TYPE_CHECKING:  # commands are made by the write routes, which import them themselves
    from chalicelib.commands import WriteCommand

log = logging.getLogger(__name__)

FIREHOSE_DEFAULT_BYTES = 5 * 1024 * 1024
FIREHOSE_DEFAULT_INTERVAL = 60.0


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BatchingWriter(CommandWriter):
    def __init__(
        self,
        root: str,
        load: Callable[[str, bytes], object] | None = None,
        max_bytes: int = FIREHOSE_DEFAULT_BYTES,
        max_interval: float = FIREHOSE_DEFAULT_INTERVAL,
    ) -> None:
        if max_bytes < 1 or max_interval < 0:
            raise ValueError("max_bytes must be positive and max_interval not negative")
        self.root = root
        self.max_bytes = max_bytes
        self.max_interval = max_interval
        self._load = load
        self._spool_dir = os.path.join(root, "spool")
        os.makedirs(self._spool_dir, exist_ok=True)
        self._cond = threading.Condition()
        self._fd: int | None = None
        self._path = ""
        self._chunks: list[bytes] = []
        self._size = 0
        self._first_at = 0.0
        self._sealed: deque[tuple[str, bytes]] = deque()
        self._busy = 0  # sealed objects not yet loaded
        self._closing = False
        self.objects: list[str] = []  # keys of the objects made, oldest first
        self._recover()
        self._thread = threading.Thread(target=self._run, name="sluice-batching-writer", daemon=True)
        self._thread.start()

    # -- the request path ------------------------------------------------------------------------
    def write(self, commands: Sequence[WriteCommand]) -> None:
        data = b"".join(c.to_line() for c in commands)
        with self._cond:
            if self._closing:
                raise TransportUnavailable("the batching writer is closed")
            try:
                if self._fd is None:
                    self._open_spool()
                assert self._fd is not None
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except OSError as exc:
                self._undo_partial_write()
                raise TransportUnavailable(f"batching transport could not write: {exc.strerror}") from exc
            self._chunks.append(data)
            self._size += len(data)
            if self._size >= self.max_bytes:
                self._seal()
            self._cond.notify_all()

    def _undo_partial_write(self) -> None:
        """Cut the spool back to the writes already accepted (caller holds the lock): a request
        answered 503 must leave none of its lines to be sealed, not the first few."""
        if self._fd is None:
            return
        if not self._size:  # a spool opened for this write: nothing accepted to keep in it
            fd, self._fd = self._fd, None
            os.close(fd)
            with contextlib.suppress(OSError):  # left behind, it is empty: _recover drops it
                os.unlink(self._path)
            return
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError:
            # The disk refuses even that: leave this spool alone (the next writer on ROOT seals
            # and loads it, _recover) and start a new one. Only then can lines of the failed
            # write land; a cut line among them is quarantined by the loader.
            log.exception("could not cut spool %s back after a failed write", self._path)
            os.close(self._fd)
            self._fd = None
            self._chunks, self._size = [], 0

    # -- sealing and loading -----------------------------------------------------------------------
    def _open_spool(self) -> None:
        self._path = os.path.join(self._spool_dir, f"{uuid.uuid4()}.spool")
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        _fsync_dir(self._spool_dir)
        self._first_at = time.monotonic()

    def _seal(self) -> None:
        """Turn the spool into one Firehose-layout object (caller holds the lock)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        body = b"".join(self._chunks)
        self._chunks, self._size = [], 0
        try:
            key = self._place(self._path)
        except OSError:
            # The lines are durable in the spool; the next writer on ROOT seals it (_recover).
            log.exception("could not seal spool %s; it is kept for recovery", self._path)
            return
        self._sealed.append((key, body))
        self._busy += 1

    def _place(self, spool_path: str) -> str:
        key = object_key()
        target = os.path.join(self.root, *key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(spool_path, target)
        _fsync_dir(os.path.dirname(target))
        self.objects.append(key)
        return key

    def _recover(self) -> None:
        for name in sorted(os.listdir(self._spool_dir)):
            path = os.path.join(self._spool_dir, name)
            if not name.endswith(".spool") or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                body = handle.read()
            if not body:
                os.unlink(path)
                continue
            self._sealed.append((self._place(path), body))
            self._busy += 1

    def _next(self) -> tuple[str, bytes] | None:
        """Wait for a sealed object (sealing the spool when its time is up); None when closed."""
        with self._cond:
            while True:
                if self._sealed:
                    return self._sealed.popleft()
                if self._fd is not None:
                    wait = self._first_at + self.max_interval - time.monotonic()
                    if wait <= 0 or self._closing:
                        self._seal()
                        continue
                    self._cond.wait(wait)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            key, body = item
            try:
                if self._load is not None:
                    self._load(key, body)
            except Exception:
                log.exception("load of %s failed; it waits on disk for replay --local", key)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    # -- control -----------------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Seal what is buffered now and wait until every sealed object is loaded."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._seal()
            self._cond.notify_all()
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
