"""Chalice's record of a stage, kept in the account so any machine can deploy.

`chalice deploy` remembers what it made (function ARNs, role names, the REST API id) in
`.chalice/deployed/<stage>.json`, a file git ignores. Deployed from a machine without it,
Chalice would try to create everything again (a second API; roles that already exist). So the
record is kept in SSM Parameter Store (`/<app>/<stage>/chalice-deployed`): `make infra` syncs it
(`sync`: the account's copy into the project, or the project's into the account when it is the
newer one, a `chalice deploy` run here by hand since), and `make deploy` saves it back after
`chalice deploy`, even when that failed half way (Chalice records what it made before the
failure). It holds ids and ARNs only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def parameter_name(app_name: str, stage: str) -> str:
    return f"/{app_name}/{stage}/chalice-deployed"


def record_path(project_dir: Path, stage: str) -> Path:
    return project_dir / ".chalice" / "deployed" / f"{stage}.json"


def fetch(ssm: Any, name: str) -> dict[str, Any] | None:
    """The record kept in the account, or None when there is none yet."""
    from botocore.exceptions import ClientError

    try:
        value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    return dict(json.loads(value))


def fetch_with_date(ssm: Any, name: str) -> tuple[dict[str, Any] | None, float]:
    """(the record kept in the account or None, when it was last written as a POSIX time)."""
    from botocore.exceptions import ClientError

    try:
        parameter = ssm.get_parameter(Name=name)["Parameter"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None, 0.0
        raise
    modified = parameter.get("LastModifiedDate")
    return dict(json.loads(parameter["Value"])), modified.timestamp() if modified is not None else 0.0


def restore(ssm: Any, name: str, path: Path) -> bool:
    """Write the account's record over the local one, unless the local one is newer."""
    record, written_at = fetch_with_date(ssm, name)
    if record is None:
        return False
    if path.exists():
        if json.loads(path.read_text(encoding="utf-8")) == record:
            return False
        if path.stat().st_mtime > written_at:
            return False  # a chalice deploy ran here since; `make deploy` saves it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return True


def sync(ssm: Any, name: str, path: Path) -> str:
    """Make the project's and the account's record the same, the newer one winning:
    "restored" (account -> project), "saved" (project -> account), "same" or "none"."""
    record, written_at = fetch_with_date(ssm, name)
    if record is None and not path.exists():
        return "none"
    if record is not None and path.exists() and json.loads(path.read_text(encoding="utf-8")) == record:
        return "same"
    if record is not None and (not path.exists() or path.stat().st_mtime <= written_at):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return "restored"
    save(ssm, name, path)
    return "saved"


def save(ssm: Any, name: str, path: Path) -> bool:
    """Keep the local record in the account (nothing to keep before the first deploy)."""
    if not path.exists():
        return False
    value = json.dumps(json.loads(path.read_text(encoding="utf-8")), separators=(",", ":"))
    ssm.put_parameter(
        Name=name,
        Value=value,
        Type="String",
        Overwrite=True,
        Tier="Intelligent-Tiering",  # standard (free) while under 4 KB
        Description="chalice deploy's record of this stage (written by deploy/deploy.py)",
    )
    return True
