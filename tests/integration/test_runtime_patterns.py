"""Patterns from `runtime.patterns_dir` are served beside the shipped samples; a bad pattern
file is refused — logged and listed in ListPatterns with the file, the field and the reason —
while the runtime starts and serves the good ones (never a crash loop)."""

from __future__ import annotations

from pathlib import Path

from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
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
  summary: "{{state.summarise.text}}"
"""


async def listed_with(
    tmp_path: Path, files: dict[str, str]
) -> tuple[runtime_pb2.ListPatternsResponse, str]:
    """ListPatterns of a runtime started with `files` in its patterns directory, and its log."""
    patterns = tmp_path / "patterns"
    patterns.mkdir()
    for name, text in files.items():
        (patterns / name).write_text(text)
    async with stack_for(
        tmp_path, ["auth", "runtime"], SAGA_RUNTIME__PATTERNS_DIR=str(patterns)
    ) as stack:
        async with stack.channel_as("gateway", "runtime") as ch:
            listed = await runtime_pb2_grpc.RuntimeServiceStub(ch).ListPatterns(
                runtime_pb2.ListPatternsRequest(), timeout=5
            )
        return listed, stack.read_log("runtime")


async def test_user_patterns_are_listed_beside_the_samples(tmp_path: Path) -> None:
    listed, _ = await listed_with(tmp_path, {"summary.yaml": SUMMARY})
    assert [(p.pattern_id, p.source) for p in listed.patterns] == [
        ("chat", "samples/chat.yaml"),
        ("debate", "samples/debate.yaml"),
        ("embed", "samples/embed.yaml"),
        ("portfolio_overview", "samples/portfolio_overview.yaml"),
        ("portfolio_risk", "samples/portfolio_risk.yaml"),
        ("summary", "user/summary.yaml"),
        ("tool_call", "samples/tool_call.yaml"),
    ]
    assert list(listed.problems) == []


async def test_a_bad_pattern_file_is_refused_and_the_runtime_serves_the_others(
    tmp_path: Path,
) -> None:
    listed, log = await listed_with(
        tmp_path,
        {
            "summary.yaml": SUMMARY.replace("{{inputs.text}}", "{{inputs.txt}}"),
            "fine.yaml": SUMMARY.replace("id: summary", "id: fine"),
        },
    )
    assert [p.pattern_id for p in listed.patterns] == [
        "chat",
        "debate",
        "embed",
        "fine",
        "portfolio_overview",
        "portfolio_risk",
        "tool_call",
    ]
    [problem] = listed.problems
    assert (problem.source, problem.field) == ("user/summary.yaml", "steps.summarise.args.prompt")
    assert "refers to input 'txt', which the pattern does not declare" in problem.message
    assert "pattern refused" in log
    assert "user/summary.yaml" in log
    assert "Traceback" not in log
