"""RESP2, the Redis protocol, as the cache's client (`readers/resp.py`) writes it: a command as an
array of bulk strings (`encode_command`), and the two failures a command can end in, an error
reply (`RespError`) and a server that cannot be used (`RespConnectionError`). Replies are read
off the client's socket buffer by the client itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CRLF = b"\r\n"


class RespError(Exception):
    """An error reply from the server, such as `NOSCRIPT ...` or `WRONGTYPE ...`."""

    @property
    def kind(self) -> str:
        return str(self).split(" ", 1)[0]


class RespConnectionError(ConnectionError):
    """The server could not be reached, closed the connection, timed out or spoke nonsense."""


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8", "surrogatepass")
    if isinstance(arg, bool):
        raise TypeError("booleans are not Redis arguments")
    if isinstance(arg, (int, float)):
        return repr(arg).encode("ascii")
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    raise TypeError(f"cannot send {type(arg).__name__} to Redis")


def encode_command(args: Sequence[Any]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode("utf-8", "surrogatepass")
        elif kind is bytes:
            data = arg
        else:
            data = _encode(arg)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)
