"""The contract gates: generated code is current, buf lint and buf breaking pass — and each
gate fails when it should (a gate that cannot fail proves nothing)."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT

BUF = ROOT / "node_modules" / ".bin" / "buf"


def generate(protos: Path, out: Path) -> None:
    code = (
        "import sys, tools.gen_protos as g; from pathlib import Path; "
        "g.PROTO_ROOT = Path(sys.argv[1]); g.THIRD_PARTY = g.PROTO_ROOT / 'third_party'; "
        "g.generate(Path(sys.argv[2]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(protos), str(out)], cwd=ROOT, check=True, timeout=120
    )


def tree_diff(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two trees (ignoring caches)."""

    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    left, right = files(a), files(b)
    differ = sorted(left ^ right)
    differ += [f for f in sorted(left & right) if not filecmp.cmp(a / f, b / f, shallow=False)]
    return differ


def copy_protos(tmp: Path) -> Path:
    shutil.copytree(ROOT / "protos", tmp / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp / "buf.yaml")
    return tmp / "protos"


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_generated_code_is_current(tmp_path: Path) -> None:
    generate(ROOT / "protos", tmp_path / "gen")
    stale = tree_diff(ROOT / "gen" / "python", tmp_path / "gen")
    assert stale == [], f"gen/python is stale, run `make gen`: {stale}"


def test_stale_check_notices_a_proto_change(tmp_path: Path) -> None:
    protos = copy_protos(tmp_path)
    vault = protos / "saga" / "vault" / "v1" / "vault.proto"
    vault.write_text(
        vault.read_text() + "\n// a changed contract\nmessage Added { string x = 1; }\n"
    )
    generate(protos, tmp_path / "gen")
    assert tree_diff(ROOT / "gen" / "python", tmp_path / "gen") != []


def test_buf_lint_passes() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_fails_on_a_bad_proto(tmp_path: Path) -> None:
    protos = copy_protos(tmp_path)
    bad = protos / "saga" / "vault" / "v1" / "vault.proto"
    bad.write_text(bad.read_text() + "\nenum color { RED = 0; }\n")
    result = buf("lint", cwd=tmp_path)
    assert result.returncode != 0
    assert "color" in result.stdout + result.stderr


def test_buf_breaking_passes_against_the_baseline() -> None:
    result = buf("breaking", "--against", "protos/baseline.binpb")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_fails_on_a_removed_field(tmp_path: Path) -> None:
    protos = copy_protos(tmp_path)
    events = protos / "saga" / "execution" / "v1" / "events.proto"
    text = events.read_text()
    changed = text.replace("string text = 2;", "string renamed_text = 2;", 1)
    assert changed != text
    events.write_text(changed)
    result = buf("breaking", "--against", str(ROOT / "protos" / "baseline.binpb"), cwd=tmp_path)
    assert result.returncode != 0
