"""Observability: one JSON log line per request and per loaded object, and CloudWatch Embedded
Metric Format (EMF) records for the numbers worth alarming on. Never logs tokens or bodies."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from chalicelib.http import error_body

NAMESPACE = "Sluice"
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


def metrics(dimensions: dict[str, str], values: dict[str, tuple[float, str]], **fields: Any) -> None:
    """One EMF record: CloudWatch turns it into metrics without an API call."""
    record: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                }
            ],
        },
        **dimensions,
        **{name: value for name, (value, _) in values.items()},
        **fields,
    }
    emit(record)


def stage() -> str:
    return os.environ.get("SLUICE_STAGE", "local")


def _reshape_framework_error(response: Any) -> None:
    """Chalice answers some errors itself as {"Code", "Message"}; give them the contract's shape."""
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code, message = _FRAMEWORK_CODES.get(response.status_code, ("error", "The request failed."))
        response.body = error_body(code, message)
        response.headers["Content-Type"] = "application/json"


def http_middleware(event: Any, get_response: Callable[[Any], Any]) -> Any:
    started = time.perf_counter()
    response = get_response(event)
    _reshape_framework_error(response)
    elapsed_ms = (time.perf_counter() - started) * 1000
    context = getattr(event, "context", None) or {}
    record = {
        "type": "request",
        "request_id": context.get("requestId"),
        "method": getattr(event, "method", None),
        "route": context.get("resourcePath"),
        "status": response.status_code,
        "latency_ms": round(elapsed_ms, 3),
    }
    if response.status_code >= 500:
        record["level"] = "error"
    emit(record)
    return response
