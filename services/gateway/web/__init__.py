"""The gateway's HTTP door (SPEC 3.1): the JSON/SSE facade, the OpenAI-compatible API and the
probes, on aiohttp in the gateway process. Handlers call the same servicer methods as the gRPC
door (`calls.py`), so authentication, scopes, limits, accounting and errors are one path."""
