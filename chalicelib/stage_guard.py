"""A stage without its infrastructure never becomes a Lambda function that accepts writes.

The local write transport (the embedded default) keeps each accepted write in `LOCAL_DATA_DIR`.
In Lambda that is the function's own temporary folder: every write answered 202 would be lost.
So, at import of app.py:

- under `chalice deploy` or `chalice package` of a stage whose configuration does not write to
  Firehose (the `dev` stage, or `prod` before `make infra` wrote its outputs), the command stops
  with one line naming the fix (`SystemExit`: no traceback, nothing deployed);
- inside Lambda with any transport but Firehose, the import fails, so the function answers
  nothing at all rather than accept writes it cannot keep. "Inside Lambda" is what Lambda's
  runtime sets, `AWS_EXECUTION_ENV=AWS_Lambda_<runtime>`, not `AWS_LAMBDA_FUNCTION_NAME` alone
  (tests and benchmarks set that one to import the app as Lambda would, with the local transport).

`chalice local` and the test client are untouched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

DEPLOY_COMMANDS = frozenset({"deploy", "package"})


class StageWithoutInfrastructure(RuntimeError):
    """The function runs in Lambda with a transport that would lose writes."""


def transport(env: Mapping[str, str]) -> str:
    return env.get("WRITE_TRANSPORT", "").strip().lower() or "local"


def chalice_command() -> tuple[str | None, str | None]:
    """(command, stage) of the running chalice CLI command, or (None, None) outside one."""
    try:
        import click
    except ImportError:  # pragma: no cover - chalice depends on click
        return None, None
    ctx: Any = click.get_current_context(silent=True)
    if ctx is None:
        return None, None
    return ctx.info_name, (ctx.params or {}).get("stage")


def check(env: Mapping[str, str] | None = None, command: tuple[str | None, str | None] | None = None) -> None:
    env = os.environ if env is None else env
    if transport(env) == "firehose":
        return
    if env.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_"):
        raise StageWithoutInfrastructure(
            f"WRITE_TRANSPORT={transport(env)} in Lambda would lose every write; "
            "deploy a stage configured by `make infra` (WRITE_TRANSPORT=firehose)"
        )
    name, stage = command if command is not None else chalice_command()
    if name in DEPLOY_COMMANDS:
        stage = stage or "dev"
        raise SystemExit(
            f"chalice {name}: stage {stage!r} has no infrastructure (WRITE_TRANSPORT is not firehose, so "
            f"every write would be lost in Lambda); stages with infrastructure are deployed with "
            f"`make infra STAGE=<stage>` then `chalice deploy --stage <stage>` (prod: .chalice/templates/)"
        )
