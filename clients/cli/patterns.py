"""`saga patterns list` and `saga patterns show ID`: what a caller can run and what to send.

`list` prints each pattern with its inputs and whether it reads pack data, then the pattern
files the runtime refused, with the field and the reason (exit 0: the listing worked).
`show` prints one pattern: its inputs (type, required, description), its steps (capability,
dependencies, `when`, policy) and where it was loaded from.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf import json_format

from clients.cli import arguments
from clients.cli.output import table, to_json
from clients.cli.settings import Metadata
from saga.gateway.v1 import patterns_pb2, patterns_pb2_grpc
from saga.runtime.v1 import runtime_pb2


def add_parsers(
    sub: argparse._SubParsersAction[arguments.Parser], common: arguments.Parser
) -> None:
    """Register `saga patterns list|show`."""
    patterns = sub.add_parser("patterns", help="the patterns you can run")
    psub = patterns.add_subparsers(dest="patterns_command", required=True)
    psub.add_parser("list", parents=[common], help="every pattern, and refused pattern files")
    show = psub.add_parser("show", parents=[common], help="one pattern's inputs and steps")
    show.add_argument("pattern_id")


def _inputs(pattern: runtime_pb2.Pattern) -> dict[str, dict[str, object]]:
    schema = json_format.MessageToDict(pattern.input_schema)
    properties: dict[str, dict[str, object]] = schema.get("properties", {})
    required = set(schema.get("required", []))
    # A Struct keeps no order: required inputs first, then by name.
    names = sorted(properties, key=lambda name: (name not in required, name))
    return {name: properties[name] | {"required": name in required} for name in names}


async def patterns(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga patterns list|show`."""
    stub = patterns_pb2_grpc.PatternServiceStub(channel)
    if args.patterns_command == "show":
        reply = await stub.GetPattern(
            patterns_pb2.GetPatternRequest(pattern_id=args.pattern_id), metadata=md, timeout=30
        )
        if args.json:
            print(to_json(reply))
            return 0
        _show(reply.pattern)
        return 0
    listed = await stub.ListPatterns(patterns_pb2.ListPatternsRequest(), metadata=md, timeout=30)
    if args.json:
        print(to_json(listed))
        return 0
    rows = [
        (
            p.pattern_id,
            ", ".join(
                f"{name}{'' if spec['required'] else '?'}" for name, spec in _inputs(p).items()
            )
            or "-",
            "yes" if p.requires_pack else "no",
            p.description,
        )
        for p in listed.patterns
    ]
    print(table(("PATTERN", "INPUTS (? optional)", "PACK", "DESCRIPTION"), rows))
    if listed.problems:
        print("\nrefused pattern files:", file=sys.stderr)
        for problem in listed.problems:
            print(f"  {problem.source}: {problem.field}: {problem.message}", file=sys.stderr)
    return 0


def _show(pattern: runtime_pb2.Pattern) -> None:
    print(f"{pattern.pattern_id}: {pattern.description}")
    print(f"source {pattern.source} · requires_pack {'yes' if pattern.requires_pack else 'no'}")
    inputs = [
        (
            name,
            str(spec.get("type", "")),
            "yes" if spec["required"] else "no",
            str(spec.get("description", "")),
        )
        for name, spec in _inputs(pattern).items()
    ]
    print()
    print(table(("INPUT", "TYPE", "REQUIRED", "DESCRIPTION"), inputs) if inputs else "no inputs")
    steps = [
        (
            s.step_id,
            s.capability,
            ", ".join(s.depends_on) or "-",
            s.when or "-",
            _policy(s),
        )
        for s in pattern.steps
    ]
    print()
    print(table(("STEP", "CAPABILITY", "AFTER", "WHEN", "POLICY"), steps))


def _policy(step: runtime_pb2.PatternStep) -> str:
    parts = []
    if step.as_name:
        parts.append(f"as {step.as_name}")
    if step.timeout_ms:
        parts.append(f"timeout {step.timeout_ms / 1000:g} s")
    if step.retry_attempts:
        parts.append(f"{step.retry_attempts} tries")
    if step.on_error == "continue":
        parts.append("on error continue")
    return ", ".join(parts) or "-"
