"""A real `chalice local` process for tests that drive the API over HTTP (as `make run` does)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def chalice_local(data: Path, extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """Serve the app on the embedded defaults with LOCAL_DATA_DIR=data (and `extra_env` on top);
    yields (base URL, log)."""
    port = free_port()
    log_path = data / "chalice-local.log"
    env = {**os.environ, "LOCAL_DATA_DIR": str(data), "SLUICE_LOG": "0"}
    for name in ("DATABASE_URL", "REPLICA_URLS", "WRITE_TRANSPORT", "CACHE_URL", "AWS_LAMBDA_FUNCTION_NAME"):
        env.pop(name, None)
    env.update(extra_env or {})
    chalice = Path(sys.executable).with_name("chalice")
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(
            [str(chalice), "local", "--no-autoreload", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"chalice local died:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("chalice local did not answer /health")
        yield base, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
