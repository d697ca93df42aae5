"""The embedded transport: Firehose-layout objects on disk, loaded at once by the real loader.

Each accepted request becomes one object `writes/YYYY/MM/DD/HH/NAME` under LOCAL_DATA_DIR,
written to a temporary name, flushed, fsynced and renamed (so a reader never sees half an
object), then handed to the loader. The 202 rests on the object being on disk: if the load
fails (database down), the object waits for `replay --local`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chalicelib.errors import DatabaseUnavailable, TransportUnavailable
from chalicelib.writers import CommandWriter

if TYPE_CHECKING:  # commands are made by the write routes, which import them themselves
    from chalicelib.commands import WriteCommand

log = logging.getLogger(__name__)

LOCAL_BUCKET = "local"
STREAM_NAME = "sluice-local"


def object_key(now: datetime | None = None) -> str:
    """A key in the layout Firehose uses under the prefix writes/."""
    now = now or datetime.now(UTC)
    name = f"{STREAM_NAME}-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
    return f"writes/{now:%Y/%m/%d/%H}/{name}"


def write_object(root: str, key: str, body: bytes) -> str:
    """Write `body` at root/key durably (temp file, fsync, rename, fsync the folder)."""
    path = os.path.join(root, *key.split("/"))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(body)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


class LocalWriter(CommandWriter):
    """Writes each request's commands as one object, then loads it with `load(key, body)`."""

    def __init__(self, root: str, load: Callable[[str, bytes], object] | None = None) -> None:
        self.root = root
        self._load = load

    def write(self, commands: Sequence[WriteCommand]) -> None:
        body = b"".join(c.to_line() for c in commands)
        key = object_key()
        try:
            write_object(self.root, key, body)
        except OSError as exc:
            raise TransportUnavailable(f"local transport could not write: {exc.strerror}") from exc
        if self._load is None:
            return
        started = time.monotonic()
        try:
            self._load(key, body)
        except DatabaseUnavailable as exc:
            # Accepted all the same: the object is on disk for `replay --local`.
            log.warning("local load of %s deferred: %s", key, exc)
        except Exception:
            log.exception("local load of %s failed; run replay --local after fixing the cause", key)
        else:
            log.debug("loaded %s in %.1f ms", key, (time.monotonic() - started) * 1000)
