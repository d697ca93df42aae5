"""API Gateway settings Chalice cannot make, and the stage cache that is off unless asked for.

`chalice deploy` re-imports the REST API from its own document (`put_rest_api`, mode overwrite)
and deploys it to the stage at once: the API's definition is whatever that document says, while
stage settings (cache cluster, per-method caching, throttling) stay. The document carries the
gateway responses and each GET's cache key (chalicelib/apigateway_extensions.py), so a plain
`chalice deploy --stage prod` run by hand keeps both.

After `chalice deploy`, this module sets, comparing first and changing only what differs:
- gateway responses in the contract's error shape (`gateway_response_calls`): put back, then a
  deployment, only if the document came without them;
- the stage (`stage_calls`): X-Ray, throttling per method (reads and writes separately), and the
  stage cache: off by default (no cache cluster, caching off on every method); on with
  `StageSettings.cache_ttl` > 0, for the GETs only, once each GET's live integration holds its
  whole key (`configure_api`); applied once any cache cluster change in progress has settled
  (`wait_for_cache_cluster`);
- the regional web ACL on the stage (`web_acl_calls`; the ACL itself is in the data stack).
API Gateway answers ConflictException while the stage is changing (a cache cluster being created
or deleted included): calls are retried with backoff (`apply`). CloudFront caches nothing
(infrastructure/edge.yaml)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib.apigateway_extensions import GATEWAY_RESPONSES, GatewayResponse
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
# Defined with the document chalice sends (chalicelib/apigateway_extensions.py), which carries them
# on every deploy; here they are checked after it, and put back if a document came without them.
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
            calls.append(Call("put_gateway_response", put_request(response, rest_api_id)))
    return calls


def put_request(response: GatewayResponse, rest_api_id: str) -> dict[str, Any]:
    """put_gateway_response's arguments for `response` (the same values the document carries)."""
    entry = response.document_entry()
    return {"restApiId": rest_api_id, "responseType": response.response_type, **entry}


# -- stage settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Throttle:
    rate: float  # steady requests per second
    burst: int


DEFAULT_CACHE_TTL = 10  # seconds: what `--api-cache-ttl` alone turns the stage cache on with
MAX_CACHE_TTL = 3600  # API Gateway's maximum


@dataclass(frozen=True)
class StageSettings:
    """Everything the step sets on the stage. `cache_ttl` > 0 turns API Gateway's stage cache on
    for the GETs (a cluster of `cache_size` GB); 0, the default, keeps it off."""

    reads: Throttle = Throttle(rate=500.0, burst=1000)
    writes: Throttle = Throttle(rate=100.0, burst=200)
    # (METHOD, path) -> a limit of its own. POST /todos/batch carries up to 100 commands per
    # request, so it gets a hundredth of the single-write budget of Firehose records.
    overrides: Mapping[tuple[str, str], Throttle] = field(
        default_factory=lambda: {("POST", "/todos/batch"): Throttle(rate=5.0, burst=10)}
    )
    tracing: bool = True
    cache_ttl: int = 0
    cache_size: str = "0.5"  # GB: the smallest cluster, ~$0.02 an hour in us-east-1

    @property
    def caches(self) -> bool:
        return self.cache_ttl > 0

    def throttle_for(self, route: Route) -> Throttle:
        override = self.overrides.get((route.method, route.path))
        if override is not None:
            return override
        return self.reads if route.is_read else self.writes


FIELD_PATHS = {
    "cachingEnabled": "caching/enabled",
    "cacheTtlInSeconds": "caching/ttlInSeconds",
    "cacheDataEncrypted": "caching/dataEncrypted",
    "requireAuthorizationForCacheControl": "caching/requireAuthorizationForCacheControl",
    "throttlingRateLimit": "throttling/rateLimit",
    "throttlingBurstLimit": "throttling/burstLimit",
}


def desired_method_settings(routes: Sequence[Route], settings: StageSettings) -> dict[str, dict[str, Any]]:
    """methodSettings key -> every setting it must have: the method's throttle, and caching on
    for the GETs only when the stage cache is on (off everywhere else).

    A method's own entry replaces the stage-wide one entirely (it does not inherit from `*/*`),
    so each entry names every setting. `*/*` covers methods the app does not declare: the write
    limits, no cache. A cached GET keeps its entries `cacheTtlInSeconds` (the TTL), encrypted,
    and `requireAuthorizationForCacheControl` off: a client may send `Cache-Control: max-age=0`
    to have its own entry fetched again (its key holds its own token, so it reaches no one
    else's), which is how it gets past an error kept in the cache (docs/deploy.md).
    """

    def entry(throttle: Throttle, cached: bool) -> dict[str, Any]:
        values: dict[str, Any] = {
            "cachingEnabled": cached,
            "throttlingRateLimit": float(throttle.rate),
            "throttlingBurstLimit": int(throttle.burst),
        }
        if cached:
            values.update(
                cacheTtlInSeconds=settings.cache_ttl,
                cacheDataEncrypted=True,
                requireAuthorizationForCacheControl=False,
            )
        return values

    out = {STAGE_WIDE: entry(settings.writes, False)}
    for route in routes:
        out[method_key(route)] = entry(settings.throttle_for(route), settings.caches and route.is_read)
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
    top: dict[str, Any] = {"cacheClusterEnabled": settings.caches, "tracingEnabled": settings.tracing}
    if settings.caches:
        top["cacheClusterSize"] = settings.cache_size
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
    cached = [r for r in routes if r.is_read and (settings.get(method_key(r)) or {}).get("cachingEnabled", default)]
    return [
        f"GET {path} cached without {missing}" for path, missing in unkeyed_gets(apigw, rest_api_id, cached, must_key)
    ]


def unkeyed_gets(
    apigw: Any, rest_api_id: str, routes: Sequence[Route], must_key: Callable[[Route], Sequence[str]]
) -> list[tuple[str, str]]:
    """(path, what is missing) for each GET among `routes` whose integration's cacheKeyParameters
    lack something `must_key` says its key must hold."""
    resources = resource_ids(apigw, rest_api_id)
    out = []
    for route in routes:
        if not route.is_read:
            continue
        integration = apigw.get_integration(restApiId=rest_api_id, resourceId=resources[route.path], httpMethod="GET")
        keyed = set(integration.get("cacheKeyParameters") or [])
        missing = [p for p in must_key(route) if p not in keyed]
        if missing:
            out.append((route.path, ", ".join(missing)))
    return out


def current_cache_ttl(stage: Mapping[str, Any] | None) -> int:
    """The TTL the stage caches its GETs with now (0: no cache cluster, or no GET cached)."""
    if not (stage or {}).get("cacheClusterEnabled"):
        return 0
    for key, entry in ((stage or {}).get("methodSettings") or {}).items():
        if key.endswith("/GET") and entry.get("cachingEnabled"):
            return int(entry.get("cacheTtlInSeconds") or 0)
    return 0


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
    """Everything after `chalice deploy`; returns the calls made (or planned).

    The stage cache is turned on only when every GET's live integration holds its whole key (the
    document chalice sent carried it: chalicelib/apigateway_extensions.py). When one does not,
    the stage is set with the cache off and ApiShapeError says why: a GET is never left cached
    on a key that misses an input, one caller's answer served to another."""
    definition = api_definition_calls(apigw, rest_api_id, stage_name)
    for call in definition:
        log(("would " if dry_run else "") + str(call))
    if not dry_run:
        apply(apigw, definition, sleep)
    unkeyed = unkeyed_gets(apigw, rest_api_id, routes, lambda r: r.cache_key_parameters()) if settings.caches else []
    if unkeyed:
        settings = replace(settings, cache_ttl=0)
        log(
            "the stage cache stays off: "
            + "; ".join(f"GET {path} has no {missing} in its key" for path, missing in unkeyed)
        )
    if not dry_run:
        wait_for_cache_cluster(apigw, rest_api_id, stage_name, sleep)
    stage = stage_calls(apigw, rest_api_id, stage_name, routes, settings)
    for call in stage:
        log(("would " if dry_run else "") + str(call))
    if not dry_run:
        apply(apigw, stage, sleep)
    if unkeyed:
        raise ApiShapeError(
            "the stage cache was not turned on: the API chalice deployed lacks cache keys ("
            + "; ".join(f"GET {path}: {missing}" for path, missing in unkeyed)
            + "); was app.py deployed without chalicelib.apigateway_extensions.install?"
        )
    return definition + stage
