"""A TCP proxy in front of a database server whose network can be cut for a while: the server
stays up (no restart), but for `seconds` nothing reaches it through the proxy.

`cut(seconds)` closes every connection through the proxy at once (the client sees its connection
lost; the server sees its client gone) and, until the time is up, closes each new connection as
soon as it is accepted (the client cannot connect). Then connections go through again.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class OutageProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._down_until = 0.0
        self.cuts = 0
        self.refused = 0  # connections closed at once while cut
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def cut(self, seconds: float) -> None:
        with self._lock:
            self.cuts += 1
            self._down_until = time.monotonic() + seconds
            doomed, self._open = self._open, []
        for sock in doomed:
            _close(sock)

    def wait_until_up(self) -> None:
        """Until the cut is over (the next load, as an event's retry would, starts after it)."""
        time.sleep(max(0.0, self._down_until - time.monotonic()))

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut(0)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                self.refused += 1
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    _close(source)
    _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@contextmanager
def outage_proxy(host: str, port: int) -> Iterator[OutageProxy]:
    proxy = OutageProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()
