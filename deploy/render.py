"""Fill the committed templates from the data stack's outputs, and build what `chalice deploy` reads.

The committed `.chalice/config.json` (the deployed stage only) and `.chalice/policy-<stage>-*.json`
hold placeholders `${Name}`, where `Name` is an output of the data stack or one of the deployment's
own values (`Partition`, `Region`, `AccountId`, `Stage`, `AppName`). Nobody edits the filled values:
the deploy step renders them into a build copy of the project (`build/deploy-<stage>/`, ignored by
git) and runs `chalice deploy` there, so the work tree never holds account-specific values.

A value that is a comma-separated list in the outputs (`PrivateSubnetIds`, `ReplicaEndpoints`)
expands: inside a JSON list, a string naming it becomes one string per item; anywhere else, the
renderings are joined with commas. So `["${PrivateSubnetIds}"]` is the list of subnet ids, and
`"mysql://${ReplicaEndpoints}:${DatabasePort}/..."` one URL per replica, comma-separated.
IAM policy variables such as `${aws:username}` contain a colon and are left alone.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")
LIST_OUTPUTS = frozenset({"PrivateSubnetIds", "ReplicaEndpoints"})
# Outputs that exist only under a template condition: absent means "not configured".
OPTIONAL_OUTPUTS: Mapping[str, str] = {"CacheUrl": "", "CacheEndpoint": ""}
# What chalice packages (app.py, chalicelib/, vendor/, requirements.txt); nothing else is copied.
PROJECT_ENTRIES = ("app.py", "requirements.txt", "chalicelib", "vendor")

Variables = Mapping[str, "str | tuple[str, ...]"]


class RenderError(ValueError):
    """A template names a value the deployment does not have, or is malformed."""


def template_variables(
    outputs: Mapping[str, str],
    *,
    partition: str,
    region: str,
    account_id: str,
    stage: str,
    app_name: str,
) -> dict[str, str | tuple[str, ...]]:
    """Every value a template may name: the data stack's outputs and the deployment's own."""
    values: dict[str, str | tuple[str, ...]] = dict(OPTIONAL_OUTPUTS)
    values.update(outputs)
    for name in LIST_OUTPUTS:
        raw = values.get(name)
        if isinstance(raw, str):
            values[name] = tuple(item.strip() for item in raw.split(",") if item.strip())
    values.update(Partition=partition, Region=region, AccountId=account_id, Stage=stage, AppName=app_name)
    return values


def render_string(text: str, variables: Variables) -> list[str]:
    """One rendering of `text`, or one per item when it names a list value."""
    names = PLACEHOLDER.findall(text)
    missing = sorted({n for n in names if n not in variables})
    if missing:
        raise RenderError(f"{text!r} names {', '.join(missing)}, which the deployment does not provide")
    lists = sorted({n for n in names if isinstance(variables[n], tuple)})
    if len(lists) > 1:
        raise RenderError(f"{text!r} names more than one list value ({', '.join(lists)})")

    def fill(item: str | None) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            found = variables[name]
            return item if isinstance(found, tuple) and item is not None else str(found)

        return PLACEHOLDER.sub(value, text)

    if not lists:
        return [fill(None)]
    items = variables[lists[0]]
    assert isinstance(items, tuple)
    return [fill(item) for item in items]


def render(value: Any, variables: Variables) -> Any:
    """`value` (JSON data) with every placeholder filled; dictionary keys are not templates."""
    if isinstance(value, str):
        return ",".join(render_string(value, variables))
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            if isinstance(item, str):
                out.extend(render_string(item, variables))
            else:
                out.append(render(item, variables))
        return out
    if isinstance(value, dict):
        return {key: render(inner, variables) for key, inner in value.items()}
    return value


def placeholders(value: Any) -> set[str]:
    """Every placeholder name in JSON data (to check a template before any AWS call)."""
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    return set()


def render_stage_config(config: Mapping[str, Any], stage: str, variables: Variables) -> dict[str, Any]:
    """config.json with `stage` filled; other stages are kept as they are.

    An environment variable that renders empty (an optional output that is absent, such as
    CACHE_URL without the cache) is left out, so the application sees it unset.
    """
    stages = config.get("stages", {})
    if stage not in stages:
        raise RenderError(f".chalice/config.json has no stage {stage!r}")
    rendered = copy.deepcopy(dict(config))
    filled = render(stages[stage], variables)
    for scope in [filled, *filled.get("lambda_functions", {}).values()]:
        env = scope.get("environment_variables")
        if isinstance(env, dict):
            scope["environment_variables"] = {k: v for k, v in env.items() if v != ""}
    rendered["stages"][stage] = filled
    return rendered


def policy_files(config: Mapping[str, Any], stage: str) -> dict[str, str]:
    """Function name -> the policy file (relative to .chalice/) Chalice will read for it."""
    stage_config = config.get("stages", {}).get(stage, {})
    if stage_config.get("autogen_policy", config.get("autogen_policy", True)):
        return {}
    default = stage_config.get("iam_policy_file") or f"policy-{stage}.json"
    functions = stage_config.get("lambda_functions", {})
    return {name: entry.get("iam_policy_file") or default for name, entry in functions.items()}


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def render_policies(project_dir: Path, config: Mapping[str, Any], stage: str, variables: Variables) -> dict[str, Any]:
    """File name -> the filled policy document, for every policy file the stage names."""
    out: dict[str, Any] = {}
    for name in sorted(set(policy_files(config, stage).values())):
        out[name] = render(load_json(project_dir / ".chalice" / name), variables)
    return out


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def build_project(project_dir: Path, build_dir: Path, config: Mapping[str, Any], policies: Mapping[str, Any]) -> Path:
    """A copy of what Chalice packages, with the rendered config and policies, in `build_dir`.

    `.chalice/deployed/` (Chalice's record of what it deployed) is a link to the project's own,
    so that every deployment, from here or not, sees the same record.
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*cache*")
    for entry in PROJECT_ENTRIES:
        source, target = project_dir / entry, build_dir / entry
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target)
    chalice_dir = build_dir / ".chalice"
    chalice_dir.mkdir(exist_ok=True)
    for stale in chalice_dir.glob("*.json"):
        stale.unlink()
    _write_json(chalice_dir / "config.json", config)
    for name, document in policies.items():
        _write_json(chalice_dir / name, document)
    record = project_dir / ".chalice" / "deployed"
    record.mkdir(parents=True, exist_ok=True)
    link = chalice_dir / "deployed"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    os.symlink(record.resolve(), link, target_is_directory=True)
    return build_dir
