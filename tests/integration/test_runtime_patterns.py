"""Patterns from `runtime.patterns_dir` are served beside the shipped samples; a bad pattern
file stops the runtime at start (exit 78) with a message naming the file and the field."""

from __future__ import annotations

import asyncio
from pathlib import Path

from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from services.common.config import EXIT_CONFIG
from tests.harness import stack_for

SUMMARY = """
id: summary
description: Summarise a text in one paragraph.
inputs:
  text: {type: string, required: true, max_length: 20000}
steps:
  - id: summarise
    capability: llm.complete
    args:
      prompt: "Summarise in one paragraph: {{inputs.text}}"
      system: You write short summaries.
outputs:
  summary: "{{steps.summarise.text}}"
"""


async def test_user_patterns_are_listed_beside_the_samples(tmp_path: Path) -> None:
    patterns = tmp_path / "patterns"
    patterns.mkdir()
    (patterns / "summary.yaml").write_text(SUMMARY)
    async with stack_for(
        tmp_path, ["auth", "runtime"], SAGA_RUNTIME__PATTERNS_DIR=str(patterns)
    ) as stack:
        async with stack.channel_as("gateway", "runtime") as ch:
            listed = await runtime_pb2_grpc.RuntimeServiceStub(ch).ListPatterns(
                runtime_pb2.ListPatternsRequest(), timeout=5
            )
        assert [(p.pattern_id, p.source) for p in listed.patterns] == [
            ("chat", "samples/chat.yaml"),
            ("summary", "user/summary.yaml"),
        ]


async def test_a_bad_pattern_file_stops_the_runtime_naming_file_and_field(tmp_path: Path) -> None:
    patterns = tmp_path / "patterns"
    patterns.mkdir()
    (patterns / "summary.yaml").write_text(SUMMARY.replace("{{inputs.text}}", "{{inputs.txt}}"))
    async with stack_for(tmp_path, [], SAGA_RUNTIME__PATTERNS_DIR=str(patterns)) as stack:
        process = stack.start("runtime")
        code = await asyncio.to_thread(process.wait, 30)
        log = stack.read_log("runtime")
        assert code == EXIT_CONFIG, log
        assert str(patterns / "summary.yaml") in log
        assert "steps.summarise.args.prompt" in log
        assert "refers to input 'txt', which the pattern does not declare" in log
        assert "Traceback" not in log
