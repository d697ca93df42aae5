"""Sluice: the app. Its routes are every declared resource's (chalicelib/routes.py, derived from
chalicelib/resources.py); each reads identity and input, calls one object from chalicelib, answers.

Reads go to replicas; writes become commands on the write transport and answer 202; the S3 event
handler and the scheduled reconciler load delivered objects into the master.
"""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice, CognitoUserPoolAuthorizer, Rate, Response
from chalice.app import RestAPIEventHandler

from chalicelib import apigateway_extensions, observe, routes, stage_guard
from chalicelib.bootstrap import services
from chalicelib.http import guarded, read_response


class _RestHandler(RestAPIEventHandler):
    """Chalice's REST handler, with its binary-answer check done without matching media types
    when the app has no binary types (it has none): the same verdict as chalice's
    `_matches_content_type`, which with no binary types calls a type binary only when it holds "*/*"."""

    def _validate_binary_response(self, request_headers: Any, response_headers: Any) -> bool:
        if self.api.binary_types:
            return super()._validate_binary_response(request_headers, response_headers)
        if "*/*" not in response_headers.get("content-type", "application/json"):
            return True
        accept = request_headers.get("accept")
        return accept is not None and "*/*" in accept


class Sluice(Chalice):
    """Chalice, serving REST requests through `_RestHandler` (what `Chalice.__call__` does)."""

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        self.lambda_context = context
        handler = _RestHandler(
            self.routes, self.api, self.log, self.debug, middleware_handlers=self._get_middleware_handlers("http")
        )
        self.current_request = handler.create_request_object(event, context)
        return handler(event, context)


stage_guard.check()  # a stage without its infrastructure stops here (chalicelib/stage_guard.py)
app = Sluice(app_name="sluice")
# Under chalice's CLI: the document `chalice deploy` sends carries the gateway responses and each
# GET's cache key, so a plain deploy keeps them (chalicelib/apigateway_extensions.py).
apigateway_extensions.install(__name__)
app.api.binary_types = []  # every body is JSON text; raw bytes are checked as UTF-8 by us

LOCAL_POOL_ARN = "arn:aws:cognito-idp:us-east-1:000000000000:userpool/us-east-1_localdev"
authorizer = CognitoUserPoolAuthorizer(
    "sluice-users", provider_arns=[os.environ.get("COGNITO_USER_POOL_ARN") or LOCAL_POOL_ARN]
)
ANY = ["*/*"]  # on every route: media types are checked by chalicelib.http, in the contract's order,
# and GETs ignore them (chalice's default would answer a GET with any other type 415)

if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # chalice local / test client only: answer as API Gateway does for bad tokens and unknown
    # paths, in the contract's error shape. Never imported in Lambda.
    from chalicelib import localdev

    localdev.install()

app.register_middleware(observe.http_middleware, "http")


@app.route("/health", methods=["GET"], content_types=ANY)
@guarded
def health() -> Response:
    return read_response({"status": "ok"}, 0)


@app.route("/openapi.json", methods=["GET"], content_types=ANY)
@guarded
def openapi() -> Response:
    from chalicelib.openapi import document

    return read_response(document(), 300)


# Every declared resource's routes (chalicelib/routes.py): todos, lists, the profile at /me.
routes.install(app, authorizer, ANY)


# -- loading: S3 events and the reconciler (CONTRACT section 5) -----------------------------
WRITES_BUCKET = os.environ.get("WRITES_BUCKET") or "sluice-local-writes"


@app.on_s3_event(bucket=WRITES_BUCKET, prefix="writes/", events=["s3:ObjectCreated:*"], name="load_writes")
def load_writes(event: Any) -> dict[str, int]:
    from chalicelib.loader.events import handle_s3_event

    return handle_s3_event(event.to_dict(), services())


@app.schedule(Rate(15, unit=Rate.MINUTES), name="reconcile_writes")
def reconcile_writes(event: Any) -> dict[str, int]:
    """The scheduled walk; with the deploy's request (detail {"reconcile": "deferred"}), the
    deferred objects first (chalicelib/loader/reconciler.py). Within the time the invocation has
    left: chalice hands an event source's handler its Lambda context as `event.context`
    (`app.lambda_context` is set for REST requests only)."""
    from chalicelib.loader.reconciler import reconcile_requested

    return reconcile_requested(event.to_dict(), services(), context=event.context)


@app.lambda_function(name="migrate")
def migrate(event: Any, context: Any) -> dict[str, list[int]]:
    """Create or upgrade the master's schema from inside the VPC (the deploy step invokes it), on a
    connection that waits for a long ALTER as long as the function may still run."""
    from chalicelib.bootstrap import migrate_schema

    return {"applied": migrate_schema(context.get_remaining_time_in_millis() / 1000)}
