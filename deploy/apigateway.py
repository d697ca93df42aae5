"""API Gateway settings Chalice cannot make, and why GETs are not cached here.

`chalice deploy` re-imports the REST API from its own swagger (`put_rest_api`, mode overwrite) and
deploys it to the stage at once: method request parameters and integration cache keys go back to
Chalice's (none), while stage settings (cache cluster, per-method caching) stay. A stage cache
would then serve one caller's GET to another until something re-added the keys, and a plain
`chalice deploy --stage prod` run by hand would leave it so. So API Gateway caches nothing: the
stage has no cache cluster and caching is off on every method. CloudFront caches nothing either
(infrastructure/edge.yaml): no shared cache answers an authenticated route.

After `chalice deploy`, this module sets, comparing first and changing only what differs:
- gateway responses in the contract's error shape (`gateway_response_calls`), then a deployment;
- the stage (`stage_calls`): no cache cluster, caching off everywhere, X-Ray, and throttling per
  method, reads and writes separately, once any cache cluster change in progress has settled
  (`wait_for_cache_cluster`);
- the regional web ACL on the stage (`web_acl_calls`; the ACL itself is in the data stack).
API Gateway answers ConflictException while the stage is changing (a cache cluster being deleted
included): calls are retried with backoff (`apply`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploy.routes import Route

STAGE_WIDE = "*/*"
MAX_PATCH_OPERATIONS = 50  # per update_stage call; API Gateway refuses very long patch lists


@dataclass(frozen=True)
class Call:
    """One planned boto3 call: `getattr(client, operation)(**params)`."""

    operation: str
    params: Mapping[str, Any]

    def __str__(self) -> str:
        shown = {k: v for k, v in self.params.items() if k not in ("restApiId",)}
        return f"{self.operation} {json.dumps(shown, sort_keys=True, default=str)}"


RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0)  # ~2 minutes in all


def apply(client: Any, calls: Iterable[Call], sleep: Callable[[float], None] = time.sleep) -> None:
    """Make the calls in order; a ConflictException or TooManyRequests is retried with backoff."""
    from botocore.exceptions import ClientError

    for call in calls:
        for delay in (*RETRY_DELAYS, None):
            try:
                getattr(client, call.operation)(**call.params)
                break
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("ConflictException", "TooManyRequestsException") or delay is None:
                    raise
                sleep(delay)


def escape(path: str) -> str:
    """A resource path inside a JSON Pointer (stage patch paths, methodSettings keys)."""
    return path.replace("~", "~0").replace("/", "~1")


def method_key(route: Route) -> str:
    """The methodSettings key of a route: `~1todos~1{todo_id}/GET`."""
    return f"{escape(route.path)}/{route.method}"


class ApiShapeError(RuntimeError):
    """The deployed API does not have what the app declares (deploy and app out of step)."""


# -- gateway responses --------------------------------------------------------------------------
@dataclass(frozen=True)
class GatewayResponse:
    """An answer API Gateway makes itself, in the contract's error shape."""

    response_type: str
    code: str
    message: str
    status: str | None = None  # None keeps API Gateway's status for this type
    headers: Mapping[str, str] = field(default_factory=dict)

    def parameters(self) -> dict[str, str]:
        values = {"Cache-Control": "no-store", **self.headers}
        return {f"gatewayresponse.header.{name}": f"'{value}'" for name, value in values.items()}

    def templates(self) -> dict[str, str]:
        return {"application/json": json.dumps({"error": self.code, "message": self.message})}

    def request(self, rest_api_id: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "restApiId": rest_api_id,
            "responseType": self.response_type,
            "responseParameters": self.parameters(),
            "responseTemplates": self.templates(),
        }
        if self.status is not None:
            params["statusCode"] = self.status
        return params


# The messages match chalicelib/localdev.py, which makes `chalice local` answer the same way.
GATEWAY_RESPONSES: tuple[GatewayResponse, ...] = (
    GatewayResponse("UNAUTHORIZED", "unauthorized", "A valid identity token is required."),
    GatewayResponse("ACCESS_DENIED", "forbidden", "You are not allowed to do this."),
    # API Gateway answers an unknown path (or a method the path does not have) with 403
    # "Missing Authentication Token"; to a client that is a 404.
    GatewayResponse("MISSING_AUTHENTICATION_TOKEN", "not_found", "No such path.", status="404"),
    GatewayResponse("THROTTLED", "throttled", "Too many requests; try again shortly.", headers={"Retry-After": "1"}),
    GatewayResponse("REQUEST_TOO_LARGE", "payload_too_large", "The request is too large."),
    GatewayResponse(
        "INTEGRATION_TIMEOUT",
        "unavailable",
        "The service did not answer in time; try again shortly.",
        headers={"Retry-After": "2"},
    ),
    GatewayResponse("DEFAULT_4XX", "bad_request", "The request was rejected."),
    GatewayResponse("DEFAULT_5XX", "internal_error", "Something went wrong on our side."),
)


def gateway_response_calls(
    apigw: Any, rest_api_id: str, responses: Sequence[GatewayResponse] = GATEWAY_RESPONSES
) -> list[Call]:
    current: dict[str, Mapping[str, Any]] = {}
    for page in apigw.get_paginator("get_gateway_responses").paginate(restApiId=rest_api_id):
        for item in page.get("items", []):
            current[item["responseType"]] = item
    calls = []
    for response in responses:
        have = current.get(response.response_type, {})
        same = (
            (have.get("responseParameters") or {}) == response.parameters()
            and (have.get("responseTemplates") or {}) == response.templates()
            and (response.status is None or have.get("statusCode") == response.status)
        )
        if not same:
            calls.append(Call("put_gateway_response", response.request(rest_api_id)))
    return calls


# -- stage settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Throttle:
    rate: float  # steady requests per second
    burst: int


@dataclass(frozen=True)
class StageSettings:
    reads: Throttle = Throttle(rate=500.0, burst=1000)
    writes: Throttle = Throttle(rate=100.0, burst=200)
    # (METHOD, path) -> a limit of its own. POST /todos/batch carries up to 100 commands per
    # request, so it gets a hundredth of the single-write budget of Firehose records.
    overrides: Mapping[tuple[str, str], Throttle] = field(
        default_factory=lambda: {("POST", "/todos/batch"): Throttle(rate=5.0, burst=10)}
    )
    tracing: bool = True

    def throttle_for(self, route: Route) -> Throttle:
        override = self.overrides.get((route.method, route.path))
        if override is not None:
            return override
        return self.reads if route.is_read else self.writes


FIELD_PATHS = {
    "cachingEnabled": "caching/enabled",
    "throttlingRateLimit": "throttling/rateLimit",
    "throttlingBurstLimit": "throttling/burstLimit",
}


def desired_method_settings(routes: Sequence[Route], settings: StageSettings) -> dict[str, dict[str, Any]]:
    """methodSettings key -> every setting it must have: caching off, the method's throttle.

    A method's own entry replaces the stage-wide one entirely (it does not inherit from `*/*`),
    so each entry names every setting. `*/*` covers methods the app does not declare: the write
    limits.
    """

    def entry(throttle: Throttle) -> dict[str, Any]:
        return {
            "cachingEnabled": False,
            "throttlingRateLimit": float(throttle.rate),
            "throttlingBurstLimit": int(throttle.burst),
        }

    out = {STAGE_WIDE: entry(settings.writes)}
    for route in routes:
        out[method_key(route)] = entry(settings.throttle_for(route))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(have: Any, want: Any) -> bool:
    if have is None:
        return False
    if isinstance(want, bool) or isinstance(have, bool):
        return have is want
    if isinstance(want, int | float) and isinstance(have, int | float):
        return float(have) == float(want)
    return bool(have == want)


def stage_patch_operations(
    stage: Mapping[str, Any], routes: Sequence[Route], settings: StageSettings
) -> list[dict[str, str]]:
    """The patch operations that bring `stage` (a get_stage answer) to the settings; none if it is."""
    ops = []
    top = {"cacheClusterEnabled": False, "tracingEnabled": settings.tracing}
    for name, value in top.items():
        if not _same(stage.get(name), value):
            ops.append({"op": "replace", "path": f"/{name}", "value": _text(value)})
    current = stage.get("methodSettings") or {}
    for key, wanted in desired_method_settings(routes, settings).items():
        have = current.get(key) or {}
        for name, value in wanted.items():
            if not _same(have.get(name), value):
                ops.append({"op": "replace", "path": f"/{key}/{FIELD_PATHS[name]}", "value": _text(value)})
    return ops


def _update_stage_calls(rest_api_id: str, stage_name: str, ops: Sequence[Mapping[str, str]]) -> list[Call]:
    return [
        Call(
            "update_stage",
            {
                "restApiId": rest_api_id,
                "stageName": stage_name,
                "patchOperations": list(ops[i : i + MAX_PATCH_OPERATIONS]),
            },
        )
        for i in range(0, len(ops), MAX_PATCH_OPERATIONS)
    ]


def get_stage(apigw: Any, rest_api_id: str, stage_name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(apigw.get_stage(restApiId=rest_api_id, stageName=stage_name))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NotFoundException":
            return None
        raise


def stage_calls(
    apigw: Any, rest_api_id: str, stage_name: str, routes: Sequence[Route], settings: StageSettings
) -> list[Call]:
    """update_stage calls that bring the stage to the settings (none when it is already right)."""
    stage = get_stage(apigw, rest_api_id, stage_name)
    if stage is None:
        raise ApiShapeError(f"the API {rest_api_id} has no stage {stage_name!r}; was chalice deploy run?")
    return _update_stage_calls(rest_api_id, stage_name, stage_patch_operations(stage, routes, settings))


def wait_for_cache_cluster(
    apigw: Any, rest_api_id: str, stage_name: str, sleep: Callable[[float], None] = time.sleep, attempts: int = 60
) -> str:
    """Wait (up to ~15 minutes) while the stage's cache cluster is being created, deleted or
    flushed: API Gateway refuses stage updates meanwhile. Returns the status it settled on."""
    status = ""
    for _ in range(attempts):
        status = str((get_stage(apigw, rest_api_id, stage_name) or {}).get("cacheClusterStatus") or "")
        if not status.endswith("_IN_PROGRESS"):
            return status
        sleep(15.0)
    raise ApiShapeError(f"the cache cluster of stage {stage_name!r} is still {status}; run the deploy again later")


def cached_gets_without_keys(
    apigw: Any, rest_api_id: str, stage_name: str, must_key: Callable[[Route], Sequence[str]], routes: Sequence[Route]
) -> list[str]:
    """GET methods the stage would answer from its cache with a key missing something it must hold.

    A GET is cached when the stage has a cache cluster and caching is on for it (its own
    methodSettings entry, else `*/*`, else on by default when the cluster exists). Its key is
    what the integration of the *deployment the stage serves* lists in cacheKeyParameters.
    """
    stage = get_stage(apigw, rest_api_id, stage_name) or {}
    if not stage.get("cacheClusterEnabled"):
        return []
    settings = stage.get("methodSettings") or {}
    default = (settings.get(STAGE_WIDE) or {}).get("cachingEnabled", True)
    resources = resource_ids(apigw, rest_api_id)
    unsafe = []
    for route in routes:
        if not route.is_read:
            continue
        if not (settings.get(method_key(route)) or {}).get("cachingEnabled", default):
            continue
        integration = apigw.get_integration(restApiId=rest_api_id, resourceId=resources[route.path], httpMethod="GET")
        keyed = set(integration.get("cacheKeyParameters") or [])
        missing = [p for p in must_key(route) if p not in keyed]
        if missing:
            unsafe.append(f"GET {route.path} cached without {', '.join(missing)}")
    return unsafe


def resource_ids(apigw: Any, rest_api_id: str) -> dict[str, str]:
    """Resource path -> resource id, for every resource of the API."""
    out: dict[str, str] = {}
    for page in apigw.get_paginator("get_resources").paginate(restApiId=rest_api_id):
        for item in page.get("items", []):
            out[item["path"]] = item["id"]
    return out


# -- the regional web ACL on the stage -----------------------------------------------------------
def stage_arn(partition: str, region: str, rest_api_id: str, stage_name: str) -> str:
    return f"arn:{partition}:apigateway:{region}::/restapis/{rest_api_id}/stages/{stage_name}"


def web_acl_calls(waf: Any, web_acl_arn: str, resource_arn: str) -> list[Call]:
    """associate_web_acl when the stage is not already protected by that web ACL."""
    from botocore.exceptions import ClientError

    try:
        current = (waf.get_web_acl_for_resource(ResourceArn=resource_arn).get("WebACL") or {}).get("ARN")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "WAFNonexistentItemException":
            raise
        current = None
    if current == web_acl_arn:
        return []
    return [Call("associate_web_acl", {"WebACLArn": web_acl_arn, "ResourceArn": resource_arn})]


# -- the whole post-deploy configuration ----------------------------------------------------------
def api_definition_calls(
    apigw: Any, rest_api_id: str, stage_name: str, description: str = "sluice deploy step"
) -> list[Call]:
    """Gateway responses, then a deployment of the stage when any changed."""
    calls = gateway_response_calls(apigw, rest_api_id)
    if calls:
        calls.append(
            Call("create_deployment", {"restApiId": rest_api_id, "stageName": stage_name, "description": description})
        )
    return calls


def configure_api(
    apigw: Any,
    rest_api_id: str,
    stage_name: str,
    routes: Sequence[Route],
    settings: StageSettings,
    dry_run: bool = False,
    log: Any = print,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Call]:
    """Everything after `chalice deploy`; returns the calls made (or planned)."""
    definition = api_definition_calls(apigw, rest_api_id, stage_name)
    for call in definition:
        log(("would " if dry_run else "") + str(call))
    if not dry_run:
        apply(apigw, definition, sleep)
    if not dry_run:
        wait_for_cache_cluster(apigw, rest_api_id, stage_name, sleep)
    stage = stage_calls(apigw, rest_api_id, stage_name, routes, settings)
    for call in stage:
        log(("would " if dry_run else "") + str(call))
    if not dry_run:
        apply(apigw, stage, sleep)
    return definition + stage
