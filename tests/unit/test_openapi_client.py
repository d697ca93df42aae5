"""A client generated from the document stays small: errors are shared components (one `Error`
model, not one per operation and status), so openapi-python-client makes at most 40 models from
/openapi.json (it made 121 when each operation wrote its own error schemas)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib import openapi
from chalicelib.openapi_schemas import name_of
from chalicelib.resources import RESOURCES

MAX_MODELS = 40


def snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def test_a_generated_client_has_few_models(tmp_path: Path) -> None:
    tool = Path(sys.executable).with_name("openapi-python-client")
    if not tool.exists():
        pytest.fail("openapi-python-client is not installed: it is in requirements-dev.txt (make install)")
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(openapi.document()), encoding="utf-8")
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(tool), "generate", "--path", str(spec), "--output-path", str(tmp_path / "client"), "--meta", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    models = sorted(p.stem for p in (tmp_path / "client" / "models").glob("*.py") if p.stem != "__init__")
    assert len(models) <= MAX_MODELS, models
    assert "error" in models and not any("_response_" in m for m in models), models
    for resource in RESOURCES.values():
        assert snake(name_of(resource)) in models and f"{snake(name_of(resource))}_input" in models
    shutil.rmtree(tmp_path / "client")
