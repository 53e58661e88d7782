"""The lock files pin versions inside pyproject.toml's ranges, so that `make run` and `make test`
install exactly what was tested and it is what pyproject.toml allows."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pinned(lock: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / lock).read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version
    return found


@pytest.mark.parametrize(
    ("lock", "groups"), [("requirements.lock", []), ("requirements-test.lock", ["test"])]
)
def test_every_dependency_is_pinned_inside_its_range(lock: str, groups: list[str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for group in groups:
        wanted += [Requirement(r) for r in project["optional-dependencies"][group]]
    versions = pinned(lock)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in versions, f"{requirement.name} is not in {lock}: run `make lock`"
        outside = f"{lock} pins {requirement.name} {versions[name]}, outside {requirement.specifier}"
        assert requirement.specifier.contains(versions[name]), f"{outside}: run `make lock`"
