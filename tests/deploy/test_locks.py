"""The hashed locks are the resolution of pyproject.toml, and every install checks the hashes.

`make lock` writes both locks; after changing a pin in pyproject.toml (or merging branches that
did) run it, or these tests name what disagrees."""

from __future__ import annotations

import re

from tests.deploy.locks import Locked, disagreements, pyproject_pins, read, read_lock, stale
from tests.harness import ROOT

PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_every_pin_of_pyproject_is_in_the_lock_at_its_version_with_hashes() -> None:
    pins = pyproject_pins(PYPROJECT, extras=("dev",))
    assert "pytest" in pins
    assert "grpcio" in pins
    assert disagreements(pins, read(ROOT / "requirements.lock")) == []


def test_the_lock_holds_nothing_pyproject_no_longer_requires() -> None:
    pins = pyproject_pins(PYPROJECT, extras=("dev",))
    assert stale(pins, read(ROOT / "requirements.lock")) == []
    assert stale(pyproject_pins(PYPROJECT), read(ROOT / "requirements-runtime.lock")) == []


def test_the_stale_check_finds_an_entry_left_behind() -> None:
    lock = read_lock(
        "aiohttp==3.14.5 \\\n    # via saga (pyproject.toml)\n"
        "yarl==1.25.1 \\\n    # via\n    #   aiohttp\n    #   -c requirements.lock\n"
        "openai==3.51.0 \\\n    # via saga (pyproject.toml)\n"
        "httpx==0.28.1 \\\n    # via openai\n"
    )
    assert lock["yarl"].via == {"aiohttp", "-c requirements.lock"}
    assert stale({"aiohttp": "3.14.5", "openai": "3.51.0"}, lock) == []
    assert stale({"aiohttp": "3.14.5"}, lock) == ["httpx", "openai"]


def test_the_check_names_a_pin_the_lock_does_not_follow() -> None:
    lock = read_lock("grpcio==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\nprotobuf==2.0\n")
    pins = {"grpcio": "1.1", "protobuf": "2.0", "redis": "8.1.0", "loose": ""}
    assert disagreements(pins, lock) == [
        "loose is not pinned with == in pyproject.toml",
        "grpcio: pyproject.toml pins 1.1, the lock 1.0",
        "redis==8.1.0 is not in the lock",
        "protobuf has no --hash in the lock",
    ]


def test_the_runtime_lock_is_the_runtime_part_of_the_full_lock() -> None:
    full = read(ROOT / "requirements.lock")
    runtime = read(ROOT / "requirements-runtime.lock")
    assert disagreements(pyproject_pins(PYPROJECT), runtime) == []
    differing = {
        name: (entry, full.get(name))
        for name, entry in runtime.items()
        if full.get(name) is None or not _same_release(entry, full[name])
    }
    assert differing == {}
    # Nothing only the tests and the tools need goes into the image.
    assert not {"pytest", "mypy", "ruff", "hypothesis", "pip-audit"} & set(runtime)


def _same_release(runtime: Locked, full: Locked) -> bool:
    return runtime.version == full.version and runtime.hashes <= full.hashes


def test_the_lock_tools_are_hashed_too() -> None:
    tools = read(ROOT / "tools" / "uv-requirements.txt")
    assert set(tools) == {"uv"}
    assert tools["uv"].hashes


def test_every_install_checks_the_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if re.search(r"pip install", line)]
    assert installs
    assert all("--require-hashes" in line for line in installs), installs
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(
        r"pip install [^\n]*--require-hashes[^\n]*-r \S*requirements-runtime\.lock",
        dockerfile.replace("\\\n", " "),
    )
