"""The lock files agree with pyproject.toml and with what is installed.

pyproject.toml keeps ranges for people who use Waypost as a library; requirements/*.txt pin the
exact releases (with hashes) that scripts/start, scripts/test and so CI install. `scripts/lock`
refreshes the pins; these tests fail while the two disagree, so a dependency added, dropped or
narrowed in pyproject.toml without a refreshed lock cannot land."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
BUILD = [Requirement(line) for line in (ROOT / "requirements" / "build.in").read_text().splitlines()
         if line.strip() and not line.startswith("#")]
RUNTIME = [Requirement(r) for r in PYPROJECT["dependencies"]] + BUILD
TEST = RUNTIME + [Requirement(r) for r in PYPROJECT["optional-dependencies"]["test"]]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: int
    direct: bool  # pyproject.toml (or build.in) asks for it, not only another package

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def read_lock(name: str) -> list[Pin]:
    """Each `name==version [; marker]` entry with the count of its hashes and whether its
    `# via` annotation names Waypost's own project files."""
    pins: list[Pin] = []
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    for index, line in enumerate(lines):
        found = PIN.match(line)
        if not found:
            continue
        block = []
        for following in lines[index + 1:]:
            if PIN.match(following):
                break
            block.append(following)
        marker = found["marker"]
        pins.append(Pin(canonicalize_name(found["name"]), Version(found["version"]),
                        Marker(marker) if marker else None,
                        sum("--hash=sha256:" in b for b in block),
                        any("(pyproject.toml)" in b or "build.in" in b for b in block)))
    assert pins, f"no pins read from requirements/{name}"
    return pins


LOCKS = {"runtime.txt": RUNTIME, "test.txt": TEST}


@pytest.mark.parametrize("lock", LOCKS)
def test_every_dependency_is_pinned_within_its_range(lock: str) -> None:
    pins = read_lock(lock)
    for wanted in LOCKS[lock]:
        found = [p for p in pins if p.name == canonicalize_name(wanted.name)]
        assert found, f"{wanted} is in pyproject.toml but not in requirements/{lock}: run scripts/lock"
        for pin in found:
            assert wanted.specifier.contains(pin.version, prereleases=True), \
                f"requirements/{lock} pins {pin.name}=={pin.version}, outside {wanted}: run scripts/lock"


@pytest.mark.parametrize("lock", LOCKS)
def test_nothing_is_pinned_for_a_dependency_that_was_dropped(lock: str) -> None:
    asked = {canonicalize_name(r.name) for r in LOCKS[lock]}
    stale = [p.name for p in read_lock(lock) if p.direct and p.name not in asked]
    assert not stale, f"requirements/{lock} pins {stale} for pyproject.toml, which no longer asks: run scripts/lock"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_carries_hashes(lock: str) -> None:
    assert [p.name for p in read_lock(lock) if p.hashes == 0] == []


def test_runtime_and_test_locks_pin_the_same_releases() -> None:
    tested = {(p.name, p.marker and str(p.marker)): p.version for p in read_lock("test.txt")}
    differ = {(p.name, str(p.version)) for p in read_lock("runtime.txt")
              if tested.get((p.name, p.marker and str(p.marker))) != p.version}
    assert not differ, f"requirements/runtime.txt differs from the tested requirements/test.txt: {differ}"


def test_the_environment_running_the_tests_is_the_locked_one() -> None:
    """What was tested is what the lock says (scripts/test installs from it)."""
    wrong = {}
    for pin in read_lock("test.txt"):
        if not pin.applies():
            continue
        try:
            installed = Version(metadata.version(pin.name))
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            wrong[pin.name] = (str(installed), str(pin.version))
    assert not wrong, f"installed versions differ from requirements/test.txt (installed, locked): {wrong}"
