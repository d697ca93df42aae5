"""Objects refused for their size, and poisoned objects (CONTRACT section 5), on the embedded
SQLite; tests/integration/test_loader_limits_mysql.py runs the same on MariaDB."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.db.database import open_database
from chalicelib.loader import BatchLoader
from tests import loader_limits


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = open_database(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    database.migrate()
    yield database
    database.discard()


@pytest.mark.parametrize("gzipped", [False, True])
def test_an_object_over_the_limit_is_refused_whole(db, gzipped: bool) -> None:  # type: ignore[no-untyped-def]
    loader_limits.assert_an_object_over_the_limit_is_refused_whole(db, None, gzipped)


def test_many_rejects_then_the_limit(db) -> None:  # type: ignore[no-untyped-def]
    loader_limits.assert_many_rejects_and_a_limit_in_the_middle(db, None)


def test_a_failing_object_is_poisoned_after_three_attempts(db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loader_limits.assert_a_failing_object_is_poisoned_after_three_attempts(db, tmp_path)


def test_a_database_outage_does_not_poison(db) -> None:  # type: ignore[no-untyped-def]
    loader_limits.assert_a_database_outage_does_not_poison(db)


def test_the_runbook_query_lists_poisoned_objects(db) -> None:  # type: ignore[no-untyped-def]
    loader_limits.assert_the_runbook_query_lists_poisoned_objects(db)


def test_killed_loads_count_and_the_cli_reports_poisoned_objects(tmp_path: Path) -> None:
    loader_limits.assert_killed_loads_count_and_the_cli_reports_poisoned_objects(
        f"sqlite:///{tmp_path / 'cli.sqlite3'}", tmp_path
    )


def test_loader_max_object_bytes_is_read_once_from_the_environment_and_reaches_the_loader(tmp_path: Path) -> None:
    from chalicelib import bootstrap
    from chalicelib.config import ConfigError, Settings

    env = {"LOCAL_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(env).loader_max_object_bytes == 268435456
    settings = Settings.from_env({**env, "LOADER_MAX_OBJECT_BYTES": "1048576"})
    assert bootstrap.build(settings).loader.max_object_bytes == 1048576
    for bad in ("lots", "0", "-1"):
        with pytest.raises(ConfigError, match="LOADER_MAX_OBJECT_BYTES"):
            Settings.from_env({**env, "LOADER_MAX_OBJECT_BYTES": bad})


def test_a_poisoned_object_does_not_fail_its_s3_event(db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from chalicelib.loader.events import handle_s3_event
    from chalicelib.loader.sources import LocalObjectStore
    from tests.loader_limits import KEY, Failing, commands_body

    (tmp_path / "store" / KEY).parent.mkdir(parents=True)
    (tmp_path / "store" / KEY).write_bytes(commands_body(1))
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": KEY}}}]}
    services = SimpleNamespace(loader=BatchLoader(db, Failing()))
    store = LocalObjectStore(str(tmp_path / "store"), bucket="b")
    for _ in range(3):  # the event and Lambda's two retries: each fails, so Lambda retries
        with pytest.raises(Exception, match="not loaded"):
            handle_s3_event(event, services, lambda bucket: store)
    # now poisoned: the event succeeds (retrying cannot help), the object is left for the operator
    assert handle_s3_event(event, services, lambda bucket: store)["objects"] == 1
    assert db.query("SELECT COUNT(*) FROM ingest_attempts WHERE poisoned_at IS NOT NULL") == [(1,)]


def test_an_inflate_problem_is_one_reject_after_the_last_line(db) -> None:  # type: ignore[no-untyped-def]
    loader_limits.assert_an_inflate_problem_is_one_reject_after_the_last_line(db, None, 5)


def test_deliveries_in_flight_are_not_unfinished_attempts(db) -> None:  # type: ignore[no-untyped-def]
    loader_limits.assert_deliveries_in_flight_are_not_unfinished_attempts(db)


def test_migration_4_runs_again_cleanly_and_a_loader_before_it_counts_failures(db) -> None:  # type: ignore[no-untyped-def]
    loader_limits.assert_migration_4_runs_again_cleanly_and_a_loader_before_it_counts_failures(db)


# -- a database that cannot be reached: `load` gives up within 60 s ------------------------------------
@pytest.fixture
def silent_server() -> Iterator[str]:
    """A MySQL URL whose server takes connections (the kernel completes them) and never answers:
    a server hung, stopped (SIGSTOP) or behind a network path that lost its way."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield f"mysql://root@127.0.0.1:{listener.getsockname()[1]}/sluice"


def test_load_gives_up_within_60_seconds_when_its_database_never_answers(silent_server: str, tmp_path: Path) -> None:
    # GIVEN an object and a database that takes connections and never answers
    path = tmp_path / "writes" / "2027" / "01" / "15" / "08" / "object"
    path.parent.mkdir(parents=True)
    path.write_bytes(loader_limits.commands_body(2))
    # WHEN it is loaded THEN `load` gives up within 60 s (before: PyMySQL waited 60 s for the
    # server's greeting alone), with one clear line
    done = loader_limits.cli(silent_server, tmp_path, "load", str(path), timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
    assert "127.0.0.1" in done.stderr and "Traceback" not in done.stderr


def test_an_s3_event_stops_at_the_first_object_whose_database_is_unreachable(tmp_path: Path) -> None:
    """Each record would wait for the database in turn: the event gives up at the first, so that it
    too gives up within 60 s, and Lambda retries it whole (the ledger skips what was loaded)."""
    from types import SimpleNamespace

    from chalicelib.db.database import open_master
    from chalicelib.loader.events import RetryLater, handle_s3_event
    from chalicelib.loader.sources import LocalObjectStore

    keys = [f"writes/2027/01/15/08/object-{n}" for n in range(4)]
    for key in keys:
        (tmp_path / "store" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "store" / key).write_bytes(loader_limits.commands_body(1))
    records = [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": k}}} for k in keys]
    store = LocalObjectStore(str(tmp_path / "store"), bucket="b")
    with socket.create_server(("127.0.0.1", 0)) as listener:  # a database that hangs up at once
        accepted: list[int] = []

        def hang_up() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                accepted.append(1)
                conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        db = open_master(f"mysql://root@127.0.0.1:{listener.getsockname()[1]}/sluice")
        services = SimpleNamespace(loader=BatchLoader(db))
        with pytest.raises(RetryLater, match="4 object"):
            handle_s3_event({"Records": records}, services, lambda bucket: store)
    assert len(accepted) == 1


def test_a_load_beyond_what_running_holds_goes_unrecorded_and_the_others_are_kept(db) -> None:  # type: ignore[no-untyped-def]
    """`running` holds about 40 loads of one object; one more is not recorded (it cannot count,
    whatever happens to it) and goes on; the loads recorded are kept as they are."""
    from chalicelib.db.schema import RUNNING_CHARS
    from chalicelib.loader.attempts import Attempts

    attempts = Attempts(db)
    state, first = attempts.begin("d" * 64, "bucket", "writes/k", "e", False)
    alive = [first.token]
    while len(" ".join([*alive, first.token])) <= RUNNING_CHARS:
        alive.append(attempts.liveness.take(None))  # loads of this process: alive
    db.query("UPDATE ingest_attempts SET running = %s", (" ".join(alive),))
    state, extra = attempts.begin("d" * 64, "bucket", "writes/k", "e", False)
    assert (state, extra.token) == ("go", "")
    assert db.query("SELECT attempts, running FROM ingest_attempts") == [(0, " ".join(alive))]
    attempts.failed(extra, "RuntimeError: x")  # a failure while the database answered still counts
    assert db.query("SELECT attempts, running FROM ingest_attempts") == [(1, " ".join(alive))]
