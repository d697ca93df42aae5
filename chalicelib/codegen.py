"""Functions generated from the declarations, once per process, as `dataclasses` makes `__init__`
(CPython's `dataclasses._create_fn`, attrs' `_make_method`): source text written from a
declaration, compiled once and cached by the caller, so that a hot path runs straight-line code
with its limits as constants instead of walking the declaration on every request or line.

The source is kept in `linecache`, so a traceback through a generated function shows its lines,
and on the function itself (`__sluice_source__`) for tests and debugging.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable
from typing import Any

_made = 0


def make_function(name: str, lines: list[str], namespace: dict[str, Any]) -> Callable[..., Any]:
    """Compile `lines` (the source of one `def name(...)`, indented as written) with `namespace`
    as its globals, and return the function."""
    global _made
    _made += 1
    source = "\n".join(lines) + "\n"
    filename = f"<sluice-generated {name} #{_made}>"
    code = compile(source, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope = dict(namespace)
    exec(code, scope)
    function: Callable[..., Any] = scope[name]
    function.__sluice_source__ = source  # type: ignore[attr-defined]
    return function


def ident(name: str) -> str:
    """A declared field's name as a local variable of generated code (never a keyword)."""
    if not name.isidentifier():
        raise ValueError(f"a declared name must be a Python identifier: {name!r}")
    return f"f_{name}"
