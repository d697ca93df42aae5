"""A profile's `timezone` is a canonical IANA name from the tzdata package's own list (CONTRACT
section 3): the host's zone files never decide, and `localtime`, `posixrules`, `Factory`, paths
and file names of a zoneinfo folder are not zone names."""

from __future__ import annotations

import json
import subprocess
import sys
import zoneinfo
from importlib import resources
from pathlib import Path

import pytest

from chalicelib.models import Invalid, time_zones, validate_profile

ROOT = Path(__file__).resolve().parents[2]


def zone_ok(zone: object) -> bool:
    try:
        validate_profile({"display_name": "x", "timezone": zone})
    except Invalid as exc:
        assert list(exc.fields) == ["timezone"]
        return False
    return True


@pytest.mark.parametrize(
    "zone", ["UTC", "Etc/UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Asia/Kolkata"]
)
def test_iana_names_are_accepted(zone: str) -> None:
    assert zone_ok(zone)


@pytest.mark.parametrize(
    "zone",
    [
        "localtime",
        "posixrules",
        "Factory",
        "/etc/localtime",
        "/usr/share/zoneinfo/Europe/Paris",
        "../../../etc/passwd",
        "Europe/../UTC",
        "Europe//Paris",
        "./UTC",
        "posix/Europe/Paris",
        "right/UTC",
        "zone.tab",
        "zone1970.tab",
        "iso3166.tab",
        "tzdata.zi",
        "leapseconds",
        "+VERSION",
        "europe/paris",
        "EUROPE/PARIS",
        "UTC ",
        " UTC",
        "Europe/Paris\x00",
        "Europe/Paris\n",
        "Mars/Olympus",
        "",
        "\uff35\uff34\uff23",  # fullwidth UTC
    ],
)
def test_other_names_are_rejected(zone: str) -> None:
    assert not zone_ok(zone)


def test_every_accepted_name_loads_with_zoneinfo() -> None:
    zones = time_zones()
    assert len(zones) > 400 and "Factory" not in zones and "localtime" not in zones
    for zone in sorted(zones):
        zoneinfo.ZoneInfo(zone)  # raises for a name it cannot load


CHECK = """
import json, sys
from chalicelib.models import Invalid, validate_profile
out = {}
for zone in sys.argv[1:]:
    try:
        validate_profile({"display_name": "x", "timezone": zone})
        out[zone] = True
    except Invalid:
        out[zone] = False
print(json.dumps(out))
"""


@pytest.mark.parametrize("host", ["none", "extra"])
def test_validity_does_not_depend_on_the_hosts_zone_files(tmp_path: Path, host: str) -> None:
    # GIVEN a host whose zoneinfo folder is empty, or holds names of its own beside real zones
    folder = tmp_path / "zoneinfo"
    folder.mkdir()
    if host == "extra":
        tzif = resources.files("tzdata").joinpath("zoneinfo", "Europe", "Paris").read_bytes()  # any TZif file
        for name in ("localtime", "posixrules", "Mars/Olympus", "Europe/Paris", "UTC"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(tzif)
    zones = ["UTC", "Europe/Paris", "localtime", "posixrules", "Mars/Olympus"]
    env = {"PYTHONTZPATH": str(folder), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, *zones], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # THEN the answer is tzdata's, whatever the host holds
    assert json.loads(done.stdout) == {
        "UTC": True,
        "Europe/Paris": True,
        "localtime": False,
        "posixrules": False,
        "Mars/Olympus": False,
    }
