"""Read pyproject.toml pins and the hashed requirement locks `make lock` writes."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (`PyJWT` is `pyjwt`, `a_b` is `a-b`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


PROJECT = "saga (pyproject.toml)"
"""How uv's `# via` annotation names a requirement of pyproject.toml itself."""


@dataclass(frozen=True)
class Locked:
    """One entry of a lock: the pinned version, the sha256 of every file it may install, and
    what required it (uv's `# via` annotation: package names, or `PROJECT`)."""

    version: str
    hashes: frozenset[str]
    via: frozenset[str] = frozenset()


def read_lock(text: str) -> dict[str, Locked]:
    """The entries of a requirements file in `pip-compile --generate-hashes` form, by name."""
    entries: dict[str, Locked] = {}
    name = ""
    version = ""
    hashes: set[str] = set()
    via: set[str] = set()
    for line in [*text.splitlines(), "end==0"]:
        entry = _ENTRY.match(line)
        if entry:
            if name:
                entries[canonical(name)] = Locked(version, frozenset(hashes), frozenset(via))
            name, version, hashes, via = entry[1], entry[2], set(), set()
        hashes.update(_HASH.findall(line))
        if name and (by := re.fullmatch(r"\s+#\s+(?:via\s+)?(.+?)\s*", line)) and by[1] != "via":
            via.add(by[1] if by[1] == PROJECT or by[1].startswith("-") else canonical(by[1]))
    return entries


def stale(pins: dict[str, str], lock: dict[str, Locked]) -> list[str]:
    """Entries nothing pinned requires any more: neither a pin of pyproject.toml nor, by the
    lock's own `# via` annotations, a dependency of one (a pin removed, the lock not redone)."""
    needed = {name for name in lock if name in pins}
    while grown := {name for name, e in lock.items() if name not in needed and e.via & needed}:
        needed |= grown
    return sorted(set(lock) - needed)


def pyproject_pins(text: str, extras: tuple[str, ...] = ()) -> dict[str, str]:
    """`name == version` of every dependency pyproject.toml declares (and of `extras`);
    a dependency that is not pinned with `==` maps to "" so a check can name it."""
    project = tomllib.loads(text)["project"]
    declared = list(project["dependencies"])
    for extra in extras:
        declared += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for requirement in declared:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)\s*", requirement)
        if match:
            pins[canonical(match[1])] = match[2]
        else:
            pins[canonical(re.split(r"[\s<>=!~;\[]", requirement.strip())[0])] = ""
    return pins


def disagreements(pins: dict[str, str], lock: dict[str, Locked]) -> list[str]:
    """What keeps `lock` from being the resolution of `pins`: a pin missing from it or at
    another version, an unpinned requirement, an entry without a hash."""
    problems = [
        f"{name} is not pinned with == in pyproject.toml" for name, v in pins.items() if not v
    ]
    for name, version in pins.items():
        if version and name not in lock:
            problems.append(f"{name}=={version} is not in the lock")
        elif version and lock[name].version != version:
            problems.append(f"{name}: pyproject.toml pins {version}, the lock {lock[name].version}")
    problems += [f"{name} has no --hash in the lock" for name, e in lock.items() if not e.hashes]
    return problems


def read(path: Path) -> dict[str, Locked]:
    """`read_lock` of a file."""
    return read_lock(path.read_text())
