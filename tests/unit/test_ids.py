from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.ids import (
    MAX_VERSION,
    VersionClock,
    derived_id,
    format_ts,
    hyphenated,
    is_canonical_uuid,
    new_op_id,
    parse_rfc3339,
    uuid7,
    version_to_ts,
)


def test_uuid7_is_canonical_version_7_and_time_ordered():
    first = uuid7(now_ms=1_700_000_000_000)
    later = uuid7(now_ms=1_700_000_000_001)
    assert is_canonical_uuid(first)
    assert uuid.UUID(first).version == 7
    assert uuid.UUID(first).variant == uuid.RFC_4122
    assert first < later
    assert len({uuid7() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "value",
    [
        "0190B2A0-0000-7000-8000-000000000000",
        "0190b2a000007000800000000000000",
        "0190b2a0000070008000000000000000",
        "{0190b2a0-0000-7000-8000-000000000000}",
        "0190b2a0-0000-7000-8000-00000000000g",
        " 0190b2a0-0000-7000-8000-000000000000",
        "0190b2a0-0000-7000-8000-000000000000\n",
        None,
        42,
    ],
)
def test_non_canonical_ids(value):
    assert not is_canonical_uuid(value)


def test_derived_ids_depend_on_owner_key_and_position():
    a = derived_id("alice", "k1")
    assert a == derived_id("alice", "k1")
    assert is_canonical_uuid(a)
    assert a != derived_id("bob", "k1")
    assert a != derived_id("alice", "k2")
    assert derived_id("alice", "k1", 0) != derived_id("alice", "k1", 1)
    assert derived_id("alice", "k1", 0) != a
    # no ambiguity from concatenation
    assert derived_id("a\nb", "c") != derived_id("a", "b\nc")


def test_clock_is_strictly_increasing_even_if_time_stands_still_or_goes_back():
    ticks = iter([5_000_000, 5_000_000, 4_000_000, 9_000_000])
    clock = VersionClock(lambda: next(ticks))
    assert [clock.next() for _ in range(4)] == [5000, 5001, 5002, 9000]


def test_clock_versions_are_javascript_safe():
    assert 0 < VersionClock().next() < MAX_VERSION


def test_version_to_ts():
    assert version_to_ts(1_700_000_000_123_456) == "2023-11-14T22:13:20.123456Z"


@given(st.lists(st.integers(1, MAX_VERSION), min_size=1, max_size=6), st.integers(0, 3))
def test_version_to_ts_is_the_datetime_formula_whatever_came_before(versions, repeat):
    """The last second's text is remembered: neighbours, repeats and jumps all stay exact."""
    for version in versions + [versions[-1] + 1] * repeat + [versions[0] - 1 if versions[0] > 1 else 1]:
        moment = datetime(1970, 1, 1) + timedelta(microseconds=version)
        assert version_to_ts(version) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.integers(0, 2**128 - 1))
def test_ids_are_written_as_uuid_writes_them(value):
    assert hyphenated(value) == str(uuid.UUID(int=value))


def test_op_ids_are_random_version_4_uuids():
    ids = [new_op_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for op_id in ids[:200]:
        parsed = uuid.UUID(op_id)
        assert str(parsed) == op_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # every bit that is not version or variant varies
    fixed = ~((0xF000 << 64) | (0xC000 << 48)) & (2**128 - 1)
    ors, ands = 0, 2**128 - 1
    for op_id in ids:
        ors |= uuid.UUID(op_id).int
        ands &= uuid.UUID(op_id).int
    assert (ors & fixed, ands & fixed) == (fixed, 0)


def test_parse_and_format():
    assert format_ts(parse_rfc3339("2026-01-01T00:00:00+00:30")) == "2025-12-31T23:30:00Z"
    with pytest.raises(ValueError):
        parse_rfc3339("2026-01-01 00:00:00")
