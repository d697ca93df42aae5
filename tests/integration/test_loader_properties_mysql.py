"""The loader's order-independence property (tests/loader_properties.py) on MariaDB: the same
property as tests/functional/test_loader_properties.py, through PyMySQL and the MySQL dialect of
the guarded upsert. One fresh database per test (the `mysql_url` fixture), tables emptied
between examples."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.db.database import Database, open_database
from tests.loader_properties import Delivery, assert_split_invariance, deliveries, histories, truncate

pytestmark = pytest.mark.mariadb


@pytest.fixture
def fresh_mysql(mysql_url: str) -> Iterator[Callable[[], Database]]:
    db = open_database(mysql_url)
    db.migrate()

    def fresh() -> Database:
        truncate(db)
        return db

    yield fresh
    db.discard()


@st.composite
def cases(draw: st.DrawFn) -> tuple[list, Delivery]:  # type: ignore[type-arg]
    history = draw(histories())
    return history, draw(deliveries(history))


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases())
def test_any_split_order_and_duplication_gives_the_rows_of_in_order_application(
    fresh_mysql: Callable[[], Database],
    case: tuple[list, Delivery],  # type: ignore[type-arg]
) -> None:
    history, delivery = case
    assert_split_invariance(fresh_mysql, history, delivery)
