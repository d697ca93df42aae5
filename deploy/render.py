"""Fill the committed templates from the data stack's outputs into the files `chalice deploy` reads.

The stage templates (`.chalice/templates/stage-<stage>.json`) and policy templates
(`.chalice/templates/policy-<stage>-*.json`) hold placeholders `${Name}`, where `Name` is an output
of the data stack or one of the deployment's own values (`Partition`, `Region`, `AccountId`,
`Stage`, `AppName`). `make infra` renders them into the project's own `.chalice/config.json`
(that stage only; the other stages are kept as they are) and `.chalice/policy-<stage>-*.json`
(ignored by git), so a plain `chalice deploy --stage <stage>` deploys from the project folder.

A value that is a comma-separated list in the outputs (`PrivateSubnetIds`, `ReplicaEndpoints`)
expands: inside a JSON list, a string naming it becomes one string per item; anywhere else, the
renderings are joined with commas. So `["${PrivateSubnetIds}"]` is the list of subnet ids, and
`"mysql://${ReplicaEndpoints}:${DatabasePort}/..."` one URL per replica, comma-separated.
IAM policy variables such as `${aws:username}` contain a colon and are left alone.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")
LIST_OUTPUTS = frozenset({"PrivateSubnetIds", "ReplicaEndpoints"})
# Outputs that exist only under a template condition: absent means "not configured".
OPTIONAL_OUTPUTS: Mapping[str, str] = {"CacheUrl": "", "CacheEndpoint": "", "AlarmEmail": ""}

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


TEMPLATE_DIR = Path(".chalice") / "templates"


def stage_template_path(project_dir: Path, stage: str) -> Path:
    return project_dir / TEMPLATE_DIR / f"stage-{stage}.json"


def template_config(project_dir: Path) -> dict[str, Any]:
    """`.chalice/config.json` with every stage template in place of that stage (placeholders kept)."""
    config = load_json(project_dir / ".chalice" / "config.json")
    config.setdefault("stages", {})
    for path in sorted((project_dir / TEMPLATE_DIR).glob("stage-*.json")):
        config["stages"].update(load_json(path).get("stages", {}))
    return dict(config)


def write_stage(project_dir: Path, rendered: Mapping[str, Any], stage: str, policies: Mapping[str, Any]) -> list[Path]:
    """The rendered stage into the project's `.chalice/config.json` (other stages untouched) and
    the rendered policies beside it; returns the files written."""
    config_path = project_dir / ".chalice" / "config.json"
    config = load_json(config_path)
    config.setdefault("stages", {})[stage] = rendered["stages"][stage]
    written = [config_path]
    _write_json(config_path, config)
    for name, document in policies.items():
        _write_json(project_dir / ".chalice" / name, document)
        written.append(project_dir / ".chalice" / name)
    return written


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def render_policies(project_dir: Path, config: Mapping[str, Any], stage: str, variables: Variables) -> dict[str, Any]:
    """File name -> the filled policy document, for every policy file the stage names."""
    out: dict[str, Any] = {}
    for name in sorted(set(policy_files(config, stage).values())):
        out[name] = render(load_json(project_dir / TEMPLATE_DIR / name), variables)
    return out


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
