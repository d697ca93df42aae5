"""The CA bundles a stage's database URLs name must be in the project, or nothing is deployed.

The prod stage's URLs verify the server (`ssl=verify_identity`): RDS Proxy against the runtime's
trust store (`ssl_ca=system`; the proxy's certificate comes from ACM, which chains to Amazon's
roots), the replicas against the RDS CA bundle packaged with the app (`ssl_ca=rds`, the file
`chalicelib/db/certs/rds-global-bundle.pem`, see chalicelib/db/tls.py). A missing bundle would
only show as every read failing in Lambda, so `make infra` stops before writing the stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BUNDLE_NAMES = {"rds": Path("chalicelib") / "db" / "certs" / "rds-global-bundle.pem"}
FETCH_HINT = "curl -o chalicelib/db/certs/rds-global-bundle.pem https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"


class BundleMissing(RuntimeError):
    """A database URL names a CA bundle the project does not have."""


def bundles_named(env: Mapping[str, str]) -> set[str]:
    out = set()
    for name in ("DATABASE_URL", "REPLICA_URLS"):
        for url in (env.get(name) or "").split(","):
            if url.strip():
                for ca in parse_qs(urlsplit(url.strip()).query).get("ssl_ca", []):
                    out.add(ca)
    return out


def check_bundles(project_dir: Path, env: Mapping[str, str]) -> None:
    for ca in sorted(bundles_named(env)):
        path = BUNDLE_NAMES.get(ca)
        if path is not None and not (project_dir / path).is_file():
            raise BundleMissing(f"the database URLs verify against {path}, which is missing; fetch it: {FETCH_HINT}")
