"""The app's bytecode, compiled before `chalice deploy` packages chalicelib/.

Lambda's /var/task is read-only: Python cannot write `__pycache__` there, so a package without
bytecode compiles every chalicelib module from source on every cold start (about 35 ms of the
bench's cold start, row 4). Chalice's packager copies every file under chalicelib/, its
`__pycache__` folders included, so compiling first is enough.

The caches are written in checked-hash mode (PEP 552): Python checks each against a hash of its
source, not against file times (a zip keeps times to 2 s, so time-based caches could be dropped
on Lambda), and a stale cache is never run: a source edited after compiling is compiled again,
as without caches. The caches are used only when Lambda's Python is the version that compiled
them (the `cpython-3XY` tag in their names): deploy with the runtime's version, as chalice's
own runtime choice (the local Python's) assumes.
"""

from __future__ import annotations

import compileall
import py_compile
from pathlib import Path

MODE = py_compile.PycInvalidationMode.CHECKED_HASH


def compile_package(project_dir: Path) -> bool:
    """Compile chalicelib/ in checked-hash mode (app.py is packaged without its cache, so it is
    left alone); True when every module compiled."""
    return bool(compileall.compile_dir(str(project_dir / "chalicelib"), quiet=1, invalidation_mode=MODE))
