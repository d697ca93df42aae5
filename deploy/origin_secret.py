"""The secret header CloudFront adds to every request it sends to the API (`X-Origin-Verify`).

The API's regional web ACL (data stack, `ApiWebAcl`) blocks any request to the stage without it,
so the execute-api URL cannot be used to go around CloudFront and its web ACL. The value lives in
SSM Parameter Store as a SecureString (`/<app>/<stage>/origin-verify`, JSON `{"current",
"previous"}`), made by the first `make infra`, and is passed to both stacks as NoEcho parameters.

Rotation (`make deploy DEPLOY_ARGS=--rotate-origin-secret`): a new `current` is made and the old
one kept as `previous`; the data stack then accepts both, the edge stack switches CloudFront to
the new one (and waits for the distribution), and only then is `previous` dropped and the data
stack updated again. No request from CloudFront is refused on the way.

A rotation that stopped half-way (the edge stack failed, the run was interrupted) leaves
`previous` set: the value CloudFront may still be sending. A new rotation then would drop it from
the web ACL before CloudFront stopped sending it, and every request would get a WAF 403, so
`ensure` refuses to start one (`RotationUnfinished`, before anything is changed). A run without
`--rotate-origin-secret` finishes the old rotation: the data stack still accepts both values,
the edge stack switches CloudFront to `current`, then `previous` is dropped.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HEADER = "X-Origin-Verify"


class RotationUnfinished(RuntimeError):
    """A rotation was asked for while the previous one has not finished."""


@dataclass(frozen=True)
class OriginSecret:
    current: str
    previous: str = ""


def parameter_name(app_name: str, stage: str) -> str:
    return f"/{app_name}/{stage}/origin-verify"


def new_value() -> str:
    return secrets.token_urlsafe(32)


def fetch(ssm: Any, name: str) -> OriginSecret | None:
    from botocore.exceptions import ClientError

    try:
        value = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    data = json.loads(value)
    return OriginSecret(current=data["current"], previous=data.get("previous", ""))


def store(ssm: Any, name: str, value: OriginSecret) -> None:
    ssm.put_parameter(
        Name=name,
        Value=json.dumps({"current": value.current, "previous": value.previous}),
        Type="SecureString",
        Overwrite=True,
        Description=f"{HEADER}: the header CloudFront sends and the API's web ACL requires (deploy/origin_secret.py)",
    )


def ensure(ssm: Any, name: str, rotate: bool, dry_run: bool, log: Callable[[str], None]) -> OriginSecret:
    """The value to deploy: the stored one, a new one on first use, or a rotation."""
    stored = fetch(ssm, name)
    if stored is None:
        value = OriginSecret(current=new_value())
        log(("would create " if dry_run else "created ") + f"SSM parameter {name}")
    elif rotate and stored.previous:
        raise RotationUnfinished(
            f"the last rotation of {name} has not finished: the API's web ACL still accepts the value "
            "before it, which CloudFront may still be sending. Run the deploy without "
            "--rotate-origin-secret to finish it (CloudFront is switched to the current value, then the "
            "old one is dropped), then rotate again"
        )
    elif rotate:
        value = OriginSecret(current=new_value(), previous=stored.current)
        log(
            ("would rotate " if dry_run else "rotating ")
            + f"{name}: the web ACL accepts both values until CloudFront sends the new one"
        )
    else:
        if stored.previous:
            log(f"{name}: finishing a rotation that did not complete (the web ACL accepts both values until then)")
        return stored
    if not dry_run:
        store(ssm, name, value)
    return value


def finish_rotation(ssm: Any, name: str) -> OriginSecret:
    """Forget `previous` (CloudFront sends `current` now)."""
    stored = fetch(ssm, name)
    assert stored is not None
    value = OriginSecret(current=stored.current)
    store(ssm, name, value)
    return value
