"""Where each engine POSTs: its `base_url` rule and the normalisation it applies, the
documented provider examples (each loaded by the configuration loader, so the document stays
true), a wrong base_url answered 404/405 reported as a configuration error, and the output
limit's field (`max_tokens_field`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.common.config import ConfigError, ProviderConfig, load_config
from services.router.engines import engine_for
from services.router.engines.base import (
    ChatMessage,
    EngineRequest,
    ErrorKind,
    ProviderError,
    TextDelta,
)
from services.router.engines.http import HttpEngine
from services.router.failures import Verdict, classify
from tests.fakes.providers import FakeProviders, Script

ROOT = Path(__file__).resolve().parents[3]

DOC_EXAMPLES = {
    "openai": "https://api.openai.com/v1/chat/completions",
    "openai-reasoning": "https://api.openai.com/v1/chat/completions",
    "azure-openai": "https://my-resource.openai.azure.com/openai/v1/chat/completions",
    "azure-deployment": "https://my-resource.openai.azure.com/openai/deployments/"
    "my-gpt-4o-deployment/chat/completions?api-version=2024-10-21",
    "anthropic": "https://api.anthropic.com/v1/messages",
    "ollama": "http://localhost:11434/api/chat",
    "vllm": "http://localhost:8000/v1/chat/completions",
}
"""Each example provider of docs/configuration.md and the URL its engine POSTs to."""


def doc_examples() -> list[str]:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    section = doc.split("## Provider endpoints", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```toml\n(.*?)```", section, re.DOTALL)


def endpoint_of(**fields: str) -> str:
    engine = engine_for(ProviderConfig(name="p", model="m", **fields))  # type: ignore[arg-type]
    assert isinstance(engine, HttpEngine)
    return engine.endpoint


def request(max_tokens: int = 50) -> EngineRequest:
    return EngineRequest((ChatMessage("user", "hello there"),), "", max_tokens)


def test_every_documented_provider_example_loads_and_posts_where_documented(
    tmp_path: Path,
) -> None:
    blocks = doc_examples()
    names = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.toml"
        path.write_text(block)
        (provider,) = load_config(path, env={}).providers
        names.append(provider.name)
        assert (
            endpoint_of(
                kind=provider.kind, base_url=provider.base_url, credential=provider.credential
            )
            == DOC_EXAMPLES[provider.name]
        )
    assert sorted(names) == sorted(DOC_EXAMPLES)


@pytest.mark.parametrize(
    ("kind", "base_url", "url"),
    [
        # openai: the version path belongs in base_url; an empty path gets it.
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("openai", "https://api.openai.com/v1/", "https://api.openai.com/v1/chat/completions"),
        ("openai", "https://api.openai.com", "https://api.openai.com/v1/chat/completions"),
        ("openai", "https://api.openai.com/", "https://api.openai.com/v1/chat/completions"),
        ("openai", "http://gpu:8000/v1", "http://gpu:8000/v1/chat/completions"),
        (
            "openai",
            "https://res.openai.azure.com",
            "https://res.openai.azure.com/openai/v1/chat/completions",
        ),
        # Azure's deployment paths are left alone, the api-version query after the endpoint.
        (
            "openai",
            "https://res.openai.azure.com/openai/deployments/gpt4o/?api-version=2024-10-21",
            "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions"
            "?api-version=2024-10-21",
        ),
        # anthropic: the engine adds /v1, so one in base_url is dropped.
        ("anthropic", "https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
        ("anthropic", "https://api.anthropic.com/", "https://api.anthropic.com/v1/messages"),
        ("anthropic", "https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
        ("anthropic", "https://api.anthropic.com/v1/", "https://api.anthropic.com/v1/messages"),
        ("anthropic", "https://proxy/anthropic", "https://proxy/anthropic/v1/messages"),
        # ollama: the bare host; /api or the OpenAI-compatible /v1 dropped.
        ("ollama", "http://localhost:11434", "http://localhost:11434/api/chat"),
        ("ollama", "http://localhost:11434/", "http://localhost:11434/api/chat"),
        ("ollama", "http://localhost:11434/api", "http://localhost:11434/api/chat"),
        ("ollama", "http://localhost:11434/v1/", "http://localhost:11434/api/chat"),
        # copilot: no version segment is ever added.
        ("copilot", "https://api.githubcopilot.com", "https://api.githubcopilot.com/chat/completions"),
        ("copilot", "https://api.githubcopilot.com/", "https://api.githubcopilot.com/chat/completions"),
    ],
)  # fmt: skip
def test_base_url_is_normalised_per_engine(kind: str, base_url: str, url: str) -> None:
    assert endpoint_of(kind=kind, base_url=base_url) == url


@pytest.mark.parametrize(
    ("fmt", "base_url"),
    [("openai", ""), ("openai", "/"), ("anthropic", "/v1/"), ("ollama", "/api/")],
)
async def test_a_normalised_base_url_reaches_the_provider(
    fake: FakeProviders, fmt: str, base_url: str
) -> None:
    engine = fake.engine(fmt, base_url=fake.url + base_url)
    events = [e async for e in engine.stream(request())]
    assert [e.text for e in events if isinstance(e, TextDelta)]
    assert fake.requests(fmt)


@pytest.mark.parametrize(
    ("fmt", "base_url", "path"),
    [
        ("openai", "/openai", "/openai/chat/completions"),
        ("anthropic", "/anthropic/api", "/anthropic/api/v1/messages"),
        ("ollama", "/ollama", "/ollama/api/chat"),
        ("copilot", "/copilot/v1", "/copilot/v1/chat/completions"),
    ],
)
async def test_a_wrong_base_url_is_a_configuration_error_naming_the_path(
    fake: FakeProviders, fmt: str, base_url: str, path: str
) -> None:
    engine = fake.engine(fmt, base_url=fake.url + base_url + "?api-version=1")
    with pytest.raises(ProviderError) as caught:
        _ = [e async for e in engine.stream(request())]
    error = caught.value
    assert error.kind is ErrorKind.MISCONFIGURED
    assert error.http_status == 404
    assert error.metadata == {"urlPath": path}
    assert "base_url" in error.message
    provider = fake.provider(fmt)
    failure = classify(error, provider)
    assert failure.error.reason == "PROVIDER_MISCONFIGURED"
    assert failure.error.metadata == {"provider": provider.name, "urlPath": path}
    # Not retried (the same call fails alike), the circuit opens, another provider may do.
    assert (failure.retry, failure.fallback, failure.verdict) == (False, True, Verdict.TRIP)


async def test_a_model_the_provider_lacks_is_a_configuration_error(fake: FakeProviders) -> None:
    fake.script("openai", Script(fail="model_not_found"))
    with pytest.raises(ProviderError) as caught:
        _ = [e async for e in fake.engine("openai").stream(request())]
    assert caught.value.kind is ErrorKind.MISCONFIGURED
    assert caught.value.metadata == {"urlPath": "/v1/chat/completions"}


@pytest.mark.parametrize("fmt", ["openai", "copilot"])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_the_output_limit_goes_in_the_configured_field(
    fake: FakeProviders, fmt: str, field: str
) -> None:
    fake.copilot_tokens = {"entra-token"}
    engine = fake.engine(fmt, max_tokens_field=field)
    fake.script(fmt, Script(tokens=10))
    events = [e async for e in engine.stream(request(max_tokens=3))]
    body = fake.requests(fmt)[-1].body
    assert body[field] == 3
    other = {"max_tokens", "max_completion_tokens"} - {field}
    assert not other & body.keys()
    # The provider honoured it: three tokens, not ten.
    assert len([e for e in events if isinstance(e, TextDelta)]) == 3


def test_max_tokens_field_is_refused_where_no_engine_sends_it(tmp_path: Path) -> None:
    path = tmp_path / "saga.toml"
    path.write_text(
        '[[providers]]\nname = "a"\nkind = "anthropic"\nmodel = "m"\n'
        'base_url = "https://api.anthropic.com"\nmax_tokens_field = "max_completion_tokens"\n'
    )
    with pytest.raises(ConfigError, match=r"providers\[0\]\.max_tokens_field"):
        load_config(path, env={})
    path.write_text(
        '[[providers]]\nname = "o"\nkind = "openai"\nmodel = "m"\n'
        'base_url = "https://api.openai.com/v1"\nmax_tokens_field = "max_tok"\n'
    )
    with pytest.raises(ConfigError, match="max_tokens_field"):
        load_config(path, env={})


@pytest.mark.parametrize("base_url", ["", "api.openai.com/v1", "ftp://host/v1", "https://"])
def test_an_http_provider_without_an_http_url_is_refused(tmp_path: Path, base_url: str) -> None:
    path = tmp_path / "saga.toml"
    path.write_text(
        f'[[providers]]\nname = "o"\nkind = "openai"\nmodel = "m"\nbase_url = "{base_url}"\n'
    )
    with pytest.raises(ConfigError, match=r"providers\[0\]\.base_url: .*needs an http\(s\) URL"):
        load_config(path, env={})
