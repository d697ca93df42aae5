"""The loader's order-independence property on the embedded SQLite (see tests/loader_properties.py);
tests/integration/test_loader_properties_mysql.py runs the same property on MariaDB."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.db.database import Database, open_database
from tests.loader_properties import Delivery, assert_split_invariance, deliveries, histories

_files = itertools.count()


def sqlite_factory(folder: Path) -> Callable[[], Database]:
    """A fresh SQLite file database on every call (so every example starts empty)."""
    opened: list[Database] = []

    def fresh() -> Database:
        for db in opened:
            db.discard()
        db = open_database(f"sqlite:///{folder / f'loader-{next(_files)}.sqlite3'}")
        opened.append(db)
        return db

    return fresh


@st.composite
def cases(draw: st.DrawFn) -> tuple[list, Delivery]:  # type: ignore[type-arg]
    history = draw(histories())
    return history, draw(deliveries(history))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases())
def test_any_split_order_and_duplication_gives_the_rows_of_in_order_application(
    tmp_path: Path,
    case: tuple[list, Delivery],  # type: ignore[type-arg]
) -> None:
    history, delivery = case
    assert_split_invariance(sqlite_factory(tmp_path), history, delivery)
