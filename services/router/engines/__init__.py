"""Provider engines, one instance per configured provider (`engine_for`)."""

from __future__ import annotations

from services.common.config import ProviderConfig
from services.router.engines.anthropic import AnthropicEngine
from services.router.engines.base import CredentialLookup, Engine
from services.router.engines.copilot import CopilotEngine
from services.router.engines.ollama import OllamaEngine
from services.router.engines.openai import OpenAIEngine
from services.router.engines.sim import SimEngine

HTTP_ENGINES = {
    "openai": OpenAIEngine,
    "anthropic": AnthropicEngine,
    "ollama": OllamaEngine,
    "copilot": CopilotEngine,
}


def engine_for(provider: ProviderConfig, credential: CredentialLookup | None = None) -> Engine:
    """The engine of a configured provider. `credential` gives the secret of a provider
    whose `credential` is not "none" (`ProviderCredentials.lookup(provider)`); `sim`
    ignores it. Each HTTP engine owns its pooled session: close it with `close()`."""
    if provider.kind == "sim":
        return SimEngine(provider)
    return HTTP_ENGINES[provider.kind](provider, credential)
