"""Command line: python -m chalicelib.cli {migrate,load,replay,token} (CONTRACT section 7).

Exit status 0 on success, 2 on bad arguments, 1 on failure with one clear line on stderr.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

from chalicelib.config import ConfigError, Settings


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m chalicelib.cli", description="Sluice operations.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    sub.add_parser("migrate", help="create or upgrade the schema at DATABASE_URL (idempotent)")

    load = sub.add_parser("load", help="load Firehose objects (files or s3://bucket/key)")
    load.add_argument("targets", nargs="+", metavar="PATH_OR_S3_URL")
    load.add_argument("--force", action="store_true", help="load even if the ledger has the object")

    replay = sub.add_parser("replay", help="load every object of an hour range")
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--bucket", help="the writes bucket")
    where.add_argument("--local", action="store_true", help="replay LOCAL_DATA_DIR instead of S3")
    replay.add_argument("--prefix", default="writes/")
    replay.add_argument("--since", help="first hour, YYYY-MM-DDTHH (UTC); default: the earliest object")
    replay.add_argument("--until", help="last hour, YYYY-MM-DDTHH (UTC, inclusive); default: now")
    replay.add_argument("--force", action="store_true", help="load even objects the ledger has")

    token = sub.add_parser("token", help="print an unsigned development token for chalice local")
    token.add_argument("--sub", required=True)
    token.add_argument("--username")
    token.add_argument("--email")
    token.add_argument("--groups", default="", help="comma-separated Cognito groups, e.g. admins")
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds until exp (default 12 h)")
    return parser


def b64_json(data: dict[str, object]) -> str:
    """`data` as compact JSON in unpadded base64url: one part of a JWT."""
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def make_token(sub: str, username: str | None, email: str | None, groups: list[str], ttl: int) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "cognito:username": username or sub,
        "token_use": "id",
        "iss": "https://cognito-idp.local/sluice-dev",
        "aud": "sluice-local",
        "iat": now,
        "exp": now + ttl,
    }
    if email:
        claims["email"] = email
        claims["email_verified"] = True
    if groups:
        claims["cognito:groups"] = groups
    return f"{b64_json({'alg': 'none', 'typ': 'JWT'})}.{b64_json(claims)}."


def _services(settings: Settings):  # type: ignore[no-untyped-def]
    from chalicelib.bootstrap import build
    from chalicelib.writers import CommandWriter

    class _NoWrites(CommandWriter):
        def write(self, commands):  # type: ignore[no-untyped-def]
            raise RuntimeError("the CLI does not accept writes")

    return build(settings, writer=_NoWrites())


def cmd_migrate(settings: Settings) -> str:
    from chalicelib.bootstrap import MIGRATE_CLI_SECONDS, migration_master

    # The loader's master (credentials from DATABASE_SECRET_ARN when set), waiting for a long ALTER.
    db = migration_master(settings, MIGRATE_CLI_SECONDS)
    applied = db.migrate()
    return f"migrated {db.url.redacted()}: " + (f"applied {applied}" if applied else "already up to date")


def _load_target(target: str, loader, force: bool):  # type: ignore[no-untyped-def]
    """Load one file or s3:// object, read as a stream (never whole in memory)."""
    from chalicelib.loader.sources import ObjectMissing, open_local_file

    if target.startswith("s3://"):
        from chalicelib.loader.sources import S3ObjectStore, s3_client

        bucket, _, key = target[5:].partition("/")
        if not bucket or not key:
            raise UsageError(f"{target!r} is not s3://bucket/key")
        store = S3ObjectStore(s3_client(), bucket)
        try:
            body, etag = store.open(key)
        except ObjectMissing as exc:
            raise RuntimeError(f"no such object: {target}") from exc
        return loader.load(bucket, key, etag, body, force=force)
    try:
        body, etag = open_local_file(target, target)
    except ObjectMissing as exc:
        reason = getattr(exc.__cause__, "strerror", None) or "no such file"
        raise RuntimeError(f"cannot read {target}: {reason}") from exc
    path = os.path.abspath(target).replace(os.sep, "/")
    index = path.rfind("/writes/")
    key = path[index + 1 :] if index >= 0 else os.path.basename(path)
    return loader.load("local", key, etag, body, force=force)


def cmd_load(settings: Settings, targets: Sequence[str], force: bool) -> str:
    from chalicelib.loader import LoadResult

    loader = _services(settings).loader
    total = LoadResult()
    for target in targets:
        total.add(_load_target(target, loader, force))
    if total.poisoned:
        raise RuntimeError(f"{_poisoned(total.poisoned)}; {total.line()}")
    return total.line()


def _poisoned(count: int) -> str:
    return (
        f"{count} poisoned object(s) left alone (their loads kept failing; see docs/operations.md): "
        "fix the cause, then load them again with --force"
    )


def cmd_replay(settings: Settings, args: argparse.Namespace) -> str:
    from chalicelib.loader.hours import covering_prefixes, parse_hour
    from chalicelib.loader.reconciler import reconcile
    from chalicelib.loader.sources import LocalObjectStore, ObjectStore, S3ObjectStore, s3_client

    try:
        until = parse_hour(args.until) if args.until else datetime.now(UTC)
        since = parse_hour(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if since is None and args.until:
        raise UsageError("--until needs --since")
    if since is not None and since > until:
        raise UsageError("--since is after --until")
    if not args.local and not args.bucket.strip():
        raise UsageError("--bucket must not be empty")
    prefix = args.prefix if args.prefix.endswith("/") else args.prefix + "/"
    store: ObjectStore = (
        LocalObjectStore(settings.local_data_dir) if args.local else S3ObjectStore(s3_client(), args.bucket)
    )
    prefixes = [prefix] if since is None else list(covering_prefixes(prefix, since, until))
    report = reconcile(store, _services(settings).loader, prefixes, force=args.force, source=None)
    if report.failed:
        raise RuntimeError(f"{report.failed} object(s) could not be read; {report.result.line()}")
    if report.poisoned:
        raise RuntimeError(f"{_poisoned(report.poisoned)}; {report.result.line()}")
    return report.result.line()


def main(argv: Sequence[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        # Standard error carries one line on failure (section 7): the loader's log records (a
        # poisoned object, a refused LOAD DATA) are for Lambda's logs; their outcome is printed.
        logging.getLogger("chalicelib").addHandler(logging.NullHandler())
    try:
        args = _parser().parse_args(argv)
        if args.command == "token":
            groups = [g.strip() for g in args.groups.split(",") if g.strip()]
            if not args.sub.strip():
                raise UsageError("--sub must not be empty")
            print(make_token(args.sub, args.username, args.email, groups, args.ttl))
            return 0
        settings = Settings.from_env()
        if args.command == "migrate":
            print(cmd_migrate(settings))
        elif args.command == "load":
            print(cmd_load(settings, args.targets, args.force))
        elif args.command == "replay":
            print(cmd_replay(settings, args))
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one clear line, no traceback
        message = " ".join(str(exc).split()) or exc.__class__.__name__
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
