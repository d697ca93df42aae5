"""The CA bundles a stage's database URLs name must be in the project and hold certificates, or
nothing is deployed.

The prod stage's URLs verify the server (`ssl=verify_identity`): RDS Proxy (MASTER_READ_URL, the
reads' last fallback) against the runtime's trust store (`ssl_ca=system`; the proxy's certificate
comes from ACM, which chains to Amazon's roots), the RDS instances (DATABASE_URL, the master's
instance endpoint; REPLICA_URLS) against the RDS CA bundle packaged with the app (`ssl_ca=rds`, the file
`chalicelib/db/certs/rds-global-bundle.pem`, see chalicelib/db/tls.py). A bundle that is missing or
unreadable would only show once in Lambda, as every route, the loader, the reconciler and migrate
failing when they connect: a total outage. So `make infra` and `make deploy` check it first, before
any AWS call (deploy.deploy.context_for): the file is there, Python's `ssl` loads it, and every
block in it is a CA certificate, at least one of them valid today.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BUNDLE_NAMES = {"rds": Path("chalicelib") / "db" / "certs" / "rds-global-bundle.pem"}
URL_VARIABLES = ("DATABASE_URL", "MASTER_READ_URL", "REPLICA_URLS")
HINT = "chalicelib/db/certs/README.md says where it comes from and how to extract it again"


class BundleMissing(RuntimeError):
    """A database URL names a CA bundle the project does not have, or one that is not usable."""


def bundles_named(env: Mapping[str, str]) -> set[str]:
    out = set()
    for name in URL_VARIABLES:
        for url in (env.get(name) or "").split(","):
            if url.strip():
                for ca in parse_qs(urlsplit(url.strip()).query).get("ssl_ca", []):
                    out.add(ca)
    return out


def stage_environments(stage_config: Mapping[str, object]) -> list[Mapping[str, str]]:
    """The stage's environment variables and each function's own (Chalice merges them)."""
    envs = [stage_config.get("environment_variables") or {}]
    functions = stage_config.get("lambda_functions") or {}
    assert isinstance(functions, Mapping)
    envs.extend((entry or {}).get("environment_variables") or {} for entry in functions.values())
    return [env for env in envs if isinstance(env, Mapping)]


def check_bundles(project_dir: Path, envs: Iterable[Mapping[str, str]], now: datetime | None = None) -> list[str]:
    """Raise BundleMissing unless every bundle the URLs name is usable; warnings for certificates
    in it that have expired since it was extracted."""
    warnings: list[str] = []
    named = set().union(*(bundles_named(env) for env in envs))
    for ca in sorted(named):
        path = BUNDLE_NAMES.get(ca)
        if path is not None:
            warnings += check_bundle(project_dir / path, path, now or datetime.now(UTC))
    return warnings


def check_bundle(file: Path, shown: Path, now: datetime) -> list[str]:
    from cryptography import x509

    if not file.is_file():
        raise BundleMissing(f"the database URLs verify against {shown}, which is missing; {HINT}")
    data = file.read_bytes()
    try:
        ssl.create_default_context(cafile=str(file))  # what the functions do with it (db/tls.py)
        certificates = x509.load_pem_x509_certificates(data)
    except (ssl.SSLError, ValueError) as exc:
        raise BundleMissing(f"{shown} does not parse as PEM certificates ({exc}); {HINT}") from exc
    if len(certificates) != data.count(b"-----BEGIN CERTIFICATE-----"):
        raise BundleMissing(f"{shown}: some of its PEM blocks are not certificates; {HINT}")
    for certificate in certificates:
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise BundleMissing(f"{shown} holds a certificate that is not a CA: {certificate.subject.rfc4514_string()}")
    expired = [c for c in certificates if c.not_valid_after_utc <= now]
    if len(expired) == len(certificates):
        raise BundleMissing(f"every certificate in {shown} has expired; {HINT}")
    return [f"{shown}: {c.subject.rfc4514_string()} expired on {c.not_valid_after_utc:%Y-%m-%d}" for c in expired]
