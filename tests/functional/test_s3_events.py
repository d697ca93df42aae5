"""The S3 event handler (`load_writes`): objects under writes/ in a moto bucket, loaded through
chalice's test client, with every record of an event, URL-encoded keys, GZIP by content, repeated
events, bad lines, and the failures that must (or must not) make Lambda retry."""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from chalicelib.errors import ObjectUnavailable
from chalicelib.loader import batch_id
from chalicelib.loader.events import RetryLater, handle_s3_event, records
from chalicelib.loader.sources import S3ObjectStore
from tests.functional.aws_fakes import (
    BUCKET,
    boto_client,
    build_services,
    command_line,
    ledger_keys,
    put_object,
    stored_todo,
)

HOUR = "writes/2024/05/01/10/"


@pytest.fixture
def lambda_client(bucket_services: Any) -> Iterator[Any]:
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app) as test_client:
        yield test_client


def s3_event(*objects: tuple[str, str | None], bucket: str = BUCKET, encode: bool = True) -> dict[str, Any]:
    """An S3 notification with one record per (key, eTag), keys encoded as S3 encodes them."""
    out = []
    for key, etag in objects:
        obj: dict[str, Any] = {"key": quote_plus(key, safe="/") if encode else key, "size": 1}
        if etag is not None:
            obj["eTag"] = etag
        out.append(
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-05-01T10:00:05.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
            }
        )
    return {"Records": out}


def invoke(lambda_client: Any, event: dict[str, Any]) -> dict[str, int]:
    payload: dict[str, int] = lambda_client.lambda_.invoke("load_writes", event).payload
    return payload


# -- what gets loaded ---------------------------------------------------------------------------
def test_an_event_with_two_records_loads_both_objects(s3, bucket_services, lambda_client):
    first_id, first = command_line("first")
    second_id, second = command_line("second")
    put_object(s3, HOUR + "one", first)
    put_object(s3, HOUR + "two", second)

    result = invoke(lambda_client, s3_event((HOUR + "one", None), (HOUR + "two", None)))

    assert (result["applied"], result["objects"], result["skipped"]) == (2, 2, 0)
    assert stored_todo(bucket_services, "alice", first_id)["title"] == "first"
    assert stored_todo(bucket_services, "alice", second_id)["title"] == "second"


def test_chalice_generated_event_is_loaded(s3, bucket_services, lambda_client):
    todo_id, line = command_line("from chalice's event")
    put_object(s3, HOUR + "generated", line)
    event = lambda_client.events.generate_s3_event(bucket=BUCKET, key=HOUR + "generated")
    assert invoke(lambda_client, event)["applied"] == 1
    assert stored_todo(bucket_services, "alice", todo_id)["title"] == "from chalice's event"


@pytest.mark.parametrize(
    "name",
    ["with space", "with+plus", "caf\u00e9 \u00fcber+\u6771\u4eac", "100%25 sure & more=1"],
)
def test_url_encoded_keys_are_decoded(s3, bucket_services, lambda_client, name):
    key = HOUR + name
    todo_id, line = command_line(name)
    etag = put_object(s3, key, line)

    event = s3_event((key, etag))
    assert event["Records"][0]["s3"]["object"]["key"] != key  # S3 sends it encoded

    assert invoke(lambda_client, event)["applied"] == 1
    assert stored_todo(bucket_services, "alice", todo_id)["title"] == name
    assert ledger_keys(bucket_services) == [key]


def test_gzip_objects_are_recognised_by_content(s3, bucket_services, lambda_client):
    ids_lines = [command_line(f"zipped {n}") for n in range(3)]
    body = gzip.compress(b"".join(line for _, line in ids_lines))
    put_object(s3, HOUR + "no-gz-suffix", body)

    assert invoke(lambda_client, s3_event((HOUR + "no-gz-suffix", None)))["applied"] == 3
    assert [stored_todo(bucket_services, "alice", i)["title"] for i, _ in ids_lines] == [
        "zipped 0",
        "zipped 1",
        "zipped 2",
    ]


def test_the_ledger_holds_the_objects_etag(s3, bucket_services, lambda_client):
    _, line = command_line()
    etag = put_object(s3, HOUR + "etagged", line)
    invoke(lambda_client, s3_event((HOUR + "etagged", None)))
    rows = bucket_services.master.query("SELECT batch_id, bucket, object_key, etag FROM ingest_batches")
    assert rows == [(batch_id(HOUR + "etagged", etag), BUCKET, HOUR + "etagged", etag)]


# -- repeated events ------------------------------------------------------------------------------
def test_a_repeated_event_is_skipped_by_the_ledger(s3, bucket_services, lambda_client):
    todo_id, line = command_line("once")
    put_object(s3, HOUR + "twice", line)
    # chalice's generated events carry a made-up eTag: the object is read, the ledger says no
    event = lambda_client.events.generate_s3_event(bucket=BUCKET, key=HOUR + "twice")
    assert invoke(lambda_client, event)["applied"] == 1
    again = invoke(lambda_client, event)
    assert (again["applied"], again["skipped"]) == (0, 1)
    assert len(ledger_keys(bucket_services)) == 1


def test_a_repeated_event_with_the_real_etag_is_skipped_without_reading_s3(s3, bucket_services, lambda_client):
    _, line = command_line()
    etag = put_object(s3, HOUR + "read-once", line)
    event = s3_event((HOUR + "read-once", etag))
    assert invoke(lambda_client, event)["applied"] == 1
    s3.delete_object(Bucket=BUCKET, Key=HOUR + "read-once")  # a GetObject would now find nothing

    again = invoke(lambda_client, event)

    assert (again["skipped"], again["objects"]) == (1, 1)


def test_a_changed_object_under_the_same_key_is_loaded_again(s3, bucket_services, lambda_client):
    todo_id, first = command_line("v1", version=10)
    put_object(s3, HOUR + "rewritten", first)
    invoke(lambda_client, s3_event((HOUR + "rewritten", None)))
    _, second = command_line("v2", todo_id=todo_id, version=20)
    put_object(s3, HOUR + "rewritten", second)

    assert invoke(lambda_client, s3_event((HOUR + "rewritten", None)))["applied"] == 1
    assert stored_todo(bucket_services, "alice", todo_id)["title"] == "v2"


# -- failures that must not be retried -----------------------------------------------------------
def test_bad_lines_are_quarantined_and_the_rest_loads(s3, bucket_services, lambda_client):
    good_id, good = command_line("good")
    body = b"not json at all\n" + good + b'{"v": 1, "op": "explode"}\n'
    put_object(s3, HOUR + "mixed", body)

    result = invoke(lambda_client, s3_event((HOUR + "mixed", None)))

    assert (result["applied"], result["rejected"]) == (1, 2)
    assert stored_todo(bucket_services, "alice", good_id)["title"] == "good"
    rejects = bucket_services.master.query(
        "SELECT object_key, line_no, reason FROM ingest_rejects ORDER BY line_no", ()
    )
    assert [(r[0], r[1]) for r in rejects] == [(HOUR + "mixed", 1), (HOUR + "mixed", 3)]
    assert all(r[2] for r in rejects)


def test_a_missing_object_is_logged_not_raised(s3, bucket_services, lambda_client, caplog):
    todo_id, line = command_line("present")
    put_object(s3, HOUR + "present", line)
    caplog.set_level(logging.ERROR, logger="chalicelib.loader.events")

    result = invoke(lambda_client, s3_event((HOUR + "gone", None), (HOUR + "present", None)))

    assert (result["applied"], result["objects"]) == (1, 1)
    assert stored_todo(bucket_services, "alice", todo_id) is not None
    assert any(HOUR + "gone" in r.getMessage() and "does not exist" in r.getMessage() for r in caplog.records)


def test_records_other_than_object_created_are_ignored():
    event = s3_event(("writes/2024/05/01/10/a+b", None), ("writes/2024/05/01/10/c", None), encode=False)
    event["Records"][1]["eventName"] = "ObjectRemoved:Delete"
    assert [(r.bucket, r.key) for r in records(event)] == [(BUCKET, "writes/2024/05/01/10/a b")]
    assert records({"Service": "Amazon S3", "Event": "s3:TestEvent"}) == []


# -- failures that must make Lambda retry ------------------------------------------------------------
def test_database_unavailable_raises_so_lambda_retries_and_the_retry_loads(s3, local_dir, tmp_path):
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap

    todo_id, line = command_line("waits for the database")
    put_object(s3, HOUR + "waiting", line)
    event = s3_event((HOUR + "waiting", None))
    # a database path that is a folder: SQLite cannot open it (a real driver error, translated)
    down = tmp_path / "down.sqlite3"
    down.mkdir()
    build_services({"LOCAL_DATA_DIR": str(local_dir), "DATABASE_URL": f"sqlite:///{down}"})
    try:
        with Client(app_module.app) as lambda_client:
            with pytest.raises(RetryLater, match="1 object"):
                lambda_client.lambda_.invoke("load_writes", event)

            # WHEN Lambda retries the event once the database is back
            services = build_services({"LOCAL_DATA_DIR": str(local_dir)})
            assert lambda_client.lambda_.invoke("load_writes", event).payload["applied"] == 1
        assert stored_todo(services, "alice", todo_id)["title"] == "waits for the database"
    finally:
        bootstrap.reset()


def get_object_response(data: bytes, etag: str) -> dict[str, Any]:
    return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ETag": f'"{etag}"', "ContentLength": len(data)}


@pytest.mark.parametrize(("code", "status"), [("InternalError", 500), ("AccessDenied", 403), ("SlowDown", 503)])
def test_s3_get_failure_raises_after_the_other_records_load(s3, bucket_services, code, status):
    from chalicelib.loader import local_etag

    first_id, first = command_line("first")
    second_id, second = command_line("second")
    etags = [local_etag(first), local_etag(second)]
    event = s3_event((HOUR + "ok", etags[0]), (HOUR + "fails", etags[1]))
    client = boto_client("s3")
    with Stubber(client) as stub:
        stub.add_response("get_object", get_object_response(first, etags[0]), {"Bucket": BUCKET, "Key": HOUR + "ok"})
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)

        def store_for(bucket: str) -> S3ObjectStore:
            return S3ObjectStore(client, bucket)

        with pytest.raises(RetryLater):
            handle_s3_event(event, bucket_services, store_for)
        assert stored_todo(bucket_services, "alice", first_id) is not None
        assert stored_todo(bucket_services, "alice", second_id) is None

        # WHEN the event is retried and S3 answers: the loaded record is skipped unread
        stub.add_response(
            "get_object", get_object_response(second, etags[1]), {"Bucket": BUCKET, "Key": HOUR + "fails"}
        )
        result = handle_s3_event(event, bucket_services, store_for)
        stub.assert_no_pending_responses()
    assert (result["applied"], result["skipped"]) == (1, 1)
    assert stored_todo(bucket_services, "alice", second_id)["title"] == "second"


def test_an_s3_timeout_is_unavailable_and_raises(bucket_services):
    class TimesOut:
        def get_object(self, **kwargs: Any) -> dict[str, Any]:
            raise ReadTimeoutError(endpoint_url="https://s3.amazonaws.com")

    with pytest.raises(ObjectUnavailable):
        S3ObjectStore(TimesOut(), BUCKET).get(HOUR + "x")
    with pytest.raises(RetryLater):
        handle_s3_event(s3_event((HOUR + "x", None)), bucket_services, lambda b: S3ObjectStore(TimesOut(), b))


def test_an_unforeseen_error_still_loads_the_other_records_then_raises(s3, bucket_services, lambda_client):
    todo_id, line = command_line("survivor")
    put_object(s3, HOUR + "survivor", line)
    put_object(s3, HOUR + "poison", b"")
    real_load = bucket_services.loader.load

    def load(bucket: str, key: str, etag: str, body: bytes, force: bool = False) -> Any:
        if key.endswith("poison"):
            raise RuntimeError("a bug")
        return real_load(bucket, key, etag, body, force)

    bucket_services.loader.load = load
    with pytest.raises(RetryLater):
        invoke(lambda_client, s3_event((HOUR + "poison", None), (HOUR + "survivor", None)))
    assert stored_todo(bucket_services, "alice", todo_id)["title"] == "survivor"
