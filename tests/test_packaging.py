"""The install stays green: bounded dependencies, and pinned versions that satisfy them."""
from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        found += [Requirement(r) for r in extra if not r.startswith("vidcli")]
    return found


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = Version(version)
    return out


def test_every_dependency_has_an_upper_bound():
    unbounded = [str(r) for r in requirements() if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)]
    assert unbounded == []


def test_the_pinned_versions_satisfy_the_bounds():
    pinned = pins()
    missing = [r.name for r in requirements() if r.name.lower() not in pinned]
    assert missing == []
    outside = [f"{r} but {pinned[r.name.lower()]}" for r in requirements()
               if not r.specifier.contains(pinned[r.name.lower()], prereleases=True)]
    assert outside == []
