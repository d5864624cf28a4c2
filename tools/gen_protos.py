"""Generate the Python code for every contract under protos/ (offline, reproducible).

Runs `grpc_tools.protoc` with the mypy-protobuf plugins, so `gen/python` holds messages,
gRPC stubs and typed `.pyi` stubs for both. The output directory is wiped first: a proto
that was deleted must not leave its module behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
# Vendored third-party protos are import paths only; their code ships in packages.
THIRD_PARTY = PROTO_ROOT / "third_party"


def proto_files() -> list[Path]:
    """Every Saga proto, sorted so that generation is reproducible."""
    return sorted(p for p in (PROTO_ROOT / "saga").rglob("*.proto"))


def generate(out: Path) -> None:
    """Write the generated tree for all protos into `out` (replacing what was there)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    bindir = Path(sys.executable).parent
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={include}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
    ]
    if THIRD_PARTY.exists():
        args.insert(2, f"--proto_path={THIRD_PARTY}")
    args += [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    """Command-line entry: `python -m tools.gen_protos --out gen/python`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "gen" / "python")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
