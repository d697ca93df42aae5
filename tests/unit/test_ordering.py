"""`newer`, the one ordering rule: (version, op_id), versions as integers, op_ids by character."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.ordering import newer

orders = st.tuples(st.integers(1, 2**53 - 1) | st.integers(1, 3), st.uuids().map(str) | st.sampled_from(["a", "b"]))


@given(orders, orders)
def test_newer_is_a_strict_total_order(a: tuple[int, str], b: tuple[int, str]) -> None:
    assert not (newer(a, b) and newer(b, a))
    assert newer(a, b) or newer(b, a) or a == b
    assert not newer(a, a)


def test_versions_compare_as_integers_and_op_ids_break_ties() -> None:
    assert newer((10, "a"), (9, "z"))  # 10 > 9 although "10" < "9" as text
    assert newer((5, "b"), (5, "a"))
    assert not newer((5, "a"), (5, "b"))
