"""Observability: one JSON log line per request and per loaded object, and CloudWatch Embedded
Metric Format (EMF) records for the numbers worth alarming on. Never logs tokens or bodies.

Each request writes exactly one line to standard output: a structured log record that is also an
EMF record, so CloudWatch turns it into the API's metrics without an API call:

- `Requests`, `Latency` (ms), `ServerErrors` (a 5xx) and `WriteAcceptanceFailures` (a 503 on a
  write: the transport did not take the command), per stage and per stage/route/method.

The loader's per-object line (`type: load`) and the reconciler's line come from
chalicelib.loader through `loaded_object()` and `metrics()`: `RecordsApplied`, `RecordsStale`,
`RecordsRejected`, `ObjectsTooLarge` (objects refused whole, over LOADER_MAX_OBJECT_BYTES) and
`ObjectLagSeconds` (from the object's arrival in S3 to its commit); the reconciler's run adds
`ReconcilerBacklog` and `ReconcilerStopped` (every run, a database outage included),
`ReconciledObjects` and `PoisonedObjects` (objects whose loads kept failing, left until
`replay --force`; when the database answers) and `ReconcilerFailures` (a failed run).

Every metric carries the dimension `Stage` (SLUICE_STAGE), so that the stages of one account never
share one. The alarms in infrastructure/ are held to how often each is emitted
(tests/infra/test_alarms.py runs this code to find out).

What a line may carry is an allow-list (`REQUEST_FIELDS`): request id, route template (never the
concrete path, which holds user ids), method, status, latency, the error code of an error answer.
Headers, query strings, claims and bodies are never read here.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.http import error_body

NAMESPACE = "Sluice"
WRITE_METHODS = frozenset(("POST", "PUT", "DELETE", "PATCH"))
# The units CloudWatch accepts (PutMetricData's StandardUnit).
UNITS = frozenset(
    (
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    )
)
REQUEST_FIELDS = ("type", "request_id", "lambda_request_id", "method", "route", "status", "error", "latency_ms")
_FRAMEWORK_CODES = {
    405: ("method_not_allowed", "This path does not take that method."),
    400: ("invalid_json", "The body is not valid JSON."),
    415: ("unsupported_media_type", "Send the body as application/json."),
    500: ("internal_error", "Something went wrong on our side."),
}


def emit(record: dict[str, Any]) -> None:
    """Write one JSON line to standard output (CloudWatch Logs in Lambda)."""
    if os.environ.get("SLUICE_LOG", "1") == "0":
        return
    sys.stdout.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def emf(
    dimensions: Mapping[str, str],
    values: Mapping[str, tuple[float, str]],
    dimension_sets: list[list[str]] | None = None,
) -> dict[str, Any]:
    """The EMF members of a record: the `_aws` directive, the dimension values, the metric values."""
    sets = dimension_sets if dimension_sets is not None else [sorted(dimensions)]
    for names in sets:
        missing = [name for name in names if name not in dimensions]
        if missing:
            raise ValueError(f"dimension set names undefined dimensions: {missing}")
    for name, (value, unit) in values.items():
        if unit not in UNITS:
            raise ValueError(f"metric {name}: {unit!r} is not a CloudWatch unit")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric {name}: {value!r} is not a number")
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(names) for names in sets],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                }
            ],
        },
        **{name: str(value) for name, value in dimensions.items()},
        **{name: value for name, (value, _) in values.items()},
    }


def metrics(dimensions: dict[str, str], values: dict[str, tuple[float, str]], **fields: Any) -> None:
    """One EMF record (and log line): CloudWatch turns it into metrics without an API call."""
    record = emf(dimensions, values)
    clash = set(fields) & set(record)
    if clash:
        raise ValueError(f"fields would overwrite metric members: {sorted(clash)}")
    emit({**record, **fields})


def stage() -> str:
    return os.environ.get("SLUICE_STAGE", "local")


def loaded_object(
    bucket: str,
    key: str,
    applied: int,
    stale: int,
    rejected: int,
    skipped: int,
    latency_ms: float,
    lag_seconds: float | None,
    source: str = "event",
    too_large: int = 0,
    deferred: int = 0,
) -> None:
    """The line for one loaded object, with the loader's metrics. `lag_seconds` is the time from the
    object's arrival (S3 event time or LastModified) to the commit; None when unknown (no metric).
    `too_large` is 1 for an object refused whole (over LOADER_MAX_OBJECT_BYTES); `deferred` is 1
    for an object left for a newer loader or schema (`DeferredObjects`)."""
    values: dict[str, tuple[float, str]] = {
        "RecordsApplied": (applied, "Count"),
        "RecordsStale": (stale, "Count"),
        "RecordsRejected": (rejected, "Count"),
    }
    if lag_seconds is not None:
        values["ObjectLagSeconds"] = (round(lag_seconds, 3), "Seconds")
    values["ObjectsTooLarge"] = (too_large, "Count")
    values["DeferredObjects"] = (deferred, "Count")
    metrics(
        {"Stage": stage()},
        values,
        type="load",
        source=source,
        bucket=bucket,
        key=key,
        skipped=skipped,
        latency_ms=round(latency_ms, 3),
    )


def _reshape_framework_error(response: Any) -> None:
    """Chalice answers some errors itself as {"Code", "Message"}; give them the contract's shape."""
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code, message = _FRAMEWORK_CODES.get(response.status_code, ("error", "The request failed."))
        response.body = error_body(code, message)
        response.headers["Content-Type"] = "application/json"


def _error_code(response: Any) -> str | None:
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:64]
    return None


_REQUEST_VALUES = (("Requests", "Count"), ("Latency", "Milliseconds"), ("ServerErrors", "Count"))
_REQUEST_UNITS = (*_REQUEST_VALUES, ("WriteAcceptanceFailures", "Count"))
_REQUEST_SETS = [["Stage"], ["Stage", "Route", "Method"]]
# The request line's `_aws` directive is the same on every request but for its timestamp: checked
# once here (as `emf` would) and rendered once, so a request only encodes what varies.
emf({"Stage": "", "Route": "", "Method": ""}, {name: (0, unit) for name, unit in _REQUEST_UNITS}, _REQUEST_SETS)
_REQUEST_DIRECTIVE = [
    {
        "Namespace": NAMESPACE,
        "Dimensions": _REQUEST_SETS,
        "Metrics": [{"Name": name, "Unit": unit} for name, unit in _REQUEST_UNITS],
    }
]
_REQUEST_DIRECTIVE_JSON = json.dumps(_REQUEST_DIRECTIVE, separators=(",", ":"))
_json_str = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str (ensure_ascii)
# (stage, route, method, status) -> the line's fixed text (`_request_template`).
_REQUEST_TEMPLATES: dict[tuple[str, Any, str, int], tuple[str, str, str, str]] = {}
_MAX_TEMPLATES = 512
_OPTIONAL_STR = (str, type(None))


def _request_parts(event: Any) -> tuple[str | None, str | None, str, Any]:
    """request id, Lambda request id, method (upper case, may be empty), route template."""
    context = getattr(event, "context", None)
    context = context if isinstance(context, dict) else {}
    lambda_context = getattr(event, "lambda_context", None)
    lambda_id = getattr(lambda_context, "aws_request_id", None)
    method = str(getattr(event, "method", "") or context.get("httpMethod") or "").upper()
    return context.get("requestId") or lambda_id, lambda_id, method, context.get("resourcePath")


def request_record(event: Any, status: int, error: str | None, latency_ms: float) -> dict[str, Any]:
    """The request's log line, from the allow-listed fields only."""
    request_id, lambda_id, method, route = _request_parts(event)
    server_error = status >= 500
    latency = round(latency_ms, 3)
    record: dict[str, Any] = {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": _REQUEST_DIRECTIVE},
        "Stage": stage(),
        "Route": str(route or "unknown"),
        "Method": method or "unknown",
        "Requests": 1,
        "Latency": latency,
        "ServerErrors": 1 if server_error else 0,
        "WriteAcceptanceFailures": 1 if status == 503 and method in WRITE_METHODS else 0,
        "type": "request",
        "request_id": request_id,
        "lambda_request_id": lambda_id,
        "method": method or None,
        "route": route,
        "status": status,
        "error": error,
        "latency_ms": latency,
    }
    if server_error:
        record["level"] = "error"
    return record


def _json_opt(value: str | None) -> str:
    return "null" if value is None else _json_str(value)


def request_line(event: Any, status: int, error: str | None, latency_ms: float) -> str:
    """`request_record` as its JSON line (what `emit` writes), rendering only the parts that vary:
    the text fixed for a (stage, route, method, status) is rendered once (`_request_template`)."""
    request_id, lambda_id, method, route = _request_parts(event)
    if (
        type(status) is not int
        or type(latency_ms) is not float
        or not math.isfinite(latency_ms)
        or not isinstance(route, _OPTIONAL_STR)
        or not isinstance(request_id, _OPTIONAL_STR)
        or not isinstance(lambda_id, _OPTIONAL_STR)
        or not isinstance(error, _OPTIONAL_STR)
    ):
        record = request_record(event, status, error, latency_ms)
        return json.dumps(record, separators=(",", ":"), default=str)
    key = (stage(), route, method, status)
    parts = _REQUEST_TEMPLATES.get(key)
    if parts is None:
        if len(_REQUEST_TEMPLATES) >= _MAX_TEMPLATES:
            _REQUEST_TEMPLATES.clear()
        parts = _REQUEST_TEMPLATES[key] = _request_template(key)
    latency = repr(round(latency_ms, 3))
    rid = "null" if request_id is None else _json_str(request_id)
    lid = "null" if lambda_id is None else _json_str(lambda_id)
    err = "null" if error is None else _json_str(error)
    return (
        f'{{"_aws":{{"Timestamp":{int(time.time() * 1000)}{parts[0]}{latency}{parts[1]}{rid}'
        f',"lambda_request_id":{lid}{parts[2]}{err},"latency_ms":{latency}{parts[3]}'
    )


def _request_template(key: tuple[str, Any, str, int]) -> tuple[str, str, str, str]:
    """The fixed text of one (stage, route, method, status)'s line, around what varies: the
    timestamp, the latency, the request id, the Lambda request id, the error, the latency."""
    stage_name, route, method, status = key
    dimensions = json.dumps(
        {"Stage": stage_name, "Route": str(route or "unknown"), "Method": method or "unknown"}, separators=(",", ":")
    )
    server_error = status >= 500
    failed_write = status == 503 and method in WRITE_METHODS
    return (
        ',"CloudWatchMetrics":' + _REQUEST_DIRECTIVE_JSON + "}," + dimensions[1:-1] + ',"Requests":1,"Latency":',
        f',"ServerErrors":{int(server_error)},"WriteAcceptanceFailures":{int(failed_write)}'
        ',"type":"request","request_id":',
        f',"method":{_json_opt(method or None)},"route":{_json_opt(route)},"status":{status},"error":',
        ',"level":"error"}' if server_error else "}",
    )


def http_middleware(event: Any, get_response: Callable[[Any], Any]) -> Any:
    started = time.perf_counter()
    response = get_response(event)
    _reshape_framework_error(response)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if os.environ.get("SLUICE_LOG", "1") != "0":
        line = request_line(event, response.status_code, _error_code(response), elapsed_ms)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return response
