"""`make sbom` writes a CycloneDX SBOM naming every package the image installs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.deploy.locks import canonical, read
from tests.harness import ROOT


def test_make_sbom_lists_every_runtime_package_with_its_hashes(tmp_path: Path) -> None:
    out = tmp_path / "sbom.json"
    subprocess.run(
        ["make", "--no-print-directory", "-s", "sbom", f"SBOM={out}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    bom = json.loads(out.read_text())
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["metadata"]["component"]["name"] == "saga"
    listed = {
        canonical(c["name"]): (
            c["version"],
            {
                h["content"]
                for ref in c.get("externalReferences", [])
                for h in ref.get("hashes", [])
            },
        )
        for c in bom["components"]
    }
    runtime = read(ROOT / "requirements-runtime.lock")
    assert {name: (e.version, set(e.hashes)) for name, e in runtime.items()} == listed
    assert "pytest" not in listed
