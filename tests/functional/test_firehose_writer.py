"""FirehoseWriter: one write is one record (a batch's commands as lines), sent again whole when
refused, and the API's answers when Firehose cannot take a write. botocore's Stubber shows the
calls exactly; moto shows a write reaching a delivery stream, its S3 object, the loader and a read."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.stub import ANY, Stubber

from chalicelib import bootstrap
from chalicelib.aws import aws_client
from chalicelib.commands import WriteCommand, make_command
from chalicelib.errors import RecordTooLarge, TransportUnavailable
from chalicelib.writers.firehose import MAX_RECORD_BYTES, FirehoseWriter, record_of
from tests.conftest import ROOT, auth, body
from tests.functional.aws_fakes import (
    BUCKET,
    FAKE_AWS_ENV,
    STREAM,
    boto_client,
    build_services,
    fake_aws_env,
    make_bucket,
    make_stream,
    moto_aws,
    reset_aws_clients,
)

VERSION = 1_700_000_000_000_000


def commands(count: int, notes: str = "") -> list[WriteCommand]:
    return [
        make_command(
            "put",
            "todos",
            "alice",
            str(uuid.uuid4()),
            VERSION + n,
            str(uuid.uuid4()),
            {
                "title": f"todo {n}",
                "notes": notes,
                "state": "open",
                "tags": [],
                "due_at": None,
                "priority": 3,
                "list_id": None,
            },
        )
        for n in range(count)
    ]


def sized(size: int) -> WriteCommand:
    """A command whose line is exactly `size` bytes."""
    base = commands(1)[0]
    pad = size - len(base.to_line())
    assert pad >= 0
    data = {**(base.data or {}), "notes": "x" * pad}
    command = make_command("put", "todos", base.owner, base.id, base.version, base.op_id, data)
    assert len(command.to_line()) == size
    return command


def ok() -> dict[str, Any]:
    return {"FailedPutCount": 0, "Encrypted": False, "RequestResponses": [{"RecordId": "r0"}]}


def refused() -> dict[str, Any]:
    """A 200 answer in which the one record was not taken."""
    return {
        "FailedPutCount": 1,
        "Encrypted": False,
        "RequestResponses": [{"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}],
    }


def expect(cmds: list[WriteCommand]) -> dict[str, Any]:
    """The one call a write makes: one record holding every command's line, in order."""
    return {"DeliveryStreamName": STREAM, "Records": [{"Data": b"".join(c.to_line() for c in cmds)}]}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    fake_aws_env(monkeypatch, tmp_path)
    reset_aws_clients()
    yield
    reset_aws_clients()


@pytest.fixture
def stubbed(aws: None) -> Iterator[tuple[Any, Stubber]]:
    client = boto_client("firehose")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def writer(client: Any, **kwargs: Any) -> tuple[FirehoseWriter, Sleeps]:
    sleeps = Sleeps()
    options: dict[str, Any] = {"sleep": sleeps, "base_delay": 0.1, "max_delay": 1.0}
    options.update(kwargs)
    return FirehoseWriter(client, STREAM, **options), sleeps


# -- one write, one record -----------------------------------------------------------------------
def test_a_write_of_many_commands_is_one_record_of_their_lines(stubbed):
    client, stub = stubbed
    cmds = commands(3)
    # THEN one call carries one record: the three lines, in order, each ending in a newline
    stub.add_response("put_record_batch", ok(), expect(cmds))
    fh, sleeps = writer(client)
    fh.write(cmds)
    assert sleeps == []
    record = expect(cmds)["Records"][0]["Data"]
    assert [json.loads(line)["id"] for line in record.splitlines()] == [c.id for c in cmds]
    assert record.endswith(b"\n") and record.count(b"\n") == 3


def test_a_refused_record_is_sent_again_whole(stubbed):
    client, stub = stubbed
    cmds = commands(3)
    # GIVEN a call that succeeds as a whole (HTTP 200) while its record was not taken
    stub.add_response("put_record_batch", refused(), expect(cmds))
    # THEN the next call carries the same record, every command of it
    stub.add_response("put_record_batch", ok(), expect(cmds))
    fh, sleeps = writer(client)
    fh.write(cmds)
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.1


def test_a_record_still_refused_raises_transport_unavailable(stubbed):
    client, stub = stubbed
    cmds = commands(4)
    for _ in range(3):
        stub.add_response("put_record_batch", refused(), expect(cmds))
    fh, sleeps = writer(client, max_attempts=3)
    with pytest.raises(TransportUnavailable, match="4 command"):
        fh.write(cmds)
    assert len(sleeps) == 2


def test_an_answer_with_the_wrong_number_of_entries_counts_as_not_accepted(stubbed):
    client, stub = stubbed
    cmds = commands(2)
    two = {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "r0"}, {"RecordId": "r1"}]}
    stub.add_response("put_record_batch", two, expect(cmds))
    stub.add_response("put_record_batch", ok(), expect(cmds))
    fh, sleeps = writer(client)
    fh.write(cmds)
    assert len(sleeps) == 1


def test_nothing_to_write_makes_no_call(stubbed):
    client, _ = stubbed
    writer(client)[0].write([])  # no response queued: a call would fail


# -- the record limit -------------------------------------------------------------------------------
def test_a_record_of_exactly_1000_kib_is_sent(stubbed):
    client, stub = stubbed
    cmds = [sized(MAX_RECORD_BYTES)]
    stub.add_response("put_record_batch", ok(), expect(cmds))
    writer(client)[0].write(cmds)


def test_commands_over_1000_kib_together_are_refused_before_anything_is_sent(stubbed):
    client, _ = stubbed
    # GIVEN lines that fit one by one but not together
    cmds = [sized(MAX_RECORD_BYTES // 2), sized(MAX_RECORD_BYTES // 2 + 1)]
    # No response is queued: a call would fail inside botocore and surface as TransportUnavailable.
    with pytest.raises(RecordTooLarge, match="2 command\\(s\\) make a record of 1024001 bytes"):
        writer(client)[0].write(cmds)


# -- whole-call errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "status"),
    [("ThrottlingException", 400), ("ServiceUnavailableException", 503), ("InternalFailure", 500)],
)
def test_throttled_or_unavailable_call_is_retried(stubbed, code, status):
    client, stub = stubbed
    cmds = commands(2)
    stub.add_client_error(
        "put_record_batch", service_error_code=code, http_status_code=status, expected_params=expect(cmds)
    )
    stub.add_response("put_record_batch", ok(), expect(cmds))
    fh, sleeps = writer(client)
    fh.write(cmds)
    assert len(sleeps) == 1


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "InvalidArgumentException", "AccessDeniedException"])
def test_other_client_errors_fail_at_once(stubbed, code):
    client, stub = stubbed
    stub.add_client_error("put_record_batch", service_error_code=code, http_status_code=400)
    fh, sleeps = writer(client)
    with pytest.raises(TransportUnavailable) as caught:
        fh.write(commands(2))
    assert sleeps == []
    assert code in str(caught.value.__cause__)


def test_botocore_errors_fail_without_retrying():
    class Unreachable:
        calls = 0

        def put_record_batch(self, **kwargs: Any) -> dict[str, Any]:
            self.calls += 1
            raise EndpointConnectionError(endpoint_url="https://firehose.us-east-1.amazonaws.com")

    client = Unreachable()
    fh, sleeps = writer(client)
    with pytest.raises(TransportUnavailable) as caught:
        fh.write(commands(1))
    assert client.calls == 1 and sleeps == []
    assert isinstance(caught.value.__cause__, EndpointConnectionError)


# -- backoff -----------------------------------------------------------------------------------
def test_backoff_doubles_up_to_its_cap(stubbed):
    client, stub = stubbed
    cmds = commands(1)
    for _ in range(5):
        stub.add_response("put_record_batch", refused(), expect(cmds))
    fh, sleeps = writer(client, max_attempts=5, base_delay=0.1, max_delay=0.3, jitter=lambda cap: cap)
    with pytest.raises(TransportUnavailable):
        fh.write(cmds)
    assert sleeps == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_full_jitter_draws_below_the_cap(stubbed):
    client, stub = stubbed
    cmds = commands(1)
    drawn: list[float] = []

    def jitter(cap: float) -> float:
        drawn.append(cap)
        return cap / 4

    stub.add_response("put_record_batch", refused(), expect(cmds))
    stub.add_response("put_record_batch", ok(), expect(cmds))
    fh, sleeps = writer(client, jitter=jitter)
    fh.write(cmds)
    assert drawn == [0.1] and sleeps == [0.025]


def test_no_new_attempt_starts_past_the_time_budget(stubbed):
    client, stub = stubbed
    cmds = commands(1)
    stub.add_response("put_record_batch", refused(), expect(cmds))
    times = iter([100.0, 109.95])  # the write starts, then the first call took 9.95 s
    fh, sleeps = writer(client, budget_seconds=10.0, clock=lambda: next(times), jitter=lambda cap: cap)
    with pytest.raises(TransportUnavailable):
        fh.write(cmds)
    assert sleeps == []  # 9.95 s + 0.1 s of backoff would pass the 10 s budget


# -- the process's client -----------------------------------------------------------------------
def test_from_settings_makes_one_client_on_first_use_with_explicit_timeouts_and_retries(aws):
    from chalicelib.config import Settings

    settings_ = Settings.from_env({"WRITE_TRANSPORT": "firehose", "FIREHOSE_STREAM": STREAM})
    first, second = bootstrap._writer(settings_, None), bootstrap._writer(settings_, None)  # type: ignore[arg-type]
    assert isinstance(first, FirehoseWriter) and isinstance(second, FirehoseWriter)
    assert first.stream == STREAM
    assert first.client is second.client is aws_client("firehose")
    config = first.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1, 3)
    # botocore reads the legacy "max_attempts": 2 as two retries, three tries in all
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}


def test_reads_never_import_boto3(tmp_path):
    """Cold start: a process on the Firehose transport that serves only GETs never loads boto3."""
    script = f"""
import sys
from chalice.test import Client
import app
from tests.conftest import auth
with Client(app.app) as client:
    assert client.http.get("/health").status_code == 200
    assert client.http.get("/todos", headers=auth()).status_code == 200
    assert client.http.get("/todos/{uuid.uuid4()}", headers=auth()).status_code == 404
loaded = sorted(m for m in sys.modules if m == "boto3" or m.startswith("boto3."))
print("boto3 modules:", loaded)
sys.exit(1 if loaded else 0)
"""
    env = {
        **os.environ,
        **FAKE_AWS_ENV,
        "WRITE_TRANSPORT": "firehose",
        "FIREHOSE_STREAM": STREAM,
        "LOCAL_DATA_DIR": str(tmp_path),
        "SLUICE_LOG": "0",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REPLICA_URLS", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- through the app ----------------------------------------------------------------------------
TODO = {"title": "buy milk", "tags": ["home"]}


@pytest.fixture
def app_client() -> Iterator[Any]:
    from chalice.test import Client

    import app as app_module
    from chalicelib import bootstrap

    try:
        with Client(app_module.app) as test_client:
            yield test_client
    finally:
        bootstrap.reset()


def test_post_reaches_the_delivery_stream_and_the_loaded_object_reads_back(
    monkeypatch, tmp_path, local_dir, app_client
):
    with moto_aws(monkeypatch, tmp_path):
        make_bucket(boto_client("s3"))
        make_stream(boto_client("firehose"))
        env = {
            "LOCAL_DATA_DIR": str(local_dir),
            "WRITE_TRANSPORT": "firehose",
            "FIREHOSE_STREAM": STREAM,
            "WRITES_BUCKET": BUCKET,
        }
        build_services(env)  # the real FirehoseWriter.from_settings

        # WHEN a todo is posted
        response = app_client.http.post("/todos", headers=auth(), body=body(TODO))
        assert response.status_code == 202, response.body
        answer = response.json_body

        # THEN Firehose delivered it into the bucket under writes/, in its layout, as our line
        s3 = boto_client("s3")
        listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
        assert len(listed) == 1
        key = listed[0]["Key"]
        assert re.fullmatch(rf"writes/\d{{4}}/\d{{2}}/\d{{2}}/\d{{2}}/{STREAM}-\d+-[\d-]+-[0-9a-f-]+", key), key
        data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        line = json.loads(data)
        assert (line["id"], line["version"], line["owner"]) == (answer["id"], answer["version"], "alice")
        assert line["data"]["title"] == "buy milk"

        # AND nothing is readable before the object is loaded (writes never touch the database)
        assert app_client.http.get(f"/todos/{answer['id']}", headers=auth()).status_code == 404

        # WHEN the S3 event for that object reaches the loader
        event = app_client.events.generate_s3_event(bucket=BUCKET, key=key)
        loaded = app_client.lambda_.invoke("load_writes", event).payload
        assert loaded["applied"] == 1 and loaded["rejected"] == 0

        # THEN the todo reads back as written
        got = app_client.http.get(f"/todos/{answer['id']}", headers=auth())
        assert got.status_code == 200
        assert got.json_body["title"] == "buy milk" and got.json_body["tags"] == ["home"]
        assert got.headers["ETag"] == f'"{answer["version"]}"'


@pytest.fixture
def stubbed_app(stubbed, local_dir, app_client) -> tuple[Any, Stubber, list[list[list[dict[str, Any]]]]]:
    """The app on SQLite with a FirehoseWriter over a stubbed client; every call's records kept,
    each as its list of lines."""
    client, stub = stubbed
    sent: list[list[list[dict[str, Any]]]] = []

    def keep(params: dict[str, Any], **kwargs: Any) -> None:
        sent.append([[json.loads(line) for line in r["Data"].splitlines()] for r in params["Records"]])

    client.meta.events.register("before-parameter-build.firehose.PutRecordBatch", keep)
    fh = FirehoseWriter(client, STREAM, sleep=lambda seconds: None)
    build_services({"LOCAL_DATA_DIR": str(local_dir), "MAX_BODY_BYTES": "4000000"}, writer=fh)
    return app_client, stub, sent


def batch(n: int, notes: str = "") -> str:
    return body({"todos": [{"title": f"todo {i}", "notes": notes} for i in range(n)]})


ANY_CALL = {"DeliveryStreamName": STREAM, "Records": ANY}


def test_batch_travels_as_one_record_and_a_refused_one_is_503_without_a_list(stubbed_app):
    app_client, stub, sent = stubbed_app
    headers = {**auth(), "Idempotency-Key": "batch-1"}
    # GIVEN Firehose refuses the batch's record on every attempt
    for _ in range(3):
        stub.add_response("put_record_batch", refused(), ANY_CALL)

    # WHEN a batch of three is posted
    answer = app_client.http.post("/todos/batch", headers=headers, body=batch(3))

    # THEN every call carried ONE record holding the three todos, sent again whole
    assert [[len(record) for record in call] for call in sent] == [[3], [3], [3]]
    first_ids = [line["id"] for line in sent[0][0]]
    assert all([line["id"] for line in call[0]] == first_ids for call in sent)
    # AND the answer is 503 with Retry-After and the error shape only: no list of accepted todos
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert set(answer.json_body) == {"error", "message"} and answer.json_body["error"] == "unavailable"
    assert "Idempotency-Key" in answer.json_body["message"]

    # WHEN the batch is retried with the same key and Firehose takes it
    stub.add_response("put_record_batch", ok(), ANY_CALL)
    again = app_client.http.post("/todos/batch", headers=headers, body=batch(3))

    # THEN the same ids, newer versions, in one record again
    assert again.status_code == 202, again.body
    assert [a["id"] for a in again.json_body["accepted"]] == first_ids
    assert [line["id"] for line in sent[3][0]] == first_ids and len(sent[3]) == 1
    assert again.json_body["accepted"][0]["version"] > sent[0][0][0]["version"]


def test_batch_refused_by_an_error_no_retry_mends_is_503_without_a_list(stubbed_app):
    app_client, stub, sent = stubbed_app
    stub.add_client_error("put_record_batch", service_error_code="ResourceNotFoundException", http_status_code=400)
    answer = app_client.http.post("/todos/batch", headers=auth(), body=batch(2))
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert set(answer.json_body) == {"error", "message"} and answer.json_body["error"] == "unavailable"
    assert [[len(record) for record in call] for call in sent] == [[2]]


def test_single_post_refused_is_503_with_retry_after(stubbed_app):
    app_client, stub, sent = stubbed_app
    for _ in range(3):
        stub.add_response("put_record_batch", refused(), ANY_CALL)
    answer = app_client.http.post("/todos", headers=auth(), body=body(TODO))
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert set(answer.json_body) == {"error", "message"} and answer.json_body["error"] == "unavailable"
    assert len(sent) == 3  # the default three attempts
    # AND nothing reached the database
    assert app_client.http.get(f"/todos/{sent[0][0][0]['id']}", headers=auth()).status_code == 404


def test_a_batch_too_large_for_one_record_is_413_and_nothing_is_sent(stubbed_app):
    app_client, _, sent = stubbed_app
    # GIVEN MAX_BODY_BYTES raised far above its default (4,000,000 here), and 100 todos of 10,000
    # three-byte characters each: about 3 MB, over Firehose's 1,000 KiB per record
    answer = app_client.http.post("/todos/batch", headers=auth(), body=batch(100, "\u20ac" * 10000))
    assert answer.status_code == 413, answer.body
    assert answer.json_body["error"] == "payload_too_large"
    assert sent == []  # refused before any call: no response was queued


class TakesThenTimesOut:
    """A Firehose client whose call reaches the service (the record is taken) but whose answer is
    lost: the read times out, as it can in production."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        self.inner.put_record_batch(**kwargs)
        raise ReadTimeoutError(endpoint_url="https://firehose.us-east-1.amazonaws.com")


def _delivered(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def _load_all(app_client: Any, keys: list[str]) -> list[dict[str, Any]]:
    return [
        app_client.lambda_.invoke("load_writes", app_client.events.generate_s3_event(bucket=BUCKET, key=k)).payload
        for k in keys
    ]


def test_a_batch_lands_whole_in_one_object_and_one_load(monkeypatch, tmp_path, local_dir, app_client):
    with moto_aws(monkeypatch, tmp_path):
        s3 = boto_client("s3")
        make_bucket(s3)
        make_stream(boto_client("firehose"))
        env = {"LOCAL_DATA_DIR": str(local_dir), "WRITE_TRANSPORT": "firehose", "FIREHOSE_STREAM": STREAM}
        services = build_services(env)  # the real FirehoseWriter.from_settings

        # WHEN a batch of five is accepted
        answer = app_client.http.post("/todos/batch", headers=auth(), body=batch(5))
        assert answer.status_code == 202, answer.body
        ids = [a["id"] for a in answer.json_body["accepted"]]

        # THEN one object holds the five lines, and one load (one transaction) applies them
        keys = _delivered(s3)
        assert len(keys) == 1
        data = s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()
        assert [json.loads(line)["id"] for line in data.splitlines()] == ids
        assert [r["applied"] for r in _load_all(app_client, keys)] == [5]
        assert services.master.query("SELECT COUNT(*) FROM ingest_batches") == [(1,)]
        assert all(app_client.http.get(f"/todos/{i}", headers=auth()).status_code == 200 for i in ids)


def test_a_503_batch_whose_record_was_taken_lands_whole(monkeypatch, tmp_path, local_dir, app_client):
    with moto_aws(monkeypatch, tmp_path):
        s3 = boto_client("s3")
        make_bucket(s3)
        make_stream(boto_client("firehose"))
        client = TakesThenTimesOut(boto_client("firehose"))
        fh = FirehoseWriter(client, STREAM, sleep=lambda seconds: None)
        build_services({"LOCAL_DATA_DIR": str(local_dir)}, writer=fh)

        # WHEN Firehose takes a batch of four but its answer is lost
        answer = app_client.http.post("/todos/batch", headers=auth(), body=batch(4))

        # THEN the client hears 503, with nothing that claims any todo was or was not accepted
        assert answer.status_code == 503 and set(answer.json_body) == {"error", "message"}
        assert client.calls == 1
        # AND the batch lands whole: all four todos, from one object, in one load
        keys = _delivered(s3)
        assert len(keys) == 1
        assert [r["applied"] for r in _load_all(app_client, keys)] == [4]
        listed = app_client.http.get("/todos", headers=auth()).json_body["todos"]
        assert sorted(t["title"] for t in listed) == [f"todo {i}" for i in range(4)]


def test_the_largest_batch_the_default_body_limit_admits_is_far_under_one_record():
    from chalicelib.config import DEFAULT_MAX_BODY_BYTES
    from chalicelib.models import validate_batch

    # GIVEN 100 todos with every default to fill in and a due_at to normalise, the rest of the
    # 64 KiB body spent on notes, and the longest owner (128 four-byte characters)
    owner = "\U0001d518" * 128
    todos = [{"title": "t", "due_at": "2030-01-01T00:00:00.1+01:00", "notes": ""} for _ in range(100)]
    for todo in todos:
        spare = DEFAULT_MAX_BODY_BYTES - len(json.dumps({"todos": todos}, ensure_ascii=False).encode())
        todo["notes"] = "n" * min(10000, spare)
    raw = json.dumps({"todos": todos}, ensure_ascii=False).encode()
    assert DEFAULT_MAX_BODY_BYTES - 50 < len(raw) <= DEFAULT_MAX_BODY_BYTES
    items = validate_batch(json.loads(raw))
    cmds = [
        make_command("put", "todos", owner, str(uuid.uuid4()), VERSION + n, str(uuid.uuid4()), data)
        for n, data in enumerate(items)
    ]
    # THEN its one record takes about 1 KB per todo beyond the body, far under 1,000 KiB
    size = len(record_of(cmds))
    assert size - len(raw) < 100 * 1024
    assert size < MAX_RECORD_BYTES // 5
