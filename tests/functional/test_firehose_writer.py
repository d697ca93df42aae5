"""FirehoseWriter: PutRecordBatch within its limits, retrying only what failed, and the API's
answers when Firehose cannot take a write. botocore's Stubber shows the calls exactly; moto
shows a write reaching a delivery stream, its S3 object, the loader and a read."""

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
from botocore.exceptions import EndpointConnectionError
from botocore.stub import ANY, Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.commands import WriteCommand, make_command
from chalicelib.errors import TransportUnavailable
from chalicelib.writers.firehose import (
    MAX_BYTES_PER_CALL,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_CALL,
    FirehoseWriter,
    RecordTooLarge,
    firehose_client,
    plan_calls,
)
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
            {"title": f"todo {n}", "notes": notes, "state": "open", "tags": [], "due_at": None},
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


def records(cmds: list[WriteCommand]) -> list[dict[str, bytes]]:
    return [{"Data": c.to_line()} for c in cmds]


def ok(count: int) -> dict[str, Any]:
    return {
        "FailedPutCount": 0,
        "Encrypted": False,
        "RequestResponses": [{"RecordId": f"r{n}"} for n in range(count)],
    }


def partial(count: int, failed: set[int]) -> dict[str, Any]:
    """A 200 answer in which the entries at `failed` (indexes within the call) were not taken."""
    entries: list[dict[str, str]] = []
    for n in range(count):
        if n in failed:
            entries.append({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."})
        else:
            entries.append({"RecordId": f"r{n}"})
    return {"FailedPutCount": len(failed), "Encrypted": False, "RequestResponses": entries}


def expect(cmds: list[WriteCommand]) -> dict[str, Any]:
    return {"DeliveryStreamName": STREAM, "Records": records(cmds)}


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


# -- retrying only what failed ------------------------------------------------------------------
def test_partial_failure_resends_exactly_the_failed_entries(stubbed):
    client, stub = stubbed
    cmds = commands(3)
    # GIVEN a call that succeeds as a whole (HTTP 200) while its second entry was not taken
    stub.add_response("put_record_batch", partial(3, {1}), expect(cmds))
    # THEN the second call carries that record alone
    stub.add_response("put_record_batch", ok(1), expect([cmds[1]]))
    fh, sleeps = writer(client)
    fh.write(cmds)
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.1


def test_records_still_failing_raise_transport_unavailable_naming_accepted_positions(stubbed):
    client, stub = stubbed
    cmds = commands(4)
    stub.add_response("put_record_batch", partial(4, {1, 3}), expect(cmds))
    stub.add_response("put_record_batch", partial(2, {1}), expect([cmds[1], cmds[3]]))  # 1 now taken
    stub.add_response("put_record_batch", partial(1, {0}), expect([cmds[3]]))
    fh, sleeps = writer(client, max_attempts=3)
    with pytest.raises(TransportUnavailable) as caught:
        fh.write(cmds)
    assert caught.value.accepted == [0, 1, 2]
    assert len(sleeps) == 2


def test_a_single_write_uses_the_same_path(stubbed):
    client, stub = stubbed
    cmds = commands(1)
    for _ in range(2):
        stub.add_response("put_record_batch", partial(1, {0}), expect(cmds))
    fh, _ = writer(client, max_attempts=2)
    with pytest.raises(TransportUnavailable) as caught:
        fh.write(cmds)
    assert caught.value.accepted == []


# -- call limits ----------------------------------------------------------------------------------
def test_calls_hold_at_most_500_records(stubbed):
    client, stub = stubbed
    cmds = commands(2 * MAX_RECORDS_PER_CALL + 1)
    stub.add_response("put_record_batch", ok(500), expect(cmds[:500]))
    stub.add_response("put_record_batch", ok(500), expect(cmds[500:1000]))
    stub.add_response("put_record_batch", ok(1), expect(cmds[1000:]))
    fh, sleeps = writer(client)
    fh.write(cmds)
    assert sleeps == []


def test_calls_hold_at_most_4_mib(stubbed):
    client, stub = stubbed
    # 900 KiB records: four make 3.5 MiB, a fifth would pass 4 MiB
    cmds = [sized(900 * 1024) for _ in range(10)]
    assert 4 * 900 * 1024 <= MAX_BYTES_PER_CALL < 5 * 900 * 1024
    stub.add_response("put_record_batch", ok(4), expect(cmds[0:4]))
    stub.add_response("put_record_batch", ok(4), expect(cmds[4:8]))
    stub.add_response("put_record_batch", ok(2), expect(cmds[8:10]))
    writer(client)[0].write(cmds)


def test_a_record_of_exactly_1000_kib_is_sent(stubbed):
    client, stub = stubbed
    cmds = [sized(MAX_RECORD_BYTES)]
    stub.add_response("put_record_batch", ok(1), expect(cmds))
    writer(client)[0].write(cmds)


def test_a_record_over_1000_kib_is_refused_before_anything_is_sent(stubbed):
    client, _ = stubbed
    cmds = commands(2) + [sized(MAX_RECORD_BYTES + 1)]
    # No response is queued: a call would fail inside botocore and surface as TransportUnavailable.
    with pytest.raises(RecordTooLarge, match="record 2 is 1024001 bytes"):
        writer(client)[0].write(cmds)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=MAX_RECORD_BYTES), max_size=1500))
def test_planned_calls_keep_every_record_once_in_order_within_limits(sizes):
    calls = plan_calls(sizes)
    assert [p for call in calls for p in call] == list(range(len(sizes)))
    for call in calls:
        assert 1 <= len(call) <= MAX_RECORDS_PER_CALL
        assert sum(sizes[p] for p in call) <= MAX_BYTES_PER_CALL
    for this, following in zip(calls, calls[1:], strict=False):
        # a call is closed only when the next record would not fit
        full = len(this) == MAX_RECORDS_PER_CALL
        assert full or sum(sizes[p] for p in this) + sizes[following[0]] > MAX_BYTES_PER_CALL


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
    stub.add_response("put_record_batch", ok(2), expect(cmds))
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
    assert caught.value.accepted == [] and sleeps == []
    assert code in str(caught.value.__cause__)


def test_a_failing_second_call_keeps_the_first_calls_positions(stubbed):
    client, stub = stubbed
    cmds = commands(600)
    stub.add_response("put_record_batch", ok(500), expect(cmds[:500]))
    stub.add_client_error("put_record_batch", service_error_code="ResourceNotFoundException", http_status_code=400)
    with pytest.raises(TransportUnavailable) as caught:
        writer(client)[0].write(cmds)
    assert caught.value.accepted == list(range(500))


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
        stub.add_response("put_record_batch", partial(1, {0}), expect(cmds))
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

    stub.add_response("put_record_batch", partial(1, {0}), expect(cmds))
    stub.add_response("put_record_batch", ok(1), expect(cmds))
    fh, sleeps = writer(client, jitter=jitter)
    fh.write(cmds)
    assert drawn == [0.1] and sleeps == [0.025]


def test_no_new_attempt_starts_past_the_time_budget(stubbed):
    client, stub = stubbed
    cmds = commands(1)
    stub.add_response("put_record_batch", partial(1, {0}), expect(cmds))
    times = iter([100.0, 109.95])  # the write starts, then the first call took 9.95 s
    fh, sleeps = writer(client, budget_seconds=10.0, clock=lambda: next(times), jitter=lambda cap: cap)
    with pytest.raises(TransportUnavailable):
        fh.write(cmds)
    assert sleeps == []  # 9.95 s + 0.1 s of backoff would pass the 10 s budget


# -- the process's client -----------------------------------------------------------------------
def test_from_settings_makes_one_client_on_first_use_with_explicit_timeouts_and_retries(aws):
    from chalicelib.config import Settings

    settings_ = Settings.from_env({"WRITE_TRANSPORT": "firehose", "FIREHOSE_STREAM": STREAM})
    first, second = FirehoseWriter.from_settings(settings_), FirehoseWriter.from_settings(settings_)
    assert first.stream == STREAM
    assert first.client is second.client is firehose_client()
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
def stubbed_app(stubbed, local_dir, app_client) -> tuple[Any, Stubber, list[list[dict[str, Any]]]]:
    """The app on SQLite with a FirehoseWriter over a stubbed client; every call's lines kept."""
    client, stub = stubbed
    sent: list[list[dict[str, Any]]] = []

    def keep(params: dict[str, Any], **kwargs: Any) -> None:
        sent.append([json.loads(r["Data"]) for r in params["Records"]])

    client.meta.events.register("before-parameter-build.firehose.PutRecordBatch", keep)
    fh = FirehoseWriter(client, STREAM, sleep=lambda seconds: None)
    build_services({"LOCAL_DATA_DIR": str(local_dir)}, writer=fh)
    return app_client, stub, sent


def batch(n: int) -> str:
    return body({"todos": [{"title": f"todo {i}"} for i in range(n)]})


def test_batch_partly_refused_is_503_with_accepted_ids_and_a_retry_names_the_same_ids(stubbed_app):
    app_client, stub, sent = stubbed_app
    headers = {**auth(), "Idempotency-Key": "batch-1"}
    # GIVEN Firehose keeps refusing the second todo of three
    stub.add_response("put_record_batch", partial(3, {1}), {"DeliveryStreamName": STREAM, "Records": ANY})
    for _ in range(2):
        stub.add_response("put_record_batch", partial(1, {0}), {"DeliveryStreamName": STREAM, "Records": ANY})

    # WHEN the batch is posted
    refused = app_client.http.post("/todos/batch", headers=headers, body=batch(3))

    # THEN 503 with Retry-After, naming the todos that did get through
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    answer = refused.json_body
    assert answer["error"] == "unavailable"
    first_ids = [line["id"] for line in sent[0]]
    assert [len(call) for call in sent] == [3, 1, 1]
    assert sent[1][0]["id"] == sent[2][0]["id"] == first_ids[1]  # only the refused one was resent
    assert [a["id"] for a in answer["accepted"]] == [first_ids[0], first_ids[2]]
    assert [a["version"] for a in answer["accepted"]] == [sent[0][0]["version"], sent[0][2]["version"]]

    # WHEN the whole batch is retried with the same key and Firehose takes it
    stub.add_response("put_record_batch", ok(3), {"DeliveryStreamName": STREAM, "Records": ANY})
    again = app_client.http.post("/todos/batch", headers=headers, body=batch(3))

    # THEN the same ids, newer versions
    assert again.status_code == 202, again.body
    assert [a["id"] for a in again.json_body["accepted"]] == first_ids
    assert [line["id"] for line in sent[3]] == first_ids
    assert again.json_body["accepted"][0]["version"] > answer["accepted"][0]["version"]


def test_batch_refused_entirely_is_503_with_an_empty_accepted_list(stubbed_app):
    app_client, stub, _ = stubbed_app
    stub.add_client_error("put_record_batch", service_error_code="ResourceNotFoundException", http_status_code=400)
    refused = app_client.http.post("/todos/batch", headers=auth(), body=batch(2))
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    assert refused.json_body["error"] == "unavailable" and refused.json_body["accepted"] == []


def test_single_post_refused_is_503_with_retry_after(stubbed_app):
    app_client, stub, sent = stubbed_app
    for _ in range(3):
        stub.add_response("put_record_batch", partial(1, {0}), {"DeliveryStreamName": STREAM, "Records": ANY})
    refused = app_client.http.post("/todos", headers=auth(), body=body(TODO))
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    assert set(refused.json_body) == {"error", "message"} and refused.json_body["error"] == "unavailable"
    assert len(sent) == 3  # the default three attempts
    # AND nothing reached the database
    assert app_client.http.get(f"/todos/{sent[0][0]['id']}", headers=auth()).status_code == 404
