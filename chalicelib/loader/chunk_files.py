"""Where the MySQL fast path writes its chunk files (`sluice-load-*.tsv`, rows of user data on
their way to LOAD DATA LOCAL): a private folder per process, which nothing else reads.

Each file is deleted once sent. A process killed meanwhile (SIGKILL, out of memory, a Lambda
timeout) cannot delete it, so every process folder holds a lock (`flock`) for the process's
life, which the kernel releases however the process ends, and the first loader of the next
process removes every folder whose lock it can take: the folders of processes that are gone.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import threading

log = logging.getLogger(__name__)

BASE_NAME = "sluice-load"
LOCK_NAME = ".lock"

_lock = threading.Lock()
_folder: str | None = None
_lock_fd: int | None = None


def base() -> str:
    """The folder that holds every process folder: private to this user (0700)."""
    return os.path.join(tempfile.gettempdir(), f"{BASE_NAME}-{os.getuid()}")


def folder() -> str:
    """This process's chunk folder, made (and the folders of dead processes cleared) on first use."""
    global _folder
    if _folder is not None and _folder_pid == os.getpid():
        return _folder
    with _lock:
        if _folder is None or _folder_pid != os.getpid():
            _folder = _make()
        return _folder


_folder_pid = -1


def _make() -> str:
    global _lock_fd, _folder_pid
    root = base()
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        # Not ours, or open to others: use a fresh private folder (nothing to clear there).
        log.warning("%s is not a private folder of this user; chunk files go to a new one", root)
        root = tempfile.mkdtemp(prefix=f"{BASE_NAME}-")
    clear_dead(root)
    # The lock is taken before the folder shows it, so no other process can find it free.
    fd, lock_path = tempfile.mkstemp(prefix=".lock-", dir=root)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    mine = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
    os.rename(lock_path, os.path.join(mine, LOCK_NAME))
    _lock_fd, _folder_pid = fd, os.getpid()
    atexit.register(_remove, mine, fd)
    return mine


def clear_dead(root: str) -> list[str]:
    """Remove the folders under `root` whose process is gone (their lock is free); which."""
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        try:
            fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR)
        except OSError:
            continue  # not a process folder, or one being made right now (its lock not there yet)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: a live process's folder
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    if removed:
        log.info("removed chunk files left by %d loader process(es) that ended without cleaning up", len(removed))
    return removed


def _remove(path: str, fd: int) -> None:
    shutil.rmtree(path, ignore_errors=True)
    try:
        os.close(fd)
    except OSError:
        pass
