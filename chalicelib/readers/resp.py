"""A small Redis client (RESP2 over one TCP or TLS socket), just what the read cache needs.

Why not redis-py: the API Lambda imports this module whenever `CACHE_URL` is set, and the cache
and the pending writes send only a few commands (GET, HGETALL, EVALSHA, and EVAL when the server
lacks a script), all through `execute_command`. This module (with `readers/resp_wire.py`: the
commands' encoding, `RespError` and `RespConnectionError`) costs about a millisecond to import
and keeps the deployment package free of another dependency.

- One socket per process, opened lazily on the first command, reopened after any failure and
  after a fork. Commands from several threads are serialised by a lock.
- Short timeouts: `connect_timeout` for the TCP (and TLS) handshake, `timeout` for each reply.
- Failures raise `RespConnectionError` (an `OSError`): the connection is dropped and the next
  command reconnects. A command sent on a connection that had been idle and turns out closed by
  the server is retried once on a fresh connection (every command the cache sends is idempotent).
- Error replies (`-ERR ...`) raise `RespError` and leave the connection usable.
- `send` writes a command and returns a `Deferred` whose `result()` reads its reply later, so a
  caller can do other work (a SQL query) while Redis answers. The client's lock is held from
  `send` until `result()` (or `abandon()`): the same thread must not use the client in between.

URL: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?timeout=S&connect_timeout=S]`, or `rediss://`
for TLS (ElastiCache in-transit encryption), verified against the system's CA store.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from chalicelib.readers.breaker import DEFAULT_COOLDOWN_SECONDS
from chalicelib.readers.resp_reply import Deferred, connection_error
from chalicelib.readers.resp_wire import CRLF, RespConnectionError, RespError, encode_command

DEFAULT_PORT = 6379
DEFAULT_CONNECT_TIMEOUT = 0.2
DEFAULT_TIMEOUT = 0.1
RECV_BYTES = 65536
MAX_LINE_BYTES = 64 * 1024
_TWO: tuple[tuple[Any, ...], ...] = ((), ())  # what `pair` counts its replies by


@dataclass(frozen=True)
class CacheUrl:
    """CACHE_URL, parsed once: `redis[s]://[user:password@]host[:port][/db][?options]`, options
    `connect_timeout`, `timeout` (seconds, the client's) and `cooldown` (seconds, the breaker's)."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    connect_timeout: float
    timeout: float
    cooldown: float

    @classmethod
    def parse(cls, url: str) -> CacheUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"a cache URL starts with redis:// or rediss://, got {parts.scheme or url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path.strip("/")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or DEFAULT_PORT,
            db=int(path) if path else int(query.get("db", 0)),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
            connect_timeout=float(query.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
            timeout=float(query.get("timeout", DEFAULT_TIMEOUT)),
            cooldown=float(query.get("cooldown", DEFAULT_COOLDOWN_SECONDS)),
        )

    def client(self, **overrides: Any) -> RespClient:
        options: dict[str, Any] = {
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "tls": self.tls,
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
            **overrides,
        }
        return RespClient(self.host, self.port, **options)


class RespClient:
    """A Redis connection for one process. See the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.connects = 0  # how many connections were opened (tests and metrics read it)
        self._sock: socket.socket | None = None
        self._pid = 0
        self._buf = bytearray()
        self._pos = 0
        self._fills = 0  # socket reads so far (`Deferred.wire`: a reply read in one piece)
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RespClient:
        return CacheUrl.parse(url).client(**overrides)

    # -- connection --------------------------------------------------------------------------
    def _open(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                import ssl  # only for rediss://

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        self._sock, self._pid = sock, os.getpid()
        self._buf, self._pos = bytearray(), 0
        self.connects += 1
        if self.password is not None:
            self._handshake(["AUTH", self.username, self.password] if self.username else ["AUTH", self.password])
        if self.db:
            self._handshake(["SELECT", self.db])
        return sock

    def _handshake(self, args: list[Any]) -> None:
        reply = self._roundtrip([args])[0]
        if isinstance(reply, RespError):
            raise RespConnectionError(f"redis refused {args[0]}: {reply.kind}")

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        self._buf, self._pos = bytearray(), 0
        if sock is not None and self._pid == os.getpid():
            try:
                sock.close()
            except OSError:
                pass

    # -- commands ----------------------------------------------------------------------------
    def execute_command(self, *args: Any) -> Any:
        """Send one command and return its reply (bytes, int, list, None). Raises RespError for an
        error reply and RespConnectionError when the server cannot be used."""
        reply = self._run([args], encode_command(args))[0]
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send several commands in one write and read every reply; error replies come back as
        RespError values in their place, so one bad command does not hide the others' replies."""
        if not commands:
            return []
        return self._run(commands, b"".join([encode_command(c) for c in commands]))

    def pair(self, payload: bytes) -> list[Any]:
        """`pipeline` of two commands already encoded in `payload` (a read by key's HGET and GET,
        encoded once per key: `scripts.pair_payload`)."""
        return self._run(_TWO, payload)

    def _run(self, commands: Sequence[Sequence[Any]], payload: bytes) -> list[Any]:
        """`pipeline` with the commands already encoded in `payload`."""
        with self._lock:
            for attempt in (1, 2):
                reused = self._sock is not None and self._pid == os.getpid()
                try:
                    if not reused:
                        self._drop()
                        self._open()
                    return self._roundtrip(commands, payload)
                except (OSError, RespConnectionError) as exc:
                    self._drop()
                    # Retry once only when an idle connection turned out closed; never after a
                    # timeout (the server is slow, and waiting twice would double the stall).
                    if attempt == 2 or not reused or isinstance(exc, TimeoutError):
                        if isinstance(exc, RespConnectionError):
                            raise
                        raise RespConnectionError(f"redis {self.host}:{self.port}: {exc}") from exc
        raise AssertionError("unreachable")

    def send(self, *args: Any) -> Deferred:
        """Write one command now and read its reply with `Deferred.result()` (module docstring).
        Raises RespConnectionError when the command cannot be written."""
        payload = encode_command(args)
        self._lock.acquire()
        try:
            reused = self._sock is not None and self._pid == os.getpid()
            try:
                if not reused:
                    self._drop()
                    self._open()
                sock = self._sock
                assert sock is not None
                sock.sendall(payload)
            except (OSError, RespConnectionError) as exc:
                self._drop()
                if not reused or isinstance(exc, TimeoutError):
                    raise connection_error(self, exc) from exc
                reused = False  # an idle connection the server closed: once more on a fresh one
                self._open()
                sock = self._sock
                assert sock is not None
                sock.sendall(payload)
        except BaseException as exc:
            self._drop()
            self._lock.release()
            if isinstance(exc, OSError) and not isinstance(exc, RespConnectionError):
                raise connection_error(self, exc) from exc
            raise
        return Deferred(self, args, reused)

    def _roundtrip(self, commands: Sequence[Sequence[Any]], payload: bytes | None = None) -> list[Any]:
        sock = self._sock
        assert sock is not None
        sock.sendall(payload if payload is not None else b"".join(encode_command(c) for c in commands))
        return self._array(len(commands))  # each reply in turn; bulk strings already received sliced out

    # -- reading replies ---------------------------------------------------------------------
    def _fill(self) -> None:
        sock = self._sock
        assert sock is not None
        chunk = sock.recv(RECV_BYTES)
        if not chunk:
            raise RespConnectionError("redis closed the connection")
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += chunk
        self._fills += 1

    def _same(self, wire: bytes) -> bool:
        """Whether the next reply is `wire`, a whole reply, byte for byte (then it is read past):
        a reply ends where its own bytes say, so one that starts with a whole reply is that one."""
        size = len(wire)
        while True:
            have = len(self._buf) - self._pos
            if have >= size or not wire.startswith(self._buf[self._pos :]):
                if have >= size and self._buf.startswith(wire, self._pos):
                    self._pos += size
                    return True
                return False
            self._fill()  # what has come so far is the start of `wire`

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(CRLF, self._pos)
            if end >= 0:
                line = bytes(self._buf[self._pos : end])
                self._pos = end + 2
                return line
            if len(self._buf) - self._pos > MAX_LINE_BYTES:
                raise RespConnectionError("redis sent an overlong line")
            self._fill()

    def _exact(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size + 2:
            self._fill()
        data = bytes(self._buf[self._pos : self._pos + size])
        if self._buf[self._pos + size : self._pos + size + 2] != CRLF:
            raise RespConnectionError("redis sent a bulk string without its CRLF")
        self._pos += size + 2
        return data

    def _array(self, count: int) -> list[Any]:
        """An array's items: bulk strings (and nil ones) are sliced out of the buffer in one loop,
        which reads the socket itself when a reply has not arrived yet (an HGETALL of pending
        writes is twenty of them, a read by key two); anything else goes through _reply."""
        out: list[Any] = []
        buf = self._buf
        while len(out) < count:
            pos = self._pos
            end = buf.find(CRLF, pos)
            if end < 0:
                if len(buf) - pos > MAX_LINE_BYTES:
                    raise RespConnectionError("redis sent an overlong line")
                self._fill()
                buf = self._buf
                continue
            if end > pos and buf[pos] == 36:  # b"$"
                try:
                    size = int(buf[pos + 1 : end])
                except ValueError as exc:
                    raise RespConnectionError(f"redis sent a bad length: {bytes(buf[pos:end])[:40]!r}") from exc
                start = end + 2
                if size < 0:
                    out.append(None)
                    self._pos = start
                    continue
                if start + size + 2 <= len(buf):
                    if buf[start + size : start + size + 2] != CRLF:
                        raise RespConnectionError("redis sent a bulk string without its CRLF")
                    out.append(bytes(buf[start : start + size]))
                    self._pos = start + size + 2
                    continue
            out.append(self._reply())
            buf = self._buf  # _fill may have replaced it
        return out

    def _reply(self) -> Any:
        line = self._line()
        if not line:
            raise RespConnectionError("redis sent an empty line")
        kind, rest = line[:1], line[1:]
        try:
            if kind == b"+":
                return rest
            if kind == b"-":
                return RespError(rest.decode("utf-8", "replace"))
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                return None if size < 0 else self._exact(size)
            if kind == b"*":
                count = int(rest)
                return None if count < 0 else self._array(count)
        except ValueError as exc:
            raise RespConnectionError(f"redis sent a bad length: {line[:40]!r}") from exc
        raise RespConnectionError(f"redis sent an unknown reply type: {line[:40]!r}")
