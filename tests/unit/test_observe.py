"""Observability: one JSON line per request and per loaded object, valid CloudWatch EMF, and never
a token or a body in a log line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chalice import Response

from chalicelib import observe
from tests.gateway import LambdaContext, call, prod_claims, rest_event

SECRET_TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzZWNyZXQtc3ViIn0.c2lnbmF0dXJl"
SECRET_BODY = '{"title": "my-very-private-title-4f1c", "notes": "PIN 8841"}'


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Turn the log on and return a function giving the JSON lines written since the last call."""
    monkeypatch.setenv("SLUICE_LOG", "1")
    monkeypatch.setenv("SLUICE_STAGE", "prod")

    def read() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    return read


def assert_emf(record: dict[str, Any]) -> None:
    """The structure CloudWatch needs to extract metrics from a log line."""
    aws = record["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 1_600_000_000_000
    directives = aws["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    for directive in directives:
        assert isinstance(directive["Namespace"], str) and directive["Namespace"]
        assert isinstance(directive["Dimensions"], list)
        for names in directive["Dimensions"]:
            assert isinstance(names, list) and 0 < len(names) <= 30
            for name in names:
                assert isinstance(record.get(name), str), f"dimension {name} has no string value"
        metrics = directive["Metrics"]
        assert 0 < len(metrics) <= 100
        for metric in metrics:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            value = record.get(metric["Name"])
            assert isinstance(value, (int, float)) and not isinstance(value, bool), metric["Name"]
            assert metric.get("Unit", "None") in observe.UNITS


def metric_names(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for d in record["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


class FakeRequest:
    def __init__(self, method: str, route: str, request_id: str | None = "gw-req-1", lambda_id: str | None = None):
        self.method = method
        self.context: dict[str, Any] = {"resourcePath": route, "httpMethod": method}
        if request_id:
            self.context["requestId"] = request_id
        self.headers = {"authorization": SECRET_TOKEN, "content-type": "application/json"}
        self.raw_body = SECRET_BODY.encode()
        self.query_params = {"cursor": ["c-secret"]}
        self.lambda_context = LambdaContext(aws_request_id=lambda_id) if lambda_id else None


def run(request: FakeRequest, status: int, body: Any = None) -> Response:
    return observe.http_middleware(request, lambda _: Response(body=body or {}, status_code=status))


# -- one line per request ---------------------------------------------------------------------------
def test_one_line_per_request_with_the_allowed_fields(lines: Any) -> None:
    run(FakeRequest("GET", "/todos/{todo_id}"), 200, {"id": "x"})
    (record,) = lines()
    assert record["type"] == "request"
    assert record["request_id"] == "gw-req-1"
    assert (record["method"], record["route"], record["status"]) == ("GET", "/todos/{todo_id}", 200)
    assert isinstance(record["latency_ms"], float) and record["latency_ms"] >= 0
    emf_members = {"_aws", "Stage", "Route", "Method"} | metric_names(record)
    assert set(record) <= set(observe.REQUEST_FIELDS) | emf_members | {"level"}
    assert_emf(record)


def test_request_line_never_carries_the_token_body_or_query(lines: Any) -> None:
    run(FakeRequest("POST", "/todos"), 400, {"error": "validation_error", "message": "m", "fields": {"x": ["y"]}})
    (record,) = lines()
    text = json.dumps(record)
    for secret in (SECRET_TOKEN, "my-very-private-title", "PIN 8841", "c-secret", "fields"):
        assert secret not in text
    assert record["error"] == "validation_error"


def test_request_id_falls_back_to_the_lambda_context(lines: Any) -> None:
    run(FakeRequest("GET", "/me", request_id=None, lambda_id="lambda-42"), 200)
    (record,) = lines()
    assert record["request_id"] == "lambda-42" and record["lambda_request_id"] == "lambda-42"


@pytest.mark.parametrize(
    ("method", "status", "server_errors", "write_failures"),
    [
        ("POST", 202, 0, 0),
        ("PUT", 503, 1, 1),
        ("DELETE", 503, 1, 1),
        ("POST", 503, 1, 1),
        ("GET", 503, 1, 0),
        ("GET", 500, 1, 0),
        ("POST", 500, 1, 0),
        ("POST", 400, 0, 0),
    ],
)
def test_api_metrics(lines: Any, method: str, status: int, server_errors: int, write_failures: int) -> None:
    run(FakeRequest(method, "/todos"), status)
    (record,) = lines()
    assert_emf(record)
    assert {"Requests", "Latency", "ServerErrors", "WriteAcceptanceFailures"} <= metric_names(record)
    assert (record["ServerErrors"], record["WriteAcceptanceFailures"]) == (server_errors, write_failures)
    assert record["Requests"] == 1
    assert record["Stage"] == "prod"
    assert (record.get("level") == "error") == (status >= 500)
    dimension_sets = record["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert ["Stage"] in dimension_sets and ["Stage", "Route", "Method"] in dimension_sets


def test_framework_errors_get_the_contract_shape(lines: Any) -> None:
    response = run(FakeRequest("PATCH", "/todos"), 405, {"Code": "MethodNotAllowedError", "Message": "Unsupported"})
    assert response.body == {"error": "method_not_allowed", "message": "This path does not take that method."}
    assert lines()[0]["error"] == "method_not_allowed"


def test_log_switch(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SLUICE_LOG", "0")
    run(FakeRequest("GET", "/health"), 200)
    assert capsys.readouterr().out == ""


# -- through the real app, as Lambda invokes it -------------------------------------------------------
@pytest.fixture
def offline_services(tmp_path: Path) -> Any:
    """Services that do no I/O for the requests below (they are rejected before any read or write)."""
    from chalicelib import bootstrap
    from chalicelib.config import Settings

    bootstrap.use(bootstrap.build(Settings.from_env({"LOCAL_DATA_DIR": str(tmp_path)})))
    yield
    bootstrap.reset()


def test_app_writes_exactly_one_line_per_request(lines: Any, offline_services: Any) -> None:
    import app

    event = rest_event(
        "POST",
        "/todos",
        "/todos",
        claims=prod_claims("sub-7"),
        headers={"Authorization": SECRET_TOKEN, "Content-Type": "application/json"},
        body=SECRET_BODY.replace("}", ', "owner": "x"}'),
        request_id="apigw-77",
    )
    status, _, body = call(app.app, event, LambdaContext(aws_request_id="lambda-77"))
    assert (status, body["error"]) == (400, "validation_error")
    records = lines()
    assert len(records) == 1
    record = records[0]
    assert_emf(record)
    assert (record["request_id"], record["lambda_request_id"]) == ("apigw-77", "lambda-77")
    assert (record["route"], record["method"], record["status"]) == ("/todos", "POST", 400)
    text = json.dumps(record)
    for secret in (SECRET_TOKEN, "my-very-private-title", "PIN 8841", "sub-7"):
        assert secret not in text


def test_health_line(lines: Any) -> None:
    import app

    status, _, _ = call(app.app, rest_event("GET", "/health", "/health"))
    assert status == 200
    (record,) = lines()
    assert (record["route"], record["status"], record["ServerErrors"]) == ("/health", 200, 0)


# -- the loader's lines ----------------------------------------------------------------------------------
def test_loaded_object_line(lines: Any) -> None:
    observe.loaded_object("bucket", "writes/2026/01/01/00/x", 3, 1, 2, 0, 12.5, 4.25)
    (record,) = lines()
    assert_emf(record)
    assert record["type"] == "load"
    assert (record["RecordsApplied"], record["RecordsStale"], record["RecordsRejected"]) == (3, 1, 2)
    assert record["ObjectLagSeconds"] == 4.25
    assert record["_aws"]["CloudWatchMetrics"][0]["Metrics"][3] == {"Name": "ObjectLagSeconds", "Unit": "Seconds"}
    assert record["ObjectsTooLarge"] == 0


def test_an_object_refused_for_its_size_is_counted(lines: Any) -> None:
    observe.loaded_object("bucket", "writes/2026/01/01/00/x", 0, 0, 1, 0, 12.5, None, too_large=1)
    (record,) = lines()
    assert_emf(record)
    assert record["ObjectsTooLarge"] == 1 and record["RecordsRejected"] == 1


def test_unknown_lag_is_not_reported_as_zero(lines: Any) -> None:
    observe.loaded_object("bucket", "writes/k", 1, 0, 0, 0, 1.0, None)
    (record,) = lines()
    assert_emf(record)
    assert "ObjectLagSeconds" not in metric_names(record) and "ObjectLagSeconds" not in record


def test_metrics_refuses_what_cloudwatch_would_drop() -> None:
    with pytest.raises(ValueError, match="unit"):
        observe.metrics({"Stage": "x"}, {"M": (1, "Things")})
    with pytest.raises(ValueError, match="number"):
        observe.metrics({"Stage": "x"}, {"M": ("1", "Count")})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="overwrite"):
        observe.metrics({"Stage": "x"}, {"M": (1, "Count")}, M=2)
    with pytest.raises(ValueError, match="undefined"):
        observe.emf({"Stage": "x"}, {"M": (1, "Count")}, [["Stage", "Route"]])


class _Loader:
    """Stands in for BatchLoader: nothing is loaded yet; each load applies 2 and quarantines 1."""

    def __init__(self) -> None:
        self.loads: list[str] = []

    def is_loaded(self, key: str, etag: str) -> bool:
        return False

    def loaded_ids(self, ids: list[str]) -> set[str]:
        return set()

    def poisoned_ids(self, ids: list[str]) -> set[str]:
        return set()

    def waiting_ids(self, ids: list[str]) -> set[str]:
        return set()

    def load(self, bucket: str, key: str, etag: str, body: bytes, force: bool = False) -> Any:
        from chalicelib.loader import LoadResult

        self.loads.append(key)
        return LoadResult(applied=2, stale=0, rejected=1, objects=1)


def _store(keys: list[str]) -> Any:
    from chalicelib.loader.sources import ObjectStore, StoredObject

    class _Store(ObjectStore):
        bucket = "writes-bucket"

        def list(self, prefix: str) -> Any:
            return iter([StoredObject(k, None) for k in keys if k.startswith(prefix)])

        def get(self, key: str) -> tuple[bytes, str]:
            return b"{}\n", "0" * 32

    return _Store()


def test_s3_event_writes_one_load_line_per_object(lines: Any) -> None:
    from types import SimpleNamespace

    from chalicelib.loader.events import handle_s3_event

    keys = ["writes/2026/01/01/00/a", "writes/2026/01/01/00/b%20c"]
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2020-01-01T00:00:00.000Z",
                "s3": {"bucket": {"name": "writes-bucket"}, "object": {"key": k, "eTag": "e"}},
            }
            for k in keys
        ]
    }
    loader = _Loader()
    handle_s3_event(event, SimpleNamespace(loader=loader), lambda bucket: _store([]))
    loads = [r for r in lines() if r.get("type") == "load"]
    assert [r["key"] for r in loads] == ["writes/2026/01/01/00/a", "writes/2026/01/01/00/b c"]
    for record in loads:
        assert_emf(record)
        assert (record["RecordsApplied"], record["RecordsRejected"]) == (2, 1)
        assert record["ObjectLagSeconds"] > 0


def test_reconciler_writes_one_load_line_per_object(lines: Any) -> None:
    """Objects the reconciler loads (events lost, retries run out) are counted like any other."""
    from chalicelib.loader.reconciler import reconcile

    keys = ["writes/2026/01/01/00/a", "writes/2026/01/01/00/b"]
    loader = _Loader()
    reconcile(_store(keys), loader, ["writes/2026/01/01/00/"])  # type: ignore[arg-type]
    assert loader.loads == keys
    loads = [r for r in lines() if r.get("type") == "load"]
    assert [r["key"] for r in loads] == keys
    for record in loads:
        assert_emf(record)
        assert record["source"] == "reconcile"
        assert (record["RecordsApplied"], record["RecordsRejected"]) == (2, 1)
