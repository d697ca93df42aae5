"""Stand-ins for what moto's server does not do like AWS, loaded by the `chalice deploy`
processes of tests/deploy/test_emulated_deploy.py (PYTHONPATH names this folder; Python imports
`sitecustomize` at start-up). Active only with SLUICE_MOTO_STANDIN=1. Each is small and tested
(tests/deploy/test_standin.py):

1. moto imports only OpenAPI 3 documents (`put_rest_api`/`import_rest_api`); chalice sends
   Swagger 2.0, which API Gateway accepts. The document is relabelled `openapi: 3.0.1` on the
   way out (moto reads the same `paths` and `x-amazon-apigateway-integration` from either), given
   the `info.description` moto requires, and `failOnWarnings` is dropped so moto does not
   validate a Swagger document as OpenAPI 3.
2. moto refuses chalice's S3 notification filter rule names `Prefix`/`Suffix` (AWS accepts any
   case); they are sent as `prefix`/`suffix`.
3. chalice would download the third-party wheels of requirements.txt for Lambda's platform
   (no network here, and moto never runs the code): the app's own files are still packaged by
   chalice as usual, the dependencies are not.
"""

from __future__ import annotations

import json
import os
from typing import Any


def openapi3_body(params: dict[str, Any], **_: Any) -> None:
    body = params.get("body")
    if body is None:
        return
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    document = json.loads(text)
    if document.get("swagger") == "2.0":
        del document["swagger"]
        document["openapi"] = "3.0.1"
        document.setdefault("info", {}).setdefault("description", "")  # moto reads it unguarded
        params["body"] = json.dumps(document).encode("utf-8")
        params.pop("failOnWarnings", None)
        record = os.environ.get("SLUICE_STANDIN_RECORD_DIR")
        if record:  # moto keeps no authorizers: the test reads what chalice sent instead
            with open(os.path.join(record, "rest-api.json"), "w", encoding="utf-8") as handle:
                handle.write(text)


def lowercase_filter_names(params: dict[str, Any], **_: Any) -> None:
    configuration = params.get("NotificationConfiguration") or {}
    for entry in configuration.get("LambdaFunctionConfigurations", []):
        for rule in ((entry.get("Filter") or {}).get("Key") or {}).get("FilterRules", []):
            rule["Name"] = rule["Name"].lower()


def install() -> None:
    import botocore.session

    original = botocore.session.Session.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.register("before-parameter-build.apigateway.PutRestApi", openapi3_body)
        self.register("before-parameter-build.apigateway.ImportRestApi", openapi3_body)
        self.register("before-parameter-build.s3.PutBucketNotificationConfiguration", lowercase_filter_names)

    botocore.session.Session.__init__ = init  # type: ignore[method-assign]

    from chalice.deploy import packager

    def no_downloads(self: Any, abi: str, requirements_filepath: str, target_directory: str) -> None:
        os.makedirs(target_directory, exist_ok=True)

    packager.DependencyBuilder.build_site_packages = no_downloads  # type: ignore[method-assign]


if os.environ.get("SLUICE_MOTO_STANDIN") == "1":
    install()
