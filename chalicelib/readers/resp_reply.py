"""The reply of a command `RespClient.send` wrote, read later (`Deferred`), and how a failed
read is reported (`connection_error`). `Deferred.result` can also tell, without parsing it,
that a reply is byte for byte one read before (`SAME`, `Deferred.wire`): a page read of pending
writes gets the same HGETALL reply until the owner writes again (`readers/pending_reply.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chalicelib.readers.resp_wire import RespConnectionError, RespError

if TYPE_CHECKING:
    from chalicelib.readers.resp import RespClient

SAME = object()  # Deferred.result: the reply is the one given, byte for byte


def connection_error(client: RespClient, exc: BaseException) -> RespConnectionError:
    if isinstance(exc, RespConnectionError):
        return exc
    return RespConnectionError(f"redis {client.host}:{client.port}: {exc}")


class Deferred:
    """The reply of a command `RespClient.send` wrote; holds the client's lock until read."""

    def __init__(self, client: RespClient, args: Sequence[Any], reused: bool) -> None:
        self._client = client
        self._args = args
        self._reused = reused
        self._open = True
        self.wire: bytes | None = None  # the reply's bytes, when `result` read it in one piece

    def result(self, same_as: bytes | None = None) -> Any:
        """The reply (bytes, int, list, None), or SAME when it is `same_as` (the bytes of an
        earlier reply, `wire`) byte for byte; RespError for an error reply, RespConnectionError
        when the server cannot be used. A connection found closed after idling is retried once."""
        if not self._open:
            raise RuntimeError("this reply was already read or abandoned")
        client = self._client
        self._open = False
        try:
            try:
                if same_as is not None and client._same(same_as):
                    return SAME
                if client._pos == len(client._buf):
                    client._fill()
                start, fills = client._pos, client._fills
                reply = client._reply()
                if client._fills == fills:
                    self.wire = bytes(client._buf[start : client._pos])
            except (OSError, RespConnectionError) as exc:
                client._drop()
                if not self._reused or isinstance(exc, TimeoutError):
                    raise connection_error(client, exc) from exc
                try:
                    client._open()
                    reply = client._roundtrip([self._args])[0]
                except (OSError, RespConnectionError) as again:
                    client._drop()
                    raise connection_error(client, again) from again
            except BaseException:
                client._drop()
                raise
        finally:
            client._lock.release()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def abandon(self) -> None:
        """Give up on the reply (the caller failed meanwhile): the connection is dropped."""
        if self._open:
            self._open = False
            try:
                self._client._drop()
            finally:
                self._client._lock.release()
