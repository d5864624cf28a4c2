"""Running a benchmark module as its users do, for the smoke tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness import ROOT


def run_bench(module: str, args: str, tmp_path: Path, timeout: float = 240) -> Any:
    """`python -m module args --json …` in the repository; the JSON it wrote."""
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, "-m", module, *args.split(), "--json", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    return json.loads(out.read_text())
