"""Ids, versions and timestamps (CONTRACT sections 3 and 4)."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_VERSION = 2**53 - 1
MIN_VERSION_LEAD_US = 5_000_000  # how far ahead of the service's clock a min_version may be
# Namespace for ids derived from (owner, Idempotency-Key[, position]).
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d3c9e-52a4-4d1b-9d55-7b0e3c2a9f10")


def is_canonical_uuid(value: object) -> bool:
    return isinstance(value, str) and len(value) == 36 and CANONICAL_UUID.fullmatch(value) is not None


def uuid7(now_ms: int | None = None) -> str:
    """A version 7 UUID (RFC 9562): 48-bit Unix milliseconds, the version nibble 7, 12 random bits,
    the variant bits 10 and 62 random bits; written from the random bytes' hex, no integer built."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    t = "%012x" % (ms & 0xFFFFFFFFFFFF)
    r = os.urandom(10).hex()
    return f"{t[:8]}-{t[8:]}-7{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:19]}"


# A random hex digit's low two bits under the variant bits 10: 8, 9, a or b.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def hyphenated(value: int) -> str:
    """str(uuid.UUID(int=value)), without building the UUID object (a write makes two ids)."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derived_id(owner: str, key: str, position: int | None = None, scope: str = "") -> str:
    """The id named by (caller, Idempotency-Key[, batch position]): the same on every retry.
    `scope` sets resources apart (a key gives different ids on POST /todos and POST /lists); the
    todos' ids have none, as before lists existed, so a retry across an upgrade names the same todo."""
    name = f"{len(owner)}:{owner}\n{key}" if position is None else f"{len(owner)}:{owner}\n{key}\n{position}"
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{scope}\n{name}" if scope else name))


def new_op_id() -> str:
    """A version 4 UUID, as str(uuid.uuid4()) gives it: 122 random bits, written from the random
    bytes' hex."""
    r = os.urandom(16).hex()
    return f"{r[:8]}-{r[8:12]}-4{r[13:16]}-{_VARIANT[r[16]]}{r[17:20]}-{r[20:]}"


class VersionClock:
    """Microseconds since the epoch, strictly increasing within the process."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or time.time_ns
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> int:
        """The clock's reading in microseconds (what `min_version` is checked against)."""
        return self._clock() // 1000

    def next(self, after: int | None = None) -> int:
        """The next version; with `after` (a client's min_version) greater than it too.

        A version raised above `after` is not remembered: the clock other callers' writes use does
        not move, so no client can push everyone's versions into the future (CONTRACT section 3).
        """
        now = self._clock() // 1000
        with self._lock:
            value = now if now > self._last else self._last + 1
            self._last = value
        if after is not None and value <= after:
            value = after + 1
        if value > MAX_VERSION:
            raise OverflowError("version clock beyond 2**53")
        return value


def format_ts(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z: 2026-01-02T03:04:05Z, or with .ffffff when not whole seconds."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    text = moment.isoformat()
    return text + "Z"


def version_to_ts(version: int) -> str:
    """The acceptance time a version stands for, as RFC 3339 UTC with microseconds."""
    global _last_second
    second, micro = divmod(version, 1_000_000)
    seen, text = _last_second  # one tuple: read and replaced whole, safe across threads
    if seen != second:
        text = f"{_EPOCH + timedelta(seconds=second):%Y-%m-%dT%H:%M:%S}"
        _last_second = (second, text)
    return f"{text}.{micro:06d}Z"


_EPOCH = datetime(1970, 1, 1)
_last_second: tuple[int, str] = (-1, "")  # the date and time of the last second formatted


# ASCII digits only ([0-9], never \d: that also matches Arabic-Indic, fullwidth and other digits).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 date-time with an offset; returns a naive UTC datetime. ValueError if not."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("must be an RFC 3339 date-time with an offset, such as 2026-01-31T09:00:00Z")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7)
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    try:
        moment = datetime(year, month, day, hour, minute, second, micros)
    except ValueError as exc:
        raise ValueError("is not a valid date-time") from exc
    if match.group(8) is None:
        sign = 1 if match.group(9) == "+" else -1
        off_h, off_m = int(match.group(10)), int(match.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError("has an invalid offset")
        try:
            moment = moment - sign * timedelta(hours=off_h, minutes=off_m)
        except OverflowError as exc:
            raise ValueError("is out of range") from exc
    return moment
