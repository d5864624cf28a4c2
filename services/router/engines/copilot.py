"""`copilot`: a chat completion endpoint called with a user's Entra ID access token.

The wire format is OpenAI's chat completions (`POST {base_url}/chat/completions`, streamed
or complete; unlike `openai`, an empty base_url path gets no `/v1`) with `Authorization:
Bearer <access token>`; the token comes from auth's `GetProviderCredential` — for
`oauth_user` the calling user's linked account, refreshed by auth and cached by the router
until shortly before it expires. The seeds' error matrix
applies as for every HTTP engine: 401 drops the token from the cache and fetches it again
once (a token revoked early is replaced without failing the call), then is an authentication
failure; 403 authentication; 429 rate limited with Retry-After; 400/413 input; 408/504 and
our own deadlines timeout; 5xx and network errors transient. Parsing of choices, message
and content is defensive (see `openai`): missing or empty content is logged, not fatal.
"""

from __future__ import annotations

import logging

import aiohttp

from services.common.config import ProviderConfig
from services.router.engines.base import CredentialLookup
from services.router.engines.http import endpoint
from services.router.engines.openai import OpenAIEngine

log = logging.getLogger("saga.router.engines")


class CopilotEngine(OpenAIEngine):
    """Chat completions with an Entra ID access token (see the module docstring)."""

    def __init__(
        self,
        provider: ProviderConfig,
        credential: CredentialLookup | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(provider, credential, session)
        if provider.credential == "none":
            # Configuration allows it, but no Copilot endpoint answers without a token.
            log.warning(
                "copilot provider configured without a credential",
                extra={"provider": provider.name},
            )

    def url(self) -> str:
        """`{base_url}/chat/completions`, the path kept as written (Copilot's API has no
        version segment: `https://api.githubcopilot.com`)."""
        return endpoint(self.provider.base_url, "/chat/completions")
