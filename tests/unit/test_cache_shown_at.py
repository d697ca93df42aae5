"""`cache.shown_at`, the loader's hand-made path from a stored timestamp to the text reads show (the
floor it hands the read cache per key), held to the readers' reference, `readers.sql.ts_out`."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.readers.cache import shown_at
from chalicelib.readers.sql import ts_out

moments = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31))


@given(moment=moments, whole=st.booleans())
def test_shown_at_agrees_with_ts_out(moment: datetime, whole: bool) -> None:
    if whole:  # a whole second: no fraction shown
        moment = moment.replace(microsecond=0)
    stored = moment.strftime("%Y-%m-%d %H:%M:%S.%f")  # the loader's fixed-width text
    assert shown_at(stored) == ts_out(stored) == ts_out(moment) == shown_at(moment)
