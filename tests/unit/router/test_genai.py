"""The `gen_ai.provider.name` of each provider: the conventions' well-known value for its
engine, refined by host for the services the openai engine is pointed at."""

from __future__ import annotations

import pytest

from services.common.config import ProviderConfig
from services.router.genai import provider_name


@pytest.mark.parametrize(
    ("kind", "base_url", "expected"),
    [
        ("openai", "https://api.openai.com/v1", "openai"),
        ("openai", "https://contoso.openai.azure.com/openai/deployments/gpt-4o", "azure.ai.openai"),
        ("openai", "https://contoso.services.ai.azure.com/models", "azure.ai.inference"),
        ("openai", "https://api.groq.com/openai/v1", "groq"),
        ("openai", "https://api.deepseek.com/v1", "deepseek"),
        ("openai", "https://api.mistral.ai/v1", "mistral_ai"),
        ("openai", "http://vllm.internal:8000/v1", "openai"),  # OpenAI-compatible: its flavour
        ("anthropic", "https://api.anthropic.com", "anthropic"),
        ("ollama", "http://127.0.0.1:11434", "ollama"),
        ("copilot", "https://api.githubcopilot.com", "github_copilot"),
        ("sim", "", "saga.sim"),
    ],
)
def test_provider_name_is_the_conventions_value(kind: str, base_url: str, expected: str) -> None:
    provider = ProviderConfig(name="mine", kind=kind, model="m", base_url=base_url)
    assert provider_name(provider) == expected
