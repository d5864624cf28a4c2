"""What RunPattern checks before a run starts: inputs against the schema, asof, execution id."""

from __future__ import annotations

import datetime

import pytest

from services.common.errors import FieldViolation, InvalidArgument
from services.runtime.admission import check_execution_id, check_inputs, resolve_asof
from services.runtime.agents.llm import LLM_COMPLETE
from services.runtime.patterns import SAMPLES_DIR, load_patterns

CHAT = load_patterns([(SAMPLES_DIR, "samples")], {LLM_COMPLETE.name: LLM_COMPLETE}).patterns["chat"]


def test_valid_inputs_pass_and_an_empty_prompt_is_left_to_the_router() -> None:
    assert check_inputs(CHAT, {"prompt": "Hi", "system": "Be brief."}) == {
        "prompt": "Hi",
        "system": "Be brief.",
    }
    assert check_inputs(CHAT, {"prompt": ""}) == {"prompt": ""}


@pytest.mark.parametrize(
    ("inputs", "violations"),
    [
        ({}, [FieldViolation("inputs.prompt", "required")]),
        ({"prompt": 3.0}, [FieldViolation("inputs.prompt", "expected a string")]),
        (
            {"prompt": "x" * 100_001},
            [FieldViolation("inputs.prompt", "100001 characters; at most 100000")],
        ),
        (
            {"prompt": "Hi", "logprobs": True},
            [
                FieldViolation(
                    "inputs.logprobs",
                    "not an input of pattern chat (its inputs: prompt, system, messages, "
                    "max_tokens, temperature, top_p, stop, seed, presence_penalty, "
                    "frequency_penalty, user)",
                )
            ],
        ),
        (
            {"system": True},
            [
                FieldViolation("inputs.prompt", "required"),
                FieldViolation("inputs.system", "expected a string"),
            ],
        ),
    ],
)
def test_bad_inputs_are_invalid_with_one_violation_per_field(
    inputs: dict[str, object], violations: list[FieldViolation]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        check_inputs(CHAT, inputs)
    assert error.value.reason == "INPUT_INVALID"
    assert list(error.value.field_violations) == violations
    assert error.value.metadata == {"patternId": "chat"}


def test_asof_defaults_to_today_and_must_be_a_real_date() -> None:
    assert resolve_asof("", datetime.date(2025, 3, 4)) == "2025-03-04"
    assert resolve_asof("2024-02-29") == "2024-02-29"
    for bad in ("2023-02-29", "2024-2-1", "tomorrow", "2024-01-01T00:00"):
        with pytest.raises(InvalidArgument) as error:
            resolve_asof(bad)
        assert error.value.reason == "ASOF_INVALID"
        assert [v.field for v in error.value.field_violations] == ["asof"]


def test_an_asof_after_today_is_refused() -> None:
    today = datetime.date(2025, 3, 4)
    assert resolve_asof("2025-03-04", today) == "2025-03-04"
    with pytest.raises(InvalidArgument) as error:
        resolve_asof("2025-03-05", today)
    assert error.value.reason == "ASOF_INVALID"
    [violation] = error.value.field_violations
    assert (violation.field, "after today" in violation.description) == ("asof", True)


def test_execution_ids_are_exe_and_32_hex() -> None:
    good = "exe_" + "0123456789abcdef" * 2
    assert check_execution_id(good) == good
    for bad in ("", "exe_123", "req_" + "0" * 32, "exe_" + "A" * 32, good + "0"):
        with pytest.raises(InvalidArgument) as error:
            check_execution_id(bad)
        assert error.value.reason == "EXECUTION_ID_INVALID"
        assert [v.field for v in error.value.field_violations] == ["execution_id"]
