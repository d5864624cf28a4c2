"""Provider engines, one instance per configured provider (`engine_for`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from services.common.config import ProviderConfig
from services.router.engines.base import Engine, EngineEvent, EngineRequest, ProviderUnavailable
from services.router.engines.sim import SimEngine


class UnbuiltEngine:
    """Stands in for an engine kind this release does not have yet (openai, anthropic,
    ollama and copilot arrive with issue 5): every call fails as unavailable, so fallback
    moves on and the provider stays listed."""

    def __init__(self, provider: ProviderConfig) -> None:
        self._provider = provider

    async def stream(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        """Fail at once."""
        raise ProviderUnavailable(
            f"{self._provider.name}: the {self._provider.kind} engine is not built yet"
        )
        yield  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        """Nothing to release."""


def engine_for(provider: ProviderConfig) -> Engine:
    """The engine of a configured provider."""
    if provider.kind == "sim":
        return SimEngine(provider)
    return UnbuiltEngine(provider)
