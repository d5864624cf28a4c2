"""The `data` agent: reference datasets shipped with the runtime, and `data.lookup`.

A dataset is a CSV file in `services/runtime/datasets/`: its name is the file's stem, its
first column is the key, every value is text. They are read once at start (a malformed file
stops the service: it ships with the code). `data.lookup` returns the records of the keys
asked for, in the order asked, and lists the keys it does not know; a key is a string, or an
object carrying the key column (so a step can pass `ledger.positions`' positions as they are).

Each dataset is a data source of the rights registry under its own name; since a step's
dataset is known only once its arguments are rendered, `data.lookup` declares them all.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import NotFound
from services.runtime.agents.local import LocalAgent, step_args_invalid
from services.runtime.agents.step import StepCall
from services.runtime.capabilities import Capability, FieldSpec

DATASETS_DIR = Path(__file__).resolve().parent.parent / "datasets"
MAX_KEYS = 1000


@dataclass(frozen=True)
class Dataset:
    """A reference table: records by key."""

    name: str
    key: str
    columns: tuple[str, ...]
    records: Mapping[str, Mapping[str, str]]


def parse_dataset(name: str, text: str) -> Dataset:
    """A dataset from CSV text with a header row; ValueError naming the line when malformed."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or len(set(header)) != len(header) or not all(header):
        raise ValueError(f"dataset {name}: the header must name distinct, non-empty columns")
    records: dict[str, dict[str, str]] = {}
    for row in reader:
        line = reader.line_num
        if len(row) != len(header):
            raise ValueError(
                f"dataset {name} line {line}: {len(row)} fields, expected {len(header)}"
            )
        if row[0] in records:
            raise ValueError(f"dataset {name} line {line}: key {row[0]!r} appears twice")
        records[row[0]] = dict(zip(header, row, strict=True))
    return Dataset(name, header[0], tuple(header), records)


def load_datasets(directory: Path = DATASETS_DIR) -> dict[str, Dataset]:
    """Every `*.csv` of `directory`, by name."""
    return {
        path.stem: parse_dataset(path.stem, path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.csv"))
    }


def lookup_capability(datasets: Mapping[str, Dataset]) -> Capability:
    """`data.lookup` over `datasets` (its sources are their names)."""
    return Capability(
        name="data.lookup",
        agent="data",
        description="Records of a shipped reference dataset by key (e.g. securities by symbol).",
        args=(
            FieldSpec(
                "dataset",
                "string",
                required=True,
                max_length=64,
                description=f"one of: {', '.join(sorted(datasets))}",
            ),
            FieldSpec(
                "keys",
                "array",
                required=True,
                max_length=MAX_KEYS,
                description="keys, or objects that carry the dataset's key column",
            ),
        ),
        outputs=(
            FieldSpec("dataset", "string", required=True),
            FieldSpec("records", "array", required=True, description="one per known key"),
            FieldSpec("missing", "array", required=True, description="keys not in the dataset"),
        ),
        retry_safe=True,
        sources=tuple(sorted(datasets)),
    )


def data_agent(datasets: Mapping[str, Dataset]) -> LocalAgent:
    """The `data` agent over `datasets`."""

    async def lookup(call: StepCall, args: Mapping[str, Any]) -> Mapping[str, Any]:
        dataset = datasets.get(args["dataset"])
        if dataset is None:
            raise NotFound(
                f"no dataset {args['dataset'][:64]!r} (known: {', '.join(sorted(datasets))})",
                reason="DATASET_NOT_FOUND",
                metadata={"dataset": args["dataset"][:64], "stepId": call.step_id},
            )
        keys: list[str] = []
        problems: list[tuple[str, str]] = []
        for i, key in enumerate(args["keys"]):
            if isinstance(key, Mapping):
                key = key.get(dataset.key)
            if isinstance(key, str):
                keys.append(key)
            else:
                problems.append(
                    (f"keys[{i}]", f"expected a string or an object with {dataset.key}")
                )
        if problems:
            raise step_args_invalid(call, problems)
        unique = list(dict.fromkeys(keys))
        return {
            "dataset": dataset.name,
            "records": [dict(dataset.records[k]) for k in unique if k in dataset.records],
            "missing": [k for k in unique if k not in dataset.records],
        }

    return LocalAgent("data", {lookup_capability(datasets): lookup})
